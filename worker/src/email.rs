//! E-mail messages (RFC 5322, `.eml`): headers, the body as text, and the
//! attachments listed (not read: each would be a document of its own).
//!
//! Parsed by mail-parser, which bounds nested encodings itself; the text
//! kept is bounded by `Limits::max_text_bytes`, the attachment list by
//! [`MAX_ATTACHMENTS`] and each address list by [`MAX_ADDRESSES`]. An HTML-only message reads through our HTML
//! extractor, so it shows what a mail client shows.

use mail_parser::{Address, MessageParser, MimeHeaders};

use crate::{
    ExtractError, Limits,
    result::{EmailAttachment, EmailExtraction, TextCounts},
};

/// Attachments listed, at most.
pub const MAX_ATTACHMENTS: usize = 1_000;
/// Addresses listed per field (From, To, Cc), at most.
pub const MAX_ADDRESSES: usize = 1_000;

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<EmailExtraction, ExtractError> {
    let message = MessageParser::default()
        .parse(bytes)
        .filter(|m| !m.headers().is_empty())
        .ok_or_else(|| {
            ExtractError::Permanent("the file is not a readable e-mail message".into())
        })?;
    // A message without a plain-text body lists its HTML one here.
    let mut truncated = false;
    let mut bodies = Vec::new();
    for part in message.text_bodies() {
        if part.is_content_type("text", "html") {
            let html = part.text_contents().unwrap_or_default();
            let shown = crate::html::extract(html.as_bytes(), limits)?;
            truncated |= shown.truncated;
            bodies.push(shown.text);
        } else if let Some(text) = part.text_contents() {
            bodies.push(text.to_owned());
        }
    }
    let mut text = bodies.join("\n\n");
    let kept = crate::text::prefix_within(&text, limits.max_text_bytes).len();
    if kept < text.len() {
        text.truncate(kept);
        truncated = true;
    }
    let text = text.trim().to_owned();
    let attachment_count = message.attachment_count();
    let attachments = message
        .attachments()
        .take(MAX_ATTACHMENTS)
        .map(|part| EmailAttachment {
            name: part.attachment_name().map(str::to_owned),
            content_type: part.content_type().map(|ct| match &ct.c_subtype {
                Some(sub) => format!("{}/{}", ct.c_type, sub),
                None => ct.c_type.to_string(),
            }),
            size_bytes: part.len() as u64,
        })
        .collect();
    Ok(EmailExtraction {
        subject: message.subject().map(str::to_owned),
        from: addresses(message.from()),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        date: message.date().map(mail_parser::DateTime::to_rfc3339),
        message_id: message.message_id().map(str::to_owned),
        counts: TextCounts::of(&text),
        text,
        attachment_count: attachment_count as u64,
        attachments,
        truncated,
    })
}

