//! A cluster: three wasmtp nodes behind a real HAProxy (examples/haproxy/,
//! round-robin here so that successive sessions land on other nodes),
//! sharing one real PostgreSQL through `[store]`. A greylisted retry that
//! lands on another node passes; a rate limit counted across the three is
//! exact; clients sending while a node is SIGKILLed find every message that
//! got a `250` in the queue, once.

#[path = "harness/mod.rs"]
mod harness;
#[path = "harness/postgres.rs"]
mod pg;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Client, Process, Server, free_port, repo_root, run_client_script};
use wasmtp::store::{BackendSettings, Store, StoreSettings};

fn haproxy() -> PathBuf {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("haproxy is not installed (apt-get install haproxy; .ci/run does)")
}

fn node(name: &str, url: &str, chain: &str) -> Server {
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{name}.wasmtp.test"

        [store]
        backend = "postgres"
        url = "{url}"
        pool_size = 4

        [[listener]]
        name = "from-haproxy"
        address = "127.0.0.1:0"
        proxy_protocol = true
        plugins = [{chain}]

        [plugin.grey]
        component = "greylist"
        args = ["1", "60"]

        [plugin.limit]
        component = "ratelimit"
        args = ["sender", "10", "60"]
        "#
    ))
}

/// examples/haproxy/haproxy.cfg on `front`, balancing round-robin over
/// `nodes`, without its runtime API socket.
struct Proxy {
    _process: Process,
    front: SocketAddr,
}

fn start_haproxy(dir: &Path, nodes: &[SocketAddr]) -> Proxy {
    let example =
        std::fs::read_to_string(repo_root().join("examples/haproxy/haproxy.cfg")).unwrap();
    let port = free_port();
    let mut config = String::new();
    for line in example.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("stats socket") || trimmed.starts_with("server ") {
            continue;
        }
        let line = match trimmed {
            t if t.starts_with("maxconn") => "    maxconn 1000".to_owned(),
            t if t.starts_with("bind :25") => format!("    bind 127.0.0.1:{port}"),
            t if t.starts_with("balance") => "    balance roundrobin".to_owned(),
            _ => line.to_owned(),
        };
        config.push_str(&line);
        config.push('\n');
    }
    for (i, addr) in nodes.iter().enumerate() {
        config.push_str(&format!("    server node{} {addr}\n", i + 1));
    }
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(haproxy());
    command.arg("-db").arg("-f").arg(&file);
    let mut process = Process::spawn("haproxy", command);
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(front).is_err() {
        if Instant::now() > deadline {
            process.fail("HAProxy never listened");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Proxy {
        _process: process,
        front,
    }
}

/// One session through the proxy: the node that served it and the reply
/// to MAIL, or to RCPT when MAIL passed.
fn attempt(front: SocketAddr, from: &str, to: &str) -> (String, String) {
    let mut c = Client::connect(front);
    let greeting = c.expect_reply(220).text();
    let node = greeting.split('.').next().unwrap().to_owned();
    c.expect("EHLO client.example", 250);
    let mail = c.cmd(&format!("MAIL FROM:<{from}>"));
    let reply = if mail.code == 250 {
        c.cmd(&format!("RCPT TO:<{to}>"))
    } else {
        mail
    };
    c.expect("QUIT", 221);
    (node, format!("{} {}", reply.code, reply.text()))
}

#[test]
fn greylist_and_ratelimit_across_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let url = pg::Postgres::shared().database();
    let nodes: Vec<Server> = (1..=3)
        .map(|n| node(&format!("node{n}"), &url, "\"limit\", \"grey\", \"sink\""))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let proxy = start_haproxy(dir.path(), &addrs);

    // First sight on one node; after the delay the retry, on the next node
    // round-robin, passes.
    let (first, reply) = attempt(proxy.front, "anne@example.com", "bob@example.net");
    assert!(
        reply.starts_with("451 4.7.1 Greylisted"),
        "{first}: {reply}"
    );
    std::thread::sleep(Duration::from_millis(1300));
    let (second, reply) = attempt(proxy.front, "anne@example.com", "bob@example.net");
    assert_ne!(first, second, "the retry should land on another node");
    assert_eq!(reply, "250 OK", "{second}");

    // 30 sessions from one sender over the three nodes, limit 10: exactly
    // 10 get past MAIL, whichever node served them.
    let mut served = HashSet::new();
    let mut passed = 0;
    for _ in 0..30 {
        let (node, reply) = attempt(proxy.front, "bulk@example.com", "bob@example.net");
        served.insert(node);
        if !reply.starts_with("451 4.7.1 Rate limit reached") {
            passed += 1;
        }
    }
    assert_eq!(served.len(), 3, "{served:?}");
    assert_eq!(passed, 10);
    drop(nodes);
}

/// 8 clients send through HAProxy while one node is SIGKILLed: every
/// message that got a `250` is in the shared queue, once, with its content.
#[test]
fn node_killed_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let url = pg::Postgres::shared().database();
    let nodes: Vec<Server> = (1..=3)
        .map(|n| node(&format!("node{n}"), &url, "\"queue\""))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let proxy = start_haproxy(dir.path(), &addrs);
    let port = proxy.front.port().to_string();
    let load = std::thread::spawn(move || {
        run_client_script(
            "queue_load.py",
            &["127.0.0.1", &port, "--clients", "8", "--seconds", "8"],
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    nodes[1].signal("KILL");
    let out: serde_json::Value = serde_json::from_str(&load.join().unwrap()).unwrap();
    let mut queued = Vec::new();
    for m in out["messages"].as_array().unwrap() {
        if m["code"] == 250 {
            let text = m["text"].as_str().unwrap();
            let id = text
                .strip_prefix("2.0.0 Ok: queued as ")
                .unwrap()
                .to_owned();
            queued.push((m["message_id"].as_str().unwrap().to_owned(), id));
        }
    }
    assert!(queued.len() > 20, "only {} queued", queued.len());
    let unique: HashSet<&str> = queued.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(unique.len(), queued.len(), "a queue id acknowledged twice");
    let settings = StoreSettings {
        backend: BackendSettings::Postgres { url, pool_size: 2 },
        ..StoreSettings::default()
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open(&settings).unwrap();
        let listed = store.queue.list(None, 1_000_000).await.unwrap();
        let ids: HashSet<&str> = listed.iter().map(|m| m.id.as_str()).collect();
        for (message_id, id) in &queued {
            assert!(ids.contains(id.as_str()), "{id} ({message_id}) got a 250 but is not queued");
            let stored = store.queue.show(id).await.unwrap().unwrap();
            assert!(
                String::from_utf8_lossy(&stored.message).contains(&format!("Message-ID: {message_id}\r\n")),
                "{id} holds another message"
            );
        }
        eprintln!(
            "{} acknowledged, {} in the queue (a message cut off by the kill may be queued unacknowledged)",
            queued.len(),
            listed.len()
        );
    });
    drop(nodes);
}
