//! Markdown (CommonMark with tables): the text a reader sees, without the
//! markup, and its outline. pulldown-cmark parses in linear time with no
//! recursion limit to hit, and the text kept is bounded by
//! `Limits::max_text_bytes`; the outline by [`MAX_HEADINGS`].

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::{
    ExtractError, Limits,
    result::{Heading, MarkdownExtraction, TextCounts},
    text::Bounded,
};

/// Headings listed in the outline, at most.
pub const MAX_HEADINGS: usize = 1_000;

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<MarkdownExtraction, ExtractError> {
    let source = crate::text::extract(bytes)?;
    let mut out = Bounded::new(limits.max_text_bytes);
    let mut headings = Vec::new();
    let mut heading_count = 0u64;
    let mut heading: Option<(u32, String)> = None;
    for event in Parser::new_ext(
        &source.text,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    ) {
        if out.truncated {
            break;
        }
        match event {
            Event::Text(text) | Event::Code(text) => {
                if let Some((_, title)) = &mut heading {
                    title.push_str(&text);
                }
                out.push(&text);
            }
            Event::SoftBreak => out.push(" "),
            Event::HardBreak => out.push("\n"),
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level as u32, String::new()))
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, title)) = heading.take() {
                    heading_count += 1;
                    if headings.len() < MAX_HEADINGS {
                        headings.push(Heading { level, title });
                    }
                }
                out.push("\n");
            }
            Event::End(TagEnd::TableCell) => out.push("\t"),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::TableHead
                | TagEnd::TableRow
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_),
            ) => {
                let trimmed = out.text.trim_end_matches(['\t', ' ']).len();
                out.text.truncate(trimmed);
                out.newline();
            }
            _ => {}
        }
    }
    let text = out.text.trim().to_owned();
    Ok(MarkdownExtraction {
        counts: TextCounts::of(&text),
        title: headings
            .iter()
            .find(|h| h.level == 1)
            .map(|h| h.title.clone()),
        text,
        headings,
        heading_count,
        encoding: source.encoding,
        language: source.language,
        language_confidence: source.language_confidence,
        truncated: out.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_markup_and_its_outline() {
        let source = b"# Guide\n\nSome *emphasis* and `code`, a [link](http://x).\n\n## Steps\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";
        let md = extract(source, &Limits::default()).expect("markdown");
        assert_eq!(md.title.as_deref(), Some("Guide"));
        assert_eq!(
            md.text,
            "Guide\nSome emphasis and code, a link.\nSteps\none\ntwo\na\tb\n1\t2"
        );
        let outline: Vec<_> = md
            .headings
            .iter()
            .map(|h| (h.level, h.title.as_str()))
            .collect();
        assert_eq!(outline, [(1, "Guide"), (2, "Steps")]);
    }

    /// The outline stops at MAX_HEADINGS; the text at the document's limit.
    #[test]
    fn outline_and_text_are_bounded() {
        let source = "## h\n\n".repeat(MAX_HEADINGS + 1);
        let md = extract(source.as_bytes(), &Limits::default()).expect("markdown");
        assert_eq!(md.headings.len(), MAX_HEADINGS);
        assert_eq!(
            md.heading_count,
            MAX_HEADINGS as u64 + 1,
            "the count says so"
        );
        let limits = Limits {
            max_text_bytes: 7,
            ..Limits::default()
        };
        let cut = extract(b"alpha beta gamma", &limits).expect("markdown");
        assert_eq!(cut.text, "alpha b");
        assert!(cut.truncated);
    }
}
