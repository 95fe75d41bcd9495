//! Debugging: prints every message it receives, as aiosmtpd's `Debugging`
//! handler does, so that a developer can watch what a client sends.
//!
//! Arguments (`setup`): none or `stdout` (the default) or `stderr`, the stream
//! to print to. It exports `data` only, so every command gets the host's
//! default reply, and DATA gets `250 OK`.
//!
//! The host must grant this plugin stdout and stderr. The message is read
//! through the `content` import in chunks and printed as it streams in, so a
//! large message is never held in the plugin's memory.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:debugging;
        world debugging {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

mod print;

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use exports::wasmtp::smtp::{data, setup};
use wasmtp::smtp::content;
use wasmtp::smtp::types::{Envelope, Reply, Session};

/// aiosmtpd's `parser.error` text for bad arguments.
const USAGE: &str = "Debugging usage: [stdout|stderr]";

/// How much of the content to ask the host for at a time: large enough to
/// keep host calls few, small enough to keep the instance's memory small.
const CHUNK: u32 = 64 * 1024;

/// Set by `init` when the argument is `stderr`; each instance has its own.
static TO_STDERR: AtomicBool = AtomicBool::new(false);

struct Debugging;

impl setup::Guest for Debugging {
    fn init(args: Vec<String>) -> Result<(), String> {
        let to_stderr = match args.as_slice() {
            [] => false,
            [stream] if stream == "stdout" => false,
            [stream] if stream == "stderr" => true,
            _ => return Err(USAGE.to_string()),
        };
        TO_STDERR.store(to_stderr, Ordering::Relaxed);
        Ok(())
    }
}

impl data::Guest for Debugging {
    fn handle_data(session: Session, envelope: Envelope) -> Option<Reply> {
        let stream: Box<dyn Write> = if TO_STDERR.load(Ordering::Relaxed) {
            Box::new(io::stderr().lock())
        } else {
            Box::new(io::stdout().lock())
        };
        let peer = print::peer_repr(&session.peer.address, session.peer.port);
        let result = print::dump(
            BufWriter::with_capacity(CHUNK as usize, stream),
            &envelope.mail_options,
            &envelope.rcpt_options,
            &peer,
            |offset| content::read(offset, CHUNK),
        );
        // aiosmtpd would answer a failed print with a 500 naming the Python
        // exception; a failed write is transient, so say so with a 451.
        result.err().map(|error| Reply {
            code: 451,
            enhanced: Some("4.3.0".to_string()),
            lines: vec![format!("Error: cannot print the message: {error}")],
        })
    }
}

export!(Debugging);
