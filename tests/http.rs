//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`, `grants.http`)
//! and the parsed-message import (`wasmtp:smtp/message`), through the real
//! server, against a real HTTP(S) server on loopback
//! (tests/clients/webhook_server.py):
//!
//! - the sandbox: a request outside the grant — another host, another path,
//!   a dot segment, the server's IP literal, a redirect out of the grant —
//!   is refused before a packet leaves; a response over the bound is cut
//!   with an error value, and the server goes on;
//! - TLS with a test CA made by the test (`[http] ca_file`), and refused
//!   without it;
//! - a Python plugin (componentize-py) with its own HTTP client, and a
//!   JavaScript one (ComponentizeJS) with `fetch`; what the example's
//!   JavaScript toolchain (componentize-qjs) does not offer;
//! - malformed MIME parses without a trap and without unbounded memory.

#[path = "harness/mod.rs"]
mod harness;
#[path = "harness/web.rs"]
mod web;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::{Client, HOSTNAME, Server};
use web::{TestCa, WebServer};

/// A server with `component` as its only plugin, granted `grants`, given
/// the time an 18 MB Python component takes to compile on a busy machine.
fn slow_server(
    component: &Path,
    grants: &str,
) -> (
    harness::Process,
    std::net::SocketAddr,
    tempfile::NamedTempFile,
) {
    slow_server_config(&config_with(component, grants, ""))
}

/// A server started with `config`, given the time a large component takes
/// to compile.
fn slow_server_config(
    config: &str,
) -> (
    harness::Process,
    std::net::SocketAddr,
    tempfile::NamedTempFile,
) {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), config).unwrap();
    let mut command = Command::new(harness::WASMTP);
    command
        .arg("--config")
        .arg(file.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let mut process = harness::Process::spawn("wasmtp", command);
    let log = process.wait_for_stderr("listening on", Duration::from_secs(180));
    let addr = harness::listening_addrs(&log)[0];
    (process, addr, file)
}

fn config_with(component: &Path, grants: &str, extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nhostname = \"{HOSTNAME}\"\nplugins = [\"p\"]\n\
         {extra}\n[plugin.p]\ncomponent = {:?}\nhook_timeout = 5\n[plugin.p.grants]\n{grants}\n",
        component.display().to_string()
    )
}

fn noop(c: &mut Client, arg: &str) -> String {
    let reply = c.cmd(&format!("NOOP {arg}"));
    assert_eq!(reply.code, 250, "{}", c.transcript());
    reply.text()
}

