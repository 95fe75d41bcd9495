//! Scale-out: a real HAProxy (`haproxy -db`, Debian's package) in front of
//! two wasmtp nodes on loopback, configured from examples/haproxy/, speaking
//! PROXY protocol v2 to them. Mail sent through it reaches both nodes, and
//! the plugins of each see the original client's address and port: the
//! gatekeeper plugin's `NOOP whoami`, and the X-Peer header Mailbox writes.

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Client, Process, Server, free_port, plugin_path, repo_root};

fn haproxy() -> PathBuf {
    for candidate in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!("haproxy is not installed (apt-get install haproxy; .ci/run does)");
}

fn node(name: &str, maildir: &Path) -> Server {
    let gatekeeper = plugin_path("gatekeeper.wasm");
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{name}.wasmtp.test"
        metrics = "127.0.0.1:0"

        [[listener]]
        name = "from-haproxy"
        address = "127.0.0.1:0"
        proxy_protocol = true
        plugins = ["inbox", "gatekeeper"]

        [plugin.inbox]
        component = "mailbox"
        args = [{maildir:?}]

        [plugin.gatekeeper]
        component = {gatekeeper:?}
        "#
    ))
}

/// examples/haproxy/haproxy.cfg, bound to `front` and pointed at `nodes`,
/// without the runtime API socket (it needs /run/haproxy) and with a
/// `maxconn` this machine's file descriptor limit allows.
fn haproxy_config(front: u16, nodes: &[SocketAddr]) -> String {
    let example =
        std::fs::read_to_string(repo_root().join("examples/haproxy/haproxy.cfg")).unwrap();
    let mut out = String::new();
    for line in example.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("stats socket") || trimmed.starts_with("server ") {
            continue;
        }
        if trimmed.starts_with("maxconn") {
            out.push_str("    maxconn 1000\n");
            continue;
        }
        if trimmed.starts_with("bind :25") {
            out.push_str(&format!("    bind 127.0.0.1:{front}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for (i, addr) in nodes.iter().enumerate() {
        out.push_str(&format!("    server node{} {addr}\n", i + 1));
    }
    out
}

fn metrics_of(server: &Server) -> BTreeMap<String, f64> {
    let log = server.stderr();
    let at = log.find("serving metrics at http://").unwrap() + "serving metrics at http://".len();
    let addr: SocketAddr = log[at..].split('/').next().unwrap().parse().unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with("wasmtp_"))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        })
        .collect()
}

/// The X-Peer of each message in `maildir/new`, by Message-ID.
fn peers_in(maildir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(maildir.join("new")).into_iter().flatten() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let header = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        out.insert(header("Message-ID:").unwrap(), header("X-Peer:").unwrap());
    }
    out
}

#[test]
fn two_nodes_behind_haproxy_see_the_original_clients() {
    let dir = tempfile::tempdir().unwrap();
    let maildirs = [dir.path().join("node1"), dir.path().join("node2")];
    let nodes = [node("node1", &maildirs[0]), node("node2", &maildirs[1])];
    let front = free_port();
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        haproxy_config(front, &[nodes[0].addr(), nodes[1].addr()]),
    )
    .unwrap();
    let mut command = Command::new(haproxy());
    command.arg("-db").arg("-f").arg(&config);
    let mut proxy = Process::spawn("haproxy", command);

    let front: SocketAddr = ([127, 0, 0, 1], front).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(front).is_err() {
        if Instant::now() > deadline {
            proxy.fail("HAProxy never listened");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Ten clients, one after another, each a session with one message.
    let mut served: BTreeMap<String, Vec<(String, u16)>> = BTreeMap::new();
    for n in 0..10 {
        let mut c = Client::connect(front);
        let greeting = c.expect_reply(220).text();
        let node = greeting.split('.').next().unwrap().to_owned();
        let port = c.local_addr().port();
        c.expect("EHLO client.example", 250);
        let whoami = c.expect("NOOP whoami", 250).text();
        assert!(
            whoami.starts_with(&format!("peer=127.0.0.1:{port} ")),
            "{node} saw {whoami}, the client is port {port}"
        );
        assert!(
            whoami.contains(&format!("proxy=v2:127.0.0.1:{port} ")),
            "{whoami}"
        );
        let id = format!("<{n}.haproxy@example.com>");
        let reply = c.send_message(
            "anne@example.com",
            &["bart@example.com"],
            &format!("Message-ID: {id}\nSubject: via haproxy\n\nhello\n"),
        );
        assert_eq!(reply.code, 250, "{}", c.transcript());
        c.expect("QUIT", 221);
        served.entry(node).or_default().push((id, port));
    }
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["node1", "node2"],
        "both nodes serve: {served:?}"
    );

    // Each node's Mailbox wrote the original client in X-Peer.
    for (i, maildir) in maildirs.iter().enumerate() {
        let peers = peers_in(maildir);
        let mine = &served[&format!("node{}", i + 1)];
        assert_eq!(peers.len(), mine.len(), "node{}: {peers:?}", i + 1);
        for (id, port) in mine {
            assert_eq!(peers[id], format!("('127.0.0.1', {port})"), "node{}", i + 1);
        }
        // And the node counted its sessions (HAProxy's health checks too).
        let m = metrics_of(&nodes[i]);
        let sessions =
            m[r#"wasmtp_sessions_total{listener="from-haproxy",tenant="",outcome="accepted"}"#];
        assert!(
            sessions >= mine.len() as f64,
            "node{}: {sessions} sessions",
            i + 1
        );
    }
    eprintln!(
        "sessions through HAProxy: {:?}",
        served.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
    );

    // Stop node1 (drained, exit 0): new sessions go to node2, the
    // connections HAProxy finds refused redispatched before its health
    // checks even notice.
    let [node1, node2] = nodes;
    assert!(node1.terminate().success());
    for _ in 0..4 {
        let mut c = Client::connect(front);
        let greeting = c.expect_reply(220).text();
        assert!(greeting.starts_with("node2.wasmtp.test "), "{greeting}");
        c.expect("QUIT", 221);
    }
    drop(node2);
}
