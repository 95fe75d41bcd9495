//! The TOML config: which listeners exist and which plugin, with which
//! arguments, grants and limits, serves each.
//!
//! ```toml
//! [server]
//! hostname = "mx.example.com"
//!
//! [[listener]]
//! name = "inbound"
//! address = "0.0.0.0:25"
//! plugin = "inbox"
//!
//! [plugin.inbox]
//! component = "mailbox"            # a built-in name, or a path to a .wasm component
//! args = ["/var/mail/inbox"]
//! ```
//!
//! Every error names the file, the key and the problem in one sentence.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capability::dns::{DEFAULT_BUDGET, DnsGrant, DnsSettings, RecordType, ResolverSettings};
use crate::capability::http::{HttpGrant, HttpSettings};
use crate::capability::mail_auth::MailAuthSettings;
use crate::plugin::host::{DirGrant, Grants};
use crate::plugin::loaded::{FailurePolicy, Limits, Reuse, Source};
use crate::plugin::runtime::RuntimeSettings;
use crate::plugin::{PluginSpec, builtin};
use crate::smtp::session::{AuthSettings, Mechanism, Protocol, SessionLimits};
use crate::smtp::spool::SpoolSettings;
use crate::store::{BackendSettings, StoreSettings};
use crate::tls::Tls;

/// aiosmtpd's default message size limit (`DATA_SIZE_DEFAULT`, 32 MiB).
pub const DEFAULT_SIZE: u64 = 1 << 25;
/// aiosmtpd's default idle timeout.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;
/// aiosmtpd's default address.
pub const DEFAULT_ADDRESS: &str = "localhost:8025";

/// A config problem: where and what.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `None` for the command line.
    pub file: Option<PathBuf>,
    /// Line and column in the file, when known.
    pub position: Option<(usize, usize)>,
    /// The key, as a TOML path: `listener[0].size`. Empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => write!(f, "command line")?,
        }
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

// ---- the file as written -------------------------------------------------

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[server]`: settings of the whole process.
    #[serde(default)]
    pub server: ServerSection,
    /// `[[listener]]`: one table per address to serve.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerSection>,
    /// `[plugin.NAME]`: plugins, by the name listeners use.
    #[serde(default, rename = "plugin")]
    pub plugins: BTreeMap<String, PluginSection>,
    /// `[tenant.NAME]`: named chains with their own limits and domains.
    #[serde(default, rename = "tenant")]
    pub tenants: BTreeMap<String, TenantSection>,
    /// `[dns]`: the server's resolver, shared by mail authentication and
    /// the plugins granted DNS.
    #[serde(default)]
    pub dns: DnsSection,
    /// `[auth]`: mail authentication (SPF, DKIM, DMARC, ARC, iprev).
    #[serde(default)]
    pub auth: AuthSection,
    /// `[http]`: how plugins granted `http` make their requests.
    #[serde(default)]
    pub http: HttpSection,
    /// `[store]`: where state that outlives a session is kept (key-value
    /// store, queue).
    #[serde(default)]
    pub store: StoreSection,
}

/// `[store]`: the engine behind the `kv` capability and the queue
/// (DESIGN.md, decision 13). SQLite in a state directory by default;
/// PostgreSQL when several nodes share state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `backend = "sqlite"` (default: files in `path`, nothing to install)
    /// or `"postgres"` (a server at `url`, shared by every node).
    pub backend: Option<StoreBackend>,
    /// `path = "/var/lib/wasmtp"`: SQLite's state directory (relative to
    /// this file), created if missing; default `/var/lib/wasmtp`.
    pub path: Option<PathBuf>,
    /// `url = "postgresql://wasmtp@db.example/wasmtp"` (or `host=… user=…
    /// dbname=…`): the PostgreSQL server, for `backend = "postgres"`.
    pub url: Option<String>,
    /// `pool_size = 16`: PostgreSQL connections per pool (one pool for the
    /// key-value store, one for the queue); default 16.
    pub pool_size: Option<usize>,
    /// `ttl_cap = 2592000`: the longest TTL, in seconds, a plugin may give a
    /// key; default 30 days.
    pub ttl_cap: Option<f64>,
    /// `queue_attempts = 10`: deliveries of a queued message a consumer may
    /// attempt before it is dead-lettered; default 10.
    pub queue_attempts: Option<u32>,
    /// `queue_backoff = 60`: seconds before a released message is offered
    /// again, doubled at each attempt (at most 6 hours); default 60.
    pub queue_backoff: Option<f64>,
    /// `group_commit = true`: concurrent enqueues share one commit (one
    /// fsync); default true. Off only to measure what it saves.
    pub group_commit: Option<bool>,
    /// `sweep_interval = 60`: seconds between deletions of expired keys;
    /// default 60.
    pub sweep_interval: Option<f64>,
}

/// `backend = "sqlite"` or `"postgres"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sqlite,
    Postgres,
}

/// `[dns]`. One resolver and one cache for the whole server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// `nameservers = ["127.0.0.1:53", "[::1]:53"]`: where to send queries
    /// (`IP` or `IP:PORT`, port 53 by default); default: the nameservers of
    /// `/etc/resolv.conf`.
    pub nameservers: Option<Vec<String>>,
    /// `timeout = 5`: seconds one attempt waits for an answer.
    pub timeout: Option<f64>,
    /// `attempts = 2`: tries per query and nameserver.
    pub attempts: Option<usize>,
    /// `cache_size = 8192`: records each resolver's cache keeps.
    pub cache_size: Option<u64>,
    /// `[dns.resolver.NAME]`: more resolvers, by name, for block lists
    /// served elsewhere (a local rbldnsd, say); a plugin's DNS grant names
    /// the one it uses.
    #[serde(default, rename = "resolver")]
    pub resolvers: BTreeMap<String, ResolverSection>,
}

/// `[dns.resolver.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSection {
    /// `nameservers = ["127.0.0.1:5353"]`: required.
    pub nameservers: Vec<String>,
    /// `timeout = 2`: seconds per attempt; default `[dns] timeout`.
    pub timeout: Option<f64>,
    /// `attempts = 1`: default `[dns] attempts`.
    pub attempts: Option<usize>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `authserv_id = "mx.example.com"`: the name `Authentication-Results`
    /// fields carry (RFC 8601 §2.5); default: the listener's host name.
    pub authserv_id: Option<String>,
    /// `dkim_max_size = 26214400`: bytes; a larger message's signatures are
    /// not verified (reported `dkim=none` with the reason). Default 25 MiB.
    pub dkim_max_size: Option<u64>,
    /// `timeout = 20`: seconds one part of the verification (SPF, DKIM…)
    /// may take, at most; a hook's own deadline can cut it shorter.
    pub timeout: Option<f64>,
}

/// `[http]`: the requests of plugins granted `http` (`wasi:http`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `connect_timeout = 10`: seconds a connection (lookup, TCP, TLS) may
    /// take; the hook's deadline can cut it shorter.
    pub connect_timeout: Option<f64>,
    /// `timeout = 30`: seconds a whole request may take, the response body
    /// included; the hook's deadline can cut it shorter.
    pub timeout: Option<f64>,
    /// `max_response_bytes = 1048576`: the longest response body a plugin
    /// is given; a longer one ends in an error. Default 1 MiB.
    pub max_response_bytes: Option<u64>,
    /// `ca_file = "/etc/wasmtp/internal-ca.pem"`: more trusted roots (PEM,
    /// relative to this file), besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl HttpSection {
    fn check(&self, base: &Path) -> CheckResult<HttpSettings> {
        let mut settings = HttpSettings::default();
        if let Some(secs) = self.connect_timeout {
            settings.connect_timeout =
                check_seconds(secs).map_err(|m| ("http.connect_timeout".to_owned(), m))?;
        }
        if let Some(secs) = self.timeout {
            settings.timeout = check_seconds(secs).map_err(|m| ("http.timeout".to_owned(), m))?;
        }
        if let Some(n) = self.max_response_bytes {
            settings.max_response_bytes = at_least_one(n, "http.max_response_bytes")?;
        }
        if let Some(file) = &self.ca_file {
            settings.ca_file = Some(absolute(&base.join(file)));
            settings
                .extra_roots()
                .map_err(|m| ("http.ca_file".to_owned(), m))?;
        }
        Ok(settings)
    }
}