#[test]
fn requests_outside_the_grant_are_refused_before_a_packet_leaves() {
    let mut web = WebServer::start();
    let probe = harness::plugin_path("http_probe.wasm");
    let server = Server::start_config(&format!(
        "[server]\nmetrics = \"127.0.0.1:0\"\n{}",
        config_with(
            &probe,
            &format!("http = [{:?}]", web.url("inbound/")),
            "[http]\nmax_response_bytes = 1048576",
        )
    ));
    let mut c = Client::after_ehlo(server.addr());

    assert_eq!(
        noop(&mut c, &web.url("inbound/hello")),
        "status=200 bytes=5"
    );
    let port = web.port;
    for refused in [
        // Another host (no name lookup is made for it either).
        format!("http://elsewhere.invalid:{port}/inbound/hello"),
        // Another path prefix, and ways around one.
        web.url("admin/hello"),
        web.url("inbound/../admin/hello"),
        web.url("inbound/%2e%2e/admin/hello"),
        // The same server by its IP literal: not what was granted.
        web.ip_url("inbound/hello"),
        // Another scheme or port.
        web.url("inbound/hello").replace("http://", "https://"),
        format!("http://localhost:{}/inbound/hello", harness::free_port()),
    ] {
        assert_eq!(
            noop(&mut c, &refused),
            "error=HttpRequestDenied",
            "{refused}"
        );
    }
    // A redirect out of the grant: the client follows it, the host refuses it.
    assert_eq!(
        noop(
            &mut c,
            &format!("follow {}", web.url("inbound/redirect-out"))
        ),
        "status=302 bytes=0\nerror=HttpRequestDenied"
    );
    // Within the grant it is followed.
    assert_eq!(
        noop(
            &mut c,
            &format!("follow {}", web.url("inbound/redirect-in"))
        ),
        "status=307 bytes=0\nstatus=200 bytes=2"
    );
    // A body over the bound (2 MiB > 1 MiB) ends in an error value.
    let big = noop(&mut c, &web.url("inbound/big"));
    assert!(big.starts_with("status=200 bytes="), "{big}");
    // (wasmtime-wasi-http 48 hands a body's error over as text: its
    // `http-error-code` knows only the errors of the response head.)
    assert!(
        big.ends_with("body-error=HTTP response body size exceeds limit: 1048576 bytes"),
        "{big}"
    );
    let read: u64 = big["status=200 bytes=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(read <= 1 << 20, "{read} bytes were handed over");
    // The server and the session go on.
    assert_eq!(
        noop(&mut c, &web.url("inbound/hello")),
        "status=200 bytes=5"
    );
    // At most 8 requests of one instance are open at once.
    assert_eq!(
        noop(&mut c, &format!("parallel 9 {}", web.url("inbound/ok"))),
        "ok=8 ConnectionLimitReached=1"
    );
    assert_eq!(
        noop(&mut c, &format!("parallel 8 {}", web.url("inbound/ok"))),
        "ok=8"
    );

    // Each request is counted by its outcome.
    let metrics = harness::scrape(harness::metrics_addr(&server.stderr()).unwrap());
    let count = |outcome: &str| {
        metrics
            .get(&format!(
                "wasmtp_plugin_http_requests_total{{plugin=\"p\",outcome=\"{outcome}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(
        (
            count("2xx"),
            count("3xx"),
            count("denied"),
            count("limited")
        ),
        (20.0, 2.0, 8.0, 1.0),
        "{metrics:#?}"
    );

    // Only the granted requests reached the server.
    let paths: Vec<String> = web.take().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/inbound/hello",
            "/inbound/redirect-out",
            "/inbound/redirect-in",
            "/inbound/ok",
            "/inbound/big",
            "/inbound/hello"
        ]
        .into_iter()
        .chain(["/inbound/ok"; 16])
        .collect::<Vec<_>>()
    );
}

#[test]
fn a_plugin_importing_the_handler_needs_the_grant() {
    let probe = harness::plugin_path("http_probe.wasm");
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), config_with(&probe, "", "")).unwrap();
    let out = harness::run_wasmtp(
        &["check", "--config", file.path().to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("imports wasi:http/outgoing-handler@0.2.")
            && stderr.contains("needs `grants.http` in [plugin.p.grants]"),
        "{stderr}"
    );
    // A grant that is not a URL prefix is refused with its key.
    std::fs::write(
        file.path(),
        config_with(&probe, "http = [\"ftp://x/\"]", ""),
    )
    .unwrap();
    let out = harness::run_wasmtp(
        &["check", "--config", file.path().to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin.p.grants.http[0]: `ftp://x/` is not an https:// or http:// URL"),
        "{stderr}"
    );
}

#[test]
fn https_is_checked_against_the_system_roots_and_the_ca_file() {
    let ca = TestCa::new();
    let mut web = WebServer::start_tls(&ca);
    let probe = harness::plugin_path("http_probe.wasm");
    let grant = format!("http = [{:?}]", web.url("inbound/"));
    let trusted = Server::start_config(&config_with(
        &probe,
        &grant,
        &format!("[http]\nca_file = {:?}", ca.ca().display().to_string()),
    ));
    let mut c = Client::after_ehlo(trusted.addr());
    assert_eq!(
        noop(&mut c, &web.url("inbound/hello")),
        "status=200 bytes=5"
    );
    assert_eq!(web.take().len(), 1);

    // Without the test CA the certificate is not trusted.
    let untrusted = Server::start_config(&config_with(&probe, &grant, ""));
    let mut c = Client::after_ehlo(untrusted.addr());
    assert_eq!(
        noop(&mut c, &web.url("inbound/hello")),
        "error=TlsCertificateError"
    );
    assert!(web.take().is_empty());
}

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmtp-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_python_plugin_uses_its_own_http_client() {
    let out = out_dir().join("http_fetch.wasm");
    let built = Command::new("componentize-py")
        .current_dir(harness::repo_root().join("tests/python/http_fetch"))
        .args(["--quiet", "-d", "wit", "-w", "test:http-fetch/fetch", "componentize", "app", "-o"])
        .arg(&out)
        .output()
        .expect("componentize-py is not installed: pip install -r examples/python/requirements.txt (.ci/run does)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut web = WebServer::start();
    let (_server, addr, _config) =
        slow_server(&out, &format!("http = [{:?}]", web.url("inbound/")));
    let mut c = Client::after_ehlo(addr);
    assert_eq!(
        noop(&mut c, &web.url("inbound/hello")),
        "status=200 bytes=5"
    );
    assert_eq!(
        noop(&mut c, &web.url("admin/hello")),
        "error=ErrorCode_HttpRequestDenied"
    );
    let paths: Vec<String> = web.take().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/inbound/hello"]);
}

/// tests/javascript/http_fetch, built with ComponentizeJS, posting to `url`
/// with `grants.http` = `grant`.
fn fetch_plugin_server(
    url: &str,
    grant: &str,
) -> (
    harness::Process,
    std::net::SocketAddr,
    tempfile::NamedTempFile,
) {
    let component = harness::componentize_js_component("http_fetch", "fetch");
    slow_server_config(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nhostname = \"{HOSTNAME}\"\nplugins = [\"p\"]\n\
         [plugin.p]\ncomponent = {:?}\nargs = [{url:?}]\nhook_timeout = 5\n\
         [plugin.p.grants]\nhttp = [{grant:?}]\n",
        component.display().to_string()
    ))
}

/// A JavaScript plugin calls an app with the language's own HTTP client:
/// ComponentizeJS's `fetch` (StarlingMonkey's, made over
/// wasi:http/outgoing-handler) posts the envelope as JSON in `data`, and the
/// app's answer becomes the SMTP reply.
#[test]
fn a_javascript_plugin_calls_an_app_with_fetch() {
    let mut web = WebServer::start();
    let (_server, addr, _config) =
        fetch_plugin_server(&web.url("inbound/hello"), &web.url("inbound/"));
    let mut c = Client::after_ehlo(addr);
    for to in ["b@example.com", "c@example.com"] {
        let reply = c.send_message("a@example.com", &[to], "Subject: hi\r\n\r\nhello\r\n");
        assert_eq!(
            (reply.code, reply.text()),
            (250, "2.0.0 app said: 200 hello".to_owned()),
            "{}",
            c.transcript()
        );
    }
    let requests = web.take();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (request, to) in requests.iter().zip(["b@example.com", "c@example.com"]) {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/inbound/hello")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "from": "a@example.com", "to": [to] })
        );
    }
}

