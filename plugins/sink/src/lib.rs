//! Sink: accepts every message and discards it, as aiosmtpd's `Sink` does.
//!
//! It exports only the `data` hook, and that hook never reads the content:
//! the host copies nothing into the plugin. It takes no arguments (it does not
//! export `setup`, so the host refuses any).

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:sink;
        world sink {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

use exports::wasmtp::smtp::data::Guest;
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Sink;

impl Guest for Sink {
    fn handle_data(_session: Session, _envelope: Envelope) -> Option<Reply> {
        None
    }
}

export!(Sink);