/// A tenant: its own chain of plugins (its own instances, limits and
/// failures), serving the recipients of its domains on listeners that list
/// it in `tenants`, or whole sessions on a listener with `tenant = "NAME"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// `plugins = ["acme-policy", "acme-inbox"]`: the tenant's chain.
    pub plugins: Vec<String>,
    /// `domains = ["acme.example"]`: recipients `user@DOMAIN` are the tenant's.
    #[serde(default)]
    pub domains: Vec<String>,
    /// `memory_limit_mib = 32`: overrides the plugins' own limit, for this tenant.
    pub memory_limit_mib: Option<u32>,
    /// `hook_timeout = 5`: overrides the plugins' own deadline, for this tenant.
    pub hook_timeout: Option<f64>,
    /// `max_concurrent_calls = 1`: each of the tenant's plugins runs at most
    /// this many hook calls at once, so a tenant whose plugin spins holds at
    /// most that many CPUs. Default: half the CPUs (at least 1).
    pub max_concurrent_calls: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `hostname = "mx.example.com"`: the name in greetings; default: this
    /// machine's host name.
    pub hostname: Option<String>,
    /// `max_plugin_instances = 1000`: plugin instances alive at once, across
    /// all sessions (one per session that reached a plugin hook).
    pub max_plugin_instances: Option<u32>,
    /// `compile_cache = true`: keep compiled plugins on disk so a restart
    /// does not compile them again.
    pub compile_cache: Option<bool>,
    /// `cache_dir = "/var/cache/wasmtp"`: where compiled plugins are kept;
    /// default: wasmtime's (`~/.cache/wasmtime`).
    pub cache_dir: Option<PathBuf>,
    /// `fuel = true`: count the instructions plugins execute, so a plugin's
    /// `fuel` limit applies (a deterministic CPU budget; costs some speed).
    pub fuel: Option<bool>,
    /// `watch = true`: reload when the config file or a plugin file changes,
    /// as on SIGHUP.
    pub watch: Option<bool>,
    /// `metrics = "127.0.0.1:9090"`: serve Prometheus metrics at
    /// `http://ADDRESS/metrics`; off by default.
    pub metrics: Option<String>,
    /// `log_format = "json"`: one JSON object per log line; default `text`.
    /// `--log-format` overrides it.
    pub log_format: Option<crate::logging::LogFormat>,
    /// `shutdown_grace = 30`: seconds that sessions in progress get to
    /// finish (a message being received to be received and answered) after
    /// SIGTERM or SIGINT; then the rest are closed.
    pub shutdown_grace: Option<f64>,
    /// `spool_dir = "/var/spool/wasmtp"`: where a message larger than
    /// `spool_threshold` waits (in an unlinked file) while the plugins read
    /// it; default: `$TMPDIR` or `/tmp`.
    pub spool_dir: Option<PathBuf>,
    /// `spool_threshold = 1048576`: messages up to this many bytes stay in
    /// memory; larger ones go to `spool_dir`. Default 1 MiB.
    pub spool_threshold: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// `name = "inbound"`: in logs and in `session.listener`; default
    /// `listener-N`.
    pub name: Option<String>,
    /// `address = "0.0.0.0:25"`: `HOST:PORT` to listen on.
    pub address: String,
    /// `plugin = "inbox"`: a `[plugin.NAME]` table, or a built-in plugin name.
    /// Short for a chain of one: `plugins = ["inbox"]`.
    pub plugin: Option<String>,
    /// `plugins = ["policy", "inbox"]`: the chain, in order. Each hook goes
    /// to each plugin that exports it until one decides.
    pub plugins: Option<Vec<String>>,
    /// `tenant = "acme"`: the tenant's chain serves every session here.
    pub tenant: Option<String>,
    /// `tenants = ["acme", "globex"]`: recipients in a tenant's domains go
    /// to that tenant's chain; others to `plugins`, or are refused without it.
    pub tenants: Option<Vec<String>>,
    /// `hostname = "mx2.example.com"`: overrides `[server] hostname`.
    pub hostname: Option<String>,
    /// `size = 33554432`: the largest message in bytes; 0 for no limit.
    pub size: Option<u64>,
    /// `smtputf8 = true`: accept UTF-8 addresses (RFC 6531).
    pub smtputf8: Option<bool>,
    /// `timeout = 300`: seconds of client silence before the connection closes.
    pub timeout: Option<f64>,
    /// `protocol = "lmtp"`: speak LMTP (RFC 2033: LHLO, one reply per
    /// recipient after DATA) instead of SMTP.
    pub protocol: Option<ProtocolName>,
    /// `tls = { cert = "cert.pem", key = "key.pem" }`: offer STARTTLS with
    /// this certificate chain and key (PEM; relative to this file).
    pub tls: Option<TlsSection>,
    /// `implicit_tls = true`: TLS from the first byte (SMTPS, port 465);
    /// needs `tls`.
    pub implicit_tls: Option<bool>,
    /// `require_starttls = true`: before STARTTLS only NOOP, EHLO, STARTTLS
    /// and QUIT are served (530 otherwise); default: true when `tls` is set
    /// (as aiosmtpd's CLI). A public MX must set it false (RFC 3207 §4).
    pub require_starttls: Option<bool>,
    /// `auth_required = true`: MAIL, RCPT, DATA, VRFY and HELP need AUTH first.
    pub auth_required: Option<bool>,
    /// `auth_require_tls = false`: allow AUTH without TLS (default true).
    pub auth_require_tls: Option<bool>,
    /// `auth_exclude_mechanisms = ["LOGIN"]`: SASL mechanisms not offered.
    pub auth_exclude_mechanisms: Option<Vec<String>>,
    /// `proxy_protocol = true`: every connection starts with a PROXY
    /// protocol header (v1 or v2) from a trusted proxy.
    pub proxy_protocol: Option<bool>,
    /// `proxy_protocol_timeout = 10`: seconds to wait for that header.
    pub proxy_protocol_timeout: Option<f64>,
    /// `max_connections = 1000`: connections served at once; more get `421`.
    pub max_connections: Option<usize>,
    /// `max_connections_per_ip = 20`: the same, per client address.
    pub max_connections_per_ip: Option<usize>,
    /// `max_recipients = 1000`: recipients per transaction (`452 4.5.3` past it).
    pub max_recipients: Option<usize>,
    /// `data_timeout = 600`: seconds a whole DATA (or BDAT) transfer may take.
    pub data_timeout: Option<f64>,
    /// `command_call_limit = 100`: how often each command may be sent in one
    /// session (aiosmtpd's `command_call_limit`; `421 4.7.0` past it). Default: none.
    pub command_call_limit: Option<u32>,
    /// `max_unknown_commands = 5`: unrecognised commands before `502` and close.
    pub max_unknown_commands: Option<u32>,
    /// `enhanced_status_codes = true`: advertise ENHANCEDSTATUSCODES (RFC
    /// 2034) and give every reply after EHLO an enhanced code. Default off,
    /// so that replies are aiosmtpd's texts exactly.
    pub enhanced_status_codes: Option<bool>,
}

/// `instances = "per-session"` or `"reuse"`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InstancesName {
    #[default]
    PerSession,
    Reuse,
}

