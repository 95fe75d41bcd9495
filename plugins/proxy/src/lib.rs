//! Proxy: relays every message to another SMTP server, as aiosmtpd's
//! `Proxy` handler does, but passes the relay's refusals back to the client
//! (aiosmtpd's answers `250 OK` whatever the relay said).
//!
//! Arguments (`setup`): the relay's address and port: `192.0.2.25 25`. The
//! plugin needs an outbound TCP grant for exactly that address
//! (`[plugin.NAME.grants] network = ["192.0.2.25:25"]`). The sandbox allows
//! no name lookups, so the address is an IP address; `localhost` is taken as
//! `127.0.0.1`.
//!
//! The relay sees the client's transaction as it happens, so each refusal
//! reaches the client at the command it belongs to:
//! - `MAIL`: connects (once per session), greets with `EHLO`, and forwards
//!   `MAIL FROM`; the relay's refusal, or `451 4.4.1` when it can't be
//!   reached, is the client's reply;
//! - `RCPT`: forwarded; a refused recipient is refused to the client, with
//!   the relay's reply;
//! - `DATA`: the message is streamed to the relay with an `X-Peer` header
//!   added as aiosmtpd's `Proxy` adds it (the client's IP address, before
//!   the first blank line), line endings made CRLF and dot-stuffed as
//!   smtplib does; the relay's refusal is the client's reply;
//! - `RSET` and `QUIT` are forwarded.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use wasip2::io::streams::{InputStream, OutputStream};
use wasip2::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, Network,
};
use wasip2::sockets::tcp::TcpSocket;

use wasmtp_plugin::{Args, Content, Envelope, Plugin, Reply, Session};

/// The header block is held back (to add `X-Peer` before its end) up to this
/// size; a longer one gets `X-Peer` at that point.
const HEADER_LIMIT: usize = 1024 * 1024;

/// The longest reply line sent on to the client (the host refuses > 510).
const MAX_TEXT: usize = 480;

#[derive(Default)]
struct Proxy {
    relay: Option<SocketAddr>,
    /// The connection to the relay, once a transaction started.
    conn: Option<Relay>,
}

#[wasmtp_plugin::plugin]
impl Plugin for Proxy {
    fn init(&mut self, mut args: Args) -> Result<(), String> {
        let host = args.required("the relay's IP address")?;
        let port: u16 = args.parse("the relay's port")?;
        args.finish()?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
                format!("the relay `{host}` is not an IP address (the sandbox allows no name lookups)")
            })?
        };
        self.relay = Some(SocketAddr::new(ip, port));
        Ok(())
    }

    fn mail(
        &mut self,
        session: &Session,
        _envelope: &Envelope,
        address: &str,
        options: &[String],
    ) -> Option<Reply> {
        let relay = self.relay?;
        if self.conn.is_none() {
            match Relay::connect(relay, &session.server_hostname) {
                Ok(conn) => self.conn = Some(conn),
                Err(error) => {
                    wasmtp_plugin::warn!("cannot reach the relay {relay}: {error}");
                    return Some(Reply::new(
                        451,
                        "4.4.1",
                        format!("relay {relay} unreachable"),
                    ));
                }
            }
        }
        let conn = self.conn.as_mut()?;
        // Only the parameters the relay announced.
        let options: Vec<&str> = options
            .iter()
            .map(String::as_str)
            .filter(|o| conn.supports(o))
            .collect();
        let mut command = format!("MAIL FROM:<{address}>");
        for option in options {
            command.push(' ');
            command.push_str(option);
        }
        self.command(&command)
    }

    fn rcpt(
        &mut self,
        _session: &Session,
        _envelope: &Envelope,
        address: &str,
        options: &[String],
    ) -> Option<Reply> {
        let conn = self.conn.as_ref()?;
        let mut command = format!("RCPT TO:<{address}>");
        for option in options.iter().filter(|o| conn.supports(o)) {
            command.push(' ');
            command.push_str(option);
        }
        self.command(&command)
    }

    fn data(&mut self, session: &Session, _envelope: &Envelope, content: Content) -> Option<Reply> {
        let conn = self.conn.as_mut()?;
        let reply = conn.command("DATA").and_then(|reply| {
            if reply.code != 354 {
                return Ok(reply);
            }
            conn.send_message(content, &session.peer.address)?;
            conn.read_reply()
        });
        self.answer(reply)
    }

    fn rset(&mut self, _session: &Session, _envelope: &Envelope) -> Option<Reply> {
        if let Some(conn) = &mut self.conn
            && conn.command("RSET").is_err()
        {
            self.conn = None;
        }
        None
    }

    fn quit(&mut self, _session: &Session, _envelope: &Envelope) -> Option<Reply> {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.command("QUIT");
        }
        None
    }
}

