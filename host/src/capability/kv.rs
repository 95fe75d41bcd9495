//! `wasmtp:smtp/kv`: the key-value store that outlives a session and is
//! shared by a cluster's nodes (`wit/kv.wit`), on the server's store
//! (`crate::store`), granted with `grants.kv`.
//!
//! Namespaces keep plugins apart: `none` is the plugin's own (stored as
//! `plugin:NAME`), `some(name)` a shared one the config granted it (stored as
//! `shared:NAME`), so no plugin name can reach a shared namespace or
//! another plugin's. Every call waits at most for what is left of the hook's
//! deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::plugin::bindings::wasmtp::smtp::kv::{self, Counter, Entry, Error};
use crate::plugin::host::HostState;
use crate::store::{Kv, StoreError};

/// What `grants.kv` gives: `kv = true` the plugin's own namespace,
/// `kv = ["name", ...]` these shared ones as well.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvGrant {
    /// Shared namespaces the plugin may use.
    pub namespaces: Vec<String>,
}

/// A plugin instance's access to the store.
#[derive(Clone)]
pub struct KvAccess {
    /// `None` when the server runs without a store (`wasmtp check`): every
    /// call is `unavailable`.
    store: Option<Kv>,
    own: String,
    shared: Arc<[String]>,
}

impl KvAccess {
    pub fn new(store: Option<Kv>, plugin: &str, grant: &KvGrant) -> KvAccess {
        KvAccess {
            store,
            own: format!("plugin:{plugin}"),
            shared: grant.namespaces.clone().into(),
        }
    }

    /// The stored namespace for the one a plugin names.
    fn namespace(&self, name: Option<String>) -> Result<String, Error> {
        match name {
            None => Ok(self.own.clone()),
            Some(name) if self.shared.contains(&name) => Ok(format!("shared:{name}")),
            Some(name) => Err(Error::Denied(format!(
                "the namespace `{name}` is not granted to this plugin (grants.kv)"
            ))),
        }
    }
}

fn error(e: StoreError) -> Error {
    match e {
        StoreError::Unavailable(m) => Error::Unavailable(m),
        StoreError::Conflict(_) => Error::Conflict,
        StoreError::Invalid(m) => Error::Invalid(m),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl HostState {
    /// The store and namespace of a call, or why there is none.
    fn kv_target(&self, namespace: Option<String>) -> Result<(Kv, String), Error> {
        let Some(access) = &self.kv else {
            // The loader refuses an ungranted import; this is a host bug.
            return Err(Error::Denied("grants.kv is not set".into()));
        };
        let ns = access.namespace(namespace)?;
        let store = access
            .store
            .clone()
            .ok_or_else(|| Error::Unavailable("this server has no store".into()))?;
        Ok((store, ns))
    }

    /// Run a store call within what is left of the hook's deadline.
    async fn within_deadline<T>(
        deadline: Instant,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(result) => result.map_err(error),
            Err(_) => Err(Error::Timeout),
        }
    }
}

impl kv::Host for HostState {
    async fn get(
        &mut self,
        namespace: Option<String>,
        key: String,
    ) -> Result<Option<Entry>, Error> {
        let (store, ns) = self.kv_target(namespace)?;
        let entry = Self::within_deadline(self.deadline, store.get(&ns, &key)).await?;
        Ok(entry.map(|e| Entry {
            value: e.value,
            revision: e.revision,
            expires_in_ms: ms(e.expires_in),
        }))
    }

    async fn set(
        &mut self,
        namespace: Option<String>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<u64, Error> {
        let (store, ns) = self.kv_target(namespace)?;
        let ttl = Duration::from_millis(ttl_ms);
        Self::within_deadline(self.deadline, store.set(&ns, &key, &value, ttl)).await
    }

    async fn compare_and_set(
        &mut self,
        namespace: Option<String>,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl_ms: u64,
    ) -> Result<u64, Error> {
        let (store, ns) = self.kv_target(namespace)?;
        let ttl = Duration::from_millis(ttl_ms);
        Self::within_deadline(self.deadline, store.cas(&ns, &key, &value, expected, ttl)).await
    }

    async fn incr(
        &mut self,
        namespace: Option<String>,
        key: String,
        delta: i64,
        window_ms: u64,
    ) -> Result<Counter, Error> {
        let (store, ns) = self.kv_target(namespace)?;
        let window = Duration::from_millis(window_ms);
        let c = Self::within_deadline(self.deadline, store.incr(&ns, &key, delta, window)).await?;
        Ok(Counter {
            value: c.value,
            expires_in_ms: ms(c.expires_in),
        })
    }

    async fn delete(&mut self, namespace: Option<String>, key: String) -> Result<bool, Error> {
        let (store, ns) = self.kv_target(namespace)?;
        Self::within_deadline(self.deadline, store.delete(&ns, &key)).await
    }
}
