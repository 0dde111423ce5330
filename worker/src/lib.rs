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

mod content_kind;
pub mod image;
pub mod ocr;
pub mod pdf;
mod pdf_text;
pub mod pool;
pub mod protocol;
pub mod result;
pub mod serve;
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

/// OCR settings; `None` in [`Limits::ocr`] turns OCR off.
#[derive(Debug, Clone)]
pub struct OcrOptions {
    pub language: String,
    pub timeout: Duration,
}

/// Bounds on the work one document may cause.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest size any single PDF stream may inflate to.
    pub max_decompressed_bytes: usize,
    pub max_pdf_pages: usize,
    /// Images above this many pixels are refused before decoding.
    pub max_image_pixels: u64,
    pub ocr: Option<OcrOptions>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_pdf_pages: 2_000,
            max_image_pixels: 50_000_000,
            ocr: Some(OcrOptions {
                language: "eng".into(),
                timeout: Duration::from_secs(60),
            }),
        }
    }
}

/// Extracts metadata and text from the file at `path`.
pub fn extract(
    path: &Path,
    kind: ContentKind,
    limits: &Limits,
) -> Result<ExtractionResult, ExtractError> {
    match kind {
        ContentKind::Pdf => pdf::extract(path, limits).map(ExtractionResult::Pdf),
        ContentKind::Png | ContentKind::Jpeg => {
            image::extract(path, limits).map(ExtractionResult::Image)
        }
        ContentKind::Text => {
            let bytes = std::fs::read(path).map_err(|e| {
                ExtractError::Transient(format!("cannot read the downloaded file: {e}"))
            })?;
            text::extract(&bytes).map(ExtractionResult::Text)
        }
    }
}
