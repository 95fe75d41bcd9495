//! The built-in `greylist` and `ratelimit` plugins through the real binary:
//! on SQLite, and on two nodes sharing one real PostgreSQL (a retry that
//! lands on the other node, a limit counted across both), and what each
//! does when the store is down.

#[path = "harness/mod.rs"]
mod harness;
#[path = "harness/postgres.rs"]
mod pg;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{Client, HOSTNAME, Server};

fn config(store: &str, plugins: &str) -> String {
    format!(
        r#"
[server]
hostname = "{HOSTNAME}"

[store]
{store}

[[listener]]
address = "127.0.0.1:0"
plugins = ["policy", "sink"]

[plugin.policy]
{plugins}
"#
    )
}

fn greylist(args: &str) -> String {
    format!("component = \"greylist\"\nargs = [{args}]")
}

fn ratelimit(args: &str) -> String {
    format!("component = \"ratelimit\"\nargs = [{args}]")
}

fn sqlite(dir: &std::path::Path) -> String {
    format!("path = \"{}\"", dir.display())
}

fn postgres(url: &str) -> String {
    format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4")
}

/// MAIL and one RCPT in a new session: the RCPT reply (or MAIL's, when
/// MAIL is refused), as `CODE TEXT`.
fn attempt(addr: SocketAddr, from: &str, to: &str) -> String {
    let mut c = Client::after_ehlo(addr);
    let mail = c.cmd(&format!("MAIL FROM:<{from}>"));
    let reply = if mail.code == 250 {
        c.cmd(&format!("RCPT TO:<{to}>"))
    } else {
        mail
    };
    c.expect("QUIT", 221);
    format!("{} {}", reply.code, reply.text())
}

fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wasmtp-policy-")
        .tempdir()
        .unwrap()
}

#[test]
fn greylist_defers_then_passes() {
    let dir = state_dir();
    let server = Server::start_config(&config(&sqlite(dir.path()), &greylist("\"1\", \"60\"")));
    let a = server.addr();
    assert_eq!(
        attempt(a, "anne@example.com", "bob@example.net"),
        "451 4.7.1 Greylisted: try again in 1 seconds"
    );
    assert!(attempt(a, "anne@example.com", "bob@example.net").starts_with("451 4.7.1 Greylisted"));
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(attempt(a, "anne@example.com", "bob@example.net"), "250 OK");
    // Passed once: passes from then on.
    assert_eq!(attempt(a, "anne@example.com", "bob@example.net"), "250 OK");
    // Another triplet is new.
    assert!(attempt(a, "anne@example.com", "carol@example.net").starts_with("451 4.7.1"));
    assert!(attempt(a, "dave@example.com", "bob@example.net").starts_with("451 4.7.1"));
    server.terminate();

    // An allowlisted network passes at once.
    let server = Server::start_config(&config(
        &sqlite(dir.path()),
        &greylist("\"300\", \"3600\", \"127.0.0.0/8\""),
    ));
    assert_eq!(
        attempt(server.addr(), "erin@example.com", "bob@example.net"),
        "250 OK"
    );
    server.terminate();
}

#[test]
fn ratelimit_per_ip_and_per_domain() {
    let dir = state_dir();
    let server = Server::start_config(&config(
        &sqlite(dir.path()),
        &ratelimit("\"ip\", \"3\", \"60\""),
    ));
    for _ in 0..3 {
        assert_eq!(
            attempt(server.addr(), "anne@example.com", "bob@example.net"),
            "250 OK"
        );
    }
    let over = attempt(server.addr(), "anne@example.com", "bob@example.net");
    assert!(
        over.starts_with("451 4.7.1 Rate limit reached for 127.0.0.1: try again in "),
        "{over}"
    );
    server.terminate();

    let server = Server::start_config(&config(
        &sqlite(dir.path()),
        &ratelimit("\"rcpt-domain\", \"2\", \"60\""),
    ));
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<a@example.net>", 250);
    c.expect("RCPT TO:<b@example.net>", 250);
    let third = c.expect("RCPT TO:<c@example.net>", 452);
    assert!(
        third
            .text()
            .starts_with("4.7.1 Rate limit reached for example.net"),
        "{}",
        third.text()
    );
    c.expect("RCPT TO:<c@example.org>", 250);
    c.expect("QUIT", 221);
    server.terminate();
}

/// Two nodes, one PostgreSQL: a greylisted retry passes on the other node,
/// and a limit counted on both is exact.
#[test]
fn across_two_nodes() {
    let url = pg::Postgres::shared().database();
    let grey = config(&postgres(&url), &greylist("\"1\", \"60\""));
    let (one, two) = (Server::start_config(&grey), Server::start_config(&grey));
    assert!(attempt(one.addr(), "anne@example.com", "bob@example.net").starts_with("451 4.7.1"));
    // Too early on the other node too: it knows the triplet.
    assert!(
        attempt(two.addr(), "anne@example.com", "bob@example.net")
            .starts_with("451 4.7.1 Greylisted: try again in 1")
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        attempt(two.addr(), "anne@example.com", "bob@example.net"),
        "250 OK"
    );
    assert_eq!(
        attempt(one.addr(), "anne@example.com", "bob@example.net"),
        "250 OK"
    );
    one.terminate();
    two.terminate();

    let limit = config(&postgres(&url), &ratelimit("\"sender\", \"10\", \"60\""));
    let (one, two) = (Server::start_config(&limit), Server::start_config(&limit));
    let nodes = [one.addr(), two.addr()];
    let accepted = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..5)
                        .filter(|i| {
                            attempt(nodes[(t + i) % 2], "bulk@example.com", "bob@example.net")
                                == "250 OK"
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(
        accepted, 10,
        "20 messages from one sender over two nodes, limit 10"
    );
    one.terminate();
    two.terminate();
}

/// The store down: the greylist defers (mail is delayed, never let through
/// unchecked), the rate limiter lets mail through and logs.
#[test]
fn store_down() {
    let db = pg::Postgres::start();
    let url = db.url_of("postgres");
    let grey = Server::start_config(&config(&postgres(&url), &greylist("\"1\", \"60\"")));
    let limit = Server::start_config(&config(
        &postgres(&url),
        &ratelimit("\"ip\", \"1\", \"60\""),
    ));
    db.stop();
    assert_eq!(
        attempt(grey.addr(), "anne@example.com", "bob@example.net"),
        "451 4.7.1 Greylisting is unavailable; try again later"
    );
    assert_eq!(
        attempt(limit.addr(), "anne@example.com", "bob@example.net"),
        "250 OK"
    );
    assert_eq!(
        attempt(limit.addr(), "anne@example.com", "bob@example.net"),
        "250 OK"
    );
    let mut limit = limit;
    limit.wait_for_stderr("ratelimit store: Error::Unavailable");
    db.resume();
    assert!(
        attempt(grey.addr(), "anne@example.com", "bob@example.net")
            .starts_with("451 4.7.1 Greylisted")
    );
    grey.terminate();
    limit.terminate();
}
