//! A plugin that misbehaves on purpose, so the tests can show that each kind
//! of misbehaviour is contained: the session gets the failure policy's
//! reply, the server and every other session go on.
//!
//! `NOOP <what>` chooses:
//! - `loop`: spin forever (stopped at the hook deadline);
//! - `memory`: allocate until the memory cap refuses (out-of-memory);
//! - `trap`: panic;
//! - `bad-reply`: answer with reply code 999;
//! - `read <path>`: try to read a file, and say what happened;
//! - `write <path>`: try to create a file, and say what happened;
//! - `connect <host:port>`: try to open a TCP connection, and say what happened;
//! - `env <NAME>`: say whether an environment variable is visible;
//! - anything else: `250 fine`.
//!
//! RCPT accepts every recipient (`none`), so a session can go on normally.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:misbehave;
        world misbehave {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/noop@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::{noop, rcpt};
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Misbehave;

fn reply(code: u16, text: String) -> Option<Reply> {
    // Keep the text printable: error messages may hold anything.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some(Reply {
        code,
        enhanced: None,
        lines: vec![text],
    })
}

impl noop::Guest for Misbehave {
    fn handle_noop(_: Session, _: Envelope, arg: String) -> Option<Reply> {
        let (what, rest) = arg.split_once(' ').unwrap_or((arg.as_str(), ""));
        match what {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("misbehave: trap requested"),
            "bad-reply" => Some(Reply {
                code: 999,
                enhanced: None,
                lines: vec!["nonsense".into()],
            }),
            "read" => match std::fs::read(rest) {
                Ok(bytes) => reply(250, format!("read {} bytes", bytes.len())),
                Err(e) => reply(550, format!("cannot read: {e}")),
            },
            "write" => match std::fs::write(rest, b"written by misbehave\n") {
                Ok(()) => reply(250, "wrote".into()),
                Err(e) => reply(550, format!("cannot write: {e}")),
            },
            "connect" => match std::net::TcpStream::connect(rest) {
                Ok(_) => reply(250, "connected".into()),
                Err(e) => reply(550, format!("cannot connect: {e}")),
            },
            "env" => match std::env::var(rest) {
                Ok(value) => reply(250, format!("{rest}={value}")),
                Err(_) => reply(550, format!("{rest} is not set")),
            },
            _ => reply(250, "fine".into()),
        }
    }
}

impl rcpt::Guest for Misbehave {
    fn handle_rcpt(_: Session, _: Envelope, _: String, _: Vec<String>) -> Option<Reply> {
        None
    }
}

export!(Misbehave);
