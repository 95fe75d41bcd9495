//! State that outlives a session and a node (DESIGN.md, decision 13): a
//! key-value store for plugins (greylisting, rate limits, "seen before")
//! and a durable queue for accepted messages.
//!
//! Two small traits, [`KvBackend`] and [`QueueBackend`], one file per
//! backend: [`sqlite`] (embedded, the default: nothing to install) and
//! [`postgres`] (a cluster's nodes share one PostgreSQL). [`Kv`] and
//! [`Queue`] wrap a backend with the checks every backend shares (sizes,
//! TTLs, attempts), so a backend only runs statements. The conformance
//! suite (`tests/store.rs`) runs the same cases against both.
//!
//! Rules every backend keeps:
//! - one clock, the database's: expiry and leases are computed in SQL, so
//!   nodes with skewed clocks agree;
//! - an expired key is never returned (it is absent for `get`, `cas` and
//!   `incr`), and a sweeper deletes expired keys to bound growth;
//! - an `enqueue` returns only once the message is durable (SQLite
//!   `synchronous=FULL`, PostgreSQL `synchronous_commit=on`); concurrent
//!   enqueues share one commit (group commit);
//! - errors are values: [`StoreError::Unavailable`] (the engine is down or
//!   failed), [`StoreError::Conflict`] (a compare-and-set or a lease lost),
//!   [`StoreError::Invalid`] (the caller's input).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub mod postgres;
pub mod sqlite;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The longest namespace name, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 128;
/// The longest queue id, in bytes.
pub const MAX_QUEUE_ID_BYTES: usize = 128;
/// How many expired keys one sweep deletes per statement.
const SWEEP_BATCH: u64 = 10_000;

/// What went wrong, as a value the caller (a plugin, the queue) decides on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The engine is down, unreachable, or failed: nothing is known to have
    /// been written. Try again later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set found another revision (or a key present when
    /// "only if absent" was asked), or a queue lease is no longer held.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself is wrong (sizes, TTL, a counter that is not a
    /// number); repeating it won't help.
    #[error("invalid: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A future a backend returns; boxed so the traits are object-safe.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

// ---- settings --------------------------------------------------------------

/// Which engine keeps the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSettings {
    /// Files `kv.sqlite` and `queue.sqlite` in this state directory.
    Sqlite { dir: PathBuf },
    /// A PostgreSQL server (`postgresql://user@host/db`, or
    /// `host=/run/postgresql user=wasmtp`), with at most `pool_size`
    /// connections from this node.
    Postgres { url: String, pool_size: usize },
}

/// The `[store]` section, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    pub backend: BackendSettings,
    /// The longest TTL a key may be given.
    pub ttl_cap: Duration,
    /// Claims of a queued message before it is dead-lettered.
    pub queue_attempts: u32,
    /// The delay before a released message is offered again, doubled at
    /// each attempt (capped at [`MAX_BACKOFF`]).
    pub queue_backoff: Duration,
    /// Whether concurrent enqueues share one commit.
    pub group_commit: bool,
    /// How often expired keys are deleted.
    pub sweep_interval: Duration,
}

/// The longest back-off between two attempts of a queued message.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

pub const DEFAULT_STATE_DIR: &str = "/var/lib/wasmtp";

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            backend: BackendSettings::Sqlite {
                dir: PathBuf::from(DEFAULT_STATE_DIR),
            },
            ttl_cap: Duration::from_secs(30 * 24 * 3600),
            queue_attempts: 10,
            queue_backoff: Duration::from_secs(60),
            group_commit: true,
            sweep_interval: Duration::from_secs(60),
        }
    }
}

// ---- key-value -------------------------------------------------------------

/// A live key's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    /// Changes at every write; what `cas` compares. Never reused for a key,
    /// even after it is deleted and set again.
    pub revision: u64,
    /// How long until the key expires (by the database's clock).
    pub expires_in: Duration,
}

/// A counter after `incr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    pub value: i64,
    /// How long until the window ends and the counter starts over.
    pub expires_in: Duration,
}

