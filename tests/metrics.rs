//! Prometheus metrics: known traffic through listeners served by the
//! every-hook, misbehave, trap and sink plugins (and tenants), then the
//! `/metrics` endpoint is scraped and every count checked exactly.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Client, HOSTNAME, Process, WASMTP, http_get, listening_addrs, plugin_path, scrape};

fn config(dir: &Path) -> String {
    let every = plugin_path("every_hook.wasm");
    let misbehave = plugin_path("misbehave.wasm");
    let trap = plugin_path("trap.wasm");
    let _ = dir;
    format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        metrics = "127.0.0.1:0"

        [[listener]]
        name = "main"
        address = "127.0.0.1:0"
        plugin = "every"

        [[listener]]
        name = "bad"
        address = "127.0.0.1:0"
        plugin = "misbehave"

        [[listener]]
        name = "routed"
        address = "127.0.0.1:0"
        tenants = ["acme"]
        plugins = ["sink"]

        [[listener]]
        name = "globex"
        address = "127.0.0.1:0"
        tenant = "globex"

        [[listener]]
        name = "small"
        address = "127.0.0.1:0"
        plugin = "sink"
        max_connections = 1

        [[listener]]
        name = "proxied"
        address = "127.0.0.1:0"
        plugin = "sink"
        proxy_protocol = true

        [tenant.acme]
        plugins = ["trap"]
        domains = ["acme.example"]

        [tenant.globex]
        plugins = ["sink"]

        [plugin.every]
        component = {every:?}

        [plugin.misbehave]
        component = {misbehave:?}
        hook_timeout = 1
        memory_limit_mib = 16

        [plugin.trap]
        component = {trap:?}
        "#
    )
}

/// The message as the server stores it: LF → CRLF, without the final dot.
fn wire_len(message: &str) -> usize {
    message.lines().map(|l| l.len() + 2).sum()
}

struct Node {
    process: Process,
    metrics: SocketAddr,
}