/// `Name <address>` (or the bare address) of each, as a mail client shows them.
fn addresses(field: Option<&Address<'_>>) -> Vec<String> {
    field
        .map(|list| {
            list.iter()
                .take(MAX_ADDRESSES)
                .map(|addr| match (addr.name(), addr.address()) {
                    (Some(name), Some(address)) => format!("{name} <{address}>"),
                    (None, Some(address)) => address.to_owned(),
                    (Some(name), None) => name.to_owned(),
                    (None, None) => String::new(),
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether text starts with an RFC 5322 header block: every line up to
/// the first empty one a `Name: value` field or its folded continuation,
/// at least three of them, among them `From` and a field only mail has.
pub fn looks_like_email(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut names = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if names.is_empty() {
                return false;
            }
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return false;
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
        names.push(name.to_ascii_lowercase());
    }
    let has = |n: &str| names.iter().any(|name| name == n);
    names.len() >= 3
        && has("from")
        && [
            "date",
            "message-id",
            "received",
            "return-path",
            "mime-version",
            "delivered-to",
        ]
        .iter()
        .any(|n| has(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Return-Path: <ada@example.com>\r\n\
From: Ada Lovelace <ada@example.com>\r\n\
To: Charles <charles@example.com>, bob@example.com\r\n\
Subject: =?UTF-8?Q?Caf=C3=A9_notes?=\r\n\
Date: Thu, 3 Dec 2026 09:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
The engine can compute Bernoulli numbers.\r\n\
--b\r\n\
Content-Type: application/pdf; name=\"notes.pdf\"\r\n\
Content-Disposition: attachment; filename=\"notes.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b--\r\n";

    #[test]
    fn headers_body_and_attachments() {
        let mail = extract(MESSAGE, &Limits::default()).expect("email");
        assert_eq!(mail.subject.as_deref(), Some("Café notes"));
        assert_eq!(mail.from, ["Ada Lovelace <ada@example.com>"]);
        assert_eq!(
            mail.to,
            ["Charles <charles@example.com>", "bob@example.com"]
        );
        assert_eq!(mail.date.as_deref(), Some("2026-12-03T09:00:00Z"));
        assert_eq!(mail.text, "The engine can compute Bernoulli numbers.");
        assert_eq!(mail.attachment_count, 1);
        assert_eq!(mail.attachments[0].name.as_deref(), Some("notes.pdf"));
        assert_eq!(
            mail.attachments[0].content_type.as_deref(),
            Some("application/pdf")
        );
        assert_eq!(mail.attachments[0].size_bytes, 9);
        assert!(looks_like_email(MESSAGE));
    }

    #[test]
    fn an_html_only_message_reads_as_shown() {
        let html = b"From: a@example.com\r\nDate: Thu, 3 Dec 2026 09:00:00 +0000\r\nSubject: Hi\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello <b>there</b></p><script>x()</script></body></html>\r\n";
        let mail = extract(html, &Limits::default()).expect("email");
        assert_eq!(mail.text, "Hello there");
    }

    /// A message of 1,001 attachments lists 1,000 and counts all; its text
    /// stops at the document's limit.
    #[test]
    fn attachments_and_text_are_bounded() {
        let mut mail = String::from(
            "From: a@example.com\r\nDate: Thu, 3 Dec 2026 09:00:00 +0000\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\n0123456789 0123456789\r\n",
        );
        for i in 0..=MAX_ATTACHMENTS {
            mail.push_str(&format!(
                "--b\r\nContent-Disposition: attachment; filename=f{i}.bin\r\n\r\nx\r\n"
            ));
        }
        mail.push_str("--b--\r\n");
        let limits = Limits {
            max_text_bytes: 10,
            ..Limits::default()
        };
        let read = extract(mail.as_bytes(), &limits).expect("email");
        assert_eq!(read.attachment_count, MAX_ATTACHMENTS as u64 + 1);
        assert_eq!(read.attachments.len(), MAX_ATTACHMENTS);
        assert_eq!(read.text, "0123456789");
        assert!(read.truncated);
    }

    /// A To of 1,001 addresses lists the first 1,000.
    #[test]
    fn address_lists_are_bounded() {
        let to: Vec<String> = (0..=MAX_ADDRESSES)
            .map(|i| format!("u{i}@example.com"))
            .collect();
        let mail = format!(
            "From: a@example.com\r\nTo: {}\r\nSubject: many\r\n\r\nhello\r\n",
            to.join(", ")
        );
        let read = extract(mail.as_bytes(), &Limits::default()).expect("email");
        assert_eq!(read.to.len(), MAX_ADDRESSES);
        assert_eq!(read.to[0], "u0@example.com");
        assert_eq!(read.from, ["a@example.com"]);
    }

    #[test]
    fn ordinary_text_is_not_mail() {
        assert!(!looks_like_email(b"Dear diary,\nFrom: here\n"));
        assert!(!looks_like_email(
            b"Note: one\nFrom: two\nTo: three\n\nbody"
        ));
        assert!(looks_like_email(
            b"From: a@b.c\nTo: d@e.f\nDate: today\n\nbody"
        ));
    }
}
