//! The Rust load generator: what Postfix's `smtp-source` can't do —
//! per-transaction latency percentiles, RFC 2920 pipelining, thousands of
//! concurrent or idle sessions.
//!
//! It runs on one thread (a current-thread tokio runtime), like
//! `smtp-source`, so the client takes at most one of the two CPUs whatever
//! the peer. Every loop is bounded by a deadline and a message count, and
//! it only ever connects to the loopback address it is given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

pub const SENDER: &str = "sender@bench.example";
pub const RECIPIENT: &str = "rcpt@bench.example";
/// How long any one reply may take before the run counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One load: how to send, how much, for how long.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// One connection per session, reused for every message; or a new
    /// connection (greeting, EHLO, transaction, QUIT) per message.
    pub reuse: bool,
    /// The message size in bytes, headers included.
    pub size: usize,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Stop starting transactions after this long.
    pub duration: Duration,
    /// Stop after this many messages in all (whichever comes first).
    pub max_messages: u64,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920), where the server
    /// advertises PIPELINING.
    pub pipeline: bool,
    /// What to send instead of the generated message from the benchmark's
    /// sender: a PROXY header, the HELO name, the envelope and the message
    /// (a DKIM-signed one, for the mail-authentication part).
    pub script: Option<Arc<Script>>,
}

/// A client's identity and message, for the load generator.
#[derive(Clone, Debug)]
pub struct Script {
    /// Sent first on every connection (`PROXY TCP4 …\r\n`), if any.
    pub proxy: Option<String>,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: String,
    /// The message, dot-stuffed, CRLF line ends, ending with the `.` line.
    pub message: Vec<u8>,
}

/// A PROXY protocol v1 header saying the client is `ip` (IPv4).
pub fn proxy_line(ip: &str) -> String {
    format!("PROXY TCP4 {ip} 127.0.0.1 40000 25\r\n")
}

#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub messages: u64,
    pub elapsed: Duration,
    /// Per-transaction latency in microseconds, sorted. A transaction runs
    /// from writing MAIL FROM to reading the reply to the final dot; in the
    /// connection-per-message mode it starts at `connect()` instead, so it
    /// includes the handshake, greeting and EHLO.
    pub latencies_us: Vec<u32>,
    /// Set when the server did not advertise PIPELINING and `pipeline` was asked.
    pub pipelining_refused: bool,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// The `p` quantile (0–1) of sorted values, nearest rank.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// A message of exactly `size` bytes (before the terminating `.` line):
/// a few headers and 78-character body lines, none starting with a dot.
pub fn message(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: wasmtp benchmark\r\nMessage-ID: <bench@bench.example>\r\n\r\n"
    )
    .into_bytes();
    let line: Vec<u8> = (0..76).map(|i| b'a' + (i % 26) as u8).collect();
    while m.len() < size {
        let room = size - m.len();
        if room >= 78 {
            m.extend_from_slice(&line);
        } else if room > 2 {
            m.extend_from_slice(&line[..room - 2]);
        } else {
            // Too little room for a line: pad the previous one.
            let at = m.len() - 2;
            m.splice(at..at, std::iter::repeat_n(b'x', room));
            break;
        }
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// One client connection.
pub struct Client {
    io: BufReader<TcpStream>,
    line: Vec<u8>,
    pub pipelining: bool,
}

impl Client {
    /// Connect and read the greeting.
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        Client::connect_with(addr, None).await
    }

    /// Connect, send `proxy` (a PROXY header) if given, read the greeting.
    pub async fn connect_with(addr: SocketAddr, proxy: Option<&str>) -> Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            io: BufReader::with_capacity(16 << 10, stream),
            line: Vec::new(),
            pipelining: false,
        };
        if let Some(proxy) = proxy {
            client.send(proxy.as_bytes()).await?;
        }
        client.expect(220).await.context("greeting")?;
        Ok(client)
    }

    /// Read one whole reply (all its lines); its code.
    pub async fn reply(&mut self) -> Result<u16> {
        loop {
            self.line.clear();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.io.read_until(b'\n', &mut self.line))
                .await
                .context("no reply in time")??;
            ensure!(n > 0, "the server closed the connection");
            ensure!(
                self.line.len() >= 4,
                "malformed reply {:?}",
                String::from_utf8_lossy(&self.line)
            );
            if self
                .line
                .get(4..)
                .is_some_and(|t| t.starts_with(b"PIPELINING"))
            {
                self.pipelining = true;
            }
            if self.line[3] != b'-' {
                let code = std::str::from_utf8(&self.line[..3])
                    .ok()
                    .and_then(|c| c.parse().ok());
                return code.with_context(|| {
                    format!("malformed reply {:?}", String::from_utf8_lossy(&self.line))
                });
            }
        }
    }

    pub async fn expect(&mut self, code: u16) -> Result<()> {
        let got = self.reply().await?;
        if got != code {
            bail!(
                "expected {code}, got {got}: {:?}",
                String::from_utf8_lossy(&self.line).trim_end()
            );
        }
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        Ok(())
    }

    pub async fn command(&mut self, line: &str, code: u16) -> Result<()> {
        self.send(line.as_bytes()).await?;
        self.expect(code)
            .await
            .with_context(|| line.trim_end().to_owned())
    }

    pub async fn ehlo(&mut self) -> Result<()> {
        self.ehlo_as("client.bench.example").await
    }

    pub async fn ehlo_as(&mut self, helo: &str) -> Result<()> {
        self.pipelining = false;
        self.command(&format!("EHLO {helo}\r\n"), 250).await
    }

    /// One mail transaction from `from` to `to`; `message` ends with the
    /// `.` line.
    pub async fn transaction_as(
        &mut self,
        from: &str,
        to: &str,
        message: &[u8],
        pipeline: bool,
    ) -> Result<()> {
        let mail = format!("MAIL FROM:<{from}>\r\n");
        let rcpt = format!("RCPT TO:<{to}>\r\n");
        if pipeline {
            self.send(format!("{mail}{rcpt}DATA\r\n").as_bytes())
                .await?;
            self.expect(250).await.context("MAIL (pipelined)")?;
            self.expect(250).await.context("RCPT (pipelined)")?;
            self.expect(354).await.context("DATA (pipelined)")?;
        } else {
            self.command(&mail, 250).await?;
            self.command(&rcpt, 250).await?;
            self.command("DATA\r\n", 354).await?;
        }
        self.send(message).await?;
        self.expect(250).await.context("end of data")
    }

    pub async fn quit(mut self) -> Result<()> {
        self.command("QUIT\r\n", 221).await
    }
}

