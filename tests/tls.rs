//! TLS through the real server: STARTTLS (RFC 3207) and implicit TLS
//! (SMTPS), with Python's smtplib, swaks and a rustls client; the STARTTLS
//! command-injection attack; `require_starttls`; the starttls hook; the
//! handshake timeout; a failed handshake costing only its connection.

#[path = "harness/mod.rs"]
mod harness;
#[path = "protocol/mod.rs"]
mod protocol;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{Client, HOSTNAME, Server, run_client_script, run_wasmtp};
use protocol::{Certs, TlsClient, gatekeeper, swaks, toml_path};

/// A STARTTLS listener (require_starttls as given) served by gatekeeper.
fn starttls_server(certs: &Certs, extra: &str) -> Server {
    tls_server(certs, "", extra)
}

/// The same, with `tls_extra` inside the `tls` table.
fn tls_server(certs: &Certs, tls_extra: &str, extra: &str) -> Server {
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        [[listener]]
        address = "127.0.0.1:0"
        plugin = "gate"
        tls = {{ cert = {cert}, key = {key} {tls_extra} }}
        {extra}
        [plugin.gate]
        component = {plugin:?}
        "#,
        cert = toml_path(&certs.cert),
        key = toml_path(&certs.key),
        plugin = gatekeeper(),
    ))
}

fn smtps_server(certs: &Certs) -> Server {
    starttls_server(certs, "implicit_tls = true")
}

/// Reads the `KEY\tcode\ttext` lines of protocol_client.py.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}\t")))
        .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
}

#[test]
fn smtplib_starttls_then_a_message_over_tls() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "");
    let addr = server.addr();
    let out = run_client_script(
        "protocol_client.py",
        &["starttls", "127.0.0.1", &addr.port().to_string()],
    );
    assert_eq!(field(&out, "STARTTLS"), "220\tReady to start TLS");
    assert!(field(&out, "TLS").starts_with("TLSv1.3\t"), "{out}");
    assert_eq!(
        field(&out, "DATA"),
        "250\t2.0.0 gatekeeper got 84 bytes for 1 recipients"
    );
    let noop = field(&out, "NOOP");
    assert!(
        noop.contains("tls=TLSv1.3/TLS13_"),
        "session.tls reaches the plugin: {noop}"
    );
    assert!(noop.contains("peer=127.0.0.1:"), "{noop}");
}

#[test]
fn smtplib_smtps_implicit_tls() {
    let certs = Certs::new();
    let server = smtps_server(&certs);
    let out = run_client_script(
        "protocol_client.py",
        &["smtps", "127.0.0.1", &server.addr().port().to_string()],
    );
    assert!(field(&out, "TLS").starts_with("TLSv1.3\t"), "{out}");
    assert_eq!(
        field(&out, "DATA"),
        "250\t2.0.0 gatekeeper got 84 bytes for 1 recipients"
    );
    assert_eq!(field(&out, "QUIT"), "221\tBye");
}

#[test]
fn swaks_starttls_and_smtps() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "");
    let port = server.addr().port().to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "--from",
        "anne@example.com",
        "--to",
        "bart@example.com",
    ]);
    assert!(ok, "swaks --tls failed:\n{out}");
    assert!(out.contains("<-  220 Ready to start TLS"), "{out}");
    assert!(
        out.contains("<~  250 2.0.0 gatekeeper got"),
        "the message went over TLS:\n{out}"
    );

    let smtps = smtps_server(&certs);
    let port = smtps.addr().port().to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--tlsc",
        "--from",
        "anne@example.com",
        "--to",
        "bart@example.com",
    ]);
    assert!(ok, "swaks --tlsc failed:\n{out}");
    assert!(out.contains("<~  250 2.0.0 gatekeeper got"), "{out}");
}

#[test]
fn ehlo_offers_starttls_until_tls_is_up() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "");
    let mut c = TlsClient::connect(server.addr());
    c.expect_reply(220);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(ehlo.lines.contains(&"STARTTLS".to_string()), "{ehlo}");
    c.starttls(&certs, "localhost");
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(!ehlo.lines.contains(&"STARTTLS".to_string()), "{ehlo}");
    assert_eq!(
        c.expect("STARTTLS", 503).text(),
        "5.5.1 Error: TLS already active"
    );
    assert_eq!(c.expect("STARTTLS now", 501).text(), "Syntax: STARTTLS");
}

