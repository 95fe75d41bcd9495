//! A plugin built against a frozen copy of `wit/smtp.wit` as it stood before
//! the granted capabilities (kv, queue, dns, mail-auth, notes) were added to
//! `wasmtp:smtp@0.1.0` (`wit/smtp.wit` here, never to be updated). It uses
//! every import that file offered, so the server must keep linking all of
//! them for components already built against it.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:frozen;
        world frozen {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "wit",
    generate_all,
});

use exports::wasmtp::smtp::{data, rcpt};
use wasmtp::smtp::types::{Envelope, Reply, Session};
use wasmtp::smtp::{content, log, transaction};

struct Frozen;

impl rcpt::Guest for Frozen {
    fn handle_rcpt(_: Session, _: Envelope, address: String, _: Vec<String>) -> Option<Reply> {
        log::log(log::Level::Info, &format!("frozen rcpt {address}"));
        None
    }
}

impl data::Guest for Frozen {
    fn handle_data(_: Session, _: Envelope) -> Option<Reply> {
        let first = content::read(0, 64);
        let rest = content::read_next(1 << 20);
        let id = transaction::queue_id().unwrap_or_default();
        Some(Reply {
            code: 250,
            enhanced: None,
            lines: vec![format!(
                "frozen {} bytes, read {} then {}, queue id {}",
                content::size(),
                first.len(),
                rest.len(),
                id.len()
            )],
        })
    }
}

export!(Frozen);
