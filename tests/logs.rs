//! Structured logs: `--log-format json` (or `[server] log_format`) writes
//! one JSON object a line; a session's lines carry its span (peer,
//! listener, tenant, TLS, the authenticated user — never the credentials),
//! and a transaction's lines its queue id.

#[path = "harness/mod.rs"]
mod harness;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use harness::{Client, HOSTNAME, Server, plugin_path};

fn config(log_format: &str) -> String {
    let every = plugin_path("every_hook.wasm");
    format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        {log_format}

        [[listener]]
        name = "submission"
        address = "127.0.0.1:0"
        tenant = "acme"
        auth_require_tls = false

        [tenant.acme]
        plugins = ["every"]

        [plugin.every]
        component = {every:?}
        "#
    )
}

/// One authenticated session with two transactions; the server's log after it.
fn traffic(server: &mut Server) -> String {
    let mut c = Client::after_ehlo(server.addr());
    c.expect(
        &format!("AUTH PLAIN {}", BASE64.encode("\0anne\0secret")),
        235,
    );
    assert_eq!(
        c.send_message(
            "a@example.com",
            &["b@example.com"],
            "Subject: one\n\nhello\n"
        )
        .code,
        250
    );
    c.expect("MAIL FROM:<c@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("QUIT", 221);
    server.wait_for_stderr("outcome=\"abandoned\"");
    server.stderr()
}

#[test]
fn json_lines_carry_the_session_and_the_queue_id() {
    let mut server = Server::start_config_with(&config(""), &["--log-format", "json"]);
    // Wait on the JSON form of the last line.
    let mut c = Client::after_ehlo(server.addr());
    c.expect(
        &format!("AUTH PLAIN {}", BASE64.encode("\0anne\0secret")),
        235,
    );
    assert_eq!(
        c.send_message(
            "a@example.com",
            &["b@example.com"],
            "Subject: one\n\nhello\n"
        )
        .code,
        250
    );
    c.expect("MAIL FROM:<c@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("QUIT", 221);
    let log = server.wait_for_stderr(r#""outcome":"abandoned""#);

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        !log.contains("secret") && !log.contains(&BASE64.encode("\0anne\0secret")),
        "credentials in the log:\n{log}"
    );

    let transaction_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("queue_id").is_some())
        .collect();
    let messages: Vec<&str> = transaction_lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    // One line per transaction at the default level, with its envelope.
    assert_eq!(
        messages,
        ["transaction ended", "transaction ended"],
        "{log}"
    );
    let ids: Vec<&str> = transaction_lines
        .iter()
        .map(|l| l["queue_id"].as_str().unwrap())
        .collect();
    assert!(ids[0] != ids[1], "{ids:?}");
    assert!(ids.iter().all(|id| id.len() == 16), "{ids:?}");
    let accepted = transaction_lines[0];
    assert_eq!(accepted["from"], "a@example.com");
    assert_eq!(accepted["to"], "b@example.com");
    assert_eq!(accepted["bytes"], "Subject: one\r\n\r\nhello\r\n".len());
    assert_eq!(accepted["outcome"], "accepted");
    assert_eq!(accepted["code"], 250);
    let abandoned = transaction_lines[1];
    assert_eq!(abandoned["from"], "c@example.com");
    assert_eq!(abandoned["outcome"], "abandoned");
    assert!(abandoned.get("bytes").is_none(), "{log}");

    // The session span, on every line of the session: after AUTH, the user.
    let span = &transaction_lines[0]["span"];
    assert_eq!(span["name"], "session");
    assert_eq!(span["listener"], "submission");
    assert_eq!(span["tenant"], "acme");
    assert_eq!(span["user"], "anne", "{log}");
    assert_eq!(span["peer"].as_str().unwrap(), c.local_addr().to_string());
    assert!(span.get("tls").is_none(), "no TLS in this session");
}

#[test]
fn text_by_default_and_json_from_the_config() {
    let mut server = Server::start_config(&config(""));
    let log = traffic(&mut server);
    assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
    let ended = log
        .lines()
        .find(|l| l.contains("transaction ended"))
        .unwrap();
    assert!(
        ended.contains("session{id=1 peer=")
            && ended.contains("listener=\"submission\" tenant=\"acme\" user=\"anne\""),
        "{ended}"
    );
    assert!(
        ended.contains("queue_id=\"") && ended.contains("outcome=\"accepted\" code=250"),
        "{ended}"
    );

    let mut server = Server::start_config(&config("log_format = \"json\""));
    let mut c = Client::after_ehlo(server.addr());
    c.expect("QUIT", 221);
    let log = server.wait_for_stderr("listening on");
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{log}"
    );
}
