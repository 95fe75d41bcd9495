//! STARTTLS and AUTH edges against aiosmtpd 1.4.6, side by side, with the
//! options both take: `--tlscert/--tlskey` (STARTTLS offered and required)
//! and `--no-requiretls`. The companion of `aiosmtpd_parity.rs` (same
//! transcript syntax, plus `-- starttls`: the client runs the TLS handshake
//! there, after the server's `220`), kept in a file of its own because its
//! dialogs need a TLS client and a certificate.
//!
//! aiosmtpd's CLI has no authenticator: every AUTH it completes fails with
//! 535, so the AUTH dialogs never succeed; wasmtp runs the `gatekeeper` test
//! plugin, which refuses every password those dialogs send. The host names
//! are normalised to `{host}`; SIZE, PIPELINING and the other keywords
//! wasmtp adds are the deliberate differences of aiosmtpd_parity.rs.
//!
//! Run: `cargo test --test aiosmtpd_parity_tls` (needs aiosmtpd 1.4.6;
//! `WASMTP_SKIP_AIOSMTPD=1` checks wasmtp against the transcripts only).

#[path = "harness/mod.rs"]
mod harness;
#[path = "protocol/mod.rs"]
mod protocol;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{Aiosmtpd, HOSTNAME, Server};
use protocol::{Certs, TlsClient, gatekeeper};

const GREETING: &str = "220 {host} Python SMTP 1.4.6";

/// (aiosmtpd's lines, wasmtp's lines): every run of the first in a reply is
/// the second when the dialog is played against wasmtp.
const DIFFERENCES: &[(&[&str], &[&str])] = &[
    (
        &["220 {host} Python SMTP 1.4.6"],
        &["220 {host} wasmtp {version}"],
    ),
    (
        &["250-{host}", "250-8BITMIME"],
        &["250-{host}", "250-SIZE 33554432", "250-8BITMIME"],
    ),
    (
        &["250 HELP"],
        &[
            "250-PIPELINING",
            "250-CHUNKING",
            "250-BINARYMIME",
            "250-DSN",
            "250 HELP",
        ],
    ),
];

struct Dialog {
    name: &'static str,
    /// STARTTLS required (aiosmtpd's CLI default) or not (`--no-requiretls`).
    requiretls: bool,
    transcript: &'static str,
}

