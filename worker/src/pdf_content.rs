//! Content-stream operations, parsed one at a time.
//!
//! lopdf's `Content::decode` builds every operation of a stream before the
//! caller sees the first: about 85 bytes of memory per inflated byte, so a
//! 48 KB upload that inflates to 32 MiB of `(A) Tj` needs gigabytes before
//! any cap can be checked. Here a stream is an iterator: the reader holds
//! one operation at a time and stops when its own caps say so. One
//! operation may carry at most `MAX_OPERAND_OBJECTS` objects, nested at
//! most `MAX_NESTING` deep; past that the stream is too complex and the
//! iterator ends with an error.
//!
//! The syntax is the PDF specification's (7.2, 7.3, 8.9.7): numbers,
//! names with `#xx` escapes, literal and hex strings, arrays, dictionaries,
//! comments, and inline images, whose data is skipped. Stray delimiters are
//! skipped as poppler does, so one damaged byte loses one token, not the
//! page.

use lopdf::{Dictionary, Object, StringFormat, content::Operation};

/// Objects (operands and everything nested in them) in one operation, at
/// most. A `TJ` array of a long line holds a few hundred.
pub const MAX_OPERAND_OBJECTS: usize = 100_000;
/// Arrays and dictionaries inside each other, at most.
pub const MAX_NESTING: usize = 32;

/// Why a stream stopped parsing early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooComplex(pub String);

pub struct Operations<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Objects parsed for the operation being read.
    objects: usize,
    failed: bool,
}

