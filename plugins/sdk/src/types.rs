//! Helpers for the WIT records the hooks receive.

use std::fmt;
use std::net::IpAddr;

use crate::{Envelope, Session, SocketAddress};

impl SocketAddress {
    /// The address as an IP address; `None` for a Unix-socket peer
    /// (`unix:/path`).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    /// As Python prints aiosmtpd's `session.peer` tuple: `('192.0.2.7', 4567)`
    /// (what `X-Peer` says in aiosmtpd's `Message`).
    pub fn python_tuple(&self) -> String {
        format!("('{}', {})", self.address, self.port)
    }
}

/// `192.0.2.7:4567`, `[2001:db8::1]:25`.
impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.address, self.port),
        }
    }
}

impl Session {
    /// The name given in HELO/EHLO, or `""` before it.
    pub fn helo_name(&self) -> &str {
        self.host_name.as_deref().unwrap_or_default()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl Envelope {
    /// The sender: `Some("")` for the null sender `<>`, `None` before MAIL.
    pub fn sender(&self) -> Option<&str> {
        self.mail_from.as_deref()
    }

    /// The domain part of each recipient, lower-cased, in order.
    pub fn recipient_domains(&self) -> impl Iterator<Item = String> + '_ {
        self.rcpt_tos.iter().map(|r| {
            r.rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        let v4 = SocketAddress {
            address: "192.0.2.7".into(),
            port: 4567,
        };
        assert_eq!(v4.python_tuple(), "('192.0.2.7', 4567)");
        assert_eq!(v4.to_string(), "192.0.2.7:4567");
        let v6 = SocketAddress {
            address: "2001:db8::1".into(),
            port: 25,
        };
        assert_eq!(v6.to_string(), "[2001:db8::1]:25");
        assert_eq!(
            SocketAddress {
                address: "unix:/run/lmtp".into(),
                port: 0
            }
            .ip(),
            None
        );
    }
}
