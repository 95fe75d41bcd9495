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

/// Every grant the annotator's imports need.
const GRANTS: &str = "notes = true, headers = true, envelope = true";

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
        GRANTS,
    ) + &annotator("reader", &["rcpt:reply-notes", "data:reply-notes"], GRANTS);
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
    let plugins = annotator("writer", &["rcpt:note-set:rcpt-seen=yes"], GRANTS)
        + &annotator(
            "reader",
            &["mail:reply-notes", "rcpt:reply-notes", "rset:reply-notes"],
            GRANTS,
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
        GRANTS,
    ) + &annotator("reader", &["rcpt:reply-notes"], GRANTS);
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
            annotator(
                "policy",
                &["rcpt:reply-notes"],
                "headers = true, envelope = true"
            )
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
        GRANTS,
    ) + &annotator("reader", &["data:reply-head"], GRANTS);
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
        GRANTS,
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
    let messages = harness::maildir_messages(&maildir);
    assert_eq!(messages.len(), 1);
    let fields = &messages[0].fields;
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
    assert_eq!(messages[0].body, "hello\n");
}

#[test]
fn each_grant_is_named_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmtp.toml");
    for (given, missing) in [
        ("headers = true, envelope = true", "notes"),
        ("notes = true, envelope = true", "headers"),
        ("notes = true, headers = true", "envelope"),
    ] {
        std::fs::write(
            &config,
            format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"policy\"]\n\n{}",
                annotator("policy", &[], given)
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
            stderr.contains(&format!(
                "imports wasmtp:smtp/{missing}@0.1.0, which needs `grants.{missing}` in [plugin.policy.grants]"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn envelope_edits_reach_delivery_and_an_added_archive_recipient_gets_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (inbox, archive) = (dir.path().join("inbox"), dir.path().join("archive"));
    let plugins = annotator(
        "editor",
        &[
            "mail:sender:<bounces@example.org>",
            "rcpt:add-rcpt:copy@archive.example",
            "rcpt:add-rcpt:not an address",
            "data:del-rcpt:drop@example.com",
            "data:add-rcpt:<>",
        ],
        GRANTS,
    ) + &annotator(
        "archive-editor",
        &[
            "rcpt:add-rcpt:evil@example.com",
            "data:add-rcpt:extra@archive.example",
        ],
        GRANTS,
    ) + &format!(
        "[plugin.inbox]\ncomponent = \"mailbox\"\nargs = [{:?}]\n\n[plugin.archive-box]\ncomponent = \"mailbox\"\nargs = [{:?}]\n\n[tenant.archive]\nplugins = [\"archive-editor\", \"archive-box\"]\ndomains = [\"archive.example\"]\n",
        inbox.to_str().unwrap(),
        archive.to_str().unwrap()
    );
    let mut server = Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"editor\", \"inbox\"]\ntenants = [\"archive\"]\n\n{plugins}"
    ));
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message(
        "anne@example.com",
        &[
            "bart@example.com",
            "drop@example.com",
            "direct@archive.example",
        ],
        "Subject: envelope\n\nhello\n",
    );
    assert_eq!(reply.code, 250, "{reply}");
    let log = server.wait_for_stderr("data:add-rcpt:<>: error");
    for expected in [
        "rcpt:add-rcpt:not an address: error: Error::Invalid(",
        "data:add-rcpt:<>: error: Error::Invalid(\"`<>`: the null sender is not a recipient\")",
        // A tenant's plugin edits its own delivery only, in data.
        "rcpt:add-rcpt:evil@example.com: error: Error::Unavailable",
        "data:add-rcpt:extra@archive.example: ok",
        "data:del-rcpt:drop@example.com: ok true",
    ] {
        assert!(log.contains(expected), "no `{expected}` in\n{log}");
    }
    let header = |message: &harness::Stored, name: &str| -> String {
        message
            .named(name)
            .first()
            .map_or(String::new(), |v| (*v).to_owned())
    };
    // The listener's own recipients, less the removed one, from the new sender.
    let stored = harness::maildir_messages(&inbox);
    assert_eq!(stored.len(), 1);
    assert_eq!(header(&stored[0], "X-MailFrom"), "bounces@example.org");
    assert_eq!(header(&stored[0], "X-RcptTo"), "bart@example.com");
    // The added archive recipient was routed to its tenant, whose own
    // plugin added one more in data.
    let stored = harness::maildir_messages(&archive);
    assert_eq!(stored.len(), 1, "the archive received the message");
    assert_eq!(header(&stored[0], "X-MailFrom"), "bounces@example.org");
    assert_eq!(
        header(&stored[0], "X-RcptTo"),
        "copy@archive.example, direct@archive.example, extra@archive.example"
    );
    assert_eq!(stored[0].body, "hello\n");
}

#[test]
fn envelope_edits_respect_max_recipients() {
    let plugins = annotator(
        "editor",
        &[
            "mail:sender:changed@example.org",
            "rcpt:add-rcpt:one@example.com",
            "rcpt:add-rcpt:two@example.com",
        ],
        GRANTS,
    );
    let mut server = Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"editor\"]\nmax_recipients = 2\n\n{plugins}"
    ));
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    // bart and one@ make two: two@ is past max_recipients.
    let log = server.wait_for_stderr("rcpt:add-rcpt:two@example.com: error");
    assert!(
        log.contains("rcpt:add-rcpt:two@example.com: error: Error::Budget(\"the transaction has 2 recipients, the listener's max_recipients\")"),
        "{log}"
    );
    // The session's own bound counts the added recipient.
    assert_eq!(c.expect("RCPT TO:<cate@example.com>", 452).code, 452);
}

