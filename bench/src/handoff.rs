//! Mail to an application (BENCHMARKS.md, "Hand-off over HTTP"):
//!
//! - the built-in `webhook` posting every message as signed JSON to a
//!   receiver on loopback (in this process, answering `200` at once),
//!   beside `sink`, for 1 KiB and 1 MiB messages on one reused connection:
//!   msgs/s and the server's CPU per message;
//! - the parsed-message import (`wasmtp:smtp/message`, parsed by the host)
//!   against the same parse inside the guest (`tests/plugins/guest-parse`,
//!   mail-parser built to wasm), per `data` call on a live instance: what a
//!   plugin saves by asking the host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use wasmtp::plugin::loaded::Source;
use wasmtp::plugin::runtime::RuntimeSettings;
use wasmtp::plugin::{Chain, Runtime, SessionPlugin};
use wasmtp::smtp::spool::Content;

use crate::micro::{self, Quantiles};
use crate::peers::Tools;
use crate::{load, procfs};

/// One server configuration under load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delivery {
    pub peer: String,
    pub size: usize,
    pub messages: u64,
    pub msgs_per_s: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    /// The server's CPU (user + system) per message.
    pub cpu_us_per_msg: f64,
    /// Requests the receiver answered (webhook only): one per message.
    pub posted: u64,
}

/// One plugin's `data` call on a live instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Parse {
    pub plugin: String,
    pub message: String,
    pub call: Quantiles,
    /// What the plugin answered: both must have found the same parts.
    pub answer: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub deliveries: Vec<Delivery>,
    pub parses: Vec<Parse>,
}

/// An HTTP/1.1 receiver that reads each request whole and answers
/// `200 {}`: the application at its fastest, so what is measured is
/// wasmtp's side. Runs on its own thread until the process ends.
fn receiver() -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let posted = Arc::new(AtomicU64::new(0));
    let count = posted.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the receiver");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let count = count.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Ok(Some(())) = request(&mut stream).await {
                        count.fetch_add(1, Ordering::Relaxed);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if stream.get_mut().write_all(ok).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    Ok((addr, posted))
}

/// Read one request (head, then a `content-length` or chunked body);
/// `None` at the end of the connection.
async fn request(stream: &mut BufReader<tokio::net::TcpStream>) -> std::io::Result<Option<()>> {
    let (mut length, mut chunked, mut line) = (0usize, false, String::new());
    let mut first = true;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if line == "\r\n" && !first {
            break;
        }
        first = false;
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut sink = vec![0u8; 64 << 10];
    if !chunked {
        let mut left = length;
        while left > 0 {
            let n = stream.read(&mut sink[..left.min(64 << 10)]).await?;
            if n == 0 {
                return Ok(None);
            }
            left -= n;
        }
        return Ok(Some(()));
    }
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let size =
            usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut left = size + 2; // the chunk and its CRLF
        while left > 0 {
            let n = stream.read(&mut sink[..left.min(64 << 10)]).await?;
            if n == 0 {
                return Ok(None);
            }
            left -= n;
        }
        if size == 0 {
            return Ok(Some(()));
        }
    }
}

