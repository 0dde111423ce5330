//! What an upload really is, judged by its bytes rather than by the client's
//! word: magic-number sniffing for binary formats, and a streaming check that
//! "text" is text.

use docflow_extract::ContentKind;

/// How many leading bytes sniffing looks at. Magic numbers sit in the first
/// few bytes; the rest gives the text heuristic something to judge.
pub const SNIFF_LEN: usize = 8 * 1024;

/// Why content was refused; the message says what was detected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Decides the content kind from the first bytes, then checks it against the
/// client's declared type (absent or `application/octet-stream` claims nothing).
pub fn identify(head: &[u8], declared: Option<&str>) -> Result<ContentKind, Unsupported> {
    let detected = match infer::get(head) {
        Some(kind) => kind.mime_type().parse::<ContentKind>().map_err(|_| {
            Unsupported(format!(
                "the content is {} ({}), which DocFlow does not process",
                kind.mime_type(),
                kind.extension()
            ))
        })?,
        None if looks_like_text(head) => ContentKind::Text,
        None => {
            return Err(Unsupported(
                "the content is binary data of an unrecognised type".to_owned(),
            ));
        }
    };
    let claims_something = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty() && d != "application/octet-stream");
    if let Some(claim) = claims_something {
        let agrees = claim.parse::<ContentKind>().is_ok_and(|k| k == detected);
        if !agrees {
            return Err(Unsupported(format!(
                "declared as {claim} but the content is {detected}"
            )));
        }
    }
    Ok(detected)
}

/// Text has no NUL bytes and few control characters besides whitespace.
fn looks_like_text(bytes: &[u8]) -> bool {
    let controls = bytes
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
        .count();
    !bytes.contains(&0) && controls * 100 <= bytes.len()
}

/// Validates a text upload chunk by chunk: it must be UTF-8, or decode in the
/// encoding chardetng detects, and must not turn binary further in.
pub struct TextCheck {
    utf8_valid: bool,
    /// An incomplete UTF-8 sequence at the end of the previous chunk.
    carry: Vec<u8>,
    detector: chardetng::EncodingDetector,
    binary: bool,
}

impl Default for TextCheck {
    fn default() -> Self {
        Self {
            utf8_valid: true,
            carry: Vec::new(),
            detector: chardetng::EncodingDetector::new(),
            binary: false,
        }
    }
}

impl TextCheck {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.binary {
            return;
        }
        if !looks_like_text(chunk) {
            self.binary = true;
            return;
        }
        self.detector.feed(chunk, false);
        if self.utf8_valid {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            match std::str::from_utf8(&joined) {
                Ok(_) => {}
                // An incomplete sequence at the very end may finish in the
                // next chunk; anything else is invalid.
                Err(e) if e.error_len().is_none() => {
                    self.carry = joined[e.valid_up_to()..].to_vec();
                }
                Err(_) => self.utf8_valid = false,
            }
        }
    }

    /// The encoding the text is in, or why it is not text.
    pub fn finish(mut self) -> Result<&'static encoding_rs::Encoding, Unsupported> {
        if self.binary {
            return Err(Unsupported(
                "declared or detected as text, but the content contains binary data".to_owned(),
            ));
        }
        if self.utf8_valid && self.carry.is_empty() {
            return Ok(encoding_rs::UTF_8);
        }
        self.detector.feed(&[], true);
        let encoding = self.detector.guess(None, true);
        if encoding == encoding_rs::UTF_8 {
            return Err(Unsupported(
                "the text is neither valid UTF-8 nor in a recognisable encoding".to_owned(),
            ));
        }
        Ok(encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn detects_by_content_and_checks_the_claim() {
        assert_eq!(identify(b"%PDF-1.7\n", None), Ok(ContentKind::Pdf));
        assert_eq!(identify(PNG, Some("image/png")), Ok(ContentKind::Png));
        assert_eq!(
            identify(
                b"\xff\xd8\xff\xe0\0\x10JFIF",
                Some("application/octet-stream")
            ),
            Ok(ContentKind::Jpeg)
        );
        assert_eq!(
            identify(b"hello\nworld", Some("text/plain; charset=utf-8")),
            Ok(ContentKind::Text)
        );

        let err = identify(PNG, Some("application/pdf")).expect_err("mismatch");
        assert!(err.0.contains("image/png"), "{err}");
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
        elf.resize(64, 0);
        let err = identify(&elf, Some("application/pdf")).expect_err("elf");
        assert!(err.0.contains("executable"), "{err}");
        assert!(identify(b"\0\x01\x02\x03binary", None).is_err());
    }

    #[test]
    fn text_check_across_chunks() {
        let mut check = TextCheck::default();
        let text = "naïve café ✓".as_bytes();
        // Split inside a multi-byte character.
        check.feed(&text[..3]);
        check.feed(&text[3..]);
        assert_eq!(check.finish(), Ok(encoding_rs::UTF_8));

        let mut latin1 = TextCheck::default();
        latin1.feed(b"caf\xe9 cr\xe8me br\xfbl\xe9e, une sp\xe9cialit\xe9 fran\xe7aise tr\xe8s appr\xe9ci\xe9e");
        let encoding = latin1.finish().expect("decodes");
        assert_ne!(encoding, encoding_rs::UTF_8);

        let mut binary = TextCheck::default();
        binary.feed(b"looks fine");
        binary.feed(b"then \0\0\0 binary");
        assert!(binary.finish().is_err());
    }
}