/// `protocol = "smtp"` or `"lmtp"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    Smtp,
    Lmtp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// `cert = "cert.pem"`: the certificate chain, PEM.
    pub cert: PathBuf,
    /// `key = "key.pem"`: its private key, PEM.
    pub key: PathBuf,
    /// `handshake_timeout = 30`: seconds the client gets to finish the handshake.
    pub handshake_timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// `component = "mailbox"` or `component = "plugins/policy.wasm"`
    /// (relative to the config file).
    pub component: String,
    /// `args = ["/var/mail/inbox"]`: the plugin's arguments (aiosmtpd's `from_cli`).
    #[serde(default)]
    pub args: Vec<String>,
    /// `memory_limit_mib = 64`: the most linear memory one instance may use.
    pub memory_limit_mib: Option<u32>,
    /// `hook_timeout = 30`: seconds one hook call may run.
    pub hook_timeout: Option<f64>,
    /// `fuel = 100000000`: instructions one hook call may execute (needs
    /// `[server] fuel = true`).
    pub fuel: Option<u64>,
    /// `max_concurrent_calls = 2`: this plugin's hook calls running at once,
    /// across all sessions; default: no limit.
    pub max_concurrent_calls: Option<usize>,
    /// `on_failure = "tempfail"`: what a trap, timeout, out-of-memory or
    /// invalid reply costs the session: `tempfail` (451), `reject` (554),
    /// `skip` (as if the plugin had no opinion) or `disconnect` (421).
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// `instances = "per-session"` (the default: a fresh instance for every
    /// session) or `"reuse"` (one instance serves successive sessions of a
    /// listener or tenant, never two at once; the plugin must export
    /// `wasmtp:smtp/reuse`).
    #[serde(default)]
    pub instances: InstancesName,
    /// `max_sessions_per_instance = 1000`: with `"reuse"`, sessions one
    /// instance serves before a fresh one replaces it.
    pub max_sessions_per_instance: Option<u32>,
    /// `max_idle_instances = 64`: with `"reuse"`, idle instances kept for the
    /// next sessions, per listener or tenant.
    pub max_idle_instances: Option<usize>,
    /// `[plugin.NAME.grants]`: what the plugin may touch beyond its own memory.
    #[serde(default)]
    pub grants: GrantsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSection {
    /// `stdout = true`: the plugin's stdout goes to the server's.
    #[serde(default)]
    pub stdout: bool,
    /// `stderr = true`: likewise for stderr.
    #[serde(default)]
    pub stderr: bool,
    /// `env = { TZ = "UTC" }`: environment variables the plugin sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `dirs = [{ path = "/var/mail", writable = true }]`.
    #[serde(default)]
    pub dirs: Vec<DirSection>,
    /// `network = ["relay.example.com:25"]`: outbound TCP connections the
    /// plugin may open, by host:port (host names are resolved at load).
    #[serde(default)]
    pub network: Vec<String>,
    /// `dns = { suffixes = ["zen.example"], types = ["a", "txt"], budget = 10 }`:
    /// the `dns` import, for these names and types only.
    pub dns: Option<DnsGrantSection>,
    /// `mail_auth = true`: the `mail-auth` import (the transaction's SPF,
    /// DKIM, DMARC, ARC and iprev results, computed by the host).
    #[serde(default)]
    pub mail_auth: bool,
    /// `kv = true`: the plugin may import `wasmtp:smtp/kv`, with a namespace
    /// of its own; `kv = ["greylist"]`: and these shared namespaces too,
    /// which every plugin granted the same name shares.
    pub kv: Option<KvGrantSection>,
    /// `queue = true`: the plugin may import `wasmtp:smtp/queue` (enqueue
    /// the message it is given into the durable queue).
    #[serde(default)]
    pub queue: bool,
    /// `notes = true`: the plugin may import `wasmtp:smtp/notes` (the
    /// transaction's notes, shared with the other plugins of the chain).
    #[serde(default)]
    pub notes: bool,
    /// `headers = true`: the plugin may import `wasmtp:smtp/headers` (add,
    /// remove and rename header fields of the message).
    #[serde(default)]
    pub headers: bool,
    /// `http = ["https://app.example.com/inbound/"]`: the plugin may import
    /// `wasi:http/outgoing-handler` and request URLs under these prefixes
    /// (same scheme, host and port; the path under the prefix's).
    pub http: Option<Vec<String>>,
    /// `envelope = true`: the plugin may import `wasmtp:smtp/envelope`
    /// (replace the sender, add and remove recipients).
    #[serde(default)]
    pub envelope: bool,
}

/// `kv = true | false | ["NAME", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "`true`, `false` or a list of namespace names")]
pub enum KvGrantSection {
    Own(bool),
    Namespaces(Vec<String>),
}

/// `grants.dns`: what a plugin may look up, so that DNS is not a channel out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsGrantSection {
    /// `suffixes = ["zen.example", "in-addr.arpa"]`: names the plugin may
    /// query, each with everything under it; `["."]` for every name.
    pub suffixes: Vec<String>,
    /// `types = ["a", "txt"]`: of `a`, `aaaa`, `mx`, `txt`, `ptr`; default all.
    pub types: Option<Vec<String>>,
    /// `resolver = "lists"`: a `[dns.resolver.NAME]`; default the server's.
    pub resolver: Option<String>,
    /// `budget = 10`: queries per hook call (a `dnsbl` counts 2).
    pub budget: Option<u32>,
}

