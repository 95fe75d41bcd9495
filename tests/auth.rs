//! AUTH (RFC 4954) through the real server: PLAIN with and without an
//! initial response, LOGIN, each edge answered as aiosmtpd 1.4.6 answers it,
//! decided by the `gatekeeper` test plugin's `auth` hook; `auth_required`,
//! `auth_require_tls`, excluded mechanisms, AUTH under implicit TLS; swaks
//! and smtplib as clients; and credentials kept out of the log.

#[path = "harness/mod.rs"]
mod harness;
#[path = "protocol/mod.rs"]
mod protocol;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use harness::{Client, HOSTNAME, Server, run_client_script};
use protocol::{Certs, TlsClient, gatekeeper, swaks, toml_path};

/// A listener served by gatekeeper; `extra` adds listener keys.
fn server(certs: &Certs, extra: &str, args: &[&str]) -> Server {
    Server::start_config_with(
        &format!(
            r#"
            [server]
            hostname = "{HOSTNAME}"
            [[listener]]
            address = "127.0.0.1:0"
            plugin = "gate"
            tls = {{ cert = {cert}, key = {key} }}
            require_starttls = false
            {extra}
            [plugin.gate]
            component = {plugin:?}
            "#,
            cert = toml_path(&certs.cert),
            key = toml_path(&certs.key),
            plugin = gatekeeper(),
        ),
        args,
    )
}

fn plain(authzid: &str, login: &str, password: &str) -> String {
    BASE64.encode(format!("{authzid}\0{login}\0{password}"))
}

fn b64(text: &str) -> String {
    BASE64.encode(text)
}

/// Connected, STARTTLS done, EHLO said.
fn over_tls(server: &Server, certs: &Certs) -> TlsClient {
    let mut c = TlsClient::connect(server.addr());
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.starttls(certs, "localhost");
    c.expect("EHLO client.example", 250);
    c
}

#[test]
fn auth_is_offered_over_tls_only_and_only_when_a_plugin_decides_it() {
    let certs = Certs::new();
    let s = server(&certs, "", &[]);
    let mut c = TlsClient::connect(s.addr());
    c.expect_reply(220);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("AUTH")), "{ehlo}");
    c.starttls(&certs, "localhost");
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.contains(&"AUTH LOGIN PLAIN".to_string()),
        "{ehlo}"
    );

    // sink has no auth hook: nothing to offer, even over TLS.
    let sink = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "sink",
        "--tlscert",
        certs.cert_path(),
        "--tlskey",
        certs.key_path(),
    ]);
    let mut c = TlsClient::connect(sink.addr());
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.starttls(&certs, "localhost");
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("AUTH")), "{ehlo}");
    assert_eq!(
        c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 504)
            .text(),
        "5.5.4 Unrecognized authentication type"
    );
}

