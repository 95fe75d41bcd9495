//! The cluster backend: every node shares one PostgreSQL (15 or later),
//! through tokio-postgres and a pool of connections per node.
//!
//! - Compare-and-set is `UPDATE … WHERE revision = $n`, "only if absent" and
//!   counters are `INSERT … ON CONFLICT … RETURNING`: one statement each,
//!   atomic across nodes. Revisions come from a sequence, so a key deleted
//!   and set again never repeats one.
//! - Claims take `FOR UPDATE SKIP LOCKED`, so consumers on many nodes never
//!   wait on, or take, each other's message.
//! - Time is the server's `now()` (`wasmtp_now()`, in milliseconds).
//! - Two pools: the queue's connections run with `synchronous_commit = on`
//!   (a commit is durable, and on a synchronous standby if the server has
//!   one, before `enqueue` returns); the key-value store's with
//!   `synchronous_commit = off` (a crash of the database may lose its last
//!   fraction of a second of counter updates, never corrupts).
//! - Group commit: one task per node takes every enqueue waiting when it
//!   becomes free and inserts them in one transaction.
//! - Connections are made lazily and the schema created on first use, so a
//!   node starts while its database is down and recovers when it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::{
    Claimed, Counter, Entry, Fut, KvBackend, Lease, NewMessage, OpenError, QueueBackend, Queued,
    Result, State, Stats, StoreError, Summary, millis,
};

/// How long to wait for a connection (from the pool, or a new one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one group commit may take before its connection is dropped and
/// its enqueues fail (`451`).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most enqueues one transaction takes.
const MAX_BATCH: usize = 256;

/// The schema, created once by whichever node gets there first (the
/// advisory lock keeps concurrent `CREATE … IF NOT EXISTS` from racing).
const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(4242001);
CREATE OR REPLACE FUNCTION wasmtp_now() RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;
CREATE TABLE IF NOT EXISTS wasmtp_kv (
    ns text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    revision bigint NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS wasmtp_kv_expires ON wasmtp_kv (expires_at);
CREATE SEQUENCE IF NOT EXISTS wasmtp_kv_revision;
CREATE TABLE IF NOT EXISTS wasmtp_queue (
    id text PRIMARY KEY,
    state text NOT NULL,
    attempts integer NOT NULL,
    not_before bigint NOT NULL,
    lease_until bigint,
    consumer text,
    last_error text,
    created_at bigint NOT NULL,
    mail_from text NOT NULL,
    rcpt_to text NOT NULL,
    facts text NOT NULL,
    size bigint NOT NULL,
    message bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS wasmtp_queue_due ON wasmtp_queue (state, not_before);
COMMIT;
";

/// Both halves of the store on one PostgreSQL.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    kv: Pool,
    queue: Pool,
    schema_ready: AtomicBool,
    /// For the connections that `LISTEN` (not pooled: they wait).
    config: tokio_postgres::Config,
    /// The group-commit task's inbox; `None` without group commit.
    batcher: Option<mpsc::UnboundedSender<(NewMessage, oneshot::Sender<Result<()>>)>>,
}

fn pool(
    config: &tokio_postgres::Config,
    synchronous_commit: &str,
    size: usize,
) -> std::result::Result<Pool, OpenError> {
    let mut config = config.clone();
    let options = format!(
        "{} -c synchronous_commit={synchronous_commit}",
        config.get_options().unwrap_or("")
    );
    config.options(options.trim());
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("wasmtp");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| OpenError(format!("cannot make a PostgreSQL pool: {e}")))
}

/// Check a PostgreSQL connection string (`postgresql://…` or `key=value …`).
pub fn parse_url(url: &str) -> std::result::Result<tokio_postgres::Config, String> {
    url.parse::<tokio_postgres::Config>().map_err(|e| {
        let detail = std::error::Error::source(&e).map_or(String::new(), |s| format!(" ({s})"));
        format!("not a PostgreSQL connection string{detail}")
    })
}

