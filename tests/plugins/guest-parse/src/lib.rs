//! guest-parse: a benchmark plugin, message-probe's twin. In `data` it
//! reads the whole message through `content` and parses it inside the guest
//! with mail-parser (the crate the host's `message` import uses), then reads
//! what message-probe reads: every attachment, the text and HTML bodies.
//! It answers `250 parts=N bytes=B text=T html=H`, so the benchmark checks
//! that both did the same work (`wasmtp-bench handoff`).

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:guest-parse;
        world parse {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::data::Guest;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use wasmtp::smtp::content;
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Parse;

impl Guest for Parse {
    fn handle_data(_: Session, _: Envelope) -> Option<Reply> {
        let mut raw = Vec::with_capacity(content::size() as usize);
        loop {
            let chunk = content::read_next(64 << 10);
            if chunk.is_empty() {
                break;
            }
            raw.extend_from_slice(&chunk);
        }
        let line = match MessageParser::default().parse(&raw) {
            Some(m) => {
                let bytes: usize = m.attachments().map(|a| a.contents().len()).sum();
                let named = m
                    .attachments()
                    .filter(|a| a.attachment_name().is_some())
                    .count();
                // The first text and HTML parts as they are (mail-parser's
                // `body_html` would make HTML out of a text-only message).
                let text = m
                    .text_part(0)
                    .and_then(|p| p.text_contents())
                    .map_or(0, str::len);
                let html = m
                    .parts
                    .iter()
                    .find_map(|p| match &p.body {
                        PartType::Html(h) => Some(h.len()),
                        _ => None,
                    })
                    .unwrap_or(0);
                format!(
                    "parts={} bytes={bytes} text={text} html={html} named={named}",
                    m.attachments().count()
                )
            }
            None => "unparsable".to_owned(),
        };
        Some(Reply {
            code: 250,
            enhanced: None,
            lines: vec![line],
        })
    }
}

export!(Parse);