#[test]
fn require_starttls_allows_only_noop_ehlo_starttls_quit() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "");
    let mut c = TlsClient::connect(server.addr());
    c.expect_reply(220);
    c.expect("NOOP", 250);
    c.expect("EHLO client.example", 250);
    for refused in [
        "HELO client.example",
        "MAIL FROM:<anne@example.com>",
        "RCPT TO:<bart@example.com>",
        "DATA",
        "RSET",
        "VRFY bart",
        "HELP",
        "AUTH PLAIN",
        "XYZZY",
    ] {
        assert_eq!(
            c.expect(refused, 530).text(),
            "Must issue a STARTTLS command first",
            "{refused}"
        );
    }
    c.starttls(&certs, "localhost");
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("QUIT", 221);
}

#[test]
fn no_requiretls_serves_plain_text_too() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "require_starttls = false");
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
}

/// The STARTTLS command-injection attack (CVE-2011-0411 and kin): plaintext
/// pipelined after STARTTLS, in the same packet, must not be executed in the
/// TLS session — the server must drop it with the plain session.
#[test]
fn starttls_injection_is_not_executed() {
    let certs = Certs::new();
    let mut server = starttls_server(&certs, "");
    let mut c = TlsClient::connect(server.addr());
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.send_raw(
        b"STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<injected@evil.example>\r\nNOOP whoami\r\n",
    );
    c.expect_reply(220);
    c.handshake(&certs, "localhost").unwrap();
    // Nothing injected was answered: the first reply over TLS is the one to
    // this EHLO, and the session has no HELO name and no sender.
    c.send("NOOP whoami");
    let whoami = c.read_reply();
    assert_eq!(whoami.code, 250);
    assert!(whoami.text().starts_with("peer="), "{whoami}");
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 503).text(),
        "Error: send HELO first"
    );
    c.expect("EHLO client.example", 250);
    // Not `503 nested MAIL`: the injected MAIL never happened.
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("QUIT", 221);
    let log = server.wait_for_stderr(r#"from="anne@example.com""#);
    assert!(
        !log.contains("injected"),
        "the injected MAIL reached the session:\n{log}"
    );
    assert!(
        log.contains("discarding plaintext sent after STARTTLS"),
        "{log}"
    );
}

#[test]
fn the_tls_session_starts_fresh() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "require_starttls = false");
    let mut c = TlsClient::connect(server.addr());
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.starttls(&certs, "localhost");
    // RFC 3207 4.2: the HELO name and the transaction are forgotten.
    c.expect("MAIL FROM:<anne@example.com>", 503);
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
}

#[test]
fn the_starttls_hook_can_refuse() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "");
    let mut c = TlsClient::connect(server.addr());
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.starttls(&certs, "refuse.example");
    for refused in [
        "EHLO client.example",
        "NOOP",
        "MAIL FROM:<anne@example.com>",
    ] {
        assert_eq!(
            c.expect(refused, 554).text(),
            "Command refused due to lack of security",
            "{refused}"
        );
    }
    c.expect("QUIT", 221);

    // The same under implicit TLS.
    let smtps = smtps_server(&certs);
    let mut c = TlsClient::connect_tls(smtps.addr(), &certs, "refuse.example");
    c.expect_reply(220);
    c.expect("EHLO client.example", 554);
    c.expect("QUIT", 221);
}

#[test]
fn session_tls_names_version_cipher_and_sni() {
    let certs = Certs::new();
    let server = smtps_server(&certs);
    let mut c = TlsClient::connect_tls(server.addr(), &certs, HOSTNAME);
    c.expect_reply(220);
    let whoami = c.expect("NOOP whoami", 250).text();
    assert!(whoami.contains("tls=TLSv1.3/TLS13_"), "{whoami}");
    assert!(whoami.contains(&format!("sni={HOSTNAME}")), "{whoami}");
}