fn start(config_path: &Path) -> Node {
    let mut command = Command::new(WASMTP);
    command
        .arg("--config")
        .arg(config_path)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let mut process = Process::spawn("wasmtp", command);
    let deadline = Instant::now() + harness::START_TIMEOUT;
    while listening_addrs(&process.stderr()).len() < 6
        || !process.stderr().contains("serving metrics at")
    {
        if Instant::now() > deadline {
            process.fail("not every listener and the metrics endpoint came up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = harness::metrics_addr(&process.stderr()).unwrap();
    Node { process, metrics }
}

/// Scrape until `series` has `value` (sessions end asynchronously).
fn wait_for(node: &mut Node, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = scrape(node.metrics).get(series).copied();
        if got == Some(value) {
            return;
        }
        if Instant::now() > deadline {
            let all = scrape(node.metrics);
            node.process
                .fail(&format!("{series} is {got:?}, expected {value}\n{all:#?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_metric_counts_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("wasmtp.toml");
    std::fs::write(&config_path, config(dir.path())).unwrap();
    let mut node = start(&config_path);
    let by_name = |name: &str| -> SocketAddr {
        let log = node.process.stderr();
        let line = log
            .lines()
            .find(|l| l.contains("listening on") && l.contains(&format!("listener={name:?}")))
            .unwrap_or_else(|| panic!("no listener {name}:\n{log}"));
        listening_addrs(line)[0]
    };
    let [main, bad, routed, globex, small, proxied] =
        ["main", "bad", "routed", "globex", "small", "proxied"].map(by_name);

    // Off the endpoint's one path: 404.
    assert_eq!(http_get(node.metrics, "/").0, "HTTP/1.1 404 Not Found");

    // main (every-hook): one accepted, one tempfailed (a trap in data), one
    // abandoned by RSET; a 550 recipient; an invalid reply to NOOP.
    let one = "Subject: one\n\nhello\n";
    let two = "Subject: two\nX-Trap: yes\n\ntrap me\n";
    let mut c = Client::after_ehlo(main);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.com>", 250);
    c.expect("RCPT TO:<reject@example.com>", 550);
    c.expect("DATA", 354);
    c.send_raw(format!("{}.\r\n", one.replace('\n', "\r\n")).as_bytes());
    c.expect_reply(250);
    assert_eq!(
        c.send_message("c@example.com", &["d@example.com"], two)
            .code,
        451
    );
    c.expect("MAIL FROM:<e@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("NOOP bad-code", 451);
    c.expect("QUIT", 221);
    // A second session leaves mid-transaction: abandoned.
    let mut c = Client::after_ehlo(main);
    c.expect("MAIL FROM:<f@example.com>", 250);
    c.expect("RCPT TO:<g@example.com>", 250);
    drop(c);

    // bad (misbehave): a timeout, an out-of-memory and a trap in NOOP.
    let mut c = Client::greeted(bad);
    c.expect("NOOP loop", 451);
    c.expect("NOOP memory", 451);
    c.expect("NOOP trap", 451);
    c.expect("NOOP anything", 250);
    c.expect("QUIT", 221);

    // routed: recipients of tenant acme (its trap plugin) and of the
    // listener's own chain; acme's data hook traps.
    let mut c = Client::after_ehlo(routed);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<ok@acme.example>", 250);
    c.expect("RCPT TO:<trap@acme.example>", 451);
    c.expect("RCPT TO:<x@example.com>", 250);
    let three = "Subject: three\n\nto two chains\n";
    c.expect("DATA", 354);
    c.send_raw(format!("{}.\r\n", three.replace('\n', "\r\n")).as_bytes());
    c.expect_reply(451);
    c.expect("QUIT", 221);

    // globex: a listener served by one tenant.
    let mut c = Client::after_ehlo(globex);
    assert_eq!(
        c.send_message("a@example.com", &["b@globex.example"], one)
            .code,
        250
    );
    c.expect("QUIT", 221);

    // small: the second connection is over max_connections.
    let held = Client::greeted(small);
    let mut refused = Client::connect(small);
    refused.expect_reply(421);
    drop(held);

    // proxied: no PROXY header, closed before the greeting.
    let mut stream = TcpStream::connect(proxied).unwrap();
    stream.write_all(b"EHLO not-a-proxy\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.read(&mut [0u8; 64]);

    // Reloads: one that works, one refused.
    node.process.signal("HUP");
    wait_for(&mut node, r#"wasmtp_reloads_total{result="ok"}"#, 1.0);
    std::fs::write(&config_path, "[[listener]]\naddress = 1\n").unwrap();
    node.process.signal("HUP");
    wait_for(&mut node, r#"wasmtp_reloads_total{result="refused"}"#, 1.0);

    for listener in ["main", "bad", "routed", "globex", "small", "proxied"] {
        wait_for(
            &mut node,
            &format!(r#"wasmtp_sessions_active{{listener="{listener}"}}"#),
            0.0,
        );
    }
    let m = scrape(node.metrics);
    let expected: &[(&str, f64)] = &[
        // sessions
        (
            r#"wasmtp_sessions_total{listener="main",tenant="",outcome="accepted"}"#,
            2.0,
        ),
        (
            r#"wasmtp_sessions_total{listener="bad",tenant="",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_sessions_total{listener="routed",tenant="",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_sessions_total{listener="globex",tenant="globex",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_sessions_total{listener="small",tenant="",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_sessions_total{listener="small",tenant="",outcome="tempfailed"}"#,
            1.0,
        ),
        (
            r#"wasmtp_sessions_total{listener="proxied",tenant="",outcome="closed"}"#,
            1.0,
        ),
        // transactions, recipients, messages
        (
            r#"wasmtp_transactions_total{listener="main",tenant="",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_transactions_total{listener="main",tenant="",outcome="tempfailed"}"#,
            1.0,
        ),
        (
            r#"wasmtp_transactions_total{listener="main",tenant="",outcome="abandoned"}"#,
            2.0,
        ),
        (
            r#"wasmtp_transactions_total{listener="routed",tenant="mixed",outcome="tempfailed"}"#,
            1.0,
        ),
        (
            r#"wasmtp_transactions_total{listener="globex",tenant="globex",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_recipients_total{listener="main",tenant="",outcome="accepted"}"#,
            3.0,
        ),
        (
            r#"wasmtp_recipients_total{listener="main",tenant="",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"wasmtp_recipients_total{listener="routed",tenant="acme",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_recipients_total{listener="routed",tenant="acme",outcome="tempfailed"}"#,
            1.0,
        ),
        (
            r#"wasmtp_recipients_total{listener="routed",tenant="",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_recipients_total{listener="globex",tenant="globex",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"wasmtp_messages_received_total{listener="main",tenant=""}"#,
            2.0,
        ),
        (
            r#"wasmtp_received_bytes_total{listener="main",tenant=""}"#,
            (wire_len(one) + wire_len(two)) as f64,
        ),
        (
            r#"wasmtp_messages_received_total{listener="routed",tenant="mixed"}"#,
            1.0,
        ),
        (
            r#"wasmtp_received_bytes_total{listener="routed",tenant="mixed"}"#,
            wire_len(three) as f64,
        ),
        (
            r#"wasmtp_messages_received_total{listener="globex",tenant="globex"}"#,
            1.0,
        ),
        // every-hook's calls, failures and instances
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="ehlo"}"#,
            2.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="mail"}"#,
            4.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="rcpt"}"#,
            4.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="data"}"#,
            2.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="rset"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="noop"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="quit"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="every",hook="exception"}"#,
            2.0,
        ),
        (
            r#"wasmtp_plugin_call_duration_seconds_count{plugin="every",hook="rcpt"}"#,
            4.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="every",hook="data",kind="trap"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="every",hook="noop",kind="invalid-reply"}"#,
            1.0,
        ),
        // a fresh instance per session, and after each failure (for `exception`)
        (r#"wasmtp_plugin_instantiations_total{plugin="every"}"#, 4.0),
        (
            r#"wasmtp_plugin_instantiation_duration_seconds_count{plugin="every"}"#,
            4.0,
        ),
        // misbehave
        (
            r#"wasmtp_plugin_calls_total{plugin="misbehave",hook="noop"}"#,
            4.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="misbehave",hook="noop",kind="timeout"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="misbehave",hook="noop",kind="out-of-memory"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="misbehave",hook="noop",kind="trap"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_instantiations_total{plugin="misbehave"}"#,
            4.0,
        ),
        // tenants' own copies
        (
            r#"wasmtp_plugin_calls_total{plugin="acme/trap",hook="rcpt"}"#,
            2.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="acme/trap",hook="data"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="acme/trap",hook="rcpt",kind="trap"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_failures_total{plugin="acme/trap",hook="data",kind="trap"}"#,
            1.0,
        ),
        (
            r#"wasmtp_plugin_instantiations_total{plugin="acme/trap"}"#,
            2.0,
        ),
        (
            r#"wasmtp_plugin_calls_total{plugin="globex/sink",hook="data"}"#,
            1.0,
        ),
        // the generation and the reloads
        ("wasmtp_config_generation", 2.0),
        (r#"wasmtp_reloads_total{result="ok"}"#, 1.0),
        (r#"wasmtp_reloads_total{result="refused"}"#, 1.0),
        (r#"wasmtp_build_info{version="0.1.0"}"#, 1.0),
    ];
    let mut wrong = Vec::new();
    for (series, value) in expected {
        if m.get(*series) != Some(value) {
            wrong.push(format!(
                "{series}: expected {value}, got {:?}",
                m.get(*series)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n--- scrape\n{m:#?}", wrong.join("\n"));

    // Nothing counted that the traffic did not cause.
    let total = |prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total("wasmtp_plugin_failures_total"), 7.0);
    assert_eq!(total("wasmtp_transactions_total"), 6.0);
    assert_eq!(total("wasmtp_sessions_total"), 8.0);
    assert_eq!(
        m.get(r#"wasmtp_plugin_calls_total{plugin="sink",hook="data"}"#),
        None,
        "the routed listener's sink never decided"
    );

    // Latency: the timed-out call took the whole 1 s deadline, the others far less.
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(r#"wasmtp_plugin_call_duration_seconds_bucket{"#)?;
            if !rest.contains(r#"plugin="misbehave",hook="noop""#) {
                return None;
            }
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                *v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let below = |secs: f64| {
        buckets
            .iter()
            .filter(|(le, _)| *le < secs)
            .map(|(_, n)| *n)
            .next_back()
            .unwrap_or(0.0)
    };
    assert_eq!(below(1.0), 3.0, "{buckets:?}");
    assert_eq!(buckets.last().map(|b| b.1), Some(4.0), "{buckets:?}");
    assert!(m[r#"wasmtp_plugin_call_duration_seconds_sum{plugin="misbehave",hook="noop"}"#] >= 1.0);
}

#[test]
fn off_by_default() {
    let server = harness::Server::start(&["-c", "sink"]);
    assert!(
        !server.stderr().contains("serving metrics"),
        "{}",
        server.stderr()
    );
}
