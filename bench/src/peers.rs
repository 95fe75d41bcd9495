//! The servers under test, each started fresh for every measurement (so its
//! peak RSS belongs to that measurement alone) on a port of its own, with
//! stdout and stderr to /dev/null.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::load::Client;

/// Where the programs under test are.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The release `wasmtp` binary.
    pub wasmtp: PathBuf,
    /// The directory of the built wasm plugins (`empty.wasm`, `noop.wasm`).
    pub wasm_dir: PathBuf,
    /// The root of the extracted Debian `postfix` package (`usr/sbin/smtp-sink`).
    pub postfix: PathBuf,
    /// The Python interpreter with aiosmtpd 1.4.6 (the real binary, not a
    /// shim, so the PID measured is the server's).
    pub python: PathBuf,
    /// Scratch space: Maildirs, state directories, configs. Removed at the end.
    pub scratch: PathBuf,
    /// Where `bench/run` installs Haraka and its plugins with npm
    /// (`node_modules/Haraka`); only the mail-authentication part needs it.
    pub haraka: PathBuf,
    /// The Node.js that runs Haraka.
    pub node: PathBuf,
    /// Where `bench/run` builds the example policy of `examples/` in each
    /// language (`rust_policy.wasm`, `javascript_policy.wasm`,
    /// `python_policy.wasm`); only the policy part needs them.
    pub examples: PathBuf,
}

impl Tools {
    pub fn smtp_sink(&self) -> PathBuf {
        self.postfix.join("usr/sbin/smtp-sink")
    }

    pub fn smtp_source(&self) -> PathBuf {
        self.postfix.join("usr/sbin/smtp-source")
    }

    /// The Postfix programs link `libpostfix-*.so` from the package.
    pub fn postfix_libs(&self) -> PathBuf {
        self.postfix.join("usr/lib/postfix")
    }

    /// Haraka's start script.
    pub fn haraka_bin(&self) -> PathBuf {
        self.haraka.join("node_modules/Haraka/bin/haraka")
    }

    pub fn check(&self) -> Result<()> {
        for (what, path) in [
            (
                "the wasmtp binary (cargo build --release -p wasmtp)",
                self.wasmtp.clone(),
            ),
            (
                "the empty plugin (built with wasmtp)",
                self.wasm_dir.join("empty.wasm"),
            ),
            (
                "the noop plugin (built with wasmtp)",
                self.wasm_dir.join("noop.wasm"),
            ),
            (
                "Postfix smtp-sink (bench/run extracts it)",
                self.smtp_sink(),
            ),
            (
                "Postfix smtp-source (bench/run extracts it)",
                self.smtp_source(),
            ),
        ] {
            if !path.exists() {
                bail!("{what} is missing: {}", path.display());
            }
        }
        let ok = Command::new(&self.python)
            .args([
                "-c",
                "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '1.4.6')",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "{} has no aiosmtpd 1.4.6 (pip install aiosmtpd==1.4.6)",
                self.python.display()
            );
        }
        Ok(())
    }
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// wasmtp with a plugin exporting no hook: the host's defaults, no wasm
    /// call at all. The floor for the wasm cost.
    WasmtpEmpty,
    WasmtpSink,
    WasmtpDebugging,
    WasmtpMailbox,
    /// wasmtp with a plugin exporting `noop` (memory scaling only).
    WasmtpNoop,
    SmtpSink,
    Aiosmtpd,
    /// The built-in `queue` on the embedded SQLite store (group commit).
    WasmtpQueue,
    /// The built-in `queue` on PostgreSQL.
    WasmtpQueuePg,
    /// `greylist → ratelimit → sink`, the key-value store on SQLite.
    WasmtpPolicy,
    /// `greylist → ratelimit → sink` on PostgreSQL.
    WasmtpPolicyPg,
    /// `sink` behind the PROXY protocol, resolving at the benchmark's NSD:
    /// the mail-authentication chain without `mailauth`.
    WasmtpAuthSink,
    /// `mailauth → sink` behind the PROXY protocol, at the benchmark's NSD.
    WasmtpMailauth,
    /// Haraka with `spf`, `dkim` (verify) and `queue/discard`.
    Haraka,
    /// wasmtp running the example policy of `examples/` (recipient
    /// allowlist, `X-Spam-Flag: YES` refused) built from Rust.
    WasmtpExampleRust,
    /// The same policy in JavaScript (componentize-qjs, QuickJS).
    WasmtpExampleJs,
    /// The same policy in Python (componentize-py).
    WasmtpExamplePython,
    /// The JavaScript policy with `instances = "reuse"`: one instance serves
    /// successive sessions.
    WasmtpExampleJsReuse,
    /// The Python policy with `instances = "reuse"`.
    WasmtpExamplePythonReuse,
    /// Haraka with the same policy: `rcpt_to.in_host_list`, a `data_post`
    /// plugin refusing `X-Spam-Flag: YES`, `queue/discard`.
    HarakaPolicy,
}

