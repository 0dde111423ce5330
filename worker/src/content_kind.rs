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
}

impl ContentKind {
    pub const ALL: [Self; 4] = [Self::Pdf, Self::Png, Self::Jpeg, Self::Text];

    /// The canonical MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Text => "text/plain",
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
    "no extractor for content type {0:?} (supported: application/pdf, image/png, image/jpeg, text/plain)"
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