#[test]
fn a_failed_handshake_ends_only_that_connection() {
    let certs = Certs::new();
    let server = starttls_server(&certs, "");
    let mut bad = TcpStream::connect(server.addr()).unwrap();
    let mut c = Client::greeted(server.addr());
    // A client that says STARTTLS and then sends no TLS at all.
    bad.write_all(b"EHLO x\r\nSTARTTLS\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    bad.write_all(b"this is not a ClientHello\r\n").unwrap();
    let rest = protocol::read_all(&mut bad, Duration::from_secs(5));
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("220 Ready to start TLS"), "{rest}");
    // The other connection, and new ones, are served.
    c.expect("EHLO client.example", 250);
    let mut again = TlsClient::connect(server.addr());
    again.expect_reply(220);
    again.expect("EHLO client.example", 250);
    again.starttls(&certs, "localhost");
    again.expect("EHLO client.example", 250);
}

#[test]
fn a_handshake_that_never_comes_times_out() {
    let certs = Certs::new();
    let server = tls_server(&certs, ", handshake_timeout = 0.5", "");
    let mut stalled = TcpStream::connect(server.addr()).unwrap();
    stalled.write_all(b"EHLO x\r\nSTARTTLS\r\n").unwrap();
    let started = Instant::now();
    let rest = protocol::read_all(&mut stalled, Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&rest).contains("220 Ready to start TLS"));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn cli_tls_flags_as_aiosmtpd() {
    let certs = Certs::new();
    // --tlscert/--tlskey: STARTTLS offered and required.
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "sink",
        "--tlscert",
        certs.cert_path(),
        "--tlskey",
        certs.key_path(),
    ]);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 530);
    // --no-requiretls: offered, not required.
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "sink",
        "--tlscert",
        certs.cert_path(),
        "--tlskey",
        certs.key_path(),
        "--no-requiretls",
    ]);
    let mut c = Client::greeted(server.addr());
    assert!(
        c.expect("EHLO client.example", 250)
            .lines
            .contains(&"STARTTLS".to_string())
    );
    c.expect("MAIL FROM:<anne@example.com>", 250);
    // --smtpscert/--smtpskey: TLS from the first byte.
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "sink",
        "--smtpscert",
        certs.cert_path(),
        "--smtpskey",
        certs.key_path(),
    ]);
    let mut c = TlsClient::connect_tls(server.addr(), &certs, "localhost");
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
}

#[test]
fn bad_certificates_are_refused_before_serving() {
    let certs = Certs::new();
    let out = run_wasmtp(
        &[
            "-c",
            "sink",
            "--tlscert",
            "/nonexistent/cert.pem",
            "--tlskey",
            certs.key_path(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tlscert: cannot read the certificate file /nonexistent/cert.pem"),
        "{stderr}"
    );
    // A key that is not the certificate's.
    let other = Certs::new();
    let out = run_wasmtp(
        &[
            "-c",
            "sink",
            "--tlscert",
            certs.cert_path(),
            "--tlskey",
            other.key_path(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not go with the key"), "{stderr}");
    // --tlscert alone is a usage error, as in aiosmtpd.
    let out = run_wasmtp(
        &["-c", "sink", "--tlscert", certs.cert_path()],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_reload_picks_up_a_renewed_certificate() {
    let old = Certs::new();
    let mut server = starttls_server(&old, "require_starttls = false");
    let mut before = TlsClient::connect(server.addr());
    before.expect_reply(220);
    before.starttls(&old, "localhost");
    // Renew: new files at the same paths, then SIGHUP.
    let new = Certs::new();
    std::fs::copy(&new.cert, &old.cert).unwrap();
    std::fs::copy(&new.key, &old.key).unwrap();
    server.signal("HUP");
    server.wait_for_stderr("reloaded");
    let mut after = TlsClient::connect(server.addr());
    after.expect_reply(220);
    after.starttls(&new, "localhost");
    after.expect("EHLO client.example", 250);
    // The session that started before the reload goes on with its TLS.
    before.expect("EHLO client.example", 250);
}
