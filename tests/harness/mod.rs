//! Shared helpers for wasmtp's integration tests: start the real `wasmtp`
//! binary (or aiosmtpd, to compare with), and talk SMTP to it over a plain
//! blocking socket, so that a test reads like the transcript it checks:
//!
//! ```ignore
//! let server = Server::start(&["--hostname", HOSTNAME, "-c", "sink"]);
//! let mut client = Client::greeted(server.addr());
//! client.expect("HELO client.example", 250);
//! client.expect("MAIL FROM:<anne@example.com>", 250);
//! client.expect("DATA", 503);
//! ```
//!
//! Include it from a test file with `#[path = "harness/mod.rs"] mod harness;`.
//!
//! Layout:
//! - [`Server`]: the `wasmtp` binary on port 0, its stdout and stderr captured;
//! - [`Aiosmtpd`]: `python3 -m aiosmtpd` on a free port, for differential tests;
//! - [`Client`] and [`Reply`]: an SMTP client that keeps the transcript and
//!   shows it whenever an expectation fails;
//! - [`plugin_path`], [`client_script`], [`python`]: where things are.

// Each test file uses its own part of the harness.
#![allow(dead_code)]

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const WASMTP: &str = env!("CARGO_BIN_EXE_wasmtp");

/// The host name tests give wasmtp with `--hostname`, so that greetings and
/// EHLO replies don't depend on the machine.
pub const HOSTNAME: &str = "mx.wasmtp.test";

/// How long a server may take to say `listening on`: it compiles its
/// plugins first, which in an unoptimised build takes a few seconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client waits for a reply (or a close) before failing.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory `host/build.rs` builds the test plugins into.
///
/// Read at run time rather than with `env!`, so that the harness compiles
/// before the build script exports it; a test that needs a plugin says so.
pub fn plugin_dir() -> PathBuf {
    match option_env!("WASMTP_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!("WASMTP_PLUGIN_DIR is not set: host/build.rs should export it"),
    }
}

