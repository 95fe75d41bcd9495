//! The built-in `queue` plugin and `wasmtp queue` through the real binary,
//! on SQLite in a temporary state directory and on a real PostgreSQL
//! (`harness/postgres.rs`): a `250 … queued as ID` only once the message is
//! durable, a `4xx` when it can't be, the consumer protocol, and the
//! operator's commands.

#[path = "harness/mod.rs"]
mod harness;
#[path = "harness/postgres.rs"]
mod pg;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use harness::{Client, HOSTNAME, Server, WASMTP, python, repo_root, run_client_script};
use wasmtp::store::{BackendSettings, Store, StoreSettings};

fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wasmtp-queue-")
        .tempdir()
        .unwrap()
}

fn config(store: &str) -> String {
    format!(
        r#"
[server]
hostname = "{HOSTNAME}"

[store]
{store}
queue_attempts = 2
queue_backoff = 0.2

[[listener]]
address = "127.0.0.1:0"
plugin = "queue"
"#
    )
}

fn sqlite(dir: &Path) -> String {
    format!("path = \"{}\"", dir.display())
}

fn postgres(url: &str) -> String {
    format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4")
}

/// `wasmtp queue ARGS...`.
fn queue(args: &[&str]) -> Output {
    Command::new(WASMTP)
        .arg("queue")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run wasmtp queue")
}

