//! kv-probe: a test plugin for the `kv` capability (tests/kv.rs).
//!
//! `RCPT TO:<OP+NS+ARGS...@kv.test>` runs one key-value call and answers
//! `250 ok RESULT` or `451 kv ERROR`; `NS` is `-` for the plugin's own
//! namespace. Operations:
//! - `get+NS+KEY` → `250 ok value=V rev=R` or `250 ok absent`;
//! - `set+NS+KEY+VALUE+TTL_MS` → `250 ok rev=R`;
//! - `cas+NS+KEY+VALUE+EXPECTED+TTL_MS` (`EXPECTED` a revision or `none`);
//! - `incr+NS+KEY+DELTA+WINDOW_MS` → `250 ok value=N`;
//! - `del+NS+KEY` → `250 ok true|false`;
//! - `bigkey+NS+TTL_MS`, `bigvalue+NS+KEY+TTL_MS`: a key of 513 bytes, a
//!   value of 65537 bytes.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:kv-probe;
        world kv-probe {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/kv@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::rcpt::Guest;
use wasmtp::smtp::kv::{self, Error};
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Probe;

fn reply(code: u16, text: String) -> Reply {
    Reply {
        code,
        enhanced: None,
        lines: vec![text],
    }
}

fn describe(e: Error) -> String {
    match e {
        Error::Unavailable(m) => format!("unavailable: {m}"),
        Error::Conflict => "conflict".into(),
        Error::Invalid(m) => format!("invalid: {m}"),
        Error::Denied(m) => format!("denied: {m}"),
        Error::Timeout => "timeout".into(),
    }
}

fn run(args: &[&str]) -> Result<String, Error> {
    let ns = |s: &str| (s != "-").then(|| s.to_owned());
    let num = |s: &str| s.parse::<u64>().unwrap_or(0);
    match args {
        ["get", n, key] => Ok(match kv::get(ns(n).as_deref(), key)? {
            Some(e) => format!(
                "value={} rev={} ttl={}",
                String::from_utf8_lossy(&e.value),
                e.revision,
                e.expires_in_ms
            ),
            None => "absent".into(),
        }),
        ["set", n, key, value, ttl] => {
            kv::set(ns(n).as_deref(), key, value.as_bytes(), num(ttl)).map(|r| format!("rev={r}"))
        }
        ["cas", n, key, value, expected, ttl] => {
            let expected = (*expected != "none").then(|| num(expected));
            kv::compare_and_set(ns(n).as_deref(), key, value.as_bytes(), expected, num(ttl))
                .map(|r| format!("rev={r}"))
        }
        ["incr", n, key, delta, window] => {
            let delta = delta.parse::<i64>().unwrap_or(1);
            kv::incr(ns(n).as_deref(), key, delta, num(window))
                .map(|c| format!("value={}", c.value))
        }
        ["del", n, key] => kv::delete(ns(n).as_deref(), key).map(|b| b.to_string()),
        ["bigkey", n, ttl] => {
            kv::set(ns(n).as_deref(), &"k".repeat(513), b"v", num(ttl)).map(|r| format!("rev={r}"))
        }
        ["bigvalue", n, key, ttl] => {
            kv::set(ns(n).as_deref(), key, &vec![b'v'; 65537], num(ttl)).map(|r| format!("rev={r}"))
        }
        _ => Err(Error::Invalid(format!("kv-probe does not know {args:?}"))),
    }
}

impl Guest for Probe {
    fn handle_rcpt(_: Session, _: Envelope, address: String, _: Vec<String>) -> Option<Reply> {
        let local = address.split('@').next().unwrap_or("");
        let args: Vec<&str> = local.split('+').collect();
        Some(match run(&args) {
            Ok(text) => reply(250, format!("ok {text}")),
            Err(e) => {
                let mut text = format!("kv {}", describe(e));
                text.retain(|c| !c.is_control());
                let text: String = text.chars().take(400).collect();
                reply(451, text)
            }
        })
    }
}

export!(Probe);