/// A test plugin by file name (`trap.wasm`, `every_hook.wasm`, ...).
pub fn plugin_path(file: &str) -> PathBuf {
    let path = plugin_dir().join(file);
    assert!(path.is_file(), "no test plugin at {}", path.display());
    path
}

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A test plugin in another language, built by its toolchain from
/// `tests/<lang>/<name>` once per change of `sources` (its own files and
/// the WIT its world reads): the component is kept in the test target dir
/// under a name that hashes them, so a run with nothing changed costs no
/// build (componentize-py and componentize-js take twenty seconds or more).
/// `build` makes the command that writes the component to the path it is
/// given; `hint` says how to install the toolchain.
fn cached_component(
    label: &str,
    dir: &Path,
    mut sources: Vec<PathBuf>,
    wit_dirs: &[PathBuf],
    hint: &str,
    build: impl FnOnce(&Path) -> Command,
) -> PathBuf {
    for wit in wit_dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(wit)
            .unwrap_or_else(|e| panic!("{}: {e}", wit.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wit"))
            .collect();
        files.sort();
        sources.extend(files);
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{label}-{:016x}.wasm", hash_files(&sources)));
    if !out.exists() {
        let partial = out.with_extension(format!("{}.partial", std::process::id()));
        let mut command = build(&partial);
        let built = command
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} ({hint})"));
        assert!(
            built.status.success(),
            "building {}: {}{}",
            dir.display(),
            String::from_utf8_lossy(&built.stdout),
            String::from_utf8_lossy(&built.stderr)
        );
        std::fs::rename(&partial, &out).unwrap();
    }
    out
}

/// A Python test plugin, `tests/python/<name>` (its `app.py` and `wit/`,
/// world `world`), built with componentize-py.
#[allow(dead_code)]
pub fn python_component(name: &str, world: &str) -> PathBuf {
    let dir = repo_root().join("tests/python").join(name);
    cached_component(
        &format!("python-{name}"),
        &dir,
        vec![dir.join("app.py")],
        &[dir.join("wit"), repo_root().join("wit")],
        "pip install -r examples/python/requirements.txt; .ci/run does",
        |out| {
            let mut c = Command::new("componentize-py");
            c.args([
                "--quiet",
                "-d",
                "wit",
                "-w",
                world,
                "componentize",
                "app",
                "-o",
            ])
            .arg(out);
            c
        },
    )
}

/// FNV-1a over the files' bytes, in order: stable across runs and
/// toolchains, unlike `DefaultHasher`.
#[allow(dead_code)]
fn hash_files(files: &[PathBuf]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for file in files {
        for b in std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    hash
}

/// A JavaScript test plugin, `tests/javascript/<name>`, built with
/// ComponentizeJS (SpiderMonkey on StarlingMonkey, whose `fetch` is made
/// over wasi:http/outgoing-handler) from its `app.js` and `wit/` (world
/// `world`), with the componentize-js its own package-lock.json pins
/// (`npm ci --prefix tests/javascript/<name>`; .ci/run does).
#[allow(dead_code)]
pub fn componentize_js_component(name: &str, world: &str) -> PathBuf {
    let dir = repo_root().join("tests/javascript").join(name);
    let tool = dir.join("node_modules/.bin/componentize-js");
    cached_component(
        &format!("componentize-js-{name}"),
        &dir,
        vec![dir.join("app.js"), dir.join("package-lock.json")],
        &[
            dir.join("wit"),
            repo_root().join("wit"),
            repo_root().join("wit/deps/http"),
        ],
        &format!("npm ci --prefix tests/javascript/{name}; .ci/run does"),
        |out| {
            let mut c = Command::new(&tool);
            c.args(["app.js", "--wit", "wit", "--world-name", world, "-o"])
                .arg(out);
            c
        },
    )
}

/// A JavaScript test plugin, `tests/javascript/<name>` (its `app.js` and
/// `wit/`, world `world`), built with the example's componentize-qjs.
#[allow(dead_code)]
pub fn javascript_component(name: &str, world: &str) -> PathBuf {
    let dir = repo_root().join("tests/javascript").join(name);
    let qjs = repo_root().join("examples/javascript/node_modules/.bin/componentize-qjs");
    cached_component(
        &format!("javascript-{name}"),
        &dir,
        vec![dir.join("app.js"), qjs.clone()],
        &[dir.join("wit"), repo_root().join("wit")],
        "npm ci --prefix examples/javascript; .ci/run does",
        |out| {
            let mut c = Command::new(&qjs);
            c.args([
                "--wit", "wit", "--world", world, "--js", "app.js", "--sync", "-o",
            ])
            .arg(out);
            c
        },
    )
}

/// A message read back from a Maildir by Python's `mailbox` and `email`.
#[allow(dead_code)]
pub struct Stored {
    /// The header fields in order, each `Name: value`, unfolded.
    pub fields: Vec<String>,
    pub body: String,
}

#[allow(dead_code)]
impl Stored {
    /// The values of the fields named `name` (case-insensitively).
    pub fn named(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter_map(|f| {
                f.split_once(": ")
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v)
            .collect()
    }
}

/// Every message in `maildir` (none if it was never made), in file-name
/// order, as a standard reader sees it: Python's `mailbox.Maildir` and
/// `email` parser.
#[allow(dead_code)]
pub fn maildir_messages(maildir: &Path) -> Vec<Stored> {
    if !maildir.join("new").exists() {
        return Vec::new();
    }
    let script = r#"
import email, email.policy, json, mailbox, sys
out = []
for key, msg in sorted(mailbox.Maildir(sys.argv[1], factory=None, create=False).items()):
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.compat32)
    out.append({
        "fields": [k + ": " + " ".join(v.split()) for k, v in parsed.items()],
        "body": parsed.get_payload(),
    })
print(json.dumps(out))
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(maildir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    messages
        .into_iter()
        .map(|m| Stored {
            fields: m["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect(),
            body: m["body"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// A Python client script in `tests/clients/`.
pub fn client_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("clients").join(name)
}

/// The Python interpreter for client scripts and aiosmtpd:
/// `$WASMTP_TEST_PYTHON`, or `python3`.
pub fn python() -> String {
    std::env::var("WASMTP_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs `tests/clients/<script>` with `args` to completion; panics, showing
/// its output, when it does not exit with status 0.
pub fn run_client_script(script: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .arg(client_script(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?} exited with {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    stdout
}

// ---------------------------------------------------------------------------
// Processes

/// The bytes a child wrote to one of its pipes so far, filled by a thread.
#[derive(Clone, Default)]
pub struct Captured {
    state: Arc<(Mutex<CapturedState>, Condvar)>,
}

#[derive(Default)]
struct CapturedState {
    bytes: Vec<u8>,
    closed: bool,
}

impl Captured {
    fn drain(pipe: impl Read + Send + 'static) -> Captured {
        let captured = Captured::default();
        let state = Arc::clone(&captured.state);
        thread::spawn(move || {
            let mut pipe = pipe;
            let mut chunk = [0u8; 8192];
            loop {
                let n = pipe.read(&mut chunk).unwrap_or(0);
                let (lock, changed) = &*state;
                let mut s = lock.lock().unwrap();
                if n == 0 {
                    s.closed = true;
                    changed.notify_all();
                    return;
                }
                s.bytes.extend_from_slice(&chunk[..n]);
                changed.notify_all();
            }
        });
        captured
    }

    /// Everything so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.state.0.lock().unwrap().bytes).into_owned()
    }

    /// Waits until `done` holds for the text so far (true) or the pipe is
    /// closed or `timeout` passes without it (false).
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap();
        loop {
            if done(&String::from_utf8_lossy(&s.bytes)) {
                return true;
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                return false;
            }
            s = changed.wait_timeout(s, deadline - now).unwrap().0;
        }
    }
}

/// A child process with both output pipes captured; killed on drop.
pub struct Process {
    name: String,
    child: Child,
    stdout: Captured,
    stderr: Captured,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout/stderr captured.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let stdout = Captured::drain(child.stdout.take().unwrap());
        let stderr = Captured::drain(child.stderr.take().unwrap());
        Process {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Panics with everything the process said; for failed expectations.
    pub fn fail(&mut self, why: &str) -> ! {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited with {status}"),
            _ => "still running".to_string(),
        };
        panic!(
            "{}: {why} ({status})\n--- stdout\n{}\n--- stderr\n{}",
            self.name,
            self.stdout(),
            self.stderr()
        );
    }

    /// Waits until stdout contains `needle`; panics after `timeout`.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        if !self.stdout.wait_until(timeout, |s| s.contains(needle)) {
            self.fail(&format!("stdout never said {needle:?}"));
        }
        self.stdout()
    }

    /// Waits until stderr contains `needle`; panics after `timeout`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        if !self.stderr.wait_until(timeout, |s| s.contains(needle)) {
            self.fail(&format!("stderr never said {needle:?}"));
        }
        self.stderr()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit; panics (after killing it) if it is
    /// still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the drain threads reach the end of the pipes.
                self.stdout.wait_until(Duration::from_secs(2), |_| false);
                self.stderr.wait_until(Duration::from_secs(2), |_| false);
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.fail(&format!("did not exit within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI colour sequences, in case a logger adds them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every address in a `listening on ADDR` log line of `log`, in order.
pub fn listening_addrs(log: &str) -> Vec<SocketAddr> {
    const MARK: &str = "listening on ";
    let mut addrs = Vec::new();
    for line in log.lines() {
        let line = strip_ansi(line);
        if let Some(at) = line.find(MARK) {
            let rest = &line[at + MARK.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))
                .unwrap_or(rest.len());
            if let Ok(addr) = rest[..end].parse() {
                addrs.push(addr);
            }
        }
    }
    addrs
}

// ---------------------------------------------------------------------------
// wasmtp

/// The `wasmtp` binary, serving; killed on drop.
pub struct Server {
    process: Process,
    addr: SocketAddr,
    // Kept until the server is gone.
    _config: Option<tempfile::NamedTempFile>,
}

impl Server {
    /// `wasmtp -l 127.0.0.1:0 ARGS...`, once it is listening.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["-l", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::spawn(&all, None)
    }

    /// `wasmtp --config FILE`, FILE holding `toml`, once its first listener
    /// is listening (give listeners `127.0.0.1:0`; see [`Server::addrs`]).
    pub fn start_config(toml: &str) -> Server {
        Server::start_config_with(toml, &[])
    }

    /// `wasmtp --config FILE ARGS...`.
    pub fn start_config_with(toml: &str, args: &[&str]) -> Server {
        let mut file = tempfile::Builder::new()
            .prefix("wasmtp-test-")
            .suffix(".toml")
            .tempfile()
            .expect("cannot create a temporary config file");
        file.write_all(toml.as_bytes())
            .expect("cannot write the config file");
        file.flush().unwrap();
        let path = file
            .path()
            .to_str()
            .expect("temp path is UTF-8")
            .to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Server::spawn(&all, Some(file))
    }

    fn spawn(args: &[&str], config: Option<tempfile::NamedTempFile>) -> Server {
        let mut command = Command::new(WASMTP);
        command.args(args);
        // The harness reads the `listening on` line: keep the log level the
        // binary's default (info) unless the test run asks for another.
        command.env_remove("RUST_LOG").env("NO_COLOR", "1");
        if let Ok(level) = std::env::var("WASMTP_TEST_LOG") {
            command.env("RUST_LOG", level);
        }
        let mut process = Process::spawn("wasmtp", command);
        let found = process
            .stderr
            .wait_until(START_TIMEOUT, |log| !listening_addrs(log).is_empty());
        if !found {
            process.fail(&format!("no `listening on` line (args {args:?})"));
        }
        let addr = listening_addrs(&process.stderr())[0];
        Server {
            process,
            addr,
            _config: config,
        }
    }

    /// The address of the (first) listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The addresses of every `listening on` line logged so far.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        listening_addrs(&self.stderr())
    }

    /// Waits until `n` listeners have said `listening on`, and returns them.
    pub fn wait_for_listeners(&mut self, n: usize) -> Vec<SocketAddr> {
        if !self
            .process
            .stderr
            .wait_until(START_TIMEOUT, |log| listening_addrs(log).len() >= n)
        {
            self.process
                .fail(&format!("fewer than {n} `listening on` lines"));
        }
        self.addrs()
    }

    /// What the server wrote to stdout so far (the Debugging plugin's output).
    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub fn wait_for_stdout(&mut self, needle: &str) -> String {
        self.process.wait_for_stdout(needle, IO_TIMEOUT)
    }

    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        self.process.wait_for_stderr(needle, IO_TIMEOUT)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal)
    }

    /// SIGTERM, then waits (10 s at most) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        self.process.wait_exit(IO_TIMEOUT)
    }

    /// Panics showing what the server said.
    pub fn fail(&mut self, why: &str) -> ! {
        self.process.fail(why)
    }
}

/// Runs `wasmtp ARGS...` to completion (for arguments and configs it must
/// refuse); kills it and panics if it still runs after `timeout`.
pub fn run_wasmtp(args: &[&str], timeout: Duration) -> Output {
    let mut command = Command::new(WASMTP);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let mut process = Process::spawn("wasmtp", command);
    let status = process.wait_exit(timeout);
    Output {
        status,
        stdout: process.stdout().into_bytes(),
        stderr: process.stderr().into_bytes(),
    }
}

/// A port nothing listens on right now (for servers that can't take port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------
// The metrics endpoint

/// The `/metrics` address a server logged (`serving metrics at http://…`).
pub fn metrics_addr(log: &str) -> Option<SocketAddr> {
    let at = log.find("serving metrics at http://")? + "serving metrics at http://".len();
    log[at..].split('/').next()?.parse().ok()
}

/// `GET path` on a metrics endpoint: (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Every sample of a scrape: `name{labels}` → value.
pub fn scrape(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF:\n{body}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (
                series.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("bad sample {l:?}")),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// aiosmtpd

/// The aiosmtpd version the parity tests were written against.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

/// Ok when `python3 -m aiosmtpd` is aiosmtpd 1.4.6; otherwise why not.
pub fn aiosmtpd_available() -> Result<(), String> {
    let output = Command::new(python())
        .args(["-c", "import aiosmtpd; print(aiosmtpd.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        return Err(format!(
            "aiosmtpd is not installed for {} (pip install aiosmtpd=={AIOSMTPD_VERSION})",
            python()
        ));
    }
    if version != AIOSMTPD_VERSION {
        return Err(format!(
            "aiosmtpd {version} is installed; these tests expect {AIOSMTPD_VERSION} \
             (pip install aiosmtpd=={AIOSMTPD_VERSION})"
        ));
    }
    Ok(())
}

/// `python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c HANDLER ARGS...`, once it
/// accepts connections; killed on drop. `tests/clients/` is on PYTHONPATH,
/// so test handlers there (`aiosmtpd_handlers.Trap`) can be named.
pub struct Aiosmtpd {
    process: Process,
    addr: SocketAddr,
}

impl Aiosmtpd {
    pub fn start(handler: &str, extra_args: &[&str]) -> Aiosmtpd {
        if let Err(why) = aiosmtpd_available() {
            panic!("{why}");
        }
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = Command::new(python());
        command
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &addr.to_string(),
                "-c",
                handler,
            ])
            .args(extra_args)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONPATH", client_script(""));
        let mut process = Process::spawn("aiosmtpd", command);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(probe) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                drop(probe);
                return Aiosmtpd { process, addr };
            }
            if process.child.try_wait().ok().flatten().is_some() || Instant::now() >= deadline {
                process.fail(&format!("never accepted connections on {addr}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub fn wait_for_stdout(&mut self, needle: &str) -> String {
        self.process.wait_for_stdout(needle, IO_TIMEOUT)
    }
}

// ---------------------------------------------------------------------------
// Client

/// One SMTP reply: `250-first`, `250 last` is code 250, lines
/// `["first", "last"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, without the code, separator and CRLF.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The lines as they were on the wire (without CRLF): `250-first`, `250 last`.
    pub fn wire(&self) -> Vec<String> {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            return vec![self.code.to_string()];
        }
        self.lines
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let sep = if i == last { ' ' } else { '-' };
                format!("{}{sep}{text}", self.code)
            })
            .collect()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire().join("\n"))
    }
}

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection (or reset it).
    Closed,
    /// Nothing (complete) arrived within the timeout; what did arrive.
    TimedOut(String),
    /// Something that is not an SMTP reply line.
    Malformed(String),
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => write!(f, "the server closed the connection"),
            ReadError::TimedOut(partial) if partial.is_empty() => write!(f, "no reply in time"),
            ReadError::TimedOut(partial) => {
                write!(f, "no complete reply in time (got {partial:?})")
            }
            ReadError::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A blocking SMTP client that records the dialog as `C:`/`S:` lines.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    transcript: Vec<String>,
}

