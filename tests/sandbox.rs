//! The sandbox holds: plugins that misbehave on purpose
//! (`tests/plugins/misbehave`, `every-hook`) are contained — a loop, a
//! memory bomb, a trap, an invalid reply, a file or a socket they were not
//! granted — each costs its session the failure policy's reply, and the
//! server serves the next session normally. Also: chains and failure policies.

#[path = "harness/mod.rs"]
mod harness;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use harness::{Client, Server, plugin_path};

fn config(plugin_section: &str, listener_plugins: &str) -> String {
    format!(
        r#"
[server]
hostname = "mx.wasmtp.test"

[[listener]]
address = "127.0.0.1:0"
{listener_plugins}

{plugin_section}
"#
    )
}

fn misbehave_section(name: &str, extra: &str) -> String {
    format!(
        "[plugin.{name}]\ncomponent = \"{}\"\nmemory_limit_mib = 16\nhook_timeout = 0.5\n{extra}\n",
        plugin_path("misbehave.wasm").display()
    )
}

fn misbehave(extra: &str) -> Server {
    Server::start_config(&config(
        &misbehave_section("misbehave", extra),
        "plugin = \"misbehave\"",
    ))
}

#[test]
fn a_looping_plugin_is_stopped_at_its_deadline_without_blocking_others() {
    let mut server = misbehave("");
    let mut looping = Client::greeted(server.addr());
    let started = Instant::now();
    looping.send("NOOP loop");
    // While it spins, other sessions are served at once: the loop yields
    // its tokio worker at every epoch tick.
    for _ in 0..3 {
        let mut other = Client::greeted(server.addr());
        let asked = Instant::now();
        other.expect("NOOP", 250);
        assert!(
            asked.elapsed() < Duration::from_millis(300),
            "a looping plugin slowed another session: {:?}",
            asked.elapsed()
        );
    }
    assert_eq!(
        looping.expect_reply(451).text(),
        "4.3.0 Error: plugin failed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "stopped after {took:?}"
    );
    server.wait_for_stderr("kind=\"timeout\"");
    // The session goes on, with a fresh instance.
    assert_eq!(looping.expect("NOOP", 250).text(), "fine");
}

/// Context switches of the server's epoch thread so far.
fn epoch_thread_wakeups(server: &Server) -> u64 {
    let tasks = format!("/proc/{}/task", server.pid());
    for task in std::fs::read_dir(&tasks).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() == "wasmtp-epoch" {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            return status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
                .sum();
        }
    }
    panic!("no wasmtp-epoch thread in {tasks}");
}

#[test]
fn the_epoch_clock_sleeps_while_no_plugin_runs_and_wakes_for_one() {
    let mut server = misbehave("");
    // Idle: after its grace period the epoch thread stops ticking (it would
    // wake a thousand times a second otherwise).
    std::thread::sleep(Duration::from_millis(300));
    let before = epoch_thread_wakeups(&server);
    std::thread::sleep(Duration::from_secs(1));
    let idle = epoch_thread_wakeups(&server) - before;
    assert!(
        idle <= 3,
        "the epoch thread woke {idle} times in an idle second"
    );
    // A plugin that spins is still stopped at its deadline: the call wakes it.
    let mut looping = Client::greeted(server.addr());
    let started = Instant::now();
    looping.send("NOOP loop");
    looping.expect_reply(451);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "stopped after {took:?}"
    );
    server.wait_for_stderr("kind=\"timeout\"");
}

#[test]
fn a_memory_bomb_hits_its_cap() {
    let mut server = misbehave("");
    let mut c = Client::greeted(server.addr());
    c.expect("NOOP memory", 451);
    server.wait_for_stderr("kind=\"out-of-memory\"");
    c.expect("NOOP", 250);
}

#[test]
fn traps_and_invalid_replies_cost_one_reply() {
    let mut server = misbehave("");
    let mut c = Client::greeted(server.addr());
    c.expect("NOOP trap", 451);
    c.expect("NOOP bad-reply", 451);
    server.wait_for_stderr("reply code 999 is not between 200 and 599");
    assert!(!c.transcript().contains("999"));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
}

#[test]
fn files_are_reachable_only_where_granted() {
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("policy.txt"), "allow\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret\n").unwrap();
    let server = misbehave(&format!(
        "[plugin.misbehave.grants]\ndirs = [{{ path = \"{}\", guest = \"/policy\" }}]\n",
        granted.path().display()
    ));
    let mut c = Client::greeted(server.addr());
    assert_eq!(
        c.expect("NOOP read /policy/policy.txt", 250).text(),
        "read 6 bytes"
    );
    // Read-only grant: no writing.
    assert!(
        c.expect("NOOP write /policy/new.txt", 550)
            .text()
            .starts_with("cannot write")
    );
    assert!(!granted.path().join("new.txt").exists());
    // Nothing outside the grant, by any path.
    let secret = outside.path().join("secret.txt");
    assert!(
        c.expect(&format!("NOOP read {}", secret.display()), 550)
            .text()
            .starts_with("cannot read")
    );
    assert!(
        c.expect("NOOP read /policy/../../etc/passwd", 550)
            .text()
            .starts_with("cannot read")
    );
    assert!(
        c.expect("NOOP read /etc/passwd", 550)
            .text()
            .starts_with("cannot read")
    );
}

