//! The whole benchmark. Every run measures every mode for every peer, the
//! peers' order rotating from one mode to the next, so slow drifts of the
//! machine (other tenants, thermal, page cache) spread over all of them;
//! figures are medians over the runs.
//!
//! For each (peer, mode) a fresh server is started and warmed up, then
//! 1. the Rust load generator runs for the window: msgs/s, latency
//!    percentiles, server CPU per message;
//! 2. Postfix's `smtp-source` sends as many messages as the Rust generator
//!    managed in the window: msgs/s and server CPU per message again, from a
//!    load generator that is not ours;
//! 3. the server's peak RSS (VmHWM) is read, and the server stopped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Nsd};
use crate::cpus;
use crate::load::{self, Hold, LoadSpec, Script};
use crate::micro;
use crate::peers::{self, Options, Peer, Server, Tools};
use crate::procfs;
use crate::report;
use crate::state::{self, KvFigures, Postgres};

#[derive(Clone, Debug, clap::Args, Serialize, Deserialize)]
pub struct Settings {
    /// A short run (about 2 minutes): one run, short windows, 2,000 idle
    /// sessions. Its results go to bench/results/quick.*; BENCHMARKS.md is
    /// left alone.
    #[arg(long)]
    pub quick: bool,
    /// Runs to take medians over (default: 3; 1 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Seconds of load per measurement (default: 1.5; 0.4 with --quick).
    #[arg(long)]
    pub window: Option<f64>,
    /// Sessions for the memory-scaling figures (default: 10,000; 2,000 with --quick).
    #[arg(long)]
    pub idle_sessions: Option<usize>,
    /// Size of the large message through Mailbox, in MiB.
    #[arg(long, default_value_t = 200)]
    pub large_mib: usize,
    /// Only these parts (load, memory, micro, state, auth, policy); all by
    /// default. `state`, `auth` and `policy` write their own results files
    /// (bench/results/full-state.*, full-auth.*, full-policy.*) and
    /// BENCHMARKS.md sections, so running one alone leaves the others'
    /// figures alone.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only these modes of the load part, by number (1-9, in the order of
    /// BENCHMARKS.md's tables; with --pin, 10-18 are the same pinned).
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<usize>,
    /// Run every mode of the load and policy parts a second time pinned:
    /// the server on CPU 1 (`taskset -c 1`), the load generators on CPU 0.
    /// Skipped, with the reason in the report, where `taskset` or a second
    /// CPU is missing.
    #[arg(long)]
    #[serde(default)]
    pub pin: bool,
    /// Only these peers (wasmtp-empty, wasmtp-sink, wasmtp-debugging,
    /// wasmtp-mailbox, smtp-sink, aiosmtpd).
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Where the results go (JSON and Markdown).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Don't splice the tables into BENCHMARKS.md (a full run does by default).
    #[arg(long)]
    pub no_doc: bool,
}

impl Settings {
    fn runs(&self) -> usize {
        self.runs.unwrap_or(if self.quick { 1 } else { 3 }).max(1)
    }
    fn window(&self) -> Duration {
        Duration::from_secs_f64(
            self.window
                .unwrap_or(if self.quick { 0.4 } else { 1.5 })
                .clamp(0.05, 60.0),
        )
    }
    fn warmup(&self) -> Duration {
        Duration::from_millis(if self.quick { 150 } else { 300 })
    }
    fn idle(&self) -> usize {
        self.idle_sessions
            .unwrap_or(if self.quick { 2_000 } else { 10_000 })
    }
    fn part(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == name)
    }
}

/// The modes of a part that pins (load, policy): `base`, then, if `pin`,
/// each of them again pinned.
fn with_pinned(base: &[Mode], pin: bool) -> Vec<Mode> {
    let mut modes = base.to_vec();
    if pin {
        modes.extend(base.iter().map(|m| m.pinned()));
    }
    modes
}

/// One load mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode {
    pub reuse: bool,
    pub size: usize,
    pub sessions: usize,
    /// RFC 2920 pipelining (the Rust generator only; smtp-source can't).
    pub pipeline: bool,
    /// The server on CPU [`cpus::SERVER`], the load generators on
    /// [`cpus::CLIENT`] (`--pin`).
    #[serde(default)]
    pub pinned: bool,
}

impl Mode {
    /// A mode without pipelining: a reused connection or one per message,
    /// a message size, a number of concurrent sessions.
    pub const fn plain(reuse: bool, size: usize, sessions: usize) -> Mode {
        Mode {
            reuse,
            size,
            sessions,
            pipeline: false,
            pinned: false,
        }
    }

    /// The same mode with the server and the load generators pinned.
    pub const fn pinned(self) -> Mode {
        Mode {
            pinned: true,
            ..self
        }
    }

    pub fn label(&self) -> String {
        format!(
            "{}, {}, {} session{}{}{}",
            if self.reuse {
                "reused connection"
            } else {
                "connection per message"
            },
            if self.size >= 1 << 20 {
                format!("{} MiB", self.size >> 20)
            } else {
                format!("{} KiB", self.size >> 10)
            },
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            if self.pipeline { ", pipelined" } else { "" },
            if self.pinned { ", pinned" } else { "" }
        )
    }
}

