//! What the worker and an extractor process say to each other, over the
//! child's stdin and stdout: one JSON line per request; one line per
//! answer, `ok <result JSON>` or `err <ExtractError JSON>`. The result is
//! passed on as text, so the worker never builds it in memory as a tree.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{ExtractError, OcrOptions, OcrStrategy};

/// One document to extract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The downloaded file (in the worker's scratch directory).
    pub path: PathBuf,
    /// Its MIME type, as detected at upload.
    pub content_type: String,
    pub ocr: Option<OcrRequest>,
    /// CPU seconds this document may use in the extractor.
    pub cpu_seconds: u64,
    /// Wall-clock seconds; the extractor stops itself past them, even if the
    /// worker that asked is gone.
    pub wall_clock_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OcrRequest {
    /// Tesseract language codes joined by `+` (`eng+deu`).
    pub language: String,
    pub timeout_secs: u64,
    pub strategy: OcrStrategy,
    pub max_pages: usize,
}

impl From<&OcrRequest> for OcrOptions {
    fn from(request: &OcrRequest) -> Self {
        OcrOptions {
            language: request.language.clone(),
            timeout: Duration::from_secs(request.timeout_secs),
            strategy: request.strategy,
            max_pages: request.max_pages,
        }
    }
}

pub const OK_PREFIX: &str = "ok ";
pub const ERR_PREFIX: &str = "err ";

/// An answer line as the worker reads it.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The result as JSON text.
    Extracted(String),
    Failed(ExtractError),
}

impl Answer {
    /// Parses one line (without its newline). `None`: not an answer.
    pub fn parse(line: &str) -> Option<Self> {
        if let Some(json) = line.strip_prefix(OK_PREFIX) {
            Some(Self::Extracted(json.to_owned()))
        } else if let Some(json) = line.strip_prefix(ERR_PREFIX) {
            serde_json::from_str(json).ok().map(Self::Failed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(
            Answer::parse(r#"ok {"kind":"text"}"#),
            Some(Answer::Extracted(r#"{"kind":"text"}"#.into()))
        );
        assert_eq!(
            Answer::parse(r#"err {"kind":"permanent","message":"encrypted"}"#),
            Some(Answer::Failed(ExtractError::Permanent("encrypted".into())))
        );
        assert_eq!(Answer::parse("Tesseract Command: tesseract x"), None);
        assert_eq!(Answer::parse("err {not json"), None);
    }
}