/// Run `spec`: `sessions` concurrent sessions sending until the deadline or
/// the message budget.
pub async fn run(spec: &LoadSpec) -> Result<LoadResult> {
    let message: Arc<[u8]> = match &spec.script {
        Some(script) => script.message.clone().into(),
        None => message(spec.size).into(),
    };
    let started = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..spec.sessions {
        let (spec, message, started) = (spec.clone(), message.clone(), started.clone());
        tasks.spawn(async move { session(&spec, &message, &started, deadline).await });
    }
    let mut result = LoadResult::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((latencies, refused)) => {
                result.messages += latencies.len() as u64;
                result.latencies_us.extend(latencies);
                result.pipelining_refused |= refused;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    result.elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    result.latencies_us.sort_unstable();
    Ok(result)
}

/// Claim one message of the budget, if time and budget allow.
fn claim(spec: &LoadSpec, started: &AtomicU64, deadline: Instant) -> bool {
    Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < spec.max_messages
}

async fn session(
    spec: &LoadSpec,
    message: &[u8],
    started: &AtomicU64,
    deadline: Instant,
) -> Result<(Vec<u32>, bool)> {
    let mut latencies = Vec::new();
    let micros = |t: Instant| t.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let script = spec.script.as_deref();
    let proxy = script.and_then(|s| s.proxy.as_deref());
    let helo = script.map_or("client.bench.example", |s| &s.helo);
    let (from, to) = script.map_or((SENDER, RECIPIENT), |s| (&s.mail_from, &s.rcpt_to));
    if spec.reuse {
        let mut client = Client::connect_with(spec.addr, proxy).await?;
        client.ehlo_as(helo).await?;
        let pipeline = spec.pipeline && client.pipelining;
        while claim(spec, started, deadline) {
            let t = Instant::now();
            client.transaction_as(from, to, message, pipeline).await?;
            latencies.push(micros(t));
        }
        client.quit().await?;
        Ok((latencies, spec.pipeline && !pipeline))
    } else {
        let mut refused = false;
        while claim(spec, started, deadline) {
            let t = Instant::now();
            let mut client = Client::connect_with(spec.addr, proxy).await?;
            client.ehlo_as(helo).await?;
            let pipeline = spec.pipeline && client.pipelining;
            refused |= spec.pipeline && !pipeline;
            client.transaction_as(from, to, message, pipeline).await?;
            latencies.push(micros(t));
            client.quit().await?;
        }
        Ok((latencies, refused))
    }
}

/// How far a session held open for the memory figures goes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hold {
    /// The greeting and EHLO: no plugin hook runs, nothing is instantiated
    /// (for a plugin whose first hook is `data`, such as Sink).
    #[default]
    Ehlo,
    /// Then one NOOP: a plugin exporting `noop` is instantiated.
    Noop,
    /// Then `MAIL FROM` and `RCPT TO:<rcpt@bench.example>`, accepted: a
    /// plugin exporting `mail` or `rcpt` (the example policy) is
    /// instantiated.
    Rcpt,
}

