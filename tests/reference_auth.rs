//! The reference plugins for mail authentication through the real server:
//! `mailauth` and `dnsbl` in the chain `mailauth → dnsbl → mailbox`,
//! configured in TOML (and from the command line).
//!
//! NSD, started on loopback once for this binary, serves the test zones;
//! messages are signed by dkimpy with keys made at test time; the harness
//! client sends them behind a PROXY header (the listeners trust it), so a
//! test speaks for any client address; every stored message is read back
//! from the Maildir with Python's `email` package.

#[path = "harness/dns.rs"]
mod dns;
#[path = "harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use dns::{DnsServer, SilentServer, Zone};
use harness::{Client, Server, plugin_path, run_wasmtp};

const HOSTNAME: &str = "mx.wasmtp.test";
/// Its PTR name, mail.pass.test, resolves back to it; pass.test's SPF
/// covers 192.0.2.0/24.
const GOOD_CLIENT: &str = "192.0.2.10";
/// Its PTR name resolves to another address: iprev fails.
const NO_REVERSE_CLIENT: &str = "192.0.2.11";
/// Listed in bl.test.
const LISTED_CLIENT: &str = "192.0.2.20";
/// Outside every SPF record; no PTR.
const STRANGER: &str = "198.51.100.1";
const STRICT: &[&str] = &["spf=strict", "dkim=strict", "iprev=strict", "forged=remove"];

// ---------------------------------------------------------------------------
// Fixtures

/// DKIM keys made once per run by `dkim_sign.py keygen`: (dir, rsa TXT).
fn keys() -> &'static (PathBuf, String) {
    static KEYS: OnceLock<(PathBuf, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wasmtp-refauth-keys-{}", std::process::id()));
        let out = harness::run_client_script("dkim_sign.py", &["keygen", dir.to_str().unwrap()]);
        let rsa = out
            .lines()
            .find_map(|l| l.strip_prefix("rsa "))
            .unwrap()
            .to_owned();
        (dir, rsa)
    })
}

/// A TXT record of any length, in 255-byte strings.
fn txt(value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    strings.join(" ")
}

fn zones() -> Vec<Zone> {
    vec![
        // The parent of every test domain, so that DMARC's walk up the tree
        // gets an NXDOMAIN, as from a real TLD.
        Zone::new("test", ""),
        Zone::new(
            "pass.test",
            &format!(
                "@ TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\n\
                 mail A 192.0.2.10\nnomatch A 198.51.100.7\nrsa._domainkey TXT ( {} )\n",
                txt(&keys().1)
            ),
        ),
        Zone::new(
            "quarantine.test",
            "@ TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n_dmarc TXT \"v=DMARC1; p=quarantine\"",
        ),
        // SPF fails for the test clients; DMARC asks for nothing.
        Zone::new(
            "elsewhere.test",
            "@ TXT \"v=spf1 ip4:203.0.113.0/24 -all\"\n_dmarc TXT \"v=DMARC1; p=none\"",
        ),
        Zone::new(
            "2.0.192.in-addr.arpa",
            "10 PTR mail.pass.test.\n11 PTR nomatch.pass.test.",
        ),
        Zone::new("100.51.198.in-addr.arpa", ""),
        // A block list (RFC 5782) listing 192.0.2.20, and one listing nobody.
        Zone::new(
            "bl.test",
            "20.2.0.192 A 127.0.0.2\n20.2.0.192 TXT \"listed: see https://bl.test/192.0.2.20\"",
        ),
        Zone::new("empty-bl.test", ""),
    ]
}

fn nsd() -> &'static DnsServer {
    DnsServer::shared(zones)
}

/// A message from `from`, CRLF line endings, with `extra` header fields on top.
fn message(from: &str, subject: &str, extra: &str) -> String {
    format!(
        "{extra}From: Anne <{from}>\r\nTo: bart@example.net\r\nSubject: {subject}\r\n\
         Date: Mon, 30 Nov 2026 05:00:00 +0000\r\nMessage-ID: <{subject}@wasmtp.test>\r\n\r\n\
         Hello Bart,\r\nthis is {subject}.\r\n"
    )
}

