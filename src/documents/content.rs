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
    let claims_something = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty() && d != "application/octet-stream");
    let detected = match infer::get(head) {
        // A ZIP archive that infer could not name: its entries in the first
        // bytes say which OOXML format it is (Word writes
        // `[Content_Types].xml` and `_rels/` before `word/`); failing that,
        // the declared Office type decides, and the extractor checks the
        // archive holds that format's parts.
        Some(kind) if kind.mime_type() == "application/zip" => match ooxml_by_entries(head) {
            // Named by its entries: the declared type must agree (below).
            Some(kind) => kind,
            None => {
                return claims_something
                    .as_deref()
                    .and_then(office_kind_of)
                    .filter(|kind| kind.is_zip_container())
                    .ok_or_else(|| {
                        Unsupported(
                            "the content is a ZIP archive, not a document DocFlow processes \
                         (declare an Office type for an Office document)"
                                .to_owned(),
                        )
                    });
            }
        },
        Some(kind) => kind.mime_type().parse::<ContentKind>().map_err(|_| {
            Unsupported(format!(
                "the content is {} ({}), which DocFlow does not process",
                kind.mime_type(),
                kind.extension()
            ))
        })?,
        // Mail is text with a header block (declared as another text
        // kind, it is that kind: see below).
        None if looks_like_text(head) && docflow_extract::email::looks_like_email(head) => {
            ContentKind::Eml
        }
        None if looks_like_text(head) || docflow_extract::text::utf16(head).is_some() => {
            ContentKind::Text
        }
        None => {
            return Err(Unsupported(
                "the content is binary data of an unrecognised type".to_owned(),
            ));
        }
    };
    if let Some(claim) = claims_something {
        let claimed = claim.parse::<ContentKind>();
        // Text takes the text kind it is declared as (Markdown, HTML,
        // mail: the bytes cannot tell them apart for sure); any other
        // text/* type (CSV, source code) is plain text to us.
        if matches!(detected, ContentKind::Text | ContentKind::Eml) {
            match &claimed {
                Ok(kind) if kind.is_text() => return Ok(*kind),
                Err(_) if claim.starts_with("text/") => return Ok(ContentKind::Text),
                _ => {}
            }
        }
        // Office documents are ZIP archives, and some clients say so.
        let zip_claim = detected.is_zip_container()
            && matches!(
                claim.as_str(),
                "application/zip" | "application/x-zip-compressed"
            );
        let agrees = zip_claim
            || claimed.is_ok_and(|k| k == detected)
            || office_kind_of(&claim).is_some_and(|k| k == detected);
        if !agrees {
            return Err(Unsupported(format!(
                "declared as {claim} but the content is {detected}"
            )));
        }
    }
    Ok(detected)
}

/// The main part's content type of each OOXML format, as
/// `[Content_Types].xml` declares it (documents, templates, macro-enabled
/// and slide-show variants).
const OOXML_MAIN_PARTS: [(&str, ContentKind); 11] = [
    ("wordprocessingml.document.main+xml", ContentKind::Docx),
    ("wordprocessingml.template.main+xml", ContentKind::Docx),
    ("ms-word.document.macroEnabled.main+xml", ContentKind::Docx),
    (
        "ms-word.template.macroEnabledTemplate.main+xml",
        ContentKind::Docx,
    ),
    ("spreadsheetml.sheet.main+xml", ContentKind::Xlsx),
    ("spreadsheetml.template.main+xml", ContentKind::Xlsx),
    ("ms-excel.sheet.macroEnabled.main+xml", ContentKind::Xlsx),
    ("presentationml.presentation.main+xml", ContentKind::Pptx),
    ("presentationml.slideshow.main+xml", ContentKind::Pptx),
    ("presentationml.template.main+xml", ContentKind::Pptx),
    (
        "ms-powerpoint.presentation.macroEnabled.main+xml",
        ContentKind::Pptx,
    ),
];

