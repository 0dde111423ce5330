//! The extraction result: one JSON document per job, with the full text at
//! `.text` whatever the kind, and a schema per content kind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExtractionResult {
    /// Boxed: by far the largest, and results are moved around whole.
    Pdf(Box<PdfExtraction>),
    Image(ImageExtraction),
    Text(TextExtraction),
    /// DOCX, XLSX, PPTX, ODT, ODS, ODP.
    Office(Box<OfficeExtraction>),
    Html(HtmlExtraction),
    Email(EmailExtraction),
    Markdown(MarkdownExtraction),
}

impl ExtractionResult {
    pub fn text(&self) -> &str {
        match self {
            Self::Pdf(pdf) => &pdf.text,
            Self::Image(image) => image.text.as_deref().unwrap_or(""),
            Self::Text(text) => &text.text,
            Self::Office(office) => &office.text,
            Self::Html(html) => &html.text,
            Self::Email(email) => &email.text,
            Self::Markdown(markdown) => &markdown.text,
        }
    }
}

/// Counts over a text, as a reader would count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TextCounts {
    pub chars: u64,
    pub words: u64,
    pub lines: u64,
}

impl TextCounts {
    pub fn of(text: &str) -> Self {
        Self {
            chars: text.chars().count() as u64,
            words: text.split_whitespace().count() as u64,
            lines: if text.is_empty() {
                0
            } else {
                text.lines().count() as u64
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PdfExtraction {
    /// All pages' text, pages separated by a form feed.
    pub text: String,
    pub counts: TextCounts,
    pub page_count: u32,
    /// The header version, e.g. `1.7`.
    pub pdf_version: String,
    /// Encrypted with an empty user password (readable); other encrypted
    /// files fail the job.
    pub encrypted: bool,
    pub info: PdfInfo,
    pub pages: Vec<PdfPage>,
    /// 1-based numbers of pages with no text, from their text layer or OCR.
    pub pages_without_text: Vec<u32>,
    /// Pages whose text was read by OCR.
    pub ocr_page_count: u32,
    /// Pages that wanted OCR but were past the per-document OCR page limit.
    pub ocr_pages_skipped: u32,
    /// How OCR ran, when it read any page.
    pub ocr: Option<OcrSummary>,
    /// The interactive form's fields (AcroForm), in the form's order.
    /// What their widgets show is also in their pages' text, as a viewer
    /// draws it.
    pub form_fields: Vec<FormField>,
    /// Part of the document was not read: pages beyond the page limit, or
    /// text beyond the text limit.
    pub truncated: bool,
    /// Which limit cut the reading short, and from where.
    pub truncated_reason: Option<String>,
    /// The file was damaged and repaired while reading it (a rebuilt
    /// cross-reference table, a page tree that loops, a file cut short);
    /// `page_count` counts the pages recovered.
    pub damaged: bool,
    /// What was wrong with it.
    pub damage: Option<String>,
}

/// The document information dictionary; dates as RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PdfInfo {
    pub title: Option<String>,
    pub author: Option<String>,
    pub subject: Option<String>,
    pub keywords: Option<String>,
    pub creator: Option<String>,
    pub producer: Option<String>,
    pub created_at: Option<String>,
    pub modified_at: Option<String>,
}

/// One field of a PDF form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FormField {
    /// The fully qualified name (`address.city`).
    pub name: String,
    /// `text`, `button`, `choice` or `signature`, when the form says.
    pub kind: Option<String>,
    /// The value: text, the chosen option(s) joined by newlines, or a
    /// button's state (`Yes`, `Off`).
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PdfPage {
    /// 1-based.
    pub number: u32,
    /// MediaBox width and height in points (1/72 inch).
    pub width_pt: Option<f64>,
    pub height_pt: Option<f64>,
    pub text: String,
    pub counts: TextCounts,
    /// Where the text came from.
    pub source: TextSource,
    /// Mean word confidence (0–100) of an OCR'd page.
    pub ocr_confidence: Option<f64>,
    /// Why OCR could not read this page, when it tried and failed.
    pub ocr_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// The page's text layer.
    Text,
    /// OCR of the rendered page.
    Ocr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageExtraction {
    /// `png` or `jpeg`.
    pub format: String,
    pub width: u32,
    pub height: u32,
    /// e.g. `rgb8`, `rgba8`, `l8`.
    pub color_type: String,
    pub bit_depth: u16,
    /// EXIF orientation 1–8, when present.
    pub exif_orientation: Option<u16>,
    /// Horizontal and vertical resolution in dots per inch, when recorded.
    pub dpi: Option<[f64; 2]>,
    /// OCR text, when OCR ran.
    pub text: Option<String>,
    pub counts: Option<TextCounts>,
    pub ocr: Option<OcrSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OcrSummary {
    pub engine: String,
    pub language: String,
    /// Mean word confidence, 0–100.
    pub mean_confidence: Option<f64>,
    /// The DPI given to tesseract (for PDFs, the pages' render DPI; less
    /// for pages that would exceed the pixel limit).
    pub dpi: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TextExtraction {
    pub text: String,
    pub counts: TextCounts,
    /// The encoding the bytes were in (e.g. `UTF-8`, `windows-1252`).
    pub encoding: String,
    /// ISO 639-3 code of the most likely language, when the guess is reliable.
    pub language: Option<String>,
    pub language_confidence: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OfficeExtraction {
    /// `docx`, `xlsx`, `pptx`, `odt`, `ods` or `odp`.
    pub format: String,
    /// All the text; slides and sheets separated by a form feed.
    pub text: String,
    pub counts: TextCounts,
    pub properties: DocumentProperties,
    /// Slides (presentations) or sheets (spreadsheets), in order, each
    /// with its name and text; empty for word-processing documents, whose
    /// pages are made by the viewer.
    pub parts: Vec<OfficePart>,
    /// Text past the per-document limit was not read.
    pub truncated: bool,
}

/// What the document says about itself (OOXML core properties,
/// OpenDocument meta), as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentProperties {
    pub title: Option<String>,
    pub author: Option<String>,
    pub subject: Option<String>,
    /// As the document writes it (ISO 8601 in practice).
    pub created: Option<String>,
    pub modified: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OfficePart {
    /// "Slide 3", or the sheet's name.
    pub name: String,
    pub text: String,
    pub counts: TextCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HtmlExtraction {
    /// The text a browser shows (no scripts, styles or markup); blocks on
    /// lines of their own, table cells separated by tabs.
    pub text: String,
    pub counts: TextCounts,
    pub title: Option<String>,
    /// The encoding the bytes were in.
    pub encoding: String,
    /// ISO 639-3 code of the most likely language, when the guess is reliable.
    pub language: Option<String>,
    pub language_confidence: Option<f64>,
    /// Text past the per-document limit was not read.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmailExtraction {
    pub subject: Option<String>,
    /// `Name <address>` or the bare address, as a mail client shows them
    /// (at most 1,000 per field).
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// RFC 3339.
    pub date: Option<String>,
    pub message_id: Option<String>,
    /// The plain-text body (or what its HTML body shows, when it has no
    /// plain one); attachments are listed, not read.
    pub text: String,
    pub counts: TextCounts,
    pub attachment_count: u64,
    /// The first 1,000 attachments.
    pub attachments: Vec<EmailAttachment>,
    /// Text past the per-document limit was not read.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmailAttachment {
    pub name: Option<String>,
    pub content_type: Option<String>,
    /// Decoded size.
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MarkdownExtraction {
    /// The text a reader sees: no markup, blocks on lines of their own,
    /// table cells separated by tabs.
    pub text: String,
    pub counts: TextCounts,
    /// The first level-1 heading.
    pub title: Option<String>,
    /// The outline, in order (at most 1,000 headings).
    pub headings: Vec<Heading>,
    /// Headings in the document, listed or not (results stored before
    /// this field read 0).
    #[serde(default)]
    pub heading_count: u64,
    pub encoding: String,
    pub language: Option<String>,
    pub language_confidence: Option<f64>,
    /// Text past the per-document limit was not read.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Heading {
    /// 1 to 6.
    pub level: u32,
    pub title: String,
}
