//! Helpers for the protocol tests (tls, auth, lmtp, proxy, limits): test
//! certificates made at test time, and an SMTP client that can switch to TLS
//! in the middle of a dialog (STARTTLS) or start with it (SMTPS), so a test
//! reads like its transcript.
//!
//! Include it next to the harness:
//! `#[path = "protocol/mod.rs"] mod protocol;`

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::harness::{self, Reply};

/// A self-signed certificate for `localhost`, `mx.wasmtp.test` and
/// `refuse.example`, written as PEM files into a temporary directory.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    pub fn new() -> Certs {
        let names = vec![
            "localhost".to_string(),
            harness::HOSTNAME.to_string(),
            "refuse.example".to_string(),
        ];
        let certified =
            rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        Certs {
            der: certified.cert.der().clone(),
            dir,
            cert,
            key,
        }
    }

    pub fn cert_path(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    pub fn key_path(&self) -> &str {
        self.key.to_str().unwrap()
    }

    /// A rustls client config trusting only this certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Either side of a STARTTLS.
enum Wire {
    Plain(BufReader<TcpStream>),
    Tls(BufReader<StreamOwned<ClientConnection, TcpStream>>),
    /// Between the two, or after a failed handshake.
    None,
}

/// An SMTP client over TCP that can turn to TLS, keeping a transcript.
pub struct TlsClient {
    wire: Wire,
    pub transcript: Vec<String>,
}

impl TlsClient {
    /// Connects in plain text; reads nothing.
    pub fn connect(addr: SocketAddr) -> TlsClient {
        let stream = TcpStream::connect_timeout(&addr, harness::IO_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(harness::IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        TlsClient {
            wire: Wire::Plain(BufReader::new(stream)),
            transcript: Vec::new(),
        }
    }

    /// Connects and starts TLS at once (SMTPS); reads nothing.
    pub fn connect_tls(addr: SocketAddr, certs: &Certs, sni: &str) -> TlsClient {
        let mut client = TlsClient::connect(addr);
        client
            .handshake(certs, sni)
            .unwrap_or_else(|e| client.fail(&format!("TLS handshake failed: {e}")));
        client
    }

    /// Runs the client side of a TLS handshake on the connection.
    pub fn handshake(&mut self, certs: &Certs, sni: &str) -> io::Result<()> {
        let Wire::Plain(reader) = std::mem::replace(&mut self.wire, Wire::None) else {
            panic!("handshake on a connection that is not plain");
        };
        assert!(
            reader.buffer().is_empty(),
            "the server sent bytes after its 220: {:?}",
            reader.buffer()
        );
        let tcp = reader.into_inner();
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let conn = ClientConnection::new(certs.client_config(), name).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.transcript
            .push(format!("-- TLS {:?}", tls.conn.protocol_version()));
        self.wire = Wire::Tls(BufReader::new(tls));
        Ok(())
    }

    /// `STARTTLS` → 220, then the handshake.
    pub fn starttls(&mut self, certs: &Certs, sni: &str) {
        self.expect("STARTTLS", 220);
        self.handshake(certs, sni)
            .unwrap_or_else(|e| self.fail(&format!("TLS handshake failed: {e}")));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            self.transcript.push(format!("C: {}", harness::show(line)));
        }
        let result = match &mut self.wire {
            Wire::Plain(r) => r.get_mut().write_all(bytes),
            Wire::Tls(r) => r
                .get_mut()
                .write_all(bytes)
                .and_then(|_| r.get_mut().flush()),
            Wire::None => panic!("no connection"),
        };
        if let Err(e) = result {
            self.fail(&format!("cannot send: {e}"));
        }
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        match &mut self.wire {
            Wire::Plain(r) => r.read_until(b'\n', &mut raw)?,
            Wire::Tls(r) => r.read_until(b'\n', &mut raw)?,
            Wire::None => return Err(io::Error::other("no connection")),
        };
        Ok(raw)
    }

    /// One reply, or `None` when the server closed the connection.
    pub fn try_read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let raw = match self.read_line() {
                Ok(raw) if raw.is_empty() => return None,
                Ok(raw) => raw,
                // A TLS peer that closes without close_notify, or a reset.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return None;
                }
                Err(e) => self.fail(&format!("cannot read a reply: {e}")),
            };
            self.transcript.push(format!("S: {}", harness::show(&raw)));
            let line = String::from_utf8_lossy(
                raw.strip_suffix(b"\r\n")
                    .unwrap_or_else(|| self.fail("a reply line without CRLF")),
            );
            let (code, last, text) = harness::parse_reply_line(&line)
                .unwrap_or_else(|| self.fail("a malformed reply line"));
            lines.push(text.to_string());
            if last {
                return Some(Reply { code, lines });
            }
        }
    }

    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|| self.fail("the server closed the connection"))
    }

    pub fn expect_reply(&mut self, code: u16) -> Reply {
        let reply = self.read_reply();
        if reply.code != code {
            self.fail(&format!("expected {code}, got {reply}"));
        }
        reply
    }

    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        self.send(line);
        self.expect_reply(code)
    }

    /// Asserts that the server closes the connection without another reply.
    pub fn expect_closed(&mut self) {
        if let Some(reply) = self.try_read_reply() {
            self.fail(&format!("expected the connection to close, got {reply}"));
        }
    }

    /// Sets the read timeout of the underlying socket.
    pub fn set_timeout(&mut self, timeout: Duration) {
        match &mut self.wire {
            Wire::Plain(r) => r.get_mut().set_read_timeout(Some(timeout)).unwrap(),
            Wire::Tls(r) => r.get_mut().sock.set_read_timeout(Some(timeout)).unwrap(),
            Wire::None => {}
        }
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n--- transcript\n{}", self.transcript.join("\n"));
    }
}

/// Reads whatever arrives until the peer closes or `timeout` passes; for
/// tests that expect silence.
pub fn read_all(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The `gatekeeper` test plugin's path.
pub fn gatekeeper() -> String {
    harness::plugin_path("gatekeeper.wasm")
        .to_str()
        .unwrap()
        .to_string()
}

/// A TOML string (quoted, escaped) for a path.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.to_str().unwrap())
}

/// Runs swaks with `args` (a server, port and options), returning its
/// output and whether it exited 0.
pub fn swaks(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("swaks")
        .args(args)
        .args(["--timeout", "10"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run swaks (apt-get install swaks): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
