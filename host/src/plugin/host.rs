//! What the host gives a plugin instance: the store's data, the host imports
//! every plugin has (`content`, `log`, `transaction`), and the WASI sandbox
//! built from the plugin's grants. The granted imports are in `capability`.
//!
//! A plugin starts with nothing (DESIGN.md, decision 7): no files, no
//! network, no environment, stdout and stderr discarded. The config grants
//! directories, stdio and environment variables, per plugin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::wasmtp::smtp::{content, log, transaction, types};
use super::loaded::Plugin;
use crate::capability::headers::MessageView;

/// The most a single `content.read` returns, so a plugin can't make the host
/// allocate a huge buffer with one call.
pub const MAX_READ: u32 = 1 << 20;
/// Longer plugin log lines are cut.
const MAX_LOG_LINE: usize = 4096;

/// A directory a plugin may open.
#[derive(Clone, Debug)]
pub struct DirGrant {
    pub host: PathBuf,
    /// The path the plugin sees; the host path when not set.
    pub guest: String,
    pub writable: bool,
}

/// Everything a plugin is allowed beyond computing.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    pub stdout: bool,
    pub stderr: bool,
    pub env: Vec<(String, String)>,
    /// Addresses the plugin may open TCP connections to.
    pub network: Vec<std::net::SocketAddr>,
    /// `wasmtp:smtp/kv` and the namespaces it may use (`grants.kv`).
    pub kv: Option<crate::capability::kv::KvGrant>,
    /// `wasmtp:smtp/queue` (`grants.queue`).
    pub queue: bool,
    /// `wasmtp:smtp/dns` (`grants.dns`): which names, types, resolver, budget.
    pub dns: Option<Arc<crate::capability::dns::DnsGrant>>,
    /// `wasmtp:smtp/mail-auth` (`grants.mail_auth`).
    pub mail_auth: bool,
    /// `wasmtp:smtp/notes` (`grants.notes`).
    pub notes: bool,
    /// `wasmtp:smtp/headers` (`grants.headers`).
    pub headers: bool,
    /// `wasi:http/outgoing-handler` (`grants.http`): the URL prefixes.
    pub http: Option<Arc<crate::capability::http::HttpGrant>>,
    /// `wasmtp:smtp/envelope` (`grants.envelope`).
    pub envelope: bool,
}

impl Grants {
    /// Whether the plugin uses the server's store (`kv` or `queue`).
    pub fn uses_store(&self) -> bool {
        self.kv.is_some() || self.queue
    }

    /// Whether the plugin is granted an import that reads or writes the
    /// transaction's shared state (`capability::Shared`).
    pub fn shares_transaction(&self) -> bool {
        // The queue stores the chain's notes with the message's facts.
        self.notes || self.headers || self.queue
    }

    /// Whether the plugin's file calls run on the thread that calls its
    /// hooks (see `instance::on_blocking_thread`): true when it is granted
    /// a directory.
    pub fn files_on_calling_thread(&self) -> bool {
        !self.dirs.is_empty()
    }

    pub fn wasi_ctx(&self) -> wasmtime::Result<WasiCtx> {
        let mut b = WasiCtxBuilder::new();
        // Without this, every file call (each write, each fsync) is a hop to
        // tokio's blocking pool and back; with it, the call runs in place and
        // the hook call as a whole is marked as blocking instead. Mailbox's
        // fsync'd delivery: 1.22x a native writer the first way, BENCHMARKS.md.
        b.allow_blocking_current_thread(self.files_on_calling_thread());
        if self.stdout {
            b.inherit_stdout();
        }
        if self.stderr {
            b.inherit_stderr();
        }
        for (k, v) in &self.env {
            b.env(k, v);
        }
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&dir.host, &dir.guest, perms)?;
        }
        // Outbound TCP only, and only to the granted addresses; no UDP, no
        // name lookups (grants are resolved when the config is loaded).
        b.allow_udp(false).allow_ip_name_lookup(false);
        if self.network.is_empty() {
            b.allow_tcp(false);
        } else {
            let allowed: std::sync::Arc<[std::net::SocketAddr]> = self.network.clone().into();
            b.allow_tcp(true).socket_addr_check(move |addr, usage| {
                use wasmtime_wasi::sockets::SocketAddrUse;
                let ok = match usage {
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    // The implicit bind a connect performs, to any local port.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                };
                Box::pin(async move { ok })
            });
        }
        Ok(b.build())
    }
}