impl DnsGrantSection {
    fn grant(&self) -> CheckResult<DnsGrant> {
        if self.suffixes.is_empty() {
            return Err((
                ".grants.dns.suffixes".into(),
                "is empty; name the domains the plugin may query (\".\" for all)".into(),
            ));
        }
        let mut suffixes = Vec::new();
        for (i, suffix) in self.suffixes.iter().enumerate() {
            let s = suffix.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = s.is_empty()
                || (!s.starts_with('.')
                    && !s.contains("..")
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
            if !valid || (s.is_empty() && suffix.trim() != ".") {
                return Err((
                    format!(".grants.dns.suffixes[{i}]"),
                    format!("`{suffix}` is not a domain name (\".\" for all names)"),
                ));
            }
            suffixes.push(s);
        }
        let types = match &self.types {
            None => RecordType::ALL.to_vec(),
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    RecordType::parse(name).ok_or_else(|| {
                        (
                            format!(".grants.dns.types[{i}]"),
                            format!("`{name}` is not one of a, aaaa, mx, txt, ptr"),
                        )
                    })
                })
                .collect::<CheckResult<_>>()?,
        };
        let budget = self.budget.unwrap_or(DEFAULT_BUDGET);
        if budget == 0 {
            return Err((".grants.dns.budget".into(), "must be at least 1".into()));
        }
        Ok(DnsGrant {
            suffixes,
            types,
            resolver: self.resolver.clone(),
            budget,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSection {
    /// The directory on the host (relative to the config file).
    pub path: PathBuf,
    /// Where the plugin sees it; default: the same absolute path.
    pub guest: Option<String>,
    /// Whether the plugin may create, change and delete files in it.
    #[serde(default)]
    pub writable: bool,
}

// ---- the config as the server uses it -------------------------------------

/// A checked config.
#[derive(Debug)]
pub struct Config {
    pub file: Option<PathBuf>,
    pub runtime: RuntimeSettings,
    /// Reload when the config file or a plugin file changes.
    pub watch: bool,
    pub listeners: Vec<ListenerConfig>,
    /// Where to serve Prometheus metrics (`HOST:PORT`), if anywhere.
    pub metrics: Option<String>,
    /// How log lines are written, if the file says.
    pub log_format: Option<crate::logging::LogFormat>,
    /// How long sessions get to finish at shutdown, if the file says.
    pub shutdown_grace: Option<Duration>,
    /// `[store]`: opened only when something uses it.
    pub store: StoreSettings,
    /// `[dns]`.
    pub dns: DnsSettings,
    /// `[auth]`.
    pub mail_auth: MailAuthSettings,
    /// `[http]`.
    pub http: HttpSettings,
}

#[derive(Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub address: String,
    /// The tenant serving every session (`tenant = "NAME"`), if one does.
    pub tenant: Option<String>,
    pub hostname: String,
    pub size: Option<usize>,
    pub smtputf8: bool,
    pub timeout: Duration,
    /// The chain, in order; empty only when `tenants` is not.
    pub plugins: Vec<PluginSpec>,
    /// Tenants taking over the recipients of their domains.
    pub tenants: Vec<TenantConfig>,
    /// TLS, AUTH, LMTP, PROXY protocol and limits.
    pub options: ListenerOptions,
}

#[derive(Debug)]
pub struct TenantConfig {
    pub name: String,
    pub domains: Vec<String>,
    pub plugins: Vec<PluginSpec>,
}

/// The protocol options of a listener beyond the basic ones.
#[derive(Clone, Debug, Default)]
pub struct ListenerOptions {
    pub protocol: Protocol,
    pub tls: Option<Tls>,
    pub implicit_tls: bool,
    pub require_starttls: bool,
    pub auth: AuthSettings,
    pub proxy_protocol: Option<Duration>,
    pub limits: SessionLimits,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub enhanced_status_codes: bool,
    /// From `[server]`: the same for every listener.
    pub spool: SpoolSettings,
}

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT`
    Tcp(String),
    /// `unix:/path/to/socket`
    Unix(PathBuf),
}

impl Address {
    pub fn parse(address: &str) -> Address {
        match address.strip_prefix("unix:") {
            Some(path) => Address::Unix(PathBuf::from(path)),
            None => Address::Tcp(address.to_owned()),
        }
    }
}

impl Config {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            position: None,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: Some(path.to_owned()),
            position: None,
            key,
            message,
        };
        let located = |key: String, e: &toml::de::Error| ConfigError {
            file: Some(path.to_owned()),
            position: e.span().map(|span| line_column(text, span.start)),
            key,
            message: e.message().trim().to_owned(),
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| located(String::new(), &e))?;
        let file: File = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            located(key, e.inner())
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        file.check(base)
            .map_err(|(key, message)| err(key, message))
            .map(|mut config| {
                config.file = Some(path.to_owned());
                config
            })
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

type CheckResult<T> = Result<T, (String, String)>;

impl File {
    /// Check what serde can't and resolve names and paths. `base` is the
    /// directory relative paths are taken from.
    pub fn check(self, base: &Path) -> CheckResult<Config> {
        let hostname = match self.server.hostname {
            Some(h) => check_hostname(&h).map_err(|m| ("server.hostname".to_owned(), m))?,
            None => system_hostname(),
        };
        let runtime = RuntimeSettings {
            max_instances: match self.server.max_plugin_instances {
                Some(0) => {
                    return Err((
                        "server.max_plugin_instances".into(),
                        "must be at least 1".into(),
                    ));
                }
                Some(n) => n,
                None => RuntimeSettings::default().max_instances,
            },
            compile_cache: self.server.compile_cache.unwrap_or(true),
            cache_dir: self
                .server
                .cache_dir
                .as_ref()
                .map(|d| absolute(&base.join(d))),
            fuel: self.server.fuel.unwrap_or(false),
        };
        let spool = SpoolSettings {
            dir: match &self.server.spool_dir {
                Some(dir) => absolute(&base.join(dir)),
                None => SpoolSettings::default().dir,
            },
            threshold: match self.server.spool_threshold {
                Some(bytes) => usize::try_from(bytes)
                    .map_err(|_| ("server.spool_threshold".to_owned(), "too large".to_owned()))?,
                None => SpoolSettings::default().threshold,
            },
        };
        spool
            .check()
            .map_err(|m| ("server.spool_dir".to_owned(), m))?;
        if self.listeners.is_empty() {
            return Err((
                String::new(),
                "no [[listener]] is defined; add one with an `address` and a `plugin`".into(),
            ));
        }
        let mut plugins = BTreeMap::new();
        for (name, section) in &self.plugins {
            let key = format!("plugin.{name}");
            plugins.insert(
                name.clone(),
                section
                    .spec(name, base)
                    .map_err(|(k, m)| (format!("{key}{k}"), m))?,
            );
        }
        let mut listeners = Vec::new();
        for (i, l) in self.listeners.into_iter().enumerate() {
            let key = |field: &str| format!("listener[{i}].{field}");
            let mut options = l.options(base, &key)?;
            options.spool = spool.clone();
            let name = l.name.unwrap_or_else(|| format!("listener-{}", i + 1));
            if listeners
                .iter()
                .any(|other: &ListenerConfig| other.name == name)
            {
                return Err((
                    key("name"),
                    format!("another listener is already named `{name}`"),
                ));
            }
            check_address(&l.address).map_err(|m| (key("address"), m))?;
            let resolve_chain = |names: &[String], key: &str| -> CheckResult<Vec<PluginSpec>> {
                names
                    .iter()
                    .map(|name| match plugins.get(name) {
                        Some(spec) => Ok(PluginSpec::clone(spec)),
                        None if builtin::find(name).is_some() => {
                            builtin_spec(name, Vec::new(), base).map_err(|m| (key.to_owned(), m))
                        }
                        None => {
                            let known: Vec<&str> = plugins
                                .keys()
                                .map(String::as_str)
                                .chain(builtin::BUILTINS.iter().map(|b| b.name))
                                .collect();
                            Err((
                                key.to_owned(),
                                format!(
                                    "no plugin is named `{name}` (known: {})",
                                    known.join(", ")
                                ),
                            ))
                        }
                    })
                    .collect()
            };
            let tenant_config = |name: &String, key: &str| -> CheckResult<TenantConfig> {
                let section = self.tenants.get(name).ok_or_else(|| {
                    let known: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
                    (
                        key.to_owned(),
                        format!(
                            "no tenant is named `{name}` (known: {})",
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                })?;
                let tkey = format!("tenant.{name}");
                if section.plugins.is_empty() {
                    return Err((
                        format!("{tkey}.plugins"),
                        "the chain is empty; name at least one plugin".into(),
                    ));
                }
                let mut specs = resolve_chain(&section.plugins, &format!("{tkey}.plugins"))?;
                for spec in &mut specs {
                    // The tenant's own copy: its own limits, failures and logs.
                    spec.name = format!("{name}/{}", spec.name);
                    if let Some(mib) = section.memory_limit_mib {
                        if mib == 0 {
                            return Err((
                                format!("{tkey}.memory_limit_mib"),
                                "must be at least 1".into(),
                            ));
                        }
                        spec.limits.memory = (mib as usize) << 20;
                    }
                    if let Some(secs) = section.hook_timeout {
                        spec.limits.hook_timeout =
                            check_seconds(secs).map_err(|m| (format!("{tkey}.hook_timeout"), m))?;
                    }
                    spec.limits.max_concurrent_calls = match section.max_concurrent_calls {
                        Some(0) => {
                            return Err((
                                format!("{tkey}.max_concurrent_calls"),
                                "must be at least 1".into(),
                            ));
                        }
                        Some(n) => Some(n),
                        None => Some(
                            spec.limits
                                .max_concurrent_calls
                                .unwrap_or_else(default_tenant_concurrency),
                        ),
                    };
                }
                let domains = section
                    .domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect();
                Ok(TenantConfig {
                    name: name.clone(),
                    domains,
                    plugins: specs,
                })
            };
            let session_tenant = l.tenant.clone();
            let (chain, tenants) = match (l.plugin, l.plugins, l.tenant, l.tenants) {
                (Some(one), None, None, tenants) => (resolve_chain(&[one], &key("plugin"))?, tenants),
                (None, Some(list), None, tenants) if !list.is_empty() => (resolve_chain(&list, &key("plugins"))?, tenants),
                (None, Some(_), None, _) => return Err((key("plugins"), "the chain is empty; name at least one plugin".into())),
                (None, None, Some(tenant), None) => {
                    let t = tenant_config(&tenant, &key("tenant"))?;
                    (t.plugins, None)
                }
                (None, None, None, Some(tenants)) if !tenants.is_empty() => (Vec::new(), Some(tenants)),
                (None, None, None, _) => return Err((key("plugin"), "missing: which plugin serves this listener (`plugin = \"NAME\"`, `plugins = [...]`, `tenant` or `tenants`)".into())),
                (Some(_), Some(_), _, _) => return Err((key("plugins"), "give either `plugin` or `plugins`, not both".into())),
                (_, _, Some(_), _) => return Err((key("tenant"), "a listener served by one tenant takes no other `plugin`, `plugins` or `tenants`".into())),
            };
            // LMTP answers per recipient from the listener's chain; splitting
            // one message between tenants there would accept recipients no
            // tenant plugin ever saw.
            if options.protocol == Protocol::Lmtp && tenants.as_ref().is_some_and(|t| !t.is_empty())
            {
                return Err((key("tenants"), "an LMTP listener can't split messages between tenants; serve it with one tenant (`tenant = \"NAME\"`)".into()));
            }
            let mut tenant_configs: Vec<TenantConfig> = Vec::new();
            for name in tenants.unwrap_or_default() {
                let t = tenant_config(&name, &key("tenants"))?;
                if let Some(domain) = t
                    .domains
                    .iter()
                    .find(|d| tenant_configs.iter().any(|o| o.domains.contains(d)))
                {
                    return Err((
                        key("tenants"),
                        format!("the domain `{domain}` belongs to two of this listener's tenants"),
                    ));
                }
                tenant_configs.push(t);
            }
            let hostname = match l.hostname {
                Some(h) => check_hostname(&h).map_err(|m| (key("hostname"), m))?,
                None => hostname.clone(),
            };
            let timeout = check_seconds(l.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))
                .map_err(|m| (key("timeout"), m))?;
            listeners.push(ListenerConfig {
                name,
                address: l.address,
                tenant: session_tenant,
                hostname,
                size: size_limit(l.size.unwrap_or(DEFAULT_SIZE)),
                smtputf8: l.smtputf8.unwrap_or(false),
                timeout,
                plugins: chain,
                tenants: tenant_configs,
                options,
            });
        }
        for (name, p) in &self.plugins {
            if p.fuel.is_some() && !runtime.fuel {
                return Err((
                    format!("plugin.{name}.fuel"),
                    "needs `fuel = true` in [server]: the server counts no fuel otherwise".into(),
                ));
            }
        }
        if let Some(address) = &self.server.metrics {
            check_tcp_address(address).map_err(|m| ("server.metrics".to_owned(), m))?;
        }
        let shutdown_grace = match self.server.shutdown_grace {
            Some(0.0) => Some(Duration::ZERO),
            Some(secs) => {
                Some(check_seconds(secs).map_err(|m| ("server.shutdown_grace".to_owned(), m))?)
            }
            None => None,
        };
        let store = self
            .store
            .check(base)
            .map_err(|(k, m)| (format!("store.{k}"), m))?;
        let dns = self.dns.check()?;
        let mail_auth = self.auth.check()?;
        let http = self.http.check(base)?;
        for (name, spec) in &plugins {
            if let Some(resolver) = spec.grants.dns.as_ref().and_then(|g| g.resolver.as_ref())
                && !dns.resolvers.contains_key(resolver)
            {
                return Err((
                    format!("plugin.{name}.grants.dns.resolver"),
                    format!("no [dns.resolver.{resolver}] is defined"),
                ));
            }
        }
        Ok(Config {
            dns,
            mail_auth,
            http,
            file: None,
            runtime,
            watch: self.server.watch.unwrap_or(false),
            listeners,
            metrics: self.server.metrics,
            log_format: self.server.log_format,
            shutdown_grace,
            store,
        })
    }
}

