//! Plugins in every language the project promises, built from `examples/`
//! with each language's own toolchain and exercised through the real server
//! with a real SMTP client; the Rust SDK's guarantees; and the authors' tools
//! (`wasmtp plugin inspect`, `wasmtp plugin test`).
//!
//! The four examples implement one policy (a recipient allowlist from their
//! arguments, and a refusal of messages whose headers carry
//! `X-Spam-Flag: YES`), so a single dialog checks them all. A missing
//! toolchain fails the test with the command that installs it: `.ci/run`
//! installs them all.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::{Client, HOSTNAME, Server, WASMTP, repo_root, run_wasmtp};

/// Builds (a few minutes under load for Python and JavaScript) and the first
/// compile of a large component by the server take long.
const SLOW: Duration = Duration::from_secs(600);

/// Where the tests put the components they build.
fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a build command; panics with its output, and `hint` (how to install
/// the toolchain), when it can't be run or fails.
fn build(what: &str, mut command: Command, hint: &str) {
    let started = Instant::now();
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot build the {what} example: {command:?}: {e}\n{hint}"));
    assert!(
        output.status.success(),
        "building the {what} example failed ({}): {command:?}\n--- stdout\n{}\n--- stderr\n{}\n{hint}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("built the {what} example in {:.1?}", started.elapsed());
}

/// Fails loudly when `program` is not on the PATH.
fn require(program: &str, hint: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{program}` is not installed: {hint}");
}

/// The Rust template, built as an author builds it (`cargo build --release`
/// in its directory), into a target dir of the test run.
fn rust_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = repo_root().join("examples/rust-plugin");
        // The reference plugins' target dir (host/build.rs): the SDK and its
        // dependencies are built there already.
        let target = harness::plugin_dir()
            .ancestors()
            .nth(2)
            .map_or_else(|| out_dir().join("rust-target"), Path::to_path_buf);
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .current_dir(&dir)
            .args(["build", "--release", "--target-dir"])
            .arg(&target);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(var);
        }
        build("Rust", command, "run `rustup target add wasm32-wasip2`");
        target.join("wasm32-wasip2/release/rust_policy.wasm")
    })
}

/// The proxy reference plugin (plugins/proxy), built like the others in the
/// plugins workspace; host/build.rs builds only what the binary embeds and
/// tests/plugins.
fn proxy_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = harness::plugin_dir()
            .ancestors()
            .nth(2)
            .expect("the wasm target dir")
            .to_path_buf();
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "proxy",
                "--manifest-path",
            ])
            .arg(repo_root().join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(var);
        }
        build("proxy", command, "run `rustup target add wasm32-wasip2`");
        target.join("wasm32-wasip2/release/proxy.wasm")
    })
}

fn python_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let hint =
            "install it with `pip install -r examples/python/requirements.txt` (.ci/run does)";
        require("componentize-py", hint);
        let out = out_dir().join("python_policy.wasm");
        let mut command = Command::new(repo_root().join("examples/python/build.sh"));
        command.arg(&out);
        build("Python", command, hint);
        out
    })
}

fn javascript_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let hint = "install it with `npm ci --prefix examples/javascript` (.ci/run does)";
        require("node", "install Node.js (apt-get install nodejs npm)");
        let tool = repo_root().join("examples/javascript/node_modules/.bin/componentize-qjs");
        assert!(tool.exists(), "componentize-qjs is not installed: {hint}");
        let out = out_dir().join("javascript_policy.wasm");
        let mut command = Command::new(repo_root().join("examples/javascript/build.sh"));
        command.arg(&out);
        build("JavaScript", command, hint);
        out
    })
}

fn c_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let debian = "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32 (.ci/run does)";
        let cargo =
            "cargo install --locked wit-bindgen-cli@0.61.1 wasm-tools@1.263.0 (.ci/run does)";
        require("clang", debian);
        require("wasm-ld", debian);
        require("wit-bindgen", cargo);
        require("wasm-tools", cargo);
        // The WASI preview-1 adapter of the wasmtime the host uses.
        let adapter = out_dir().join("wasi_snapshot_preview1.reactor.wasm");
        std::fs::write(
            &adapter,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .unwrap();
        let out = out_dir().join("c_policy.wasm");
        let mut command = Command::new(repo_root().join("examples/c/build.sh"));
        command.arg(&out).env("WASI_ADAPTER", &adapter);
        build("C", command, &format!("{debian}; {cargo}"));
        out
    })
}

fn wasmtp(args: &[&str]) -> Output {
    Command::new(WASMTP)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cannot run wasmtp")
}

/// `wasmtp plugin inspect` names exactly the hooks the example defines.
fn check_inspect(plugin: &Path) {
    let out = wasmtp(&["plugin", "inspect", plugin.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("\nhooks: setup, rcpt, data\n"), "{text}");
    assert!(
        text.contains("\ninstances: per session, or reused across sessions"),
        "{text}"
    );
    assert!(text.contains("targets: wasmtp:smtp@0.1.0;"), "{text}");
    assert!(text.contains("verdict: this server can load it"), "{text}");
}

/// The `setup` hook's refusal (`result<_, string>`'s error) reaches the
/// operator as aiosmtpd's `parser.error` would: one line, exit status 2.
fn check_refuses_no_arguments(plugin: &Path) {
    let out = run_wasmtp(&["-l", "127.0.0.1:0", "-c", plugin.to_str().unwrap()], SLOW);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("give at least one allowed recipient domain or address"),
        "{stderr}"
    );
}

/// `wasmtp -l 127.0.0.1:0 ARGS...`, once listening. Unlike
/// `Server::start`, it waits as long as a first compile of an 18 MB
/// component takes on a loaded machine.
fn start_slow(args: &[&str]) -> (harness::Process, std::net::SocketAddr) {
    let mut command = Command::new(WASMTP);
    command
        .args(["-l", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let mut process = harness::Process::spawn("wasmtp", command);
    let log = process.wait_for_stderr("listening on", SLOW);
    let addr = harness::listening_addrs(&log)[0];
    (process, addr)
}

/// The policy, through the real server, with the harness's SMTP client.
fn check_policy(plugin: &Path, language: &str) {
    let (mut server, addr) = start_slow(&[
        "--hostname",
        HOSTNAME,
        "-c",
        plugin.to_str().unwrap(),
        "example.com",
        "postmaster@example.org",
    ]);
    policy_session(addr, language);
    server.wait_for_stderr("refused recipient eve@example.net", harness::IO_TIMEOUT);
}

/// One session through the example policy: every reply is the policy's.
fn policy_session(addr: SocketAddr, language: &str) {
    let mut c = Client::greeted(addr);
    c.expect("EHLO client.example", 250);
    // Hooks the plugin does not export get the server's defaults.
    assert_eq!(c.expect("NOOP", 250).text(), "OK");
    c.expect("MAIL FROM:<anne@example.net>", 250);
    assert_eq!(c.expect("RCPT TO:<bart@example.com>", 250).text(), "OK");
    assert_eq!(
        c.expect("RCPT TO:<Postmaster@Example.ORG>", 250).text(),
        "OK"
    );
    assert_eq!(
        c.expect("RCPT TO:<eve@example.net>", 550).text(),
        "5.1.1 <eve@example.net>: recipient not allowed"
    );
    c.expect("DATA", 354);
    c.send_raw(b"Subject: offer\r\nX-Spam-Flag: YES\r\n\r\nbuy now\r\n.\r\n");
    assert_eq!(
        c.expect_reply(550).text(),
        "5.7.1 message refused: X-Spam-Flag is YES"
    );
    // The flag in the body is not a header.
    let reply = c.send_message(
        "anne@example.net",
        &["bart@example.com"],
        "Subject: hello\r\n\r\nX-Spam-Flag: YES\r\n",
    );
    assert_eq!(reply.code, 250, "{}", c.transcript());
    assert_eq!(
        reply.text(),
        format!("2.0.0 accepted by the {language} policy")
    );
    // A header block longer than one 16 KiB read: the flag after it is
    // still found, and the blank line still ends the header block.
    let filler: String = (0..400)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "f".repeat(40)))
        .collect();
    let reply = c.send_message(
        "anne@example.net",
        &["bart@example.com"],
        &format!("{filler}X-Spam-Flag: YES\r\n\r\nbody\r\n"),
    );
    assert_eq!(reply.code, 550, "{language}: {}", reply.text());
    let reply = c.send_message(
        "anne@example.net",
        &["bart@example.com"],
        &format!("{filler}\r\nX-Spam-Flag: YES\r\n"),
    );
    assert_eq!(reply.code, 250, "{language}: {}", reply.text());
    c.expect("QUIT", 221);
}

/// With `instances = "reuse"`, one instance serves successive sessions
/// (reset between them) and the policy's replies stay the same.
fn check_reuse(plugin: &Path, language: &str) {
    let (_server, smtp, metrics) = start_with_metrics(plugin, "instances = \"reuse\"");
    let idle = r#"wasmtp_plugin_instances_idle{plugin="policy"}"#;
    for _ in 0..3 {
        policy_session(smtp, language);
        // The reset runs after the session ends, in a task of its own.
        let deadline = Instant::now() + SLOW;
        while sample(metrics, idle) != 1.0 {
            assert!(Instant::now() < deadline, "{language}: {idle} never 1");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let series = |name: &str| sample(metrics, &format!("{name}{{plugin=\"policy\"}}"));
    assert_eq!(
        series("wasmtp_plugin_instantiations_total"),
        1.0,
        "{language}"
    );
    assert_eq!(
        series("wasmtp_plugin_instance_reuses_total"),
        2.0,
        "{language}"
    );
}

/// `max_plugin_instances` sessions fit, each holding an instance, whatever
/// the language (a CPython component is 14 core instances, a QuickJS one
/// 9), and the next one is refused with 451.
fn check_capacity(plugin: &Path, language: &str) {
    const SLOTS: usize = 12;
    let (_server, smtp, _) =
        start_configured(plugin, &format!("max_plugin_instances = {SLOTS}"), "");
    let hold = || {
        let mut c = Client::after_ehlo(smtp);
        c.expect("MAIL FROM:<anne@example.net>", 250);
        let reply = c.cmd("RCPT TO:<bart@example.com>");
        (c, reply)
    };
    let held: Vec<_> = (0..SLOTS)
        .map(|i| {
            let (c, reply) = hold();
            assert_eq!(reply.code, 250, "{language}, session {}: {reply:?}", i + 1);
            c
        })
        .collect();
    let (_, reply) = hold();
    assert_eq!(
        reply.code, 451,
        "{language}: one session too many: {reply:?}"
    );
    drop(held);
}

fn check_language(plugin: &Path, language: &str) {
    check_inspect(plugin);
    // Also the first load: the server compiles the component and caches it.
    check_refuses_no_arguments(plugin);
    check_policy(plugin, language);
    check_reuse(plugin, language);
    check_capacity(plugin, language);
    // The authors' replay tool, with the transcript every example follows.
    let transcript = repo_root().join("examples/policy.transcript");
    let out = wasmtp(&[
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--transcript",
        transcript.to_str().unwrap(),
        "example.com",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("8 reply lines matched\n"), "{stdout}");
}

#[test]
fn rust_template_policy() {
    check_language(rust_plugin(), "rust");
}

#[test]
fn python_policy() {
    check_language(python_plugin(), "python");
}

#[test]
fn javascript_policy() {
    check_language(javascript_plugin(), "javascript");
}

#[test]
fn c_policy() {
    check_language(c_plugin(), "c");
}

/// The SDK exports the hooks an impl block defines and no others, so the
/// server calls nothing else: the built-in Mailbox defines `init` and `data`.
#[test]
fn sdk_exports_only_the_hooks_a_plugin_defines() {
    let out = wasmtp(&["plugin", "inspect", "mailbox"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("\nhooks: setup, data\n"), "{text}");
    assert!(text.contains("server defaults (never called): helo, ehlo, mail, rcpt, rset, noop, quit, vrfy, auth, proxy, starttls, exception"), "{text}");
}

/// Every hook defined through the SDK is exported, and each reaches its
/// trait method on the session's own value.
#[test]
fn sdk_every_hook_reaches_its_method() {
    let plugin = harness::plugin_path("sdk_all_hooks.wasm");
    let out = wasmtp(&["plugin", "inspect", plugin.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nhooks: setup, helo, ehlo, mail, rcpt, data, rset, noop, quit, vrfy, auth, proxy, starttls, exception, lmtp-data\n"), "{text}");
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        plugin.to_str().unwrap(),
        "one",
        "two",
    ]);
    let mut c = Client::greeted(server.addr());
    assert_eq!(
        c.expect("HELO client.example", 250).text(),
        "sdk helo client.example [call 1]"
    );
    assert_eq!(
        c.expect("NOOP args", 250).text(),
        "sdk args one,two [call 2]"
    );
    assert_eq!(
        c.expect("VRFY <cate@example.com>", 252).text(),
        "sdk vrfy cate@example.com [call 3]"
    );
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 250).text(),
        "sdk mail anne@example.com [call 4]"
    );
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "sdk rcpt bart@example.com [call 5]"
    );
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert_eq!(
        c.expect_reply(250).text(),
        "sdk data 20 bytes for bart@example.com [call 6]"
    );
    assert_eq!(c.expect("RSET", 250).text(), "sdk rset [call 7]");
    // A second session has its own value.
    let mut other = Client::greeted(server.addr());
    assert_eq!(other.expect("NOOP x", 250).text(), "sdk noop x [call 1]");
    assert_eq!(c.expect("QUIT", 221).text(), "sdk quit [call 8]");
}

/// Mailbox, on the SDK's `Message`, holds only the header block: a message
/// several times larger than the plugin's memory limit is delivered whole.
#[test]
fn mailbox_streams_a_message_larger_than_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let server = Server::start_config(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"inbox\"\nhostname = \"{HOSTNAME}\"\nsize = 0\n\n\
         [plugin.inbox]\ncomponent = \"mailbox\"\nargs = [\"{}\"]\nmemory_limit_mib = 8\n",
        maildir.display()
    ));
    let mut c = Client::greeted(server.addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    let line = format!("{}\r\n", "x".repeat(998));
    let lines = 40 * 1024 * 1024 / line.len();
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..lines {
        message.extend_from_slice(line.as_bytes());
    }
    message.extend_from_slice(b".\r\n");
    c.send_raw(&message);
    assert_eq!(c.expect_reply(250).text(), "OK");
    let files: Vec<_> = std::fs::read_dir(maildir.join("new")).unwrap().collect();
    assert_eq!(files.len(), 1);
    let stored = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    // Mailbox's trace header (three lines), then the message as aiosmtpd stores it.
    assert!(
        stored.starts_with(b"Received: from "),
        "{}",
        String::from_utf8_lossy(&stored[..200])
    );
    let after_trace = stored
        .split(|b| *b == b'\n')
        .take(3)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let stored = stored[after_trace..].to_vec();
    let head = "Subject: big\nX-Peer: ('127.0.0.1', ";
    assert!(
        stored.starts_with(head.as_bytes()),
        "{}",
        String::from_utf8_lossy(&stored[..200])
    );
    // CRLF became LF: 999 bytes a line.
    let body_start = stored.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    assert_eq!(stored.len() - body_start, lines * 999);
}

/// `wasmtp plugin test` replays a transcript through the real server and
/// says where it first differs.
#[test]
fn plugin_test_replays_a_transcript() {
    let plugin = rust_plugin().to_str().unwrap().to_owned();
    let transcript = repo_root().join("examples/policy.transcript");
    let out = wasmtp(&[
        "plugin",
        "test",
        &plugin,
        "--transcript",
        transcript.to_str().unwrap(),
        "example.com",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("  S: 550 5.1.1 <eve@example.net>: recipient not allowed"),
        "{stdout}"
    );
    assert!(stdout.contains("reply lines matched"), "{stdout}");

    // A transcript the plugin does not follow.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.transcript");
    std::fs::write(&wrong, "S: 220 *\nC: HELO client.example\nS: 250 *\nC: MAIL FROM:<a@example.net>\nS: 250 OK\nC: RCPT TO:<eve@example.net>\nS: 250 OK\n").unwrap();
    let out = wasmtp(&[
        "plugin",
        "test",
        &plugin,
        "--transcript",
        wrong.to_str().unwrap(),
        "example.com",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            ":7: expected `250 OK`, got `550 5.1.1 <eve@example.net>: recipient not allowed`"
        ),
        "{stdout}"
    );

    // A transcript that is not one.
    std::fs::write(&wrong, "EHLO x\n").unwrap();
    let out = wasmtp(&[
        "plugin",
        "test",
        &plugin,
        "--transcript",
        wrong.to_str().unwrap(),
        "example.com",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1: a transcript line starts with `C:`"),
        "{out:?}"
    );
}

/// A component built against another minor version of the WIT package is
/// refused, by `plugin inspect` and by the server, with the version it wants.
#[test]
fn a_component_for_another_wit_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("future.wasm");
    let component = wat::parse_str(
        r#"(component (instance $i) (export "wasmtp:smtp/noop@0.2.0" (instance $i)))"#,
    )
    .unwrap();
    std::fs::write(&file, component).unwrap();
    let out = wasmtp(&["plugin", "inspect", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hooks: noop\n"), "{text}");
    assert!(text.contains("verdict: this server refuses it: built against wasmtp:smtp@0.2.0, but this server speaks wasmtp:smtp@0.1.0"), "{text}");
    let out = run_wasmtp(&["-l", "127.0.0.1:0", "-c", file.to_str().unwrap()], SLOW);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("wasmtp:smtp@0.2.0"), "{stderr}");
}

/// `wasmtp plugin inspect` says when the server would refuse a component,
/// and why, in one sentence.
#[test]
fn inspect_refuses_what_the_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("core.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let out = wasmtp(&["plugin", "inspect", module.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is a core WebAssembly module, not a component"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// Proxy: the seed's relay handler, on the SDK, through a network grant.

/// A wasmtp serving the proxy plugin, relaying to `relay`, granted (or not)
/// the connection.
fn proxy_server(relay: std::net::SocketAddr, granted: bool) -> Server {
    let proxy = proxy_plugin();
    let grant = if granted {
        format!("[plugin.relay.grants]\nnetwork = [\"{relay}\"]\n")
    } else {
        String::new()
    };
    Server::start_config(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"relay\"\nhostname = \"{HOSTNAME}\"\n\n\
         [plugin.relay]\ncomponent = \"{}\"\nargs = [\"{}\", \"{}\"]\n{grant}",
        proxy.display(),
        relay.ip(),
        relay.port()
    ))
}

#[test]
fn proxy_relays_each_message_with_x_peer() {
    let mut relay = Server::start(&["--hostname", "relay.wasmtp.test", "-c", "debugging"]);
    let proxy = proxy_server(relay.addr(), true);
    let mut c = Client::greeted(proxy.addr());
    c.expect("EHLO client.example", 250);
    let reply = c.send_message(
        "anne@example.com",
        &["bart@example.com", "cate@example.com"],
        "Subject: relayed\r\n\r\n.hidden line\r\nlast\r\n",
    );
    assert_eq!(reply.code, 250, "{}", c.transcript());
    c.expect("QUIT", 221);
    let printed = relay.wait_for_stdout("END MESSAGE");
    // The relay saw the client's envelope, and the message with aiosmtpd
    // Proxy's X-Peer (the client's address) before the blank line; the
    // dot-stuffed line arrived as sent.
    let log = relay.wait_for_stderr("transaction ended");
    assert!(
        log.contains(r#"from="anne@example.com" to="bart@example.com,cate@example.com""#),
        "{log}"
    );
    // (The relay's Debugging adds its own X-Peer after the proxy's.)
    assert!(
        printed.contains("Subject: relayed\nX-Peer: 127.0.0.1\nX-Peer: ('127.0.0.1', "),
        "{printed}"
    );
    assert!(printed.contains("\n.hidden line\nlast\n"), "{printed}");
}

#[test]
fn proxy_passes_the_relays_refusals_back() {
    let relay = Server::start(&[
        "--hostname",
        "relay.wasmtp.test",
        "-c",
        harness::plugin_path("every_hook.wasm").to_str().unwrap(),
    ]);
    let proxy = proxy_server(relay.addr(), true);
    let mut c = Client::greeted(proxy.addr());
    c.expect("EHLO client.example", 250);
    let refused = c.expect("MAIL FROM:<reject@example.com>", 550);
    assert!(
        refused
            .text()
            .starts_with("5.1.0 every-hook mail reject@example.com"),
        "{}",
        c.transcript()
    );
    c.expect("MAIL FROM:<anne@example.com>", 250);
    assert!(
        c.expect("RCPT TO:<reject@example.com>", 550)
            .text()
            .starts_with("5.1.1 every-hook rcpt reject@example.com")
    );
    assert!(
        c.expect("RCPT TO:<tempfail@example.com>", 451)
            .text()
            .starts_with("4.3.0 every-hook rcpt tempfail@example.com")
    );
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("DATA", 354);
    // every-hook traps on this header, and its exception hook answers 451:
    // the relay's reply is the client's.
    c.send_raw(b"Subject: x\r\nX-Trap: yes\r\n\r\nbody\r\n.\r\n");
    assert_eq!(
        c.expect_reply(451).text(),
        "4.3.0 every-hook exception trap in data [call 1]"
    );
    // The next transaction goes through the same relay connection.
    let reply = c.send_message(
        "anne@example.com",
        &["bart@example.com"],
        "Subject: y\r\n\r\nbody\r\n",
    );
    assert_eq!(reply.code, 250, "{}", c.transcript());
}

#[test]
fn proxy_without_a_network_grant_cannot_connect() {
    let relay = Server::start(&["-c", "sink"]);
    let proxy = proxy_server(relay.addr(), false);
    let mut c = Client::greeted(proxy.addr());
    c.expect("EHLO client.example", 250);
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 451).text(),
        format!("4.4.1 relay {} unreachable", relay.addr())
    );
}

#[test]
fn proxy_needs_an_ip_address() {
    let proxy = proxy_plugin();
    let out = run_wasmtp(
        &[
            "-l",
            "127.0.0.1:0",
            "-c",
            proxy.to_str().unwrap(),
            "relay.example.com",
            "25",
        ],
        SLOW,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the relay `relay.example.com` is not an IP address (the sandbox allows no name lookups)"), "{stderr}");
}

// ---------------------------------------------------------------------------
// The cost of each language, as docs/writing-plugins.md reports it:
//
//     cargo test --test languages -- --ignored --nocapture measure
//
// Measured through the real server, as a client sees it: the first RCPT of a
// session instantiates the plugin (and runs `setup.init`) before its hook
// runs; later RCPTs run the hook alone. Loopback round trips are in every
// number alike.

/// The median and 90th percentile of `samples`, in microseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.9))
}

fn measure_one(language: &str, plugin: &Path) {
    const SESSIONS: usize = 40;
    const MORE_RCPTS: usize = 20;
    let size = std::fs::metadata(plugin).unwrap().len();
    // Loading without the compile cache: compile, link, instantiate and run
    // `setup.init`, which refuses (no arguments) and ends the process.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("uncached.toml");
    std::fs::write(&config, format!(
        "[server]\ncompile_cache = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"p\"\n\n[plugin.p]\ncomponent = \"{}\"\n",
        plugin.display()
    )).unwrap();
    let started = Instant::now();
    let out = run_wasmtp(&["--config", config.to_str().unwrap()], SLOW);
    let uncached = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let (_server, addr) = start_slow(&[
        "--hostname",
        HOSTNAME,
        "-c",
        plugin.to_str().unwrap(),
        "example.com",
    ]);
    let (mut first, mut later, mut data, mut noop) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SESSIONS {
        let mut c = Client::greeted(addr);
        c.expect("EHLO client.example", 250);
        for _ in 0..5 {
            let t = Instant::now();
            c.expect("NOOP", 250);
            noop.push(t.elapsed());
        }
        c.expect("MAIL FROM:<anne@example.net>", 250);
        let t = Instant::now();
        c.expect("RCPT TO:<bart@example.com>", 250);
        first.push(t.elapsed());
        for i in 0..MORE_RCPTS {
            let t = Instant::now();
            c.expect(&format!("RCPT TO:<user{i}@example.com>"), 250);
            later.push(t.elapsed());
        }
        c.expect("DATA", 354);
        let t = Instant::now();
        c.send_raw(b"Subject: measure\r\nFrom: anne@example.net\r\n\r\nhello\r\n.\r\n");
        c.expect_reply(250);
        data.push(t.elapsed());
        c.expect("QUIT", 221);
    }
    let (noop50, _) = percentiles(&mut noop);
    let (first50, first90) = percentiles(&mut first);
    let (later50, later90) = percentiles(&mut later);
    let (data50, data90) = percentiles(&mut data);
    println!(
        "| {language} | {:.2} MiB | {:.2} s | {noop50:.0} µs | {first50:.0} µs ({first90:.0}) | {later50:.0} µs ({later90:.0}) | {data50:.0} µs ({data90:.0}) | {:.0} µs | {:.0} µs |",
        size as f64 / (1 << 20) as f64,
        uncached.as_secs_f64(),
        first50 - later50,
        later50 - noop50,
    );
}

#[test]
#[ignore = "a measurement, not a check: run it with --ignored --nocapture"]
fn measure_languages() {
    let plugins = [
        ("rust", rust_plugin()),
        ("c", c_plugin()),
        ("javascript", javascript_plugin()),
        ("python", python_plugin()),
    ];
    // Compile and cache each one first.
    for (_, plugin) in &plugins {
        check_refuses_no_arguments(plugin);
    }
    println!(
        "| language | size | first load, uncached | NOOP (no plugin call) p50 | first RCPT p50 (p90) | later RCPT p50 (p90) | DATA p50 (p90) | instantiate + init ≈ | rcpt hook ≈ |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (language, plugin) in plugins {
        measure_one(language, plugin);
    }
}

// ---------------------------------------------------------------------------
// Long sessions

/// Messages sent on one connection through each example; an MTA with a
/// cached connection sends this many and more. `WASMTP_LONG_SESSION` sets
/// another count (the 100,000-message runs in docs/writing-plugins.md).
const LONG_SESSION: usize = 20_000;
/// After this many messages a plugin's memory has reached its working size.
const WARM: usize = 1_000;
/// How much the plugin's linear memory may still grow after [`WARM`].
const MAX_GROWTH: f64 = 1024.0 * 1024.0;

/// A server with metrics on, serving `plugin` as `policy` with the examples'
/// arguments and `extra` keys in its section: (the server, its SMTP
/// address, its metrics address).
fn start_with_metrics(plugin: &Path, extra: &str) -> (harness::Process, SocketAddr, SocketAddr) {
    start_configured(plugin, "", extra)
}

/// [`start_with_metrics`] with `server` keys in `[server]` too.
fn start_configured(
    plugin: &Path,
    server: &str,
    extra: &str,
) -> (harness::Process, SocketAddr, SocketAddr) {
    let dir = out_dir();
    // One file per server: tests run in parallel.
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let config = dir.join(format!(
        "{}.metrics-{}.toml",
        plugin.file_stem().unwrap().to_string_lossy(),
        SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"{HOSTNAME}\"\nmetrics = \"127.0.0.1:0\"\n{server}\n\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"policy\"\n\n\
             [plugin.policy]\ncomponent = {:?}\nargs = [\"example.com\", \"postmaster@example.org\"]\n{extra}\n",
            plugin.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(WASMTP);
    command
        .arg("--config")
        .arg(&config)
        // Not a line per transaction: only the startup lines waited for.
        .env("RUST_LOG", "warn,wasmtp::server=info")
        .env("NO_COLOR", "1");
    let mut process = harness::Process::spawn("wasmtp", command);
    process.wait_for_stderr("serving metrics at", SLOW);
    let log = process.wait_for_stderr("listening on", SLOW);
    let smtp = harness::listening_addrs(&log)[0];
    let metrics = harness::metrics_addr(&log).expect("the metrics address");
    (process, smtp, metrics)
}

/// One sample of a scrape, 0 when the series is absent.
fn sample(metrics: SocketAddr, series: &str) -> f64 {
    harness::scrape(metrics).get(series).copied().unwrap_or(0.0)
}

/// A plain SMTP client for many messages: pipelined commands, no
/// transcript kept beyond the message being checked.
struct Sender {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Sender {
    fn connect(addr: SocketAddr) -> Sender {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(harness::IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut sender = Sender {
            reader: BufReader::new(stream),
            writer,
        };
        sender.replies(1);
        sender.writer.write_all(b"EHLO client.example\r\n").unwrap();
        sender.replies(1);
        sender
    }

    /// Reads `n` replies: their last lines (`250 OK`, `550 5.1.1 ...`).
    fn replies(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                loop {
                    let mut line = String::new();
                    match self.reader.read_line(&mut line) {
                        Ok(0) => panic!("the server closed the connection"),
                        Ok(_) => {}
                        Err(e) => panic!("no reply: {e}"),
                    }
                    if line.as_bytes().get(3) != Some(&b'-') {
                        break line.trim_end().to_owned();
                    }
                }
            })
            .collect()
    }
}

/// `LONG_SESSION` messages on one connection through `plugin`: every reply
/// is the policy's, and the plugin's linear memory stops growing.
fn check_long_session(plugin: &Path, language: &str) {
    let messages = std::env::var("WASMTP_LONG_SESSION")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(LONG_SESSION);
    let (_server, smtp, metrics) = start_with_metrics(plugin, "");
    let memory = r#"wasmtp_plugin_memory_bytes{plugin="policy"}"#;
    let body = format!("{}\r\n", "x".repeat(70)).repeat(14);
    let accepted = format!("250 2.0.0 accepted by the {language} policy");
    let mut c = Sender::connect(smtp);
    let started = Instant::now();
    let mut warm = 0.0;
    for i in 1..=messages {
        // Every 10th message also names a recipient the policy refuses;
        // every 50th carries the spam flag.
        let refused = i % 10 == 0;
        let spam = i % 50 == 0;
        let mut commands =
            String::from("MAIL FROM:<anne@example.net>\r\nRCPT TO:<bart@example.com>\r\n");
        if refused {
            commands.push_str("RCPT TO:<eve@example.net>\r\n");
        }
        commands.push_str("DATA\r\n");
        c.writer.write_all(commands.as_bytes()).unwrap();
        let mut expected = vec!["250 OK".to_owned(), "250 OK".to_owned()];
        if refused {
            expected.push("550 5.1.1 <eve@example.net>: recipient not allowed".into());
        }
        expected.push("354 End data with <CR><LF>.<CR><LF>".into());
        assert_eq!(
            c.replies(expected.len()),
            expected,
            "{language}, message {i}"
        );
        let flag = if spam { "X-Spam-Flag: YES\r\n" } else { "" };
        let message = format!(
            "From: anne@example.net\r\nTo: bart@example.com\r\nSubject: message {i}\r\n{flag}\r\n{body}.\r\n"
        );
        c.writer.write_all(message.as_bytes()).unwrap();
        let expected = if spam {
            "550 5.7.1 message refused: X-Spam-Flag is YES"
        } else {
            &accepted
        };
        assert_eq!(c.replies(1), [expected], "{language}, message {i}");
        if i == WARM.min(messages) {
            warm = sample(metrics, memory);
            assert!(warm > 0.0, "{memory} is not reported");
        }
    }
    let took = started.elapsed();
    let last = sample(metrics, memory);
    let m = harness::scrape(metrics);
    eprintln!(
        "{language}: {messages} messages on one connection in {took:.1?} ({:.0}/s); \
         linear memory {:.2} MiB after {WARM}, {:.2} MiB after {messages}",
        messages as f64 / took.as_secs_f64(),
        warm / 1048576.0,
        last / 1048576.0,
    );
    assert!(
        last - warm < MAX_GROWTH,
        "{language}: the plugin's memory grew from {warm} to {last} bytes between message {WARM} and {messages}"
    );
    // One instance served the whole session: none failed and was replaced.
    let failures: Vec<_> = m
        .iter()
        .filter(|(series, value)| {
            series.starts_with("wasmtp_plugin_failures_total") && **value > 0.0
        })
        .collect();
    assert!(failures.is_empty(), "{language}: {failures:?}");
    assert_eq!(
        m.get(r#"wasmtp_plugin_instantiations_total{plugin="policy"}"#),
        Some(&1.0),
        "{language}: one instance for the session"
    );
    c.writer.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(c.replies(1), ["221 Bye"]);
}

#[test]
fn rust_template_long_session() {
    check_long_session(rust_plugin(), "rust");
}

#[test]
fn python_long_session() {
    check_long_session(python_plugin(), "python");
}

#[test]
fn javascript_long_session() {
    check_long_session(javascript_plugin(), "javascript");
}

#[test]
fn c_long_session() {
    check_long_session(c_plugin(), "c");
}
