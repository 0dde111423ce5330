//! PDF: metadata, page sizes and per-page text through lopdf, with its
//! decompression limits on, a page cap, and encryption reported clearly.
//! The text itself is read by position (`pdf_text`), not by lopdf's
//! `extract_text`, which glues words that a PDF separates by moving the pen.
//!
//! Every bound is the document's: pages (`Limits::max_pdf_pages`), text
//! (`Limits::max_text_bytes`), content-stream operations and CPU time
//! (`Limits::pdf_cpu_budget`). Pages and text past their bound are left
//! unread and the result says so; a document past the others fails as
//! `too_complex`, naming the bound, long before the sandbox's own limits.

use std::{collections::HashSet, io::Read, path::Path};

use lopdf::{Document, LoadOptions, Object, ObjectId, xref::XrefRecovery};

use crate::{
    ExtractError, Limits, OcrOptions, OcrStrategy,
    pdf_ocr::{self, PageToRead},
    pdf_text::{PageError, TextReader},
    result::{FormField, OcrSummary, PdfExtraction, PdfInfo, PdfPage, TextCounts, TextSource},
};

/// Page-tree nodes visited, at most, and how deep.
const MAX_PAGE_TREE_NODES: usize = 1_000_000;
const MAX_PAGE_TREE_DEPTH: usize = 256;

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
    // Loaded but still encrypted: no password opened it, and every string
    // and stream in it is ciphertext.
    if document.is_encrypted() && !document.was_encrypted() {
        return Err(encrypted());
    }

    let tree = page_tree(&document);
    if tree.pages.is_empty() {
        return Err(ExtractError::Permanent(
            "the PDF has no pages: its page tree is empty or missing".into(),
        ));
    }
    let mut damage = Vec::new();
    match document.xref_recovery {
        Some(XrefRecovery::Reconstructed) => damage.push(
            "the cross-reference table was unreadable and was rebuilt by scanning the file; \
             objects may be missing",
        ),
        Some(XrefRecovery::OffsetCorrected) => {
            damage.push("cross-reference offsets were wrong and were corrected");
        }
        Some(_) => damage.push("the cross-reference data was repaired"),
        None => {}
    }
    if tree.cycle {
        damage.push("the page tree refers back to itself; each page was read once");
    }
    if !ends_with_eof_marker(path) {
        damage.push("the file is cut short (it does not end with %%EOF)");
    }

    let page_count = u32::try_from(tree.pages.len()).unwrap_or(u32::MAX);
    let mut truncated_reason = (tree.pages.len() > limits.max_pdf_pages).then(|| {
        format!(
            "pages after {} were not read (the page limit)",
            limits.max_pdf_pages
        )
    });

    let mut reader = TextReader::new(
        &document,
        limits.max_decompressed_bytes,
        limits.pdf_cpu_budget,
    );
    let mut text_bytes = 0;
    let mut pages = Vec::new();
    for (page_id, number) in tree.pages.iter().take(limits.max_pdf_pages).zip(1_u32..) {
        let room = limits.max_text_bytes.saturating_sub(text_bytes);
        let (text, cut) = match reader.page_text(*page_id, room) {
            Ok(read) => (normalise(&read.text), read.cut),
            // A page whose content cannot be decoded counts as a page
            // without text; one bad page does not sink the document.
            Err(PageError::Unreadable) => (String::new(), false),
            Err(PageError::TooComplex(why)) => return Err(too_complex(number, &why)),
        };
        text_bytes += text.len() + 1;
        let (width_pt, height_pt) = page_size(&document, *page_id);
        pages.push(PdfPage {
            number,
            width_pt,
            height_pt,
            counts: TextCounts::of(&text),
            text,
            source: TextSource::Text,
            ocr_confidence: None,
            ocr_error: None,
        });
        if cut {
            truncated_reason = Some(format!(
                "the text after {} MiB was not read (the text limit), from page {number} on",
                limits.max_text_bytes >> 20
            ));
            break;
        }
    }
    let ocr = match &limits.ocr {
        Some(options) => ocr_pages(path, &mut pages, options, limits.max_image_pixels)?,
        None => OcrOutcome::default(),
    };
    let pages_without_text = pages
        .iter()
        .filter(|p| p.text.trim().is_empty())
        .map(|p| p.number)
        .collect();
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
        ocr_page_count: ocr.pages,
        ocr_pages_skipped: ocr.skipped,
        ocr: ocr.summary,
        form_fields: form_fields(&document),
        truncated: truncated_reason.is_some(),
        truncated_reason,
        damaged: !damage.is_empty(),
        damage: (!damage.is_empty()).then(|| damage.join("; ")),
    })
}