impl StoreSection {
    /// The checked settings; an error names the key under `store.`.
    pub fn check(&self, base: &Path) -> CheckResult<StoreSettings> {
        let defaults = StoreSettings::default();
        let backend = match self.backend.unwrap_or(StoreBackend::Sqlite) {
            StoreBackend::Sqlite => {
                for (key, set) in [
                    ("url", self.url.is_some()),
                    ("pool_size", self.pool_size.is_some()),
                ] {
                    if set {
                        return Err((
                            key.into(),
                            "is for `backend = \"postgres\"`; SQLite takes `path`".into(),
                        ));
                    }
                }
                BackendSettings::Sqlite {
                    dir: match &self.path {
                        Some(path) if path.as_os_str().is_empty() => {
                            return Err((
                                "path".into(),
                                "is empty; give the state directory".into(),
                            ));
                        }
                        Some(path) => absolute(&base.join(path)),
                        None => PathBuf::from(crate::store::DEFAULT_STATE_DIR),
                    },
                }
            }
            StoreBackend::Postgres => {
                if self.path.is_some() {
                    return Err((
                        "path".into(),
                        "is for `backend = \"sqlite\"`; PostgreSQL takes `url`".into(),
                    ));
                }
                let Some(url) = &self.url else {
                    return Err(("url".into(), "missing: `backend = \"postgres\"` needs the server's connection string (`url = \"postgresql://user@host/db\"`)".into()));
                };
                crate::store::postgres::parse_url(url).map_err(|m| ("url".to_owned(), m))?;
                let pool_size = match self.pool_size {
                    Some(0) => return Err(("pool_size".into(), "must be at least 1".into())),
                    Some(n) => n,
                    None => 16,
                };
                BackendSettings::Postgres {
                    url: url.clone(),
                    pool_size,
                }
            }
        };
        let seconds = |value: Option<f64>, key: &str, default: Duration| match value {
            Some(secs) => check_seconds(secs).map_err(|m| (key.to_owned(), m)),
            None => Ok(default),
        };
        Ok(StoreSettings {
            backend,
            ttl_cap: seconds(self.ttl_cap, "ttl_cap", defaults.ttl_cap)?,
            queue_attempts: match self.queue_attempts {
                Some(0) => return Err(("queue_attempts".into(), "must be at least 1".into())),
                Some(n) => n,
                None => defaults.queue_attempts,
            },
            queue_backoff: seconds(self.queue_backoff, "queue_backoff", defaults.queue_backoff)?,
            group_commit: self.group_commit.unwrap_or(defaults.group_commit),
            sweep_interval: seconds(
                self.sweep_interval,
                "sweep_interval",
                defaults.sweep_interval,
            )?,
        })
    }
}

impl ListenerSection {
    /// Check and resolve the protocol options; `key` names a field.
    fn options(&self, base: &Path, key: &dyn Fn(&str) -> String) -> CheckResult<ListenerOptions> {
        let mut options = ListenerOptions::default();
        if self.protocol == Some(ProtocolName::Lmtp) {
            options.protocol = Protocol::Lmtp;
        }
        if let Some(tls) = &self.tls {
            let (cert, key_file) = (base.join(&tls.cert), base.join(&tls.key));
            let config = crate::tls::server_config(&cert, &key_file)
                .map_err(|e| (key("tls"), e.to_string()))?;
            let handshake_timeout = match tls.handshake_timeout {
                Some(secs) => check_seconds(secs).map_err(|m| (key("tls.handshake_timeout"), m))?,
                None => crate::tls::DEFAULT_HANDSHAKE_TIMEOUT,
            };
            options.tls = Some(Tls {
                config,
                handshake_timeout,
            });
        }
        options.implicit_tls = self.implicit_tls.unwrap_or(false);
        if options.implicit_tls && options.tls.is_none() {
            return Err((
                key("implicit_tls"),
                "needs a certificate: add `tls = { cert = \"...\", key = \"...\" }`".into(),
            ));
        }
        options.require_starttls = self
            .require_starttls
            .unwrap_or(options.tls.is_some() && !options.implicit_tls);
        if options.require_starttls && options.tls.is_none() {
            return Err((
                key("require_starttls"),
                "needs a certificate: add `tls = { cert = \"...\", key = \"...\" }`".into(),
            ));
        }
        options.auth.required = self.auth_required.unwrap_or(false);
        options.auth.require_tls = self.auth_require_tls.unwrap_or(true);
        for name in self.auth_exclude_mechanisms.iter().flatten() {
            let Some(mechanism) = Mechanism::parse(name) else {
                let known: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
                return Err((
                    key("auth_exclude_mechanisms"),
                    format!(
                        "`{name}` is not a mechanism wasmtp offers ({})",
                        known.join(", ")
                    ),
                ));
            };
            options.auth.mechanisms.retain(|m| *m != mechanism);
        }
        if options.auth.required && options.auth.require_tls && options.tls.is_none() {
            return Err((
                key("auth_required"),
                "AUTH is required but needs TLS, and this listener has no `tls`".into(),
            ));
        }
        if self.proxy_protocol.unwrap_or(false) {
            options.proxy_protocol = Some(match self.proxy_protocol_timeout {
                Some(secs) => {
                    check_seconds(secs).map_err(|m| (key("proxy_protocol_timeout"), m))?
                }
                None => crate::proxy_protocol::DEFAULT_TIMEOUT,
            });
        } else if self.proxy_protocol_timeout.is_some() {
            return Err((
                key("proxy_protocol_timeout"),
                "is set but `proxy_protocol` is not".into(),
            ));
        }
        let positive = |value: Option<usize>, field: &str| match value {
            Some(0) => Err((key(field), "must be at least 1".to_owned())),
            other => Ok(other),
        };
        options.enhanced_status_codes = self.enhanced_status_codes.unwrap_or(false);
        options.max_connections = positive(self.max_connections, "max_connections")?;
        options.max_connections_per_ip =
            positive(self.max_connections_per_ip, "max_connections_per_ip")?;
        if let Some(n) = positive(self.max_recipients, "max_recipients")? {
            options.limits.max_recipients = n;
        }
        if let Some(secs) = self.data_timeout {
            options.limits.data_timeout =
                check_seconds(secs).map_err(|m| (key("data_timeout"), m))?;
        }
        if let Some(n) = self.command_call_limit {
            if n == 0 {
                return Err((key("command_call_limit"), "must be at least 1".into()));
            }
            options.limits.command_call_limit = Some(n);
        }
        if let Some(n) = self.max_unknown_commands {
            if n == 0 {
                return Err((key("max_unknown_commands"), "must be at least 1".into()));
            }
            options.limits.max_unknown_commands = n;
        }
        Ok(options)
    }
}

impl DnsSection {
    fn check(&self) -> CheckResult<DnsSettings> {
        let mut settings = DnsSettings::default();
        if let Some(list) = &self.nameservers {
            settings.default.nameservers = Some(nameservers(list, "dns.nameservers")?);
        }
        if let Some(secs) = self.timeout {
            settings.default.timeout =
                check_seconds(secs).map_err(|m| ("dns.timeout".to_owned(), m))?;
        }
        if let Some(n) = self.attempts {
            settings.default.attempts = at_least_one(n, "dns.attempts")?;
        }
        if let Some(n) = self.cache_size {
            settings.cache_size = at_least_one(n, "dns.cache_size")?;
        }
        for (name, r) in &self.resolvers {
            let key = |field: &str| format!("dns.resolver.{name}.{field}");
            if r.nameservers.is_empty() {
                return Err((key("nameservers"), "is empty; name at least one".into()));
            }
            let resolver = ResolverSettings {
                nameservers: Some(nameservers(&r.nameservers, &key("nameservers"))?),
                timeout: match r.timeout {
                    Some(secs) => check_seconds(secs).map_err(|m| (key("timeout"), m))?,
                    None => settings.default.timeout,
                },
                attempts: match r.attempts {
                    Some(n) => at_least_one(n, &key("attempts"))?,
                    None => settings.default.attempts,
                },
            };
            settings.resolvers.insert(name.clone(), resolver);
        }
        Ok(settings)
    }
}

impl AuthSection {
    fn check(&self) -> CheckResult<MailAuthSettings> {
        let mut settings = MailAuthSettings::default();
        if let Some(id) = &self.authserv_id {
            settings.authserv_id =
                Some(check_hostname(id).map_err(|m| ("auth.authserv_id".to_owned(), m))?);
        }
        if let Some(n) = self.dkim_max_size {
            settings.dkim_max_size = at_least_one(n, "auth.dkim_max_size")?;
        }
        if let Some(secs) = self.timeout {
            settings.timeout = check_seconds(secs).map_err(|m| ("auth.timeout".to_owned(), m))?;
        }
        Ok(settings)
    }
}

/// `IP` or `IP:PORT` (`[v6]:PORT`), port 53 by default: nameservers are
/// addresses, never names (resolving them would need a resolver).
fn nameservers(list: &[String], key: &str) -> CheckResult<Vec<std::net::SocketAddr>> {
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    text.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    (
                        format!("{key}[{i}]"),
                        format!("`{text}` is not an IP address or IP:PORT"),
                    )
                })
        })
        .collect()
}