impl Postgres {
    /// Make the pools; connects to nothing yet. Needs a tokio runtime when
    /// `group_commit` is on (its task is spawned here).
    pub fn open(
        url: &str,
        pool_size: usize,
        group_commit: bool,
    ) -> std::result::Result<Postgres, OpenError> {
        let config = parse_url(url).map_err(OpenError)?;
        let kv = pool(&config, "off", pool_size)?;
        let queue = pool(&config, "on", pool_size)?;
        let (batcher, inbox) = if group_commit {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let pg = Postgres {
            inner: Arc::new(Inner {
                kv,
                queue,
                config: {
                    let mut config = config.clone();
                    config.connect_timeout(CONNECT_TIMEOUT);
                    config.application_name("wasmtp");
                    config
                },
                schema_ready: AtomicBool::new(false),
                batcher,
            }),
        };
        if let Some(inbox) = inbox {
            // The task holds only a weak reference: it ends with the store.
            let weak = Arc::downgrade(&pg.inner);
            tokio::spawn(group_commit_loop(weak, inbox));
        }
        Ok(pg)
    }

    /// A connection from `pool`, with the schema in place.
    async fn client(&self, pool: &Pool) -> Result<Object> {
        let client = pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: {e}")))?;
        if !self.inner.schema_ready.load(Ordering::Acquire) {
            client.batch_execute(SCHEMA).await.map_err(error)?;
            self.inner.schema_ready.store(true, Ordering::Release);
        }
        Ok(client)
    }

    async fn kv_query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let client = self.client(&self.inner.kv).await?;
        let statement = client.prepare_cached(sql).await.map_err(error)?;
        client.query_opt(&statement, params).await.map_err(error)
    }

    async fn queue_query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let client = self.client(&self.inner.queue).await?;
        let statement = client.prepare_cached(sql).await.map_err(error)?;
        client.query(&statement, params).await.map_err(error)
    }
}

/// A PostgreSQL error as a store error: a unique key is a conflict; bad
/// text or a number out of range is the caller's; anything else (no
/// connection, the server shutting down, a full disk) is unavailability.
fn error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
        Some(c)
            if *c == SqlState::INVALID_TEXT_REPRESENTATION
                || *c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                || *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE =>
        {
            StoreError::Invalid(match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            })
        }
        _ => StoreError::Unavailable(match e.as_db_error() {
            Some(db) => format!("PostgreSQL: {}", db.message()),
            None => format!("PostgreSQL: {e}"),
        }),
    }
}

// ---- key-value -------------------------------------------------------------

const WRITE: &str = "INSERT INTO wasmtp_kv AS k (ns, key, value, revision, expires_at)
    VALUES ($1, $2, $3, nextval('wasmtp_kv_revision'), wasmtp_now() + $4)
    ON CONFLICT (ns, key) DO UPDATE SET
        value = EXCLUDED.value, revision = EXCLUDED.revision, expires_at = EXCLUDED.expires_at";

