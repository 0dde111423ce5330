//! HTML: the text a browser shows, without scripts, styles or markup.
//!
//! A small tokenizer rather than a full HTML5 parser: text extraction needs
//! tags only to drop what is not shown and to break lines where blocks end,
//! and it never builds a tree, so memory stays the size of the text kept.
//! The encoding comes from a byte-order mark, else a `charset` in the
//! first 1,024 bytes (as browsers prescan), else UTF-8.

use crate::{
    ExtractError, Limits,
    result::{HtmlExtraction, TextCounts},
    text::Bounded,
};

/// The most of a page's `<title>` kept.
const MAX_TITLE_BYTES: usize = 4096;

/// Elements whose content is not shown.
const HIDDEN: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object",
];
/// Elements that start or end a line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tr",
    "ul",
    "caption",
    "summary",
    "details",
];

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<HtmlExtraction, ExtractError> {
    let encoding = encoding_of(bytes);
    let (html, _) = encoding.decode_with_bom_removal(bytes);
    let mut reader = Text::new(limits.max_text_bytes);
    let mut title = None;
    let mut hidden: Option<String> = None;
    let mut in_title = false;
    let mut pre = 0_usize;
    let mut rest = html.as_ref();
    while !rest.is_empty() && !reader.shown.truncated {
        let Some(open) = rest.find('<') else {
            reader.text(
                rest,
                pre > 0,
                hidden.is_none(),
                in_title.then_some(&mut title),
            );
            break;
        };
        let (text, after) = rest.split_at(open);
        reader.text(
            text,
            pre > 0,
            hidden.is_none(),
            in_title.then_some(&mut title),
        );
        if let Some(comment) = after.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(close) = tag_end(after) else {
            break;
        };
        let tag = &after[1..close];
        rest = &after[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            continue; // <!DOCTYPE …>, <?xml …?>
        }
        if let Some(open_hidden) = &hidden {
            if closing && *open_hidden == name {
                hidden = None;
            }
            if name != "title" {
                continue;
            }
        }
        match (name.as_str(), closing) {
            ("title", false) => in_title = true,
            ("title", true) => in_title = false,
            (_, false) if HIDDEN.contains(&name.as_str()) && !tag.ends_with('/') => {
                hidden = Some(name);
                continue;
            }
            ("pre", false) => pre += 1,
            ("pre", true) => pre = pre.saturating_sub(1),
            ("td" | "th", true) => reader.push("\t"),
            _ => {}
        }
        if BLOCKS.contains(&name.as_str()) {
            reader.newline();
        }
    }
    let text = reader.shown.text.trim().to_owned();
    let title = title
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    let (language, language_confidence) = crate::text::language(&text);
    Ok(HtmlExtraction {
        counts: TextCounts::of(&text),
        text,
        title,
        encoding: encoding.name().to_owned(),
        language,
        language_confidence,
        truncated: reader.shown.truncated,
    })
}

/// Where the tag that `from` starts with ends: the first `>` outside a
/// quoted attribute value (`<a title="x > y">`).
fn tag_end(from: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in from.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn encoding_of(bytes: &[u8]) -> &'static encoding_rs::Encoding {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(bytes) {
        return encoding;
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    head.find("charset=")
        .map(|at| {
            head[at + 8..]
                .trim_start_matches(['"', '\''])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                .collect::<String>()
        })
        .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        // A page that declares UTF-16 in ASCII cannot be UTF-16.
        .filter(|e| *e != encoding_rs::UTF_16LE && *e != encoding_rs::UTF_16BE)
        .unwrap_or(encoding_rs::UTF_8)
}

/// The shown text, with HTML's whitespace rules on top of the limit.
struct Text {
    shown: Bounded,
}

impl Text {
    fn new(room: usize) -> Self {
        Self {
            shown: Bounded::new(room),
        }
    }

