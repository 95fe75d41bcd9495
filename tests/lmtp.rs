//! LMTP (RFC 2033) listeners through the real server: LHLO instead of
//! HELO/EHLO, and after DATA one reply per accepted recipient — each decided
//! by the plugin's `lmtp-data` hook, or the `data` hook's one reply repeated
//! — over TCP and over a Unix socket, with Python's smtplib.LMTP.

#[path = "harness/mod.rs"]
mod harness;
#[path = "protocol/mod.rs"]
mod protocol;

use harness::{Client, HOSTNAME, Server, plugin_path, run_client_script};
use protocol::gatekeeper;

fn lmtp_server(plugin: &str, extra_listener: &str) -> Server {
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        [[listener]]
        name = "lmtp"
        address = "127.0.0.1:0"
        protocol = "lmtp"
        plugin = "p"
        {extra_listener}
        [plugin.p]
        component = {plugin:?}
        "#
    ))
}

/// The `LMTP\trcpt\tcode\ttext` lines of protocol_client.py, in order.
fn lmtp_replies(out: &str) -> Vec<(String, u16, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("LMTP\t"))
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (
                f.next().unwrap().to_string(),
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn lhlo_replaces_helo_and_ehlo() {
    let server = lmtp_server(&gatekeeper(), "");
    let mut c = Client::greeted(server.addr());
    assert_eq!(
        c.expect("HELO client.example", 500).text(),
        "Error: command \"HELO\" not recognized"
    );
    assert_eq!(
        c.expect("EHLO client.example", 500).text(),
        "Error: command \"EHLO\" not recognized"
    );
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 503).text(),
        "Error: send LHLO first"
    );
    assert_eq!(c.expect("LHLO", 501).text(), "Syntax: LHLO hostname");
    let lhlo = c.expect("LHLO client.example", 250);
    assert_eq!(lhlo.lines[0], HOSTNAME);
    assert!(c.expect("NOOP whoami", 250).text().ends_with("lmtp=true"));
    assert_eq!(
        c.expect("HELP", 250).text(),
        "Supported commands: AUTH DATA HELP LHLO MAIL NOOP QUIT RCPT RSET VRFY"
    );
    // On an SMTP listener LHLO is an unknown command.
    let smtp = Server::start(&["--hostname", HOSTNAME, "-c", "sink"]);
    let mut c = Client::greeted(smtp.addr());
    c.expect("LHLO client.example", 500);
}

#[test]
fn smtplib_lmtp_gets_one_reply_per_recipient() {
    let server = lmtp_server(&gatekeeper(), "");
    let port = server.addr().port().to_string();
    let out = run_client_script(
        "protocol_client.py",
        &[
            "lmtp",
            "127.0.0.1",
            &port,
            "bart@example.com",
            "full@example.com",
            "cate@example.com",
        ],
    );
    assert_eq!(
        lmtp_replies(&out),
        vec![
            (
                "bart@example.com".into(),
                250,
                "2.0.0 <bart@example.com> delivered (84 bytes)".into()
            ),
            (
                "full@example.com".into(),
                452,
                "4.2.2 <full@example.com> mailbox full".into()
            ),
            (
                "cate@example.com".into(),
                250,
                "2.0.0 <cate@example.com> delivered (84 bytes)".into()
            ),
        ],
        "{out}"
    );
    assert!(
        out.contains("QUIT\t221\tBye"),
        "the dialog goes on after the replies:\n{out}"
    );
}

#[test]
fn without_lmtp_data_the_data_reply_is_repeated() {
    // sink: no hook at all, the default for each recipient.
    let server = lmtp_server("sink", "");
    let port = server.addr().port().to_string();
    let out = run_client_script(
        "protocol_client.py",
        &[
            "lmtp",
            "127.0.0.1",
            &port,
            "bart@example.com",
            "cate@example.com",
        ],
    );
    assert_eq!(
        lmtp_replies(&out),
        vec![
            ("bart@example.com".into(), 250, "OK".into()),
            ("cate@example.com".into(), 250, "OK".into())
        ]
    );
    // trap: its data hook fails, and every recipient hears of it.
    let trap = plugin_path("trap.wasm");
    let server = lmtp_server(trap.to_str().unwrap(), "");
    let mut c = Client::greeted(server.addr());
    c.expect("LHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("RCPT TO:<cate@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n");
    c.expect_reply(451);
    c.expect_reply(451);
    c.expect("NOOP", 250);
}

#[test]
fn refused_recipients_get_no_data_reply() {
    let server = lmtp_server(&gatekeeper(), "");
    let mut c = Client::greeted(server.addr());
    c.expect("LHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("RCPT TO:<bad address@example.com>", 553);
    c.expect("RCPT TO:<full@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n");
    assert!(c.expect_reply(250).text().contains("<bart@example.com>"));
    assert!(c.expect_reply(452).text().contains("<full@example.com>"));
    // Exactly two: the next reply is the NOOP's.
    assert_eq!(c.expect("NOOP", 250).text(), "OK");
}

#[test]
fn lmtp_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lmtp.sock");
    // The TCP listener first: the harness waits for its `listening on`.
    let server = Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        [[listener]]
        address = "127.0.0.1:0"
        plugin = "sink"
        [[listener]]
        name = "local"
        address = "unix:{path}"
        protocol = "lmtp"
        plugin = "p"
        [plugin.p]
        component = {plugin:?}
        "#,
        path = socket.display(),
        plugin = gatekeeper(),
    ));
    let unix = format!("unix:{}", socket.display());
    let out = run_client_script(
        "protocol_client.py",
        &["lmtp", "-", &unix, "bart@example.com", "full@example.com"],
    );
    let replies = lmtp_replies(&out);
    assert_eq!(
        replies.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![250, 452],
        "{out}"
    );
    assert!(
        server
            .stderr()
            .contains(&format!("listening on unix:{}", socket.display())),
        "{}",
        server.stderr()
    );
}
