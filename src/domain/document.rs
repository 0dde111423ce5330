//! Identity and client-supplied metadata of an uploaded document.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::UserId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
pub struct DocumentId(pub Uuid);

impl DocumentId {
    /// Time-ordered, so ids of recent uploads sort together in the index.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Where the bytes live: derived from our ids only, so nothing the
    /// client sends can steer a write elsewhere in the store.
    pub fn storage_key(self, owner: UserId) -> String {
        format!("documents/{}/{}", owner.0, self.0)
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client's filename reduced to something safe to store and show: the last
/// path component, without control or format characters (bidi overrides
/// such as U+202E make `cod.exe` look like `exe.doc`; zero-width ones make
/// two names look alike) or line and paragraph separators, at most 255
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filename(String);

const MAX_FILENAME_BYTES: usize = 255;
const FALLBACK_FILENAME: &str = "upload";

impl Filename {
    pub fn sanitize(raw: Option<&str>) -> Self {
        let raw = raw.unwrap_or_default();
        // Both separators: a Windows client sends `C:\Users\me\a.pdf`.
        let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
        let cleaned: String = last
            .chars()
            .filter(|&c| {
                use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
                !matches!(
                    c.general_category(),
                    GeneralCategory::Control
                        | GeneralCategory::Format
                        | GeneralCategory::LineSeparator
                        | GeneralCategory::ParagraphSeparator
                )
            })
            .collect::<String>()
            .trim()
            .trim_start_matches('.')
            .to_owned();
        let mut capped = String::new();
        for c in cleaned.chars() {
            if capped.len() + c.len_utf8() > MAX_FILENAME_BYTES {
                break;
            }
            capped.push(c);
        }
        if capped.is_empty() {
            capped = FALLBACK_FILENAME.to_owned();
        }
        Self(capped)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_a_safe_last_component() {
        assert_eq!(
            Filename::sanitize(Some("report.pdf")).as_str(),
            "report.pdf"
        );
        assert_eq!(
            Filename::sanitize(Some("../../etc/passwd")).as_str(),
            "passwd"
        );
        assert_eq!(
            Filename::sanitize(Some("C:\\Users\\me\\a.pdf")).as_str(),
            "a.pdf"
        );
        assert_eq!(Filename::sanitize(Some("..")).as_str(), "upload");
        assert_eq!(Filename::sanitize(Some(".hidden")).as_str(), "hidden");
        assert_eq!(
            Filename::sanitize(Some("a\u{0}b\nc.txt")).as_str(),
            "abc.txt"
        );
        assert_eq!(
            Filename::sanitize(Some("invoice\u{202E}fdp.exe")).as_str(),
            "invoicefdp.exe",
            "a right-to-left override"
        );
        assert_eq!(
            Filename::sanitize(Some("a\u{200B}b\u{FEFF}c\u{2028}d\u{2029}e\u{2066}.txt")).as_str(),
            "abcde.txt",
            "zero-width, separators, isolates"
        );
        assert_eq!(
            Filename::sanitize(Some("日本語.pdf")).as_str(),
            "日本語.pdf"
        );
        assert_eq!(Filename::sanitize(None).as_str(), "upload");
        let long = "é".repeat(200);
        let capped = Filename::sanitize(Some(&long));
        assert!(capped.as_str().len() <= 255);
        assert!(capped.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn storage_keys_come_from_ids_only() {
        let owner = UserId(Uuid::nil());
        let id = DocumentId(Uuid::max());
        assert_eq!(
            id.storage_key(owner),
            "documents/00000000-0000-0000-0000-000000000000/ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
    }
}
