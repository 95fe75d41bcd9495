//! The host-owned state a session's hooks see: the session and the envelope
//! of the current transaction (aiosmtpd's `Session` and `Envelope`). Plugins
//! get snapshots of these; only the host writes them (DESIGN.md, decision 3).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::proxy_protocol::ProxyHeader;

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client (or, behind a PROXY-protocol proxy, the original client).
    Ip(SocketAddr),
    /// A client of a Unix-socket listener, named by the socket's path
    /// (its own address is unnamed).
    Unix(Arc<str>),
}

impl Peer {
    /// The address and port plugins see: `unix:/path` and port 0 for a Unix socket.
    pub fn address_and_port(&self) -> (String, u16) {
        match self {
            Peer::Ip(addr) => (addr.ip().to_string(), addr.port()),
            Peer::Unix(path) => (format!("unix:{path}"), 0),
        }
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Ip(addr) => Some(addr.ip()),
            Peer::Unix(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

/// An established TLS layer (aiosmtpd's `session.ssl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The IANA name of the cipher suite.
    pub cipher: String,
    /// The SNI name the client asked for.
    pub server_name: Option<String>,
    /// The client's certificate (DER), if it showed one.
    pub peer_certificate: Option<Vec<u8>>,
}

/// One connection.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: u64,
    pub listener: Arc<str>,
    pub server_hostname: Arc<str>,
    pub peer: Peer,
    pub host_name: Option<String>,
    pub extended_smtp: bool,
    pub lmtp: bool,
    pub tls: Option<TlsInfo>,
    pub authenticated: bool,
    pub auth_identity: Option<String>,
    pub proxy: Option<ProxyHeader>,
}

/// The current mail transaction.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// The host's name for the transaction in logs, given when MAIL is
    /// accepted (see `logging::queue_id`); plugins read it with the
    /// `transaction.queue-id` import.
    pub queue_id: Option<String>,
    pub mail_from: Option<String>,
    pub mail_options: Vec<String>,
    pub smtp_utf8: bool,
    pub rcpt_tos: Vec<String>,
    pub rcpt_options: Vec<Vec<String>>,
    /// The transaction's mail authentication, computed once for every
    /// plugin of the chain (and tenants) that asks (`capability::mail_auth`).
    pub auth: crate::capability::mail_auth::AuthSlot,
    /// What the plugins of this transaction share through the granted
    /// imports (notes, ...). A new transaction (`Envelope::default()`:
    /// after DATA, RSET, HELO/EHLO) starts with a new one.
    pub shared: crate::capability::Shared,
}
