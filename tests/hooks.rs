//! Every hook of the WIT contract reached through the real server by a real
//! plugin (`tests/plugins/every-hook`), the host's defaults where a plugin
//! leaves a hook out, and what a failing plugin costs: one reply, never the
//! server or another session.

#[path = "harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::{Client, HOSTNAME, Server, plugin_path, run_wasmtp};

fn every_hook(args: &[&str]) -> Server {
    let plugin = plugin_path("every_hook.wasm");
    let mut all = vec!["--hostname", HOSTNAME, "-c", plugin.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// FNV-1a, as every-hook computes it over the content it reads.
fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[test]
fn every_command_hook_decides_its_reply() {
    let server = every_hook(&[]);
    let mut c = Client::greeted(server.addr());
    assert_eq!(
        c.expect("HELO client.example", 250).text(),
        "every-hook helo client.example [call 1]"
    );
    let ehlo = c.expect("EHLO client.example", 250);
    assert_eq!(ehlo.lines.first().map(String::as_str), Some(HOSTNAME));
    assert_eq!(ehlo.lines[ehlo.lines.len() - 2], "X-EVERY-HOOK [call 2]");
    assert_eq!(ehlo.lines.last().map(String::as_str), Some("HELP"));
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com> BODY=8BITMIME", 250)
            .text(),
        "2.1.0 every-hook mail anne@example.com options=BODY=8BITMIME [call 3]"
    );
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "2.1.5 every-hook rcpt bart@example.com options= [call 4]"
    );
    assert_eq!(
        c.expect("VRFY <cate@example.com>", 252).text(),
        "every-hook vrfy cate@example.com [call 5]"
    );
    assert_eq!(
        c.expect("NOOP hello there", 250).text(),
        "every-hook noop hello there [call 6]"
    );
    let message = "Subject: hooks\r\n\r\nHello\r\n";
    c.expect("DATA", 354);
    c.send_raw(format!("{message}.\r\n").as_bytes());
    assert_eq!(
        c.expect_reply(250).text(),
        format!(
            "2.0.0 every-hook data {} bytes fnv1a={} from=anne@example.com to=bart@example.com [call 7]",
            message.len(),
            fnv1a(message.as_bytes())
        )
    );
    assert_eq!(c.expect("RSET", 250).text(), "every-hook rset [call 8]");
    assert_eq!(c.expect("QUIT", 221).text(), "every-hook bye [call 9]");
    c.expect_closed();
}

#[test]
fn each_session_has_its_own_instance() {
    let server = every_hook(&[]);
    let mut first = Client::greeted(server.addr());
    let mut second = Client::greeted(server.addr());
    assert!(first.expect("NOOP a", 250).text().ends_with("[call 1]"));
    assert!(first.expect("NOOP b", 250).text().ends_with("[call 2]"));
    // The second session's plugin state starts afresh.
    assert!(second.expect("NOOP a", 250).text().ends_with("[call 1]"));
    assert!(first.expect("NOOP c", 250).text().ends_with("[call 3]"));
}

