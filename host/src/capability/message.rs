//! `wasmtp:smtp/message`: the message of the `data` hook, parsed by the
//! host with Stalwart's `mail-parser` (already here for mail-auth), once
//! per message view and shared by every plugin that reads that view.
//!
//! What is kept after the parse is what the interface hands out — decoded
//! fields, the bodies as UTF-8, each attachment's decoded content — and
//! not the parser's tree nor the raw bytes, so the cost is about one more
//! copy of the message for the life of the transaction. Contents are read
//! by the guest in chunks of at most [`MAX_CHUNK`].
//!
//! A parse never fails the hook: the parser works on any bytes (it is
//! fuzzed upstream), runs on a blocking thread, is caught if it panicked,
//! and is bounded by the hook's deadline. What it could not decode is
//! reported in `summary.problems`.

use std::sync::Arc;

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

use crate::plugin::bindings::wasmtp::smtp::message::{
    self, Attachment, Body, Error, Field, Mailbox, MessageSummary,
};
use crate::plugin::host::HostState;

/// The most bytes one `read-body` or `read-attachment` call returns.
pub const MAX_CHUNK: u32 = 1 << 20;
/// The most header fields and attachments `summary` lists.
pub const MAX_LISTED: usize = 1000;
/// The longest decoded header value `summary` gives.
pub const MAX_VALUE: usize = 16 << 10;

/// A message view's parse, made by the first caller and shared by the rest.
pub type ParseCache = tokio::sync::OnceCell<Result<Arc<Parsed>, Error>>;

/// What the interface gives about one message.
#[derive(Debug)]
pub struct Parsed {
    pub summary: MessageSummary,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Vec<u8>>,
}