impl<'a> Operations<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            objects: 0,
            failed: false,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b) = self.peek() {
            if is_space(b) {
                self.pos += 1;
            } else if b == b'%' {
                while let Some(b) = self.peek() {
                    if b == b'\n' || b == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn count(&mut self) -> Result<(), TooComplex> {
        self.objects += 1;
        if self.objects > MAX_OPERAND_OBJECTS {
            return Err(TooComplex(format!(
                "a content-stream operation has more than {MAX_OPERAND_OBJECTS} operands"
            )));
        }
        Ok(())
    }

    /// A regular word (operator or keyword) at `pos`.
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if is_space(b) || is_delimiter(b) {
                break;
            }
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    /// The next object, `Ok(None)` for a token that is not one (an operator
    /// word is returned through `Err(Ok(word))`).
    fn object(&mut self, depth: usize) -> Result<Token<'a>, TooComplex> {
        if depth > MAX_NESTING {
            return Err(TooComplex(format!(
                "content-stream arrays or dictionaries nest more than {MAX_NESTING} deep"
            )));
        }
        self.skip_space();
        let Some(b) = self.peek() else {
            return Ok(Token::End);
        };
        let object = match b {
            b'/' => {
                self.pos += 1;
                Object::Name(name(self.word()))
            }
            b'(' => {
                self.pos += 1;
                Object::String(self.literal_string(), StringFormat::Literal)
            }
            b'<' if self.bytes.get(self.pos + 1) == Some(&b'<') => {
                self.pos += 2;
                Object::Dictionary(self.dictionary(depth + 1)?)
            }
            b'<' => {
                self.pos += 1;
                Object::String(self.hex_string(), StringFormat::Hexadecimal)
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    match self.object(depth + 1)? {
                        Token::Object(object) => items.push(object),
                        Token::Close(b']') | Token::End => break,
                        // An operator or stray closer inside an array: skip it.
                        Token::Close(_) | Token::Word(_) => {}
                    }
                }
                Object::Array(items)
            }
            b')' | b']' | b'>' | b'{' | b'}' => {
                self.pos += 1;
                if b == b'>' && self.peek() == Some(b'>') {
                    self.pos += 1;
                }
                return Ok(Token::Close(b));
            }
            _ => {
                let word = self.word();
                if word.is_empty() {
                    // A delimiter not handled above; step over it.
                    self.pos += 1;
                    return Ok(Token::Close(b));
                }
                match word {
                    b"true" => Object::Boolean(true),
                    b"false" => Object::Boolean(false),
                    b"null" => Object::Null,
                    _ => match number(word) {
                        Some(number) => number,
                        None => return Ok(Token::Word(word)),
                    },
                }
            }
        };
        self.count()?;
        Ok(Token::Object(object))
    }

    fn dictionary(&mut self, depth: usize) -> Result<Dictionary, TooComplex> {
        let mut dictionary = Dictionary::new();
        let mut key: Option<Vec<u8>> = None;
        loop {
            match self.object(depth)? {
                Token::Object(Object::Name(name)) if key.is_none() => key = Some(name),
                Token::Object(value) => {
                    if let Some(key) = key.take() {
                        dictionary.set(key, value);
                    }
                }
                Token::Close(b'>') | Token::End => return Ok(dictionary),
                Token::Close(_) | Token::Word(_) => {}
            }
        }
    }

    fn literal_string(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut depth = 1_usize;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => {
                    let Some(escaped) = self.peek() else { break };
                    self.pos += 1;
                    match escaped {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'0'..=b'7' => {
                            let mut value = u32::from(escaped - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        value = value * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((value & 0xff) as u8);
                        }
                        // A backslash at the end of a line continues it.
                        b'\r' => {
                            if self.peek() == Some(b'\n') {
                                self.pos += 1;
                            }
                        }
                        b'\n' => {}
                        other => out.push(other),
                    }
                }
                b'(' => {
                    depth += 1;
                    out.push(b);
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
        out
    }

    fn hex_string(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut high: Option<u8> = None;
        while let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'>' {
                break;
            }
            let Some(digit) = (b as char).to_digit(16) else {
                continue;
            };
            let digit = digit as u8;
            match high.take() {
                Some(h) => out.push(h << 4 | digit),
                None => high = Some(digit),
            }
        }
        if let Some(h) = high {
            out.push(h << 4);
        }
        out
    }

    /// Skips an inline image's dictionary and data: after `BI`, key-value
    /// pairs up to `ID`, one white-space byte, then data up to an `EI`
    /// between white space (or the end of the stream), as poppler finds it.
    fn skip_inline_image(&mut self) -> Result<(), TooComplex> {
        loop {
            match self.object(1)? {
                Token::End => return Ok(()),
                Token::Word(b"ID") => break,
                _ => {}
            }
        }
        self.pos += 1;
        let bytes = self.bytes;
        let mut i = self.pos;
        while i + 1 < bytes.len() {
            if bytes[i] == b'E'
                && bytes[i + 1] == b'I'
                && i > 0
                && is_space(bytes[i - 1])
                && bytes.get(i + 2).is_none_or(|&b| is_space(b))
            {
                self.pos = i + 2;
                return Ok(());
            }
            i += 1;
        }
        self.pos = bytes.len();
        Ok(())
    }
}

enum Token<'a> {
    Object(Object),
    Word(&'a [u8]),
    /// A closing delimiter (or a stray one).
    Close(u8),
    End,
}

impl Iterator for Operations<'_> {
    type Item = Result<Operation, TooComplex>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut operands = Vec::new();
        self.objects = 0;
        loop {
            let token = match self.object(0) {
                Ok(token) => token,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            };
            match token {
                Token::Object(object) => operands.push(object),
                Token::Close(_) => {}
                Token::End => return None,
                Token::Word(word) => {
                    if word == b"BI"
                        && let Err(err) = self.skip_inline_image()
                    {
                        self.failed = true;
                        return Some(Err(err));
                    }
                    return Some(Ok(Operation {
                        operator: String::from_utf8_lossy(word).into_owned(),
                        operands,
                    }));
                }
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\0')
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

fn name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'#'
            && let Some(value) = raw
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn number(word: &[u8]) -> Option<Object> {
    let text = std::str::from_utf8(word).ok()?;
    let first = *word.first()?;
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return None;
    }
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Object::Integer(integer));
    }
    // Writers emit `-.5`, `5.` and, wrongly, `--5`; read what can be read.
    let trimmed = text.trim_start_matches('+');
    let trimmed = if trimmed.starts_with("--") {
        &trimmed[1..]
    } else {
        trimmed
    };
    trimmed
        .parse::<f32>()
        .ok()
        .filter(|r| r.is_finite())
        .map(Object::Real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operators(bytes: &[u8]) -> Vec<(String, Vec<Object>)> {
        Operations::new(bytes)
            .map(|op| op.expect("parses"))
            .map(|op| (op.operator, op.operands))
            .collect()
    }

    #[test]
    fn reads_the_syntax_of_text_operations() {
        let ops = operators(
            b"BT /F#31 12 Tf 1 0 0 1 72.5 -.5 Tm [(A\\(b\\)) -250 <4142 3>] TJ (x\\101\\\ny) Tj ET % done",
        );
        let names: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(names, ["BT", "Tf", "Tm", "TJ", "Tj", "ET"]);
        assert_eq!(ops[1].1, vec![Object::Name(b"F1".to_vec()), 12.into()]);
        assert_eq!(ops[2].1[4], Object::Real(72.5));
        assert_eq!(ops[2].1[5], Object::Real(-0.5));
        let Object::Array(items) = &ops[3].1[0] else {
            panic!("TJ takes an array");
        };
        assert_eq!(items[0].as_str().ok(), Some(b"A(b)".as_slice()));
        assert_eq!(items[1], Object::Integer(-250));
        assert_eq!(items[2].as_str().ok(), Some(b"AB0".as_slice()));
        assert_eq!(ops[4].1[0].as_str().ok(), Some(b"xAy".as_slice()));
    }

    #[test]
    fn skips_inline_image_data_and_stray_delimiters() {
        let ops = operators(b"q BI /W 2 /H 1 /BPC 8 /CS /G ID \x00EI)\xff EI Q ) } (after) Tj");
        let names: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(names, ["q", "BI", "Q", "Tj"]);
        assert_eq!(ops[3].1[0].as_str().ok(), Some(b"after".as_slice()));
    }

    #[test]
    fn dictionaries_and_unterminated_input_end_cleanly() {
        let ops = operators(b"/P <</MCID 3 /Alt (a)>> BDC EMC [(open");
        assert_eq!(ops.len(), 2);
        let dict = ops[0].1[1].as_dict().expect("dict");
        assert_eq!(dict.get(b"MCID").ok(), Some(&Object::Integer(3)));
    }

    #[test]
    fn an_operation_with_too_many_operands_stops_the_stream() {
        let mut stream = b"0 ".repeat(MAX_OPERAND_OBJECTS + 1);
        stream.extend_from_slice(b"re (never) Tj");
        let mut ops = Operations::new(&stream);
        assert!(matches!(ops.next(), Some(Err(TooComplex(_)))));
        assert!(ops.next().is_none());
    }

    #[test]
    fn deep_nesting_stops_the_stream() {
        let stream = b"[".repeat(MAX_NESTING + 2);
        let mut ops = Operations::new(&stream);
        assert!(matches!(ops.next(), Some(Err(TooComplex(_)))));
    }

    #[test]
    fn a_long_stream_is_parsed_without_holding_it() {
        // 2 MiB of operations read one by one; only a count is kept.
        let stream = b"(A) Tj ".repeat(300_000);
        assert_eq!(Operations::new(&stream).count(), 300_000);
    }
}