#[test]
fn a_hook_returning_none_gets_the_default() {
    let server = every_hook(&[]);
    let mut c = Client::greeted(server.addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    assert_eq!(c.expect("RCPT TO:<default@example.com>", 250).text(), "OK");
    assert_eq!(c.expect("NOOP default", 250).text(), "OK");
    // The default also records the recipient: DATA is accepted.
    c.expect("DATA", 354);
}

#[test]
fn refusals_are_not_recorded_in_the_envelope() {
    let server = every_hook(&[]);
    let mut c = Client::greeted(server.addr());
    assert_eq!(
        c.expect("HELO reject.example", 550).text(),
        "every-hook refuses helo [call 1]"
    );
    // A refused HELO leaves the client un-greeted.
    c.expect("MAIL FROM:<anne@example.com>", 503);
    c.expect("EHLO client.example", 250);
    assert_eq!(
        c.expect("MAIL FROM:<reject@example.com>", 550).lines[0]
            .split(' ')
            .next(),
        Some("5.1.0")
    );
    // The refused sender did not start a transaction: this is not nested MAIL.
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<reject@example.com>", 550);
    c.expect("RCPT TO:<tempfail@example.com>", 451);
    // No recipient was accepted.
    c.expect("DATA", 503);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
}

#[test]
fn setup_receives_the_arguments_and_can_refuse_them() {
    let plugin = plugin_path("every_hook.wasm");
    let out = run_wasmtp(
        &[
            "-l",
            "127.0.0.1:0",
            "-c",
            plugin.to_str().unwrap(),
            "one",
            "refuse",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "wasmtp: error: plugin `every_hook`: every-hook: refusing arguments as asked"
        ),
        "{stderr}"
    );
}

#[test]
fn a_trap_costs_one_reply_and_the_session_goes_on() {
    let plugin = plugin_path("trap.wasm");
    let mut server = Server::start(&["--hostname", HOSTNAME, "-c", plugin.to_str().unwrap()]);
    let mut c = Client::greeted(server.addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    assert_eq!(
        c.expect("RCPT TO:<trap@example.com>", 451).text(),
        "4.3.0 Error: plugin failed"
    );
    // The failed instance is gone; the next hook call gets a fresh one.
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.expect_reply(451).text(), "4.3.0 Error: plugin failed");
    // After DATA the transaction is over, as after any DATA reply.
    c.expect("RCPT TO:<bart@example.com>", 503);
    c.expect("QUIT", 221);

    // Other sessions, and later ones, are served normally.
    let mut next = Client::greeted(server.addr());
    next.expect("EHLO client.example", 250);
    next.expect("MAIL FROM:<anne@example.com>", 250);
    next.expect("RCPT TO:<bart@example.com>", 250);
    server.wait_for_stderr("plugin failed");
}

#[test]
fn the_exception_hook_chooses_the_failure_reply() {
    let server = every_hook(&[]);
    let mut c = Client::greeted(server.addr());
    c.expect("NOOP one", 250);
    assert_eq!(
        c.expect("NOOP trap", 451).text(),
        "4.3.0 every-hook exception trap in noop [call 1]"
    );
    assert_eq!(
        c.expect("NOOP bad-code", 451).text(),
        "4.3.0 every-hook exception invalid-reply in noop [call 1]"
    );
    assert_eq!(
        c.expect("NOOP crlf", 451).text(),
        "4.3.0 every-hook exception invalid-reply in noop [call 1]"
    );
    // Every failure discards the instance: the exception hook runs on a
    // fresh one each time. Nothing the plugin tried to inject reached the wire.
    assert!(!c.transcript().contains("INJECTED"));
    c.expect("NOOP after", 250);
}

#[test]
fn a_trap_in_data_is_reported_by_the_exception_hook() {
    let server = every_hook(&[]);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"X-Trap: yes\r\n\r\nboom\r\n.\r\n");
    assert_eq!(
        c.expect_reply(451).text(),
        "4.3.0 every-hook exception trap in data [call 1]"
    );
}

#[test]
fn bad_plugins_are_refused_at_start_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm").unwrap();
    let out = run_wasmtp(
        &["-l", "127.0.0.1:0", "-c", text.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "plugin `notes`: {} is not a valid WebAssembly component",
            text.display()
        )),
        "{stderr}"
    );

    // An empty core module: `\0asm` version 1.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = run_wasmtp(
        &["-l", "127.0.0.1:0", "-c", core.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a core WebAssembly module, not a component"),
        "{stderr}"
    );

    let out = run_wasmtp(&["-c", "no-such-plugin"], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--class: `no-such-plugin` is neither a built-in plugin (sink, debugging, mailbox, proxy, queue, greylist, ratelimit, webhook, mailauth, dnsbl) nor a file"), "{stderr}");
}

#[test]
fn builtin_plugins_check_their_arguments_as_aiosmtpd_does() {
    for (args, message) in [
        (
            &["-c", "sink", "extra"][..],
            "plugin `sink`: takes no arguments, but was given 1",
        ),
        (
            &["-c", "debugging", "stdlog"][..],
            "plugin `debugging`: Debugging usage: [stdout|stderr]",
        ),
        (
            &["-c", "debugging", "stdout", "stderr"][..],
            "plugin `debugging`: Debugging usage: [stdout|stderr]",
        ),
        (
            &["-c", "mailbox"][..],
            "plugin `mailbox`: The directory for the maildir is required",
        ),
        (
            &["-c", "mailbox", "/tmp/a", "/tmp/b"][..],
            "plugin `mailbox`: Too many arguments for Mailbox handler",
        ),
    ] {
        let mut all = vec!["-l", "127.0.0.1:0"];
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

/// A component built against `wasmtp:smtp@0.1.0` as it stood before the
/// granted capabilities were added (a frozen copy of that WIT file) loads
/// unchanged, needs no grant, and its imports (`content`, `log`,
/// `transaction`) still work.
#[test]
fn a_component_built_before_the_capabilities_still_loads_and_runs() {
    let plugin = harness::plugin_path("wit_0_1_0_before_capabilities.wasm");
    let mut server = Server::start(&["--hostname", HOSTNAME, "-c", plugin.to_str().unwrap()]);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: old\r\n\r\nbuilt before\r\n.\r\n");
    assert_eq!(
        c.expect_reply(250).text(),
        "frozen 30 bytes, read 30 then 30, queue id 16"
    );
    server.wait_for_stderr("frozen rcpt bart@example.com");
}
