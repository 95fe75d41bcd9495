//! Graceful drain: on SIGTERM the server stops taking new work (new
//! connections and idle sessions get `421`), lets a message being received
//! finish and be answered within `[server] shutdown_grace`, then exits 0.
//! Under load: every message that got a `250` is in the Maildir, and every
//! other one got a `4xx` or a closed connection.

#[path = "harness/mod.rs"]
mod harness;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{Client, HOSTNAME, ReadError, Server, client_script, python};

fn mailbox_server(maildir: &Path, grace: &str) -> Server {
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        shutdown_grace = {grace}

        [[listener]]
        address = "127.0.0.1:0"
        plugin = "inbox"

        [plugin.inbox]
        component = "mailbox"
        args = [{maildir:?}]
        "#
    ))
}

/// The Message-IDs of the messages in `maildir/new`.
fn delivered(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap_or_else(|| panic!("a message without Message-ID:\n{text}"))
                .trim()
                .to_owned()
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_message_in_data_finishes_idle_and_new_sessions_get_421() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let mut server = mailbox_server(&maildir, "20");

    let mut sending = Client::after_ehlo(server.addr());
    sending.expect("MAIL FROM:<anne@example.com>", 250);
    sending.expect("RCPT TO:<bart@example.com>", 250);
    sending.expect("DATA", 354);
    sending.send_raw(
        b"Message-ID: <in-flight@example.com>\r\nSubject: half\r\n\r\nthe first half,\r\n",
    );
    let mut idle = Client::after_ehlo(server.addr());
    let mut in_transaction = Client::after_ehlo(server.addr());
    in_transaction.expect("MAIL FROM:<carl@example.com>", 250);

    server.signal("TERM");
    server.wait_for_stderr("shutting down");
    // Idle sessions, and one between commands of a transaction: 421, closed.
    assert_eq!(idle.read_reply().code, 421);
    idle.expect_closed();
    assert_eq!(in_transaction.read_reply().code, 421);
    in_transaction.expect_closed();
    // A new connection: 421 at once.
    let mut late = Client::connect(server.addr());
    assert_eq!(late.read_reply().code, 421);
    late.expect_closed();

    // The message being received is received, delivered and answered.
    std::thread::sleep(Duration::from_millis(300));
    sending.send_raw(b"and the second.\r\n.\r\n");
    sending.expect_reply(250);
    assert_eq!(sending.read_reply().code, 421, "then the session closes");
    sending.expect_closed();

    // A second SIGTERM changes nothing; wait for the exit.
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert_eq!(delivered(&maildir), ["<in-flight@example.com>"]);
}

#[test]
fn the_grace_period_ends_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let server = mailbox_server(&maildir, "1");
    let mut stalled = Client::after_ehlo(server.addr());
    stalled.expect("MAIL FROM:<anne@example.com>", 250);
    stalled.expect("RCPT TO:<bart@example.com>", 250);
    stalled.expect("DATA", 354);
    stalled.send_raw(b"Subject: never finished\r\n\r\n");

    let asked = Instant::now();
    let status = server.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "exited after {took:?}"
    );
    match stalled.try_read_reply() {
        Err(ReadError::Closed) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
    assert!(delivered(&maildir).is_empty());
}

#[test]
fn stopped_mid_load_no_acknowledged_message_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let server = mailbox_server(&maildir, "20");
    let addr = server.addr();
    let load = Command::new(python())
        .arg(client_script("drain_load.py"))
        .args([addr.ip().to_string(), addr.port().to_string()])
        .args(["--clients", "16", "--limit", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run drain_load.py");

    // Let mail flow, then stop the server in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(&maildir).len() < 100 {
        assert!(
            Instant::now() < deadline,
            "the load never got going:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let term_at = now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");

    let output = load.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "drain_load.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("drain_load.py's JSON");
    let messages = report["messages"].as_array().unwrap();
    let in_maildir: HashSet<String> = delivered(&maildir).into_iter().collect();
    let attempted: HashSet<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();

    let mut accepted = 0;
    let mut refused = 0;
    let mut finished_in_drain = 0;
    for m in messages {
        let (id, outcome) = (m["id"].as_str().unwrap(), m["outcome"].as_str().unwrap());
        if outcome == "250" {
            accepted += 1;
            assert!(
                in_maildir.contains(id),
                "{id} got 250 but is not in the Maildir"
            );
            let (start, replied) = (
                m["data_start"].as_f64().unwrap(),
                m["replied"].as_f64().unwrap(),
            );
            if start < term_at && replied > term_at {
                finished_in_drain += 1;
            }
        } else {
            refused += 1;
            assert!(
                outcome.starts_with("4xx:") || outcome == "closed",
                "{id}: {outcome}"
            );
        }
    }
    for id in &in_maildir {
        assert!(
            attempted.contains(id.as_str()),
            "{id} is in the Maildir but was never sent"
        );
    }
    eprintln!(
        "{} messages: {accepted} accepted ({finished_in_drain} of them finished after SIGTERM), {refused} refused or cut; \
         {} new connections refused during the drain; {} in the Maildir",
        messages.len(),
        report["greeting_refusals"],
        in_maildir.len()
    );
    assert!(
        finished_in_drain > 0,
        "no message was in DATA when the server was asked to stop"
    );
}