#[test]
fn a_python_plugin_uses_notes_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let plugins = annotator("scorer", &["data:note-set:score=7.5"], GRANTS)
        + &format!(
            "[plugin.python]\ncomponent = {:?}\ngrants = {{ notes = true, headers = true }}\n\n",
            harness::python_component("annotate", "test:python-annotate/annotate")
        )
        + &annotator("reader", &["data:reply-notes"], GRANTS)
        + &format!(
            "[plugin.inbox]\ncomponent = \"mailbox\"\nargs = [{:?}]\n",
            maildir.to_str().unwrap()
        );
    // reader answers DATA, so Mailbox (after it) is not reached: two
    // listeners, one chain ending with each.
    let server = Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"scorer\", \"python\", \"reader\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"scorer\", \"python\", \"inbox\"]\n\n{plugins}"
    ));
    let message = "Subject: from python\nX-Remove-Me: 1\nX-Remove-Me: 2\n\nhello\n";
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message("anne@example.com", &["bart@example.com"], message);
    // The Python plugin read the Rust plugin's note, got an error value
    // for a bad key, and left a note the next plugin read.
    assert_eq!(
        reply.text(),
        "notes: score=7.5, python=removed=2 refused=Error_Invalid"
    );
    let mut server = server;
    let second = server.wait_for_listeners(2)[1];
    let mut c = Client::after_ehlo(second);
    assert_eq!(
        c.send_message("anne@example.com", &["bart@example.com"], message)
            .code,
        250
    );
    let stored = harness::maildir_messages(&maildir);
    assert_eq!(stored.len(), 1);
    let fields = &stored[0].fields;
    let names: Vec<&str> = fields
        .iter()
        .map(|f| f.split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Received",
            "X-Python-Score",
            "Subject",
            "X-Peer",
            "X-MailFrom",
            "X-RcptTo"
        ],
        "{fields:#?}"
    );
    assert_eq!(fields[1], "X-Python-Score: 7.5");
}

/// The durable queue stores what delivery would see: the message with the
/// chain's header edits, the edited envelope, and the chain's notes among
/// the facts a consumer reads.
#[test]
fn the_queue_stores_the_edited_message_envelope_and_notes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let plugins = annotator(
        "editor",
        &[
            "rcpt:add-rcpt:copy@example.org",
            "data:header-add:X-Verdict=clean",
            "data:header-remove:X-Drop",
            "data:note-set:score=3",
            "data:sender:<bounces@example.org>",
        ],
        GRANTS,
    );
    let mut server = Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[store]\npath = {:?}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"editor\", \"queue\"]\n\n{plugins}",
        state.to_str().unwrap()
    ));
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message(
        "anne@example.com",
        &["bart@example.com"],
        "Subject: queued\nX-Drop: 1\n\nhello\n",
    );
    assert_eq!(reply.code, 250, "{reply}");
    let id = reply.text().rsplit(' ').next().unwrap().to_owned();
    server.wait_for_stderr("data:sender:<bounces@example.org>: ok");

    let queue = |args: &[&str]| {
        let out = run_wasmtp(
            &[&["queue", "--state-dir", state.to_str().unwrap()][..], args].concat(),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let shown: serde_json::Value = serde_json::from_str(&queue(&["show", &id])).unwrap();
    assert_eq!(shown["mail_from"], "bounces@example.org");
    assert_eq!(
        shown["rcpt_to"],
        serde_json::json!(["bart@example.com", "copy@example.org"])
    );
    assert_eq!(shown["facts"]["notes"], serde_json::json!({ "score": "3" }));
    assert_eq!(
        queue(&["show", &id, "--message"]),
        "X-Verdict: clean\r\nSubject: queued\r\n\r\nhello\r\n"
    );
    server.terminate();
}

/// On LMTP, DATA answers once per recipient accepted at RCPT: no plugin may
/// change the recipients under it, so every envelope edit is `unavailable`.
#[test]
fn lmtp_listeners_make_no_envelope_edits() {
    let plugins = annotator(
        "editor",
        &[
            "mail:sender:<bounces@example.org>",
            "rcpt:add-rcpt:copy@example.org",
            "data:del-rcpt:bart@example.com",
        ],
        GRANTS,
    );
    let mut server = Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"lmtp\"\nplugins = [\"editor\"]\n\n{plugins}"
    ));
    let mut c = Client::greeted(server.addr());
    c.expect("LHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: lmtp\r\n\r\nhello\r\n.\r\n");
    // One reply for the one recipient accepted at RCPT.
    c.expect_reply(250);
    let log = server.wait_for_stderr("data:del-rcpt:bart@example.com: error");
    for action in [
        "mail:sender:<bounces@example.org>",
        "rcpt:add-rcpt:copy@example.org",
        "data:del-rcpt:bart@example.com",
    ] {
        assert!(
            log.contains(&format!("{action}: error: Error::Unavailable")),
            "no `{action}: error: Error::Unavailable` in\n{log}"
        );
    }
    c.expect("NOOP", 250);
}
