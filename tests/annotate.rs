//! Plugins that annotate: the granted imports (`notes`, ...) through the
//! real server. The `annotator` test plugin does what its arguments say
//! (`tests/plugins/annotator`), so each test is a chain of annotators, and
//! the client, the log or the Maildir shows what the host made of it.
//! Also: a plugin importing an interface it was not granted is refused at
//! load and by `wasmtp check`, naming the grant.

#[path = "harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::{Client, Server, plugin_path, run_wasmtp};

/// A `[plugin.NAME]` section for an annotator with `args` and `grants`
/// (TOML inline-table keys: `notes = true`).
fn annotator(name: &str, args: &[&str], grants: &str) -> String {
    format!(
        "[plugin.{name}]\ncomponent = {:?}\nargs = {args:?}\ngrants = {{ {grants} }}\n\n",
        plugin_path("annotator.wasm")
    )
}

/// A server whose one listener runs `chain` (plugin names), with `plugins`
/// (the sections) and `extra` TOML.
fn server(chain: &[&str], plugins: &str) -> Server {
    Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = {chain:?}\n\n{plugins}"
    ))
}

#[test]
fn notes_written_by_one_plugin_are_read_by_the_next() {
    let plugins = annotator(
        "writer",
        &[
            "mail:note-set:sender-checked=yes",
            "data:note-set:score=7.5",
        ],
        "notes = true, headers = true",
    ) + &annotator(
        "reader",
        &["rcpt:reply-notes", "data:reply-notes"],
        "notes = true, headers = true",
    );
    let server = server(&["writer", "reader"], &plugins);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    // Written in MAIL by one plugin, read in RCPT by the other.
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "notes: sender-checked=yes"
    );
    c.expect("DATA", 354);
    c.send_raw(b"Subject: notes\r\n\r\nhello\r\n.\r\n");
    // Written in DATA by the first plugin of the chain, read by the second.
    assert_eq!(
        c.expect_reply(250).text(),
        "notes: sender-checked=yes, score=7.5"
    );
    // The transaction ended: the next one starts with no notes.
    c.expect("MAIL FROM:<anne@example.com>", 250);
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "notes: sender-checked=yes"
    );
}

#[test]
fn notes_are_cleared_by_rset_and_a_new_ehlo() {
    let plugins = annotator(
        "writer",
        &["rcpt:note-set:rcpt-seen=yes"],
        "notes = true, headers = true",
    ) + &annotator(
        "reader",
        &["mail:reply-notes", "rcpt:reply-notes", "rset:reply-notes"],
        "notes = true, headers = true",
    );
    let server = server(&["writer", "reader"], &plugins);
    let mut c = Client::after_ehlo(server.addr());
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 250).text(),
        "notes: (none)"
    );
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "notes: rcpt-seen=yes"
    );
    assert_eq!(c.expect("RSET", 250).text(), "notes: (none)");
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 250).text(),
        "notes: (none)"
    );
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("EHLO again.example", 250);
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 250).text(),
        "notes: (none)"
    );
}

#[test]
fn notes_past_their_bounds_are_error_values_and_store_nothing() {
    let plugins = annotator(
        "writer",
        &[
            "rcpt:note-fill:too-long=16385",
            "rcpt:note-set:bad key=x",
            "rcpt:note-fill:a=16384",
            "rcpt:note-fill:b=16384",
            "rcpt:note-fill:c=16384",
            "rcpt:note-fill:d=16384",
            "rcpt:note-set:small=1",
        ],
        "notes = true, headers = true",
    ) + &annotator(
        "reader",
        &["rcpt:reply-notes"],
        "notes = true, headers = true",
    );
    let mut server = server(&["writer", "reader"], &plugins);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    // The hook went on after each refusal; nothing refused was stored.
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "notes: a=<16384 bytes>, b=<16384 bytes>, c=<16384 bytes>, small=1"
    );
    let log = server.wait_for_stderr("rcpt:note-set:small=1: ok");
    for expected in [
        "rcpt:note-fill:too-long=16385: error: Error::Invalid(\"the value is 16385 bytes; at most 16384\")",
        "rcpt:note-set:bad key=x: error: Error::Invalid(\"a key is printable ASCII without spaces\")",
        "rcpt:note-fill:d=16384: error: Error::Budget(",
    ] {
        assert!(log.contains(expected), "no `{expected}` in\n{log}");
    }
}

#[test]
fn a_plugin_importing_an_ungranted_interface_is_refused_naming_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"policy\"]\n\n{}",
            annotator("policy", &["rcpt:reply-notes"], "headers = true")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let expected = format!(
        "plugin `policy`: {} imports wasmtp:smtp/notes@0.1.0, which needs `grants.notes` in [plugin.policy.grants]",
        plugin_path("annotator.wasm").display()
    );

    // The server refuses to start.
    let out = run_wasmtp(&["--config", config], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");

    // `wasmtp check` says the same, at the grants' key.
    let out = run_wasmtp(&["check", "--config", config], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{config}: plugin.policy.grants: {expected}")),
        "{stderr}"
    );
}

/// Python's `email` reads every message of `maildir` back: for each, its
/// header fields in order (`Name: value`, unfolded) and its body, as JSON.
fn maildir_messages(maildir: &std::path::Path) -> Vec<serde_json::Value> {
    let script = r#"
import email, email.policy, json, mailbox, sys
out = []
for key, msg in sorted(mailbox.Maildir(sys.argv[1], factory=None, create=False).items()):
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.compat32)
    out.append({
        "headers": [[k, " ".join(v.split())] for k, v in parsed.items()],
        "body": parsed.get_payload(),
    })
