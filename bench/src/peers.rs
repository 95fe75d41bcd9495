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
    /// Scratch space: Maildirs, configs. Removed at the end.
    pub scratch: PathBuf,
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

    pub fn label(self) -> &'static str {
        match self {
            Peer::WasmtpEmpty => "wasmtp, empty plugin (floor: no wasm call)",
            Peer::WasmtpSink => "wasmtp -c sink",
            Peer::WasmtpDebugging => "wasmtp -c debugging (stdout to /dev/null)",
            Peer::WasmtpMailbox => "wasmtp -c mailbox DIR",
            Peer::WasmtpNoop => "wasmtp, noop plugin",
            Peer::SmtpSink => "Postfix smtp-sink",
            Peer::Aiosmtpd => "aiosmtpd 1.4.6 Sink",
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
        }
    }
}

/// Start-up options beyond the peer's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Lift the message size limit (`-s 0`; aiosmtpd and smtp-sink have
    /// none that matters here).
    pub unlimited_size: bool,
    /// Concurrent sessions the server must hold (smtp-sink's `-m`; wasmtp's
    /// `max_plugin_instances` for the noop plugin).
    pub sessions: usize,
}

/// A running server; killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    maildir: Option<PathBuf>,
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
        let mut cmd = match peer {
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
                let client =
                    tokio::time::timeout(Duration::from_secs(5), Client::connect(self.addr))
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
            // SAFETY: signalling our own child process by its id.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = self.maildir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
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