impl Peer {
    /// The peers of the throughput and latency modes.
    pub const LOAD: [Peer; 6] = [
        Peer::WasmtpEmpty,
        Peer::WasmtpSink,
        Peer::WasmtpDebugging,
        Peer::WasmtpMailbox,
        Peer::SmtpSink,
        Peer::Aiosmtpd,
    ];

    /// The peers of the state part (BENCHMARKS.md, "State").
    pub const STATE: [Peer; 6] = [
        Peer::WasmtpMailbox,
        Peer::WasmtpQueue,
        Peer::WasmtpQueuePg,
        Peer::WasmtpSink,
        Peer::WasmtpPolicy,
        Peer::WasmtpPolicyPg,
    ];

    /// The peers of the mail-authentication part.
    pub const AUTH: [Peer; 3] = [Peer::WasmtpAuthSink, Peer::WasmtpMailauth, Peer::Haraka];

    /// The peers of the policy part (BENCHMARKS.md, "The example policy
    /// against Haraka").
    pub const POLICY: [Peer; 6] = [
        Peer::WasmtpExampleRust,
        Peer::WasmtpExampleJs,
        Peer::WasmtpExamplePython,
        Peer::WasmtpExampleJsReuse,
        Peer::WasmtpExamplePythonReuse,
        Peer::HarakaPolicy,
    ];

