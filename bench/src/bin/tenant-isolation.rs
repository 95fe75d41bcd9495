//! Tenant isolation: how much does one tenant's misbehaving plugin slow
//! another tenant's mail?
//!
//! One wasmtp (release build) serves two tenants on one listener, routed by
//! recipient domain: `good` (the built-in Sink) and `noisy` (the `spin` test
//! plugin, which spins in DATA until its tenant's hook deadline stops it).
//! Two runs, the same length: in the first, `noisy` is idle; in the second,
//! clients keep sending to `noisy` the whole time. Each run measures the
//! messages per second `good`'s clients get, and their p50/p99 latency.
//!
//! Run: `cargo build --release && cargo run --release -p wasmtp-bench --bin tenant-isolation`
//! Options: `--seconds N` (per run, default 10), `--good-clients N` (default 4),
//! `--noisy-clients N` (default 4), `--deadline-ms N` (noisy tenant's hook
//! deadline, default 100).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Options {
    seconds: u64,
    good_clients: usize,
    noisy_clients: usize,
    deadline_ms: u64,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 10,
        good_clients: 4,
        noisy_clients: 4,
        deadline_ms: 100,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--seconds" => o.seconds = value,
            "--good-clients" => o.good_clients = value as usize,
            "--noisy-clients" => o.noisy_clients = value as usize,
            "--deadline-ms" => o.deadline_ms = value,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn start_server(dir: &Path, deadline_ms: u64) -> (Child, SocketAddr) {
    let spin = repo().join("target/release/wasm-plugins/wasm32-wasip2/release/spin.wasm");
    assert!(
        spin.exists(),
        "{} is missing: run `cargo build --release` first",
        spin.display()
    );
    let config = dir.join("tenants.toml");
    std::fs::write(&config, format!(
        "[server]\nhostname = \"bench.example\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\ntenants = [\"good\", \"noisy\"]\n\n\
         [tenant.good]\nplugins = [\"sink\"]\ndomains = [\"good.example\"]\n\n\
         [tenant.noisy]\nplugins = [\"spin\"]\ndomains = [\"noisy.example\"]\nhook_timeout = {}\n\n\
         [plugin.spin]\ncomponent = \"{}\"\n",
        deadline_ms as f64 / 1000.0, spin.display()
    )).unwrap();
    let mut child = Command::new(repo().join("target/release/wasmtp"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,wasmtp::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run target/release/wasmtp (cargo build --release)");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("wasmtp exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so the server never blocks on it.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if std::env::var_os("BENCH_SHOW_LOG").is_some() {
                eprintln!("{line}");
            }
        }
    });
    (child, addr)
}

/// One SMTP client sending to `domain` until `stop`; returns each
/// transaction's latency and final reply code.
fn client(addr: SocketAddr, domain: &'static str, stop: Arc<AtomicBool>) -> Vec<(Duration, u16)> {
    let mut latencies = Vec::new();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let reply = |reader: &mut BufReader<TcpStream>| -> u16 {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    };
    reply(&mut reader);
    writer.write_all(b"EHLO bench\r\n").unwrap();
    reply(&mut reader);
    let message = format!("MAIL FROM:<load@bench.example>\r\nRCPT TO:<user@{domain}>\r\nDATA\r\n");
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        writer.write_all(message.as_bytes()).unwrap();
        let codes = [reply(&mut reader), reply(&mut reader), reply(&mut reader)];
        assert_eq!(codes, [250, 250, 354], "transaction to {domain}");
        // About 1 KiB: a header, a blank line, and a line of 990 octets.
        writer.write_all(b"Subject: bench\r\n\r\n").unwrap();
        writer
            .write_all(&[b"x".repeat(990), b"\r\n.\r\n".to_vec()].concat())
            .unwrap();
        let code = reply(&mut reader);
        latencies.push((started.elapsed(), code));
    }
    latencies
}

struct Run {
    good_msgs: usize,
    noisy_msgs: usize,
    good: Vec<Duration>,
}

fn run(addr: SocketAddr, o: &Options, noisy: bool) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let good: Vec<_> = (0..o.good_clients)
        .map(|_| {
            let s = stop.clone();
            std::thread::spawn(move || client(addr, "good.example", s))
        })
        .collect();
    let noisy: Vec<_> = (0..if noisy { o.noisy_clients } else { 0 })
        .map(|_| {
            let s = stop.clone();
            std::thread::spawn(move || client(addr, "noisy.example", s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(o.seconds));
    stop.store(true, Ordering::Relaxed);
    let good_all: Vec<(Duration, u16)> = good.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let refused: Vec<u16> = good_all
        .iter()
        .map(|(_, code)| *code)
        .filter(|c| *c != 250)
        .collect();
    assert!(
        refused.is_empty(),
        "the good tenant's mail must all be accepted; {} were not (first: {})",
        refused.len(),
        refused[0]
    );
    let mut good_lat: Vec<Duration> = good_all.into_iter().map(|(d, _)| d).collect();
    let noisy_msgs = noisy.into_iter().map(|h| h.join().unwrap().len()).sum();
    good_lat.sort();
    Run {
        good_msgs: good_lat.len(),
        noisy_msgs,
        good: good_lat,
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server(dir.path(), o.deadline_ms);
    // Warm up: instantiate once, fill caches.
    run(addr, &Options { seconds: 1, ..o }, false);
    let idle = run(addr, &o, false);
    let busy = run(addr, &o, true);
    server.kill().ok();
    let rate = |r: &Run| r.good_msgs as f64 / o.seconds as f64;
    println!(
        "tenant isolation: {} good clients, {} noisy clients, noisy deadline {} ms, {} s per run, {} CPUs",
        o.good_clients,
        o.noisy_clients,
        o.deadline_ms,
        o.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| run | good msgs/s | good p50 ms | good p99 ms | noisy msgs answered (each spun to its deadline, 451) |"
    );
    println!("|---|---|---|---|---|");
    for (name, r) in [("noisy idle", &idle), ("noisy spinning", &busy)] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            rate(r),
            pct(&r.good, 0.5),
            pct(&r.good, 0.99),
            r.noisy_msgs
        );
    }
    println!(
        "good tenant keeps {:.0}% of its throughput while the noisy tenant spins",
        100.0 * rate(&busy) / rate(&idle)
    );
}