/// The format a declared type names, counting the Office variants (a
/// template, a macro-enabled document, a slide show) as their format:
/// the main parts above name them so, and clients declare them so.
fn office_kind_of(claim: &str) -> Option<ContentKind> {
    const VARIANTS: [(&str, ContentKind); 11] = [
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
            ContentKind::Docx,
        ),
        (
            "application/vnd.ms-word.document.macroenabled.12",
            ContentKind::Docx,
        ),
        (
            "application/vnd.ms-word.template.macroenabled.12",
            ContentKind::Docx,
        ),
        (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.template",
            ContentKind::Xlsx,
        ),
        (
            "application/vnd.ms-excel.sheet.macroenabled.12",
            ContentKind::Xlsx,
        ),
        (
            "application/vnd.ms-excel.template.macroenabled.12",
            ContentKind::Xlsx,
        ),
        (
            "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
            ContentKind::Pptx,
        ),
        (
            "application/vnd.openxmlformats-officedocument.presentationml.template",
            ContentKind::Pptx,
        ),
        (
            "application/vnd.ms-powerpoint.presentation.macroenabled.12",
            ContentKind::Pptx,
        ),
        (
            "application/vnd.ms-powerpoint.slideshow.macroenabled.12",
            ContentKind::Pptx,
        ),
        (
            "application/vnd.ms-powerpoint.template.macroenabled.12",
            ContentKind::Pptx,
        ),
    ];
    claim.parse::<ContentKind>().ok().or_else(|| {
        VARIANTS
            .iter()
            .find(|(mime, _)| mime.eq_ignore_ascii_case(claim))
            .map(|(_, kind)| *kind)
    })
}

/// `[Content_Types].xml` is small; more than this is not worth inflating
/// in the request path.
const MAX_CONTENT_TYPES_BYTES: u64 = 64 * 1024;

/// The OOXML format named by the ZIP local headers within `head`: the
/// main part's type in `[Content_Types].xml` (the first entry Office
/// writes), else the first entry under `word/`, `xl/` or `ppt/` (a
/// thumbnail before them can push those past the head).
fn ooxml_by_entries(head: &[u8]) -> Option<ContentKind> {
    let mut at = 0;
    while at + 30 <= head.len() && head[at..].starts_with(b"PK\x03\x04") {
        let u16_at = |i: usize| usize::from(u16::from_le_bytes([head[i], head[i + 1]]));
        let u32_at = |i: usize| {
            u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as usize
        };
        let (name_len, extra_len, stored) = (u16_at(at + 26), u16_at(at + 28), u32_at(at + 18));
        let name = head.get(at + 30..at + 30 + name_len)?;
        if name == b"[Content_Types].xml" {
            let data_at = at + 30 + name_len + extra_len;
            let method = u16_at(at + 8);
            if let Some(kind) = head
                .get(data_at..data_at + stored)
                .and_then(|data| declared_main_part(data, method))
            {
                return Some(kind);
            }
        }
        for (prefix, kind) in [
            (&b"word/"[..], ContentKind::Docx),
            (b"xl/", ContentKind::Xlsx),
            (b"ppt/", ContentKind::Pptx),
        ] {
            if name.starts_with(prefix) {
                return Some(kind);
            }
        }
        // Sizes deferred to a data descriptor (bit 3): the next header's
        // place is unknown from here.
        if u16_at(at + 6) & 0x08 != 0 {
            return None;
        }
        at += 30 + name_len + extra_len + stored;
    }
    None
}

/// The format whose main part `[Content_Types].xml` declares, from the
/// entry's bytes (stored, or deflated: method 8).
fn declared_main_part(data: &[u8], method: usize) -> Option<ContentKind> {
    use std::io::Read;

    let mut xml = Vec::new();
    match method {
        0 => xml.extend_from_slice(data),
        8 => {
            flate2::read::DeflateDecoder::new(data)
                .take(MAX_CONTENT_TYPES_BYTES)
                .read_to_end(&mut xml)
                .ok()?;
        }
        _ => return None,
    }
    let xml = String::from_utf8_lossy(&xml);
    OOXML_MAIN_PARTS
        .iter()
        .find(|(part, _)| xml.contains(part))
        .map(|&(_, kind)| kind)
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
    /// Decided by the first chunk: UTF-16 (by BOM or NUL pattern) is
    /// checked by decoding it, as it goes.
    utf16: Option<encoding_rs::Decoder>,
    started: bool,
    utf8_valid: bool,
    /// An incomplete UTF-8 sequence at the end of the previous chunk.
    carry: Vec<u8>,
    detector: chardetng::EncodingDetector,
    binary: bool,
}

