//! `wasi:http/outgoing-handler` for plugins (`grants.http`): the standard
//! WASI HTTP client interface, so a plugin in any language uses its
//! toolchain's own HTTP client, with every request checked against the
//! plugin's grant before a packet leaves.
//!
//! The bindings and resource plumbing are wasmtime-wasi-http's; the request
//! itself is sent here ([`Hooks::send_request`]), not by its default
//! sender, because that is where the policy lives:
//! - the URL must fall under one of the granted prefixes (scheme, host and
//!   port equal, path under the prefix's path, no dot segments): anything
//!   else is `http-request-denied`, before any name lookup (given once the
//!   guest has written the request's body, which is read and dropped:
//!   [`refuse`]);
//! - redirects are never followed by the host; a client that follows one
//!   makes a new request, checked like the first;
//! - TLS is rustls (ring, as everywhere in the server) with the system's
//!   roots and `[http] ca_file`;
//! - connecting, and the whole exchange (the body read included), end at
//!   the `[http]` timeouts or the hook's deadline, whichever comes first;
//! - a response body longer than `[http] max_response_bytes` ends with
//!   `http-response-body-size`.
//!
//! Every outcome is an error value the guest sees (`wasi:http`'s
//! `error-code`); none traps.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::plugin::host::HostState;

/// The interface `grants.http` gives, as components name it (any 0.2.x).
pub const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler";

/// The most requests one plugin instance may have open at once (from
/// `handle` until the plugin drops the response, or the request fails);
/// more fail with `connection-limit-reached`.
pub const MAX_IN_FLIGHT: usize = 8;

/// `[http]`: how plugins' requests are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// How long a connection (name lookup, TCP, TLS) may take.
    pub connect_timeout: Duration,
    /// How long a whole request may take, the response body included.
    pub timeout: Duration,
    /// The longest response body a plugin is given.
    pub max_response_bytes: u64,
    /// More trusted roots (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            ca_file: None,
        }
    }
}

impl HttpSettings {
    /// The extra roots of `ca_file`, read now: a config naming a missing or
    /// empty file is refused at load, not at the first request.
    pub fn extra_roots(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(certs)
    }
}

/// The client behind every plugin's requests, one per config generation.
pub struct HttpClient {
    pub settings: HttpSettings,
    /// Built at the first HTTPS request (reading the system's roots costs
    /// a few milliseconds that a server without HTTP grants need not pay).
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> HttpClient {
        HttpClient {
            settings,
            tls: OnceLock::new(),
        }
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::debug!("system TLS roots: {e}");
                }
                roots.add_parsable_certificates(native.certs);
                for cert in self.settings.extra_roots()? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("[http] ca_file: {e}"))?;
                }
                // One crypto provider for the whole server (host/Cargo.toml).
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }
}

/// One granted URL prefix: `https://app.example.com/inbound/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPrefix {
    https: bool,
    /// Lower case, without a trailing dot; IPv6 in brackets.
    host: String,
    port: u16,
    /// Starts with `/`.
    path: String,
}