#[test]
fn the_edges_answer_as_aiosmtpd() {
    let certs = Certs::new();
    let s = server(&certs, "", &[]);
    let mut c = TlsClient::connect(s.addr());
    c.expect_reply(220);
    assert_eq!(c.expect("AUTH PLAIN", 503).text(), "Error: send EHLO first");
    c.expect("HELO client.example", 250);
    assert_eq!(
        c.expect("AUTH PLAIN", 500).text(),
        "Error: command 'AUTH' not recognized"
    );
    c.expect("EHLO client.example", 250);
    assert_eq!(
        c.expect("AUTH PLAIN", 538).text(),
        "5.7.11 Encryption required for requested authentication mechanism"
    );
    c.starttls(&certs, "localhost");
    c.expect("EHLO client.example", 250);
    assert_eq!(c.expect("AUTH", 501).text(), "Not enough value");
    assert_eq!(c.expect("AUTH PLAIN a b", 501).text(), "Too many values");
    assert_eq!(
        c.expect("AUTH CRAM-MD5", 504).text(),
        "5.5.4 Unrecognized authentication type"
    );
    assert_eq!(
        c.expect("AUTH PLAIN not-base64!", 501).text(),
        "5.5.2 Can't decode base64"
    );
    assert_eq!(
        c.expect(&format!("AUTH PLAIN {}", b64("no-nuls")), 501)
            .text(),
        "5.5.2 Can't split auth value"
    );
    // Aborted with `*` (RFC 4954 4).
    assert_eq!(c.expect("AUTH PLAIN", 334).text(), "");
    assert_eq!(c.expect("*", 501).text(), "5.7.0 Auth aborted");
    assert_eq!(c.expect("AUTH LOGIN", 334).text(), b64("User Name\0"));
    assert_eq!(
        c.expect("not base64", 501).text(),
        "5.5.2 Can't decode base64"
    );
    // Refused by the plugin: the default and the plugin's own reply.
    assert_eq!(
        c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "wrong")), 535)
            .text(),
        "5.7.8 Authentication credentials invalid"
    );
    assert_eq!(
        c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "custom")), 535)
            .text(),
        "5.7.8 gatekeeper says no"
    );
    // Accepted.
    assert_eq!(
        c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 235)
            .text(),
        "2.7.0 Authentication successful"
    );
    assert_eq!(
        c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 503)
            .text(),
        "Already authenticated"
    );
    assert!(c.expect("NOOP whoami", 250).text().contains("auth=anne "));
}

#[test]
fn plain_without_initial_response_and_login_both_ways() {
    let certs = Certs::new();
    let s = server(&certs, "", &[]);
    // PLAIN: empty challenge, then the response.
    let mut c = over_tls(&s, &certs);
    assert_eq!(c.expect("AUTH PLAIN", 334).lines, vec![String::new()]);
    c.expect(&plain("admin", "anne", "secret"), 235);
    assert!(
        c.expect("NOOP whoami", 250)
            .text()
            .contains("auth=anne+admin "),
        "the authzid reaches the plugin"
    );
    // LOGIN: user name and password challenges.
    let mut c = over_tls(&s, &certs);
    assert_eq!(c.expect("AUTH LOGIN", 334).text(), b64("User Name\0"));
    assert_eq!(c.expect(&b64("bart"), 334).text(), b64("Password\0"));
    c.expect(&b64("secret"), 235);
    assert!(c.expect("NOOP whoami", 250).text().contains("auth=bart "));
    // LOGIN with the user name as initial response.
    let mut c = over_tls(&s, &certs);
    assert_eq!(
        c.expect(&format!("AUTH LOGIN {}", b64("cate")), 334).text(),
        b64("Password\0")
    );
    c.expect(&b64("nope"), 535);
    // Mechanism names are case-insensitive (RFC 4422 3.1).
    c.expect(&format!("AUTH plain {}", plain("", "cate", "secret")), 235);
}

#[test]
fn auth_required_refuses_the_transaction_until_auth() {
    let certs = Certs::new();
    let s = server(&certs, "auth_required = true", &[]);
    let mut c = over_tls(&s, &certs);
    for refused in [
        "MAIL FROM:<anne@example.com>",
        "RCPT TO:<bart@example.com>",
        "DATA",
        "VRFY bart",
        "HELP",
    ] {
        assert_eq!(
            c.expect(refused, 530).text(),
            "5.7.0 Authentication required",
            "{refused}"
        );
    }
    c.expect("NOOP", 250);
    c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 235);
    c.expect("MAIL FROM:<anne@example.com>", 250);
}

#[test]
fn auth_require_tls_false_allows_auth_in_plain_text() {
    let certs = Certs::new();
    let s = server(&certs, "auth_require_tls = false", &[]);
    let mut c = Client::greeted(s.addr());
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.contains(&"AUTH LOGIN PLAIN".to_string()),
        "{ehlo}"
    );
    c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 235);
}