impl KvBackend for Postgres {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> Fut<'a, Option<Entry>> {
        Box::pin(async move {
            let row = self
                .kv_query_opt(
                    "SELECT value, revision, expires_at - wasmtp_now() FROM wasmtp_kv
                     WHERE ns = $1 AND key = $2 AND expires_at > wasmtp_now()",
                    &[&ns, &key],
                )
                .await?;
            Ok(row.map(|r| Entry {
                value: r.get(0),
                revision: r.get::<_, i64>(1) as u64,
                expires_in: millis(r.get(2)),
            }))
        })
    }

    fn set<'a>(&'a self, ns: &'a str, key: &'a str, value: &'a [u8], ttl_ms: i64) -> Fut<'a, u64> {
        Box::pin(async move {
            let row = self
                .kv_query_opt(
                    &format!("{WRITE} RETURNING revision"),
                    &[&ns, &key, &value, &ttl_ms],
                )
                .await?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
    }

    fn cas<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        value: &'a [u8],
        expected: Option<u64>,
        ttl_ms: i64,
    ) -> Fut<'a, u64> {
        Box::pin(async move {
            let row = match expected {
                None => {
                    self.kv_query_opt(
                        &format!("{WRITE} WHERE k.expires_at <= wasmtp_now() RETURNING revision"),
                        &[&ns, &key, &value, &ttl_ms],
                    )
                    .await?
                }
                Some(revision) => {
                    let revision = revision as i64;
                    self.kv_query_opt(
                        "UPDATE wasmtp_kv SET value = $3, revision = nextval('wasmtp_kv_revision'),
                             expires_at = wasmtp_now() + $4
                         WHERE ns = $1 AND key = $2 AND revision = $5 AND expires_at > wasmtp_now()
                         RETURNING revision",
                        &[&ns, &key, &value, &ttl_ms, &revision],
                    )
                    .await?
                }
            };
            match row {
                Some(r) => Ok(r.get::<_, i64>(0) as u64),
                None => Err(StoreError::Conflict(match expected {
                    Some(r) => format!("the key is not at revision {r}"),
                    None => "the key is present".into(),
                })),
            }
        })
    }

    fn incr<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        delta: i64,
        window_ms: i64,
    ) -> Fut<'a, Counter> {
        Box::pin(async move {
            let row = self
                .kv_query_opt(
                    "INSERT INTO wasmtp_kv AS k (ns, key, value, revision, expires_at)
                     VALUES ($1, $2, convert_to($3::bigint::text, 'UTF8'),
                             nextval('wasmtp_kv_revision'), wasmtp_now() + $4)
                     ON CONFLICT (ns, key) DO UPDATE SET
                         value = CASE WHEN k.expires_at <= wasmtp_now() THEN EXCLUDED.value
                             ELSE convert_to((convert_from(k.value, 'UTF8')::bigint + $3)::text, 'UTF8')
                             END,
                         revision = EXCLUDED.revision,
                         expires_at = CASE WHEN k.expires_at <= wasmtp_now()
                             THEN EXCLUDED.expires_at ELSE k.expires_at END
                     RETURNING convert_from(value, 'UTF8')::bigint, expires_at - wasmtp_now()",
                    &[&ns, &key, &delta, &window_ms],
                )
                .await?
                .ok_or_else(|| StoreError::Unavailable("no row from an upsert".into()))?;
            Ok(Counter {
                value: row.get(0),
                expires_in: millis(row.get(1)),
            })
        })
    }

    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> Fut<'a, bool> {
        Box::pin(async move {
            let row = self
                .kv_query_opt(
                    "DELETE FROM wasmtp_kv WHERE ns = $1 AND key = $2
                     RETURNING expires_at > wasmtp_now()",
                    &[&ns, &key],
                )
                .await?;
            Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
        })
    }

    fn sweep(&self, limit: u64) -> Fut<'_, u64> {
        Box::pin(async move {
            let client = self.client(&self.inner.kv).await?;
            let limit = limit as i64;
            client
                .execute(
                    "DELETE FROM wasmtp_kv WHERE ctid IN
                         (SELECT ctid FROM wasmtp_kv WHERE expires_at <= wasmtp_now() LIMIT $1)",
                    &[&limit],
                )
                .await
                .map_err(error)
        })
    }
}

// ---- the queue -------------------------------------------------------------

