//! The server: binds the listeners, loads their plugins, accepts
//! connections and serves each ([`connection::serve`]: PROXY header, TLS,
//! SMTP/LMTP sessions), until shutdown.
//!
//! ## Generations (hot swap)
//!
//! What a listener's sessions are served with — its settings and plugin
//! chain — is an immutable generation behind an atomic pointer
//! (DESIGN.md, decision 8). A new connection takes the newest generation; a
//! running session keeps the one it started with until it ends.
//! [`Server::reload`] reads the config again and compiles its plugins; only
//! when all of it is valid does it publish the new generation, otherwise the
//! running one stays and the error says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Address, Config, ConfigError, ListenerConfig};
use crate::plugin::{Chain, Plugin, PluginError, Runtime, Tenant};
use crate::smtp::connection::{self, ConnectionLimiter, Stream};
use crate::smtp::envelope::Peer;
use crate::smtp::session::ListenerSettings;

/// The text after the host name in the greeting.
pub const IDENT: &str = concat!("wasmtp ", env!("CARGO_PKG_VERSION"));
/// How long sessions in progress get to finish after shutdown is asked,
/// unless `[server] shutdown_grace` says otherwise.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("listener `{listener}`: cannot listen on {address}: {reason}")]
    Bind {
        listener: String,
        address: String,
        reason: std::io::Error,
    },
    #[error("server.metrics: cannot listen on {address}: {reason}")]
    MetricsBind {
        address: String,
        reason: std::io::Error,
    },
    #[error("store: {0}")]
    Store(String),
}

/// Why a reload was refused; the running generation stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the server was started without --config; there is nothing to reload")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("store: {0}")]
    Store(String),
    #[error(
        "{0}; listeners can't be added, removed, renamed or moved by a reload: restart the server for that"
    )]
    Listeners(String),
}

/// A bound listener; its settings are swapped by reloads.
pub struct Listener {
    pub socket: Socket,
    /// Open connections, against the limits of the first generation (a
    /// reload does not change connection limits: restart for that).
    pub limiter: Arc<ConnectionLimiter>,
    /// The name and address never change across generations (reload checks).
    pub name: String,
    pub address: String,
    pub settings: Arc<ArcSwap<ListenerSettings>>,
}

/// A listening socket: TCP, or a Unix socket (LMTP's usual home).
pub enum Socket {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: Arc<str>,
    },
}

impl Socket {
    async fn bind(address: &Address) -> std::io::Result<Socket> {
        match address {
            Address::Tcp(address) => Ok(Socket::Tcp(TcpListener::bind(address).await?)),
            Address::Unix(path) => {
                // A socket file left by an earlier run would make bind fail;
                // remove it, but nothing that is not a socket.
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                Ok(Socket::Unix {
                    listener,
                    path: path.to_string_lossy().into(),
                })
            }
        }
    }

    /// What the `listening on` log line names: `127.0.0.1:25`, `unix:/path`.
    pub fn local_addr(&self) -> String {
        match self {
            Socket::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Socket::Unix { path, .. } => format!("unix:{path}"),
        }
    }

    async fn accept(&self) -> std::io::Result<(Stream, Peer)> {
        match self {
            Socket::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), Peer::Ip(peer)))
            }
            Socket::Unix { listener, path } => {
                let (stream, _) = listener.accept().await?;
                Ok((Box::new(stream), Peer::Unix(path.clone())))
            }
        }
    }
}

/// A started server: bound listeners, the engine their plugins run on, and
/// where its config came from.
pub struct Server {
    pub listeners: Vec<Listener>,
    /// The Prometheus endpoint, when `[server] metrics` is set.
    metrics: Option<TcpListener>,
    runtime: Arc<Runtime>,
    config_file: Option<PathBuf>,
    /// Reload when the config file or a plugin file changes.
    watch: bool,
    generation: AtomicU64,
    /// How long sessions in progress get after shutdown is asked.
    shutdown_grace: Duration,
}