/// The state part's modes: 1 KiB on reused connections, 1 and 50 sessions.
pub const STATE_MODES: [Mode; 2] = [
    Mode::plain(true, 1 << 10, 1),
    Mode::plain(true, 1 << 10, 50),
];

/// The mail-authentication part's modes: the 10 KiB signed message, both
/// connection modes, 1 and 50 sessions.
pub const AUTH_MODES: [Mode; 4] = [
    Mode::plain(true, auth::MESSAGE_SIZE, 1),
    Mode::plain(false, auth::MESSAGE_SIZE, 1),
    Mode::plain(true, auth::MESSAGE_SIZE, 50),
    Mode::plain(false, auth::MESSAGE_SIZE, 50),
];

/// The policy part's modes: 1 KiB, both connection modes, 1 and 20 sessions.
pub const POLICY_MODES: [Mode; 4] = [
    Mode::plain(true, 1 << 10, 1),
    Mode::plain(false, 1 << 10, 1),
    Mode::plain(true, 1 << 10, 20),
    Mode::plain(false, 1 << 10, 20),
];

/// Sessions held open at once for the policy part's memory figure, each
/// with an instantiated plugin: the server's default `max_plugin_instances`.
pub const POLICY_IDLE_SESSIONS: usize = 1000;

/// The policy part's memory figure is also taken with this
/// `max_plugin_instances`: the instance pool admits four core instances per
/// plugin instance, and a componentize-py component has 14 (a
/// componentize-qjs one 9), so with the default of 1,000 only 285 Python
/// (444 JavaScript) sessions hold an instance at once; 4,000 admits 1,000.
pub const POLICY_IDLE_MAX_INSTANCES: usize = 4 * POLICY_IDLE_SESSIONS;

pub const MODES: [Mode; 9] = [
    Mode::plain(true, 1 << 10, 1),
    Mode::plain(false, 1 << 10, 1),
    Mode::plain(true, 1 << 10, 50),
    Mode::plain(false, 1 << 10, 50),
    Mode::plain(true, 1 << 20, 1),
    Mode::plain(false, 1 << 20, 1),
    Mode::plain(true, 1 << 20, 50),
    Mode::plain(false, 1 << 20, 50),
    Mode {
        reuse: true,
        size: 1 << 10,
        sessions: 1,
        pipeline: true,
        pinned: false,
    },
];

/// Throughput and cost from one load generator.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    pub messages: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    /// Server user+sys CPU time per message, µs.
    pub cpu_us_per_msg: f64,
    /// The database server's CPU time per message, µs (PostgreSQL peers).
    #[serde(default)]
    pub db_cpu_us_per_msg: Option<f64>,
    /// `cpu_us_per_msg` split: user and system time, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_user_us_per_msg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_sys_us_per_msg: Option<f64>,
}

impl Figures {
    /// `messages` in `elapsed`, the server having used `user` and `sys` CPU time.
    fn new(messages: u64, elapsed: Duration, user: Duration, sys: Duration) -> Figures {
        let per_msg = |d: Duration| d.as_secs_f64() * 1e6 / messages.max(1) as f64;
        Figures {
            messages,
            seconds: elapsed.as_secs_f64(),
            msgs_per_s: messages as f64 / elapsed.as_secs_f64().max(1e-9),
            cpu_us_per_msg: per_msg(user + sys),
            db_cpu_us_per_msg: None,
            cpu_user_us_per_msg: Some(per_msg(user)),
            cpu_sys_us_per_msg: Some(per_msg(sys)),
        }
    }
}