impl Proxy {
    /// Sends a command; the client gets the relay's reply unless positive.
    fn command(&mut self, command: &str) -> Option<Reply> {
        let reply = self.conn.as_mut()?.command(command);
        self.answer(reply)
    }

    fn answer(&mut self, reply: io::Result<RelayReply>) -> Option<Reply> {
        match reply {
            Ok(reply) if (200..300).contains(&reply.code) => None,
            Ok(reply) => {
                if reply.code == 421 {
                    self.conn = None;
                }
                Some(reply.to_client())
            }
            Err(error) => {
                wasmtp_plugin::warn!("the relay connection failed: {error}");
                self.conn = None;
                Some(Reply::new(451, "4.4.2", "relay connection lost"))
            }
        }
    }
}

/// A reply from the relay.
struct RelayReply {
    code: u16,
    lines: Vec<String>,
}

impl RelayReply {
    /// The reply for the client: the relay's code and text, its enhanced
    /// status code kept when its class matches, nothing the host would refuse.
    fn to_client(&self) -> Reply {
        let code = if (200..600).contains(&self.code) {
            self.code
        } else {
            451
        };
        let mut enhanced = "";
        let lines: Vec<String> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let mut text = line.as_str();
                if let Some((first, rest)) = text.split_once(' ')
                    && is_enhanced(first, code)
                    && (i == 0 || first == enhanced)
                {
                    if i == 0 {
                        enhanced = first;
                    }
                    text = rest;
                }
                let mut clean: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                if clean.len() > MAX_TEXT {
                    let mut cut = MAX_TEXT;
                    while !clean.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    clean.truncate(cut);
                }
                clean
            })
            .collect();
        Reply::lines(code, enhanced, lines)
    }
}

/// `5.1.1` for a 5xx code: class digit, then one to three digits twice.
fn is_enhanced(text: &str, code: u16) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts[0] == (code / 100).to_string()
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// An SMTP client connection to the relay, through wasi:sockets. The
/// streams are the socket's children, so they are declared (and dropped)
/// before it.
struct Relay {
    reader: BufReader<InputStream>,
    writer: OutputStream,
    _socket: TcpSocket,
    _network: Network,
    /// The EHLO keywords, upper case (`SIZE`, `8BITMIME`, ...).
    extensions: Vec<String>,
}

impl Relay {
    fn connect(addr: SocketAddr, hostname: &str) -> io::Result<Relay> {
        let failed = |what: &str, code: ErrorCode| io::Error::other(format!("{what}: {code:?}"));
        let network = wasip2::sockets::instance_network::instance_network();
        let (family, remote) = match addr {
            SocketAddr::V4(a) => {
                let [a0, a1, a2, a3] = a.ip().octets();
                (
                    IpAddressFamily::Ipv4,
                    IpSocketAddress::Ipv4(Ipv4SocketAddress {
                        port: a.port(),
                        address: (a0, a1, a2, a3),
                    }),
                )
            }
            SocketAddr::V6(a) => {
                let s = a.ip().segments();
                let address = (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
                (
                    IpAddressFamily::Ipv6,
                    IpSocketAddress::Ipv6(Ipv6SocketAddress {
                        port: a.port(),
                        flow_info: 0,
                        address,
                        scope_id: 0,
                    }),
                )
            }
        };
        let socket = wasip2::sockets::tcp_create_socket::create_tcp_socket(family)
            .map_err(|c| failed("socket", c))?;
        socket
            .start_connect(&network, remote)
            .map_err(|c| failed("connect", c))?;
        let ready = socket.subscribe();
        let (input, output) = loop {
            match socket.finish_connect() {
                Ok(streams) => break streams,
                Err(ErrorCode::WouldBlock) => ready.block(),
                Err(code) => return Err(failed("connect", code)),
            }
        };
        drop(ready);
        let mut relay = Relay {
            reader: BufReader::new(input),
            writer: output,
            _socket: socket,
            _network: network,
            extensions: Vec::new(),
        };
        let greeting = relay.read_reply()?;
        if greeting.code != 220 {
            return Err(io::Error::other(format!("greeted with {}", greeting.code)));
        }
        let ehlo = relay.command(&format!("EHLO {hostname}"))?;
        if ehlo.code == 250 {
            relay.extensions = ehlo
                .lines
                .iter()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_ascii_uppercase)
                .collect();
        } else {
            let helo = relay.command(&format!("HELO {hostname}"))?;
            if helo.code != 250 {
                return Err(io::Error::other(format!("HELO refused with {}", helo.code)));
            }
        }
        Ok(relay)
    }

