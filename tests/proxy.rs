//! The PROXY protocol (v1 and v2 with TLVs) on listeners that expect it,
//! headers sent raw: the original client becomes `session.peer` (and the
//! Debugging plugin's X-Peer), the `proxy` hook decides, and an invalid,
//! refused or missing header closes the connection without a reply.

#[path = "harness/mod.rs"]
mod harness;
#[path = "protocol/mod.rs"]
mod protocol;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{Client, HOSTNAME, Server};
use protocol::{Certs, TlsClient, gatekeeper, toml_path};

fn proxied(plugin: &str, extra: &str) -> Server {
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        [[listener]]
        address = "127.0.0.1:0"
        proxy_protocol = true
        plugin = "p"
        {extra}
        [plugin.p]
        component = {plugin:?}
        "#
    ))
}

/// A v2 PROXY header for TCP over IPv4, with TLVs.
fn v2_header(
    command: u8,
    source: ([u8; 4], u16),
    destination: ([u8; 4], u16),
    tlvs: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&source.0);
    body.extend_from_slice(&destination.0);
    body.extend_from_slice(&source.1.to_be_bytes());
    body.extend_from_slice(&destination.1.to_be_bytes());
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x20 | command); // version 2, LOCAL (0) or PROXY (1)
    header.push(0x11); // AF_INET, STREAM
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

/// Sends `header` and returns the client, greeted.
fn connect_with(server: &Server, header: &[u8]) -> Client {
    let mut c = Client::connect(server.addr());
    c.send_raw(header);
    c.expect_reply(220);
    c
}

/// Sends `bytes` and asserts the server closes without a word.
fn expect_silent_close(server: &Server, bytes: &[u8]) {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.write_all(bytes).unwrap();
    let rest = protocol::read_all(&mut stream, Duration::from_secs(5));
    assert!(
        rest.is_empty(),
        "expected a silent close, got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn v1_the_original_client_becomes_the_peer() {
    let server = proxied(&gatekeeper(), "");
    let mut c = connect_with(&server, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n");
    let whoami = c.expect("NOOP whoami", 250).text();
    assert!(whoami.starts_with("peer=192.0.2.7:56324 "), "{whoami}");
    assert!(
        whoami.contains("proxy=v1:192.0.2.7:56324 tlvs=0"),
        "{whoami}"
    );
    // IPv6 too.
    let mut c = connect_with(&server, b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n");
    assert!(
        c.expect("NOOP whoami", 250)
            .text()
            .starts_with("peer=2001:db8::7:4000 ")
    );
}

#[test]
fn v2_with_tlvs() {
    let server = proxied(&gatekeeper(), "");
    let header = v2_header(
        1,
        ([192, 0, 2, 8], 40000),
        ([198, 51, 100, 1], 25),
        &[(0x02, b"mx.example"), (0x04, b"")],
    );
    let mut c = connect_with(&server, &header);
    let whoami = c.expect("NOOP whoami", 250).text();
    assert!(whoami.starts_with("peer=192.0.2.8:40000 "), "{whoami}");
    assert!(
        whoami.contains("proxy=v2:192.0.2.8:40000 tlvs=2"),
        "{whoami}"
    );
    // LOCAL: the proxy's own connection; the socket's peer stays.
    let local = v2_header(0, ([0, 0, 0, 0], 0), ([0, 0, 0, 0], 0), &[]);
    let mut c = connect_with(&server, &local);
    let whoami = c.expect("NOOP whoami", 250).text();
    assert!(whoami.starts_with("peer=127.0.0.1:"), "{whoami}");
    assert!(whoami.contains("proxy=v2:- "), "{whoami}");
}

#[test]
fn x_peer_is_the_original_client() {
    let mut server = proxied("debugging", "");
    let mut c = connect_with(&server, b"PROXY TCP4 192.0.2.9 198.51.100.1 1234 25\r\n");
    c.expect("HELO client.example", 250);
    assert_eq!(
        c.send_message(
            "anne@example.com",
            &["bart@example.com"],
            "Subject: proxied\n\nhi\n"
        )
        .code,
        250
    );
    let out = server.wait_for_stdout("END MESSAGE");
    assert!(out.contains("X-Peer: ('192.0.2.9', 1234)"), "{out}");
}

#[test]
fn the_proxy_hook_can_close_the_connection() {
    let server = proxied(&gatekeeper(), "");
    expect_silent_close(&server, b"PROXY TCP4 192.0.2.66 198.51.100.1 1 25\r\n");
    // Others pass.
    connect_with(&server, b"PROXY TCP4 192.0.2.67 198.51.100.1 1 25\r\n");
}

#[test]
fn an_invalid_header_closes_without_a_reply() {
    let server = proxied("sink", "");
    for bad in [
        &b"EHLO client.example\r\n"[..],
        b"PROXY TCP4 not-an-address 198.51.100.1 1 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 1\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 99999 25\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
        &[b'P'; 200][..],
    ] {
        expect_silent_close(&server, bad);
    }
}

#[test]
fn a_missing_header_times_out_silently() {
    let server = proxied("sink", "proxy_protocol_timeout = 0.5");
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let started = Instant::now();
    let rest = protocol::read_all(&mut stream, Duration::from_secs(10));
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_header_then_implicit_tls() {
    let certs = Certs::new();
    let server = proxied(
        &gatekeeper(),
        &format!(
            "tls = {{ cert = {}, key = {} }}\nimplicit_tls = true",
            toml_path(&certs.cert),
            toml_path(&certs.key)
        ),
    );
    let mut c = TlsClient::connect(server.addr());
    c.send_raw(b"PROXY TCP4 192.0.2.10 198.51.100.1 5555 465\r\n");
    c.handshake(&certs, "localhost").unwrap();
    c.expect_reply(220);
    let whoami = c.expect("NOOP whoami", 250).text();
    assert!(
        whoami.starts_with("peer=192.0.2.10:5555 tls=TLSv1.3"),
        "{whoami}"
    );
}