#[rustfmt::skip]
const DIALOGS: &[Dialog] = &[
    Dialog { name: "STARTTLS is required before other commands", requiretls: true, transcript: r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-STARTTLS
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 530 Must issue a STARTTLS command first
        C: HELO client.example
        S: 530 Must issue a STARTTLS command first
        C: AUTH PLAIN
        S: 530 Must issue a STARTTLS command first
        C: HELP
        S: 530 Must issue a STARTTLS command first
        C: XYZZY
        S: 530 Must issue a STARTTLS command first
        C: NOOP
        S: 250 OK
        C: STARTTLS now
        S: 501 Syntax: STARTTLS
        C: STARTTLS
        S: 220 Ready to start TLS
        -- starttls
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-AUTH LOGIN PLAIN
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
    "# },
    Dialog { name: "plaintext pipelined after STARTTLS is dropped", requiretls: true, transcript: r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-STARTTLS
        S: 250 HELP
        C: STARTTLS
        C: NOOP injected
        C: MAIL FROM:<injected@example.com>
        S: 220 Ready to start TLS
        -- starttls
        # the TLS session starts afresh: no HELO name, no sender
        C: MAIL FROM:<anne@example.com>
        S: 503 Error: send HELO first
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-AUTH LOGIN PLAIN
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
    "# },
    Dialog { name: "STARTTLS offered, not required", requiretls: false, transcript: r#"
        C: HELP
        S: 250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY
        C: AUTH PLAIN
        S: 503 Error: send EHLO first
        C: HELO client.example
        S: 250 {host}
        C: AUTH PLAIN
        S: 500 Error: command 'AUTH' not recognized
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-STARTTLS
        S: 250 HELP
        C: AUTH PLAIN
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: STARTTLS
        S: 220 Ready to start TLS
        -- starttls
        # the sender given in plain text is forgotten (RFC 3207 4.2)
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-AUTH LOGIN PLAIN
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
    "# },
    Dialog { name: "AUTH edges over TLS", requiretls: true, transcript: r#"
        C: STARTTLS
        S: 220 Ready to start TLS
        -- starttls
        C: AUTH PLAIN
        S: 503 Error: send EHLO first
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-AUTH LOGIN PLAIN
        S: 250 HELP
        C: AUTH
        S: 501 Not enough value
        C: AUTH PLAIN a b
        S: 501 Too many values
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Unrecognized authentication type
        C: AUTH PLAIN not-base64!
        S: 501 5.5.2 Can't decode base64
        # "no NULs" in base64
        C: AUTH PLAIN bm8gTlVMcw==
        S: 501 5.5.2 Can't split auth value
        C: AUTH PLAIN
        S: 334 
        C: *
        S: 501 5.7.0 Auth aborted
        C: AUTH PLAIN
        S: 334 
        C: %%%
        S: 501 5.5.2 Can't decode base64
        C: AUTH LOGIN
        S: 334 VXNlciBOYW1lAA==
        C: *
        S: 501 5.7.0 Auth aborted
        # LOGIN anne / wrong
        C: AUTH LOGIN YW5uZQ==
        S: 334 UGFzc3dvcmQA
        C: d3Jvbmc=
        S: 535 5.7.8 Authentication credentials invalid
        # PLAIN \0anne\0wrong
        C: AUTH PLAIN AGFubmUAd3Jvbmc=
        S: 535 5.7.8 Authentication credentials invalid
    "# },
];

#[derive(Debug)]
enum Item {
    Send(Vec<u8>),
    Expect(String),
    StartTls,
}

fn parse(transcript: &str) -> Vec<Item> {
    let mut items = vec![Item::Expect(GREETING.to_string())];
    for raw in transcript.lines() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(text) = line.strip_prefix("C: ").or(line.strip_prefix("C:")) {
            items.push(Item::Send(format!("{text}\r\n").into_bytes()));
        } else if let Some(text) = line.strip_prefix("S: ") {
            items.push(Item::Expect(text.to_string()));
        } else if line == "-- starttls" {
            items.push(Item::StartTls);
        } else {
            panic!("cannot read {raw:?}");
        }
    }
    items.push(Item::Send(b"NOOP\r\n".to_vec()));
    items.push(Item::Expect("250 OK".to_string()));
    items
}

/// The expected lines with the differences applied (for wasmtp).
fn for_wasmtp(lines: &[String]) -> Vec<String> {
    let mut lines = lines.to_vec();
    for (from, to) in DIFFERENCES {
        let mut out = Vec::new();
        let mut at = 0;
        while at < lines.len() {
            if lines[at..].len() >= from.len()
                && lines[at..].iter().zip(from.iter()).all(|(a, b)| a == b)
            {
                out.extend(
                    to.iter()
                        .map(|s| s.replace("{version}", env!("CARGO_PKG_VERSION"))),
                );
                at += from.len();
            } else {
                out.push(lines[at].clone());
                at += 1;
            }
        }
        lines = out;
    }
    lines
}

/// Plays `items`; returns the transcript of the first mismatch, if any.
fn play(addr: SocketAddr, certs: &Certs, items: &[Item], wasmtp: bool) -> Result<(), String> {
    let mut client = TlsClient::connect(addr);
    client.set_timeout(Duration::from_secs(5));
    let mut hostname = String::new();
    let mut i = 0;
    while i < items.len() {
        // One write of consecutive client lines, then the lines expected.
        let mut send = Vec::new();
        while let Some(Item::Send(bytes)) = items.get(i) {
            send.extend_from_slice(bytes);
            i += 1;
        }
        if !send.is_empty() {
            client.send_raw(&send);
        }
        let mut expected = Vec::new();
        while let Some(Item::Expect(line)) = items.get(i) {
            expected.push(line.clone());
            i += 1;
        }
        if wasmtp {
            expected = for_wasmtp(&expected);
        }
        let replies = expected
            .iter()
            .filter(|l| harness::parse_reply_line(l).is_none_or(|(_, last, _)| last))
            .count();
        let mut got = Vec::new();
        for _ in 0..replies {
            let Some(reply) = client.try_read_reply() else {
                return Err(format!(
                    "closed; expected {expected:?}\n{}",
                    client.transcript.join("\n")
                ));
            };
            if hostname.is_empty() {
                hostname = reply.lines[0].split(' ').next().unwrap_or("").to_string();
            }
            got.extend(
                reply
                    .wire()
                    .into_iter()
                    .map(|l| l.replace(&hostname, "{host}")),
            );
        }
        if got != expected {
            return Err(format!(
                "expected {expected:#?}\ngot {got:#?}\n--- transcript\n{}",
                client.transcript.join("\n")
            ));
        }
        if let Some(Item::StartTls) = items.get(i) {
            client
                .handshake(certs, "localhost")
                .map_err(|e| format!("handshake: {e}"))?;
            i += 1;
        }
    }
    Ok(())
}

fn run(against_wasmtp: bool) -> String {
    let certs = Certs::new();
    let mut report = String::new();
    for requiretls in [true, false] {
        let mut flags = vec!["--tlscert", certs.cert_path(), "--tlskey", certs.key_path()];
        if !requiretls {
            flags.push("--no-requiretls");
        }
        let (addr, _keep): (SocketAddr, Box<dyn std::any::Any>) = if against_wasmtp {
            let plugin = gatekeeper();
            let mut args = vec!["--hostname", HOSTNAME, "-c", plugin.as_str()];
            args.extend_from_slice(&flags);
            let server = Server::start(&args);
            (server.addr(), Box::new(server))
        } else {
            let server = Aiosmtpd::start("aiosmtpd.handlers.Sink", &flags);
            (server.addr(), Box::new(server))
        };
        for dialog in DIALOGS.iter().filter(|d| d.requiretls == requiretls) {
            if let Err(e) = play(addr, &certs, &parse(dialog.transcript), against_wasmtp) {
                report.push_str(&format!("=== {}\n{e}\n", dialog.name));
            }
        }
    }
    report
}

#[test]
fn aiosmtpd_answers_as_the_tls_dialogs_say() {
    if std::env::var_os("WASMTP_SKIP_AIOSMTPD").is_some() {
        eprintln!("WASMTP_SKIP_AIOSMTPD is set: NOT checking the dialogs against aiosmtpd");
        return;
    }
    let report = run(false);
    assert!(
        report.is_empty(),
        "aiosmtpd does not answer as the dialogs say:\n{report}"
    );
}

#[test]
fn wasmtp_answers_the_tls_dialogs_as_aiosmtpd_does() {
    let report = run(true);
    assert!(
        report.is_empty(),
        "wasmtp differs from aiosmtpd beyond the deliberate differences:\n{report}"
    );
}