/// What a backend does for the key-value store; input already checked by
/// [`Kv`]. Durations are whole milliseconds, at least 1.
pub trait KvBackend: Send + Sync {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> Fut<'a, Option<Entry>>;
    /// Write unconditionally; the new revision.
    fn set<'a>(&'a self, ns: &'a str, key: &'a str, value: &'a [u8], ttl_ms: i64) -> Fut<'a, u64>;
    /// Write if the live key's revision is `expected` (`None`: only if there
    /// is no live key); the new revision, or [`StoreError::Conflict`].
    fn cas<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        value: &'a [u8],
        expected: Option<u64>,
        ttl_ms: i64,
    ) -> Fut<'a, u64>;
    /// Add `delta` to the counter (a decimal number); a missing or expired
    /// key starts at 0 with a window of `window_ms`, which later calls
    /// never extend.
    fn incr<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        delta: i64,
        window_ms: i64,
    ) -> Fut<'a, Counter>;
    /// Whether a live key was deleted.
    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> Fut<'a, bool>;
    /// Delete up to `limit` expired keys; how many were.
    fn sweep(&self, limit: u64) -> Fut<'_, u64>;
}

/// The key-value store as plugins use it: checks, then the backend.
#[derive(Clone)]
pub struct Kv {
    backend: Arc<dyn KvBackend>,
    ttl_cap: Duration,
}

impl Kv {
    pub fn new(backend: Arc<dyn KvBackend>, ttl_cap: Duration) -> Kv {
        Kv { backend, ttl_cap }
    }

    pub fn ttl_cap(&self) -> Duration {
        self.ttl_cap
    }

    fn check_key(ns: &str, key: &str) -> Result<()> {
        if ns.is_empty() || ns.len() > MAX_NAMESPACE_BYTES {
            return Err(StoreError::Invalid(format!(
                "a namespace is 1 to {MAX_NAMESPACE_BYTES} bytes"
            )));
        }
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(StoreError::Invalid(format!(
                "a key is 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            )));
        }
        if key.contains('\0') {
            return Err(StoreError::Invalid("a key can't contain NUL".into()));
        }
        Ok(())
    }

    fn check_value(value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Invalid(format!(
                "a value is at most {MAX_VALUE_BYTES} bytes, not {}",
                value.len()
            )));
        }
        Ok(())
    }

    /// A TTL in milliseconds: mandatory (non-zero) and at most the cap.
    fn check_ttl(&self, ttl: Duration) -> Result<i64> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid(
                "a TTL is mandatory: give one of at least 1 ms".into(),
            ));
        }
        if ttl > self.ttl_cap {
            return Err(StoreError::Invalid(format!(
                "a TTL of {} s is past the cap of {} s ([store] ttl_cap)",
                ttl.as_secs(),
                self.ttl_cap.as_secs()
            )));
        }
        Ok(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1))
    }

    pub async fn get(&self, ns: &str, key: &str) -> Result<Option<Entry>> {
        Self::check_key(ns, key)?;
        self.backend.get(ns, key).await
    }

    pub async fn set(&self, ns: &str, key: &str, value: &[u8], ttl: Duration) -> Result<u64> {
        Self::check_key(ns, key)?;
        Self::check_value(value)?;
        let ttl = self.check_ttl(ttl)?;
        self.backend.set(ns, key, value, ttl).await
    }

    pub async fn cas(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        ttl: Duration,
    ) -> Result<u64> {
        Self::check_key(ns, key)?;
        Self::check_value(value)?;
        let ttl = self.check_ttl(ttl)?;
        self.backend.cas(ns, key, value, expected, ttl).await
    }

    pub async fn incr(&self, ns: &str, key: &str, delta: i64, window: Duration) -> Result<Counter> {
        Self::check_key(ns, key)?;
        let window = self.check_ttl(window)?;
        self.backend.incr(ns, key, delta, window).await
    }

    pub async fn delete(&self, ns: &str, key: &str) -> Result<bool> {
        Self::check_key(ns, key)?;
        self.backend.delete(ns, key).await
    }

    /// Delete every expired key; how many were.
    pub async fn sweep(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.backend.sweep(SWEEP_BATCH).await?;
            total += n;
            if n < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// Sweep every `interval` for as long as the runtime runs. A failed
    /// sweep (the engine down) is logged and tried again next time.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let kv = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match kv.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(target: "wasmtp::store", "swept {n} expired keys"),
                    Err(e) => tracing::warn!(target: "wasmtp::store", "sweeping expired keys: {e}"),
                }
            }
        })
    }
}

// ---- the queue -------------------------------------------------------------

/// A message to enqueue: everything a consumer needs to deliver it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The queue id the client is told (`250 2.0.0 Ok: queued as ID`).
    pub id: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Session facts as a JSON object: the client's address (the original
    /// one after PROXY), HELO name, TLS, the authenticated identity, notes,
    /// authentication results.
    pub facts: String,
    pub message: Vec<u8>,
}

