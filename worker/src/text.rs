//! Plain text: decode (UTF-8, or the encoding chardetng detects), count,
//! and guess the language.

use crate::{
    ExtractError,
    result::{TextCounts, TextExtraction},
};

pub fn extract(bytes: &[u8]) -> Result<TextExtraction, ExtractError> {
    let (text, encoding) = decode(bytes)?;
    let info = whatlang::detect(&text);
    let (language, language_confidence) = match info {
        Some(info) if info.is_reliable() => {
            (Some(info.lang().code().to_owned()), Some(info.confidence()))
        }
        _ => (None, None),
    };
    Ok(TextExtraction {
        counts: TextCounts::of(&text),
        text,
        encoding: encoding.name().to_owned(),
        language,
        language_confidence,
    })
}

fn decode(bytes: &[u8]) -> Result<(String, &'static encoding_rs::Encoding), ExtractError> {
    if bytes.contains(&0) {
        return Err(ExtractError::Permanent(
            "the text contains binary data".into(),
        ));
    }
    // A BOM settles it; else UTF-8 when valid; else ask chardetng.
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _, _) = encoding.decode(bytes);
        return Ok((text.into_owned(), encoding));
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
    fn binary_is_permanent() {
        assert!(matches!(
            extract(b"abc\0def"),
            Err(ExtractError::Permanent(_))
        ));
    }
}
