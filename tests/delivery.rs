//! Messages end to end: what the client sends is what the plugin reads,
//! byte for byte, through pipelining, dot-stuffing and a 20 MB message; and
//! what the reference plugins make of it (Debugging's print-out, Mailbox's
//! Maildir read back by Python's `mailbox` module).

#[path = "harness/mod.rs"]
mod harness;

use harness::{Client, HOSTNAME, Server, plugin_path, run_client_script};

fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Dot-stuff `content` (which must end in CRLF) for the wire, as RFC 5321
/// §4.5.2 says a client does, and add the end-of-data line.
fn stuffed(content: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(content.len() + content.len() / 64 + 8);
    let mut at_line_start = true;
    for (i, &b) in content.iter().enumerate() {
        if at_line_start && b == b'.' {
            wire.push(b'.');
        }
        wire.push(b);
        at_line_start = b == b'\n' && i > 0 && content[i - 1] == b'\r';
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fn every_hook() -> Server {
    let plugin = plugin_path("every_hook.wasm");
    Server::start(&["--hostname", HOSTNAME, "-c", plugin.to_str().unwrap()])
}

/// Sends `content` in one transaction and returns every-hook's DATA reply.
fn deliver(c: &mut Client, content: &[u8]) -> String {
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(&stuffed(content));
    c.expect_reply(250).text()
}

#[test]
fn content_reaches_the_plugin_byte_for_byte() {
    let server = every_hook();
    let mut c = Client::after_ehlo(server.addr());
    // Leading dots, a lone dot, bare LF and bare CR inside lines, 8-bit
    // bytes, and a line of exactly 1001 octets: all content, all kept.
    let mut content = b"Subject: bytes\r\n\r\n.leading dot\r\n.\r\n..two\r\nbare\nLF and bare\rCR\r\n\xff\xfe 8-bit\r\n".to_vec();
    content.extend_from_slice(&[b'x'; 999]);
    content.extend_from_slice(b"\r\n");
    let reply = deliver(&mut c, &content);
    assert!(
        reply.contains(&format!(
            "data {} bytes fnv1a={}",
            content.len(),
            fnv1a(&content)
        )),
        "{reply}"
    );
}

#[test]
fn a_bare_lf_dot_does_not_end_the_message() {
    // SMTP smuggling: a message that "ends" with LF . LF (or LF . CRLF),
    // followed by a second transaction hidden in the first's content. The
    // server must read it all as one message and run none of it.
    let server = every_hook();
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    let smuggled: &[u8] = b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: two\r\n\r\nsecond\r\n.\r\n";
    c.send_raw(smuggled);
    let reply = c.expect_reply(250).text();
    let content = &smuggled[..smuggled.len() - 3];
    assert!(
        reply.contains(&format!(
            "data {} bytes fnv1a={} from=anne@example.com to=bart@example.com",
            content.len(),
            fnv1a(content)
        )),
        "{reply}"
    );
    // Exactly one reply: nothing was read as a command.
    c.expect("NOOP", 250);
}

#[test]
fn a_pipelined_transaction_gets_its_replies_in_order() {
    let server = every_hook();
    let mut c = Client::after_ehlo(server.addr());
    c.send_raw(b"MAIL FROM:<anne@example.com>\r\nRCPT TO:<bart@example.com>\r\nRCPT TO:<reject@example.com>\r\nRCPT TO:<cate@example.com>\r\nDATA\r\n");
    c.expect_reply(250);
    c.expect_reply(250);
    c.expect_reply(550);
    c.expect_reply(250);
    c.expect_reply(354);
    c.send_raw(b"Subject: p\r\n\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    assert!(
        c.expect_reply(250)
            .text()
            .contains("to=bart@example.com,cate@example.com")
    );
    c.expect_reply(250);
    c.expect_reply(250);
    c.expect_reply(221);
    c.expect_closed();
}

#[test]
fn a_20_mb_message() {
    let server = every_hook();
    let mut c = Client::after_ehlo(server.addr());
    let mut content = b"Subject: big\r\n\r\n".to_vec();
    let mut n = 0u64;
    while content.len() < 20_000_000 {
        content.extend_from_slice(
            format!(
                "{n:08} .......................................................................\r\n"
            )
            .as_bytes(),
        );
        n += 1;
    }
    let reply = deliver(&mut c, &content);
    assert!(
        reply.contains(&format!(
            "data {} bytes fnv1a={}",
            content.len(),
            fnv1a(&content)
        )),
        "{reply}"
    );
}

#[test]
fn the_size_limit_refuses_with_552_and_the_session_goes_on() {
    let plugin = plugin_path("every_hook.wasm");
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-s",
        "1000",
        "-c",
        plugin.to_str().unwrap(),
    ]);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com> SIZE=1001", 552);
    c.expect("MAIL FROM:<anne@example.com> SIZE=999", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(&stuffed(&[b"y".repeat(998), b"\r\n".to_vec()].concat()[..]));
    c.send_raw(b"");
    // 998 + CRLF = 1000 bytes: at the limit is fine.
    c.expect_reply(250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(&stuffed(&[b"y".repeat(999), b"\r\n".to_vec()].concat()[..]));
    assert_eq!(c.expect_reply(552).text(), "Error: Too much mail data");
    // The refused transaction is gone; the session is not.
    c.expect("RCPT TO:<bart@example.com>", 503);
    c.expect("NOOP", 250);
}

#[test]
fn debugging_prints_each_message_as_aiosmtpd_does() {
    let mut server = Server::start(&["--hostname", HOSTNAME, "-c", "debugging"]);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com> SIZE=30", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: dbg\r\nFrom: anne\r\n\r\nHello\r\n..dot\r\n.\r\n");
    c.expect_reply(250);
    let out = server.wait_for_stdout("------------ END MESSAGE ------------");
    let peer = c.local_addr();
    let expected = format!(
        "---------- MESSAGE FOLLOWS ----------\nmail options: ['SIZE=30']\n\nSubject: dbg\nFrom: anne\nX-Peer: ('{}', {})\n\nHello\n.dot\n------------ END MESSAGE ------------\n",
        peer.ip(),
        peer.port()
    );
    assert_eq!(out, expected);
}

#[test]
fn debugging_can_print_to_stderr() {
    let mut server = Server::start(&["--hostname", HOSTNAME, "-c", "debugging", "stderr"]);
    let mut c = Client::after_ehlo(server.addr());
    c.send_message(
        "anne@example.com",
        &["bart@example.com"],
        "Subject: err\r\n\r\nto stderr\r\n",
    );
    server.wait_for_stderr("------------ END MESSAGE ------------");
    assert!(server.stderr().contains("to stderr"));
    assert!(!server.stdout().contains("MESSAGE FOLLOWS"));
}

#[test]
fn the_seed_mailbox_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "mailbox",
        maildir.to_str().unwrap(),
    ]);
    let addr = server.addr();
    let out = run_client_script(
        "mailbox_walkthrough.py",
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            maildir.to_str().unwrap(),
        ],
    );
    // The script checks the three X- headers; here, that all three
    // messages came back in Message-ID order.
    let ids: Vec<&str> = out.lines().filter(|l| l.starts_with('<')).collect();
    assert_eq!(
        ids,
        [
            "<ant@example.com> Anne Person <anne@example.com> Bart Person <bart@example.com>",
            "<bee@example.com> Cate Person <cate@example.com> Dave Person <dave@example.com>",
            "<cat@example.com> Elle Person <elle@example.com> Fred Person <fred@example.com>",
        ],
        "{out}"
    );
    // Standard Maildir layout: delivered into new/, nothing left in tmp/.
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 3);
    assert_eq!(std::fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
}