/// `wasmtp queue ARGS...`, which must succeed; its stdout.
fn queue_ok(args: &[&str]) -> String {
    let out = queue(args);
    assert!(
        out.status.success(),
        "wasmtp queue {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send one message; the queue id from `250 2.0.0 Ok: queued as ID`.
fn send(addr: std::net::SocketAddr, subject: &str) -> String {
    let mut c = Client::after_ehlo(addr);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bob@example.net>", 250);
    c.expect("DATA", 354);
    c.send_raw(format!("Subject: {subject}\r\n\r\nHello\r\n..dot-stuffed\r\n.\r\n").as_bytes());
    let reply = c.expect_reply(250);
    c.expect("QUIT", 221);
    let text = reply.text();
    let id = text
        .strip_prefix("2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not a queued reply: {text}"));
    id.to_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The embedded default: `-c queue STATE_DIR`, what the queue holds, and the
/// example consumer delivering it into a Maildir.
#[test]
fn sqlite_queue_and_the_example_consumer() {
    let dir = state_dir();
    let state = dir.path().join("state");
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "queue",
        state.to_str().unwrap(),
    ]);
    let ids: Vec<String> = (0..3)
        .map(|i| send(server.addr(), &format!("m{i}")))
        .collect();
    let store = ["--state-dir", state.to_str().unwrap()];

    let listed = json_lines(&queue_ok(&[&store[..], &["list", "--json"]].concat()));
    let listed_ids: Vec<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, ids);
    assert_eq!(listed[0]["state"], "ready");
    assert_eq!(listed[0]["mail_from"], "anne@example.com");
    assert_eq!(listed[0]["rcpt_to"], serde_json::json!(["bob@example.net"]));

    let shown: serde_json::Value =
        serde_json::from_str(&queue_ok(&[&store[..], &["show", &ids[0]]].concat())).unwrap();
    assert_eq!(shown["facts"]["client"]["address"], "127.0.0.1");
    assert_eq!(shown["facts"]["helo"], "client.example");
    let raw = queue_ok(&[&store[..], &["show", &ids[0], "--message"]].concat());
    assert_eq!(raw, "Subject: m0\r\n\r\nHello\r\n.dot-stuffed\r\n");
    assert!(
        queue_ok(&[&store[..], &["stats"]].concat()).starts_with("ready 3\nleased 0\ndead 0\n")
    );

    // The example consumer: claim, deliver into a Maildir, ack.
    let maildir = dir.path().join("Maildir");
    let out = Command::new(python())
        .arg(repo_root().join("examples/queue/consumer.py"))
        .args(["--wasmtp", WASMTP, "--state-dir", state.to_str().unwrap()])
        .args(["--maildir", maildir.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = std::fs::read_dir(maildir.join("new")).unwrap().count();
    assert_eq!(delivered, 3);
    assert!(
        queue_ok(&[&store[..], &["stats"]].concat()).starts_with("ready 0\nleased 0\ndead 0\n")
    );
    server.terminate();
}

/// The consumer protocol and the operator's commands, on one backend
/// (`--config`: the config's `[store]`, with `queue_attempts = 2`).
fn commands(toml: &str) {
    let dir = state_dir();
    let file = dir.path().join("wasmtp.toml");
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap();
    let server = Server::start_config(toml);
    let a = send(server.addr(), "a");
    let b = send(server.addr(), "b");
    let cli = |args: &[&str]| queue_ok(&[&["--config", file][..], args].concat());
    let cli_fails = |args: &[&str]| {
        let out = queue(&[&["--config", file][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Claim, release with a back-off, claim again, release: dead-lettered
    // after the second attempt.
    let claimed: serde_json::Value =
        serde_json::from_str(&cli(&["claim", "--consumer", "c1"])).unwrap();
    assert_eq!(
        (claimed["id"].as_str(), claimed["attempt"].as_u64()),
        (Some(a.as_str()), Some(1))
    );
    assert_eq!(claimed["rcpt_to"], serde_json::json!(["bob@example.net"]));
    assert_eq!(claimed["facts"]["client"]["address"], "127.0.0.1");
    assert_eq!(
        cli(&["release", &a, "1", "--error", "452 mailbox full"]).trim(),
        "ready"
    );
    // Not before its back-off (0.2 s): b comes first.
    let next: serde_json::Value = serde_json::from_str(&cli(&["claim"])).unwrap();
    assert_eq!(next["id"].as_str(), Some(b.as_str()));
    std::thread::sleep(Duration::from_millis(400));
    let again: serde_json::Value =
        serde_json::from_str(&cli(&["claim", "--consumer", "c2"])).unwrap();
    assert_eq!(
        (again["id"].as_str(), again["attempt"].as_u64()),
        (Some(a.as_str()), Some(2))
    );
    assert_eq!(
        cli(&["release", &a, "2", "--error", "550 no such user"]).trim(),
        "dead"
    );
    let dead = json_lines(&cli(&["list", "--state", "dead", "--json"]));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["last_error"], "550 no such user");
    // Requeued: due now, attempts from zero; acked once, and only once.
    cli(&["requeue", &a]);
    let fresh: serde_json::Value = serde_json::from_str(&cli(&["claim"])).unwrap();
    assert_eq!(fresh["attempt"].as_u64(), Some(1));
    cli(&["ack", &a, "1"]);
    assert!(cli_fails(&["ack", &a, "1"]).contains("is no longer held"));
    assert!(cli_fails(&["show", &a]).contains(&format!("no message {a} in the queue")));

    // A lease that ends hands the message to the next consumer; the first
    // can no longer ack it.
    cli(&["release", &b, "1", "--delay", "0"]);
    let first: serde_json::Value =
        serde_json::from_str(&cli(&["claim", "--consumer", "slow", "--lease", "0.3"])).unwrap();
    assert_eq!(first["attempt"].as_u64(), Some(2));
    std::thread::sleep(Duration::from_millis(500));
    // Its lease ended after the last attempt: dead-lettered, not handed over.
    assert_eq!(cli(&["claim"]).trim(), "");
    assert_eq!(
        json_lines(&cli(&["list", "--state", "dead", "--json"])).len(),
        1
    );
    cli(&["requeue", &b]);
    cli(&["claim", "--consumer", "slow", "--lease", "0.3"]);
    std::thread::sleep(Duration::from_millis(500));
    let taken: serde_json::Value =
        serde_json::from_str(&cli(&["claim", "--consumer", "fast"])).unwrap();
    assert_eq!(
        (taken["id"].as_str(), taken["attempt"].as_u64()),
        (Some(b.as_str()), Some(2))
    );
    assert!(cli_fails(&["ack", &b, "1"]).contains("is no longer held"));
    cli(&["ack", &b, "2"]);

    // A consumer waiting for work gets a message as soon as it is
    // committed: woken by NOTIFY on PostgreSQL (its fallback poll is every
    // 2 s), within 0.1 s on SQLite.
    let waiting = std::thread::spawn({
        let file = file.to_owned();
        move || {
            let out = queue(&["--config", &file, "claim", "--wait", "30"]);
            (out, std::time::Instant::now())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let d = send(server.addr(), "d");
    let sent = std::time::Instant::now();
    let (out, claimed_at) = waiting.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let claimed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claimed["id"].as_str(), Some(d.as_str()));
    let woken = claimed_at.saturating_duration_since(sent);
    assert!(
        woken < Duration::from_millis(1000),
        "claimed {woken:?} after the 250"
    );
    cli(&["ack", &d, "1"]);
    // Nothing due: `--wait` answers nothing once its time is up.
    let started = std::time::Instant::now();
    assert_eq!(cli(&["claim", "--wait", "0.3"]).trim(), "");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let c = send(server.addr(), "c");
    cli(&["delete", &c]);
    assert!(cli_fails(&["delete", &c]).contains("no message"));
    assert!(cli(&["stats"]).starts_with("ready 0\nleased 0\ndead 0\nbytes 0\n"));
    let usage = queue(&["--config", file, "list", "--state", "lost"]);
    assert_eq!(usage.status.code(), Some(2));
    server.terminate();
}

#[test]
fn commands_on_sqlite() {
    let dir = state_dir();
    commands(&config(&sqlite(dir.path())));
}

#[test]
fn commands_on_postgres() {
    let url = pg::Postgres::shared().database();
    commands(&config(&postgres(&url)));
}

/// A message split between tenants is queued once per tenant, each entry
/// with its own recipients.
#[test]
fn tenants_queue_their_own_recipients() {
    let dir = state_dir();
    let server = Server::start_config(&format!(
        r#"
[server]
hostname = "{HOSTNAME}"
[store]
{}
[[listener]]
address = "127.0.0.1:0"
plugins = ["queue"]
tenants = ["acme"]
[tenant.acme]
domains = ["acme.example"]
plugins = ["queue"]
"#,
        sqlite(dir.path())
    ));
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bob@example.net>", 250);
    c.expect("RCPT TO:<carol@acme.example>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: split\r\n\r\nHello\r\n.\r\n");
    let id = c.expect_reply(250).text();
    let id = id.strip_prefix("2.0.0 Ok: queued as ").unwrap().to_owned();
    c.expect("QUIT", 221);
    let listed = json_lines(&queue_ok(&[
        "--state-dir",
        dir.path().to_str().unwrap(),
        "list",
        "--json",
    ]));
    let mut entries: Vec<(String, serde_json::Value)> = listed
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["rcpt_to"].clone()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        entries,
        [
            (id.clone(), serde_json::json!(["bob@example.net"])),
            (
                format!("{id}-acme"),
                serde_json::json!(["carol@acme.example"])
            ),
        ]
    );
    server.terminate();
}

/// What the load script saw: (Message-ID, queue id) of every `250`, and
/// how many got a `4xx`.
fn outcomes(json: &str) -> (Vec<(String, String)>, usize) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut queued = Vec::new();
    let mut deferred = 0;
    for m in v["messages"].as_array().unwrap() {
        let code = m["code"].as_u64().unwrap();
        let text = m["text"].as_str().unwrap();
        match code {
            250 => {
                let id = text
                    .strip_prefix("2.0.0 Ok: queued as ")
                    .unwrap_or_else(|| panic!("a 250 that is not a queued reply: {text}"));
                queued.push((m["message_id"].as_str().unwrap().to_owned(), id.to_owned()));
            }
            400..=499 => deferred += 1,
            0 => {}
            other => panic!("unexpected reply {other} {text}"),
        }
    }
    (queued, deferred)
}

/// Every message that got a `250` is in the queue, once, with its content.
async fn all_queued(settings: &StoreSettings, queued: &[(String, String)]) {
    let store = Store::open(settings).unwrap();
    let listed = store.queue.list(None, 1_000_000).await.unwrap();
    let ids: HashSet<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), listed.len());
    for (message_id, id) in queued {
        assert!(
            ids.contains(id.as_str()),
            "{id} ({message_id}) got a 250 but is not queued"
        );
        let stored = store.queue.show(id).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&stored.message);
        assert!(
            text.contains(&format!("Message-ID: {message_id}\r\n")),
            "{id} holds another message"
        );
    }
}

/// SQLite: the server is SIGKILLed in the middle of a load; every message
/// acknowledged with a `250` before is in the queue.
#[test]
fn sqlite_sigkill_loses_nothing_acknowledged() {
    let dir = state_dir();
    let server = Server::start_config(&config(&sqlite(dir.path())));
    let addr = server.addr();
    let load = std::thread::spawn(move || {
        run_client_script(
            "queue_load.py",
            &[
                "127.0.0.1",
                &addr.port().to_string(),
                "--clients",
                "8",
                "--seconds",
                "20",
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    server.signal("KILL");
    let (queued, _) = outcomes(&load.join().unwrap());
    assert!(
        queued.len() > 20,
        "only {} messages were queued before the kill",
        queued.len()
    );
    let settings = StoreSettings {
        backend: BackendSettings::Sqlite {
            dir: dir.path().to_owned(),
        },
        ..StoreSettings::default()
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(all_queued(&settings, &queued));
    drop(server);
}

/// PostgreSQL stopped in the middle of a load: clients get `451`, never a
/// `250` for a message that is not stored, and sending works again once
/// the database is back, without restarting the server.
#[test]
fn postgres_stopped_mid_load_defers_and_recovers() {
    let db = pg::Postgres::start();
    let url = db.url_of("postgres");
    let server = Server::start_config(&config(&postgres(&url)));
    let addr = server.addr();
    send(addr, "warm-up");
    let load = std::thread::spawn(move || {
        run_client_script(
            "queue_load.py",
            &[
                "127.0.0.1",
                &addr.port().to_string(),
                "--clients",
                "8",
                "--seconds",
                "8",
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    db.stop();
    std::thread::sleep(Duration::from_secs(3));
    db.resume();
    let (queued, deferred) = outcomes(&load.join().unwrap());
    assert!(
        deferred > 0,
        "no client was deferred while PostgreSQL was down"
    );
    assert!(queued.len() > 10, "{} queued", queued.len());
    // Back without a restart.
    send(addr, "after");
    let settings = StoreSettings {
        backend: BackendSettings::Postgres { url, pool_size: 2 },
        ..StoreSettings::default()
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(all_queued(&settings, &queued));
    server.terminate();
}
