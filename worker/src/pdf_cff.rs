//! The built-in encoding of an embedded CFF font program (`/FontFile3`,
//! `/Subtype /Type1C`): Type 1 fonts as Ghostscript and others embed them.
//! Like a Type 1 program's `/Encoding` (`pdf_type1`), it is what a simple
//! font's codes mean when the PDF gives no `/Encoding` or only
//! `/Differences` over it (ISO 32000-1 §9.6.6); TeX's fonts rely on it.
//!
//! Read from the Compact Font Format (Adobe Technical Note #5176): the Top
//! DICT points at the charset (glyph → name, by string id) and the
//! encoding (code → glyph); names below 391 are the standard strings.

use crate::cff_strings::STANDARD_STRINGS;

/// The glyph name of each code (`None`: unassigned), or `None` when the
/// program uses StandardEncoding or ExpertEncoding, is CID-keyed, or cannot
/// be read.
pub fn builtin_encoding(cff: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let header_size = usize::from(*cff.get(2)?);
    let (_names, at) = index(cff, header_size)?;
    let (top_dicts, at) = index(cff, at)?;
    let (strings, _) = index(cff, at)?;
    let top = TopDict::parse(top_dicts.first()?)?;
    if top.cid_keyed || top.encoding < 2 {
        return None;
    }
    let glyphs = index_count(cff, top.char_strings?)?;
    let sids = charset(cff, top.charset, glyphs)?;
    let name = |gid: usize| -> Option<Vec<u8>> {
        let sid = usize::from(*sids.get(gid)?);
        string(sid, &strings)
    };

    let mut table: Vec<Option<Vec<u8>>> = vec![None; 256];
    let at = top.encoding;
    let format = *cff.get(at)?;
    let end = match format & 0x7f {
        0 => {
            let codes = usize::from(*cff.get(at + 1)?);
            for (i, &code) in cff.get(at + 2..at + 2 + codes)?.iter().enumerate() {
                table[usize::from(code)] = name(i + 1);
            }
            at + 2 + codes
        }
        1 => {
            let ranges = usize::from(*cff.get(at + 1)?);
            let mut gid = 1;
            for range in cff.get(at + 2..at + 2 + 2 * ranges)?.chunks_exact(2) {
                let (first, left) = (usize::from(range[0]), usize::from(range[1]));
                for slot in table.iter_mut().skip(first).take(left + 1) {
                    *slot = name(gid);
                    gid += 1;
                }
            }
            at + 2 + 2 * ranges
        }
        _ => return None,
    };
    // Supplements: more codes for glyphs already encoded.
    if format & 0x80 != 0 {
        let count = usize::from(*cff.get(end)?);
        for sup in cff.get(end + 1..end + 1 + 3 * count)?.chunks_exact(3) {
            let sid = usize::from(u16::from_be_bytes([sup[1], sup[2]]));
            table[usize::from(sup[0])] = string(sid, &strings);
        }
    }
    table
        .iter()
        .any(Option::is_some)
        .then_some(table)
        .map(|mut table| {
            for slot in &mut table {
                if slot.as_deref() == Some(b".notdef".as_slice()) {
                    *slot = None;
                }
            }
            table
        })
}

/// A string by its id: the standard strings, then the font's own.
fn string(sid: usize, strings: &[&[u8]]) -> Option<Vec<u8>> {
    match sid.checked_sub(STANDARD_STRINGS.len()) {
        None => Some(STANDARD_STRINGS[sid].as_bytes().to_vec()),
        Some(own) => strings.get(own).map(|s| s.to_vec()),
    }
}

/// The entries of the INDEX at `at`, and where it ends.
fn index(cff: &[u8], at: usize) -> Option<(Vec<&[u8]>, usize)> {
    let count = usize::from(u16::from_be_bytes([*cff.get(at)?, *cff.get(at + 1)?]));
    if count == 0 {
        return Some((Vec::new(), at + 2));
    }
    let off_size = usize::from(*cff.get(at + 2)?);
    if !(1..=4).contains(&off_size) {
        return None;
    }
    let offsets_at = at + 3;
    let offset = |i: usize| -> Option<usize> {
        let bytes = cff.get(offsets_at + i * off_size..offsets_at + (i + 1) * off_size)?;
        Some(bytes.iter().fold(0, |n, &b| (n << 8) | usize::from(b)))
    };
    // Offsets count from the byte before the data.
    let base = offsets_at + (count + 1) * off_size - 1;
    let mut items = Vec::with_capacity(count);
    for i in 0..count {
        let (start, end) = (offset(i)?, offset(i + 1)?);
        items.push(cff.get(base + start..base + end)?);
    }
    Some((items, base + offset(count)?))
}

