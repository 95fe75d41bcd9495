//! Prometheus metrics: what the server and every plugin are doing, served as
//! OpenMetrics text at `http://ADDRESS/metrics` when `[server] metrics =
//! "ADDRESS"` is set (off by default).
//!
//! Built on `prometheus-client`, the Prometheus organisation's own Rust
//! client: typed label sets, OpenMetrics text exposition, no global macros
//! and no exporter thread of its own; we serve its text from our own tokio
//! listener (a scrape is one `GET`, so a few lines of HTTP/1.0 do).
//!
//! Recording is skipped entirely until [`enable`] is called, so a server
//! without `metrics` pays one relaxed atomic load per event.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `wasmtp_sessions_total` | listener, tenant, outcome | connections: `accepted` (greeted), `tempfailed` (421 at connect: a connection limit), `closed` (dropped before the greeting: PROXY header or TLS handshake) |
//! | `wasmtp_sessions_active` | listener | connections open now |
//! | `wasmtp_transactions_total` | listener, tenant, outcome | transactions (MAIL accepted) by the class of the reply that ended them: `accepted` 2xx, `tempfailed` 4xx, `rejected` 5xx; `abandoned` when RSET, a new HELO/EHLO or the end of the connection ended them first |
//! | `wasmtp_recipients_total` | listener, tenant, outcome | RCPT replies by class |
//! | `wasmtp_messages_received_total`, `wasmtp_received_bytes_total` | listener, tenant | messages whose content arrived whole (DATA or BDAT), and their size |
//! | `wasmtp_plugin_calls_total`, `wasmtp_plugin_call_duration_seconds` | plugin, hook | hook calls into plugins and how long each took (instantiation not included) |
//! | `wasmtp_plugin_failures_total` | plugin, hook, kind | `trap`, `timeout`, `out-of-memory`, `invalid-reply` |
//! | `wasmtp_plugin_instantiations_total`, `wasmtp_plugin_instantiation_duration_seconds` | plugin | per-session instances created (with `setup.init`), and how long that took |
//! | `wasmtp_plugin_instance_reuses_total` | plugin | sessions served by an instance that served an earlier one (`instances = "reuse"`) |
//! | `wasmtp_plugin_instances_idle` | plugin | reset instances waiting for the next session (`instances = "reuse"`) |
//! | `wasmtp_plugin_memory_bytes` | plugin | linear memory held now by the plugin's live instances (what `memory_limit_mib` bounds, per instance) |
//! | `wasmtp_config_generation` | | the generation serving new connections |
//! | `wasmtp_reloads_total` | result | `ok` or `refused` |
//! | `wasmtp_build_info` | version | always 1 |
//!
//! `tenant` is the listener's tenant (`tenant = "acme"`), or on a listener
//! routing by recipient domain the tenant of the recipient (of all of a
//! transaction's recipients; `mixed` when they go to several chains); empty
//! where no tenant applies. `plugin` is the name in logs: `inbox`, or
//! `acme/inbox` for a tenant's copy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::plugin::Hook;

static ENABLED: AtomicBool = AtomicBool::new(false);
static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Start recording (the server does when `metrics` is configured).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The metrics, when recording is enabled.
pub fn get() -> Option<&'static Metrics> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    Some(METRICS.get_or_init(Metrics::new))
}

/// How an SMTP exchange ended, by reply class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Tempfailed,
    Rejected,
    /// A transaction ended without a final reply (RSET, HELO, disconnect).
    Abandoned,
    /// A connection closed before the greeting.
    Closed,
}

impl Outcome {
    /// The class of a reply code: 2xx and 3xx accepted, 4xx tempfailed, 5xx rejected.
    pub fn of(code: u16) -> Outcome {
        match code / 100 {
            4 => Outcome::Tempfailed,
            5 => Outcome::Rejected,
            _ => Outcome::Accepted,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Tempfailed => "tempfailed",
            Outcome::Rejected => "rejected",
            Outcome::Abandoned => "abandoned",
            Outcome::Closed => "closed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    listener: Arc<str>,
    tenant: Option<Arc<str>>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    listener: Arc<str>,
    tenant: Option<Arc<str>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    plugin: Arc<str>,
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    plugin: Arc<str>,
    hook: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    plugin: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Hook calls: 10 µs to ~40 s, ×4 a bucket (a nop call is ~1 µs; a
/// deadline is 30 s by default).
fn call_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        10e-6, 4.0, 12,
    ))
}

/// Instantiation: 10 µs (a small Rust plugin) to ~2.6 s (a cold interpreter).
fn instantiation_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        10e-6, 4.0, 10,
    ))
}