/// Parse `raw`; `malformed` only when it is no message at all.
pub fn parse(raw: &[u8]) -> Result<Parsed, Error> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| Error::Malformed("no header fields and no body could be read".into()))?;
    let mut problems = Vec::new();

    let root = message.root_part();
    let mut headers = Vec::new();
    for (i, h) in root.headers.iter().enumerate() {
        if i == MAX_LISTED {
            problems.push(format!(
                "{} header fields; only the first {MAX_LISTED} are listed",
                root.headers.len()
            ));
            break;
        }
        let start = (h.offset_start as usize).min(raw.len());
        let end = (h.offset_end as usize).clamp(start, raw.len());
        // The name as written (the parser spells known names its own way).
        let field = (h.offset_field as usize).min(start);
        let written = raw[field..start]
            .split(|&b| b == b':')
            .next()
            .and_then(|n| std::str::from_utf8(n).ok())
            .map(str::trim)
            .filter(|n| !n.is_empty());
        headers.push(Field {
            name: written.unwrap_or(h.name.as_str()).to_owned(),
            value: cut(decode_unstructured(&raw[start..end])),
        });
    }
    let list_fields = headers
        .iter()
        .filter(|f| f.name.len() > 5 && f.name.as_bytes()[..5].eq_ignore_ascii_case(b"list-"))
        .cloned()
        .collect();

    let mailboxes = |value: Option<&Address>| -> Vec<Mailbox> {
        value
            .map(|a| {
                a.iter()
                    .map(|addr| Mailbox {
                        name: addr.name().map(|n| cut(n.to_owned())),
                        address: addr.address().map(|a| cut(a.to_owned())),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let ids = |value: &HeaderValue| -> Vec<String> {
        match value {
            HeaderValue::Text(t) => vec![cut(t.to_string())],
            HeaderValue::TextList(l) => l.iter().map(|t| cut(t.to_string())).collect(),
            _ => Vec::new(),
        }
    };

    let text_parts: Vec<&str> = message
        .text_body
        .iter()
        .filter_map(|&i| match &message.parts.get(i as usize)?.body {
            PartType::Text(t) => Some(t.as_ref()),
            _ => None,
        })
        .collect();
    let text = (!text_parts.is_empty()).then(|| text_parts.join("\n"));
    let html = message
        .html_body
        .iter()
        .find_map(|&i| match &message.parts.get(i as usize)?.body {
            PartType::Html(h) => Some(h.to_string()),
            _ => None,
        });

    let mut attachments = Vec::new();
    let mut listed = Vec::new();
    for (n, &id) in message.attachments.iter().enumerate() {
        if n == MAX_LISTED {
            problems.push(format!(
                "{} attachments; only the first {MAX_LISTED} are listed",
                message.attachments.len()
            ));
            break;
        }
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let content_type = part.content_type().map_or_else(
            || "application/octet-stream".to_owned(),
            |t| match t.subtype() {
                Some(sub) => format!("{}/{}", t.ctype(), sub).to_ascii_lowercase(),
                None => t.ctype().to_ascii_lowercase(),
            },
        );
        let content = part.contents().to_vec();
        listed.push(Attachment {
            index: listed.len() as u32,
            name: part.attachment_name().map(|n| cut(n.to_owned())),
            content_type,
            size: content.len() as u64,
            content_id: part.content_id().map(|c| {
                cut(c
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned())
            }),
            inline: part.content_disposition().is_some_and(|d| d.is_inline()),
        });
        attachments.push(content);
    }
    for (i, part) in message.parts.iter().enumerate() {
        if part.is_encoding_problem {
            let what = part
                .attachment_name()
                .map_or_else(|| format!("part {i}"), |n| format!("part {i} ({n})"));
            problems.push(format!(
                "{what}: the content could not be decoded as its fields declare (transfer encoding or charset); what could be read is given"
            ));
        }
    }

    let summary = MessageSummary {
        from: mailboxes(message.from()),
        sender: mailboxes(message.sender()),
        reply_to: mailboxes(message.reply_to()),
        to: mailboxes(message.to()),
        cc: mailboxes(message.cc()),
        bcc: mailboxes(message.bcc()),
        subject: message.subject().map(|s| cut(s.to_owned())),
        date: message.date().map(|d| d.to_rfc3339()),
        message_id: message.message_id().map(|s| cut(s.to_owned())),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        list_fields,
        headers,
        text_size: text.as_ref().map(|t| t.len() as u64),
        html_size: html.as_ref().map(|h| h.len() as u64),
        attachments: listed,
        problems,
    };
    Ok(Parsed {
        summary,
        text,
        html,
        attachments,
    })
}

/// A raw field value (after the colon, with its folding and line end)
/// unfolded, with RFC 2047 encoded words decoded; invalid UTF-8 replaced.
fn decode_unstructured(value: &[u8]) -> String {
    let mut owned;
    let mut value = value;
    // The parser reads a value up to the line end that ends the field.
    if !value.ends_with(b"\n") {
        owned = value.to_vec();
        owned.extend_from_slice(b"\r\n");
        value = &owned;
    }
    let mut stream = mail_parser::parsers::MessageStream::new(value);
    match stream.parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        HeaderValue::TextList(l) => l.join(" "),
        _ => {
            owned = value.to_vec();
            String::from_utf8_lossy(&owned).trim().to_owned()
        }
    }
}

/// A value cut to [`MAX_VALUE`] bytes, on a character boundary.
fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn chunk(bytes: &[u8], offset: u64, len: u32) -> Vec<u8> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start
        .saturating_add(len.min(MAX_CHUNK) as usize)
        .min(bytes.len());
    bytes[start..end].to_vec()
}

impl HostState {
    /// The message of the running `data` call, parsed (by this call or an
    /// earlier one of any plugin reading the same view).
    fn parsed(&self) -> impl Future<Output = Result<Arc<Parsed>, Error>> + Send + 'static {
        let view = self.content.clone();
        let deadline = super::wait_deadline(self.deadline);
        parsed(view, deadline)
    }
}

/// Messages up to this size are parsed on the calling thread; larger ones
/// on the blocking pool, so a big parse never holds up a worker's sessions.
const INLINE_PARSE_BYTES: u64 = 64 * 1024;

async fn parsed(
    view: Option<Arc<crate::capability::headers::MessageView>>,
    deadline: std::time::Instant,
) -> Result<Arc<Parsed>, Error> {
    {
        let view = view.ok_or(Error::NoMessage)?;
        let size = view.len();
        let cell = &view.parsed;
        let work = cell.get_or_init(|| {
            let view = view.clone();
            async move {
                let job = move || {
                    let len = usize::try_from(view.len()).unwrap_or(usize::MAX);
                    let raw = view.read(0, len).map_err(|e| {
                        Error::Unavailable(format!("reading the spooled message: {e}"))
                    })?;
                    let started = std::time::Instant::now();
                    let parsed = parse(&raw).map(Arc::new);
                    if let Ok(p) = &parsed {
                        tracing::debug!(
                            bytes = raw.len(),
                            attachments = p.summary.attachments.len(),
                            problems = p.summary.problems.len(),
                            "message parsed in {:?}",
                            started.elapsed()
                        );
                    }
                    parsed
                };
                // A panic in the parser costs this message its parse, not
                // the server.
                let failed = |e: String| Error::Malformed(format!("the MIME parser failed: {e}"));
                if size <= INLINE_PARSE_BYTES {
                    // Tens of µs: less than the hop to the blocking pool.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                        .unwrap_or_else(|_| Err(failed("it panicked".into())))
                } else {
                    tokio::task::spawn_blocking(job)
                        .await
                        .unwrap_or_else(|e| Err(failed(e.to_string())))
                }
            }
        });
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(result) => result.clone(),
            Err(_) => Err(Error::Unavailable(
                "the message was not parsed before the hook's deadline".into(),
            )),
        }
    }
}