#[test]
fn the_builtin_proxy_relays_from_the_command_line() {
    // `-c proxy HOST PORT`, as aiosmtpd's Proxy handler takes them; the host
    // name is resolved by the server, and the plugin is granted that address only.
    let mut relay = Server::start(&["--hostname", "relay.wasmtp.test", "-c", "debugging"]);
    let port = relay.addr().port().to_string();
    let server = Server::start(&["--hostname", HOSTNAME, "-c", "proxy", "localhost", &port]);
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message(
        "anne@example.com",
        &["bart@example.com"],
        "Subject: via proxy\r\n\r\nrelayed\r\n",
    );
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let printed = relay.wait_for_stdout("END MESSAGE");
    assert!(
        printed.contains("Subject: via proxy\nX-Peer: 127.0.0.1\n"),
        "{printed}"
    );
}

#[test]
fn mailbox_adds_a_received_header_with_the_queue_id() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let mut server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "mailbox",
        maildir.to_str().unwrap(),
    ]);
    let mut c = Client::greeted(server.addr());
    c.expect("EHLO client.example", 250);
    c.send_message(
        "anne@example.com",
        &["bart@example.com"],
        "Subject: traced\r\n\r\nhello\r\n",
    );
    let log = server.wait_for_stderr("transaction ended");
    let queue_id = log
        .split("queue_id=")
        .nth(1)
        .and_then(|rest| rest.split([' ', '"']).find(|s| !s.is_empty()))
        .expect("a queue id in the log");
    let file = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let stored = std::fs::read_to_string(file).unwrap();
    let first = stored.lines().next().unwrap();
    assert!(
        first.starts_with("Received: from client.example (127.0.0.1)"),
        "{stored}"
    );
    assert!(
        stored.contains(&format!(
            "\tby {HOSTNAME} (wasmtp) with ESMTP id {queue_id};\n\t"
        )),
        "{stored}"
    );
}