    /// Shown text: entities decoded, whitespace collapsed (kept inside
    /// `pre`); title text goes to `title` as well.
    fn text(&mut self, raw: &str, pre: bool, shown: bool, title: Option<&mut Option<String>>) {
        if raw.is_empty() {
            return;
        }
        let decoded = decode_entities(raw);
        if let Some(title) = title {
            // An unclosed <title> would otherwise take the whole page.
            let title = title.get_or_insert_with(String::new);
            let room = MAX_TITLE_BYTES.saturating_sub(title.len());
            title.push_str(crate::text::prefix_within(&decoded, room));
            return;
        }
        if !shown {
            return;
        }
        if pre {
            self.push(&decoded);
            return;
        }
        let mut words = decoded.split_whitespace().peekable();
        if words.peek().is_none() {
            if !decoded.is_empty()
                && !self.shown.text.ends_with(char::is_whitespace)
                && !self.shown.text.is_empty()
            {
                self.push(" ");
            }
            return;
        }
        if decoded.starts_with(char::is_whitespace)
            && !self.shown.text.ends_with(char::is_whitespace)
            && !self.shown.text.is_empty()
        {
            self.push(" ");
        }
        let joined = words.collect::<Vec<_>>().join(" ");
        self.push(&joined);
        if decoded.ends_with(char::is_whitespace) {
            self.push(" ");
        }
    }

    fn newline(&mut self) {
        self.shown.newline();
    }

    fn push(&mut self, s: &str) {
        self.shown.push(s);
    }
}

/// Character references and the named entities pages use most; an
/// unknown name stays as written, as browsers show it.
fn decode_entities(raw: &str) -> String {
    if !raw.contains('&') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..].find(';').map(|e| e + 1).filter(|&e| e <= 32);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse::<u32>().ok().and_then(char::from_u32)
            } else {
                named(name)
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "euro" => '€',
        "pound" => '£',
        "deg" => '°',
        "middot" => '·',
        "bull" => '•',
        "times" => '×',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "szlig" => 'ß',
        "ccedil" => 'ç',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_what_a_browser_shows() {
        let page = b"<!doctype html><html><head><title>The  Title</title>\
            <style>p { color: red }</style><script>alert('no')</script></head>\
            <body><h1>Heading</h1><p>One &amp; <b>two</b>&nbsp;three</p>\
            <!-- hidden --><a title=\"x > y\" href='/a>b'>link</a><ul><li>first</li><li>second</li></ul>\
            <table><tr><td>a</td><td>b</td></tr></table><pre>  kept\n  as is</pre></body></html>";
        let html = extract(page, &Limits::default()).expect("html");
        assert_eq!(html.title.as_deref(), Some("The Title"));
        assert_eq!(
            html.text,
            "Heading\nOne & two three\nlink\nfirst\nsecond\na\tb\t\n  kept\n  as is"
        );
        assert!(!html.text.contains("alert"));
    }

    #[test]
    fn an_unclosed_title_is_bounded() {
        let page = format!("<html><head><title>{}", "long title ".repeat(10_000));
        let html = extract(page.as_bytes(), &Limits::default()).expect("html");
        let title = html.title.expect("a title");
        assert!(title.len() <= MAX_TITLE_BYTES, "{} bytes", title.len());
        assert!(title.starts_with("long title long title"));
    }

    #[test]
    fn text_stops_at_the_limit() {
        let limits = Limits {
            max_text_bytes: 8,
            ..Limits::default()
        };
        let html = extract(b"<p>caf\xc3\xa9 au lait</p>", &limits).expect("html");
        assert_eq!(html.text, "caf\u{e9} au");
        assert!(html.truncated);
    }

    #[test]
    fn reads_the_declared_charset() {
        let mut page = b"<html><head><meta charset=\"windows-1252\"></head><body>caf".to_vec();
        page.push(0xe9);
        page.extend_from_slice(b"</body></html>");
        let html = extract(&page, &Limits::default()).expect("html");
        assert_eq!(html.text, "caf\u{e9}");
        assert_eq!(html.encoding, "windows-1252");
    }
}