/// Where a queued message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for a consumer (from `not_before` on).
    Ready,
    /// Claimed by a consumer until its lease ends.
    Leased,
    /// Given up on after the last attempt; kept until requeued or deleted.
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Leased => "leased",
            State::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "ready" => Some(State::Ready),
            "leased" => Some(State::Leased),
            "dead" => Some(State::Dead),
            _ => None,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queued message without its content (`wasmtp queue list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: String,
    pub state: State,
    pub attempts: u32,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub size: u64,
    /// Milliseconds since the epoch, by the database's clock.
    pub created_at: i64,
    /// When it is offered again (ready), or its lease ends (leased).
    pub due_at: i64,
    pub consumer: Option<String>,
    pub last_error: Option<String>,
}

/// A queued message in full (`wasmtp queue show`, and what a claim hands
/// the consumer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub summary: Summary,
    pub facts: String,
    pub message: Vec<u8>,
}

/// A claim: the message, and the lease that acknowledges or releases it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub message: Queued,
    pub lease: Lease,
}

/// Which claim of a message an `ack` or `release` is about: the attempt
/// number. A lease that expired and was claimed again by another consumer
/// has a higher attempt, so the first consumer's ack is refused
/// ([`StoreError::Conflict`]) instead of deleting the message under the
/// second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub attempt: u32,
}

/// Counts by state (`wasmtp queue stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ready: u64,
    pub leased: u64,
    pub dead: u64,
    pub bytes: u64,
    /// Milliseconds since the oldest message was enqueued, if any is.
    pub oldest_age_ms: Option<i64>,
}

/// What a backend does for the queue; input already checked by [`Queue`].
pub trait QueueBackend: Send + Sync {
    /// Store the message durably (one commit shared with concurrent
    /// enqueues when group commit is on). [`StoreError::Conflict`] if the id
    /// is taken.
    fn enqueue(&self, message: NewMessage) -> Fut<'_, ()>;
    /// Lease the next due message to `consumer` for `lease_ms`; a leased
    /// message whose lease has ended counts as due. Leases ended after the
    /// last of `max_attempts` are dead-lettered first.
    fn claim<'a>(
        &'a self,
        consumer: &'a str,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Fut<'a, Option<Claimed>>;
    /// The message is delivered: delete it.
    fn ack<'a>(&'a self, lease: &'a Lease) -> Fut<'a, ()>;
    /// Not delivered: offer it again after `delay_ms`, or dead-letter it if
    /// that was attempt `max_attempts`. The state it is left in.
    fn release<'a>(
        &'a self,
        lease: &'a Lease,
        error: &'a str,
        delay_ms: i64,
        max_attempts: u32,
    ) -> Fut<'a, State>;
    fn list(&self, state: Option<State>, limit: u32) -> Fut<'_, Vec<Summary>>;
    fn show<'a>(&'a self, id: &'a str) -> Fut<'a, Option<Queued>>;
    /// Make a ready or dead message due now with its attempts reset.
    fn requeue<'a>(&'a self, id: &'a str) -> Fut<'a, bool>;
    fn delete<'a>(&'a self, id: &'a str) -> Fut<'a, bool>;
    fn stats(&self) -> Fut<'_, Stats>;
    /// A channel that hears of new due messages as they are committed
    /// (PostgreSQL's `LISTEN`), for consumers that wait for work; `None`
    /// where the engine has no such signal (SQLite: the waiter polls).
    fn notifications(&self) -> Fut<'_, Option<tokio::sync::mpsc::UnboundedReceiver<()>>> {
        Box::pin(async { Ok(None) })
    }
}

/// How often a consumer waiting for work asks again without a signal: for
/// SQLite, and for messages that become due by time (a back-off ending).
const WAIT_POLL_SQLITE: Duration = Duration::from_millis(100);
const WAIT_POLL_SIGNALLED: Duration = Duration::from_secs(2);

/// The queue as the server, consumers and `wasmtp queue` use it.
#[derive(Clone)]
pub struct Queue {
    backend: Arc<dyn QueueBackend>,
    max_attempts: u32,
    backoff: Duration,
}