    /// The example component a policy peer runs, under [`Tools::examples`].
    pub fn example_component(self) -> Option<&'static str> {
        match self {
            Peer::WasmtpExampleRust => Some("rust_policy.wasm"),
            Peer::WasmtpExampleJs | Peer::WasmtpExampleJsReuse => Some("javascript_policy.wasm"),
            Peer::WasmtpExamplePython | Peer::WasmtpExamplePythonReuse => {
                Some("python_policy.wasm")
            }
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Peer::WasmtpEmpty => "wasmtp, empty plugin (floor: no wasm call)",
            Peer::WasmtpSink => "wasmtp -c sink",
            Peer::WasmtpDebugging => "wasmtp -c debugging (stdout to /dev/null)",
            Peer::WasmtpMailbox => "wasmtp -c mailbox DIR",
            Peer::WasmtpNoop => "wasmtp, noop plugin",
            Peer::SmtpSink => "Postfix smtp-sink",
            Peer::Aiosmtpd => "aiosmtpd 1.4.6 Sink",
            Peer::WasmtpQueue => "wasmtp -c queue DIR (SQLite, group commit)",
            Peer::WasmtpQueuePg => "wasmtp, queue on PostgreSQL",
            Peer::WasmtpPolicy => "wasmtp, greylist → ratelimit → sink (SQLite)",
            Peer::WasmtpPolicyPg => "wasmtp, greylist → ratelimit → sink (PostgreSQL)",
            Peer::WasmtpAuthSink => "wasmtp, sink (no verification)",
            Peer::WasmtpMailauth => "wasmtp, mailauth → sink",
            Peer::Haraka => "Haraka 3.3.4, spf + dkim + queue/discard",
            Peer::WasmtpExampleRust => "wasmtp, example policy in Rust",
            Peer::WasmtpExampleJs => "wasmtp, example policy in JavaScript (QuickJS)",
            Peer::WasmtpExamplePython => "wasmtp, example policy in Python",
            Peer::WasmtpExampleJsReuse => {
                "wasmtp, example policy in JavaScript, instances reused across sessions"
            }
            Peer::WasmtpExamplePythonReuse => {
                "wasmtp, example policy in Python, instances reused across sessions"
            }
            Peer::HarakaPolicy => {
                "Haraka 3.3.4, rcpt_to.in_host_list + X-Spam-Flag data_post + queue/discard"
            }
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Peer::WasmtpEmpty => "wasmtp-empty",
            Peer::WasmtpSink => "wasmtp-sink",
            Peer::WasmtpDebugging => "wasmtp-debugging",
            Peer::WasmtpMailbox => "wasmtp-mailbox",
            Peer::WasmtpNoop => "wasmtp-noop",
            Peer::SmtpSink => "smtp-sink",
            Peer::Aiosmtpd => "aiosmtpd",
            Peer::WasmtpQueue => "wasmtp-queue",
            Peer::WasmtpQueuePg => "wasmtp-queue-pg",
            Peer::WasmtpPolicy => "wasmtp-policy",
            Peer::WasmtpPolicyPg => "wasmtp-policy-pg",
            Peer::WasmtpAuthSink => "wasmtp-auth-sink",
            Peer::WasmtpMailauth => "wasmtp-mailauth",
            Peer::Haraka => "haraka",
            Peer::WasmtpExampleRust => "wasmtp-example-rust",
            Peer::WasmtpExampleJs => "wasmtp-example-js",
            Peer::WasmtpExamplePython => "wasmtp-example-python",
            Peer::WasmtpExampleJsReuse => "wasmtp-example-js-reuse",
            Peer::WasmtpExamplePythonReuse => "wasmtp-example-python-reuse",
            Peer::HarakaPolicy => "haraka-policy",
        }
    }
}

/// Start-up options beyond the peer's defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Lift the message size limit (`-s 0`; aiosmtpd and smtp-sink have
    /// none that matters here).
    pub unlimited_size: bool,
    /// Concurrent sessions the server must hold (smtp-sink's `-m`; wasmtp's
    /// `max_plugin_instances` for the noop plugin).
    pub sessions: usize,
    /// The PostgreSQL database of the `-pg` peers (a connection string).
    pub postgres: Option<String>,
    /// The DNS server of the mail-authentication peers (the benchmark's NSD).
    pub nameserver: Option<SocketAddr>,
    /// Run the server on this CPU alone (`taskset -c CPU`; the pinned modes).
    pub cpu: Option<usize>,
    /// `[server] max_plugin_instances` for the example-policy peers, in a
    /// config file; without it they start from the command line, with the
    /// default (1,000).
    pub max_plugin_instances: Option<usize>,
}

/// The host name the mail-authentication peers answer as.
pub const AUTH_HOSTNAME: &str = "mx.bench.example";