/// Every metric, and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    sessions: Family<TrafficLabels, Counter>,
    sessions_active: Family<ListenerLabels, Gauge>,
    transactions: Family<TrafficLabels, Counter>,
    recipients: Family<TrafficLabels, Counter>,
    messages: Family<ReceivedLabels, Counter>,
    bytes: Family<ReceivedLabels, Counter>,
    calls: Family<HookLabels, Counter>,
    call_seconds: HistogramFamily<HookLabels>,
    failures: Family<FailureLabels, Counter>,
    instantiations: Family<PluginLabels, Counter>,
    instantiation_seconds: HistogramFamily<PluginLabels>,
    reuses: Family<PluginLabels, Counter>,
    idle: Family<PluginLabels, Gauge>,
    memory: Family<PluginLabels, Gauge>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily<PluginLabels>,
    generation: Gauge,
    reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasmtp");
        let m = Metrics {
            sessions: Family::default(),
            sessions_active: Family::default(),
            transactions: Family::default(),
            recipients: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(call_buckets),
            failures: Family::default(),
            instantiations: Family::default(),
            instantiation_seconds: Family::new_with_constructor(instantiation_buckets),
            reuses: Family::default(),
            idle: Family::default(),
            memory: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(call_buckets),
            generation: Gauge::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("sessions", "Connections, by how they started: accepted (greeted), tempfailed (421 at connect), closed (before the greeting)", m.sessions.clone());
        r.register(
            "sessions_active",
            "Connections open now",
            m.sessions_active.clone(),
        );
        r.register(
            "transactions",
            "Mail transactions, by the class of the reply that ended them, or abandoned",
            m.transactions.clone(),
        );
        r.register("recipients", "RCPT replies, by class", m.recipients.clone());
        r.register(
            "messages_received",
            "Messages whose content arrived whole",
            m.messages.clone(),
        );
        r.register_with_unit(
            "received",
            "Message content received",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register("plugin_calls", "Hook calls into plugins", m.calls.clone());
        r.register_with_unit(
            "plugin_call_duration",
            "How long a hook call took",
            Unit::Seconds,
            m.call_seconds.clone(),
        );
        r.register(
            "plugin_failures",
            "Failed hook calls, by kind: trap, timeout, out-of-memory, invalid-reply",
            m.failures.clone(),
        );
        r.register(
            "plugin_instantiations",
            "Plugin instances created for sessions",
            m.instantiations.clone(),
        );
        r.register_with_unit(
            "plugin_instantiation_duration",
            "How long creating an instance took, setup.init included",
            Unit::Seconds,
            m.instantiation_seconds.clone(),
        );
        r.register(
            "plugin_instance_reuses",
            "Sessions served by an instance that served an earlier session (instances = \"reuse\")",
            m.reuses.clone(),
        );
        r.register(
            "plugin_instances_idle",
            "Reset instances waiting for the next session (instances = \"reuse\")",
            m.idle.clone(),
        );
        r.register_with_unit(
            "plugin_memory",
            "Linear memory held now by the plugin's live instances",
            Unit::Bytes,
            m.memory.clone(),
        );
        r.register(
            "plugin_http_requests",
            "Plugins' outbound HTTP requests (wasi:http), by outcome: the response's status class (2xx...), denied (outside grants.http), limited (too many open), timeout, or error",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "plugin_http_duration",
            "How long a plugin's HTTP request took to its response's head",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        r.register(
            "config_generation",
            "The config generation serving new connections",
            m.generation.clone(),
        );
        r.register(
            "reloads",
            "Reloads of the config and plugins, by result: ok or refused",
            m.reloads.clone(),
        );
        r.register(
            "build",
            "The server's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn session(&self, listener: &Arc<str>, tenant: Option<&Arc<str>>, outcome: Outcome) {
        self.sessions
            .get_or_create(&TrafficLabels {
                listener: listener.clone(),
                tenant: tenant.cloned(),
                outcome: outcome.name(),
            })
            .inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn open(&self, listener: &Arc<str>) -> OpenConnection {
        let gauge = self.sessions_active.get_or_create_owned(&ListenerLabels {
            listener: listener.clone(),
        });
        gauge.inc();
        OpenConnection(gauge)
    }

    pub fn transaction(&self, listener: &Arc<str>, tenant: Option<&Arc<str>>, outcome: Outcome) {
        self.transactions
            .get_or_create(&TrafficLabels {
                listener: listener.clone(),
                tenant: tenant.cloned(),
                outcome: outcome.name(),
            })
            .inc();
    }

    pub fn recipient(&self, listener: &Arc<str>, tenant: Option<&Arc<str>>, code: u16) {
        let outcome = Outcome::of(code).name();
        self.recipients
            .get_or_create(&TrafficLabels {
                listener: listener.clone(),
                tenant: tenant.cloned(),
                outcome,
            })
            .inc();
    }

    pub fn received(&self, listener: &Arc<str>, tenant: Option<&Arc<str>>, bytes: u64) {
        let labels = ReceivedLabels {
            listener: listener.clone(),
            tenant: tenant.cloned(),
        };
        self.messages.get_or_create(&labels).inc();
        self.bytes.get_or_create(&labels).inc_by(bytes);
    }

    pub fn hook_call(&self, plugin: &Arc<str>, hook: Hook, took: Duration) {
        let labels = HookLabels {
            plugin: plugin.clone(),
            hook: hook.name(),
        };
        self.calls.get_or_create(&labels).inc();
        self.call_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// `kind`: the WIT error kind's name (`trap`, `timeout`, ...).
    pub fn hook_failure(&self, plugin: &Arc<str>, hook: Hook, kind: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                plugin: plugin.clone(),
                hook: hook.name(),
                kind,
            })
            .inc();
    }

    /// One outbound HTTP request of `plugin`: `outcome` as
    /// `plugin_http_requests` names it, `took` to the response's head.
    pub fn http_request(&self, plugin: &Arc<str>, outcome: &'static str, took: Option<Duration>) {
        self.http_requests
            .get_or_create(&HttpLabels {
                plugin: plugin.clone(),
                outcome,
            })
            .inc();
        if let Some(took) = took {
            self.http_seconds
                .get_or_create(&PluginLabels {
                    plugin: plugin.clone(),
                })
                .observe(took.as_secs_f64());
        }
    }

    pub fn instantiation(&self, plugin: &Arc<str>, took: Duration) {
        let labels = PluginLabels {
            plugin: plugin.clone(),
        };
        self.instantiations.get_or_create(&labels).inc();
        self.instantiation_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A session was given an instance an earlier session had used.
    pub fn reuse(&self, plugin: &Arc<str>) {
        self.reuses
            .get_or_create(&PluginLabels {
                plugin: plugin.clone(),
            })
            .inc();
    }

    /// The gauge of `plugin`'s idle instances, waiting for a session.
    pub fn idle_instances(&self, plugin: &Arc<str>) -> Gauge {
        self.idle.get_or_create_owned(&PluginLabels {
            plugin: plugin.clone(),
        })
    }

    /// The gauge of the linear memory `plugin`'s live instances hold; each
    /// instance adds what it grows and takes it back when it is dropped.
    pub fn plugin_memory(&self, plugin: &Arc<str>) -> Gauge {
        self.memory.get_or_create_owned(&PluginLabels {
            plugin: plugin.clone(),
        })
    }

    pub fn generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "refused" },
            })
            .inc();
    }
}