/// One (run, mode, peer) measurement.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cell {
    pub run: usize,
    pub mode: usize,
    pub peer: Option<Peer>,
    /// The Rust load generator.
    pub ours: Option<Figures>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Postfix smtp-source (not in the pipelined mode).
    pub source: Option<Figures>,
    pub hwm_kib: Option<u64>,
    /// CPU used by neither the server nor the benchmark during the Rust
    /// generator's window (other processes, the hypervisor's steal), in %
    /// of one CPU. High values mean the figures are disturbed.
    pub background_pct: Option<f64>,
    /// Queries the benchmark's NSD answered during the warm-up (the cold
    /// cache) and during the Rust generator's window (mail-authentication
    /// part only).
    pub dns_queries_warmup: Option<u64>,
    pub dns_queries: Option<u64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdleFigures {
    pub peer: Option<Peer>,
    /// How far each session went before it was held open.
    #[serde(default)]
    pub hold: Hold,
    /// The server's `max_plugin_instances`, where the benchmark set it (the
    /// example-policy peers; otherwise the peer's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_plugin_instances: Option<usize>,
    pub sessions: usize,
    pub base_rss_kib: u64,
    pub rss_kib: u64,
    pub kib_per_session: f64,
    /// The PSS rise per session ([`procfs::pss_kib`]): the memory image
    /// the instances share counts once, where RSS counts it per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_kib_per_session: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LargeFigures {
    pub peer: Option<Peer>,
    pub mib: usize,
    pub base_hwm_kib: u64,
    pub hwm_kib: u64,
    pub delta_mib: f64,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub settings: Option<Settings>,
    pub machine: String,
    pub versions: Vec<(String, String)>,
    pub started: String,
    pub minutes: f64,
    pub modes: Vec<Mode>,
    pub cells: Vec<Cell>,
    pub idle: Vec<IdleFigures>,
    pub large: Vec<LargeFigures>,
    pub instantiation: Vec<micro::Instantiation>,
    pub maildir: Option<micro::MaildirFigures>,
    /// The state part: its modes, its cells, the key-value latency.
    #[serde(default)]
    pub state_modes: Vec<Mode>,
    #[serde(default)]
    pub state_cells: Vec<Cell>,
    #[serde(default)]
    pub kv: Vec<KvFigures>,
    /// The mail-authentication part.
    #[serde(default)]
    pub auth_modes: Vec<Mode>,
    #[serde(default)]
    pub auth_cells: Vec<Cell>,
    /// The signed message's size on the wire, bytes.
    #[serde(default)]
    pub auth_message_bytes: usize,
    /// The example policy against Haraka.
    #[serde(default)]
    pub policy_modes: Vec<Mode>,
    #[serde(default)]
    pub policy_cells: Vec<Cell>,
    /// The example components' sizes, bytes: (file name, size).
    #[serde(default)]
    pub policy_components: Vec<(String, u64)>,
    /// Memory with [`POLICY_IDLE_SESSIONS`] sessions held at RCPT TO, each
    /// with an instantiated policy plugin.
    #[serde(default)]
    pub policy_idle: Vec<IdleFigures>,
    /// Why the pinned modes asked for did not run (`--pin` where `taskset`
    /// or a second CPU is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinning_skipped: Option<String>,
}

/// Where the programs are when nothing says otherwise: `wasmtp` next to
/// this binary, the plugins in its build's wasm dir, Postfix where
/// `bench/run` extracts it, `python3` from the PATH.
pub fn default_tools() -> Result<Tools> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("no directory for the benchmark binary")?
        .to_path_buf();
    let root = crate::repo_root();
    let postfix = std::env::var_os("BENCH_POSTFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench-tools/postfix"));
    let python = std::env::var_os("BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let scratch = dir.join(format!("bench-scratch-{}", std::process::id()));
    let haraka = std::env::var_os("BENCH_HARAKA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench-tools/haraka"));
    let node = std::env::var_os("BENCH_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "node".into());
    let examples = std::env::var_os("BENCH_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench-examples"));
    Ok(Tools {
        wasmtp: dir.join("wasmtp"),
        wasm_dir: dir.join("wasm-plugins/wasm32-wasip2/release"),
        postfix,
        python: peers::resolve_python(&python)?,
        scratch,
        haraka,
        node,
        examples,
    })
}

/// Raise the open-files limit to the hard limit: 10,000 sessions are 10,000
/// sockets in the client and as many in the server (which inherits it).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