#[derive(Default)]
struct OcrOutcome {
    pages: u32,
    skipped: u32,
    summary: Option<OcrSummary>,
}

/// Reads by OCR the pages the strategy picks (at most `max_pages` of
/// them), replacing their text layer.
fn ocr_pages(
    path: &Path,
    pages: &mut [PdfPage],
    options: &OcrOptions,
    max_pixels: u64,
) -> Result<OcrOutcome, ExtractError> {
    let wanted: Vec<usize> = (0..pages.len())
        .filter(|&i| options.strategy == OcrStrategy::Force || pdf_ocr::needs_ocr(&pages[i].text))
        .collect();
    let now = &wanted[..wanted.len().min(options.max_pages)];
    let mut outcome = OcrOutcome {
        skipped: u32::try_from(wanted.len() - now.len()).unwrap_or(u32::MAX),
        ..OcrOutcome::default()
    };
    if now.is_empty() {
        return Ok(outcome);
    }
    let to_read: Vec<PageToRead> = now
        .iter()
        .map(|&i| PageToRead {
            number: pages[i].number,
            width_pt: pages[i].width_pt,
            height_pt: pages[i].height_pt,
        })
        .collect();
    let mut confidence = (0.0, 0_usize);
    for read in pdf_ocr::read_pages(path, &to_read, options, max_pixels)? {
        let Some(page) = pages.iter_mut().find(|p| p.number == read.number) else {
            continue;
        };
        match read.result {
            Ok(recognized) => {
                let text = normalise(&recognized.text);
                // A forced OCR that reads nothing keeps the text layer.
                if text.is_empty() && !page.text.is_empty() {
                    continue;
                }
                page.counts = TextCounts::of(&text);
                page.text = text;
                page.source = TextSource::Ocr;
                page.ocr_confidence = recognized.mean_confidence;
                if let Some(mean) = recognized.mean_confidence {
                    confidence.0 += mean * recognized.words as f64;
                    confidence.1 += recognized.words;
                }
                outcome.pages += 1;
            }
            Err(why) => page.ocr_error = Some(why),
        }
    }
    outcome.summary = Some(OcrSummary {
        engine: "tesseract".into(),
        language: options.language.clone(),
        mean_confidence: (confidence.1 > 0).then(|| confidence.0 / confidence.1 as f64),
        dpi: pdf_ocr::RENDER_DPI,
    });
    Ok(outcome)
}

fn encrypted() -> ExtractError {
    ExtractError::Permanent("the PDF is encrypted and cannot be opened without a password".into())
}

fn too_complex(page: u32, why: &str) -> ExtractError {
    ExtractError::too_complex(format!("{why} (reading page {page})"))
}

/// The pages in document order, walking the page tree from the catalog.
/// lopdf's own walk gives up on a tree that refers back to itself; here
/// each node is visited once, so such a tree still yields its pages.
struct PageTree {
    pages: Vec<ObjectId>,
    cycle: bool,
}

fn page_tree(document: &Document) -> PageTree {
    let mut tree = PageTree {
        pages: Vec::new(),
        cycle: false,
    };
    let root = document
        .catalog()
        .and_then(|catalog| catalog.get(b"Pages"))
        .and_then(Object::as_reference);
    if let Ok(root) = root {
        let mut seen = HashSet::new();
        walk(document, root, 0, &mut seen, &mut tree);
    }
    tree
}