/// Load every plugin and bind every listener of `config`.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let runtime = Runtime::new(&config.runtime)?;
    open_store(&runtime, &config).map_err(StartError::Store)?;
    runtime.configure_services(&config.dns, &config.mail_auth, &config.http);
    let mut listeners = Vec::new();
    let config_file = config.file.clone();
    let watch = config.watch;
    for (l, settings) in load_listeners(&runtime, config.listeners).await? {
        let socket = Socket::bind(&Address::parse(&l.address))
            .await
            .map_err(|reason| StartError::Bind {
                listener: l.name.clone(),
                address: l.address.clone(),
                reason,
            })?;
        let limiter =
            ConnectionLimiter::new(l.options.max_connections, l.options.max_connections_per_ip);
        listeners.push(Listener {
            socket,
            limiter,
            name: l.name,
            address: l.address,
            settings: Arc::new(ArcSwap::from_pointee(settings)),
        });
    }
    let metrics = match &config.metrics {
        Some(address) => {
            crate::metrics::enable();
            let bound = TcpListener::bind(address.as_str()).await;
            Some(bound.map_err(|reason| StartError::MetricsBind {
                address: address.clone(),
                reason,
            })?)
        }
        None => None,
    };
    let shutdown_grace = config.shutdown_grace.unwrap_or(SHUTDOWN_GRACE);
    Ok(Server {
        listeners,
        metrics,
        runtime,
        config_file,
        watch,
        generation: AtomicU64::new(1),
        shutdown_grace,
    })
}

/// Open the store when a plugin of `config` uses it and it is not open yet:
/// once for the process (a reload keeps it; `[store]` changes need a
/// restart), with its sweeper.
fn open_store(runtime: &Runtime, config: &Config) -> Result<(), String> {
    if let Some(open) = runtime.store.get() {
        if open.settings != config.store {
            tracing::warn!(
                target: "wasmtp::store",
                "[store] changed; the store opened at start stays until a restart"
            );
        }
        return Ok(());
    }
    if !uses_store(config) {
        return Ok(());
    }
    let store = crate::store::Store::open(&config.store).map_err(|e| e.to_string())?;
    store.kv.spawn_sweeper(config.store.sweep_interval);
    let _ = runtime.store.set(store);
    Ok(())
}

/// Whether a plugin of `config` is granted `kv` or `queue`.
fn uses_store(config: &Config) -> bool {
    config.listeners.iter().any(|l| {
        l.plugins
            .iter()
            .chain(l.tenants.iter().flat_map(|t| &t.plugins))
            .any(|p| p.grants.uses_store())
    })
}

/// Compile and check the plugins of every listener and build its settings.
/// A plugin named in several chains is loaded once.
async fn load_listeners(
    runtime: &Arc<Runtime>,
    configs: Vec<ListenerConfig>,
) -> Result<Vec<(ListenerConfig, ListenerSettings)>, PluginError> {
    let mut loaded: Vec<Arc<Plugin>> = Vec::new();
    let mut out = Vec::new();
    for mut l in configs {
        let plugins = load_chain(runtime, &mut loaded, std::mem::take(&mut l.plugins)).await?;
        let mut tenants = Vec::new();
        for t in std::mem::take(&mut l.tenants) {
            let plugins = load_chain(runtime, &mut loaded, t.plugins).await?;
            tenants.push(Tenant {
                name: t.name.as_str().into(),
                domains: t.domains,
                chain: Arc::new(Chain::of(&t.name, plugins)),
            });
        }
        let o = l.options.clone();
        let settings = ListenerSettings {
            name: l.name.as_str().into(),
            tenant: l.tenant.as_deref().map(Arc::from),
            hostname: l.hostname.as_str().into(),
            ident: IDENT.to_owned(),
            data_size_limit: l.size,
            smtputf8: l.smtputf8,
            timeout: l.timeout,
            plugin: Arc::new(Chain::new(&l.name, plugins, tenants)),
            protocol: o.protocol,
            tls: o.tls,
            implicit_tls: o.implicit_tls,
            require_starttls: o.require_starttls,
            auth: o.auth,
            proxy_protocol: o.proxy_protocol,
            limits: o.limits,
            enhanced_status_codes: o.enhanced_status_codes,
            spool: Arc::new(o.spool),
        };
        out.push((l, settings));
    }
    Ok(out)
}