/// One open connection in `wasmtp_sessions_active`.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The tenant label of a transaction: the one its recipients all belong to
/// (`None` standing for the listener's own chain), or `mixed`.
pub fn tenant_of_all<'a>(
    tenants: impl IntoIterator<Item = Option<&'a Arc<str>>>,
) -> Option<Arc<str>> {
    static MIXED: OnceLock<Arc<str>> = OnceLock::new();
    let mut tenants = tenants.into_iter();
    let first = tenants.next().flatten();
    if tenants.any(|t| t != first) {
        return Some(MIXED.get_or_init(|| "mixed".into()).clone());
    }
    first.cloned()
}

// ---- the endpoint ----------------------------------------------------------

/// The longest request head a scrape may send.
const MAX_REQUEST: usize = 8 << 10;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream)).await;
                });
            }
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One HTTP request, one response, then close.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            )
            .await;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = get().map(Metrics::encode).unwrap_or_default();
            let body = if method == "HEAD" {
                String::new()
            } else {
                body
            };
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "wasmtp serves /metrics only\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET /metrics\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_classes() {
        assert_eq!(Outcome::of(250), Outcome::Accepted);
        assert_eq!(Outcome::of(354), Outcome::Accepted);
        assert_eq!(Outcome::of(421), Outcome::Tempfailed);
        assert_eq!(Outcome::of(554), Outcome::Rejected);
    }

    #[test]
    fn tenant_of_a_transaction() {
        let (a, b): (Arc<str>, Arc<str>) = ("acme".into(), "globex".into());
        assert_eq!(tenant_of_all([None, None]), None);
        assert_eq!(tenant_of_all([Some(&a), Some(&a)]).as_deref(), Some("acme"));
        assert_eq!(tenant_of_all([Some(&a), None]).as_deref(), Some("mixed"));
        assert_eq!(
            tenant_of_all([Some(&a), Some(&b)]).as_deref(),
            Some("mixed")
        );
    }

    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        let plugin: Arc<str> = "acme/inbox".into();
        m.hook_call(&plugin, Hook::Rcpt, Duration::from_micros(30));
        m.hook_failure(&plugin, Hook::Data, "out-of-memory");
        m.received(&"in".into(), None, 42);
        m.plugin_memory(&plugin).inc_by(1 << 20);
        let text = m.encode();
        assert!(
            text.contains("wasmtp_plugin_calls_total{plugin=\"acme/inbox\",hook=\"rcpt\"} 1"),
            "{text}"
        );
        assert!(text.contains("wasmtp_plugin_call_duration_seconds_bucket{le=\"4e-5\",plugin=\"acme/inbox\",hook=\"rcpt\"} 1")
            || text.contains("wasmtp_plugin_call_duration_seconds_count{plugin=\"acme/inbox\",hook=\"rcpt\"} 1"), "{text}");
        assert!(text.contains("wasmtp_plugin_failures_total{plugin=\"acme/inbox\",hook=\"data\",kind=\"out-of-memory\"} 1"), "{text}");
        assert!(
            text.contains("wasmtp_received_bytes_total{listener=\"in\",tenant=\"\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("wasmtp_plugin_memory_bytes{plugin=\"acme/inbox\"} 1048576"),
            "{text}"
        );
        assert!(text.contains("wasmtp_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
