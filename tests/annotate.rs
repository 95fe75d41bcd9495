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
        "notes = true",
    ) + &annotator(
        "reader",
        &["rcpt:reply-notes", "data:reply-notes"],
        "notes = true",
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
    let plugins = annotator("writer", &["rcpt:note-set:rcpt-seen=yes"], "notes = true")
        + &annotator(
            "reader",
            &["mail:reply-notes", "rcpt:reply-notes", "rset:reply-notes"],
            "notes = true",
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
        "notes = true",
    ) + &annotator("reader", &["rcpt:reply-notes"], "notes = true");
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
            annotator("policy", &["rcpt:reply-notes"], "stdout = true")
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
