//! every-hook: a test plugin exporting every hook of `wasmtp:smtp`, whose
//! replies show the integration tests each call the host made and what it
//! passed.
//!
//! Every reply text ends with ` [call N]`, N counting this instance's hook
//! calls (`setup.init` not included; for EHLO it is on the added
//! `X-EVERY-HOOK` line): one instance per session means N starts at 1 in
//! every session. Hooks also log one line each, at debug level.
//!
//! Triggers, for the failure paths:
//! - `setup` arg `refuse`: init fails;
//! - HELO/EHLO `reject.example`: 550;
//! - MAIL/RCPT address containing `reject`: 550; `tempfail`: 451;
//!   RCPT address starting with `default`: no reply (the host's default);
//! - DATA content containing `X-Trap: yes`: trap;
//! - NOOP `trap`: trap; `bad-code`: code 999; `crlf`: a line with CR LF in
//!   it; `default`: no reply; `args`: the `setup` arguments;
//! - AUTH password other than `secret`: refused; PROXY from 192.0.2.66: closed.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:every-hook;
        world every-hook {
            include wasmtp:smtp/all-hooks@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use std::cell::{Cell, RefCell};

use exports::wasmtp::smtp::auth::{AuthDecision, Credentials};
use exports::wasmtp::smtp::{
    auth, data, ehlo, exception, helo, lmtp_data, mail, noop, proxy, quit, rcpt, rset, setup,
    starttls, vrfy,
};
use wasmtp::smtp::content;
use wasmtp::smtp::log::{Level, log};
use wasmtp::smtp::types::{Envelope, Error, ErrorKind, ProxyData, Reply, Session};

/// Small on purpose: the data hook's answer must not depend on the host
/// handing the content over in one piece.
const CHUNK: u32 = 4096;

thread_local! {
    static CALLS: Cell<u32> = const { Cell::new(0) };
    static ARGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Counts a hook call and logs it; returns the ` [call N]` suffix.
fn called(hook: &str, detail: &str) -> String {
    let n = CALLS.get() + 1;
    CALLS.set(n);
    log(
        Level::Debug,
        &format!("every-hook {hook} {detail} [call {n}]"),
    );
    format!(" [call {n}]")
}

fn reply(code: u16, enhanced: Option<&str>, text: String) -> Option<Reply> {
    Some(Reply {
        code,
        enhanced: enhanced.map(String::from),
        lines: vec![text],
    })
}

/// The code for a MAIL or RCPT address: a refusal when the address asks.
fn address_reply(
    address: &str,
    ok: (u16, &str),
    refused: (u16, &str),
    text: String,
) -> Option<Reply> {
    let (code, enhanced) = if address.contains("reject") {
        refused
    } else if address.contains("tempfail") {
        (451, "4.3.0")
    } else {
        ok
    };
    reply(code, Some(enhanced), text)
}

struct EveryHook;

impl setup::Guest for EveryHook {
    fn init(args: Vec<String>) -> Result<(), String> {
        log(Level::Debug, &format!("every-hook init {args:?}"));
        if args.iter().any(|arg| arg == "refuse") {
            return Err("every-hook: refusing arguments as asked".into());
        }
        ARGS.set(args);
        Ok(())
    }
}

impl helo::Guest for EveryHook {
    fn handle_helo(_session: Session, _envelope: Envelope, hostname: String) -> Option<Reply> {
        let call = called("helo", &hostname);
        if hostname == "reject.example" {
            return reply(550, None, format!("every-hook refuses helo{call}"));
        }
        reply(250, None, format!("every-hook helo {hostname}{call}"))
    }
}

impl ehlo::Guest for EveryHook {
    fn handle_ehlo(
        _session: Session,
        _envelope: Envelope,
        hostname: String,
        mut responses: Reply,
    ) -> Option<Reply> {
        let call = called("ehlo", &hostname);
        if hostname == "reject.example" {
            return reply(550, None, format!("every-hook refuses ehlo{call}"));
        }
        let last = responses.lines.len().saturating_sub(1);
        responses.lines.insert(last, format!("X-EVERY-HOOK{call}"));
        Some(responses)
    }
}

impl mail::Guest for EveryHook {
    fn handle_mail(
        _session: Session,
        _envelope: Envelope,
        address: String,
        options: Vec<String>,
    ) -> Option<Reply> {
        let call = called("mail", &address);
        let text = format!(
            "every-hook mail {address} options={}{call}",
            options.join(",")
        );
        address_reply(&address, (250, "2.1.0"), (550, "5.1.0"), text)
    }
}

impl rcpt::Guest for EveryHook {
    fn handle_rcpt(
        _session: Session,
        _envelope: Envelope,
        address: String,
        options: Vec<String>,
    ) -> Option<Reply> {
        let call = called("rcpt", &address);
        if address.starts_with("default") {
            return None;
        }
        let text = format!(
            "every-hook rcpt {address} options={}{call}",
            options.join(",")
        );
        address_reply(&address, (250, "2.1.5"), (550, "5.1.1"), text)
    }
}

impl data::Guest for EveryHook {
    fn handle_data(_session: Session, envelope: Envelope) -> Option<Reply> {
        const TRAP: &[u8] = b"X-Trap: yes";
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut len: u64 = 0;
        // The end of the previous chunk, so `X-Trap: yes` is found even when
        // a chunk boundary cuts it.
        let mut window: Vec<u8> = Vec::new();
        let mut trap = false;
        loop {
            let chunk = content::read(len, CHUNK);
            if chunk.is_empty() {
                break;
            }
            len += chunk.len() as u64;
            for &byte in &chunk {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            window.extend_from_slice(&chunk);
            trap |= window.windows(TRAP.len()).any(|w| w == TRAP);
            window.drain(..window.len().saturating_sub(TRAP.len() - 1));
        }
        let call = called("data", &format!("{len} bytes"));
        if trap {
            panic!("every-hook: trap requested");
        }
        let size = content::size();
        if size != len {
            return reply(
                451,
                Some("4.3.0"),
                format!("every-hook data read {len} bytes but size says {size}{call}"),
            );
        }
        let from = envelope.mail_from.unwrap_or_default();
        let to = envelope.rcpt_tos.join(",");
        reply(
            250,
            Some("2.0.0"),
            format!("every-hook data {len} bytes fnv1a={hash:016x} from={from} to={to}{call}"),
        )
    }
}

impl rset::Guest for EveryHook {
    fn handle_rset(_session: Session, _envelope: Envelope) -> Option<Reply> {
        let call = called("rset", "");
        reply(250, None, format!("every-hook rset{call}"))
    }
}

impl noop::Guest for EveryHook {
    fn handle_noop(_session: Session, _envelope: Envelope, arg: String) -> Option<Reply> {
        let call = called("noop", &arg);
        match arg.as_str() {
            "trap" => panic!("every-hook: trap requested"),
            "bad-code" => reply(999, None, format!("every-hook bad code{call}")),
            "crlf" => reply(250, None, format!("every-hook noop\r\nINJECTED{call}")),
            "default" => None,
            "args" => reply(
                250,
                None,
                format!(
                    "every-hook args {}{call}",
                    ARGS.with_borrow(|args| args.join(","))
                ),
            ),
            _ => reply(250, None, format!("every-hook noop {arg}{call}")),
        }
    }
}

impl quit::Guest for EveryHook {
    fn handle_quit(_session: Session, _envelope: Envelope) -> Option<Reply> {
        let call = called("quit", "");
        reply(221, None, format!("every-hook bye{call}"))
    }
}

impl vrfy::Guest for EveryHook {
    fn handle_vrfy(_session: Session, _envelope: Envelope, address: String) -> Option<Reply> {
        let call = called("vrfy", &address);
        reply(252, None, format!("every-hook vrfy {address}{call}"))
    }
}

impl auth::Guest for EveryHook {
    fn handle_auth(
        _session: Session,
        _envelope: Envelope,
        credentials: Credentials,
    ) -> AuthDecision {
        let login = String::from_utf8_lossy(&credentials.login).into_owned();
        called("auth", &format!("{} {login}", credentials.mechanism));
        if credentials.password == b"secret" {
            AuthDecision::Accept(login)
        } else {
            AuthDecision::Reject(None)
        }
    }
}

impl proxy::Guest for EveryHook {
    fn handle_proxy(_session: Session, _envelope: Envelope, proxy: ProxyData) -> bool {
        let source = proxy
            .source
            .map(|source| source.address)
            .unwrap_or_default();
        called("proxy", &source);
        source != "192.0.2.66"
    }
}

impl starttls::Guest for EveryHook {
    fn handle_starttls(session: Session, _envelope: Envelope) -> bool {
        called(
            "starttls",
            &session.tls.map(|tls| tls.version).unwrap_or_default(),
        );
        true
    }
}

impl lmtp_data::Guest for EveryHook {
    fn handle_lmtp_data(_session: Session, envelope: Envelope) -> Vec<Option<Reply>> {
        let call = called(
            "lmtp-data",
            &format!("{} recipients", envelope.rcpt_tos.len()),
        );
        envelope
            .rcpt_tos
            .iter()
            .map(|rcpt| {
                reply(
                    250,
                    Some("2.0.0"),
                    format!("every-hook lmtp-data {rcpt}{call}"),
                )
            })
            .collect()
    }
}

impl exception::Guest for EveryHook {
    fn handle_exception(_session: Session, error: Error) -> Option<Reply> {
        let kind = match error.kind {
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfMemory => "out-of-memory",
            ErrorKind::InvalidReply => "invalid-reply",
        };
        let call = called("exception", &error.message);
        reply(
            451,
            Some("4.3.0"),
            format!("every-hook exception {kind} in {}{call}", error.hook),
        )
    }
}

export!(EveryHook);
