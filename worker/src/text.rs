//! Plain text: decode (UTF-8, or the encoding chardetng detects), count,
//! and guess the language.

use crate::{
    ExtractError,
    result::{TextCounts, TextExtraction},
};

pub fn extract(bytes: &[u8]) -> Result<TextExtraction, ExtractError> {
    let (text, encoding) = decode(bytes)?;
    let (language, language_confidence) = language(&text);
    Ok(TextExtraction {
        counts: TextCounts::of(&text),
        text,
        encoding: encoding.name().to_owned(),
        language,
        language_confidence,
    })
}

/// Text gathered up to a byte limit, as every extractor keeps it: what does
/// not fit is dropped, and `truncated` says so.
#[derive(Debug)]
pub(crate) struct Bounded {
    pub(crate) text: String,
    room: usize,
    pub(crate) truncated: bool,
}

impl Bounded {
    pub(crate) fn new(room: usize) -> Self {
        Self {
            text: String::new(),
            room,
            truncated: false,
        }
    }

    pub(crate) fn push(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let kept = prefix_within(s, self.room.saturating_sub(self.text.len()));
        self.text.push_str(kept);
        if kept.len() < s.len() {
            self.truncated = true;
        }
    }

    /// Ends the line (trailing spaces dropped) unless there is none to end.
    pub(crate) fn newline(&mut self) {
        let trimmed = self.text.trim_end_matches(' ').len();
        self.text.truncate(trimmed);
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.push("\n");
        }
    }
}

/// The longest prefix of `text` within `max` bytes that ends between
/// characters: how every extractor cuts text at its limit.
pub(crate) fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// UTF-16 by its byte-order mark, or without one by its pattern of NULs:
/// text in the Latin, Greek or Cyrillic ranges has a NUL in every other
/// byte, on the high side of each unit. `None` for anything else.
/// The text's language (ISO 639-3 code) and the detector's confidence,
/// when the detection is reliable.
pub fn language(text: &str) -> (Option<String>, Option<f64>) {
    match whatlang::detect(text) {
        Some(info) if info.is_reliable() => {
            (Some(info.lang().code().to_owned()), Some(info.confidence()))
        }
        _ => (None, None),
    }
}

pub fn utf16(bytes: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    match bytes {
        [0xff, 0xfe, ..] => return Some(encoding_rs::UTF_16LE),
        [0xfe, 0xff, ..] => return Some(encoding_rs::UTF_16BE),
        _ => {}
    }
    let sample = &bytes[..bytes.len().min(4096) & !1];
    let units = sample.len() / 2;
    if units < 2 {
        return None;
    }
    let nul_at = |parity: usize| {
        sample
            .iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let (even, odd) = (nul_at(0), nul_at(1));
    // Most units have a NUL high byte, and (almost) no low byte is NUL.
    let mostly = |n: usize| n * 10 >= units * 6;
    let hardly = |n: usize| n * 50 <= units;
    if mostly(odd) && hardly(even) {
        Some(encoding_rs::UTF_16LE)
    } else if mostly(even) && hardly(odd) {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

fn decode(bytes: &[u8]) -> Result<(String, &'static encoding_rs::Encoding), ExtractError> {
    // A BOM settles it (UTF-8 or UTF-16), as does UTF-16's NUL pattern;
    // else NULs mean binary data; else UTF-8 when valid; else chardetng.
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _, _) = encoding.decode(bytes);
        return Ok((text.into_owned(), encoding));
    }
    if let Some(encoding) = utf16(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
        if had_errors {
            return Err(ExtractError::Permanent(format!(
                "the text does not decode as {}",
                encoding.name()
            )));
        }
        return Ok((text.into_owned(), encoding));
    }
    if bytes.contains(&0) {
        return Err(ExtractError::Permanent(
            "the text contains binary data".into(),
        ));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok((text.to_owned(), encoding_rs::UTF_8));
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let encoding = detector.guess(None, true);
    let (text, _, had_errors) = encoding.decode(bytes);
    if had_errors {
        return Err(ExtractError::Permanent(format!(
            "the text does not decode as {}",
            encoding.name()
        )));
    }
    Ok((text.into_owned(), encoding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_english() {
        let result = extract(
            "The quick brown fox jumps over the lazy dog.\nIt was not amused by this at all.\n"
                .as_bytes(),
        )
        .expect("extract");
        assert_eq!(result.encoding, "UTF-8");
        assert_eq!(result.counts.lines, 2);
        assert_eq!(result.counts.words, 17);
        assert_eq!(result.language.as_deref(), Some("eng"));
    }

    #[test]
    fn legacy_encoding_is_detected() {
        let latin1 = b"Le caf\xe9 \xe9tait tr\xe8s bon, et la cr\xe8me br\xfbl\xe9e d\xe9licieuse. Nous y retournerons bient\xf4t.";
        let result = extract(latin1).expect("extract");
        assert_eq!(result.encoding, "windows-1252");
        assert!(result.text.contains("café"));
        assert_eq!(result.language.as_deref(), Some("fra"));
    }

    #[test]
    fn utf16_with_and_without_a_bom() {
        let sentence = "Grüße aus Köln, wo der Dom steht und der Rhein fließt.";
        let le: Vec<u8> = sentence.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = sentence.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for (bytes, name) in [
            ([&[0xff, 0xfe][..], &le].concat(), "UTF-16LE"),
            ([&[0xfe, 0xff][..], &be].concat(), "UTF-16BE"),
            (le.clone(), "UTF-16LE"),
            (be.clone(), "UTF-16BE"),
        ] {
            let result = extract(&bytes).expect("extract");
            assert_eq!(result.encoding, name);
            assert_eq!(result.text.trim_start_matches('\u{feff}'), sentence);
            assert_eq!(result.language.as_deref(), Some("deu"));
        }
    }

    #[test]
    fn binary_is_permanent() {
        assert!(matches!(
            extract(b"abc\0def"),
            Err(ExtractError::Permanent(_))
        ));
    }
}