print(json.dumps(out))
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
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// The header fields of a message `maildir_messages` read, as `Name: value`.
fn fields(message: &serde_json::Value) -> Vec<String> {
    message["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{}: {}", f[0].as_str().unwrap(), f[1].as_str().unwrap()))
        .collect()
}

#[test]
fn header_edits_reach_the_plugins_after_and_not_the_editor_itself() {
    let plugins = annotator(
        "editor",
        &[
            "rcpt:header-add:X-From-Rcpt=yes",
            "data:header-add:X-Added=1",
            "data:header-remove:X-Remove-Me",
            "data:header-rename:subject=X-Original-Subject",
        ],
        "notes = true, headers = true",
    ) + &annotator(
        "reader",
        &["data:reply-head"],
        "notes = true, headers = true",
    );
    let mut server = server(&["editor", "reader"], &plugins);
    let mut c = Client::after_ehlo(server.addr());
    let message = "Subject: hi\r\nX-Remove-Me: a\r\nX-Keep: b\r\nx-remove-me: c\r\n\tfolded\r\n\r\nbody\r\nX-Remove-Me: in the body\r\n";
    // A transaction dropped by RSET takes its edits with it.
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(format!("{message}.\r\n").as_bytes());
    let edited = "X-Added: 1\r\nX-From-Rcpt: yes\r\nX-Original-Subject: hi\r\nX-Keep: b\r\n\r\nbody\r\nX-Remove-Me: in the body\r\n";
    assert_eq!(
        c.expect_reply(250).text(),
        format!(
            "head: X-Added, X-From-Rcpt, X-Original-Subject, X-Keep ({} bytes)",
            edited.len()
        )
    );
    let log = server.wait_for_stderr("data:header-rename:subject=X-Original-Subject: ok");
    // Counted on the message as the editor's call saw it.
    assert!(
        log.contains("data:header-remove:X-Remove-Me: ok 2"),
        "{log}"
    );
    assert!(
        log.contains("data:header-rename:subject=X-Original-Subject: ok 1"),
        "{log}"
    );
}

#[test]
fn mailbox_stores_the_edited_message_and_forged_results_are_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let plugins = annotator(
        "annotator",
        &[
            "data:header-rename-claiming:Authentication-Results=mx.wasmtp.test=X-Forged-Authentication-Results",
            "data:header-add:Authentication-Results=mx.wasmtp.test;\r\n\tspf=pass smtp.mailfrom=example.com",
            "data:header-remove:X-Spam-Flag",
            "data:header-add:X-Bcc=injected\r\nBcc: victim@example.com",
            "data:header-add:Bad Name=x",
        ],
        "notes = true, headers = true",
    ) + &format!(
        "[plugin.inbox]\ncomponent = \"mailbox\"\nargs = [{:?}]\n",
        maildir.to_str().unwrap()
    );
    let mut server = server(&["annotator", "inbox"], &plugins);
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message(
        "anne@example.com",
        &["bart@example.com"],
        "Authentication-Results: MX.wasmtp.test; spf=pass (forged)\n\
         Authentication-Results: other.example; dkim=fail\n\
         X-Spam-Flag: YES\n\
         Subject: annotated\n\
         \n\
         hello\n",
    );
    assert_eq!(reply.code, 250, "{reply}");
    let log = server.wait_for_stderr("data:header-add:Bad Name=x: error");
    // (The log shows control characters as spaces.)
    assert!(
        log.contains("X-Bcc=injected  Bcc: victim@example.com: error: Error::Invalid"),
        "the refusal is logged: {log}"
    );
    let messages = maildir_messages(&maildir);
    assert_eq!(messages.len(), 1);
    let fields = fields(&messages[0]);
    let names: Vec<&str> = fields
        .iter()
        .map(|f| f.split(':').next().unwrap())
        .collect();
    // Mailbox's Received on top, then ours, then the message's own
    // (renamed, kept, removed), then Mailbox's X-Peer, X-MailFrom, X-RcptTo.
    assert_eq!(
        names,
        [
            "Received",
            "Authentication-Results",
            "X-Forged-Authentication-Results",
            "Authentication-Results",
            "Subject",
            "X-Peer",
            "X-MailFrom",
            "X-RcptTo"
        ],
        "{fields:#?}"
    );
    assert_eq!(
        fields[1],
        "Authentication-Results: mx.wasmtp.test; spf=pass smtp.mailfrom=example.com"
    );
    assert_eq!(
        fields[2],
        "X-Forged-Authentication-Results: MX.wasmtp.test; spf=pass (forged)"
    );
    assert_eq!(
        fields[3],
        "Authentication-Results: other.example; dkim=fail"
    );
    assert!(
        !fields
            .iter()
            .any(|f| f.starts_with("Bcc") || f.starts_with("X-Bcc"))
    );
    assert_eq!(messages[0]["body"], "hello\n");
}

#[test]
fn each_grant_is_named_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"policy\"]\n\n{}",
            annotator("policy", &[], "notes = true")
        ),
    )
    .unwrap();
    let out = run_wasmtp(
        &["check", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("imports wasmtp:smtp/headers@0.1.0, which needs `grants.headers` in [plugin.policy.grants]"),
        "{stderr}"
    );
}
