//! One accepted connection, from its first byte to its close: the PROXY
//! header (on listeners that expect one), the TLS handshake (implicit TLS),
//! and the sessions run on it — one, or two when STARTTLS turns the plain
//! session into a TLS one.
//!
//! STARTTLS is a change of type, not of a flag (RFC 3207 §4.2; stalwart's
//! `into_tls`, go-smtp's `handleStartTLS`): the plain [`Session`] is
//! consumed, its buffered input dropped, and a new session is built over
//! the TLS stream from the connection's identity alone — no HELO name, no
//! envelope, no authentication, a fresh plugin instance.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::envelope::{Envelope, Peer, SessionInfo};
use super::session::{ListenerSettings, Outcome, Protocol, Session};
use crate::plugin::{Hook, SessionPlugin};
use crate::proxy_protocol;

/// A byte stream a session runs on: TCP, a Unix socket, or TLS over either.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Boxed so that the plain and the TLS session are the same type.
pub type Stream = Box<dyn Io>;

/// Serve one accepted connection until it closes.
pub async fn serve(
    mut stream: Stream,
    peer: Peer,
    id: u64,
    settings: Arc<ListenerSettings>,
    shutdown: watch::Receiver<bool>,
) {
    let mut info = SessionInfo {
        id,
        listener: settings.name.clone(),
        server_hostname: settings.hostname.clone(),
        peer,
        host_name: None,
        extended_smtp: false,
        lmtp: settings.protocol == Protocol::Lmtp,
        tls: None,
        authenticated: false,
        auth_identity: None,
        proxy: None,
    };
    let mut plugin = SessionPlugin::new(settings.plugin.clone(), id)
        .with_max_recipients(settings.limits.max_recipients);
    let metrics = crate::metrics::get();
    let _open = metrics.map(|m| m.open(&settings.name));
    let closed = || {
        if let Some(m) = metrics {
            m.session(
                &settings.name,
                settings.tenant.as_ref(),
                crate::metrics::Outcome::Closed,
            );
        }
    };

    if let Some(timeout) = settings.proxy_protocol {
        let header = match proxy_protocol::read_header(&mut stream, timeout).await {
            Ok(header) => header,
            Err(e) => {
                // No reply: whatever is on the other end is not the proxy
                // this listener trusts (aiosmtpd closes silently too).
                tracing::warn!("closing: {e}");
                closed();
                return;
            }
        };
        tracing::info!(version = header.version, source = ?header.source, "PROXY header");
        if let Some(source) = header.source {
            tracing::Span::current().record("client", tracing::field::display(source));
            info.peer = Peer::Ip(source);
        }
        info.proxy = Some(header.clone());
        if plugin.has(Hook::Proxy) && !plugin.proxy(&info, &Envelope::default(), &header).await {
            tracing::info!("the proxy hook refused the connection");
            closed();
            return;
        }
    }

    let mut greet = true;
    let mut insecure = false;
    if settings.implicit_tls {
        match handshake(stream, &settings, &mut info, &mut plugin).await {
            Some((tls, accepted)) => {
                stream = tls;
                insecure = !accepted;
            }
            None => return closed(),
        }
    }
    if let Some(m) = metrics {
        m.session(
            &settings.name,
            settings.tenant.as_ref(),
            crate::metrics::Outcome::Accepted,
        );
    }
    loop {
        let mut session = Session::new(
            stream,
            info.clone(),
            plugin,
            settings.clone(),
            shutdown.clone(),
        );
        if insecure {
            session.refuse_insecure();
        }
        match session.run(greet).await {
            Outcome::Closed => return,
            Outcome::StartTls(plain) => {
                // The TLS session starts from the connection's identity only.
                info.host_name = None;
                info.extended_smtp = false;
                info.authenticated = false;
                info.auth_identity = None;
                plugin = SessionPlugin::new(settings.plugin.clone(), id)
                    .with_max_recipients(settings.limits.max_recipients);
                match handshake(plain, &settings, &mut info, &mut plugin).await {
                    Some((tls, accepted)) => {
                        stream = tls;
                        insecure = !accepted;
                        // After STARTTLS the client speaks first (EHLO).
                        greet = false;
                    }
                    None => return,
                }
            }
        }
    }
}

/// The server side of a TLS handshake, bounded in time, then the starttls
/// hook. `None`: the handshake failed and the connection is done (only
/// this one). Otherwise the TLS stream and whether the hook accepted it.
async fn handshake(
    plain: Stream,
    settings: &ListenerSettings,
    info: &mut SessionInfo,
    plugin: &mut SessionPlugin,
) -> Option<(Stream, bool)> {
    let tls = settings
        .tls
        .as_ref()
        .expect("TLS is configured where a handshake happens");
    let accepted = tokio::time::timeout(tls.handshake_timeout, tls.acceptor().accept(plain)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!("TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::info!("TLS handshake took longer than {:?}", tls.handshake_timeout);
            return None;
        }
    };
    let tls_info = crate::tls::info(stream.get_ref().1);
    tracing::Span::current().record("tls", &*tls_info.version);
    tracing::info!(version = &*tls_info.version, cipher = &*tls_info.cipher, sni = ?tls_info.server_name, "TLS established");
    info.tls = Some(tls_info);
    let ok = !plugin.has(Hook::Starttls) || plugin.starttls(info, &Envelope::default()).await;
    if !ok {
        tracing::info!("the starttls hook refused the TLS session");
    }
    Some((Box::new(stream), ok))
}

/// Counts a listener's open connections, in all and per client address,
/// against its `max_connections` and `max_connections_per_ip`.
#[derive(Default)]
pub struct ConnectionLimiter {
    max: Option<usize>,
    max_per_ip: Option<usize>,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// One counted connection; uncounted when dropped.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: Option<std::net::IpAddr>,
}

impl ConnectionLimiter {
    pub fn new(max: Option<usize>, max_per_ip: Option<usize>) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            max,
            max_per_ip,
            open: Default::default(),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when a limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: Option<std::net::IpAddr>) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if self.max.is_some_and(|max| open.0 >= max) {
            return None;
        }
        if let (Some(ip), Some(max)) = (ip, self.max_per_ip)
            && open.1.get(&ip).copied().unwrap_or(0) >= max
        {
            return None;
        }
        open.0 += 1;
        if let Some(ip) = ip {
            *open.1.entry(ip).or_insert(0) += 1;
        }
        Some(ConnectionSlot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if let Some(ip) = self.ip
            && let Some(n) = open.1.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&ip);
            }
        }
    }
}

/// Refuse a connection over a limit: `421`, then close (RFC 5321 §3.8).
pub async fn refuse(stream: Stream, hostname: String) {
    refuse_with(
        stream,
        &super::reply::Reply::new(
            421,
            format!("4.7.0 {hostname} Too many connections, try again later"),
        ),
    )
    .await
}

/// Answer a connection with `reply` instead of a greeting, then close.
pub async fn refuse_with(mut stream: Stream, reply: &super::reply::Reply) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_in_all_and_per_ip() {
        let limiter = ConnectionLimiter::new(Some(3), Some(2));
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limiter.acquire(Some(a)).unwrap();
        let _a2 = limiter.acquire(Some(a)).unwrap();
        assert!(limiter.acquire(Some(a)).is_none(), "per-IP limit");
        let _b1 = limiter.acquire(Some(b)).unwrap();
        assert!(limiter.acquire(Some(b)).is_none(), "global limit");
        drop(a1);
        assert!(limiter.acquire(Some(b)).is_some());
    }
}