/// Caps an instance's memory and remembers that it hit the cap, so a trap
/// that follows (an allocator giving up) is reported as out-of-memory.
///
/// It also keeps the instance's size, in `wasmtp_plugin_memory_bytes` when
/// metrics are on: a plugin whose memory creeps up call after call (a leak
/// in its language's runtime) shows there long before it fails.
pub struct MemoryCap {
    pub limit: usize,
    pub hit: bool,
    /// The instance's linear memories, in bytes (wasmtime reports their
    /// creation as growth from 0, so this is their whole size).
    pub size: usize,
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl MemoryCap {
    pub fn new(limit: usize, plugin: &Arc<str>) -> MemoryCap {
        MemoryCap {
            limit,
            hit: false,
            size: 0,
            gauge: crate::metrics::get().map(|m| m.plugin_memory(plugin)),
        }
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec_by(i64::try_from(self.size).unwrap_or(i64::MAX));
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        let grown = desired.saturating_sub(current);
        self.size += grown;
        if let Some(gauge) = &self.gauge {
            gauge.inc_by(i64::try_from(grown).unwrap_or(i64::MAX));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The data of one plugin instance's store.
pub struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub memory: MemoryCap,
    /// The message during the `data` hook (with the header edits made
    /// before the call); `None` otherwise.
    pub content: Option<Arc<MessageView>>,
    /// Where `content.read-next` goes on from.
    pub content_cursor: u64,
    /// The current transaction's queue id, for `transaction.queue-id`.
    pub queue_id: Option<String>,
    /// When the running hook must be stopped.
    pub deadline: Instant,
    pub plugin: Arc<str>,
    pub session_id: u64,
    /// `wasmtp:smtp/kv`, when granted.
    pub kv: Option<crate::capability::kv::KvAccess>,
    /// `wasmtp:smtp/queue`, when granted.
    pub queue: Option<crate::capability::queue::QueueAccess>,
    /// The transaction being delivered, during `data` and `lmtp-data`
    /// (what `queue.enqueue` stores besides the content).
    pub delivery: Option<crate::capability::queue::Delivery>,
    /// `wasmtp:smtp/dns`, when granted: the resolver, the grant and this
    /// hook call's queries.
    pub dns: Option<crate::capability::dns::DnsAccess>,
    /// `wasmtp:smtp/mail-auth`, when granted: the verifier and the
    /// transaction being checked.
    pub mail_auth: Option<crate::capability::mail_auth::AuthAccess>,
    /// The granted host imports' state during a hook call (`capability`).
    pub capabilities: crate::capability::State,
    /// `wasi:http`: its resources' context and the request policy (a
    /// plugin without `grants.http` has no grant, and can't import the
    /// handler anyway).
    pub http: crate::capability::http::HttpAccess,
}

impl HostState {
    /// The state of a new instance of `plugin` in session `session_id`,
    /// sandboxed by `wasi` (normally `plugin.grants.wasi_ctx()`).
    pub fn new(plugin: &Plugin, wasi: WasiCtx, session_id: u64) -> HostState {
        HostState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(plugin.limits.memory, &plugin.name),
            content: None,
            content_cursor: 0,
            queue_id: None,
            deadline: Instant::now() + plugin.limits.hook_timeout,
            plugin: plugin.name.clone(),
            session_id,
            kv: plugin.grants.kv.as_ref().map(|grant| {
                let store = plugin.runtime.store.get().map(|s| s.kv.clone());
                crate::capability::kv::KvAccess::new(store, &plugin.name, grant)
            }),
            queue: plugin
                .grants
                .queue
                .then(|| crate::capability::queue::QueueAccess {
                    queue: plugin.runtime.store.get().map(|s| s.queue.clone()),
                }),
            delivery: None,
            dns: plugin
                .grants
                .dns
                .as_ref()
                .map(|grant| crate::capability::dns::DnsAccess {
                    dns: Arc::clone(plugin.services.dns()),
                    grant: Arc::clone(grant),
                    used: 0,
                }),
            mail_auth: plugin
                .grants
                .mail_auth
                .then(|| crate::capability::mail_auth::AuthAccess {
                    verifier: Arc::clone(&plugin.services.mail_auth),
                    input: None,
                    has_mail_from: false,
                    slot: Default::default(),
                }),
            capabilities: crate::capability::State::default(),
            http: crate::capability::http::HttpAccess::new(
                plugin.grants.http.clone(),
                Arc::clone(&plugin.services.http),
                plugin.name.clone(),
            ),
        }
    }

    /// Forget the session that ended, for an instance that will serve
    /// another (`instances = "reuse"`): nothing the host handed this
    /// instance for one session is there for the next.
    pub fn forget_session(&mut self) {
        self.set_content(None);
        self.queue_id = None;
        self.delivery = None;
        if let Some(access) = &mut self.mail_auth {
            access.input = None;
            access.has_mail_from = false;
            access.slot = Default::default();
        }
        self.capabilities = crate::capability::State::default();
    }

    /// Make `content` readable (or not), with `read-next` starting over.
    pub fn set_content(&mut self, content: Option<Arc<MessageView>>) {
        self.content = content;
        self.content_cursor = 0;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `types` has no functions; the bindings still ask for its host trait.
impl types::Host for HostState {}

impl content::Host for HostState {
    fn size(&mut self) -> u64 {
        self.content.as_ref().map_or(0, |c| c.len())
    }

    /// A spool file that can't be read back is the host's failure, not the
    /// plugin's: the call traps (and the failure policy answers) rather than
    /// hand the plugin a message with a hole in it.
    fn read(&mut self, offset: u64, len: u32) -> wasmtime::Result<Vec<u8>> {
        let Some(content) = &self.content else {
            return Ok(Vec::new());
        };
        content
            .read(offset, len.min(MAX_READ) as usize)
            .map_err(|e| wasmtime::Error::msg(format!("reading the spooled message: {e}")))
    }

    fn read_next(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let chunk = self.read(self.content_cursor, len)?;
        self.content_cursor += chunk.len() as u64;
        Ok(chunk)
    }
}

impl transaction::Host for HostState {
    fn queue_id(&mut self) -> Option<String> {
        self.queue_id.clone()
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let mut message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, session) = (&*self.plugin, self.session_id);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "wasmtp::plugin", plugin, session, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "wasmtp::plugin", plugin, session, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "wasmtp::plugin", plugin, session, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "wasmtp::plugin", plugin, session, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "wasmtp::plugin", plugin, session, "{message}")
            }
        }
    }
}