/// A running server; killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    maildir: Option<PathBuf>,
    /// Removed when the server stops: its state directory (SQLite), its
    /// config, Haraka's directory.
    scratch: Vec<PathBuf>,
    /// Where the queue peers queue: `--state-dir DIR` or `--postgres URL`.
    queue_store: Option<(String, String)>,
    wasmtp: PathBuf,
    /// The PROXY header every connection to it starts with, if any.
    pub proxy: Option<String>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(tools: &Tools, peer: Peer, options: Options) -> Result<Server> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let listen = format!("127.0.0.1:{port}");
        let mut maildir = None;
        let mut scratch = Vec::new();
        let mut queue_store = None;
        let config_file = |name: &str, text: String| -> Result<PathBuf> {
            let path = tools.scratch.join(format!("{name}-{port}.toml"));
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let wasmtp_with = |config: PathBuf| {
            let mut c = Command::new(&tools.wasmtp);
            c.arg("--config").arg(config);
            c
        };
        let pg_url = || {
            options
                .postgres
                .clone()
                .context("this peer needs PostgreSQL (the benchmark starts one)")
        };
        let nameserver = || {
            options
                .nameserver
                .context("this peer needs the benchmark's NSD")
        };
        let mut cmd = match peer {
            Peer::WasmtpQueue => {
                let dir = tools.scratch.join(format!("state-{port}"));
                scratch.push(dir.clone());
                queue_store = Some(("--state-dir".to_owned(), dir.display().to_string()));
                let mut c = Command::new(&tools.wasmtp);
                c.args(["-n", "-l", &listen, "-c", "queue"]).arg(&dir);
                c
            }
            Peer::WasmtpQueuePg => {
                let url = pg_url()?;
                queue_store = Some(("--postgres".to_owned(), url.clone()));
                let config = config_file(
                    "queue-pg",
                    format!(
                        "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n\n\
                         [[listener]]\naddress = \"{listen}\"\nplugin = \"queue\"\n"
                    ),
                )?;
                scratch.push(config.clone());
                wasmtp_with(config)
            }
            Peer::WasmtpPolicy | Peer::WasmtpPolicyPg => {
                let store = if peer == Peer::WasmtpPolicyPg {
                    format!("backend = \"postgres\"\nurl = \"{}\"", pg_url()?)
                } else {
                    let dir = tools.scratch.join(format!("state-{port}"));
                    scratch.push(dir.clone());
                    format!("path = \"{}\"", dir.display())
                };
                // Every message passes both: the benchmark's one triplet is
                // let through after the 10 ms delay (primed before the
                // warm-up), and the limit is never reached.
                let config = config_file(
                    "policy",
                    format!(
                        "[store]\n{store}\n\n\
                         [[listener]]\naddress = \"{listen}\"\nplugins = [\"greylist\", \"ratelimit\", \"sink\"]\n\n\
                         [plugin.greylist]\ncomponent = \"greylist\"\nargs = [\"{GREYLIST_DELAY}\", \"86400\"]\n\n\
                         [plugin.ratelimit]\ncomponent = \"ratelimit\"\nargs = [\"ip\", \"1000000000\", \"3600\"]\n"
                    ),
                )?;
                scratch.push(config.clone());
                wasmtp_with(config)
            }
            Peer::WasmtpAuthSink | Peer::WasmtpMailauth => {
                let chain = if peer == Peer::WasmtpMailauth {
                    "[\"mailauth\", \"sink\"]"
                } else {
                    "[\"sink\"]"
                };
                let config = config_file(
                    "auth",
                    format!(
                        "[dns]\nnameservers = [\"{}\"]\n\n\
                         [auth]\nauthserv_id = \"{AUTH_HOSTNAME}\"\n\n\
                         [[listener]]\naddress = \"{listen}\"\nhostname = \"{AUTH_HOSTNAME}\"\n\
                         proxy_protocol = true\nplugins = {chain}\n",
                        nameserver()?
                    ),
                )?;
                scratch.push(config.clone());
                wasmtp_with(config)
            }
            Peer::Haraka => {
                let dir = crate::auth::haraka_config(tools, port, nameserver()?)?;
                scratch.push(dir.clone());
                let mut c = Command::new(&tools.node);
                c.arg(tools.haraka_bin())
                    .arg("-c")
                    .arg(&dir)
                    // queue/discard drops every message (its documented switch).
                    .env("YES_REALLY_DO_DISCARD", "1");
                c
            }
            Peer::WasmtpExampleRust
            | Peer::WasmtpExampleJs
            | Peer::WasmtpExamplePython
            | Peer::WasmtpExampleJsReuse
            | Peer::WasmtpExamplePythonReuse => {
                let component = tools.examples.join(peer.example_component().unwrap());
                if !component.is_file() {
                    bail!(
                        "{} is missing (bench/run builds the examples where their toolchains are installed)",
                        component.display()
                    );
                }
                // The example's arguments: the allowed recipient domains,
                // the load generator's among them.
                let reuse = matches!(
                    peer,
                    Peer::WasmtpExampleJsReuse | Peer::WasmtpExamplePythonReuse
                );
                if !reuse && options.max_plugin_instances.is_none() {
                    let mut c = Command::new(&tools.wasmtp);
                    c.args(["-n", "-l", &listen, "-c"])
                        .arg(&component)
                        .args(POLICY_ALLOWED_DOMAINS);
                    c
                } else {
                    let server = options.max_plugin_instances.map_or(String::new(), |n| {
                        format!("[server]\nmax_plugin_instances = {n}\n\n")
                    });
                    let instances = if reuse { "instances = \"reuse\"\n" } else { "" };
                    let config = config_file(
                        "example",
                        format!(
                            "{server}[[listener]]\naddress = \"{listen}\"\nplugin = \"policy\"\n\n\
                             [plugin.policy]\ncomponent = {:?}\nargs = {:?}\n{instances}",
                            component.display().to_string(),
                            POLICY_ALLOWED_DOMAINS
                        ),
                    )?;
                    scratch.push(config.clone());
                    wasmtp_with(config)
                }
            }
            Peer::HarakaPolicy => {
                let dir = crate::auth::haraka_policy_config(tools, port)?;
                scratch.push(dir.clone());
                let mut c = Command::new(&tools.node);
                c.arg(tools.haraka_bin())
                    .arg("-c")
                    .arg(&dir)
                    .env("YES_REALLY_DO_DISCARD", "1");
                c
            }
            Peer::SmtpSink => {
                let mut c = Command::new(tools.smtp_sink());
                // It refuses to run as root without a user to switch to.
                c.env("LD_LIBRARY_PATH", tools.postfix_libs())
                    .args(["-u", "nobody", "-m"])
                    .arg((options.sessions + 16).max(256).to_string())
                    .arg(&listen)
                    .arg("1024");
                c
            }
            Peer::Aiosmtpd => {
                let mut c = Command::new(&tools.python);
                c.args([
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    &listen,
                    "-c",
                    "aiosmtpd.handlers.Sink",
                ]);
                c
            }
            Peer::WasmtpNoop => {
                let config = tools.scratch.join(format!("noop-{port}.toml"));
                std::fs::write(
                    &config,
                    format!(
                        "[server]\nmax_plugin_instances = {}\n\n[[listener]]\naddress = \"{listen}\"\nplugin = \"noop\"\n\n[plugin.noop]\ncomponent = \"{}\"\n",
                        (options.sessions + 64).max(1000),
                        tools.wasm_dir.join("noop.wasm").display()
                    ),
                )?;
                let mut c = Command::new(&tools.wasmtp);
                c.arg("--config").arg(config);
                c
            }
            _ => {
                let mut c = Command::new(&tools.wasmtp);
                c.args(["-n", "-l", &listen]);
                if options.unlimited_size {
                    c.args(["-s", "0"]);
                }
                match peer {
                    Peer::WasmtpEmpty => c.arg("-c").arg(tools.wasm_dir.join("empty.wasm")),
                    Peer::WasmtpSink => c.args(["-c", "sink"]),
                    Peer::WasmtpDebugging => c.args(["-c", "debugging"]),
                    Peer::WasmtpMailbox => {
                        let dir = tools.scratch.join(format!("maildir-{port}"));
                        c.args(["-c", "mailbox"]).arg(&dir);
                        maildir = Some(dir);
                        &mut c
                    }
                    _ => unreachable!(),
                };
                c
            }
        };
        if let Some(cpu) = options.cpu {
            cmd = crate::cpus::taskset(&cmd, cpu);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", peer.label()))?;
        let mut server = Server {
            addr,
            child,
            maildir,
            scratch,
            queue_store,
            wasmtp: tools.wasmtp.clone(),
            proxy: peer
                .behind_proxy()
                .then(|| crate::load::proxy_line(crate::auth::CLIENT_IP)),
        };
        server
            .wait_ready(Duration::from_secs(120))
            .with_context(|| format!("{} did not start: {cmd:?}", peer.label()))?;
        Ok(server)
    }

    /// Wait until the server answers a greeting (wasmtp compiles its plugin
    /// first, once per machine thanks to its compile cache).
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("it exited with {status}");
            }
            let probe = rt.block_on(async {
                let client = tokio::time::timeout(
                    Duration::from_secs(5),
                    Client::connect_with(self.addr, self.proxy.as_deref()),
                )
                .await??;
                client.quit().await
            });
            if probe.is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("no greeting within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the server (SIGTERM, then SIGKILL after 3 s) and remove its Maildir.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
        if let Some(dir) = self.maildir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        for path in self.scratch.drain(..) {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Messages the queue peers have in their queue (`wasmtp queue stats`),
    /// to check that they really queued what they acknowledged.
    pub fn queued(&self) -> Option<Result<u64>> {
        let (flag, store) = self.queue_store.as_ref()?;
        let run = || -> Result<u64> {
            let out = Command::new(&self.wasmtp)
                .args(["queue", flag, store, "stats", "--json"])
                .stdin(Stdio::null())
                .output()
                .context("running wasmtp queue stats")?;
            if !out.status.success() {
                bail!(
                    "wasmtp queue stats failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .context("wasmtp queue stats --json printed no JSON")?;
            v.get("ready")
                .and_then(|r| r.as_u64())
                .context("no `ready` in wasmtp queue stats --json")
        };
        Some(run())
    }

    /// Messages the Mailbox peer delivered (files in `new/`), to check that
    /// it really stored what it acknowledged.
    pub fn delivered(&self) -> Option<usize> {
        let dir = self.maildir.as_ref()?;
        Some(std::fs::read_dir(dir.join("new")).map_or(0, |d| d.count()))
    }

    /// The largest message Mailbox stored, if this is Mailbox.
    pub fn largest_delivered(&self) -> Option<PathBuf> {
        let dir = self.maildir.as_ref()?;
        let entries = std::fs::read_dir(dir.join("new")).ok()?;
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.metadata().ok()?.len(), e.path()))
            })
            .max()
            .map(|(_, path)| path)
    }
}

impl Peer {
    /// Whether its connections start with a PROXY header (so that the
    /// client it sees is [`crate::auth::CLIENT_IP`], not loopback).
    pub fn behind_proxy(self) -> bool {
        matches!(
            self,
            Peer::WasmtpAuthSink | Peer::WasmtpMailauth | Peer::Haraka
        )
    }
}

/// The recipient domains the example-policy peers accept (wasmtp: the
/// plugin's arguments; Haraka: `config/host_list`). The load generator's
/// and smtp-source's recipient is `rcpt@bench.example`.
pub const POLICY_ALLOWED_DOMAINS: [&str; 2] = ["bench.example", "example.com"];

/// The greylist's delay in the policy peers, in seconds.
pub const GREYLIST_DELAY: &str = "0.01";

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A port nothing listens on now. Each server gets a new one, so the TIME_WAIT
/// connections of one measurement never collide with the next's.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The real interpreter behind `python` (pyenv and the like put a shell
/// shim first on the PATH).
pub fn resolve_python(python: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{} -c 'import sys' failed", python.display());
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Stop a child process the benchmark started: SIGTERM, and SIGKILL if it
/// is still running 3 s later.
pub fn terminate(child: &mut Child) {
    // SAFETY: signalling our own child process by its id.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
