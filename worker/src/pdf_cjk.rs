//! Composite (Type0) fonts that name one of Adobe's predefined CMaps as
//! their `/Encoding` and carry no `/ToUnicode` map, as CJK PDFs often do
//! (the reader is expected to know the CMaps; poppler ships them). lopdf
//! does not, and printed the raw codes ("Computer" as "$PNQVUFS").
//!
//! Most predefined CMaps are a character set's own encoding, so their codes
//! decode without any CMap data: `Uni*-UCS2-*` and `Uni*-UTF16-*` are
//! UTF-16BE, `*-RKSJ-*` Shift JIS, `EUC-*` EUC-JP, `GB*-EUC-*` and `GBK*`
//! GBK (`GBK2K` GB 18030), `*B5*` Big5, `KSC*` EUC-KR/UHC. `Identity-*`
//! with an Adobe CJK ordering maps codes to CIDs one to one; there only
//! CIDs 1–95 (ASCII in all four Adobe orderings) are known here, and the
//! rest read as U+FFFD, which makes a page of them go to OCR.

use encoding_rs::{BIG5, EUC_JP, EUC_KR, Encoding, GB18030, GBK, SHIFT_JIS};

/// How a composite font's codes become text, from its predefined CMap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CjkCodes {
    /// Two-byte UTF-16BE code units.
    Utf16,
    /// A character set's own multi-byte encoding.
    Legacy(&'static Encoding),
    /// Two-byte CIDs of an Adobe CJK character collection.
    AdobeIdentity,
}

impl CjkCodes {
    /// For a Type0 font's `/Encoding` name, with the ordering of its
    /// descendant's `/CIDSystemInfo` (for `Identity-H`/`-V`).
    pub fn for_cmap(name: &[u8], ordering: Option<&[u8]>) -> Option<Self> {
        let name = std::str::from_utf8(name).ok()?;
        let base = name
            .strip_suffix("-H")
            .or_else(|| name.strip_suffix("-V"))
            .unwrap_or(name);
        if base == "Identity" {
            return matches!(ordering, Some(b"Japan1" | b"GB1" | b"CNS1" | b"Korea1"))
                .then_some(Self::AdobeIdentity);
        }
        if base.starts_with("Uni") && (base.contains("UCS2") || base.contains("UTF16")) {
            return Some(Self::Utf16);
        }
        let legacy = if base.contains("RKSJ") {
            SHIFT_JIS
        } else if base == "EUC" {
            EUC_JP
        } else if base.starts_with("GBK2K") {
            GB18030
        } else if base.starts_with("GB") {
            GBK
        } else if base.contains("B5") {
            BIG5
        } else if base.starts_with("KSC") {
            EUC_KR
        } else {
            return None;
        };
        Some(Self::Legacy(legacy))
    }

    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            Self::Utf16 => char::decode_utf16(
                bytes
                    .chunks(2)
                    .map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])),
            )
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
            Self::Legacy(encoding) => encoding.decode_without_bom_handling(bytes).0.into_owned(),
            Self::AdobeIdentity => bytes
                .chunks(2)
                .map(|pair| {
                    let cid = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                    match cid {
                        1..=95 => char::from(u8::try_from(cid + 31).unwrap_or(b'?')),
                        _ => char::REPLACEMENT_CHARACTER,
                    }
                })
                .collect(),
        }
    }

    /// Each code's length in bytes and whether it is the one-byte space,
    /// in order (the CMaps' codespaces: one byte for ASCII, two for a
    /// lead byte, three for EUC-JP's 0x8F).
    pub fn each_code(self, bytes: &[u8], mut f: impl FnMut(&[u8])) {
        let mut at = 0;
        while at < bytes.len() {
            let lead = bytes[at];
            let len = match self {
                Self::Utf16 | Self::AdobeIdentity => 2,
                Self::Legacy(encoding) if encoding == SHIFT_JIS => {
                    if matches!(lead, 0x81..=0x9F | 0xE0..=0xFC) {
                        2
                    } else {
                        1
                    }
                }
                Self::Legacy(encoding) if encoding == EUC_JP => match lead {
                    0x8F => 3,
                    0x8E | 0xA1..=0xFE => 2,
                    _ => 1,
                },
                Self::Legacy(_) => {
                    if lead >= 0x81 {
                        2
                    } else {
                        1
                    }
                }
            };
            let end = (at + len).min(bytes.len());
            f(&bytes[at..end]);
            at = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_cmaps_read_their_character_sets() {
        let utf16 = CjkCodes::for_cmap(b"UniJIS-UCS2-H", None).expect("known");
        assert_eq!(utf16, CjkCodes::Utf16);
        assert_eq!(utf16.decode(&[0x65, 0xE5, 0x67, 0x2C, 0x00, 0x41]), "日本A");

        let rksj = CjkCodes::for_cmap(b"90ms-RKSJ-H", None).expect("known");
        // "日本" in Shift JIS, then ASCII.
        assert_eq!(rksj.decode(&[0x93, 0xFA, 0x96, 0x7B, b'x']), "日本x");
        let mut lengths = Vec::new();
        rksj.each_code(&[0x93, 0xFA, b' ', 0x96, 0x7B], |code| {
            lengths.push(code.len())
        });
        assert_eq!(lengths, [2, 1, 2]);

        let gbk = CjkCodes::for_cmap(b"GBK-EUC-H", None).expect("known");
        assert_eq!(gbk.decode(&[0xD6, 0xD0, 0xCE, 0xC4]), "中文");
        let big5 = CjkCodes::for_cmap(b"ETen-B5-H", None).expect("known");
        assert_eq!(big5.decode(&[0xA4, 0xA4, 0xA4, 0xE5]), "中文");
        let korean = CjkCodes::for_cmap(b"KSCms-UHC-H", None).expect("known");
        assert_eq!(korean.decode(&[0xC7, 0xD1, 0xB1, 0xDB]), "한글");

        // Identity with an Adobe ordering: the ASCII CIDs read, the rest
        // are unknown here (and send the page to OCR).
        let identity = CjkCodes::for_cmap(b"Identity-H", Some(b"Japan1")).expect("known");
        assert_eq!(
            identity.decode(&[0, 36, 0, 80, 0, 1, 0x04, 0x00]),
            "Co \u{fffd}"
        );
        assert_eq!(CjkCodes::for_cmap(b"Identity-H", Some(b"Identity")), None);
        assert_eq!(CjkCodes::for_cmap(b"WinAnsiEncoding", None), None);
    }
}
