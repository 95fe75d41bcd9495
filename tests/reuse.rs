//! `instances = "reuse"`: one plugin instance serves successive sessions of
//! one listener or tenant, never two at once, reset between them; the
//! default stays one fresh instance per session.
//!
//! The `reusable` test plugin answers NOOP with `born=B resets=R calls=C`:
//! a random number its instance drew once (a static, so it names the
//! instance), how many resets that instance has had, and the NOOPs this
//! session's value has seen.

#[path = "harness/mod.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::{Client, Server, plugin_path, run_wasmtp, scrape};

/// What one session's NOOP said about the instance that answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    born: u64,
    resets: u32,
    calls: u32,
}

fn noop(c: &mut Client, arg: &str) -> Answer {
    let line = if arg.is_empty() {
        "NOOP".to_owned()
    } else {
        format!("NOOP {arg}")
    };
    let text = c.expect(&line, 250).text();
    let field = |name: &str| -> u64 {
        text.split(' ')
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {text:?}"))
    };
    Answer {
        born: field("born"),
        resets: field("resets") as u32,
        calls: field("calls") as u32,
    }
}

/// One whole session: greeting, two NOOPs, QUIT.
fn session(addr: SocketAddr) -> Answer {
    let mut c = Client::greeted(addr);
    noop(&mut c, "");
    let answer = noop(&mut c, "");
    c.expect("QUIT", 221);
    answer
}

fn plugin_section(name: &str, extra: &str) -> String {
    format!(
        "[plugin.{name}]\ncomponent = \"{}\"\n{extra}\n",
        plugin_path("reusable.wasm").display()
    )
}

fn server(listeners: &str, plugins: &str) -> Server {
    Server::start_config(&format!(
        "[server]\nmetrics = \"127.0.0.1:0\"\n\n{listeners}\n{plugins}"
    ))
}

fn one_listener(extra: &str) -> Server {
    server(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"reusable\"\n",
        &plugin_section("reusable", extra),
    )
}