fn at_least_one<N: PartialEq + Default>(n: N, key: &str) -> CheckResult<N> {
    if n == N::default() {
        return Err((key.to_owned(), "must be at least 1".into()));
    }
    Ok(n)
}

impl PluginSection {
    /// `instances` and its two bounds; the bounds without `"reuse"` are
    /// a mistake worth naming.
    fn reuse(&self) -> CheckResult<Option<Reuse>> {
        let mut reuse = Reuse::default();
        if let Some(n) = self.max_sessions_per_instance {
            if n == 0 {
                return Err((
                    ".max_sessions_per_instance".into(),
                    "must be at least 1".into(),
                ));
            }
            reuse.max_sessions = n;
        }
        if let Some(n) = self.max_idle_instances {
            reuse.max_idle = n;
        }
        match self.instances {
            InstancesName::Reuse => Ok(Some(reuse)),
            InstancesName::PerSession => {
                let stray = [
                    (
                        self.max_sessions_per_instance.is_some(),
                        ".max_sessions_per_instance",
                    ),
                    (self.max_idle_instances.is_some(), ".max_idle_instances"),
                ];
                match stray.iter().find(|(set, _)| *set) {
                    Some((_, key)) => Err((
                        (*key).into(),
                        "applies only with `instances = \"reuse\"`".into(),
                    )),
                    None => Ok(None),
                }
            }
        }
    }

    fn spec(&self, name: &str, base: &Path) -> CheckResult<PluginSpec> {
        let mut spec = if builtin::find(&self.component).is_some() && !self.component.contains('/')
        {
            builtin_spec(&self.component, self.args.clone(), base)
                .map_err(|m| (".args".to_owned(), m))?
        } else {
            let path = base.join(&self.component);
            if !path.is_file() {
                let builtins: Vec<&str> = builtin::BUILTINS.iter().map(|b| b.name).collect();
                return Err((
                    ".component".into(),
                    format!(
                        "`{}` is neither a built-in plugin ({}) nor a file ({} does not exist)",
                        self.component,
                        builtins.join(", "),
                        path.display()
                    ),
                ));
            }
            PluginSpec {
                name: String::new(),
                source: Source::File(path),
                args: self.args.clone(),
                grants: Grants::default(),
                limits: Limits::default(),
                on_failure: FailurePolicy::default(),
                reuse: None,
            }
        };
        spec.name = name.to_owned();
        spec.on_failure = self.on_failure;
        spec.reuse = self.reuse()?;
        if let Some(mib) = self.memory_limit_mib {
            if mib == 0 {
                return Err((".memory_limit_mib".into(), "must be at least 1".into()));
            }
            spec.limits.memory = (mib as usize) << 20;
        }
        if let Some(secs) = self.hook_timeout {
            spec.limits.hook_timeout =
                check_seconds(secs).map_err(|m| (".hook_timeout".to_owned(), m))?;
        }
        spec.limits.fuel = self.fuel;
        if let Some(n) = self.max_concurrent_calls {
            if n == 0 {
                return Err((".max_concurrent_calls".into(), "must be at least 1".into()));
            }
            spec.limits.max_concurrent_calls = Some(n);
        }
        let g = &self.grants;
        spec.grants.stdout |= g.stdout;
        spec.grants.stderr |= g.stderr;
        spec.grants.notes |= g.notes;
        spec.grants.headers |= g.headers;
        spec.grants.envelope |= g.envelope;
        spec.grants
            .env
            .extend(g.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (i, dir) in g.dirs.iter().enumerate() {
            let host = absolute(&base.join(&dir.path));
            if !host.is_dir() {
                return Err((
                    format!(".grants.dirs[{i}].path"),
                    format!("{} is not a directory", host.display()),
                ));
            }
            let guest = dir
                .guest
                .clone()
                .unwrap_or_else(|| host.to_string_lossy().into_owned());
            spec.grants.dirs.push(DirGrant {
                host,
                guest,
                writable: dir.writable,
            });
        }
        match &g.kv {
            None | Some(KvGrantSection::Own(false)) => {}
            Some(KvGrantSection::Own(true)) => {
                spec.grants.kv = Some(crate::capability::kv::KvGrant::default());
            }
            Some(KvGrantSection::Namespaces(names)) => {
                for (i, name) in names.iter().enumerate() {
                    let ok = !name.is_empty()
                        && name.len() <= 64
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    if !ok {
                        return Err((
                            format!(".grants.kv[{i}]"),
                            format!(
                                "{name:?} is not a namespace name (1 to 64 of a-z, 0-9, `-`, `_`, `.`)"
                            ),
                        ));
                    }
                }
                spec.grants.kv = Some(crate::capability::kv::KvGrant {
                    namespaces: names.clone(),
                });
            }
        }
        spec.grants.queue |= g.queue;
        for (i, target) in g.network.iter().enumerate() {
            let addrs = resolve(target).map_err(|m| (format!(".grants.network[{i}]"), m))?;
            spec.grants.network.extend(addrs);
        }
        if let Some(dns) = &g.dns {
            spec.grants.dns = Some(std::sync::Arc::new(dns.grant()?));
        }
        spec.grants.mail_auth |= g.mail_auth;
        if let Some(urls) = &g.http {
            if urls.is_empty() {
                return Err((
                    ".grants.http".into(),
                    "is empty; name the URL prefixes the plugin may request".into(),
                ));
            }
            let mut grant = HttpGrant::parse(urls.iter().map(String::as_str))
                .map_err(|(i, m)| (format!(".grants.http[{i}]"), m))?;
            // A built-in's own grant (webhook's URL) stays.
            if let Some(own) = &spec.grants.http {
                grant.prefixes.extend(own.prefixes.iter().cloned());
                grant.urls.extend(own.urls.iter().cloned());
            }
            spec.grants.http = Some(std::sync::Arc::new(grant));
        }
        Ok(spec)
    }
}

/// A built-in plugin with the grants it needs to do its job: Debugging its
/// output streams, Mailbox its Maildir (created if missing, and passed to it
/// as an absolute path, which is also where the plugin sees it), Mailauth
/// and Dnsbl what they read and the header and notes they write.
pub fn builtin_spec(name: &str, mut args: Vec<String>, base: &Path) -> Result<PluginSpec, String> {
    let b = builtin::find(name).expect("caller checked the name");
    let mut grants = Grants::default();
    match b.name {
        "debugging" => {
            grants.stdout = true;
            grants.stderr = true;
        }
        // The relay, and nothing else, is reachable; a host name is resolved
        // here, as the sandbox allows the plugin no name lookups.
        "proxy" if args.len() == 2 => {
            let target = if args[0].contains(':') {
                format!("[{}]:{}", args[0].trim_matches(['[', ']']), args[1])
            } else {
                format!("{}:{}", args[0], args[1])
            };
            let addrs = resolve(&target)?;
            args[0] = addrs[0].ip().to_string();
            grants.network.push(addrs[0]);
        }
        // The durable queue, and nothing else.
        "queue" => grants.queue = true,
        // Their shared namespace of the key-value store, and nothing else:
        // every node (and every such plugin) counts in the same one.
        "greylist" | "ratelimit" => {
            grants.kv = Some(crate::capability::kv::KvGrant {
                namespaces: vec![b.name.to_owned()],
            });
        }
        // Its URL (exactly: a redirect elsewhere is refused), the
        // transaction's notes and authentication results to report; the
        // secret is read here, so it is never on a command line.
        "webhook" if !args.is_empty() => {
            let grant = HttpGrant::parse([args[0].as_str()]).map_err(|(_, m)| m)?;
            grants.http = Some(std::sync::Arc::new(grant));
            grants.notes = true;
            grants.mail_auth = true;
            for arg in args.iter_mut().skip(1) {
                if let Some(name) = arg.strip_prefix("secret-env=") {
                    let secret = std::env::var(name)
                        .map_err(|_| format!("secret-env={name}: the variable is not set"))?;
                    *arg = format!("secret={secret}");
                } else if let Some(path) = arg.strip_prefix("secret-file=") {
                    let file = base.join(path);
                    let secret = std::fs::read_to_string(&file)
                        .map_err(|e| format!("secret-file: cannot read {}: {e}", file.display()))?;
                    *arg = format!("secret={}", secret.trim_end_matches(['\r', '\n']));
                }
            }
        }
        // The transaction's results, and the header and notes it writes.
        "mailauth" => {
            grants.mail_auth = true;
            grants.headers = true;
            grants.notes = true;
        }
        // A and TXT records under its zones (the arguments that are not
        // `mode=`), two queries per zone per hook call: it asks them all at
        // the session's first MAIL. A `grants.dns` in the config replaces
        // this one (to use a `[dns.resolver.NAME]`, say).
        "dnsbl" => {
            let zones: Vec<String> = args
                .iter()
                .filter(|a| !a.contains('='))
                .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            grants.dns = Some(std::sync::Arc::new(DnsGrant {
                budget: (2 * zones.len() as u32).max(1),
                suffixes: zones,
                types: vec![RecordType::A, RecordType::Txt],
                resolver: None,
            }));
            grants.headers = true;
            grants.notes = true;
        }
        "mailbox" if args.len() == 1 => {
            let dir = absolute(&base.join(&args[0]));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create the Maildir {}: {e}", dir.display()))?;
            let dir_text = dir.to_string_lossy().into_owned();
            grants.dirs.push(DirGrant {
                host: dir,
                guest: dir_text.clone(),
                writable: true,
            });
            args[0] = dir_text;
        }
        _ => {}
    }
    Ok(PluginSpec {
        name: b.name.to_owned(),
        source: Source::Builtin(b),
        args,
        grants,
        limits: Limits::default(),
        on_failure: FailurePolicy::default(),
        reuse: None,
    })
}

/// A tenant's default `max_concurrent_calls`: half the CPUs, so one tenant's
/// spinning plugin leaves the other half to everyone else.
fn default_tenant_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// `host:port` → the socket addresses a network grant allows.
fn resolve(target: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    check_address(target)?;
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{target}`: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{target}` resolves to no address"));
    }
    Ok(addrs)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// `HOST:PORT`, `[v6]:PORT` or `unix:/path`; the host is resolved when the
/// server binds.
pub fn check_address(address: &str) -> Result<(), String> {
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("`{address}` has no socket path"));
        }
        return Ok(());
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!(
            "`{address}` has no host; use 0.0.0.0 or [::] for every address"
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("`{port}` in `{address}` is not a port number (0-65535)"))?;
    Ok(())
}

