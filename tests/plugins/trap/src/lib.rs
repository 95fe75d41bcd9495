//! trap: a test plugin whose hooks fail, for the host's failure handling.
//!
//! It exports `rcpt` and `data` only, and no `exception` hook, so a failure
//! gets the host's default `451 4.3.0 Error: plugin failed`. RCPT traps when
//! the address contains `trap` (any other gets the host's default); DATA
//! always traps.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:trap;
        world trap {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::{data, rcpt};
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Trap;

impl rcpt::Guest for Trap {
    fn handle_rcpt(
        _session: Session,
        _envelope: Envelope,
        address: String,
        _options: Vec<String>,
    ) -> Option<Reply> {
        if address.contains("trap") {
            panic!("trap: rcpt {address}");
        }
        None
    }
}

impl data::Guest for Trap {
    fn handle_data(_session: Session, _envelope: Envelope) -> Option<Reply> {
        panic!("trap: data");
    }
}

export!(Trap);
