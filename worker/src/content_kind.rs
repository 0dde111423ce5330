//! The kinds of document DocFlow can process, named by MIME type.

use std::{fmt, str::FromStr};

/// The kinds of document DocFlow has an extractor for. An upload whose
/// content is not one of these is refused before it reaches a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentKind {
    Pdf,
    Png,
    Jpeg,
    Text,
    Html,
    Docx,
    Xlsx,
    Pptx,
    Odt,
    Ods,
    Odp,
    Eml,
    Markdown,
}

impl ContentKind {
    pub const ALL: [Self; 13] = [
        Self::Pdf,
        Self::Png,
        Self::Jpeg,
        Self::Text,
        Self::Html,
        Self::Docx,
        Self::Xlsx,
        Self::Pptx,
        Self::Odt,
        Self::Ods,
        Self::Odp,
        Self::Eml,
        Self::Markdown,
    ];

    /// The canonical MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Text => "text/plain",
            Self::Html => "text/html",
            Self::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Self::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            Self::Odt => "application/vnd.oasis.opendocument.text",
            Self::Ods => "application/vnd.oasis.opendocument.spreadsheet",
            Self::Odp => "application/vnd.oasis.opendocument.presentation",
            Self::Eml => "message/rfc822",
            Self::Markdown => "text/markdown",
        }
    }

    /// A kind whose content is text (its whole upload is checked to be).
    pub fn is_text(self) -> bool {
        matches!(self, Self::Text | Self::Html | Self::Markdown | Self::Eml)
    }

    /// An Office format: a ZIP archive of XML parts.
    pub fn is_zip_container(self) -> bool {
        matches!(
            self,
            Self::Docx | Self::Xlsx | Self::Pptx | Self::Odt | Self::Ods | Self::Odp
        )
    }

    /// The usual file extension, which also names the format in results.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Text => "txt",
            Self::Html => "html",
            Self::Docx => "docx",
            Self::Xlsx => "xlsx",
            Self::Pptx => "pptx",
            Self::Odt => "odt",
            Self::Ods => "ods",
            Self::Odp => "odp",
            Self::Eml => "eml",
            Self::Markdown => "md",
        }
    }
}

impl fmt::Display for ContentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no extractor for content type {0:?} (supported: PDF, PNG, JPEG, plain text, HTML, DOCX, XLSX, PPTX, ODT, ODS, ODP, EML, Markdown)"
)]
pub struct UnsupportedContentType(pub String);

impl FromStr for ContentKind {
    type Err = UnsupportedContentType;

    /// Accepts a MIME type with optional parameters (`text/plain; charset=utf-8`),
    /// case-insensitively.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // Names other tools use for the same formats.
        let essence = match essence.as_str() {
            "text/x-markdown" => "text/markdown".to_owned(),
            "application/xhtml+xml" => "text/html".to_owned(),
            _ => essence,
        };
        Self::ALL
            .into_iter()
            .find(|kind| kind.mime() == essence)
            .ok_or_else(|| UnsupportedContentType(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mime_types_with_parameters() {
        assert_eq!("application/pdf".parse(), Ok(ContentKind::Pdf));
        assert_eq!("Text/Plain; charset=utf-8".parse(), Ok(ContentKind::Text));
        assert!("application/x-msdownload".parse::<ContentKind>().is_err());
        for kind in ContentKind::ALL {
            assert_eq!(kind.mime().parse(), Ok(kind));
        }
    }
}
