//! message-probe: a test plugin for `wasmtp:smtp/message`. In `data` it
//! reads the summary, both bodies and every attachment (in 64 KiB chunks)
//! and answers `250` with `parts=N bytes=B text=T html=H problems=P`, then
//! one line per problem (cut to 200 bytes), or `250 error=...` when the
//! import returned an error. With the argument `pass` it reads the same
//! and answers nothing, passing the hook on to the next plugin.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:message-probe;
        world probe {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/message@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use std::sync::atomic::{AtomicBool, Ordering};

use exports::wasmtp::smtp::data::Guest;
use wasmtp::smtp::message::{self, Body};
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Probe;

static PASS: AtomicBool = AtomicBool::new(false);

impl exports::wasmtp::smtp::setup::Guest for Probe {
    fn init(args: Vec<String>) -> Result<(), String> {
        match args.as_slice() {
            [] => Ok(()),
            [pass] if pass == "pass" => {
                PASS.store(true, Ordering::Relaxed);
                Ok(())
            }
            _ => Err("the only argument is `pass`".into()),
        }
    }
}

fn read_all(
    mut read: impl FnMut(u64) -> Result<Vec<u8>, message::Error>,
) -> Result<u64, message::Error> {
    let mut offset = 0u64;
    loop {
        let chunk = read(offset)?;
        if chunk.is_empty() {
            return Ok(offset);
        }
        offset += chunk.len() as u64;
    }
}

fn probe() -> Result<Vec<String>, message::Error> {
    let s = message::summary()?;
    let mut bytes = 0;
    for a in &s.attachments {
        let n = read_all(|o| message::read_attachment(a.index, o, 64 << 10))?;
        assert_eq!(n, a.size, "an attachment reads as long as its size says");
        bytes += n;
    }
    let text = read_all(|o| message::read_body(Body::Text, o, 64 << 10))?;
    let html = read_all(|o| message::read_body(Body::Html, o, 64 << 10))?;
    let mut lines = vec![format!(
        "parts={} bytes={bytes} text={text} html={html} problems={} subject={}",
        s.attachments.len(),
        s.problems.len(),
        s.subject
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(60)
            .collect::<String>()
    )];
    for p in s.problems.iter().take(5) {
        lines.push(p.chars().filter(|c| !c.is_control()).take(200).collect());
    }
    Ok(lines)
}

impl Guest for Probe {
    fn handle_data(_: Session, _: Envelope) -> Option<Reply> {
        let lines = match probe() {
            Ok(lines) => lines,
            Err(e) => vec![
                format!("error={e:?}")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(300)
                    .collect(),
            ],
        };
        if PASS.load(Ordering::Relaxed) {
            return None;
        }
        Some(Reply {
            code: 250,
            enhanced: None,
            lines,
        })
    }
}

export!(Probe);
