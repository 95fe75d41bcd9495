//! A real HTTP(S) server for tests: `tests/clients/webhook_server.py`
//! (Python's `http.server`) on a free loopback port, plain or with TLS
//! under a test CA made at test time with `openssl`. It records every
//! request it gets — method, path, headers, body, and whether the webhook
//! signature verifies (with the example receiver's own `verify`) — and
//! answers by path (see the script).
//!
//! Include it with `#[path = "harness/web.rs"] mod web;` next to
//! `harness`.

// Each test file uses its own part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::{self, Process};

/// The secret tests sign webhooks with.
pub const SECRET: &str = "s3cret-for-tests";

/// One request the server recorded.
#[derive(Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Vec<u8>,
    pub signature_ok: bool,
    /// What docs/webhook.schema.json finds wrong with a POSTed JSON body.
    pub schema_errors: Vec<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.as_str())
    }

    /// The body as JSON, checked against docs/webhook.schema.json.
    pub fn json(&self) -> serde_json::Value {
        assert!(
            self.schema_errors.is_empty(),
            "the body does not match docs/webhook.schema.json: {:?}",
            self.schema_errors
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }
}

/// A test CA and a server certificate it signed for `localhost` and
/// `127.0.0.1`, made with `openssl`.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl is not installed (.ci/run installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wasmtp test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// The recording server.
pub struct WebServer {
    process: Process,
    pub port: u16,
    pub tls: bool,
    record: tempfile::TempDir,
    seen: usize,
}

impl WebServer {
    /// Plain HTTP.
    pub fn start() -> WebServer {
        WebServer::spawn(None)
    }

    /// HTTPS with `ca`'s server certificate.
    pub fn start_tls(ca: &TestCa) -> WebServer {
        WebServer::spawn(Some(ca.dir.path()))
    }

    fn spawn(tls: Option<&Path>) -> WebServer {
        let record = tempfile::tempdir().unwrap();
        let mut command = Command::new(harness::python());
        command
            .arg(harness::client_script("webhook_server.py"))
            .arg(record.path())
            .arg(SECRET);
        if let Some(dir) = tls {
            command
                .arg(dir.join("server.pem"))
                .arg(dir.join("server.key"));
        }
        let mut process = Process::spawn("webhook_server.py", command);
        let out = process.wait_for_stdout("listening on", Duration::from_secs(10));
        let port = out
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
            .and_then(|p| p.trim().parse().ok())
            .expect("a port");
        WebServer {
            process,
            port,
            tls: tls.is_some(),
            record,
            seen: 0,
        }
    }

    /// `http://localhost:PORT/PATH` (or https).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!(
            "{scheme}://localhost:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The same, by the loopback IP literal.
    pub fn ip_url(&self, path: &str) -> String {
        self.url(path).replace("localhost", "127.0.0.1")
    }

    /// The requests recorded since the last call.
    pub fn take(&mut self) -> Vec<Recorded> {
        let mut out = Vec::new();
        loop {
            let n = self.seen + 1;
            let meta = self.record.path().join(format!("{n}.json"));
            let Ok(text) = std::fs::read_to_string(&meta) else {
                return out;
            };
            let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
            let body = std::fs::read(self.record.path().join(format!("{n}.body"))).unwrap();
            out.push(Recorded {
                method: meta["method"].as_str().unwrap().to_owned(),
                path: meta["path"].as_str().unwrap().to_owned(),
                headers: meta["headers"].as_object().unwrap().clone(),
                body,
                signature_ok: meta["signature_ok"].as_bool().unwrap(),
                schema_errors: meta["schema_errors"]
                    .as_array()
                    .map(|a| a.iter().map(|e| e.to_string()).collect())
                    .unwrap_or_default(),
            });
            self.seen = n;
        }
    }

    /// Waits (5 s at most) for exactly one new request.
    pub fn one(&mut self) -> Recorded {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut got = self.take();
            if got.len() > 1 {
                panic!("{} requests where one was expected: {got:?}", got.len());
            }
            if let Some(r) = got.pop() {
                return r;
            }
            if Instant::now() > deadline {
                self.process.fail("no request was recorded");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
