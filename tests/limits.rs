//! The limits that keep a server standing, each tripped through the real
//! server: idle timeout, total DATA time, command call limit, unknown
//! commands, connections (in all and per client address), recipients per
//! transaction, and line lengths.

#[path = "harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Client, HOSTNAME, Server};

fn server(extra: &str) -> Server {
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        [[listener]]
        address = "127.0.0.1:0"
        plugin = "sink"
        {extra}
        "#
    ))
}

#[test]
fn idle_timeout_says_421_and_closes() {
    let s = server("timeout = 0.5");
    let mut c = Client::greeted(s.addr());
    let started = Instant::now();
    assert_eq!(
        c.expect_reply(421).text(),
        "4.4.2 Timeout, closing connection"
    );
    c.expect_closed();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_idle_timeout_counts_from_the_last_command() {
    // Commands every 200 ms keep a session with a 500 ms timeout open well
    // past 500 ms; then silence closes it half a second after the last one.
    let s = server("timeout = 0.5");
    let mut c = Client::greeted(s.addr());
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        c.expect("NOOP", 250);
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = Instant::now();
    c.expect("NOOP", 250);
    assert_eq!(
        c.expect_reply(421).text(),
        "4.4.2 Timeout, closing connection"
    );
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(450) && idle < Duration::from_secs(3),
        "closed {idle:?} after the last command"
    );
}

#[test]
fn data_time_is_bounded_as_a_whole() {
    // A client that sends a line every 200 ms is never idle for 10 s, but
    // its DATA may not take more than a second in all.
    let s = server("timeout = 10\ndata_timeout = 1");
    let mut c = Client::after_ehlo(s.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    let started = Instant::now();
    // Lines for 800 ms, then silence well short of the idle timeout.
    while started.elapsed() < Duration::from_millis(800) {
        c.send("a slow line");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reply = c.read_reply();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(reply.code, 421, "{reply}");
    assert_eq!(
        reply.text(),
        "4.4.2 Message transfer took too long, closing connection"
    );
    c.expect_closed();
}

#[test]
fn command_call_limit_as_aiosmtpd() {
    let s = server("command_call_limit = 3");
    let mut c = Client::greeted(s.addr());
    for _ in 0..3 {
        c.expect("NOOP", 250);
    }
    assert_eq!(
        c.expect("NOOP", 421).text(),
        "4.7.0 NOOP sent too many times"
    );
    c.expect_closed();
    // Each verb has its own budget.
    let mut c = Client::greeted(s.addr());
    for _ in 0..3 {
        c.expect("NOOP", 250);
        c.expect("RSET", 250);
    }
    c.expect("EHLO client.example", 250);
}

#[test]
fn unknown_commands_end_the_session() {
    // aiosmtpd's five by default.
    let s = server("");
    let mut c = Client::greeted(s.addr());
    for _ in 0..4 {
        c.expect("XYZZY", 500);
    }
    assert_eq!(
        c.expect("XYZZY", 502).text(),
        "5.5.1 Too many unrecognized commands, goodbye."
    );
    c.expect_closed();
    // Configurable.
    let s = server("max_unknown_commands = 2");
    let mut c = Client::greeted(s.addr());
    c.expect("XYZZY", 500);
    c.expect("XYZZY", 502);
    c.expect_closed();
}

#[test]
fn max_connections_in_all() {
    let s = server("max_connections = 2");
    let mut first = Client::greeted(s.addr());
    let _second = Client::greeted(s.addr());
    let mut third = Client::connect(s.addr());
    let refused = third.expect_reply(421);
    assert_eq!(
        refused.text(),
        format!("4.7.0 {HOSTNAME} Too many connections, try again later")
    );
    third.expect_closed();
    // A slot frees when a connection ends.
    first.expect("QUIT", 221);
    first.expect_closed();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Client::connect(s.addr());
        match again.read_reply().code {
            220 => break,
            421 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            code => panic!("got {code} after a slot was freed"),
        }
    }
}

#[test]
fn max_connections_per_client_address() {
    let s = server("max_connections_per_ip = 1");
    let _first = Client::greeted(s.addr());
    let mut second = Client::connect(s.addr());
    second.expect_reply(421);
    second.expect_closed();
}

#[test]
fn max_recipients_per_transaction() {
    let s = server("max_recipients = 2");
    let mut c = Client::after_ehlo(s.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("RCPT TO:<cate@example.com>", 250);
    assert_eq!(
        c.expect("RCPT TO:<dave@example.com>", 452).text(),
        "4.5.3 Error: too many recipients"
    );
    // The two accepted ones stand; a new transaction starts afresh.
    c.expect("DATA", 354);
    c.send_raw(b"hi\r\n.\r\n");
    c.expect_reply(250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<dave@example.com>", 250);
}

#[test]
fn line_limits() {
    let s = server("");
    let mut c = Client::after_ehlo(s.addr());
    // A command longer than 512 octets (RFC 5321 4.5.3.1.4).
    assert_eq!(
        c.expect(&format!("NOOP {}", "x".repeat(600)), 500).text(),
        "Command line too long"
    );
    // A line past the stream limit is read to its end and refused whole.
    c.send_raw(&[b'x'; 5000]);
    c.send("");
    assert_eq!(c.expect_reply(500).text(), "Command line too long");
    // A text line longer than 1000 octets (RFC 5321 4.5.3.1.6) in DATA.
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    c.send(&"y".repeat(1200));
    c.send(".");
    assert_eq!(
        c.expect_reply(500).text(),
        "Line too long (see RFC5321 4.5.3.1.6)"
    );
    c.expect("NOOP", 250);
}
