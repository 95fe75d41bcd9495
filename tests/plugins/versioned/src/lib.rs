//! A policy plugin that says which version of itself answered: its one
//! argument is a version label, and RCPT and DATA reply `250 ... <label>`.
//! The hot-swap tests reload it under load with a new label each time and
//! check that every transaction was answered by exactly one version.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:versioned;
        world versioned {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use std::cell::RefCell;

use exports::wasmtp::smtp::{data, rcpt, setup};
use wasmtp::smtp::types::{Envelope, Reply, Session};

thread_local! {
    static VERSION: RefCell<String> = const { RefCell::new(String::new()) };
}

fn answer(what: &str) -> Option<Reply> {
    let version = VERSION.with_borrow(Clone::clone);
    Some(Reply {
        code: 250,
        enhanced: None,
        lines: vec![format!("{what} accepted by {version}")],
    })
}

struct Versioned;

impl setup::Guest for Versioned {
    fn init(args: Vec<String>) -> Result<(), String> {
        match args.as_slice() {
            [version] => {
                VERSION.set(version.clone());
                Ok(())
            }
            _ => Err("versioned takes one argument: its version label".into()),
        }
    }
}

impl rcpt::Guest for Versioned {
    fn handle_rcpt(_: Session, _: Envelope, _: String, _: Vec<String>) -> Option<Reply> {
        answer("recipient")
    }
}

impl data::Guest for Versioned {
    fn handle_data(_: Session, _: Envelope) -> Option<Reply> {
        answer("message")
    }
}

export!(Versioned);
