//! The PROXY protocol (HAProxy's, v1 text and v2 binary): the header a load
//! balancer sends before the client's first byte, saying who the client is.
//!
//! Parsing is the `ppp` crate's (a small, dependency-free, long-maintained
//! parser of both versions with their TLVs, the one most tokio proxies use);
//! this module reads exactly one header off the stream — never a byte of
//! what follows, which belongs to the SMTP session or to a TLS handshake —
//! and turns it into [`ProxyHeader`], what plugins see as `session.proxy`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The default bound on the time to receive the header (aiosmtpd does not
/// set one by default; a listener that waits forever for it is an easy target).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The v1 header's longest form, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;
/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The largest v2 header this server reads: the fixed 16 bytes plus
/// addresses and TLVs. The length field allows 64 KiB; real proxies send a
/// few hundred bytes at most.
const V2_MAX: usize = 16 + 4096;

/// `local` (a proxy's own connection, such as a health check) or `proxy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyCommand {
    Local,
    Proxy,
}

/// What a PROXY header said (aiosmtpd's `ProxyData`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: u8,
    pub command: ProxyCommand,
    /// The original client; `None` for `local`, `UNKNOWN` or a non-IP family.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// v2 TLVs in header order: (type, value).
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// Why no header could be read. The connection is closed without a reply.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before the PROXY header ended")]
    Closed,
    #[error("cannot read the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
}

/// Read one header, with `timeout` for the whole of it.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    match tokio::time::timeout(timeout, read_header_untimed(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout(timeout)),
    }
}

async fn read_header_untimed<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<ProxyHeader, ProxyError> {
    let mut head = [0u8; 16];
    // The first 5 bytes say which version it is: `PROXY` or the v2 signature.
    read_exact(stream, &mut head[..5]).await?;
    if &head[..5] == b"PROXY" {
        // v1: a line, read a byte at a time so nothing after it is consumed.
        let mut line = head[..5].to_vec();
        loop {
            if line.len() >= V1_MAX {
                return Err(ProxyError::Invalid(
                    "a v1 header longer than 107 bytes".into(),
                ));
            }
            let mut byte = [0u8];
            read_exact(stream, &mut byte).await?;
            line.push(byte[0]);
            if line.ends_with(b"\r\n") {
                return parse(&line);
            }
        }
    }
    if head[..5] != V2_SIGNATURE[..5] {
        return Err(ProxyError::NotProxy);
    }
    read_exact(stream, &mut head[5..]).await?;
    if head[..12] != *V2_SIGNATURE {
        return Err(ProxyError::NotProxy);
    }
    // Refuse a bad version or family before waiting for a body it announces.
    if head[12] >> 4 != 2 || head[12] & 0x0f > 1 || head[13] >> 4 > 3 {
        return Err(ProxyError::Invalid(format!(
            "v2 version/command {:#04x}, family {:#04x}",
            head[12], head[13]
        )));
    }
    let length = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if 16 + length > V2_MAX {
        return Err(ProxyError::Invalid(format!(
            "a v2 header of {length} bytes"
        )));
    }
    let mut header = head.to_vec();
    header.resize(16 + length, 0);
    read_exact(stream, &mut header[16..]).await?;
    parse(&header)
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), ProxyError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProxyError::Closed),
        Err(e) => Err(ProxyError::Io(e)),
    }
}

/// Parse one complete header (v1 line with its CRLF, or a whole v2 header).
pub fn parse(bytes: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if bytes.starts_with(b"PROXY") {
        if bytes.len() > V1_MAX {
            return Err(ProxyError::Invalid(
                "a v1 header longer than 107 bytes".into(),
            ));
        }
        let header =
            ppp::v1::Header::try_from(bytes).map_err(|e| ProxyError::Invalid(e.to_string()))?;
        let (source, destination) = match header.addresses {
            ppp::v1::Addresses::Unknown => (None, None),
            ppp::v1::Addresses::Tcp4(a) => (
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
                Some(SocketAddr::new(
                    IpAddr::V4(a.destination_address),
                    a.destination_port,
                )),
            ),
            ppp::v1::Addresses::Tcp6(a) => (
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
                Some(SocketAddr::new(
                    IpAddr::V6(a.destination_address),
                    a.destination_port,
                )),
            ),
        };
        return Ok(ProxyHeader {
            version: 1,
            command: ProxyCommand::Proxy,
            source,
            destination,
            tlvs: Vec::new(),
        });
    }
    let header =
        ppp::v2::Header::try_from(bytes).map_err(|e| ProxyError::Invalid(e.to_string()))?;
    if header.len() != bytes.len() {
        return Err(ProxyError::Invalid(
            "trailing bytes after the v2 header".into(),
        ));
    }
    let command = match header.command {
        ppp::v2::Command::Local => ProxyCommand::Local,
        ppp::v2::Command::Proxy => ProxyCommand::Proxy,
    };
    let (source, destination) = match (command, header.addresses) {
        (ProxyCommand::Local, _) => (None, None),
        (_, ppp::v2::Addresses::IPv4(a)) => (
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
            Some(SocketAddr::new(
                IpAddr::V4(a.destination_address),
                a.destination_port,
            )),
        ),
        (_, ppp::v2::Addresses::IPv6(a)) => (
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
            Some(SocketAddr::new(
                IpAddr::V6(a.destination_address),
                a.destination_port,
            )),
        ),
        _ => (None, None),
    };
    let mut tlvs = Vec::new();
    for tlv in header.tlvs() {
        let tlv = tlv.map_err(|e| ProxyError::Invalid(format!("bad TLV: {e}")))?;
        tlvs.push((tlv.kind, tlv.value.into_owned()));
    }
    Ok(ProxyHeader {
        version: 2,
        command,
        source,
        destination,
        tlvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n").unwrap();
        assert_eq!(h.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(h.destination, Some("198.51.100.1:25".parse().unwrap()));
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap();
        assert_eq!(h.source, None);
        assert!(parse(b"PROXY TCP4 300.0.0.1 1.1.1.1 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.1.1.1 1.1.1.1 1\r\n").is_err());
        // Longer than the spec's 107 bytes, even when well formed otherwise.
        let long = format!(
            "PROXY TCP6 {0} {0} 65535 65535{1}\r\n",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            " ".repeat(20)
        );
        assert!(parse(long.as_bytes()).is_err());
    }

    #[test]
    fn v2_with_tlvs() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "192.0.2.7:4000".parse::<SocketAddr>().unwrap(),
                "198.51.100.1:25".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(ppp::v2::Type::Authority, b"mx.example")
        .unwrap()
        .build()
        .unwrap();
        let h = parse(&header).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.command, ProxyCommand::Proxy);
        assert_eq!(h.source, Some("192.0.2.7:4000".parse().unwrap()));
        assert_eq!(h.tlvs, vec![(0x02, b"mx.example".to_vec())]);
    }

    #[tokio::test]
    async fn reads_the_header_and_nothing_more() {
        let mut input: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
        let h = read_header(&mut input, DEFAULT_TIMEOUT).await.unwrap();
        assert_eq!(h.source.unwrap().port(), 56324);
        assert_eq!(input, b"EHLO x\r\n");
        let mut input: &[u8] = b"EHLO x\r\n";
        assert!(matches!(
            read_header(&mut input, DEFAULT_TIMEOUT).await,
            Err(ProxyError::NotProxy)
        ));
        let mut input: &[u8] = b"PROXY TCP4 192.0.2.7";
        assert!(matches!(
            read_header(&mut input, DEFAULT_TIMEOUT).await,
            Err(ProxyError::Closed)
        ));
    }
}