async fn load_chain(
    runtime: &Arc<Runtime>,
    loaded: &mut Vec<Arc<Plugin>>,
    specs: Vec<crate::plugin::PluginSpec>,
) -> Result<Vec<Arc<Plugin>>, PluginError> {
    let mut plugins = Vec::new();
    for spec in specs {
        let plugin = match loaded.iter().find(|p| *p.name == spec.name) {
            Some(p) => p.clone(),
            None => {
                let p = Plugin::load(runtime, spec).await?;
                loaded.push(p.clone());
                p
            }
        };
        plugins.push(plugin);
    }
    Ok(plugins)
}

impl Server {
    /// The current generation number: 1 at start, one more per reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The files a reload would read: the config file and the current
    /// generation's plugin components.
    fn watched_files(&self) -> Vec<PathBuf> {
        fn chain_files(chain: &Chain, out: &mut Vec<PathBuf>) {
            for p in &chain.plugins {
                if let crate::plugin::loaded::Source::File(path) = &p.source {
                    out.push(path.clone());
                }
            }
            for t in &chain.tenants {
                chain_files(&t.chain, out);
            }
        }
        let mut files: Vec<PathBuf> = self.config_file.iter().cloned().collect();
        for l in &self.listeners {
            chain_files(&l.settings.load().plugin, &mut files);
        }
        files
    }