    /// Whether the relay announced the extension of a MAIL/RCPT parameter.
    fn supports(&self, parameter: &str) -> bool {
        let keyword = parameter
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let extension = match keyword.as_str() {
            "BODY" => "8BITMIME",
            other => other,
        };
        self.extensions.iter().any(|e| e == extension)
    }

    fn command(&mut self, line: &str) -> io::Result<RelayReply> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        Write::flush(&mut self.writer)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<RelayReply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            if self.reader.read_until(b'\n', &mut raw)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the relay closed the connection",
                ));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("not an SMTP reply: {line:?}"),
                    )
                })?;
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(RelayReply { code, lines });
            }
        }
    }

    /// Streams the message: `X-Peer` added, CRLF line endings, dot-stuffed,
    /// then the terminating `.`.
    fn send_message(&mut self, content: Content, peer: &str) -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut self.writer);
        let mut lines = LineSplitter::new(content);
        // aiosmtpd's Proxy: X-Peer goes before the first blank line, with
        // that line's ending; without one, before the last line.
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut held_size = 0;
        let mut inserted = false;
        while let Some(line) = lines.next_line()? {
            if inserted {
                write_line(&mut out, &line)?;
                continue;
            }
            let blank = matches!(&line[..], b"\r\n" | b"\n" | b"\r");
            if blank || held_size > HEADER_LIMIT {
                for h in held.drain(..) {
                    write_line(&mut out, &h)?;
                }
                write_line(&mut out, format!("X-Peer: {peer}\r\n").as_bytes())?;
                write_line(&mut out, &line)?;
                inserted = true;
            } else {
                held_size += line.len();
                held.push(line);
            }
        }
        if !inserted {
            let last = held.pop();
            for h in held.drain(..) {
                write_line(&mut out, &h)?;
            }
            write_line(&mut out, format!("X-Peer: {peer}\r\n").as_bytes())?;
            if let Some(last) = last {
                write_line(&mut out, &last)?;
            }
        }
        out.write_all(b".\r\n")?;
        out.flush()
    }
}

/// Writes one line (with or without its line break) as smtplib sends it:
/// dot-stuffed, ending in CRLF.
fn write_line(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.starts_with(b".") {
        out.write_all(b".")?;
    }
    out.write_all(text)?;
    out.write_all(b"\r\n")
}

/// Splits the content into lines at `\r\n`, `\r` or `\n` (Python's
/// `bytes.splitlines(keepends=True)`), each with its line break.
struct LineSplitter<R> {
    reader: BufReader<R>,
}

impl<R: Read> LineSplitter<R> {
    fn new(reader: R) -> Self {
        LineSplitter {
            reader: BufReader::with_capacity(64 * 1024, reader),
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok((!line.is_empty()).then_some(line));
            }
            if line.ends_with(b"\r") {
                // A `\r` ended the line; a `\n` right after it belongs to it.
                if buf[0] == b'\n' {
                    line.push(b'\n');
                    self.reader.consume(1);
                }
                return Ok(Some(line));
            }
            match buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(at) if buf[at] == b'\n' => {
                    line.extend_from_slice(&buf[..=at]);
                    self.reader.consume(at + 1);
                    return Ok(Some(line));
                }
                Some(at) => {
                    line.extend_from_slice(&buf[..=at]);
                    self.reader.consume(at + 1);
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    self.reader.consume(n);
                }
            }
        }
    }
}
