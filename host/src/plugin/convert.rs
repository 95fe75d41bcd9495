//! Conversions between the host's session state and the WIT types, and the
//! check every plugin reply passes before it reaches the wire
//! (DESIGN.md, decision 4).

use crate::proxy_protocol::{ProxyCommand, ProxyHeader};
use crate::smtp::envelope::{Envelope, Peer, SessionInfo, TlsInfo};
use crate::smtp::reply::Reply;

use super::bindings::types;

/// The longest reply line a plugin may send (RFC 5321 §4.5.3.1.5: 512 with
/// the code, separator and CRLF).
pub const MAX_REPLY_LINE: usize = 506;
/// The most lines in one plugin reply.
pub const MAX_REPLY_LINES: usize = 64;

pub fn socket_address(addr: &std::net::SocketAddr) -> types::SocketAddress {
    types::SocketAddress {
        address: addr.ip().to_string(),
        port: addr.port(),
    }
}

pub fn session(s: &SessionInfo) -> types::Session {
    types::Session {
        id: s.id,
        listener: s.listener.to_string(),
        server_hostname: s.server_hostname.to_string(),
        peer: peer(&s.peer),
        host_name: s.host_name.clone(),
        extended_smtp: s.extended_smtp,
        lmtp: s.lmtp,
        tls: s.tls.as_ref().map(tls_info),
        authenticated: s.authenticated,
        auth_identity: s.auth_identity.clone(),
        proxy: s.proxy.as_ref().map(proxy_data),
    }
}

pub fn peer(p: &Peer) -> types::SocketAddress {
    let (address, port) = p.address_and_port();
    types::SocketAddress { address, port }
}

pub fn tls_info(t: &TlsInfo) -> types::TlsInfo {
    types::TlsInfo {
        version: t.version.clone(),
        cipher: t.cipher.clone(),
        server_name: t.server_name.clone(),
        peer_certificate: t.peer_certificate.clone(),
    }
}

pub fn proxy_data(p: &ProxyHeader) -> types::ProxyData {
    types::ProxyData {
        version: p.version,
        command: match p.command {
            ProxyCommand::Local => types::ProxyCommand::Local,
            ProxyCommand::Proxy => types::ProxyCommand::Proxy,
        },
        source: p.source.as_ref().map(socket_address),
        destination: p.destination.as_ref().map(socket_address),
        tlvs: p
            .tlvs
            .iter()
            .map(|(kind, value)| types::ProxyTlv {
                kind: *kind,
                value: value.clone(),
            })
            .collect(),
    }
}

pub fn envelope(e: &Envelope) -> types::Envelope {
    types::Envelope {
        mail_from: e.mail_from.clone(),
        mail_options: e.mail_options.clone(),
        smtp_utf8: e.smtp_utf8,
        rcpt_tos: e.rcpt_tos.clone(),
        rcpt_options: e.rcpt_options.clone(),
    }
}

/// A host reply as the WIT type (for `ehlo`'s planned responses).
pub fn to_wit_reply(r: &Reply) -> types::Reply {
    types::Reply {
        code: r.code,
        enhanced: None,
        lines: r.text_lines().map(str::to_owned).collect(),
    }
}

/// Check a plugin's reply and turn it into wire text. The enhanced status
/// code, if any, starts every line (RFC 2034 §3).
pub fn from_wit_reply(r: types::Reply) -> Result<Reply, String> {
    if !(200..=599).contains(&r.code) {
        return Err(format!("reply code {} is not between 200 and 599", r.code));
    }
    if let Some(enhanced) = &r.enhanced {
        check_enhanced(r.code, enhanced)?;
    }
    if r.lines.len() > MAX_REPLY_LINES {
        return Err(format!(
            "reply has {} lines; at most {MAX_REPLY_LINES} are allowed",
            r.lines.len()
        ));
    }
    let mut lines = Vec::with_capacity(r.lines.len().max(1));
    for line in &r.lines {
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(format!(
                "reply line {line:?} contains the control character {c:?}"
            ));
        }
        let line = match &r.enhanced {
            Some(e) if line.is_empty() => e.clone(),
            Some(e) => format!("{e} {line}"),
            None => line.clone(),
        };
        if line.len() > MAX_REPLY_LINE {
            return Err(format!(
                "reply line is {} bytes long; at most {MAX_REPLY_LINE} are allowed",
                line.len()
            ));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(r.enhanced.clone().unwrap_or_default());
    }
    Ok(Reply::lines(r.code, lines))
}

/// The identity an `auth` hook accepted: it goes into logs and later
/// hooks, so it is held to a reply line's rules.
pub fn check_identity(identity: &str) -> Result<(), String> {
    if let Some(c) = identity.chars().find(|c| c.is_control()) {
        return Err(format!(
            "auth identity {identity:?} contains the control character {c:?}"
        ));
    }
    if identity.len() > MAX_REPLY_LINE {
        return Err(format!(
            "auth identity is {} bytes long; at most {MAX_REPLY_LINE} are allowed",
            identity.len()
        ));
    }
    Ok(())
}

/// `class.subject.detail` with class 2, 4 or 5 matching the reply code, and
/// subject and detail of 1–3 digits (RFC 3463).
fn check_enhanced(code: u16, enhanced: &str) -> Result<(), String> {
    let parts: Vec<&str> = enhanced.split('.').collect();
    let digits_ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0].len() == 1;
    if !digits_ok {
        return Err(format!(
            "enhanced status code {enhanced:?} is not of the form class.subject.detail"
        ));
    }
    if parts[0] != (code / 100).to_string() {
        return Err(format!(
            "enhanced status code {enhanced} does not match reply code {code}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, enhanced: Option<&str>, lines: &[&str]) -> types::Reply {
        types::Reply {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn valid_replies() {
        assert_eq!(
            from_wit_reply(reply(250, None, &["OK"])).unwrap(),
            Reply::new(250, "OK")
        );
        assert_eq!(
            from_wit_reply(reply(550, Some("5.1.1"), &["no", "such user"])).unwrap(),
            Reply::new(550, "5.1.1 no\n5.1.1 such user")
        );
        assert_eq!(
            from_wit_reply(reply(250, None, &[])).unwrap(),
            Reply::new(250, "")
        );
    }

    #[test]
    fn invalid_replies() {
        assert!(from_wit_reply(reply(999, None, &["x"])).is_err());
        assert!(from_wit_reply(reply(250, None, &["a\r\nMAIL FROM:<x>"])).is_err());
        assert!(from_wit_reply(reply(250, Some("5.1.1"), &["x"])).is_err());
        assert!(from_wit_reply(reply(250, Some("2.1"), &["x"])).is_err());
        assert!(from_wit_reply(reply(250, None, &[&"x".repeat(600)])).is_err());
    }
}
