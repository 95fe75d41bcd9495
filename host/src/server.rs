//! The server: binds the listeners, loads their plugins, accepts
//! connections and runs a [`Session`] for each, until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::plugin::{Chain, Plugin, PluginError, Runtime};
use crate::smtp::session::{ListenerSettings, Session};

/// The text after the host name in the greeting.
pub const IDENT: &str = concat!("wasmtp ", env!("CARGO_PKG_VERSION"));
/// How long sessions in progress get to finish after shutdown is asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("listener `{listener}`: cannot listen on {address}: {reason}")]
    Bind { listener: String, address: String, reason: std::io::Error },
}

/// A bound listener with everything its sessions need.
pub struct Listener {
    pub socket: TcpListener,
    pub settings: Arc<ListenerSettings>,
}

/// Load every plugin and bind every listener of `config`.
pub async fn start(config: Config) -> Result<Vec<Listener>, StartError> {
    let runtime = Runtime::new(&config.runtime)?;
    let mut listeners = Vec::new();
    // A plugin named in several chains is loaded once.
    let mut loaded: Vec<Arc<Plugin>> = Vec::new();
    for l in config.listeners {
        let mut plugins = Vec::new();
        for spec in l.plugins {
            let plugin = match loaded.iter().find(|p| *p.name == spec.name) {
                Some(p) => p.clone(),
                None => {
                    let p = Plugin::load(&runtime, spec).await?;
                    loaded.push(p.clone());
                    p
                }
            };
            plugins.push(plugin);
        }
        let plugin = Arc::new(Chain { name: l.name.clone().into(), plugins });
        let socket = TcpListener::bind(&l.address)
            .await
            .map_err(|reason| StartError::Bind { listener: l.name.clone(), address: l.address.clone(), reason })?;
        let settings = Arc::new(ListenerSettings {
            name: l.name.into(),
            hostname: l.hostname.into(),
            ident: IDENT.to_owned(),
            data_size_limit: l.size,
            smtputf8: l.smtputf8,
            timeout: l.timeout,
            plugin,
        });
        listeners.push(Listener { socket, settings });
    }
    Ok(listeners)
}

/// Serve `listeners` until `shutdown` completes; then stop accepting, tell
/// idle sessions `421`, and wait (up to [`SHUTDOWN_GRACE`]) for the rest.
pub async fn run(listeners: Vec<Listener>, shutdown: impl std::future::Future<Output = ()>) {
    static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accepting = JoinSet::new();
    for listener in listeners {
        let addr = listener.socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listener = &*listener.settings.name, plugins = listener.settings.plugin.names(), "listening on {addr}");
        let stop_rx = stop_rx.clone();
        accepting.spawn(async move {
            let mut sessions = JoinSet::new();
            let mut stop = stop_rx.clone();
            loop {
                tokio::select! {
                    accepted = listener.socket.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                            let session = Session::new(stream, peer, id, listener.settings.clone(), stop_rx.clone());
                            let span = tracing::info_span!("session", id, %peer, listener = &*listener.settings.name);
                            sessions.spawn(tracing::Instrument::instrument(session.run(), span));
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
            drop(listener.socket);
            let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while sessions.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                tracing::warn!("{} sessions still open after {SHUTDOWN_GRACE:?}; closing them", sessions.len());
                sessions.abort_all();
            }
        });
    }
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while accepting.join_next().await.is_some() {}
}