/// Python's `mailbox` reads `maildir` back: each message's Message-ID and
/// the FNV-1a hash and length of its body, one per line, sorted.
fn maildir_bodies(maildir: &std::path::Path) -> String {
    let script = r#"
import mailbox, sys
def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return "%016x" % h
lines = []
for msg in mailbox.Maildir(sys.argv[1], factory=None, create=False):
    body = msg.get_payload().encode()
    lines.append("%s %d %s" % (msg["Message-ID"], len(body), fnv1a(body)))
print("\n".join(sorted(lines)))
"#;
    let out = std::process::Command::new(harness::python())
        .args(["-c", script, maildir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_message_past_the_spool_threshold_reaches_mailbox_whole() {
    // Messages larger than `spool_threshold` wait in an unlinked file in
    // `spool_dir` while Mailbox reads them in pieces. What Mailbox stores is
    // what was sent, by DATA and by BDAT, and the spool keeps nothing after.
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let server = Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        spool_dir = {spool:?}
        spool_threshold = 4096

        [[listener]]
        address = "127.0.0.1:0"
        plugin = "inbox"

        [plugin.inbox]
        component = "mailbox"
        args = [{maildir:?}]
        "#
    ));
    let mut body = String::new();
    for n in 0..6000 {
        body.push_str(&format!(".{n:06} a line that begins with a dot\r\n"));
    }
    let message =
        |id: &str| format!("Subject: spooled\r\nMessage-ID: <{id}@example.com>\r\n\r\n{body}");

    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(&stuffed(message("by-data").as_bytes()));
    c.expect_reply(250);

    let chunked = message("by-bdat");
    let (first, last) = chunked.as_bytes().split_at(chunked.len() / 3);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.send_raw(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send_raw(first);
    c.expect_reply(250);
    c.send_raw(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    c.send_raw(last);
    c.expect_reply(250);
    c.expect("QUIT", 221);

    // Maildir lines end in LF, as Python's mailbox writes them.
    let stored = body.replace("\r\n", "\n");
    let (len, hash) = (stored.len(), fnv1a(stored.as_bytes()));
    assert_eq!(
        maildir_bodies(&maildir),
        format!("<by-bdat@example.com> {len} {hash}\n<by-data@example.com> {len} {hash}\n")
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}

#[test]
fn a_spool_dir_that_cannot_be_written_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmtp.toml");
    std::fs::write(
        &config,
        "[server]\nspool_dir = \"no/such/dir\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"sink\"\n",
    )
    .unwrap();
    let out = harness::run_wasmtp(
        &["--config", config.to_str().unwrap()],
        std::time::Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: server.spool_dir: can't create a spool file in {}",
            config.display(),
            dir.path().join("no/such/dir").display()
        )),
        "{stderr}"
    );
}
