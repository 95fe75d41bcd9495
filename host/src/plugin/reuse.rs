//! Instances that serve successive sessions, for plugins an operator marks
//! `instances = "reuse"` (the default stays one fresh instance per session,
//! DESIGN.md decision 1).
//!
//! Starting an instance is most of what an interpreted plugin costs a short
//! session: QuickJS or CPython set up their heap, and every page the guest
//! writes is a copy-on-write fault. A reused instance skips all of it.
//!
//! What keeps sessions apart when an instance is reused:
//! - one pool per listener or tenant chain, per plugin ([`super::Chain`]),
//!   so an instance never serves another listener's or tenant's sessions;
//! - an instance is moved out of the pool for a session and back after it,
//!   so it never serves two sessions at once;
//! - between sessions the host forgets what it handed the instance
//!   ([`HostState::forget_session`](super::host::HostState::forget_session))
//!   and the plugin's `reuse.reset` clears what the guest kept; an instance
//!   whose reset fails, traps or runs past its deadline is dropped, as is
//!   one that failed a hook (it never comes back here);
//! - an instance is retired after `max_sessions_per_instance` sessions.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use super::instance::Live;
use super::loaded::{Plugin, Reuse};

/// The idle instances of one plugin in one chain.
pub struct InstancePool {
    reuse: Reuse,
    /// Last in, first out: the instance used most recently has the warmest
    /// caches.
    idle: Mutex<Vec<Live>>,
    /// The plugin's name, for `wasmtp_plugin_instances_idle`.
    plugin: Arc<str>,
}

impl InstancePool {
    pub fn new(plugin: &Plugin, reuse: Reuse) -> InstancePool {
        InstancePool {
            reuse,
            idle: Mutex::new(Vec::new()),
            plugin: plugin.name.clone(),
        }
    }

    /// An idle instance for session `session_id`, if there is one.
    pub fn take(&self, session_id: u64) -> Option<Live> {
        let mut live = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        if let Some(gauge) = self.gauge() {
            gauge.dec();
        }
        live.enter_session(session_id);
        Some(live)
    }

    /// How many instances wait for a session now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// `wasmtp_plugin_instances_idle` of the plugin, when metrics are on
    /// (looked up each time: the server turns metrics on after loading).
    fn gauge(&self) -> Option<Gauge> {
        crate::metrics::get().map(|m| m.idle_instances(&self.plugin))
    }

    fn full(&self) -> bool {
        self.idle() >= self.reuse.max_idle
    }

    /// The session that used `live` ended: reset it and keep it for the next
    /// session, in a task of its own so the session's end never waits for
    /// the plugin. Dropped instead when it served its last session, when the
    /// pool is full, or outside a runtime.
    pub fn give_back(self: &Arc<Self>, plugin: Arc<Plugin>, mut live: Live) {
        if live.sessions() >= self.reuse.max_sessions || self.full() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::clone(self);
        runtime.spawn(async move {
            match live.reset(&plugin).await {
                Ok(()) => {
                    let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                    if idle.len() < pool.reuse.max_idle {
                        idle.push(live);
                        if let Some(gauge) = pool.gauge() {
                            gauge.inc();
                        }
                    }
                }
                Err(reason) => tracing::warn!(
                    plugin = &*plugin.name,
                    "reuse.reset failed, dropping the instance: {reason}"
                ),
            }
        });
    }
}

/// A chain replaced by a reload drops its idle instances with it.
impl Drop for InstancePool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner()).len();
        if let Some(gauge) = self.gauge() {
            gauge.dec_by(idle as i64);
        }
    }
}