/// `message` with a DKIM-Signature of `domain` (RSA, selector `rsa`) on top,
/// made by dkimpy.
fn signed(message: &str, domain: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(harness::python())
        .arg(harness::client_script("dkim_sign.py"))
        .args([
            "sign",
            keys().0.to_str().unwrap(),
            "rsa",
            domain,
            "rsa",
            "relaxed/relaxed",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim_sign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The config the tests serve: three listeners (in the order
/// `Server::wait_for_listeners` returns them) behind PROXY headers, the
/// second with `strict`'s arguments for mailauth; one Maildir.
fn config(nameserver: std::net::SocketAddr, maildir: &Path, strict: &[&str]) -> String {
    format!(
        r#"[server]
hostname = "{HOSTNAME}"

[dns]
nameservers = ["{nameserver}"]
timeout = 1
attempts = 1

[[listener]]
name = "relaxed"
address = "127.0.0.1:0"
proxy_protocol = true
plugins = ["mailauth", "dnsbl", "inbox"]

[[listener]]
name = "strict"
address = "127.0.0.1:0"
proxy_protocol = true
plugins = ["mailauth-strict", "dnsbl", "inbox"]

[[listener]]
name = "tag"
address = "127.0.0.1:0"
proxy_protocol = true
plugins = ["mailauth", "dnsbl-tag", "reader", "inbox"]

[plugin.mailauth]
component = "mailauth"

[plugin.mailauth-strict]
component = "mailauth"
args = {strict:?}

[plugin.dnsbl]
component = "dnsbl"
args = ["empty-bl.test", "bl.test"]

[plugin.dnsbl-tag]
component = "dnsbl"
args = ["bl.test", "mode=tag"]

# Answers RCPT with the transaction's notes, as a scoring plugin reads them.
[plugin.reader]
component = {reader:?}
args = ["rcpt:reply-notes"]
grants = {{ notes = true, headers = true, envelope = true }}

[plugin.inbox]
component = "mailbox"
args = [{maildir:?}]
"#,
        reader = plugin_path("annotator.wasm"),
    )
}

struct Mx {
    _server: Server,
    relaxed: std::net::SocketAddr,
    strict: std::net::SocketAddr,
    tag: std::net::SocketAddr,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

fn mx() -> Mx {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let mut server = Server::start_config(&config(nsd().addr(), &maildir, STRICT));
    let addrs = server.wait_for_listeners(3);
    Mx {
        _server: server,
        relaxed: addrs[0],
        strict: addrs[1],
        tag: addrs[2],
        maildir,
        _dir: dir,
    }
}

/// A session whose PROXY header says it comes from `client`, after EHLO `helo`.
fn client_as(addr: std::net::SocketAddr, client: &str, helo: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send_raw(format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n").as_bytes());
    c.expect_reply(220);
    c.expect(&format!("EHLO {helo}"), 250);
    c
}

/// DATA with `message` (which must need no dot-stuffing); the reply.
fn data(c: &mut Client, message: &str) -> harness::Reply {
    c.expect("DATA", 354);
    c.send_raw(format!("{message}.\r\n").as_bytes());
    c.read_reply()
}

/// Every message in `maildir`: its header fields, as Python's `email`
/// reads them.
fn stored(maildir: &Path) -> Vec<Vec<String>> {
    harness::maildir_messages(maildir)
        .into_iter()
        .map(|m| m.fields)
        .collect()
}

/// The fields named `name` of a stored message.
fn named<'a>(fields: &'a [String], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter_map(|f| {
            f.split_once(": ")
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v)
        .collect()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no `{part}` in `{text}`");
    }
}

// ---------------------------------------------------------------------------
// mailauth

#[test]
fn an_authenticated_message_is_stored_with_one_authentication_results_of_ours() {
    let mx = mx();
    let mut c = client_as(mx.relaxed, GOOD_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    // Forgeries: results claiming to be ours, a quarantine mark; and a
    // field of another server's, which stays.
    let forged = "Authentication-Results: MX.wasmtp.test; dkim=pass (forged)\r\n\
                  Authentication-Results: other.example; spf=fail\r\n\
                  X-Wasmtp-Quarantine: dmarc\r\n";
    let reply = data(
        &mut c,
        &signed(
            &message("anne@pass.test", "authenticated", forged),
            "pass.test",
        ),
    );
    assert_eq!(reply.code, 250, "{reply}");

    let messages = stored(&mx.maildir);
    assert_eq!(messages.len(), 1);
    let fields = &messages[0];
    let ours: Vec<&str> = named(fields, "Authentication-Results")
        .into_iter()
        .filter(|v| v.starts_with("mx.wasmtp.test;"))
        .collect();
    assert_eq!(ours.len(), 1, "{fields:#?}");
    assert_contains(
        ours[0],
        &[
            "iprev=pass policy.iprev=192.0.2.10",
            "spf=pass",
            "smtp.mailfrom=anne@pass.test",
            "dkim=pass header.i=@pass.test header.s=rsa",
            "dmarc=pass",
            "header.from=pass.test",
        ],
    );
    assert_eq!(
        named(fields, "Authentication-Results"),
        [ours[0], "other.example; spf=fail"]
    );
    assert_eq!(
        named(fields, "X-Original-Authentication-Results"),
        ["MX.wasmtp.test; dkim=pass (forged)"]
    );
    assert!(
        named(fields, "X-Wasmtp-Quarantine").is_empty(),
        "{fields:#?}"
    );
    assert!(named(fields, "X-DNSBL").is_empty(), "{fields:#?}");
    // The stored file, as the README shows it.
    let new = mx.maildir.join("new");
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    println!("{}", std::fs::read_to_string(file).unwrap());
}

#[test]
fn a_dmarc_reject_policy_is_refused_and_nothing_is_stored() {
    let mx = mx();
    let mut c = client_as(mx.relaxed, STRANGER, "forger.example");
    // SPF fails (pass.test allows 192.0.2.0/24 only), relaxed: not refused here.
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    let reply = data(&mut c, &message("anne@pass.test", "forged", ""));
    assert_eq!(reply.code, 550, "{reply}");
    assert_eq!(
        reply.text(),
        "5.7.1 Rejected by the DMARC policy of pass.test"
    );
    assert!(stored(&mx.maildir).is_empty());
}

#[test]
fn a_dmarc_quarantine_policy_marks_the_message() {
    let mx = mx();
    let mut c = client_as(mx.relaxed, STRANGER, "forger.example");
    c.expect("MAIL FROM:<anne@quarantine.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    let reply = data(&mut c, &message("anne@quarantine.test", "suspicious", ""));
    assert_eq!(reply.code, 250, "{reply}");
    let messages = stored(&mx.maildir);
    assert_eq!(named(&messages[0], "X-Wasmtp-Quarantine"), ["dmarc"]);
    let results = named(&messages[0], "Authentication-Results");
    assert_contains(
        results[0],
        &["spf=fail", "dmarc=fail", "header.from=quarantine.test"],
    );
}

#[test]
fn strict_checks_refuse_what_fails() {
    let mx = mx();
    // SPF: the sender's domain does not allow this client.
    let mut c = client_as(mx.strict, GOOD_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@elsewhere.test>", 250);
    let reply = c.expect("RCPT TO:<bart@example.net>", 550);
    assert_eq!(
        reply.text(),
        "5.7.23 SPF validation failed: elsewhere.test does not allow 192.0.2.10 to send its mail"
    );
    // iprev: the client's name does not resolve back to it.
    let mut c = client_as(mx.strict, NO_REVERSE_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    let reply = c.expect("RCPT TO:<bart@example.net>", 550);
    assert_eq!(
        reply.text(),
        "5.7.25 Reverse DNS validation failed: 192.0.2.11 has no name that resolves back to it"
    );
    // DKIM: a signature that no longer verifies (the body was changed),
    // though DMARC passes on SPF.
    let mut c = client_as(mx.strict, GOOD_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    let tampered =
        signed(&message("anne@pass.test", "tampered", ""), "pass.test").replace("Hello", "Pay");
    let reply = data(&mut c, &tampered);
    assert_eq!(reply.code, 550, "{reply}");
    assert_eq!(
        reply.text(),
        "5.7.20 DKIM validation failed: no signature of the message verifies"
    );
    assert!(stored(&mx.maildir).is_empty());
    // What passes is stored, a forged result removed (`forged=remove`).
    let forged = "Authentication-Results: mx.wasmtp.test; dkim=pass\r\n";
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    let reply = data(
        &mut c,
        &signed(&message("anne@pass.test", "strict", forged), "pass.test"),
    );
    assert_eq!(reply.code, 250, "{reply}");
    let messages = stored(&mx.maildir);
    let results = named(&messages[0], "Authentication-Results");
    assert_eq!(results.len(), 1, "{messages:#?}");
    assert_contains(
        results[0],
        &["iprev=pass", "spf=pass", "dkim=pass", "dmarc=pass"],
    );
    assert!(named(&messages[0], "X-Original-Authentication-Results").is_empty());
}

/// A nameserver that never answers: `tempfail=accept` lets the mail through
/// with `temperror` results, `defer` answers `451 4.7.5`; a block list that
/// times out lists nobody.
#[test]
fn dns_failures_are_accepted_or_deferred_as_tempfail_says() {
    let silent = SilentServer::start();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let mut server = Server::start_config(&config(silent.addr(), &maildir, &["tempfail=defer"]));
    let addrs = server.wait_for_listeners(3);

    let mut c = client_as(addrs[1], GOOD_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    let reply = c.expect("RCPT TO:<bart@example.net>", 451);
    assert_eq!(
        reply.text(),
        "4.7.5 Temporary DNS failure checking iprev; try again later"
    );

    let mut c = client_as(addrs[0], LISTED_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    let reply = data(&mut c, &message("anne@pass.test", "unchecked", ""));
    assert_eq!(reply.code, 250, "{reply}");
    let messages = stored(&maildir);
    let results = named(&messages[0], "Authentication-Results");
    assert_contains(
        results[0],
        &["iprev=temperror", "spf=temperror", "dmarc=temperror"],
    );
    let log =
        server.wait_for_stderr("bl.test: timeout asking about 192.0.2.20; counted as not listed");
    assert!(
        log.contains("iprev: temperror; accepted (tempfail=accept)"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// dnsbl

#[test]
fn a_listed_client_is_refused_with_the_lists_reason() {
    let mx = mx();
    let mut c = client_as(mx.relaxed, LISTED_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    let reply = c.expect("RCPT TO:<bart@example.net>", 554);
    assert_eq!(
        reply.text(),
        "5.7.1 Service unavailable; client [192.0.2.20] blocked using bl.test: listed: see https://bl.test/192.0.2.20"
    );
    // Every recipient, every transaction of the session.
    c.expect("RCPT TO:<carl@example.net>", 554);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 554);
    // Not listed: through.
    let mut c = client_as(mx.relaxed, GOOD_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
}

#[test]
fn tag_mode_adds_a_header_and_notes_for_the_plugins_after() {
    let mx = mx();
    let mut c = client_as(mx.tag, LISTED_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    // The reader after mailauth and dnsbl sees their notes.
    let reply = c.expect("RCPT TO:<bart@example.net>", 250);
    assert_eq!(
        reply.text(),
        "notes: dnsbl.bl.test=127.0.0.2, mailauth.iprev=permerror, mailauth.spf=pass"
    );
    let reply = data(
        &mut c,
        &message(
            "anne@pass.test",
            "tagged",
            "X-DNSBL: zone=forged.example; code=127.0.0.1\r\n",
        ),
    );
    assert_eq!(reply.code, 250, "{reply}");
    // Not listed: no header.
    let mut c = client_as(mx.tag, GOOD_CLIENT, "mail.pass.test");
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    c.expect("RCPT TO:<bart@example.net>", 250);
    let reply = data(
        &mut c,
        &message(
            "anne@pass.test",
            "clean",
            "X-DNSBL: zone=forged.example; code=127.0.0.1\r\n",
        ),
    );
    assert_eq!(reply.code, 250, "{reply}");

    let messages = stored(&mx.maildir);
    let by_subject = |subject: &str| {
        messages
            .iter()
            .find(|m| m.contains(&format!("Subject: {subject}")))
            .unwrap_or_else(|| panic!("no message `{subject}` in {messages:#?}"))
    };
    assert_eq!(
        named(by_subject("tagged"), "X-DNSBL"),
        ["zone=bl.test; code=127.0.0.2"]
    );
    assert!(named(by_subject("clean"), "X-DNSBL").is_empty());
}

// ---------------------------------------------------------------------------
// The command line

#[test]
fn the_command_line_takes_the_same_arguments_and_names_a_bad_one() {
    // Each loads with the grants it needs (its imports are refused without
    // them) and its arguments, and serves.
    for args in [
        &[
            "-c",
            "mailauth",
            "spf=strict",
            "dkim=strict",
            "dmarc=relaxed",
            "iprev=off",
            "tempfail=defer",
            "forged=remove",
        ][..],
        &["-c", "dnsbl", "bl.test", "zen.example", "mode=tag"][..],
    ] {
        let server = Server::start(args);
        let mut c = Client::after_ehlo(server.addr());
        c.expect("NOOP", 250);
        c.expect("QUIT", 221);
    }
    for (args, message) in [
        (
            &["mailauth", "spf=loose"][..],
            "plugin `mailauth`: spf=loose: spf is one of relaxed, strict, off",
        ),
        (
            &["mailauth", "dkim=strict", "colour=red"][..],
            "plugin `mailauth`: unknown argument `colour=red` (known: spf=, dkim=, dmarc=, iprev=, tempfail=, forged=)",
        ),
        (
            &["mailauth", "tempfail=retry"][..],
            "plugin `mailauth`: tempfail=retry: tempfail is one of accept, defer",
        ),
        (
            &["dnsbl"][..],
            "plugin `dnsbl`: missing argument: a block list zone (zen.example)",
        ),
        (
            &["dnsbl", "mode=block", "zen.example"][..],
            "plugin `dnsbl`: mode=block: mode is one of reject, tag",
        ),
        (
            &["dnsbl", "zen.example", "zen example"][..],
            "plugin `dnsbl`: `zen example` is not a DNS zone (zen.example) nor mode=reject|tag",
        ),
    ] {
        let mut all = vec!["-l", "127.0.0.1:0", "-c"];
        all.extend_from_slice(args);
        let out = run_wasmtp(&all, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("wasmtp: error: {message}")),
            "{args:?}: {stderr}"
        );
    }
}
