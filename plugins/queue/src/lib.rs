//! Queue: commits every message to the server's durable queue (`[store]`)
//! and answers `250 2.0.0 Ok: queued as ID` only once it is durable; on any
//! failure `451 4.3.0`, so the client keeps the message and retries. It
//! takes no arguments.
//!
//! The work is the host's (`wasmtp:smtp/queue.enqueue`): the message is
//! read from the server's spool and never copied into the plugin.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:queue;
        world queue {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/queue@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

use exports::wasmtp::smtp::data::Guest;
use wasmtp::smtp::log::{Level, log};
use wasmtp::smtp::queue::{Error, enqueue};
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Queue;

impl Guest for Queue {
    fn handle_data(_session: Session, _envelope: Envelope) -> Option<Reply> {
        Some(match enqueue() {
            Ok(id) => Reply {
                code: 250,
                enhanced: Some("2.0.0".into()),
                lines: vec![format!("Ok: queued as {id}")],
            },
            Err(e) => {
                let why = match e {
                    Error::Unavailable(m) => format!("the store is unavailable: {m}"),
                    Error::NoMessage => "no message".into(),
                    Error::Conflict(m) => m,
                    Error::Timeout => "the store did not answer in time".into(),
                };
                log(Level::Warn, &format!("not queued: {why}"));
                Reply {
                    code: 451,
                    enhanced: Some("4.3.0".into()),
                    lines: vec!["Error: the message could not be queued; try again later".into()],
                }
            }
        })
    }
}

export!(Queue);