fn walk(
    document: &Document,
    id: ObjectId,
    depth: usize,
    seen: &mut HashSet<ObjectId>,
    tree: &mut PageTree,
) {
    if seen.len() >= MAX_PAGE_TREE_NODES {
        return;
    }
    if !seen.insert(id) {
        tree.cycle = true;
        return;
    }
    let Ok(node) = document.get_dictionary(id) else {
        return;
    };
    let is_page = node.get(b"Type").and_then(Object::as_name).ok() == Some(b"Page".as_slice());
    let kids = node
        .get_deref(b"Kids", document)
        .and_then(Object::as_array)
        .ok();
    match kids {
        Some(kids) if !is_page => {
            if depth >= MAX_PAGE_TREE_DEPTH {
                return;
            }
            for kid in kids {
                if let Ok(kid) = kid.as_reference() {
                    walk(document, kid, depth + 1, seen, tree);
                }
            }
        }
        // A leaf: a page, whether or not it says so.
        _ => tree.pages.push(id),
    }
}

/// Form fields read, at most, and how deep their tree goes.
const MAX_FORM_FIELDS: usize = 10_000;
const MAX_FORM_DEPTH: usize = 32;

/// The AcroForm's terminal fields with their values. Names, kinds and
/// values are inherited down the field tree, as the specification says.
fn form_fields(document: &Document) -> Vec<FormField> {
    let Some(fields) = document
        .catalog()
        .ok()
        .and_then(|catalog| catalog.get_deref(b"AcroForm", document).ok())
        .and_then(|form| form.as_dict().ok())
        .and_then(|form| form.get_deref(b"Fields", document).ok())
        .and_then(|fields| fields.as_array().ok())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for field in fields {
        collect_field(document, field, "", None, 0, &mut seen, &mut out);
    }
    out
}

fn collect_field(
    document: &Document,
    field: &Object,
    parent_name: &str,
    parent_kind: Option<&[u8]>,
    depth: usize,
    seen: &mut HashSet<ObjectId>,
    out: &mut Vec<FormField>,
) {
    if out.len() >= MAX_FORM_FIELDS || depth > MAX_FORM_DEPTH {
        return;
    }
    let (id, dict) = match field {
        Object::Reference(id) => match document.get_dictionary(*id) {
            Ok(dict) => (Some(*id), dict),
            Err(_) => return,
        },
        Object::Dictionary(dict) => (None, dict),
        _ => return,
    };
    if let Some(id) = id
        && !seen.insert(id)
    {
        return;
    }
    let own = dict
        .get(b"T")
        .ok()
        .and_then(|t| t.as_str().ok())
        .map(decode_pdf_string);
    let name = match (parent_name, own) {
        ("", Some(own)) => own,
        (parent, Some(own)) => format!("{parent}.{own}"),
        (parent, None) => parent.to_owned(),
    };
    let kind = dict
        .get(b"FT")
        .and_then(Object::as_name)
        .ok()
        .or(parent_kind);
    // Kids that are fields (they have names) make this a branch; kids that
    // are only widgets leave it a field.
    let kids: Vec<&Object> = dict
        .get_deref(b"Kids", document)
        .and_then(Object::as_array)
        .map(|kids| {
            kids.iter()
                .filter(|kid| {
                    let kid = match kid {
                        Object::Reference(id) => document.get_dictionary(*id).ok(),
                        Object::Dictionary(dict) => Some(dict),
                        _ => None,
                    };
                    kid.is_some_and(|k| k.has(b"T"))
                })
                .collect()
        })
        .unwrap_or_default();
    if !kids.is_empty() {
        for kid in kids {
            collect_field(document, kid, &name, kind, depth + 1, seen, out);
        }
        return;
    }
    if name.is_empty() {
        return;
    }
    let value = dict.get_deref(b"V", document).ok().and_then(|v| match v {
        Object::String(bytes, _) => Some(decode_pdf_string(bytes)),
        Object::Name(name) => Some(String::from_utf8_lossy(name).into_owned()),
        Object::Array(items) => Some(
            items
                .iter()
                .filter_map(|item| item.as_str().ok().map(decode_pdf_string))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    });
    out.push(FormField {
        name,
        kind: kind.map(|kind| {
            match kind {
                b"Tx" => "text",
                b"Btn" => "button",
                b"Ch" => "choice",
                b"Sig" => "signature",
                other => return String::from_utf8_lossy(other).into_owned(),
            }
            .to_owned()
        }),
        value: value.filter(|v| !v.is_empty()),
    });
}

/// Whether the last KiB of the file holds the `%%EOF` marker a complete
/// PDF ends with.
fn ends_with_eof_marker(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let tail_from = length.saturating_sub(1024);
    let mut tail = Vec::new();
    if std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(tail_from)).is_err()
        || file.read_to_end(&mut tail).is_err()
    {
        return false;
    }
    tail.windows(5).any(|w| w == b"%%EOF")
}

