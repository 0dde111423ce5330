//! The built-in encoding of an embedded Type 1 font program (`/FontFile`).
//!
//! A simple font without an `/Encoding` (or with `/Differences` but no
//! `/BaseEncoding`) reads its codes through the encoding its embedded font
//! program declares (ISO 32000-1 §9.6.6). TeX's Computer Modern fonts are
//! the common case: code 12 is `/fi`, and in the symbol font code 106 is
//! `/bar`, not the `j` StandardEncoding would say. The encoding sits in the
//! program's clear-text part, before `eexec`, as PostScript:
//!
//! ```text
//! /Encoding 256 array
//! 0 1 255 {1 index exch /.notdef put} for
//! dup 12 /fi put
//! readonly def
//! ```

/// The clear-text part is a few KiB; a longer one is not a font we read.
const MAX_CLEAR_TEXT: usize = 256 * 1024;

/// The glyph name of each code (`None`: `.notdef` or unassigned), or `None`
/// when the program uses StandardEncoding or declares no encoding we can
/// read. `clear_text_len` is the stream's `/Length1`, when given.
pub fn builtin_encoding(
    program: &[u8],
    clear_text_len: Option<usize>,
) -> Option<Vec<Option<Vec<u8>>>> {
    // A PFB segment header (0x80 0x01 and a length) before the text.
    let program = match program {
        [0x80, 0x01, _, _, _, _, rest @ ..] => rest,
        _ => program,
    };
    let end = clear_text_len
        .unwrap_or(usize::MAX)
        .min(MAX_CLEAR_TEXT)
        .min(program.len());
    let clear = &program[..end];
    let clear = find(clear, b"eexec").map_or(clear, |at| &clear[..at]);
    let start = find(clear, b"/Encoding")? + b"/Encoding".len();
    let mut tokens = clear[start..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .peekable();
    if tokens.peek()? == b"StandardEncoding" {
        return None;
    }
    let mut table: Vec<Option<Vec<u8>>> = vec![None; 256];
    let mut any = false;
    // `dup CODE /NAME put`, until the array is defined.
    let window: Vec<&[u8]> = tokens.take_while(|t| *t != b"def").collect();
    for at in 0..window.len().saturating_sub(3) {
        let [dup, code, name, put] = [window[at], window[at + 1], window[at + 2], window[at + 3]];
        if dup != b"dup" || put != b"put" {
            continue;
        }
        let (Some(code), Some(name)) = (parse_code(code), name.strip_prefix(b"/")) else {
            continue;
        };
        if name != b".notdef" {
            table[code] = Some(name.to_vec());
            any = true;
        }
    }
    any.then_some(table)
}

fn parse_code(token: &[u8]) -> Option<usize> {
    std::str::from_utf8(token)
        .ok()?
        .parse::<usize>()
        .ok()
        .filter(|code| *code < 256)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMSY: &[u8] = b"%!PS-AdobeFont-1.0: CMSY10 003.002\n\
        /FontName /CMSY10 def\n\
        /Encoding 256 array\n\
        0 1 255 {1 index exch /.notdef put} for\n\
        dup 32 /space put\n\
        dup 33 /arrowright put dup 102 /braceleft put\n\
        dup 106 /bar put\n\
        readonly def\n\
        currentdict end\n\
        currentfile eexec\n\
        dup 107 /notthis put";

    #[test]
    fn the_declared_encoding_is_read_up_to_its_definition() {
        let table = builtin_encoding(CMSY, None).expect("an encoding");
        assert_eq!(table[106].as_deref(), Some(b"bar".as_slice()));
        assert_eq!(table[33].as_deref(), Some(b"arrowright".as_slice()));
        assert_eq!(table[102].as_deref(), Some(b"braceleft".as_slice()));
        assert_eq!(table[107], None, "after eexec is not clear text");
        assert_eq!(table[65], None);
    }

    #[test]
    fn length1_bounds_the_clear_text() {
        let cut = find(CMSY, b"dup 106").expect("in the program");
        let table = builtin_encoding(CMSY, Some(cut)).expect("an encoding");
        assert_eq!(table[106], None, "past /Length1");
    }

    #[test]
    fn an_encoding_past_the_clear_text_limit_is_not_read() {
        let mut program = b"%!PS-AdobeFont-1.0: X\n%".to_vec();
        program.extend(std::iter::repeat_n(b' ', MAX_CLEAR_TEXT));
        program.extend_from_slice(b"\n/Encoding 256 array dup 65 /B put readonly def eexec");
        assert!(builtin_encoding(&program, None).is_none());
    }

    #[test]
    fn standard_encoding_and_no_encoding_defer_to_the_pdf() {
        assert!(builtin_encoding(b"/Encoding StandardEncoding def eexec", None).is_none());
        assert!(builtin_encoding(b"%!FontType1 /FontName /X def eexec", None).is_none());
        assert!(builtin_encoding(b"/Encoding 256 array readonly def", None).is_none());
    }

    #[test]
    fn a_pfb_header_is_skipped_and_bad_codes_ignored() {
        let mut pfb = vec![0x80, 0x01, 0, 0, 0, 0];
        pfb.extend_from_slice(
            b"/Encoding 256 array dup 300 /x put dup -1 /y put dup 65 /A put readonly def",
        );
        let table = builtin_encoding(&pfb, None).expect("an encoding");
        assert_eq!(table[65].as_deref(), Some(b"A".as_slice()));
        assert_eq!(table.iter().flatten().count(), 1);
    }
}