impl Client {
    /// Connects; reads nothing (see [`Client::greeted`]).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let writer = stream.try_clone().unwrap();
        Client {
            reader: BufReader::new(stream),
            writer,
            transcript: Vec::new(),
        }
    }

    /// Connects and reads the `220` greeting.
    pub fn greeted(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        client.expect_reply(220);
        client
    }

    /// Connects, is greeted, and says `EHLO client.example`.
    pub fn after_ehlo(addr: SocketAddr) -> Client {
        let mut client = Client::greeted(addr);
        client.expect("EHLO client.example", 250);
        client
    }

    /// Changes the read timeout (default [`IO_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }

    /// The client's own address (what the server sees as the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().unwrap()
    }

    /// Sends `line` and CRLF.
    pub fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes);
    }

    /// Sends `bytes` as they are, in one write (pipelining).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            self.transcript.push(format!("C: {}", show(line)));
        }
        if let Err(e) = self
            .writer
            .write_all(bytes)
            .and_then(|_| self.writer.flush())
        {
            self.fail(&format!("cannot send: {e}"));
        }
    }

    /// Half-closes the connection (the client will send nothing more).
    pub fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Write);
    }

    /// Reads one reply, however many lines.
    pub fn try_read_reply(&mut self) -> Result<Reply, ReadError> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            match self.reader.read_until(b'\n', &mut raw) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadError::TimedOut(show(&raw)));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ReadError::Closed);
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
            self.transcript.push(format!("S: {}", show(&raw)));
            let Some(line) = raw.strip_suffix(b"\r\n") else {
                return Err(ReadError::Malformed(show(&raw)));
            };
            let line = String::from_utf8_lossy(line).into_owned();
            let (this_code, last, text) =
                parse_reply_line(&line).ok_or_else(|| ReadError::Malformed(line.clone()))?;
            if *code.get_or_insert(this_code) != this_code {
                return Err(ReadError::Malformed(format!(
                    "{line} (code changed within a reply)"
                )));
            }
            lines.push(text.to_string());
            if last {
                return Ok(Reply {
                    code: this_code,
                    lines,
                });
            }
        }
    }

    /// Reads one reply; panics with the transcript if there is none.
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply() {
            Ok(reply) => reply,
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// Sends `line`, reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(line);
        self.read_reply()
    }

    /// Sends `line` and asserts its reply's code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        self.send(line);
        self.expect_reply(code)
    }

    /// Reads a reply and asserts its code.
    pub fn expect_reply(&mut self, code: u16) -> Reply {
        let reply = self.read_reply();
        if reply.code != code {
            self.fail(&format!("expected a {code} reply, got {}", reply.code));
        }
        reply
    }

    /// Asserts that the server closes the connection (sending nothing more).
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => {}
            Ok(_) => {
                self.transcript.push(format!("S: {}", show(&rest)));
                self.fail("expected the connection to close, got more data");
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => self.fail(&format!("expected the connection to close: {e}")),
        }
    }

    /// MAIL, RCPT for each recipient, DATA, the message (dot-stuffed here,
    /// CRLF line endings), and `.`; asserts 250/250/354 and returns the
    /// reply to the message.
    pub fn send_message(&mut self, from: &str, to: &[&str], message: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.expect("DATA", 354);
        let mut data = Vec::new();
        for line in message.lines() {
            if line.starts_with('.') {
                data.push(b'.');
            }
            data.extend_from_slice(line.as_bytes());
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.send_raw(&data);
        self.read_reply()
    }

    /// The dialog so far, one `C:`/`S:` line per line.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    /// Panics with `why` and the transcript.
    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n--- transcript\n{}", self.transcript());
    }
}

/// `250-text` → (250, false, "text"); `250 text` and `250` → last.
pub fn parse_reply_line(line: &str) -> Option<(u16, bool, &str)> {
    let digits = line.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = digits.parse().ok()?;
    match line.as_bytes().get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// Bytes as a readable transcript line: escapes controls, shortens long runs.
pub fn show(bytes: &[u8]) -> String {
    const LIMIT: usize = 160;
    let text: String = String::from_utf8_lossy(bytes).escape_debug().collect();
    if text.len() <= LIMIT {
        return text;
    }
    let cut = (0..=LIMIT)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &text[..cut], bytes.len())
}