#[test]
fn sockets_open_only_to_granted_addresses() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = misbehave(&format!(
        "[plugin.misbehave.grants]\nnetwork = [\"{}\"]\n",
        allowed.local_addr().unwrap()
    ));
    let mut c = Client::greeted(server.addr());
    assert_eq!(
        c.expect(
            &format!("NOOP connect {}", allowed.local_addr().unwrap()),
            250
        )
        .text(),
        "connected"
    );
    assert!(
        c.expect(
            &format!("NOOP connect {}", denied.local_addr().unwrap()),
            550
        )
        .text()
        .starts_with("cannot connect")
    );
    // Not even the server's own listener.
    assert!(
        c.expect(&format!("NOOP connect {}", server.addr()), 550)
            .text()
            .starts_with("cannot connect")
    );
}

#[test]
fn no_network_and_no_environment_by_default() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = misbehave("[plugin.misbehave.grants]\nenv = { GREETING = \"hello\" }\n");
    let mut c = Client::greeted(server.addr());
    assert!(
        c.expect(
            &format!("NOOP connect {}", listener.local_addr().unwrap()),
            550
        )
        .text()
        .starts_with("cannot connect")
    );
    assert_eq!(c.expect("NOOP env GREETING", 250).text(), "GREETING=hello");
    // The server's own environment is not the plugin's.
    assert_eq!(c.expect("NOOP env PATH", 550).text(), "PATH is not set");
}

#[test]
fn failure_policies() {
    let sections = [
        misbehave_section("rejecting", "on_failure = \"reject\""),
        misbehave_section("disconnecting", "on_failure = \"disconnect\""),
    ]
    .join("\n");
    let toml = format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\nname = \"r\"\naddress = \"127.0.0.1:0\"\nplugin = \"rejecting\"\n\n[[listener]]\nname = \"d\"\naddress = \"127.0.0.1:0\"\nplugin = \"disconnecting\"\n\n{sections}"
    );
    let mut server = Server::start_config(&toml);
    let addrs = server.wait_for_listeners(2);
    let mut c = Client::greeted(addrs[0]);
    assert_eq!(
        c.expect("NOOP trap", 554).text(),
        "5.3.0 Error: plugin failed"
    );
    c.expect("NOOP", 250);
    let mut c = Client::greeted(addrs[1]);
    assert_eq!(
        c.expect("NOOP trap", 421).text(),
        "4.3.0 Error: plugin failed, closing connection"
    );
    c.expect_closed();
}

#[test]
fn a_chain_passes_each_hook_on_until_a_plugin_decides() {
    let every = plugin_path("every_hook.wasm");
    let sections = format!(
        "{}\n[plugin.every]\ncomponent = \"{}\"\n",
        misbehave_section("optional", "on_failure = \"skip\""),
        every.display()
    );
    let server = Server::start_config(&config(&sections, "plugins = [\"optional\", \"every\"]"));
    let mut c = Client::greeted(server.addr());
    // misbehave decides NOOP: every-hook is not asked.
    assert_eq!(c.expect("NOOP anything", 250).text(), "fine");
    // misbehave fails with `skip`: every-hook answers instead.
    assert_eq!(
        c.expect("NOOP bad-reply", 250).text(),
        "every-hook noop bad-reply [call 1]"
    );
    // HELO: only every-hook exports it.
    assert!(
        c.expect("HELO client.example", 250)
            .text()
            .starts_with("every-hook helo")
    );
    c.expect("MAIL FROM:<anne@example.com>", 250);
    // RCPT: misbehave answers none (no objection), so every-hook decides.
    assert!(
        c.expect("RCPT TO:<bart@example.com>", 250)
            .text()
            .contains("every-hook rcpt bart@example.com")
    );
    c.expect("RCPT TO:<reject@example.com>", 550);
}

#[test]
fn fuel_bounds_a_hook_deterministically() {
    let toml = format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\nfuel = true\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"m\"\n\n[plugin.m]\ncomponent = \"{}\"\nfuel = 50000000\nhook_timeout = 60\n",
        plugin_path("misbehave.wasm").display()
    );
    let mut server = Server::start_config(&toml);
    let mut c = Client::greeted(server.addr());
    let started = Instant::now();
    c.expect("NOOP loop", 451);
    // Stopped by the fuel budget long before the 60 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.wait_for_stderr("all fuel consumed");
    c.expect("NOOP", 250);
}