impl Default for TextCheck {
    fn default() -> Self {
        Self {
            utf16: None,
            started: false,
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
        if !self.started {
            self.started = true;
            self.utf16 = docflow_extract::text::utf16(chunk)
                .map(encoding_rs::Encoding::new_decoder_with_bom_removal);
        }
        if let Some(decoder) = &mut self.utf16 {
            self.binary = !utf16_is_text(decoder, chunk, false);
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
        if let Some(decoder) = &mut self.utf16
            && !self.binary
        {
            self.binary = !utf16_is_text(decoder, &[], true);
        }
        if self.binary {
            return Err(Unsupported(
                "declared or detected as text, but the content contains binary data".to_owned(),
            ));
        }
        if let Some(decoder) = &self.utf16 {
            return Ok(decoder.encoding());
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

/// Decodes a chunk of UTF-16: text when it is well-formed and has no NUL
/// characters.
fn utf16_is_text(decoder: &mut encoding_rs::Decoder, mut chunk: &[u8], last: bool) -> bool {
    let mut out = [0_u8; 8192];
    loop {
        let (result, read, written) =
            decoder.decode_to_utf8_without_replacement(chunk, &mut out, last);
        if out[..written].contains(&0) {
            return false;
        }
        chunk = &chunk[read..];
        match result {
            encoding_rs::DecoderResult::InputEmpty => return true,
            encoding_rs::DecoderResult::OutputFull => {}
            encoding_rs::DecoderResult::Malformed(_, _) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    /// Mail is known by its header block; declared as plain text it is that.
    #[test]
    fn mail_is_sniffed_by_its_header_block() {
        let mail =
            b"From: a@example.com\nTo: b@example.com\nDate: Thu, 3 Dec 2026 09:00:00 +0000\n\nHi";
        assert_eq!(identify(mail, None), Ok(ContentKind::Eml));
        assert_eq!(identify(mail, Some("message/rfc822")), Ok(ContentKind::Eml));
        assert_eq!(identify(mail, Some("text/plain")), Ok(ContentKind::Text));
        assert_eq!(
            identify(b"Dear diary,\nFrom: here", None),
            Ok(ContentKind::Text)
        );
    }

    /// Text is the text kind it is declared as; other text types are text.
    #[test]
    fn text_takes_its_declared_text_kind() {
        let md = b"# Title\n\nSome *text*.\n";
        assert_eq!(
            identify(md, Some("text/markdown")),
            Ok(ContentKind::Markdown)
        );
        assert_eq!(
            identify(md, Some("text/x-markdown; charset=utf-8")),
            Ok(ContentKind::Markdown)
        );
        assert_eq!(identify(md, None), Ok(ContentKind::Text));
        assert_eq!(
            identify(b"a,b\n1,2\n", Some("text/csv")),
            Ok(ContentKind::Text)
        );
        assert_eq!(
            identify(b"fragment <em>x</em>", Some("text/html")),
            Ok(ContentKind::Html)
        );
        assert!(identify(b"a,b\n1,2\n", Some("application/pdf")).is_err());
    }

    /// An archive whose format-named entries come after a large thumbnail
    /// is named by its `[Content_Types].xml`, deflated as Office writes
    /// it; an embedded workbook's type does not make a document a workbook.
    #[test]
    fn office_archives_by_their_declared_main_part() {
        use std::io::Write;

        let archive = |main: &str, part: &str, padding: usize| {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let deflated = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file("[Content_Types].xml", deflated)
                .expect("entry");
            write!(
                zip,
                "<Types><Default Extension=\"xlsx\" ContentType=\"application/\
                 vnd.openxmlformats-officedocument.spreadsheetml.sheet\"/>{}\
                 <Override PartName=\"/{part}\" ContentType=\"application/\
                 vnd.openxmlformats-officedocument.{main}\"/></Types>",
                " ".repeat(padding)
            )
            .expect("write");
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            zip.start_file("docProps/thumbnail.jpeg", stored)
                .expect("entry");
            zip.write_all(&[0xAB; 20_000]).expect("write");
            zip.start_file(part, deflated).expect("entry");
            zip.write_all(b"<x/>").expect("write");
            let bytes = zip.finish().expect("zip").into_inner();
            bytes[..SNIFF_LEN].to_vec()
        };
        let head = archive(
            "presentationml.presentation.main+xml",
            "ppt/presentation.xml",
            0,
        );
        assert_eq!(identify(&head, None), Ok(ContentKind::Pptx));
        let head = archive("wordprocessingml.document.main+xml", "word/document.xml", 0);
        assert_eq!(identify(&head, None), Ok(ContentKind::Docx));
        // Declared past what the sniffer inflates (a few KiB deflated, more
        // than 64 KiB inflated): not read; the declared type decides.
        let padding = usize::try_from(MAX_CONTENT_TYPES_BYTES).expect("fits");
        let head = archive(
            "wordprocessingml.document.main+xml",
            "word/document.xml",
            padding,
        );
        assert!(identify(&head, None).is_err());
        let docx = ContentKind::Docx.mime();
        assert_eq!(identify(&head, Some(docx)), Ok(ContentKind::Docx));
    }

    /// Office archives are named by their entries, whatever infer makes of
    /// them; a bare ZIP needs an Office claim.
    #[test]
    fn office_archives_by_their_entries() {
        // Local headers as Word writes them: content types, rels, word/.
        let mut head = Vec::new();
        for name in ["[Content_Types].xml", "_rels/.rels", "word/document.xml"] {
            head.extend_from_slice(b"PK\x03\x04");
            head.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            head.extend_from_slice(&3u32.to_le_bytes()); // compressed size
            head.extend_from_slice(&3u32.to_le_bytes());
            head.extend_from_slice(&u16::try_from(name.len()).expect("len").to_le_bytes());
            head.extend_from_slice(&0u16.to_le_bytes());
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b"abc");
        }
        assert_eq!(ooxml_by_entries(&head), Some(ContentKind::Docx));
        assert_eq!(identify(&head, None), Ok(ContentKind::Docx));
        assert_eq!(ooxml_by_entries(b"PK\x03\x04"), None);
        // What the entries name must agree with what is declared.
        assert!(identify(&head, Some("image/png")).is_err());
        assert!(identify(&head, Some(ContentKind::Xlsx.mime())).is_err());
        assert_eq!(
            identify(&head, Some(ContentKind::Docx.mime())),
            Ok(ContentKind::Docx)
        );
        assert_eq!(
            identify(&head, Some("application/zip")),
            Ok(ContentKind::Docx)
        );
        // A macro-enabled document or a template declared as itself.
        for variant in [
            "application/vnd.ms-word.document.macroEnabled.12",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
        ] {
            assert_eq!(
                identify(&head, Some(variant)),
                Ok(ContentKind::Docx),
                "{variant}"
            );
        }
        assert!(
            identify(
                &head,
                Some("application/vnd.ms-excel.sheet.macroEnabled.12")
            )
            .is_err()
        );
    }

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

        // UTF-16 with a BOM, split mid-unit, and without one.
        let units: Vec<u8> = "Grüße, naïve café ✓ and more text"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let with_bom = [&[0xff, 0xfe][..], &units].concat();
        assert_eq!(identify(&with_bom, None), Ok(ContentKind::Text));
        assert_eq!(identify(&units, Some("text/plain")), Ok(ContentKind::Text));
        for bytes in [&with_bom, &units] {
            let mut utf16 = TextCheck::default();
            utf16.feed(&bytes[..7]);
            utf16.feed(&bytes[7..]);
            assert_eq!(utf16.finish(), Ok(encoding_rs::UTF_16LE));
        }
        let mut nul_unit = TextCheck::default();
        nul_unit.feed(&with_bom);
        nul_unit.feed(&[0, 0, b'a', 0]);
        assert!(nul_unit.finish().is_err());

        let mut binary = TextCheck::default();
        binary.feed(b"looks fine");
        binary.feed(b"then \0\0\0 binary");
        assert!(binary.finish().is_err());
    }
}