pub fn run(settings: Settings) -> Result<()> {
    let t0 = Instant::now();
    let tools = default_tools()?;
    tools.check()?;
    std::fs::create_dir_all(&tools.scratch)?;
    let nofile = raise_nofile();
    let idle = settings.idle();
    if (nofile as usize) < idle + 256 {
        bail!(
            "the open-files limit is {nofile}; {idle} sessions need more (raise `ulimit -Hn` or pass --idle-sessions)"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The pinned modes, if asked for and possible here.
    let pinning = if settings.pin {
        cpus::check().err().map(|e| format!("{e:#}"))
    } else {
        None
    };
    if let Some(why) = &pinning {
        log(format!("--pin: the pinned modes are skipped: {why}"));
    }
    let pin = settings.pin && pinning.is_none();
    let load_modes = with_pinned(&MODES, pin);
    let policy_modes = with_pinned(&POLICY_MODES, pin);
    let mut results = Results {
        settings: Some(settings.clone()),
        machine: procfs::machine(),
        versions: versions(&tools),
        started: String::from_utf8_lossy(
            &Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d %H:%M UTC")
                .output()?
                .stdout,
        )
        .trim()
        .to_owned(),
        modes: load_modes.clone(),
        pinning_skipped: pinning,
        ..Results::default()
    };
    log(format!(
        "{}; {} run(s), {:?} windows",
        results.machine,
        settings.runs(),
        settings.window()
    ));

    // The state part's PostgreSQL, and the mail-authentication part's DNS
    // server, key and signed message: one each for the whole run.
    let pg = if settings.part("state") {
        match Postgres::start() {
            Ok(pg) => {
                log(format!(
                    "PostgreSQL {} on 127.0.0.1:{} ({})",
                    pg.version,
                    pg.port,
                    pg.data_dir().display()
                ));
                results
                    .versions
                    .push(("postgresql".into(), pg.version.clone()));
                Some(pg)
            }
            Err(e) => {
                log(format!("PostgreSQL did not start: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let signed = if settings.part("auth") {
        let prepared = (|| -> Result<(Nsd, Arc<Script>)> {
            let key = auth::keygen(&tools, &tools.scratch)?;
            let nsd = Nsd::start(&tools.scratch, &key)?;
            let script = auth::signed_script(&tools, &tools.scratch)?;
            Ok((nsd, script))
        })();
        results
            .versions
            .push(("haraka".into(), auth::haraka_versions(&tools)));
        match prepared {
            Ok((nsd, script)) => {
                log(format!(
                    "NSD on {}; the signed message is {} bytes",
                    nsd.addr,
                    script.message.len()
                ));
                results.auth_message_bytes = script.message.len();
                Some((nsd, script))
            }
            Err(e) => {
                log(format!("the mail-authentication part can't run: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    if settings.part("policy") {
        if !settings.part("auth") {
            results
                .versions
                .push(("haraka".into(), auth::haraka_versions(&tools)));
        }
        for peer in Peer::POLICY {
            // Two peers (instances reused or not) run each component.
            if let Some(file) = peer.example_component()
                && !results.policy_components.iter().any(|(f, _)| f == file)
            {
                let size = std::fs::metadata(tools.examples.join(file)).map_or(0, |m| m.len());
                results.policy_components.push((file.to_owned(), size));
            }
        }
    }

    for run in 0..settings.runs() {
        if settings.part("load") {
            for (m, mode) in load_modes.iter().enumerate() {
                if !settings.modes.is_empty() && !settings.modes.contains(&(m + 1)) {
                    continue;
                }
                let mut order: Vec<Peer> = Peer::LOAD
                    .into_iter()
                    .filter(|p| {
                        settings.peers.is_empty() || settings.peers.iter().any(|n| n == p.short())
                    })
                    .collect();
                let n = order.len();
                order.rotate_left((run * load_modes.len() + m) % n);
                for peer in order {
                    let cell = measure(&tools, &rt, &settings, run, m, *mode, peer);
                    log(describe(&cell, mode));
                    results.cells.push(cell);
                }
            }
        }
        if settings.part("memory") {
            for (peer, hold) in [
                (Peer::WasmtpSink, Hold::Ehlo),
                (Peer::WasmtpNoop, Hold::Noop),
                (Peer::SmtpSink, Hold::Ehlo),
                (Peer::Aiosmtpd, Hold::Ehlo),
            ] {
                let held = Held {
                    sessions: idle,
                    hold,
                    max_plugin_instances: None,
                };
                results.idle.push(idle_memory(&tools, &rt, peer, held));
            }
            for peer in [Peer::WasmtpMailbox, Peer::WasmtpSink] {
                let f = large_message(&tools, &rt, peer, settings.large_mib).unwrap_or_else(|e| {
                    LargeFigures {
                        peer: Some(peer),
                        mib: settings.large_mib,
                        error: Some(format!("{e:#}")),
                        ..Default::default()
                    }
                });
                log(format!(
                    "{} MiB through {}: peak RSS +{:.1} MiB {}",
                    f.mib,
                    peer.short(),
                    f.delta_mib,
                    f.error.as_deref().unwrap_or("")
                ));
                results.large.push(f);
            }
        }
        if settings.part("state") {
            results.state_modes = STATE_MODES.to_vec();
            let ctx = Extras {
                pg: pg.as_ref(),
                ..Extras::default()
            };
            for (m, mode) in STATE_MODES.iter().enumerate() {
                let mut order = Peer::STATE.to_vec();
                let n = order.len();
                order.rotate_left((run * STATE_MODES.len() + m) % n);
                for peer in order {
                    let cell = measure_in(&tools, &rt, &settings, run, m, *mode, peer, &ctx);
                    log(format!("state: {}", describe(&cell, mode)));
                    results.state_cells.push(cell);
                }
            }
        }
        if settings.part("auth") {
            results.auth_modes = AUTH_MODES.to_vec();
            let ctx = Extras {
                nsd: signed.as_ref().map(|(nsd, _)| nsd),
                script: signed.as_ref().map(|(_, script)| script.clone()),
                ..Extras::default()
            };
            for (m, mode) in AUTH_MODES.iter().enumerate() {
                let mut order = Peer::AUTH.to_vec();
                let n = order.len();
                order.rotate_left((run * AUTH_MODES.len() + m) % n);
                for peer in order {
                    let cell = measure_in(&tools, &rt, &settings, run, m, *mode, peer, &ctx);
                    log(format!(
                        "auth: {} | DNS queries: warm-up {}, window {}",
                        describe(&cell, mode),
                        cell.dns_queries_warmup
                            .map_or("-".into(), |q| q.to_string()),
                        cell.dns_queries.map_or("-".into(), |q| q.to_string())
                    ));
                    results.auth_cells.push(cell);
                }
            }
        }
        if settings.part("policy") {
            results.policy_modes = policy_modes.clone();
            for (m, mode) in policy_modes.iter().enumerate() {
                let mut order = Peer::POLICY.to_vec();
                let n = order.len();
                order.rotate_left((run * policy_modes.len() + m) % n);
                for peer in order {
                    let cell = measure(&tools, &rt, &settings, run, m, *mode, peer);
                    log(format!("policy: {}", describe(&cell, mode)));
                    results.policy_cells.push(cell);
                }
            }
            // Every session past RCPT TO, so each holds an instance of the
            // policy (its first exported hook is `rcpt`): every peer as
            // started above, then the wasmtp ones with room for 1,000.
            let raised = Peer::POLICY
                .into_iter()
                .filter(|p| p.example_component().is_some())
                .map(|p| (p, Some(POLICY_IDLE_MAX_INSTANCES)));
            for (peer, max_instances) in Peer::POLICY.map(|p| (p, None)).into_iter().chain(raised) {
                results.policy_idle.push(idle_memory(
                    &tools,
                    &rt,
                    peer,
                    Held {
                        sessions: POLICY_IDLE_SESSIONS,
                        hold: Hold::Rcpt,
                        max_plugin_instances: max_instances,
                    },
                ));
            }
        }
    }
    if settings.part("state") {
        let calls = if settings.quick { 300 } else { 2_000 };
        let mut backends = vec![(
            "sqlite",
            Ok(wasmtp::store::BackendSettings::Sqlite {
                dir: tools.scratch.join("kv-latency"),
            }),
        )];
        backends.push((
            "postgres",
            match &pg {
                Some(pg) => pg
                    .database()
                    .map(|url| wasmtp::store::BackendSettings::Postgres { url, pool_size: 16 }),
                None => Err(anyhow::anyhow!("PostgreSQL did not start")),
            },
        ));
        for (name, backend) in backends {
            let f = backend
                .and_then(|b| state::kv_latency(b, name, calls))
                .unwrap_or_else(|e| KvFigures {
                    backend: name.into(),
                    calls,
                    error: Some(format!("{e:#}")),
                    ..KvFigures::default()
                });
            log(format!(
                "kv {name}: get p50 {:.0} µs, set {:.0}, incr {:.0}, cas {:.0} {}",
                f.get.p50_us,
                f.set.p50_us,
                f.incr.p50_us,
                f.cas.p50_us,
                f.error.as_deref().unwrap_or("")
            ));
            results.kv.push(f);
        }
    }
    drop(pg);
    drop(signed);
    if settings.part("micro") {
        let iterations = if settings.quick { 2_000 } else { 20_000 };
        results.instantiation =
            micro::instantiation_all(&tools.wasm_dir, &tools.scratch, iterations)?;
        for f in &results.instantiation {
            log(format!(
                "instantiate {}: p50 {:.1} µs; session with one {} call p50 {:.1} µs",
                f.plugin,
                f.live_start.p50_us,
                if f.hook.is_empty() { "-" } else { &f.hook },
                f.session_one_call.p50_us
            ));
        }
        let maildir = micro::maildir(&tools.scratch, if settings.quick { 50 } else { 300 })?;
        log(format!(
            "Maildir 1 KiB: plugin p50 {:.0} µs (file calls via the blocking pool {:.0} µs), native p50 {:.0} µs",
            maildir.plugin.p50_us, maildir.plugin_via_pool.p50_us, maildir.native.p50_us
        ));
        results.maildir = Some(maildir);
    }
    let _ = std::fs::remove_dir_all(&tools.scratch);
    results.minutes = t0.elapsed().as_secs_f64() / 60.0;

    let out = settings
        .out
        .clone()
        .unwrap_or_else(|| crate::repo_root().join("bench/results"));
    std::fs::create_dir_all(&out)?;
    let name = if settings.quick { "quick" } else { "full" };
    let doc = crate::repo_root().join("BENCHMARKS.md");
    // Each part group has its own results file and its own section of
    // BENCHMARKS.md: the load, memory and micro parts (`full.*`), the state
    // part (`full-state.*`), the mail-authentication part (`full-auth.*`).
    let main_ran = ["load", "memory", "micro"].iter().any(|p| settings.part(p));
    let groups = [
        (
            report::Section::Main,
            main_ran,
            settings.only.is_empty() && settings.modes.is_empty() && settings.peers.is_empty(),
        ),
        (report::Section::State, settings.part("state"), true),
        (report::Section::Auth, settings.part("auth"), true),
        (report::Section::Policy, settings.part("policy"), true),
    ];
    for (section, ran, whole) in groups {
        if !ran {
            continue;
        }
        let part = section.only(&results);
        let file = format!("{name}{}", section.suffix());
        std::fs::write(
            out.join(format!("{file}.json")),
            serde_json::to_string_pretty(&part)?,
        )?;
        let markdown = report::section_markdown(section, &part);
        std::fs::write(out.join(format!("{file}.md")), &markdown)?;
        log(format!(
            "results: {}",
            out.join(format!("{file}.{{json,md}}")).display()
        ));
        if !settings.quick && !settings.no_doc && whole {
            report::splice_section(&doc, section, &markdown)?;
            log(format!("tables spliced into BENCHMARKS.md ({section:?})"));
        }
        println!("{markdown}");
    }
    log(format!("done in {:.1} min", results.minutes));
    Ok(())
}

/// What a measurement may need beyond the peer: the state part's
/// PostgreSQL, the mail-authentication part's NSD and signed message.
#[derive(Default)]
pub struct Extras<'a> {
    pub pg: Option<&'a Postgres>,
    pub nsd: Option<&'a Nsd>,
    pub script: Option<Arc<Script>>,
}

fn describe(cell: &Cell, mode: &Mode) -> String {
    let peer = cell.peer.map_or("?", Peer::short);
    if let Some(e) = &cell.error {
        return format!(
            "run {} | {} | {peer}: FAILED {e}",
            cell.run + 1,
            mode.label()
        );
    }
    let f = |x: &Option<Figures>| {
        x.as_ref().map_or("-".into(), |f| {
            format!("{:.0}/s {:.1}µs", f.msgs_per_s, f.cpu_us_per_msg)
        })
    };
    format!(
        "run {} | {} | {peer}: ours {} p50 {:.0}µs p99 {:.0}µs | smtp-source {} | HWM {} KiB | bg {:.0}%",
        cell.run + 1,
        mode.label(),
        f(&cell.ours),
        cell.p50_us.unwrap_or(f64::NAN),
        cell.p99_us.unwrap_or(f64::NAN),
        f(&cell.source),
        cell.hwm_kib.unwrap_or(0),
        cell.background_pct.unwrap_or(f64::NAN)
    )
}

fn measure(
    tools: &Tools,
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    run: usize,
    m: usize,
    mode: Mode,
    peer: Peer,
) -> Cell {
    measure_in(tools, rt, settings, run, m, mode, peer, &Extras::default())
}

#[allow(clippy::too_many_arguments)]
fn measure_in(
    tools: &Tools,
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    run: usize,
    m: usize,
    mode: Mode,
    peer: Peer,
    ctx: &Extras<'_>,
) -> Cell {
    let mut cell = Cell {
        run,
        mode: m,
        peer: Some(peer),
        ..Cell::default()
    };
    if let Err(e) = measure_into(&mut cell, tools, rt, settings, mode, peer, ctx) {
        cell.error = Some(format!("{e:#}"));
    }
    cell
}

fn measure_into(
    cell: &mut Cell,
    tools: &Tools,
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    mode: Mode,
    peer: Peer,
    ctx: &Extras<'_>,
) -> Result<()> {
    let postgres = match (peer, ctx.pg) {
        (Peer::WasmtpQueuePg | Peer::WasmtpPolicyPg, Some(pg)) => Some(pg.database()?),
        (Peer::WasmtpQueuePg | Peer::WasmtpPolicyPg, None) => {
            bail!("PostgreSQL did not start")
        }
        _ => None,
    };
    let server = Server::start(
        tools,
        peer,
        Options {
            sessions: mode.sessions,
            postgres,
            nameserver: ctx.nsd.map(|n| n.addr),
            cpu: mode.pinned.then_some(cpus::SERVER),
            ..Options::default()
        },
    )?;
    let pid = server.pid();
    // The Rust generator runs on this thread.
    let _client_cpu = mode
        .pinned
        .then(|| cpus::Pinned::this_thread(cpus::CLIENT))
        .transpose()?;
    if Peer::POLICY.contains(&peer) {
        rt.block_on(load::check_example_policy(server.addr))
            .context("checking that the server applies the example policy")?;
    }
    if matches!(peer, Peer::WasmtpPolicy | Peer::WasmtpPolicyPg) {
        let delay = Duration::from_secs_f64(peers::GREYLIST_DELAY.parse()?);
        rt.block_on(load::prime_greylist(server.addr, delay))
            .context("priming the greylist")?;
    }
    let mut spec = LoadSpec {
        addr: server.addr,
        reuse: mode.reuse,
        size: mode.size,
        sessions: mode.sessions,
        duration: settings.warmup(),
        max_messages: 1_000_000,
        pipeline: mode.pipeline,
        script: ctx.script.clone(),
    };
    let queries = || ctx.nsd.map(|n| n.queries()).transpose();
    let q0 = queries()?;
    rt.block_on(load::run(&spec)).context("warm-up")?;
    let q1 = queries()?;

    spec.duration = settings.window();
    let (busy0, own0) = (
        procfs::machine_busy()?,
        procfs::cpu_time(std::process::id())?,
    );
    // The database's own CPU, for the PostgreSQL peers.
    let db_pid = match peer {
        Peer::WasmtpQueuePg | Peer::WasmtpPolicyPg => ctx.pg.and_then(Postgres::pid),
        _ => None,
    };
    let db_cpu = || db_pid.map(procfs::tree_cpu_time).transpose();
    let db0 = db_cpu()?;
    let (user0, sys0) = procfs::cpu_split(pid)?;
    let ours = rt
        .block_on(load::run(&spec))
        .context("Rust load generator")?;
    let (user, sys) = cpu_since(pid, (user0, sys0))?;
    let cpu = user + sys;
    let db = db_cpu()?;
    let (busy, own) = (
        procfs::machine_busy()? - busy0,
        procfs::cpu_time(std::process::id())? - own0,
    );
    let background = busy.as_secs_f64() - cpu.as_secs_f64() - own.as_secs_f64();
    cell.background_pct = Some((background / ours.elapsed.as_secs_f64() * 100.0).max(0.0));
    if ours.pipelining_refused {
        bail!("the server does not advertise PIPELINING");
    }
    let mut figures = Figures::new(ours.messages, ours.elapsed, user, sys);
    if let (Some(db0), Some(db)) = (db0, db) {
        figures.db_cpu_us_per_msg =
            Some(db.saturating_sub(db0).as_secs_f64() * 1e6 / ours.messages.max(1) as f64);
    }
    cell.ours = Some(figures);
    cell.p50_us = Some(ours.percentile(0.5));
    cell.p99_us = Some(ours.percentile(0.99));
    if let (Some(q0), Some(q1), Some(q2)) = (q0, q1, queries()?) {
        cell.dns_queries_warmup = Some(q1 - q0);
        cell.dns_queries = Some(q2 - q1);
    }

    // smtp-source can't pipeline, nor send a PROXY header or a given message.
    if !mode.pipeline && spec.script.is_none() {
        // As many messages as our generator sent in the window, at least
        // two per session.
        let count = (ours.messages.max(2 * mode.sessions as u64)).min(5_000_000);
        let db0 = db_cpu()?;
        let cpu0 = procfs::cpu_split(pid)?;
        let elapsed = smtp_source(
            tools,
            &server,
            mode,
            count,
            settings.window() * 20 + Duration::from_secs(30),
        )?;
        let (user, sys) = cpu_since(pid, cpu0)?;
        let mut figures = Figures::new(count, elapsed, user, sys);
        if let (Some(db0), Some(db)) = (db0, db_cpu()?) {
            figures.db_cpu_us_per_msg =
                Some(db.saturating_sub(db0).as_secs_f64() * 1e6 / count.max(1) as f64);
        }
        cell.source = Some(figures);
    }
    cell.hwm_kib = Some(procfs::memory(pid)?.hwm_kib);
    let sent = ours.messages + cell.source.as_ref().map_or(0, |s| s.messages);
    if let Some(stored) = server.delivered()
        && (stored as u64) < sent
    {
        bail!("Mailbox acknowledged at least {sent} messages but stored {stored}");
    }
    if let Some(queued) = server.queued() {
        let queued = queued?;
        if queued < sent {
            bail!("the queue acknowledged at least {sent} messages but holds {queued}");
        }
    }
    server.stop();
    Ok(())
}

/// The user and system CPU time `pid` used since `(user0, sys0)`.
fn cpu_since(pid: u32, (user0, sys0): (Duration, Duration)) -> Result<(Duration, Duration)> {
    let (user, sys) = procfs::cpu_split(pid)?;
    Ok((user.saturating_sub(user0), sys.saturating_sub(sys0)))
}

/// Run Postfix's smtp-source against `server` (on [`cpus::CLIENT`] in a
/// pinned mode); the wall time it took.
fn smtp_source(
    tools: &Tools,
    server: &Server,
    mode: Mode,
    count: u64,
    limit: Duration,
) -> Result<Duration> {
    let mut cmd = Command::new(tools.smtp_source());
    cmd.env("LD_LIBRARY_PATH", tools.postfix_libs())
        .arg("-s")
        .arg(mode.sessions.to_string())
        .arg("-m")
        .arg(count.to_string())
        .arg("-l")
        .arg(source_payload(mode.size).to_string())
        .args([
            "-M",
            "client.bench.example",
            "-f",
            load::SENDER,
            "-t",
            load::RECIPIENT,
        ]);
    if mode.reuse {
        cmd.arg("-d");
    }
    cmd.arg(format!("inet:{}", server.addr));
    if mode.pinned {
        cmd = cpus::taskset(&cmd, cpus::CLIENT);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().context("starting smtp-source")?;
    loop {
        if let Some(status) = child.try_wait()? {
            let elapsed = t.elapsed();
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("smtp-source failed ({status}): {}", err.trim());
            }
            return Ok(elapsed);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("smtp-source did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// smtp-source's `-l` is the body length; it adds its own headers (From,
/// To, Date, Message-Id: about 150 bytes), so ask for that much less to send
/// about the same bytes as the Rust generator.
fn source_payload(size: usize) -> usize {
    size.saturating_sub(150).max(1)
}

/// Sessions held open for a memory figure.
#[derive(Clone, Copy)]
struct Held {
    sessions: usize,
    /// How far each goes first.
    hold: Hold,
    /// The server's `max_plugin_instances` (example-policy peers).
    max_plugin_instances: Option<usize>,
}

/// The RSS per session of `held.sessions` sessions held open; the error,
/// if any, in the figures.
fn idle_memory(tools: &Tools, rt: &tokio::runtime::Runtime, peer: Peer, held: Held) -> IdleFigures {
    let Held {
        sessions,
        hold,
        max_plugin_instances,
    } = held;
    let f = idle_memory_of(tools, rt, peer, held).unwrap_or_else(|e| IdleFigures {
        peer: Some(peer),
        hold,
        max_plugin_instances,
        sessions,
        error: Some(format!("{e:#}")),
        ..Default::default()
    });
    log(format!(
        "idle {} ({sessions} at {hold:?}, max_plugin_instances {max_plugin_instances:?}): {:.1} KiB/session {}",
        peer.short(),
        f.kib_per_session,
        f.error.as_deref().unwrap_or("")
    ));
    f
}

fn idle_memory_of(
    tools: &Tools,
    rt: &tokio::runtime::Runtime,
    peer: Peer,
    held: Held,
) -> Result<IdleFigures> {
    let Held {
        sessions,
        hold,
        max_plugin_instances,
    } = held;
    let server = Server::start(
        tools,
        peer,
        Options {
            sessions,
            max_plugin_instances,
            ..Options::default()
        },
    )?;
    let pid = server.pid();
    let deadline = Instant::now() + Duration::from_secs(180);
    // Warm up with a few sessions doing the same, closed again.
    let warm = rt.block_on(load::open_idle(server.addr, 8, hold, 8, deadline))?;
    rt.block_on(async {
        for c in warm {
            c.quit().await?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let (base, base_pss) = (procfs::memory(pid)?, procfs::pss_kib(pid)?);
    let open = rt.block_on(load::open_idle(server.addr, sessions, hold, 200, deadline))?;
    // Let the server finish whatever it does after the last reply.
    std::thread::sleep(Duration::from_millis(1000));
    let (with, pss) = (procfs::memory(pid)?, procfs::pss_kib(pid)?);
    let per_session = |before: u64, after: u64| (after as f64 - before as f64) / sessions as f64;
    drop(open);
    server.stop();
    Ok(IdleFigures {
        peer: Some(peer),
        hold,
        max_plugin_instances,
        sessions,
        base_rss_kib: base.rss_kib,
        rss_kib: with.rss_kib,
        kib_per_session: per_session(base.rss_kib, with.rss_kib),
        pss_kib_per_session: Some(per_session(base_pss, pss)),
        error: None,
    })
}

fn large_message(
    tools: &Tools,
    rt: &tokio::runtime::Runtime,
    peer: Peer,
    mib: usize,
) -> Result<LargeFigures> {
    let server = Server::start(
        tools,
        peer,
        Options {
            unlimited_size: true,
            ..Options::default()
        },
    )?;
    let pid = server.pid();
    // One ordinary message first, so the baseline includes a warm instance.
    let spec = LoadSpec {
        addr: server.addr,
        reuse: true,
        size: 1024,
        sessions: 1,
        duration: Duration::from_secs(5),
        max_messages: 2,
        pipeline: false,
        script: None,
    };
    rt.block_on(load::run(&spec))?;
    let base = procfs::memory(pid)?;
    let seconds = rt
        .block_on(load::send_large(server.addr, mib << 20))?
        .as_secs_f64();
    let after = procfs::memory(pid)?;
    if let Some(stored) = server.delivered() {
        if stored < 3 {
            bail!("Mailbox stored {stored} messages, not 3");
        }
        // The whole message, not a truncated one. Maildir files end lines
        // with LF where the wire had CRLF, so each LF stands for two bytes.
        let stored = match server.largest_delivered() {
            Some(path) => std::fs::read(path)?,
            None => Vec::new(),
        };
        let on_the_wire = stored.len() + stored.iter().filter(|&&b| b == b'\n').count();
        if on_the_wire < mib << 20 {
            bail!("Mailbox stored {on_the_wire} bytes (counting CRLFs), less than {mib} MiB");
        }
    }
    server.stop();
    Ok(LargeFigures {
        peer: Some(peer),
        mib,
        base_hwm_kib: base.hwm_kib,
        hwm_kib: after.hwm_kib,
        delta_mib: (after.hwm_kib as f64 - base.hwm_kib as f64) / 1024.0,
        seconds,
        error: None,
    })
}

/// Versions of what was measured.
fn versions(tools: &Tools) -> Vec<(String, String)> {
    let run = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(if o.stdout.is_empty() {
                    &o.stderr
                } else {
                    &o.stdout
                })
                .trim()
                .to_owned()
            })
            .unwrap_or_default()
    };
    let root = crate::repo_root();
    let postfix =
        std::fs::read_to_string(tools.postfix.join("VERSION")).unwrap_or_else(|_| "unknown".into());
    vec![
        // bench/run passes the commit; `git describe` when run by hand.
        ("wasmtp".into(), std::env::var("WASMTP_REVISION").unwrap_or_else(|_| run(Command::new("git").arg("-C").arg(&root).args(["describe", "--always", "--dirty"])))),
        ("rustc".into(), run(Command::new("rustc").arg("--version"))),
        ("postfix".into(), postfix.trim().to_owned()),
        ("aiosmtpd".into(), run(Command::new(&tools.python).args(["-c", "import aiosmtpd, sys; print(aiosmtpd.__version__, 'on Python', sys.version.split()[0])"]))),
    ]
}