const INSERT: &str = "INSERT INTO wasmtp_queue (id, state, attempts, not_before, created_at,
        mail_from, rcpt_to, facts, size, message)
    VALUES ($1, 'ready', 0, wasmtp_now(), wasmtp_now(), $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO NOTHING RETURNING id";

/// The columns of a [`Summary`], in [`summary`]'s order.
const SUMMARY: &str = "id, state, attempts, mail_from, rcpt_to, size, created_at,
    CASE state WHEN 'leased' THEN lease_until ELSE not_before END, consumer, last_error";

fn summary(r: &Row) -> Summary {
    Summary {
        id: r.get(0),
        state: State::parse(r.get(1)).unwrap_or(State::Dead),
        attempts: r.get::<_, i32>(2) as u32,
        mail_from: r.get(3),
        rcpt_to: serde_json::from_str(r.get(4)).unwrap_or_default(),
        size: r.get::<_, i64>(5) as u64,
        created_at: r.get(6),
        due_at: r.get(7),
        consumer: r.get(8),
        last_error: r.get(9),
    }
}

fn queued(r: &Row) -> Queued {
    Queued {
        summary: summary(r),
        facts: r.get(10),
        message: r.get(11),
    }
}

type Waiting = (NewMessage, oneshot::Sender<Result<()>>);

/// Take every enqueue waiting, commit them together, answer each.
async fn group_commit_loop(
    inner: std::sync::Weak<Inner>,
    mut inbox: mpsc::UnboundedReceiver<Waiting>,
) {
    while let Some(first) = inbox.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let pg = Postgres { inner };
        let messages: Vec<&NewMessage> = batch.iter().map(|(m, _)| m).collect();
        let results = match tokio::time::timeout(COMMIT_TIMEOUT, pg.insert(&messages)).await {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => vec![Err(e); batch.len()],
            Err(_) => vec![
                Err(StoreError::Unavailable(
                    "PostgreSQL did not commit in time".into()
                ));
                batch.len()
            ],
        };
        for ((_, reply), result) in batch.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

impl Postgres {
    /// Insert `messages` in one transaction: each one's outcome, or an error
    /// for all (then nothing was committed, or nothing is known to be).
    async fn insert(&self, messages: &[&NewMessage]) -> Result<Vec<Result<()>>> {
        let mut client = self.client(&self.inner.queue).await?;
        let outcome = async {
            let txn = client.transaction().await?;
            let statement = txn.prepare_cached(INSERT).await?;
            let columns: Vec<(String, i64)> = messages
                .iter()
                .map(|m| {
                    let rcpt_to = serde_json::to_string(&m.rcpt_to).expect("strings serialize");
                    (rcpt_to, m.message.len() as i64)
                })
                .collect();
            // Polled together, tokio-postgres pipelines the inserts on the
            // connection: the batch costs one round trip, not one each.
            let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 6]> = messages
                .iter()
                .zip(&columns)
                .map(|(m, (rcpt_to, size))| {
                    [
                        &m.id as _,
                        &m.mail_from as _,
                        rcpt_to as _,
                        &m.facts as _,
                        size as _,
                        &m.message as _,
                    ]
                })
                .collect();
            let rows = futures_util::future::try_join_all(
                params.iter().map(|p| txn.query_opt(&statement, p)),
            )
            .await?;
            let results: Vec<Result<()>> = rows
                .iter()
                .zip(messages)
                .map(|(row, m)| match row {
                    Some(_) => Ok(()),
                    None => Err(StoreError::Conflict(format!("queue id {} is taken", m.id))),
                })
                .collect();
            // Heard by waiting consumers when, and only if, this commits.
            txn.batch_execute("NOTIFY wasmtp_queue").await?;
            txn.commit().await?;
            Ok::<_, tokio_postgres::Error>(results)
        }
        .await;
        match outcome {
            Ok(results) => Ok(results),
            Err(e) => {
                // The connection may be mid-transaction: don't hand it on.
                let _ = Object::take(client);
                Err(error(e))
            }
        }
    }
}

impl QueueBackend for Postgres {
    fn enqueue(&self, message: NewMessage) -> Fut<'_, ()> {
        Box::pin(async move {
            match &self.inner.batcher {
                Some(batcher) => {
                    let (tx, rx) = oneshot::channel();
                    batcher.send((message, tx)).map_err(|_| {
                        StoreError::Unavailable("the group-commit task has stopped".into())
                    })?;
                    rx.await.map_err(|_| {
                        StoreError::Unavailable("the group-commit task has stopped".into())
                    })?
                }
                None => self
                    .insert(&[&message])
                    .await?
                    .pop()
                    .expect("one result per message"),
            }
        })
    }

    fn claim<'a>(
        &'a self,
        consumer: &'a str,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Fut<'a, Option<Claimed>> {
        Box::pin(async move {
            let max = max_attempts as i32;
            self.queue_query(
                "UPDATE wasmtp_queue SET state = 'dead', lease_until = NULL,
                     last_error = 'the lease ended after the last attempt'
                 WHERE state = 'leased' AND lease_until <= wasmtp_now() AND attempts >= $1",
                &[&max],
            )
            .await?;
            let rows = self
                .queue_query(
                    &format!(
                        "UPDATE wasmtp_queue q SET state = 'leased', attempts = q.attempts + 1,
                             lease_until = wasmtp_now() + $1, consumer = $2
                         FROM (SELECT id AS claimed FROM wasmtp_queue
                               WHERE (state = 'ready' AND not_before <= wasmtp_now())
                                  OR (state = 'leased' AND lease_until <= wasmtp_now()
                                      AND attempts < $3)
                               ORDER BY not_before LIMIT 1
                               FOR UPDATE SKIP LOCKED) c
                         WHERE q.id = c.claimed
                         RETURNING {SUMMARY}, facts, message"
                    ),
                    &[&lease_ms, &consumer, &max],
                )
                .await?;
            Ok(rows.first().map(|r| {
                let message = queued(r);
                let lease = Lease {
                    id: message.summary.id.clone(),
                    attempt: message.summary.attempts,
                };
                Claimed { message, lease }
            }))
        })
    }

    fn ack<'a>(&'a self, lease: &'a Lease) -> Fut<'a, ()> {
        Box::pin(async move {
            let attempt = lease.attempt as i32;
            let rows = self
                .queue_query(
                    "DELETE FROM wasmtp_queue WHERE id = $1 AND state = 'leased' AND attempts = $2
                     RETURNING id",
                    &[&lease.id, &attempt],
                )
                .await?;
            if rows.is_empty() {
                return Err(super::sqlite::lease_lost(lease));
            }
            Ok(())
        })
    }

    fn release<'a>(
        &'a self,
        lease: &'a Lease,
        error_text: &'a str,
        delay_ms: i64,
        max_attempts: u32,
    ) -> Fut<'a, State> {
        Box::pin(async move {
            let (attempt, max) = (lease.attempt as i32, max_attempts as i32);
            let rows = self
                .queue_query(
                    "UPDATE wasmtp_queue SET
                         state = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'ready' END,
                         not_before = wasmtp_now() + $4, lease_until = NULL, consumer = NULL,
                         last_error = $5
                     WHERE id = $1 AND state = 'leased' AND attempts = $2
                     RETURNING state",
                    &[&lease.id, &attempt, &max, &delay_ms, &error_text],
                )
                .await?;
            rows.first()
                .and_then(|r| State::parse(r.get(0)))
                .ok_or_else(|| super::sqlite::lease_lost(lease))
        })
    }

    fn list(&self, state: Option<State>, limit: u32) -> Fut<'_, Vec<Summary>> {
        Box::pin(async move {
            let (state, limit) = (state.map(State::as_str), limit as i64);
            let rows = self
                .queue_query(
                    &format!(
                        "SELECT {SUMMARY} FROM wasmtp_queue WHERE $1::text IS NULL OR state = $1
                         ORDER BY created_at, id LIMIT $2"
                    ),
                    &[&state, &limit],
                )
                .await?;
            Ok(rows.iter().map(summary).collect())
        })
    }

    fn show<'a>(&'a self, id: &'a str) -> Fut<'a, Option<Queued>> {
        Box::pin(async move {
            let rows = self
                .queue_query(
                    &format!("SELECT {SUMMARY}, facts, message FROM wasmtp_queue WHERE id = $1"),
                    &[&id],
                )
                .await?;
            Ok(rows.first().map(queued))
        })
    }

    fn requeue<'a>(&'a self, id: &'a str) -> Fut<'a, bool> {
        Box::pin(async move {
            let rows = self
                .queue_query(
                    "WITH due AS (
                         UPDATE wasmtp_queue SET state = 'ready', attempts = 0, not_before = wasmtp_now(),
                             lease_until = NULL, consumer = NULL
                         WHERE id = $1 AND state <> 'leased' RETURNING id)
                     SELECT id, pg_notify('wasmtp_queue', '') FROM due",
                    &[&id],
                )
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> Fut<'a, bool> {
        Box::pin(async move {
            let rows = self
                .queue_query(
                    "DELETE FROM wasmtp_queue WHERE id = $1 RETURNING id",
                    &[&id],
                )
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn stats(&self) -> Fut<'_, Stats> {
        Box::pin(async move {
            let rows = self
                .queue_query(
                    "SELECT count(*) FILTER (WHERE state = 'ready'),
                            count(*) FILTER (WHERE state = 'leased'),
                            count(*) FILTER (WHERE state = 'dead'),
                            COALESCE(sum(size), 0)::bigint,
                            wasmtp_now() - min(created_at)
                     FROM wasmtp_queue",
                    &[],
                )
                .await?;
            let r = rows
                .first()
                .ok_or_else(|| StoreError::Unavailable("no row from an aggregate".into()))?;
            Ok(Stats {
                ready: r.get::<_, i64>(0) as u64,
                leased: r.get::<_, i64>(1) as u64,
                dead: r.get::<_, i64>(2) as u64,
                bytes: r.get::<_, i64>(3) as u64,
                oldest_age_ms: r.get(4),
            })
        })
    }

    fn notifications(&self) -> Fut<'_, Option<mpsc::UnboundedReceiver<()>>> {
        Box::pin(async move {
            let (client, mut connection) = self
                .inner
                .config
                .connect(NoTls)
                .await
                .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: {e}")))?;
            let (tx, rx) = mpsc::unbounded_channel::<()>();
            // The client lives as long as the receiver; dropping it closes
            // the connection.
            let listening = tx.clone();
            // This task drives the connection and passes notifications on;
            // it ends with the connection.
            tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            client
                .batch_execute("LISTEN wasmtp_queue")
                .await
                .map_err(error)?;
            tokio::spawn(async move {
                listening.closed().await;
                drop(client);
            });
            Ok(Some(rx))
        })
    }
}