/// How many entries the INDEX at `at` has.
fn index_count(cff: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *cff.get(at)?,
        *cff.get(at + 1)?,
    ])))
}

/// The string id of each glyph (glyph 0 is `.notdef`).
fn charset(cff: &[u8], at: usize, glyphs: usize) -> Option<Vec<u16>> {
    let mut sids = vec![0_u16];
    // The predefined ISOAdobe charset: glyph i is string i.
    if at == 0 {
        sids.extend((1..glyphs.min(229)).map(|i| i as u16));
        return Some(sids);
    }
    if at < 3 {
        return None;
    }
    let mut pos = at + 1;
    match *cff.get(at)? {
        0 => {
            while sids.len() < glyphs {
                sids.push(u16::from_be_bytes([*cff.get(pos)?, *cff.get(pos + 1)?]));
                pos += 2;
            }
        }
        format @ (1 | 2) => {
            while sids.len() < glyphs {
                let first = u16::from_be_bytes([*cff.get(pos)?, *cff.get(pos + 1)?]);
                let left = if format == 1 {
                    pos += 3;
                    u16::from(*cff.get(pos - 1)?)
                } else {
                    pos += 4;
                    u16::from_be_bytes([*cff.get(pos - 2)?, *cff.get(pos - 1)?])
                };
                for i in 0..=left {
                    if sids.len() == glyphs {
                        break;
                    }
                    sids.push(first.checked_add(i)?);
                }
            }
        }
        _ => return None,
    }
    Some(sids)
}

/// The Top DICT entries this reader needs.
struct TopDict {
    charset: usize,
    encoding: usize,
    char_strings: Option<usize>,
    cid_keyed: bool,
}