/// A URL outside the grant: the host refuses the request before a packet
/// leaves, `fetch` rejects (it does not trap, though the runtime writes the
/// POST's body after sending the request: the host reads the body of a
/// refused request before answering), and the plugin answers with the
/// error's text.
#[test]
fn a_javascript_fetch_outside_the_grant_is_refused() {
    let mut web = WebServer::start();
    let (server, addr, _config) =
        fetch_plugin_server(&web.url("admin/hello"), &web.url("inbound/"));
    let mut c = Client::after_ehlo(addr);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: hi\r\n\r\nhello\r\n",
    );
    // StarlingMonkey's `fetch` rejects every failure with the same
    // TypeError; the host's log says which.
    assert_eq!(
        (reply.code, reply.text()),
        (
            451,
            "4.3.0 fetch failed: TypeError: NetworkError when attempting to fetch resource"
                .to_owned()
        ),
        "{}",
        c.transcript()
    );
    assert!(
        server.stderr().contains("HTTP request refused: POST"),
        "{}",
        server.stderr()
    );
    assert!(web.take().is_empty());
}

/// componentize-qjs 0.4.5, the JavaScript toolchain of examples/javascript:
/// its QuickJS runtime has no `fetch`, and a world importing the wasi:http
/// interfaces does not build (tests/javascript/qjs_http): its Wizer step
/// defines the component's unknown imports as traps before it adds WASI, so
/// the stub of `wasi:http/types` carries an `input-stream` resource of its
/// own ("mismatched resource types"). A JavaScript plugin that makes HTTP
/// requests is built with ComponentizeJS instead (above). This test says
/// so, and starts failing — as a reminder — when a release changes either.
#[test]
fn componentize_qjs_has_no_fetch_nor_builds_wasi_http() {
    let tool = harness::repo_root().join("examples/javascript/node_modules/.bin/componentize-qjs");
    assert!(
        tool.exists(),
        "componentize-qjs is not installed: npm ci --prefix examples/javascript (.ci/run does)"
    );
    let dir = harness::repo_root().join("tests/javascript");
    let probe = out_dir().join("fetch_probe.wasm");
    let built = Command::new(&tool)
        .current_dir(dir.join("fetch_probe"))
        .args([
            "--wit", "wit", "--world", "probe", "--js", "app.js", "--sync", "-o",
        ])
        .arg(&probe)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let server = Server::start_config(&config_with(&probe, "", ""));
    let mut c = Client::after_ehlo(server.addr());
    assert_eq!(noop(&mut c, ""), "fetch=undefined");

    let fetch = out_dir().join("qjs_http.wasm");
    let built = Command::new(&tool)
        .current_dir(dir.join("qjs_http"))
        .args([
            "--wit", "wit", "--world", "fetch", "--js", "app.js", "--sync", "-o",
        ])
        .arg(&fetch)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stderr).into_owned()
        + &String::from_utf8_lossy(&built.stdout);
    assert!(
        !built.status.success()
            && said.contains("wasi:http/types")
            && said.contains("mismatched resource types"),
        "componentize-qjs now builds a component importing wasi:http: test it through the server\n{said}"
    );
}