impl UrlPrefix {
    pub fn parse(text: &str) -> Result<UrlPrefix, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{text}` is not an https:// or http:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{text}` names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{text}`: a granted URL has no user name"));
        }
        if uri.query().is_some() {
            return Err(format!(
                "`{text}`: a granted URL is a prefix of paths; it has no query"
            ));
        }
        if unsafe_path(uri.path()) {
            return Err(format!(
                "`{text}`: the path has `.` or `..` segments or escaped separators"
            ));
        }
        Ok(UrlPrefix {
            https,
            host: host_key(authority.host()),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path: uri.path().to_owned(),
        })
    }

    /// Whether a request to `uri` falls under this prefix.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        let path = uri.path();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        https == self.https
            && !authority.as_str().contains('@')
            && host_key(authority.host()) == self.host
            && port == self.port
            && !unsafe_path(path)
            && (path == self.path
                || (path.starts_with(&self.path)
                    && (self.path.ends_with('/') || path[self.path.len()..].starts_with('/'))))
    }
}

fn host_key(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A path a server might resolve to somewhere else than it reads:
/// `/inbound/../admin`, `/inbound/%2e%2e/admin`, `/inbound%2fadmin`.
fn unsafe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || path.split('/').any(|s| s == "." || s == "..")
}

/// `grants.http`: the URL prefixes a plugin may request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpGrant {
    pub prefixes: Vec<UrlPrefix>,
    /// As configured, for messages.
    pub urls: Vec<String>,
}

impl HttpGrant {
    pub fn parse<'a>(
        urls: impl IntoIterator<Item = &'a str>,
    ) -> Result<HttpGrant, (usize, String)> {
        let mut grant = HttpGrant::default();
        for (i, url) in urls.into_iter().enumerate() {
            grant
                .prefixes
                .push(UrlPrefix::parse(url).map_err(|m| (i, m))?);
            grant.urls.push(url.to_owned());
        }
        Ok(grant)
    }

    pub fn allows(&self, uri: &http::Uri) -> bool {
        self.prefixes.iter().any(|p| p.allows(uri))
    }
}

/// A plugin instance's `wasi:http` state.
pub struct HttpAccess {
    pub ctx: WasiHttpCtx,
    pub hooks: Hooks,
}

impl HttpAccess {
    pub fn new(grant: Option<Arc<HttpGrant>>, client: Arc<HttpClient>, plugin: Arc<str>) -> Self {
        HttpAccess {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                grant,
                client,
                plugin,
                deadline: Instant::now(),
                in_flight: Arc::new(AtomicUsize::new(0)),
            },
        }
    }
}

/// What [`Hooks::send_request`] needs: the grant, the client, and the
/// running hook's deadline (set at each call, see `WasiHttpView`).
pub struct Hooks {
    grant: Option<Arc<HttpGrant>>,
    client: Arc<HttpClient>,
    plugin: Arc<str>,
    deadline: Instant,
    /// Requests of this instance still open.
    in_flight: Arc<AtomicUsize>,
}

/// One open request, counted in [`Hooks::in_flight`] until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.hooks.deadline = self.deadline;
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let granted = self.grant.as_ref().is_some_and(|g| g.allows(request.uri()));
        let plugin = self.plugin.clone();
        let refused_by = (Instant::now() + self.client.settings.timeout)
            .min(super::wait_deadline(self.deadline));
        if !granted {
            tracing::warn!(
                target: "wasmtp::plugin",
                plugin = &*plugin,
                "HTTP request refused: {} {} is not under `grants.http`",
                request.method(),
                request.uri()
            );
            if let Some(m) = crate::metrics::get() {
                m.http_request(&plugin, "denied", None);
            }
            return refuse(request, Error::HttpRequestDenied, refused_by);
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(
                target: "wasmtp::plugin",
                plugin = &*plugin,
                "HTTP request refused: {MAX_IN_FLIGHT} requests of this instance are open"
            );
            if let Some(m) = crate::metrics::get() {
                m.http_request(&plugin, "limited", None);
            }
            return refuse(request, Error::ConnectionLimitReached, refused_by);
        }
        let open = InFlight(self.in_flight.clone());
        let settings = &self.client.settings;
        let now = Instant::now();
        let end = (now + settings.timeout).min(super::wait_deadline(self.deadline));
        let connect = options
            .and_then(|o| o.connect_timeout)
            .map_or(settings.connect_timeout, |t| {
                t.min(settings.connect_timeout)
            });
        let connected_by = (now + connect).min(end);
        let limit = settings.max_response_bytes;
        let client = self.client.clone();
        Box::new(async move {
            let started = Instant::now();
            let (method, uri) = (request.method().clone(), request.uri().clone());
            let result = send(request, &client, connected_by, end, limit, open).await;
            if let Some(m) = crate::metrics::get() {
                let (outcome, took) = match &result {
                    Ok((response, _)) => (status_class(response.status()), Some(started.elapsed())),
                    Err(
                        Error::DnsTimeout
                        | Error::ConnectionTimeout
                        | Error::ConnectionReadTimeout
                        | Error::HttpResponseTimeout,
                    ) => ("timeout", None),
                    Err(_) => ("error", None),
                };
                m.http_request(&plugin, outcome, took);
            }
            match &result {
                Ok((response, _)) => tracing::debug!(
                    target: "wasmtp::plugin",
                    plugin = &*plugin,
                    "HTTP {method} {uri}: {} in {:?}",
                    response.status(),
                    started.elapsed()
                ),
                Err(e) => tracing::info!(
                    target: "wasmtp::plugin",
                    plugin = &*plugin,
                    "HTTP {method} {uri}: {e}"
                ),
            }
            result
        })
    }

    fn p2_error_from_connect(
        &mut self,
        _err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(
        &mut self,
        err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, TlsAlertReceivedPayload};
        ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
            alert_id: None,
            alert_message: Some(err.to_string()),
        })
    }

    fn p2_error_from_hyper(
        &mut self,
        err: &hyper::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
        if err.is_timeout() {
            ErrorCode::HttpResponseTimeout
        } else if err.is_incomplete_message() {
            ErrorCode::HttpResponseIncomplete
        } else {
            ErrorCode::HttpProtocolError
        }
    }
}

/// `2xx`, ... for the metrics.
fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// Connect, send `request`, and return the response with its body bounded
/// by `limit` bytes and `end`, and the connection's driver.
/// A request refused without being sent: the error comes once the guest
/// has finished writing the request's body (read here and dropped, never
/// sent), or at `until`. A guest may write its body after `handle` has
/// returned, as StarlingMonkey's `fetch` (ComponentizeJS) does; answering
/// at once would close the body's stream under it, and that runtime traps
/// on a write to a closed stream instead of rejecting the `fetch`.
fn refuse(request: http::Request<WasiBody>, error: Error, until: Instant) -> ResponseFuture {
    Box::new(async move {
        let mut body = request.into_body();
        let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(until), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
        Err(error)
    })
}

async fn send(
    mut request: http::Request<WasiBody>,
    client: &HttpClient,
    connected_by: Instant,
    end: Instant,
    limit: u64,
    open: InFlight,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let uri = request.uri().clone();
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let until = tokio::time::Instant::from_std(connected_by);

    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout_at(until, tokio::net::lookup_host((host, port))).await {
            Err(_) => return Err(Error::DnsTimeout),
            Ok(Err(e)) => {
                return Err(Error::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                });
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    let mut tcp = None;
    let mut last = Error::DestinationNotFound;
    for addr in addrs {
        match tokio::time::timeout_at(until, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => {
                last = Error::ConnectionTimeout;
                break;
            }
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = if https {
        let config = client.tls().map_err(|m| Error::InternalError(Some(m)))?;
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout_at(until, connector.connect(name, tcp)).await {
            Err(_) => return Err(Error::ConnectionTimeout),
            Ok(Err(e)) => return Err(tls_error(e)),
            Ok(Ok(tls)) => Box::new(tls),
        }
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout_at(
        until,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // Origin form on the wire: scheme and authority go only to a proxy.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let end = tokio::time::Instant::from_std(end);
    let mut conn = Some(Box::pin(conn));
    let mut sending = std::pin::pin!(tokio::time::timeout_at(end, sender.send_request(request)));
    // Drive the connection while waiting for the response head.
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = sending.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if let Some(c) = conn.as_mut()
            && let Poll::Ready(r) = c.as_mut().poll(cx)
        {
            conn = None;
            if let Err(e) = r {
                return Poll::Ready(Ok(Err(e)));
            }
        }
        Poll::Pending
    })
    .await
    .map_err(|_| Error::HttpResponseTimeout)?
    .map_err(|e| {
        if e.is_timeout() {
            Error::HttpResponseTimeout
        } else {
            Error::Hyper(e)
        }
    })?;
    // The request counts as open until its response body is read or
    // dropped (until here, `open` lived in this future). The connection
    // may close a moment later; it ends by `end` in any case.
    let response = response.map(|incoming| {
        Bounded {
            incoming,
            read: 0,
            limit,
            end: Box::pin(tokio::time::sleep_until(end)),
            _open: open,
        }
        .boxed_unsync()
    });
    let driver = async move {
        let Some(conn) = conn else { return Ok(()) };
        match tokio::time::timeout_at(end, conn).await {
            Ok(r) => r.map_err(Error::Hyper),
            Err(_) => Err(Error::HttpResponseTimeout),
        }
    };
    Ok((response, Box::new(driver)))
}

/// A TLS failure, with certificate problems told apart.
fn tls_error(e: std::io::Error) -> Error {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if certificate {
        Error::TlsCertificateError
    } else {
        Error::Tls(e)
    }
}

/// A response body cut at `limit` bytes and at `end`.
struct Bounded {
    incoming: hyper::body::Incoming,
    read: u64,
    limit: u64,
    end: Pin<Box<tokio::time::Sleep>>,
    _open: InFlight,
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.read > self.limit {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.limit {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.limit,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Hyper(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.end.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(prefix: &str, url: &str) -> bool {
        UrlPrefix::parse(prefix)
            .unwrap()
            .allows(&url.parse().unwrap())
    }

    #[test]
    fn prefixes_match_whole_hosts_ports_and_path_segments() {
        let p = "https://app.example.com/inbound/";
        assert!(allows(p, "https://app.example.com/inbound/"));
        assert!(allows(p, "https://App.Example.COM:443/inbound/mail?x=1"));
        assert!(allows(p, "https://app.example.com./inbound/a/b"));
        // Another scheme, host, port or path.
        assert!(!allows(p, "http://app.example.com/inbound/"));
        assert!(!allows(p, "https://app.example.com.evil.test/inbound/"));
        assert!(!allows(p, "https://evil.test/inbound/"));
        assert!(!allows(p, "https://app.example.com:8443/inbound/"));
        assert!(!allows(p, "https://app.example.com/inbound"));
        assert!(!allows(p, "https://app.example.com/inboundx/"));
        assert!(!allows(p, "https://app.example.com/admin/"));
        // Ways around a path prefix.
        assert!(!allows(p, "https://app.example.com/inbound/../admin"));
        assert!(!allows(p, "https://app.example.com/inbound/%2e%2e/admin"));
        assert!(!allows(p, "https://app.example.com/inbound/..%2Fadmin"));
        assert!(!allows(p, "https://user@app.example.com/inbound/"));
        // Without a trailing slash the prefix ends at a segment.
        let p = "http://127.0.0.1:8080/hook";
        assert!(allows(p, "http://127.0.0.1:8080/hook"));
        assert!(allows(p, "http://127.0.0.1:8080/hook/x"));
        assert!(allows(p, "http://127.0.0.1:8080/hook?x"));
        assert!(!allows(p, "http://127.0.0.1:8080/hooks"));
        assert!(!allows(p, "http://localhost:8080/hook"));
        // A host alone grants the whole host.
        assert!(allows(
            "https://app.example.com",
            "https://app.example.com/x"
        ));
        assert!(allows("http://[::1]:80/", "http://[::1]/x"));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            "ftp://x.example/",
            "app.example.com/inbound",
            "https://u:p@app.example.com/",
            "https://app.example.com/a?b",
            "https://app.example.com/a/../b",
        ] {
            assert!(UrlPrefix::parse(bad).is_err(), "{bad}");
        }
    }
}