/// Collapse runs of blank lines and trailing spaces so counts reflect the
/// words, not the layout; drop control characters, which carry no text
/// (and would sextuple in the JSON result).
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    let cleaned: String;
    let text = if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        cleaned = text
            .chars()
            .filter(|&c| !c.is_control() || c == '\n' || c == '\t')
            .collect();
        &cleaned
    } else {
        text
    };
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
pub(crate) fn decode_pdf_string(bytes: &[u8]) -> String {
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

    #[test]
    fn form_fields_and_their_appearances_are_read() {
        use lopdf::{Stream, dictionary};

        let mut doc = Document::with_version("1.7");
        let pages_id = doc.new_object_id();
        let font = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        });
        let appearance = doc.add_object(Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Form",
                "BBox" => vec![0.into(), 0.into(), 200.into(), 20.into()],
                "Resources" => dictionary! { "Font" => dictionary! { "Helv" => font } },
            },
            b"/Tx BMC BT /Helv 12 Tf 2 5 Td (Jane Doe) Tj ET EMC".to_vec(),
        ));
        let content = doc.add_object(Stream::new(
            dictionary! {},
            b"BT /Helv 12 Tf 72 720 Td (Applicant name:) Tj ET".to_vec(),
        ));
        let page_id = doc.new_object_id();
        let widget = doc.add_object(dictionary! {
            "Type" => "Annot", "Subtype" => "Widget", "T" => Object::string_literal("name"),
            "FT" => "Tx", "V" => Object::string_literal("Jane Doe"),
            "Rect" => vec![72.into(), 690.into(), 272.into(), 710.into()],
            "AP" => dictionary! { "N" => appearance }, "P" => page_id,
        });
        let parent = doc.add_object(dictionary! {
            "T" => Object::string_literal("applicant"), "Kids" => vec![widget.into()],
        });
        doc.objects.insert(
            page_id,
            Object::Dictionary(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content,
                "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
                "Resources" => dictionary! { "Font" => dictionary! { "Helv" => font } },
                "Annots" => vec![widget.into()],
            }),
        );
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            }),
        );
        let catalog = doc.add_object(dictionary! {
            "Type" => "Catalog", "Pages" => pages_id,
            "AcroForm" => dictionary! { "Fields" => vec![parent.into()] },
        });
        doc.trailer.set("Root", catalog);
        let file = tempfile::NamedTempFile::new().expect("temp");
        doc.save(file.path()).expect("save");

        let limits = Limits {
            ocr: None,
            ..Limits::default()
        };
        let read = extract(file.path(), &limits).expect("extract");
        assert_eq!(read.text, "Applicant name:\nJane Doe");
        assert_eq!(
            read.form_fields,
            vec![FormField {
                name: "applicant.name".into(),
                kind: Some("text".into()),
                value: Some("Jane Doe".into()),
            }]
        );
    }
}