impl message::Host for HostState {
    async fn summary(&mut self) -> Result<MessageSummary, Error> {
        Ok(self.parsed().await?.summary.clone())
    }

    async fn text(&mut self) -> Result<Option<String>, Error> {
        Ok(self.parsed().await?.text.clone())
    }

    async fn html(&mut self) -> Result<Option<String>, Error> {
        Ok(self.parsed().await?.html.clone())
    }

    async fn read_body(&mut self, which: Body, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        let parsed = self.parsed().await?;
        let body = match which {
            Body::Text => parsed.text.as_deref(),
            Body::Html => parsed.html.as_deref(),
        };
        Ok(body.map_or_else(Vec::new, |b| chunk(b.as_bytes(), offset, len)))
    }

    async fn read_attachment(
        &mut self,
        index: u32,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Error> {
        let parsed = self.parsed().await?;
        let content = parsed
            .attachments
            .get(index as usize)
            .ok_or(Error::NoSuchAttachment)?;
        Ok(chunk(content, offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_message_is_decoded() {
        let raw = "From: =?UTF-8?Q?Ren=C3=A9e?= <renee@example.com>\r\n\
            To: a@example.com, \"B\" <b@example.com>\r\n\
            Subject: =?UTF-8?B?SMOpbGxv?= world\r\n\
            Date: Thu, 03 Dec 2026 10:00:00 +0100\r\n\
            Message-ID: <m1@example.com>\r\n\
            References: <a@x> <b@x>\r\n\
            List-Id: Team <team.example.com>\r\n\
            MIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
            \r\n\
            --b1\r\n\
            Content-Type: multipart/alternative; boundary=\"b2\"\r\n\
            \r\n\
            --b2\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            \r\n\
            caf\u{e9}\r\n\
            --b2\r\n\
            Content-Type: text/html; charset=utf-8\r\n\
            \r\n\
            <p>caf\u{e9}</p>\r\n\
            --b2--\r\n\
            --b1\r\n\
            Content-Type: application/pdf; name=\"a.pdf\"\r\n\
            Content-Disposition: attachment; filename=\"a.pdf\"\r\n\
            Content-Transfer-Encoding: base64\r\n\
            Content-ID: <c1@x>\r\n\
            \r\n\
            aGVsbG8=\r\n\
            --b1--\r\n";
        let p = parse(raw.as_bytes()).unwrap();
        let s = &p.summary;
        assert_eq!(s.from[0].name.as_deref(), Some("Renée"));
        assert_eq!(s.from[0].address.as_deref(), Some("renee@example.com"));
        assert_eq!(s.to.len(), 2);
        assert_eq!(s.subject.as_deref(), Some("Héllo world"));
        assert_eq!(s.date.as_deref(), Some("2026-12-03T10:00:00+01:00"));
        assert_eq!(s.message_id.as_deref(), Some("m1@example.com"));
        assert_eq!(s.references, ["a@x", "b@x"]);
        assert_eq!(s.list_fields[0].name, "List-Id");
        assert_eq!(s.headers[1].value, "a@example.com, \"B\" <b@example.com>");
        assert_eq!(s.headers[2].value, "Héllo world");
        assert_eq!(p.text.as_deref(), Some("café"));
        assert_eq!(p.html.as_deref(), Some("<p>café</p>"));
        assert_eq!(s.attachments.len(), 1);
        let a = &s.attachments[0];
        assert_eq!(a.name.as_deref(), Some("a.pdf"));
        assert_eq!(a.content_type, "application/pdf");
        assert_eq!(a.content_id.as_deref(), Some("c1@x"));
        assert_eq!(p.attachments[0], b"hello");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(chunk(&p.attachments[0], 1, 2), b"el");
        assert!(chunk(&p.attachments[0], 9, 2).is_empty());
    }

    #[test]
    fn a_text_only_message_has_no_html() {
        let p = parse(b"Subject: x\r\n\r\nhello\r\n").unwrap();
        assert_eq!(p.text.as_deref(), Some("hello\r\n"));
        assert_eq!(p.html, None);
    }
}