impl Queue {
    pub fn new(backend: Arc<dyn QueueBackend>, max_attempts: u32, backoff: Duration) -> Queue {
        Queue {
            backend,
            max_attempts: max_attempts.max(1),
            backoff,
        }
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn check_id(id: &str) -> Result<()> {
        if id.is_empty() || id.len() > MAX_QUEUE_ID_BYTES || id.chars().any(|c| c.is_control()) {
            return Err(StoreError::Invalid(format!(
                "a queue id is 1 to {MAX_QUEUE_ID_BYTES} printable bytes"
            )));
        }
        Ok(())
    }

    /// Returns once the message is durable: only then may the client be
    /// told `250`.
    pub async fn enqueue(&self, message: NewMessage) -> Result<()> {
        Self::check_id(&message.id)?;
        if message.rcpt_to.is_empty() {
            return Err(StoreError::Invalid("a message needs a recipient".into()));
        }
        self.backend.enqueue(message).await
    }

    pub async fn claim(&self, consumer: &str, lease: Duration) -> Result<Option<Claimed>> {
        if lease.is_zero() {
            return Err(StoreError::Invalid("a lease is at least 1 ms".into()));
        }
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.backend
            .claim(consumer, lease_ms, self.max_attempts)
            .await
    }

    /// [`Queue::claim`], waiting up to `wait` for a message to become due:
    /// woken at once by a commit on PostgreSQL (`LISTEN`/`NOTIFY`), by
    /// polling on SQLite.
    pub async fn claim_waiting(
        &self,
        consumer: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Claimed>> {
        let deadline = tokio::time::Instant::now() + wait;
        // Listen before the first claim, so a commit between the two is heard.
        let mut signal = if wait.is_zero() {
            None
        } else {
            self.backend.notifications().await?
        };
        loop {
            if let Some(claimed) = self.claim(consumer, lease).await? {
                return Ok(Some(claimed));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let poll = if signal.is_some() {
                WAIT_POLL_SIGNALLED
            } else {
                WAIT_POLL_SQLITE
            };
            let until = deadline.min(now + poll);
            match signal.as_mut() {
                Some(rx) => {
                    if let Ok(None) = tokio::time::timeout_at(until, rx.recv()).await {
                        // The listening connection ended: poll from here on.
                        signal = None;
                    }
                }
                None => tokio::time::sleep_until(until).await,
            }
        }
    }

    pub async fn ack(&self, lease: &Lease) -> Result<()> {
        self.backend.ack(lease).await
    }

    /// Back off `backoff × 2^(attempt-1)` (capped), or `delay` if given.
    pub async fn release(
        &self,
        lease: &Lease,
        error: &str,
        delay: Option<Duration>,
    ) -> Result<State> {
        let delay = delay.unwrap_or_else(|| self.backoff_after(lease.attempt));
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let error: String = error.chars().take(1000).collect();
        self.backend
            .release(lease, &error, delay_ms, self.max_attempts)
            .await
    }

    /// The back-off after attempt `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }

    pub async fn list(&self, state: Option<State>, limit: u32) -> Result<Vec<Summary>> {
        self.backend.list(state, limit).await
    }

    pub async fn show(&self, id: &str) -> Result<Option<Queued>> {
        self.backend.show(id).await
    }

    pub async fn requeue(&self, id: &str) -> Result<bool> {
        self.backend.requeue(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.backend.delete(id).await
    }

    pub async fn stats(&self) -> Result<Stats> {
        self.backend.stats().await
    }
}

// ---- opening ---------------------------------------------------------------

/// The store of a running server: one per process, shared by every plugin
/// and generation.
#[derive(Clone)]
pub struct Store {
    pub kv: Kv,
    pub queue: Queue,
    pub settings: StoreSettings,
}

/// Why the store could not be opened (a config-time failure: the state
/// directory can't be created, the PostgreSQL URL doesn't parse).
#[derive(Debug, thiserror::Error)]
#[error("cannot open the store: {0}")]
pub struct OpenError(pub String);

impl Store {
    /// Open the configured backend. SQLite files are created (with their
    /// directory) at once; PostgreSQL is connected to lazily, so a server
    /// starts while its database is down and serves `4xx` until it is back.
    /// Needs a tokio runtime.
    pub fn open(settings: &StoreSettings) -> Result<Store, OpenError> {
        let (kv, queue): (Arc<dyn KvBackend>, Arc<dyn QueueBackend>) = match &settings.backend {
            BackendSettings::Sqlite { dir } => {
                let kv = sqlite::SqliteKv::open(dir)?;
                let queue = sqlite::SqliteQueue::open(dir, settings.group_commit)?;
                (Arc::new(kv), Arc::new(queue))
            }
            BackendSettings::Postgres { url, pool_size } => {
                let pg = postgres::Postgres::open(url, *pool_size, settings.group_commit)?;
                (Arc::new(pg.clone()), Arc::new(pg))
            }
        };
        Ok(Store {
            kv: Kv::new(kv, settings.ttl_cap),
            queue: Queue::new(queue, settings.queue_attempts, settings.queue_backoff),
            settings: settings.clone(),
        })
    }
}

/// Milliseconds → a `Duration`, negatives as zero.
pub(crate) fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}