// ---------------------------------------------------------------------------
// wasmtp:smtp/message on malformed mail

fn multipart(boundary: &str, parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(&format!("--{boundary}\r\n{p}\r\n"));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// Messages that break MIME in the ways mail in the wild does.
fn corpus() -> Vec<(&'static str, String)> {
    let head = "From: a@example.com\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n";
    let attachment = |body: &str| {
        format!(
            "Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}"
        )
    };
    let mut nested = String::new();
    for i in 0..1000 {
        nested.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n"
        ));
    }
    nested.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
    for i in (0..1000).rev() {
        nested.push_str(&format!("--n{i}--\r\n"));
    }
    let mut many = String::new();
    for i in 0..3000 {
        many.push_str(&format!(
            "--m\r\nContent-Type: application/octet-stream; name=\"f{i}\"\r\n\r\nx\r\n"
        ));
    }
    many.push_str("--m--\r\n");
    vec![
        (
            "truncated multipart",
            format!(
                "{head}Subject: truncated\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n{}",
                attachment("JVBERi0xLjQKJ")
            ),
        ),
        (
            "bad base64",
            format!(
                "{head}Subject: bad base64\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{}",
                multipart(
                    "b",
                    &[attachment("@@@@ not base64 !!!\r\n====\r\nQUJD*&^%")]
                )
            ),
        ),
        (
            "missing boundary parameter",
            format!(
                "{head}Subject: no boundary\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n"
            ),
        ),
        (
            "boundary never used",
            format!(
                "{head}Subject: unused\r\nContent-Type: multipart/mixed; boundary=\"zzz\"\r\n\r\njust text, no parts\r\n"
            ),
        ),
        (
            "unknown charset and bad quoted-printable",
            format!(
                "{head}Subject: =?x-unknown?Q?=FF=FE?=\r\nContent-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=4\r\n"
            ),
        ),
        (
            "1000 nested multiparts",
            format!("{head}Subject: nested\r\n{nested}"),
        ),
        (
            "3000 parts",
            format!(
                "{head}Subject: many\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n{many}"
            ),
        ),
        ("no header at all", "\r\n\r\n".to_owned()),
        (
            "binary noise",
            String::from_utf8_lossy(
                &(0..4096u32)
                    .map(|i| (i * 7919 % 251) as u8)
                    .collect::<Vec<_>>(),
            )
            .replace(['\r', '\n'], " ")
            .chars()
            .collect::<Vec<_>>()
            .chunks(60)
            .map(|l| l.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("\r\n"),
        ),
    ]
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn malformed_mime_parses_without_a_trap_or_unbounded_memory() {
    let probe = harness::plugin_path("message_probe.wasm");
    let mut server = Server::start_config(&config_with(&probe, "", ""));
    let before = peak_rss_kib(server.pid());
    let mut c = Client::after_ehlo(server.addr());
    for (name, message) in corpus() {
        let reply = c.send_message("a@example.com", &["b@example.com"], &message);
        assert_eq!(reply.code, 250, "{name}: {}", c.transcript());
        let text = reply.text();
        eprintln!("{name}: {}", text.replace('\n', " | "));
        assert!(
            text.starts_with("parts=")
                || text == "error=Malformed(\"no header fields and no body could be read\")",
            "{name}: {text}"
        );
        match name {
            "bad base64" => assert!(text.contains("could not be decoded"), "{name}: {text}"),
            "1000 nested multiparts" => assert!(text.starts_with("parts="), "{name}: {text}"),
            "3000 parts" => {
                assert!(text.starts_with("parts=1000 "), "{name}: {text}");
                assert!(
                    text.contains("3000 attachments; only the first 1000 are listed"),
                    "{name}: {text}"
                );
            }
            _ => {}
        }
    }
    // The session and the server are still there.
    c.expect("NOOP", 250);
    assert!(
        !server.stderr().contains("plugin failed"),
        "{}",
        server.stderr()
    );
    let grown = peak_rss_kib(server.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {grown} KiB over the corpus");
    assert!(
        grown < 200 << 10,
        "the server's peak memory grew by {grown} KiB"
    );
    let _ = server.wait_for_stderr("listening on");
}

/// Two plugins of a chain read the same message: it is parsed once.
#[test]
fn the_message_is_parsed_once_for_the_chain() {
    let probe = harness::plugin_path("message_probe.wasm");
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugins = [\"first\", \"second\"]\n\
             [plugin.first]\ncomponent = {p:?}\nargs = [\"pass\"]\n[plugin.second]\ncomponent = {p:?}\n",
            p = probe.display().to_string()
        ),
    )
    .unwrap();
    let mut command = Command::new(harness::WASMTP);
    command
        .arg("--config")
        .arg(file.path())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,wasmtp::capability::message=debug");
    let mut process = harness::Process::spawn("wasmtp", command);
    let log = process.wait_for_stderr("listening on", Duration::from_secs(60));
    let mut c = Client::after_ehlo(harness::listening_addrs(&log)[0]);
    for subject in ["one", "two"] {
        let message = format!("Subject: {subject}\r\nContent-Type: text/plain\r\n\r\nhello\r\n");
        let reply = c.send_message("a@example.com", &["b@example.com"], &message);
        assert!(
            reply.text().starts_with("parts=0 bytes=0 text=7"),
            "{}",
            c.transcript()
        );
    }
    c.expect("QUIT", 221);
    // The line of each parse is written before the reply that follows it.
    std::thread::sleep(Duration::from_millis(300));
    let log = process.stderr();
    assert_eq!(
        log.matches("message parsed in").count(),
        2,
        "one parse per message: {log}"
    );
}