/// `HOST:PORT` or `[v6]:PORT` (no Unix sockets): the metrics endpoint.
fn check_tcp_address(address: &str) -> Result<(), String> {
    if address.starts_with("unix:") {
        return Err(format!(
            "`{address}`: the metrics endpoint listens on TCP only"
        ));
    }
    check_address(address)
}

fn check_hostname(name: &str) -> Result<String, String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} is not a host name"));
    }
    Ok(name.to_owned())
}

fn check_seconds(secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{secs} is not a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// aiosmtpd treats a size limit of 0 as no limit.
pub fn size_limit(size: u64) -> Option<usize> {
    (size > 0).then(|| usize::try_from(size).unwrap_or(usize::MAX))
}

/// This machine's host name (aiosmtpd uses the FQDN; the kernel's name is
/// what we have without DNS).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(toml: &str) -> String {
        Config::parse(toml, Path::new("/etc/wasmtp.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        assert_eq!(
            error("[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\nsise = 10\n"),
            "/etc/wasmtp.toml:4:1: listener[0].sise: unknown field `sise`, expected one of `name`, `address`, `plugin`, `plugins`, `tenant`, `tenants`, `hostname`, `size`, `smtputf8`, `timeout`, `protocol`, `tls`, `implicit_tls`, `require_starttls`, `auth_required`, `auth_require_tls`, `auth_exclude_mechanisms`, `proxy_protocol`, `proxy_protocol_timeout`, `max_connections`, `max_connections_per_ip`, `max_recipients`, `data_timeout`, `command_call_limit`, `max_unknown_commands`, `enhanced_status_codes`"
        );
        assert_eq!(
            error("[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\nsize = \"big\"\n"),
            "/etc/wasmtp.toml:4:8: listener[0].size: invalid type: string \"big\", expected u64"
        );
        assert_eq!(
            error("[[listener]]\naddress = \"127.0.0.1\"\nplugin = \"sink\"\n"),
            "/etc/wasmtp.toml: listener[0].address: `127.0.0.1` is not HOST:PORT"
        );
        assert_eq!(
            error("[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"nope\"\n"),
            "/etc/wasmtp.toml: listener[0].plugin: no plugin is named `nope` (known: sink, debugging, mailbox, proxy, queue, greylist, ratelimit, webhook, mailauth, dnsbl)"
        );
        assert_eq!(
            error(""),
            "/etc/wasmtp.toml: no [[listener]] is defined; add one with an `address` and a `plugin`"
        );
        assert_eq!(
            error("[[listener]\n"),
            "/etc/wasmtp.toml:1:12: unclosed array table, expected `]`"
        );
        assert_eq!(
            error(
                "[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"p\"\n[plugin.p]\ncomponent = \"missing.wasm\"\n"
            ),
            "/etc/wasmtp.toml: plugin.p.component: `missing.wasm` is neither a built-in plugin (sink, debugging, mailbox, proxy, queue, greylist, ratelimit, webhook, mailauth, dnsbl) nor a file (/etc/missing.wasm does not exist)"
        );
    }

    /// `[dns]` and `[auth]`: defaults, values, and each bad value named.
    #[test]
    fn dns_and_auth_are_checked() {
        let with = |extra: &str| {
            format!("[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\n{extra}\n")
        };
        let c = Config::parse(&with(""), Path::new("x.toml")).unwrap();
        assert_eq!(c.dns, DnsSettings::default());
        assert_eq!(c.dns.default.nameservers, None, "default: /etc/resolv.conf");
        assert_eq!(c.mail_auth, MailAuthSettings::default());
        let c = Config::parse(
            &with(
                "[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\", \"10.0.0.1\"]\ntimeout = 1.5\nattempts = 1\ncache_size = 100\n\
                 [dns.resolver.lists]\nnameservers = [\"127.0.0.2:53\"]\ntimeout = 0.5\n\
                 [auth]\nauthserv_id = \"mx.example.com\"\ndkim_max_size = 1000\ntimeout = 3\n",
            ),
            Path::new("x.toml"),
        )
        .unwrap();
        let d = &c.dns;
        assert_eq!(
            d.default.nameservers,
            Some(vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap()
            ])
        );
        assert_eq!(d.default.timeout, Duration::from_millis(1500));
        assert_eq!((d.default.attempts, d.cache_size), (1, 100));
        let lists = &d.resolvers["lists"];
        assert_eq!(
            lists.nameservers,
            Some(vec!["127.0.0.2:53".parse().unwrap()])
        );
        assert_eq!(
            (lists.timeout, lists.attempts),
            (Duration::from_millis(500), 1)
        );
        assert_eq!(c.mail_auth.authserv_id.as_deref(), Some("mx.example.com"));
        assert_eq!(c.mail_auth.dkim_max_size, 1000);
        assert_eq!(c.mail_auth.timeout, Duration::from_secs(3));

        assert_eq!(
            error(&with("[dns]\nnameservers = [\"ns1.example.com\"]")),
            "/etc/wasmtp.toml: dns.nameservers[0]: `ns1.example.com` is not an IP address or IP:PORT"
        );
        assert_eq!(
            error(&with("[dns]\ntimeout = 0")),
            "/etc/wasmtp.toml: dns.timeout: 0 is not a positive number of seconds"
        );
        assert_eq!(
            error(&with("[dns]\nattempts = 0")),
            "/etc/wasmtp.toml: dns.attempts: must be at least 1"
        );
        assert_eq!(
            error(&with("[dns]\nserver = \"x\"")),
            "/etc/wasmtp.toml:5:1: dns.server: unknown field `server`, expected one of `nameservers`, `timeout`, `attempts`, `cache_size`, `resolver`"
        );
        assert_eq!(
            error(&with("[dns.resolver.lists]\nnameservers = []")),
            "/etc/wasmtp.toml: dns.resolver.lists.nameservers: is empty; name at least one"
        );
        assert_eq!(
            error(&with(
                "[dns.resolver.lists]\nnameservers = [\"127.0.0.1:99999\"]"
            )),
            "/etc/wasmtp.toml: dns.resolver.lists.nameservers[0]: `127.0.0.1:99999` is not an IP address or IP:PORT"
        );
        assert_eq!(
            error(&with("[auth]\nauthserv_id = \"mx example\"")),
            "/etc/wasmtp.toml: auth.authserv_id: \"mx example\" is not a host name"
        );
        assert_eq!(
            error(&with("[auth]\ndkim_max_size = -1")),
            "/etc/wasmtp.toml:5:17: auth.dkim_max_size: invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            error(&with("[auth]\nspf = true")),
            "/etc/wasmtp.toml:5:1: auth.spf: unknown field `spf`, expected one of `authserv_id`, `dkim_max_size`, `timeout`"
        );
    }

    /// `grants.dns` and `grants.mail_auth`.
    #[test]
    fn dns_grants_are_narrow_and_checked() {
        let with = |grants: &str| {
            format!(
                "[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"p\"\n\
                 [plugin.p]\ncomponent = \"sink\"\n[plugin.p.grants]\n{grants}\n\
                 [dns.resolver.lists]\nnameservers = [\"127.0.0.1:5353\"]\n"
            )
        };
        let c = Config::parse(
            &with("dns = { suffixes = [\"Zen.Example.\", \".\"], types = [\"a\", \"TXT\"], resolver = \"lists\", budget = 4 }\nmail_auth = true"),
            Path::new("x.toml"),
        )
        .unwrap();
        let grants = &c.listeners[0].plugins[0].grants;
        assert_eq!(
            grants.dns.as_deref(),
            Some(&DnsGrant {
                suffixes: vec!["zen.example".into(), String::new()],
                types: vec![RecordType::A, RecordType::Txt],
                resolver: Some("lists".into()),
                budget: 4,
            })
        );
        assert!(grants.mail_auth);
        let c = Config::parse(
            &with("dns = { suffixes = [\"bl.test\"] }"),
            Path::new("x.toml"),
        )
        .unwrap();
        let dns = c.listeners[0].plugins[0].grants.dns.clone().unwrap();
        assert_eq!(
            (dns.types.len(), dns.budget, dns.resolver.as_deref()),
            (5, DEFAULT_BUDGET, None)
        );
        assert!(!c.listeners[0].plugins[0].grants.mail_auth);

        assert_eq!(
            error(&with("dns = { suffixes = [] }")),
            "/etc/wasmtp.toml: plugin.p.grants.dns.suffixes: is empty; name the domains the plugin may query (\".\" for all)"
        );
        assert_eq!(
            error(&with("dns = { suffixes = [\"a b\"] }")),
            "/etc/wasmtp.toml: plugin.p.grants.dns.suffixes[0]: `a b` is not a domain name (\".\" for all names)"
        );
        assert_eq!(
            error(&with("dns = { suffixes = [\".\"], types = [\"srv\"] }")),
            "/etc/wasmtp.toml: plugin.p.grants.dns.types[0]: `srv` is not one of a, aaaa, mx, txt, ptr"
        );
        assert_eq!(
            error(&with("dns = { suffixes = [\".\"], budget = 0 }")),
            "/etc/wasmtp.toml: plugin.p.grants.dns.budget: must be at least 1"
        );
        assert_eq!(
            error(&with("dns = { suffixes = [\".\"], resolver = \"nope\" }")),
            "/etc/wasmtp.toml: plugin.p.grants.dns.resolver: no [dns.resolver.nope] is defined"
        );
        assert_eq!(
            error(&with("dns = { suffixes = [\".\"], names = 1 }")),
            "/etc/wasmtp.toml:7:27: plugin.p.grants.dns.names: unknown field `names`, expected one of `suffixes`, `types`, `resolver`, `budget`"
        );
    }

    #[test]
    fn defaults_follow_aiosmtpd() {
        let c = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:2525\"\nplugin = \"sink\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.name, "listener-1");
        assert_eq!(l.size, Some(1 << 25));
        assert!(!l.smtputf8);
        assert_eq!(l.timeout, Duration::from_secs(300));
    }

    /// `[store]`: each bad value named by its key, and the defaults.
    #[test]
    fn store_section_is_checked() {
        let with = |store: &str| {
            format!(
                "[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\n[store]\n{store}\n"
            )
        };
        assert_eq!(
            error(&with("backend = \"redis\"")),
            "/etc/wasmtp.toml:5:11: store.backend: unknown variant `redis`, expected `sqlite` or `postgres`"
        );
        assert_eq!(
            error(&with("backend = \"postgres\"")),
            "/etc/wasmtp.toml: store.url: missing: `backend = \"postgres\"` needs the server's connection string (`url = \"postgresql://user@host/db\"`)"
        );
        assert_eq!(
            error(&with(
                "backend = \"postgres\"\nurl = \"postgresql://db:notaport/x\""
            )),
            "/etc/wasmtp.toml: store.url: not a PostgreSQL connection string (invalid value for option `port`)"
        );
        assert_eq!(
            error(&with(
                "backend = \"postgres\"\nurl = \"host=db\"\npool_size = 0"
            )),
            "/etc/wasmtp.toml: store.pool_size: must be at least 1"
        );
        assert_eq!(
            error(&with(
                "backend = \"postgres\"\nurl = \"host=db\"\npath = \"/var/lib/x\""
            )),
            "/etc/wasmtp.toml: store.path: is for `backend = \"sqlite\"`; PostgreSQL takes `url`"
        );
        assert_eq!(
            error(&with("url = \"host=db\"")),
            "/etc/wasmtp.toml: store.url: is for `backend = \"postgres\"`; SQLite takes `path`"
        );
        assert_eq!(
            error(&with("ttl_cap = 0")),
            "/etc/wasmtp.toml: store.ttl_cap: 0 is not a positive number of seconds"
        );
        assert_eq!(
            error(&with("queue_attempts = 0")),
            "/etc/wasmtp.toml: store.queue_attempts: must be at least 1"
        );
        assert_eq!(
            error(&with("queue_backoff = -1")),
            "/etc/wasmtp.toml: store.queue_backoff: -1 is not a positive number of seconds"
        );
        assert_eq!(
            error(&with("pool = 3")),
            "/etc/wasmtp.toml:5:1: store.pool: unknown field `pool`, expected one of `backend`, `path`, `url`, `pool_size`, `ttl_cap`, `queue_attempts`, `queue_backoff`, `group_commit`, `sweep_interval`"
        );
        let c = Config::parse(
            &with("path = \"state\"\nttl_cap = 86400"),
            Path::new("/etc/wasmtp/x.toml"),
        )
        .unwrap();
        assert_eq!(
            c.store.backend,
            BackendSettings::Sqlite {
                dir: PathBuf::from("/etc/wasmtp/state")
            }
        );
        assert_eq!(c.store.ttl_cap, Duration::from_secs(86400));
        assert_eq!(c.store.queue_attempts, 10);
        let c = Config::parse(
            &with("backend = \"postgres\"\nurl = \"postgresql://wasmtp@db/mail\""),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(
            c.store.backend,
            BackendSettings::Postgres {
                url: "postgresql://wasmtp@db/mail".into(),
                pool_size: 16
            }
        );
        assert!(c.store.group_commit);
    }

    /// The listener keys of TLS, AUTH, LMTP, PROXY and limits: each bad
    /// combination named in one sentence.
    #[test]
    fn protocol_options_are_checked() {
        let listener = |extra: &str| {
            format!("[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\n{extra}\n")
        };
        assert_eq!(
            error(&listener("implicit_tls = true")),
            "/etc/wasmtp.toml: listener[0].implicit_tls: needs a certificate: add `tls = { cert = \"...\", key = \"...\" }`"
        );
        assert_eq!(
            error(&listener("require_starttls = true")),
            "/etc/wasmtp.toml: listener[0].require_starttls: needs a certificate: add `tls = { cert = \"...\", key = \"...\" }`"
        );
        assert_eq!(
            error(&listener("auth_required = true")),
            "/etc/wasmtp.toml: listener[0].auth_required: AUTH is required but needs TLS, and this listener has no `tls`"
        );
        assert_eq!(
            error(&listener("auth_exclude_mechanisms = [\"CRAM-MD5\"]")),
            "/etc/wasmtp.toml: listener[0].auth_exclude_mechanisms: `CRAM-MD5` is not a mechanism wasmtp offers (LOGIN, PLAIN)"
        );
        assert_eq!(
            error(&listener("proxy_protocol_timeout = 5")),
            "/etc/wasmtp.toml: listener[0].proxy_protocol_timeout: is set but `proxy_protocol` is not"
        );
        assert_eq!(
            error(&listener("max_recipients = 0")),
            "/etc/wasmtp.toml: listener[0].max_recipients: must be at least 1"
        );
        assert_eq!(
            error(&listener("protocol = \"pop3\"")),
            "/etc/wasmtp.toml:4:12: listener[0].protocol: unknown variant `pop3`, expected `smtp` or `lmtp`"
        );
        assert_eq!(
            error(&listener(
                "tls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }"
            )),
            "/etc/wasmtp.toml: listener[0].tls: cannot read the certificate file /nonexistent/cert.pem: No such file or directory (os error 2)"
        );
        let c = Config::parse(&listener("auth_require_tls = false\nauth_exclude_mechanisms = [\"login\"]\nprotocol = \"lmtp\""), Path::new("x.toml")).unwrap();
        let o = &c.listeners[0].options;
        assert_eq!(o.auth.mechanisms, vec![Mechanism::Plain]);
        assert_eq!(o.protocol, Protocol::Lmtp);
        assert!(!o.require_starttls && o.tls.is_none() && o.proxy_protocol.is_none());
        assert!(
            Config::parse(
                &listener("").replace("127.0.0.1:25", "unix:/run/lmtp.sock"),
                Path::new("x.toml")
            )
            .is_ok()
        );
    }
}