/// Waits until `plugin` has `n` reset instances waiting (the reset runs in
/// a task of its own after the session ends).
fn wait_idle(server: &Server, plugin: &str, n: u32) {
    let metrics = harness::metrics_addr(&server.stderr()).expect("metrics address in the log");
    let series = format!("wasmtp_plugin_instances_idle{{plugin=\"{plugin}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(metrics).get(&series).copied().unwrap_or(0.0);
        if now == f64::from(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now}, not {n}, after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sample(server: &Server, series: &str) -> f64 {
    let metrics = harness::metrics_addr(&server.stderr()).unwrap();
    scrape(metrics).get(series).copied().unwrap_or(0.0)
}

#[test]
fn by_default_every_session_gets_a_fresh_instance() {
    let server = one_listener("");
    let first = session(server.addr());
    let second = session(server.addr());
    assert_ne!(first.born, second.born);
    assert_eq!((first.resets, second.resets), (0, 0));
    assert_eq!(
        sample(
            &server,
            "wasmtp_plugin_instantiations_total{plugin=\"reusable\"}"
        ),
        2.0
    );
}

#[test]
fn a_reused_instance_serves_successive_sessions_with_a_reset_between() {
    let server = one_listener("instances = \"reuse\"");
    let mut answers = Vec::new();
    for n in 0..3 {
        answers.push(session(server.addr()));
        wait_idle(&server, "reusable", 1);
        assert_eq!(answers[n].resets, n as u32);
    }
    // One instance, reset twice; each session's SDK value was fresh.
    assert!(answers.iter().all(|a| a.born == answers[0].born));
    assert!(answers.iter().all(|a| a.calls == 2));
    assert_eq!(
        sample(
            &server,
            "wasmtp_plugin_instantiations_total{plugin=\"reusable\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &server,
            "wasmtp_plugin_instance_reuses_total{plugin=\"reusable\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &server,
            "wasmtp_plugin_calls_total{plugin=\"reusable\",hook=\"reuse\"}"
        ),
        3.0
    );
}

#[test]
fn sessions_at_the_same_time_never_share_an_instance() {
    let server = one_listener("instances = \"reuse\"");
    let mut a = Client::greeted(server.addr());
    let mut b = Client::greeted(server.addr());
    let (first_a, first_b) = (noop(&mut a, ""), noop(&mut b, ""));
    assert_ne!(first_a.born, first_b.born);
    a.expect("QUIT", 221);
    b.expect("QUIT", 221);
    wait_idle(&server, "reusable", 2);

    // The next two sessions, open together, get the two instances, one each.
    let mut c = Client::greeted(server.addr());
    let mut d = Client::greeted(server.addr());
    let (then_c, then_d) = (noop(&mut c, ""), noop(&mut d, ""));
    let mut born = [then_c.born, then_d.born];
    born.sort_unstable();
    let mut before = [first_a.born, first_b.born];
    before.sort_unstable();
    assert_eq!(born, before);
    assert_eq!((then_c.resets, then_d.resets), (1, 1));
    // A third at the same time gets a fresh one.
    let mut e = Client::greeted(server.addr());
    let fresh = noop(&mut e, "");
    assert!(!before.contains(&fresh.born), "{fresh:?}");
}

#[test]
fn instances_are_not_shared_between_listeners() {
    let server = server(
        "[[listener]]\nname = \"one\"\naddress = \"127.0.0.1:0\"\nplugin = \"reusable\"\n\n\
         [[listener]]\nname = \"two\"\naddress = \"127.0.0.1:0\"\nplugin = \"reusable\"\n",
        &plugin_section("reusable", "instances = \"reuse\""),
    );
    let mut server = server;
    let addrs = server.wait_for_listeners(2);
    let one = session(addrs[0]);
    wait_idle(&server, "reusable", 1);
    // Listener two's pool is empty: a fresh instance.
    let two = session(addrs[1]);
    assert_ne!(two.born, one.born);
    assert_eq!(two.resets, 0);
    wait_idle(&server, "reusable", 2);
    // Each listener gets its own instance back.
    assert_eq!(session(addrs[0]).born, one.born);
    assert_eq!(session(addrs[1]).born, two.born);
}

#[test]
fn instances_are_not_shared_between_tenants() {
    let server = server(
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntenants = [\"acme\", \"globex\"]\n\n\
         [tenant.acme]\nplugins = [\"reusable\"]\ndomains = [\"acme.example\"]\n\n\
         [tenant.globex]\nplugins = [\"reusable\"]\ndomains = [\"globex.example\"]\n",
        &plugin_section("reusable", "instances = \"reuse\""),
    );
    // A tenant's plugin answers for its recipients; each tenant's copy is
    // named `TENANT/reusable`.
    let rcpt = |domain: &str| {
        let mut c = Client::after_ehlo(server.addr());
        c.expect("MAIL FROM:<a@example.com>", 250);
        let text = c.expect(&format!("RCPT TO:<b@{domain}>"), 250).text();
        c.expect("QUIT", 221);
        text.split(' ').next().unwrap().to_owned()
    };
    let acme = rcpt("acme.example");
    wait_idle(&server, "acme/reusable", 1);
    // globex's session does not take acme's idle instance.
    let globex = rcpt("globex.example");
    assert_ne!(globex, acme);
    wait_idle(&server, "globex/reusable", 1);
    wait_idle(&server, "acme/reusable", 1);
    assert_eq!(rcpt("acme.example"), acme);
    assert_eq!(rcpt("globex.example"), globex);
}

#[test]
fn an_instance_is_retired_after_its_sessions() {
    let server = one_listener("instances = \"reuse\"\nmax_sessions_per_instance = 2");
    let first = session(server.addr());
    wait_idle(&server, "reusable", 1);
    let second = session(server.addr());
    assert_eq!(second.born, first.born);
    // Its second session was its last: it is dropped, not reset.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sample(&server, "wasmtp_plugin_instances_idle{plugin=\"reusable\"}"),
        0.0
    );
    let third = session(server.addr());
    assert_ne!(third.born, first.born);
    assert_eq!(third.resets, 0);
}

#[test]
fn an_instance_whose_reset_fails_or_that_trapped_is_not_reused() {
    let mut server = one_listener("instances = \"reuse\"\nargs = [\"fail-reset\"]");
    let first = session(server.addr());
    server.wait_for_stderr("reuse.reset failed, dropping the instance: asked to refuse");
    let second = session(server.addr());
    assert_ne!(second.born, first.born);

    // A trap drops the instance with the failure, so it never comes back.
    let server = one_listener("instances = \"reuse\"");
    let mut c = Client::greeted(server.addr());
    let trapped = noop(&mut c, "");
    c.expect("NOOP trap", 451);
    let after = noop(&mut c, "");
    assert_ne!(after.born, trapped.born);
    c.expect("QUIT", 221);
    wait_idle(&server, "reusable", 1);
    let next = session(server.addr());
    assert_eq!(next.born, after.born);
    assert_ne!(next.born, trapped.born);
}

#[test]
fn reuse_needs_the_export_and_its_keys_need_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        let file = dir.path().join("wasmtp.toml");
        std::fs::write(&file, toml).unwrap();
        let out = run_wasmtp(
            &["check", "--config", file.to_str().unwrap()],
            Duration::from_secs(120),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"p\"\n";

    // The built-in sink does not export `reuse`.
    let (code, err) = check(&format!(
        "{listener}[plugin.p]\ncomponent = \"sink\"\ninstances = \"reuse\"\n"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("plugin.p.instances")
            && err.contains("does not export wasmtp:smtp/reuse@0.1.0"),
        "{err}"
    );

    // Each bad value or stray key is named with its section.
    let bad = [
        (
            "max_idle_instances = 4",
            [
                "plugin.p.max_idle_instances",
                "applies only with `instances = \"reuse\"`",
            ],
        ),
        (
            "instances = \"reuse\"\nmax_sessions_per_instance = 0",
            ["plugin.p.max_sessions_per_instance", "at least 1"],
        ),
        ("instances = \"sometimes\"", ["instances", "sometimes"]),
    ];
    for (extra, expected) in bad {
        let (code, err) = check(&format!("{listener}{}", plugin_section("p", extra)));
        assert_eq!(code, Some(2), "{extra}: {err}");
        assert!(expected.iter().all(|e| err.contains(e)), "{extra}: {err}");
    }

    // And a plugin that exports it passes.
    let (code, err) = check(&format!(
        "{listener}{}",
        plugin_section("p", "instances = \"reuse\"")
    ));
    assert_eq!(code, Some(0), "{err}");
}