impl TopDict {
    fn parse(dict: &[u8]) -> Option<Self> {
        let mut top = Self {
            charset: 0,
            encoding: 0,
            char_strings: None,
            cid_keyed: false,
        };
        let mut operands: Vec<i64> = Vec::new();
        let mut at = 0;
        while at < dict.len() {
            let b = dict[at];
            at += 1;
            match b {
                0..=21 => {
                    let operator = if b == 12 {
                        at += 1;
                        1200 + u16::from(*dict.get(at - 1)?)
                    } else {
                        u16::from(b)
                    };
                    let last = operands
                        .last()
                        .copied()
                        .and_then(|n| usize::try_from(n).ok());
                    match operator {
                        15 => top.charset = last?,
                        16 => top.encoding = last?,
                        17 => top.char_strings = last,
                        1230 => top.cid_keyed = true,
                        _ => {}
                    }
                    operands.clear();
                }
                28 => {
                    operands.push(i64::from(i16::from_be_bytes([
                        *dict.get(at)?,
                        *dict.get(at + 1)?,
                    ])));
                    at += 2;
                }
                29 => {
                    let bytes = dict.get(at..at + 4)?;
                    operands.push(i64::from(i32::from_be_bytes([
                        bytes[0], bytes[1], bytes[2], bytes[3],
                    ])));
                    at += 4;
                }
                // A real number: nibbles up to an 0xf; its value is not needed.
                30 => {
                    while at < dict.len() {
                        let nibbles = dict[at];
                        at += 1;
                        if nibbles & 0x0f == 0x0f || nibbles >> 4 == 0x0f {
                            break;
                        }
                    }
                    operands.push(0);
                }
                32..=246 => operands.push(i64::from(b) - 139),
                247..=250 => {
                    operands.push((i64::from(b) - 247) * 256 + i64::from(*dict.get(at)?) + 108);
                    at += 1;
                }
                251..=254 => {
                    operands.push(-(i64::from(b) - 251) * 256 - i64::from(*dict.get(at)?) - 108);
                    at += 1;
                }
                _ => return None,
            }
            if operands.len() > 48 {
                return None;
            }
        }
        Some(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INDEX of `items` with one-byte offsets.
    fn index_of(items: &[&[u8]]) -> Vec<u8> {
        let mut out = (items.len() as u16).to_be_bytes().to_vec();
        if items.is_empty() {
            return out;
        }
        out.push(1);
        let mut offset = 1;
        out.push(offset);
        for item in items {
            offset += item.len() as u8;
            out.push(offset);
        }
        for item in items {
            out.extend_from_slice(item);
        }
        out
    }

    /// A CFF whose Top DICT points at a format-0 charset and `encoding`.
    fn cff_with(encoding: &[u8]) -> Vec<u8> {
        cff_pointing(encoding, None)
    }

    /// The same, the encoding offset replaced by `predefined` (0: Standard).
    fn cff_pointing(encoding: &[u8], predefined: Option<i32>) -> Vec<u8> {
        // Glyphs: .notdef, fi (SID 109), bar (SID 93), and "ff", a string
        // of the font's own (SID 391).
        let charset = [0_u8, 0, 109, 0, 93, 0x01, 0x87];
        let char_strings = index_of(&[b"\x0e", b"\x0e", b"\x0e", b"\x0e"]);
        let header = [1_u8, 0, 4, 1];
        let names = index_of(&[b"CMTT10"]);
        let strings = index_of(&[b"ff"]);
        let globals = index_of(&[]);
        // The Top DICT's size must be known to place what follows it: the
        // operands are written as 29 (four bytes) so it does not change.
        let top_len = 3 * 6 + 5; // three 5-byte operands and their operators, the INDEX header
        let start = header.len() + names.len() + top_len + strings.len() + globals.len();
        let charset_at = start as i32;
        let encoding_at = predefined.unwrap_or(charset_at + charset.len() as i32);
        let char_strings_at = charset_at + (charset.len() + encoding.len()) as i32;
        let mut top = Vec::new();
        for (value, operator) in [
            (charset_at, 15_u8),
            (encoding_at, 16),
            (char_strings_at, 17),
        ] {
            top.push(29);
            top.extend_from_slice(&value.to_be_bytes());
            top.push(operator);
        }
        let top = index_of(&[&top]);
        assert_eq!(top.len(), top_len);
        let mut cff = header.to_vec();
        for part in [&names, &top, &strings, &globals] {
            cff.extend_from_slice(part);
        }
        cff.extend_from_slice(&charset);
        cff.extend_from_slice(encoding);
        cff.extend_from_slice(&char_strings);
        cff
    }

    #[test]
    fn a_custom_encoding_names_its_codes() {
        // Format 0: glyphs 1, 2, 3 at codes 12, 124, 11.
        let table = builtin_encoding(&cff_with(&[0, 3, 12, 124, 11])).expect("an encoding");
        assert_eq!(table[12].as_deref(), Some(b"fi".as_slice()));
        assert_eq!(table[124].as_deref(), Some(b"bar".as_slice()));
        assert_eq!(table[11].as_deref(), Some(b"ff".as_slice()));
        assert_eq!(table[65], None);
        // Format 1 (a range of three from code 10) with a supplement: code
        // 200 also shows "bar".
        let table =
            builtin_encoding(&cff_with(&[0x81, 1, 10, 2, 1, 200, 0, 93])).expect("an encoding");
        assert_eq!(table[10].as_deref(), Some(b"fi".as_slice()));
        assert_eq!(table[12].as_deref(), Some(b"ff".as_slice()));
        assert_eq!(table[200].as_deref(), Some(b"bar".as_slice()));
    }

    #[test]
    fn standard_encodings_and_damage_defer_to_the_pdf() {
        assert!(builtin_encoding(&cff_pointing(&[], Some(0))).is_none());
        assert!(builtin_encoding(&cff_pointing(&[], Some(1))).is_none());
        assert!(builtin_encoding(b"").is_none());
        assert!(builtin_encoding(&[1, 0, 4, 1, 0xff, 0xff, 9]).is_none());
        let cut = cff_with(&[0, 3, 12, 124, 11]);
        for len in 0..cut.len() {
            let _ = builtin_encoding(&cut[..len]);
        }
    }
}