/// `wasmtp -n -l ADDR -s 0 ARGS...`, once it greets.
fn start(tools: &Tools, args: &[String]) -> Result<(Child, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = Command::new(&tools.wasmtp)
        .args(["-n", "-l", &addr.to_string(), "-s", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tools.wasmtp.display()))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("wasmtp {args:?} exited with {status}");
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            let mut greeting = [0u8; 3];
            if s.read_exact(&mut greeting).is_ok() && &greeting == b"220" {
                let _ = s.write_all(b"QUIT\r\n");
                return Ok((child, addr));
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            bail!("wasmtp {args:?} did not greet within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn deliveries(tools: &Tools, seconds: f64) -> Result<Vec<Delivery>> {
    let (receiver, posted) = receiver()?;
    let url = format!("http://{receiver}/inbound");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for size in [1024, 1 << 20] {
        for (peer, args) in [
            ("sink", vec!["-c".to_owned(), "sink".to_owned()]),
            (
                "webhook (JSON, signed)",
                vec![
                    "-c".to_owned(),
                    "webhook".to_owned(),
                    url.clone(),
                    "secret=bench-secret".to_owned(),
                ],
            ),
        ] {
            let (mut child, addr) = start(tools, &args)?;
            let spec = load::LoadSpec {
                addr,
                reuse: true,
                size,
                sessions: 1,
                duration: Duration::from_secs_f64(if size > 1024 {
                    seconds * 2.0
                } else {
                    seconds
                }),
                max_messages: 1_000_000,
                pipeline: false,
                script: None,
            };
            // A warm-up: the compile cache, the first connection.
            rt.block_on(load::run(&load::LoadSpec {
                duration: Duration::from_millis(300),
                ..spec.clone()
            }))?;
            let before = posted.load(Ordering::Relaxed);
            let cpu0 = procfs::cpu_time(child.id())?;
            let r = rt.block_on(load::run(&spec))?;
            let cpu = procfs::cpu_time(child.id())? - cpu0;
            let _ = child.kill();
            let _ = child.wait();
            let webhook = peer.starts_with("webhook");
            let got = posted.load(Ordering::Relaxed) - before;
            if webhook {
                ensure!(
                    got >= r.messages,
                    "the receiver got {got} requests for {} messages acknowledged",
                    r.messages
                );
            }
            out.push(Delivery {
                peer: peer.into(),
                size,
                messages: r.messages,
                msgs_per_s: r.rate(),
                latency_p50_us: r.percentile(0.5),
                latency_p99_us: r.percentile(0.99),
                cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / r.messages.max(1) as f64,
                posted: if webhook { got } else { 0 },
            });
        }
    }
    Ok(out)
}

/// A multipart message of about `size` bytes: a text part, an HTML part,
/// and one base64 attachment making up the rest.
fn multipart(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: Anne <anne@bench.example>\r\nTo: rcpt@bench.example\r\nSubject: =?UTF-8?Q?Rechnung_f=C3=BCr_November?=\r\n\
         Message-ID: <multipart@bench.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
         --b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         Hallo, die Rechnung f=C3=BCr November ist angeh=C3=A4ngt.\r\n\
         --b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <p>Hallo, die Rechnung f\u{fc}r November ist angeh\u{e4}ngt.</p>\r\n--b2--\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"rechnung.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"rechnung.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let line: String = (0..76).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    while m.len() + 80 < size {
        m.push_str(&line);
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

fn parses(tools: &Tools, iterations: usize) -> Result<Vec<Parse>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let runtime = Runtime::new(&RuntimeSettings::default())?;
        let (info, env) = (micro::session_info(1), micro::envelope());
        let mut out = Vec::new();
        for (label, message, n) in [
            ("1 KiB plain", load::message(1024), iterations),
            ("1 MiB multipart", multipart(1 << 20), iterations / 20 + 5),
        ] {
            let content = Arc::new(Content::from(message));
            for (plugin, file) in [
                ("message import (host parse)", "message_probe.wasm"),
                ("mail-parser in the guest", "guest_parse.wasm"),
            ] {
                let path = tools.wasm_dir.join(file);
                ensure!(path.is_file(), "{} is missing", path.display());
                let loaded = micro::load_plugin(
                    &runtime,
                    plugin,
                    Source::File(path),
                    Vec::new(),
                    Path::new("."),
                )
                .await?;
                let chain = Arc::new(Chain::of("bench", vec![loaded]));
                let mut session = SessionPlugin::new(chain, 1);
                let (mut samples, mut answer) = (Vec::with_capacity(n), String::new());
                for i in 0..n + n / 10 + 3 {
                    let t = Instant::now();
                    let reply = session
                        .data(&info, &env, content.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!("{plugin}: {e:?}"))?;
                    let took = micro::nanos(t);
                    if i > n / 10 + 2 {
                        samples.push(took);
                    }
                    answer = reply
                        .map(|r| r.text.replace("\r\n", " "))
                        .unwrap_or_default();
                }
                out.push(Parse {
                    plugin: plugin.into(),
                    message: label.into(),
                    call: micro::quantiles(samples),
                    answer,
                });
            }
        }
        Ok(out)
    })
}

pub fn run(tools: &Tools, seconds: f64, iterations: usize) -> Result<Results> {
    std::fs::create_dir_all(&tools.scratch)?;
    let results = Results {
        deliveries: deliveries(tools, seconds)?,
        parses: parses(tools, iterations)?,
    };
    let _ = std::fs::remove_dir_all(&tools.scratch);
    Ok(results)
}

/// The tables for BENCHMARKS.md.
pub fn markdown(r: &Results) -> String {
    let mut md = String::from(
        "| server | message | msgs/s | latency p50 / p99 | server CPU per message | requests posted |\n|---|---|---|---|---|---|\n",
    );
    for d in &r.deliveries {
        md += &format!(
            "| wasmtp -c {} | {} | {:.0} | {:.0} / {:.0} µs | {:.0} µs | {} |\n",
            d.peer,
            if d.size > 1024 { "1 MiB" } else { "1 KiB" },
            d.msgs_per_s,
            d.latency_p50_us,
            d.latency_p99_us,
            d.cpu_us_per_msg,
            if d.posted > 0 {
                d.posted.to_string()
            } else {
                "—".into()
            },
        );
    }
    md += "\n| message | plugin | `data` call p50 / p99 | it found |\n|---|---|---|---|\n";
    for p in &r.parses {
        md += &format!(
            "| {} | {} | {:.1} / {:.1} µs | `{}` |\n",
            p.message, p.plugin, p.call.p50_us, p.call.p99_us, p.answer
        );
    }
    md
}