impl Hold {
    /// What each held session did, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Hold::Ehlo => "after EHLO",
            Hold::Noop => "after EHLO and one NOOP",
            Hold::Rcpt => "after EHLO, MAIL FROM and RCPT TO",
        }
    }

    /// Take a freshly connected client this far.
    async fn reach(self, client: &mut Client) -> Result<()> {
        client.ehlo().await?;
        match self {
            Hold::Ehlo => Ok(()),
            Hold::Noop => client.command("NOOP\r\n", 250).await,
            Hold::Rcpt => {
                client
                    .command(&format!("MAIL FROM:<{SENDER}>\r\n"), 250)
                    .await?;
                client
                    .command(&format!("RCPT TO:<{RECIPIENT}>\r\n"), 250)
                    .await
            }
        }
    }
}

/// Open `count` sessions that each read the greeting and go as far as
/// `hold`, and keep them open; at most `parallel` are being set up at a
/// time. Returns the open connections.
pub async fn open_idle(
    addr: SocketAddr,
    count: usize,
    hold: Hold,
    parallel: usize,
    deadline: Instant,
) -> Result<Vec<Client>> {
    let mut open = Vec::with_capacity(count);
    let mut tasks = JoinSet::new();
    let mut launched = 0;
    while open.len() < count {
        while launched < count && tasks.len() < parallel {
            launched += 1;
            tasks.spawn(async move {
                let mut client = Client::connect(addr).await?;
                hold.reach(&mut client).await?;
                anyhow::Ok(client)
            });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let joined = tokio::time::timeout(remaining, tasks.join_next())
            .await
            .with_context(|| format!("only {} of {count} sessions opened in time", open.len()))?;
        match joined {
            Some(client) => {
                open.push(client?.with_context(|| format!("opening session {}", open.len() + 1))?)
            }
            None => break,
        }
    }
    Ok(open)
}

/// Check that the server at `addr` applies the example policy of
/// `examples/`: a recipient outside its allowed domains is refused with
/// 550, and so is a message whose header carries `X-Spam-Flag: YES` (once
/// the allowed recipient was accepted). The benchmark's own messages pass.
pub async fn check_example_policy(addr: SocketAddr) -> Result<()> {
    let mut client = Client::connect(addr).await?;
    client.ehlo().await?;
    client
        .command(&format!("MAIL FROM:<{SENDER}>\r\n"), 250)
        .await?;
    client
        .command("RCPT TO:<someone@not-allowed.example>\r\n", 550)
        .await
        .context("a recipient outside the allowed domains")?;
    client
        .command(&format!("RCPT TO:<{RECIPIENT}>\r\n"), 250)
        .await?;
    client.command("DATA\r\n", 354).await?;
    let mut flagged = b"X-Spam-Flag: YES\r\n".to_vec();
    flagged.extend_from_slice(&message(1024));
    client.send(&flagged).await?;
    client
        .expect(550)
        .await
        .context("a message with X-Spam-Flag: YES")?;
    client.quit().await
}

/// Send one message of `size` bytes without ever holding it whole: the
/// body is written in 1 MiB pieces. For the large-message memory figure.
pub async fn send_large(addr: SocketAddr, size: usize) -> Result<Duration> {
    let t = Instant::now();
    let mut client = Client::connect(addr).await?;
    client.ehlo().await?;
    client
        .command(&format!("MAIL FROM:<{SENDER}> SIZE={size}\r\n"), 250)
        .await?;
    client
        .command(&format!("RCPT TO:<{RECIPIENT}>\r\n"), 250)
        .await?;
    client.command("DATA\r\n", 354).await?;
    let piece = message(1 << 20);
    let piece = &piece[..piece.len() - 3]; // without the `.` line
    let header_end = piece.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    client.send(&piece[..header_end]).await?;
    let body = &piece[header_end..];
    let mut sent = header_end;
    while sent < size {
        // Whole lines only, so the stream stays CRLF-clean.
        let want = (size - sent).min(body.len());
        let cut = body[..want]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(want, |i| i + 1);
        let cut = if cut == 0 { want } else { cut };
        client.send(&body[..cut]).await?;
        sent += cut;
    }
    client.send(b"\r\n.\r\n").await?;
    client
        .expect(250)
        .await
        .context("end of the large message")?;
    client.quit().await?;
    Ok(t.elapsed())
}

/// Get the benchmark's one greylisting triplet (the loopback /24, its
/// sender and recipient) past the greylist: the first RCPT is deferred
/// (`451`), a retry after `delay` passes, and the triplet then passes until
/// it expires. Every later message costs the greylist one `get`.
pub async fn prime_greylist(addr: SocketAddr, delay: Duration) -> Result<()> {
    let mut client = Client::connect(addr).await?;
    client.ehlo().await?;
    for attempt in 0..20 {
        client
            .command(&format!("MAIL FROM:<{SENDER}>\r\n"), 250)
            .await?;
        client
            .send(format!("RCPT TO:<{RECIPIENT}>\r\n").as_bytes())
            .await?;
        let code = client.reply().await?;
        client.command("RSET\r\n", 250).await?;
        match code {
            250 => return client.quit().await,
            451 => tokio::time::sleep(delay * (attempt + 1)).await,
            other => bail!("priming the greylist: RCPT got {other}"),
        }
    }
    bail!("the greylist still defers the benchmark's triplet after 20 tries")
}