    /// Read the config file again, compile its plugins, and publish them as
    /// a new generation. New connections use it; sessions in progress finish
    /// on the generation they started with.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let path = self.config_file.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let config = Config::load(path)?;
        let old: Vec<(&str, &str)> = self
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address.as_str()))
            .collect();
        let new: Vec<(&str, &str)> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address.as_str()))
            .collect();
        if old != new {
            return Err(ReloadError::Listeners(format!(
                "the listeners were {old:?} and the config now says {new:?}"
            )));
        }
        open_store(&self.runtime, &config).map_err(ReloadError::Store)?;
        self.runtime
            .configure_services(&config.dns, &config.mail_auth, &config.http);
        let loaded = load_listeners(&self.runtime, config.listeners).await?;
        for (listener, (_, settings)) in self.listeners.iter().zip(loaded) {
            listener.settings.store(Arc::new(settings));
        }
        Ok(self.generation.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// Serve until `shutdown` completes, reloading on each `reload` signal;
/// then drain: idle sessions get `421` and close, message content being
/// received is received, answered and then `421`, new connections get
/// `421` at once, and after the grace period (`[server] shutdown_grace`,
/// [`SHUTDOWN_GRACE`] by default) whatever is left is closed.
pub async fn run(
    mut server: Server,
    shutdown: impl std::future::Future<Output = ()>,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) {
    static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
    let metrics_listener = server.metrics.take();
    let server = Arc::new(server);
    let (stop_tx, stop_rx) = watch::channel(false);
    if server.watch {
        // Stamp the files before saying `listening on`, so no change made
        // after that line is missed.
        let files = server.watched_files();
        let last = stamp(&files);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_files(server.clone(), files, last, tx, reload));
        reload = rx;
    }
    if let Some(m) = crate::metrics::get() {
        m.generation(server.generation());
    }
    let metrics_endpoint = metrics_listener.map(|listener| {
        tracing::info!(
            "serving metrics at http://{}/metrics",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        tokio::spawn(crate::metrics::serve(listener))
    });
    // Said here, in config order, rather than by each accept task (whose
    // order is the scheduler's): scripts and tests read these lines.
    for listener in &server.listeners {
        let first = listener.settings.load_full();
        let addr = listener.socket.local_addr();
        tracing::info!(
            listener = &*first.name,
            plugins = first.plugin.names(),
            "listening on {addr}"
        );
    }
    let mut accepting = JoinSet::new();
    for index in 0..server.listeners.len() {
        let server = server.clone();
        let stop_rx = stop_rx.clone();
        accepting.spawn(async move {
            let listener = &server.listeners[index];
            let mut sessions = JoinSet::new();
            let mut stop = stop_rx.clone();
            loop {
                tokio::select! {
                    accepted = listener.socket.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                            // The newest generation; the session keeps it to its end.
                            let settings = listener.settings.load_full();
                            // Fields filled in as the session learns them (see `logging`).
                            let span = tracing::info_span!(
                                "session", id, %peer, listener = &*settings.name, tenant = settings.tenant.as_deref(),
                                client = tracing::field::Empty, tls = tracing::field::Empty, user = tracing::field::Empty,
                            );
                            // Counted by the socket's peer: behind a PROXY-protocol
                            // proxy, that is the proxy.
                            let Some(slot) = listener.limiter.acquire(peer.ip()) else {
                                span.in_scope(|| tracing::warn!("too many connections; refusing"));
                                if let Some(m) = crate::metrics::get() {
                                    m.session(&settings.name, settings.tenant.as_ref(), crate::metrics::Outcome::Tempfailed);
                                }
                                sessions.spawn(connection::refuse(stream, settings.hostname.to_string()));
                                continue;
                            };
                            let serve = connection::serve(stream, peer, id, settings, stop_rx.clone());
                            sessions.spawn(tracing::Instrument::instrument(async move { serve.await; drop(slot) }, span));
                        }
                        // Out of file descriptors and the like: back off
                        // rather than spin; the listener itself is fine.
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                    _ = stop.changed() => break,
                }
            }
            drain(listener, sessions, server.shutdown_grace).await;
        });
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reload.recv() => {
                let started = Instant::now();
                let result = server.reload().await;
                if let Some(m) = crate::metrics::get() {
                    m.reload(result.is_ok());
                    m.generation(server.generation());
                }
                match result {
                    Ok(generation) => tracing::info!(generation, "reloaded in {:?}", started.elapsed()),
                    Err(e) => tracing::error!(generation = server.generation(), "reload refused, still serving the running generation: {e}"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while accepting.join_next().await.is_some() {}
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
}

/// A listener's end: until its sessions are done or `grace` has passed,
/// answer new connections `421` (so that a client, or a proxy's health
/// check, learns at once that this node is going) rather than leave them
/// in the listen queue; then close whatever is still open.
async fn drain(listener: &Listener, mut sessions: JoinSet<()>, grace: Duration) {
    let mut refusals = JoinSet::new();
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    while !sessions.is_empty() {
        tokio::select! {
            accepted = listener.socket.accept() => {
                if let Ok((stream, _)) = accepted {
                    if let Some(m) = crate::metrics::get() {
                        let settings = listener.settings.load();
                        m.session(&settings.name, settings.tenant.as_ref(), crate::metrics::Outcome::Tempfailed);
                    }
                    refusals.spawn(connection::refuse_with(stream, &crate::smtp::reply::SHUTTING_DOWN));
                }
            }
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            _ = sessions.join_next() => {}
            _ = &mut deadline => {
                tracing::warn!(listener = listener.name, "{} sessions still open after {grace:?}; closing them", sessions.len());
                sessions.abort_all();
                break;
            }
        }
    }
}

type FileStamp = Option<(std::time::SystemTime, u64)>;

fn stamp(files: &[PathBuf]) -> Vec<FileStamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// How often `[server] watch` looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Forward reload signals, and ask for a reload when a watched file's
/// modification time or size changes. Polling, because it works the same on
/// every file system and a second's delay is fine for a config change.
async fn watch_files(
    server: Arc<Server>,
    mut files: Vec<PathBuf>,
    mut last: Vec<FileStamp>,
    tx: tokio::sync::mpsc::Sender<()>,
    mut signals: tokio::sync::mpsc::Receiver<()>,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut signals_open = true;
    loop {
        tokio::select! {
            signal = signals.recv(), if signals_open => match signal {
                Some(()) => { let _ = tx.try_send(()); }
                None => signals_open = false,
            },
            _ = tick.tick() => {
                let now = stamp(&files);
                if now != last {
                    tracing::info!("a watched file changed; reloading");
                    let _ = tx.send(()).await;
                    // Give the reload a moment, then watch what it loaded.
                    tokio::time::sleep(WATCH_INTERVAL).await;
                    files = server.watched_files();
                    last = stamp(&files);
                }
            }
        }
    }
}