#[test]
fn excluded_mechanisms_are_neither_offered_nor_accepted() {
    let certs = Certs::new();
    let s = server(&certs, r#"auth_exclude_mechanisms = ["LOGIN"]"#, &[]);
    let mut c = TlsClient::connect(s.addr());
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.starttls(&certs, "localhost");
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(ehlo.lines.contains(&"AUTH PLAIN".to_string()), "{ehlo}");
    c.expect("AUTH LOGIN", 504);
    c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 235);
}

/// aiosmtpd issue #281: under implicit TLS aiosmtpd still answers 538.
#[test]
fn implicit_tls_counts_as_tls_for_auth() {
    let certs = Certs::new();
    let s = server(&certs, "implicit_tls = true", &[]);
    let mut c = TlsClient::connect_tls(s.addr(), &certs, "localhost");
    c.expect_reply(220);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.contains(&"AUTH LOGIN PLAIN".to_string()),
        "{ehlo}"
    );
    c.expect(&format!("AUTH PLAIN {}", plain("", "anne", "secret")), 235);
}

#[test]
fn swaks_auth_plain_and_login_over_starttls_and_smtps() {
    let certs = Certs::new();
    let s = server(&certs, "auth_required = true", &[]);
    let smtps = server(&certs, "implicit_tls = true\nauth_required = true", &[]);
    for (tls, port) in [("--tls", s.addr().port()), ("--tlsc", smtps.addr().port())] {
        for mechanism in ["PLAIN", "LOGIN"] {
            let port = port.to_string();
            let args = [
                "--server",
                "127.0.0.1",
                "--port",
                &port,
                tls,
                "--auth",
                mechanism,
                "--auth-user",
                "anne",
                "--auth-password",
                "secret",
                "--from",
                "anne@example.com",
                "--to",
                "bart@example.com",
            ];
            let (ok, out) = swaks(&args);
            assert!(ok, "swaks {tls} --auth {mechanism}:\n{out}");
            assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
            assert!(out.contains("250 2.0.0 gatekeeper got"), "{out}");
            let (ok, out) = swaks(
                &[
                    &args[..9],
                    &[
                        "--auth-password",
                        "wrong",
                        "--from",
                        "anne@example.com",
                        "--to",
                        "bart@example.com",
                    ],
                ]
                .concat(),
            );
            assert!(!ok, "a wrong password must fail:\n{out}");
            assert!(
                out.contains("535 5.7.8 Authentication credentials invalid"),
                "{out}"
            );
        }
    }
}

#[test]
fn smtplib_login_over_starttls() {
    let certs = Certs::new();
    let s = server(&certs, "auth_required = true", &[]);
    let port = s.addr().port().to_string();
    let out = run_client_script(
        "protocol_client.py",
        &["starttls", "127.0.0.1", &port, "--login", "anne", "secret"],
    );
    assert!(
        out.contains("AUTH\t235\t2.7.0 Authentication successful"),
        "{out}"
    );
    assert!(out.contains("DATA\t250\t2.0.0 gatekeeper got"), "{out}");
    assert!(out.contains("auth=anne "), "{out}");
}

#[test]
fn credentials_never_reach_the_log() {
    let certs = Certs::new();
    // -dd: the most verbose log there is.
    let mut s = server(&certs, "", &["-dd"]);
    let mut c = over_tls(&s, &certs);
    let secret = "hunter2-do-not-log";
    c.expect(&format!("AUTH PLAIN {}", plain("", "anne", secret)), 535);
    c.expect("AUTH LOGIN", 334);
    c.expect(&b64("anne"), 334);
    c.expect(&b64(secret), 535);
    c.expect("QUIT", 221);
    let log = s.wait_for_stderr("QUIT");
    assert!(
        log.contains(">> AUTH …"),
        "the command is logged, its argument is not:\n{log}"
    );
    for leak in [secret.to_string(), plain("", "anne", secret), b64(secret)] {
        assert!(!log.contains(&leak), "{leak:?} is in the log:\n{log}");
    }
}
