//! noop: a plugin that exports only the `noop` hook and lets the host answer.
//!
//! A session's first NOOP instantiates it, and the instance then lives as long
//! as the session. The benchmark (`bench/`) opens many sessions that each send
//! one NOOP to measure what a session holding a live plugin instance costs in
//! memory.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:noop;
        world noop {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/noop@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::noop::Guest;
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Noop;

impl Guest for Noop {
    fn handle_noop(_session: Session, _envelope: Envelope, _arg: String) -> Option<Reply> {
        None
    }
}

export!(Noop);
