//! PDF: metadata, page sizes and per-page text through lopdf, with its
//! decompression limits on, a page cap, and encryption reported clearly.
//! The text itself is read by position (`pdf_text`), not by lopdf's
//! `extract_text`, which glues words that a PDF separates by moving the pen.

use std::path::Path;

use lopdf::{Document, LoadOptions, Object};

use crate::{
    ExtractError, Limits,
    result::{PdfExtraction, PdfInfo, PdfPage, TextCounts},
};

pub fn extract(path: &Path, limits: &Limits) -> Result<PdfExtraction, ExtractError> {
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_decompressed_bytes),
        ..LoadOptions::default()
    };
    let document = Document::load_with_options(path, options).map_err(|err| match err {
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => encrypted(),
        lopdf::Error::Unimplemented(what) if what.contains("assword") => encrypted(),
        other => ExtractError::Permanent(format!("not a readable PDF: {other}")),
    })?;
    // Loaded but still encrypted: no password opened it.
    if document.is_encrypted() && !document.was_encrypted() {
        return Err(encrypted());
    }

    let all_pages = document.get_pages();
    if all_pages.is_empty() {
        return Err(ExtractError::Permanent("the PDF has no pages".into()));
    }
    let page_count = u32::try_from(all_pages.len()).unwrap_or(u32::MAX);
    let truncated = all_pages.len() > limits.max_pdf_pages;

    let mut pages = Vec::new();
    let mut pages_without_text = Vec::new();
    for (&number, &page_id) in all_pages.iter().take(limits.max_pdf_pages) {
        // A page whose content cannot be decoded counts as a page without
        // text; one bad page does not sink the document.
        let text = crate::pdf_text::page_text(&document, page_id, limits.max_decompressed_bytes)
            .map(|t| normalise(&t))
            .unwrap_or_default();
        if text.trim().is_empty() {
            pages_without_text.push(number);
        }
        let (width_pt, height_pt) = page_size(&document, page_id);
        pages.push(PdfPage {
            number,
            width_pt,
            height_pt,
            counts: TextCounts::of(&text),
            text,
        });
    }
    let text = pages
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\u{c}");

    Ok(PdfExtraction {
        counts: TextCounts::of(&text),
        text,
        page_count,
        pdf_version: document.version.clone(),
        encrypted: document.was_encrypted(),
        info: info(&document),
        pages,
        pages_without_text,
        truncated,
    })
}

fn encrypted() -> ExtractError {
    ExtractError::Permanent("the PDF is encrypted and cannot be opened without a password".into())
}

/// Collapse runs of blank lines and trailing spaces so counts reflect the
/// words, not the layout.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

fn page_size(document: &Document, page_id: lopdf::ObjectId) -> (Option<f64>, Option<f64>) {
    // MediaBox is inheritable: walk up the page tree until one is found.
    let mut current = document.get_dictionary(page_id).ok();
    for _ in 0..32 {
        let Some(dict) = current else { break };
        if let Ok(media_box) = dict
            .get_deref(b"MediaBox", document)
            .and_then(Object::as_array)
        {
            let numbers: Vec<f64> = media_box
                .iter()
                .filter_map(|o| match o {
                    Object::Integer(i) => Some(*i as f64),
                    Object::Real(r) => Some(f64::from(*r)),
                    _ => None,
                })
                .collect();
            if let [x0, y0, x1, y1] = numbers[..] {
                return (Some((x1 - x0).abs()), Some((y1 - y0).abs()));
            }
            break;
        }
        current = dict
            .get(b"Parent")
            .and_then(Object::as_reference)
            .and_then(|id| document.get_dictionary(id))
            .ok();
    }
    (None, None)
}

fn info(document: &Document) -> PdfInfo {
    let Some(dict) = document
        .trailer
        .get_deref(b"Info", document)
        .and_then(Object::as_dict)
        .ok()
    else {
        return PdfInfo::default();
    };
    let field = |key: &[u8]| -> Option<String> {
        let object = dict.get_deref(key, document).ok()?;
        let text = match object {
            Object::String(bytes, _) => decode_pdf_string(bytes),
            Object::Name(name) => String::from_utf8_lossy(name).into_owned(),
            _ => return None,
        };
        let text = text.trim().to_owned();
        (!text.is_empty()).then_some(text)
    };
    PdfInfo {
        title: field(b"Title"),
        author: field(b"Author"),
        subject: field(b"Subject"),
        keywords: field(b"Keywords"),
        creator: field(b"Creator"),
        producer: field(b"Producer"),
        created_at: field(b"CreationDate").and_then(|d| pdf_date(&d)),
        modified_at: field(b"ModDate").and_then(|d| pdf_date(&d)),
    }
}

/// PDF text strings are UTF-16BE with a BOM, or PDFDocEncoding (close
/// enough to Latin-1 for metadata).
fn decode_pdf_string(bytes: &[u8]) -> String {
    if let Some(utf16) = bytes.strip_prefix(&[0xfe, 0xff]) {
        let units: Vec<u16> = utf16
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `D:YYYYMMDDHHmmSSOHH'mm'` (every part after the year optional) to RFC 3339.
fn pdf_date(raw: &str) -> Option<String> {
    let s = raw.trim().strip_prefix("D:").unwrap_or(raw.trim());
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return None;
    }
    let part = |from: usize, len: usize, default: u32| -> Option<u32> {
        digits
            .get(from..from + len)
            .map_or(Some(default), |p| p.parse().ok())
    };
    let year: i32 = digits[..4].parse().ok()?;
    let (month, day) = (part(4, 2, 1)?, part(6, 2, 1)?);
    let (hour, minute, second) = (part(8, 2, 0)?, part(10, 2, 0)?, part(12, 2, 0)?);
    let rest = &s[digits.len()..];
    let offset_secs = match rest.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let tz: String = rest[1..].chars().filter(char::is_ascii_digit).collect();
            let hours: i32 = tz.get(..2).and_then(|h| h.parse().ok()).unwrap_or(0);
            let minutes: i32 = tz.get(2..4).and_then(|m| m.parse().ok()).unwrap_or(0);
            let secs = hours * 3600 + minutes * 60;
            if sign == '-' { -secs } else { secs }
        }
        _ => 0,
    };
    let offset = chrono::FixedOffset::east_opt(offset_secs)?;
    let naive =
        chrono::NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    let local = naive.and_local_timezone(offset).single()?;
    Some(local.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_dates() {
        assert_eq!(
            pdf_date("D:20230115103000+01'00'").as_deref(),
            Some("2023-01-15T10:30:00+01:00")
        );
        assert_eq!(
            pdf_date("D:20230115103000Z").as_deref(),
            Some("2023-01-15T10:30:00+00:00")
        );
        assert_eq!(
            pdf_date("D:2023").as_deref(),
            Some("2023-01-01T00:00:00+00:00")
        );
        assert_eq!(pdf_date("yesterday"), None);
        assert_eq!(pdf_date("D:20231399"), None);
    }

    #[test]
    fn utf16_strings() {
        assert_eq!(decode_pdf_string(&[0xfe, 0xff, 0, b'H', 0, b'i']), "Hi");
        assert_eq!(decode_pdf_string(b"plain"), "plain");
    }
}
