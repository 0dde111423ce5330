//! DocFlow's extraction sandbox (`docflow-extract`, in `worker/`): the
//! worker side's half that touches untrusted bytes.
//!
//! - The extractors (PDF, image with OCR, text): no database, network or
//!   configuration of their own, so they can be fuzzed on their own.
//! - [`serve`]: the extractor process (`docflow extract --serve`) that runs
//!   them under rlimits and a watchdog.
//! - [`pool`]: the worker's pool of such processes.
//!
//! The queue consumer that drives them is `docflow::worker` (`src/worker/`).

mod cff_strings;
mod content_kind;
pub mod email;
mod glyph_names;
mod html;
pub mod image;
mod markdown;
pub mod ocr;
mod office;
pub mod pdf;
mod pdf_cff;
mod pdf_cjk;
mod pdf_content;
mod pdf_ocr;
mod pdf_text;
mod pdf_type1;
pub mod pool;
pub mod protocol;
pub mod result;
pub mod serve;
mod standard_fonts;
pub mod text;

use std::{path::Path, time::Duration};

pub use content_kind::{ContentKind, UnsupportedContentType};
pub use result::ExtractionResult;
use serde::{Deserialize, Serialize};

/// Why extraction failed. Transient failures are worth retrying (a busy
/// machine timed out OCR); permanent ones never are (corrupt or encrypted
/// files, unsupported content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ExtractError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl ExtractError {
    /// A document past one of the extractors' bounds: permanent, its
    /// message `too_complex: ` and the bound it passed.
    pub fn too_complex(what: impl std::fmt::Display) -> Self {
        Self::Permanent(format!("too_complex: {what}"))
    }
}

/// OCR settings; `None` in [`Limits::ocr`] turns OCR off.
#[derive(Debug, Clone)]
pub struct OcrOptions {
    pub language: String,
    /// Per run of tesseract (one image, one PDF page) and of the page
    /// renderer.
    pub timeout: Duration,
    /// Which PDF pages are read by OCR.
    pub strategy: OcrStrategy,
    /// PDF pages read by OCR per document, at most.
    pub max_pages: usize,
}

/// Which pages of a PDF are read by OCR, when OCR is on (images always
/// are). No OCR at all is `Limits::ocr: None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcrStrategy {
    /// Pages without a usable text layer: fewer than ten characters, or
    /// mostly glyphs that map to no character.
    #[default]
    Auto,
    /// Every page, whatever its text layer says.
    Force,
}

/// PDF pages read by OCR per document, unless configured otherwise.
pub const DEFAULT_OCR_MAX_PAGES: usize = 50;

/// Bounds on the work one document may cause.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest size any single PDF stream may inflate to.
    pub max_decompressed_bytes: usize,
    pub max_pdf_pages: usize,
    /// Text kept per document, at most (bytes); the rest is not read.
    pub max_text_bytes: usize,
    /// CPU time reading a PDF's text may take, at most: well below the
    /// sandbox's own CPU limit, so a hostile file fails with a reason
    /// instead of being killed.
    pub pdf_cpu_budget: Duration,
    /// Images above this many pixels are refused before decoding.
    pub max_image_pixels: u64,
    pub ocr: Option<OcrOptions>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_pdf_pages: 2_000,
            max_text_bytes: 16 << 20,
            pdf_cpu_budget: Duration::from_secs(30),
            max_image_pixels: 50_000_000,
            ocr: Some(OcrOptions {
                language: "eng".into(),
                timeout: Duration::from_secs(60),
                strategy: OcrStrategy::Auto,
                max_pages: DEFAULT_OCR_MAX_PAGES,
            }),
        }
    }
}

impl Limits {
    /// These limits for a sandbox that gives a document `cpu_seconds`: the
    /// PDF text budget is at most a quarter of it, so the budget's clear
    /// failure comes first.
    #[must_use]
    pub fn within_cpu_seconds(mut self, cpu_seconds: u64) -> Self {
        self.pdf_cpu_budget = self
            .pdf_cpu_budget
            .min(Duration::from_secs(cpu_seconds) / 4);
        self
    }
}

/// Extracts metadata and text from the file at `path`.
pub fn extract(
    path: &Path,
    kind: ContentKind,
    limits: &Limits,
) -> Result<ExtractionResult, ExtractError> {
    match kind {
        ContentKind::Pdf => {
            pdf::extract(path, limits).map(|pdf| ExtractionResult::Pdf(Box::new(pdf)))
        }
        ContentKind::Png | ContentKind::Jpeg => {
            image::extract(path, limits).map(ExtractionResult::Image)
        }
        ContentKind::Text => {
            let bytes = std::fs::read(path).map_err(|e| {
                ExtractError::Transient(format!("cannot read the downloaded file: {e}"))
            })?;
            text::extract(&bytes).map(ExtractionResult::Text)
        }
        ContentKind::Html => {
            let bytes = std::fs::read(path).map_err(|e| {
                ExtractError::Transient(format!("cannot read the downloaded file: {e}"))
            })?;
            html::extract(&bytes, limits).map(ExtractionResult::Html)
        }
        ContentKind::Eml => {
            let bytes = std::fs::read(path).map_err(|e| {
                ExtractError::Transient(format!("cannot read the downloaded file: {e}"))
            })?;
            email::extract(&bytes, limits).map(ExtractionResult::Email)
        }
        ContentKind::Markdown => {
            let bytes = std::fs::read(path).map_err(|e| {
                ExtractError::Transient(format!("cannot read the downloaded file: {e}"))
            })?;
            markdown::extract(&bytes, limits).map(ExtractionResult::Markdown)
        }
        ContentKind::Docx
        | ContentKind::Xlsx
        | ContentKind::Pptx
        | ContentKind::Odt
        | ContentKind::Ods
        | ContentKind::Odp => office::extract(path, kind, limits)
            .map(|office| ExtractionResult::Office(Box::new(office))),
    }
}
