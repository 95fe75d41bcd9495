//! The embedded backend: SQLite files in the state directory, nothing to
//! install (rusqlite's `bundled` SQLite).
//!
//! Two files, each with one writer thread that owns its connection, so no
//! SQLite call ever runs on a tokio worker:
//! - `kv.sqlite`, WAL, `synchronous=NORMAL`: a crash of the machine may
//!   lose the last writes, never corrupts; counters and greylist entries
//!   can afford that;
//! - `queue.sqlite`, WAL, `synchronous=FULL`: a commit is on disk before
//!   `enqueue` returns.
//!
//! Group commit: the writer takes every request waiting when it becomes
//! free and runs them in one transaction (each in its own savepoint, so one
//! refused request doesn't undo the others), so concurrent enqueues share
//! one fsync. With `group_commit = false` each request is its own
//! transaction.
//!
//! Time is SQLite's `unixepoch('subsec')`, read once per request.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Claimed, Counter, Entry, Fut, KvBackend, Lease, NewMessage, OpenError, QueueBackend, Queued,
    Result, State, Stats, StoreError, Summary, millis,
};

/// The most requests one transaction takes.
const MAX_BATCH: usize = 1024;

/// Reports a request's outcome once its transaction has ended: `None` if
/// it committed, the reason otherwise.
type Done = Box<dyn FnOnce(Option<&str>) + Send>;
/// A request: runs on the writer's connection (`None`: the transaction
/// could not start, so don't) and says whether it succeeded.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Done) + Send>;

/// One SQLite file and the thread that writes it.
struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    fn open(
        path: &Path,
        synchronous: &str,
        group_commit: bool,
        schema: &str,
    ) -> std::result::Result<Writer, OpenError> {
        let fail = |e: rusqlite::Error| OpenError(format!("{}: {e}", path.display()));
        let conn = Connection::open(path).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(fail)?;
        // `wasmtp queue` commands open the same file from another process.
        conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
        conn.execute_batch(schema).map_err(fail)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let name = format!(
            "wasmtp-{}",
            path.file_stem().and_then(|s| s.to_str()).unwrap_or("store")
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || write_loop(conn, rx, if group_commit { MAX_BATCH } else { 1 }))
            .map_err(|e| OpenError(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Run `f` in the writer's next transaction; its result once that
    /// transaction has committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Unavailable("cannot start a transaction".into())),
            };
            let ok = result.is_ok();
            let done: Done = Box::new(move |failed| {
                let result = match failed {
                    Some(reason) if ok => Err(StoreError::Unavailable(reason.to_owned())),
                    _ => result,
                };
                let _ = tx.send(result);
            });
            (ok, done)
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }
}

fn write_loop(conn: Connection, rx: mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let reason = e.to_string();
            for job in batch {
                let (_, done) = job(None);
                done(Some(&reason));
            }
            continue;
        }
        let mut dones = Vec::with_capacity(batch.len());
        let mut broken = None;
        for job in batch {
            if broken.is_some() {
                dones.push(job(None).1);
                continue;
            }
            if let Err(e) = conn.execute_batch("SAVEPOINT request") {
                broken = Some(e.to_string());
                dones.push(job(None).1);
                continue;
            }
            let (ok, done) = job(Some(&conn));
            let end = if ok {
                "RELEASE request"
            } else {
                "ROLLBACK TO request; RELEASE request"
            };
            if let Err(e) = conn.execute_batch(end) {
                broken = Some(e.to_string());
            }
            dones.push(done);
        }
        let failed = match broken {
            Some(reason) => Some(reason),
            None => conn.execute_batch("COMMIT").err().map(|e| e.to_string()),
        };
        if failed.is_some() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in dones {
            done(failed.as_deref());
        }
    }
}

/// A SQLite error as a store error: a constraint is a conflict, the rest
/// (I/O, a full disk, a lock held too long) means the store is unavailable.
fn error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The database's clock, in milliseconds since the epoch.
fn now(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        [],
        |r| r.get(0),
    )
    .map_err(error)
}

fn create_dir(dir: &Path) -> std::result::Result<(), OpenError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        OpenError(format!(
            "cannot create the state directory {}: {e}",
            dir.display()
        ))
    })
}

// ---- key-value -------------------------------------------------------------

const KV_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    revision INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
";

/// `kv.sqlite` in the state directory.
pub struct SqliteKv {
    writer: Writer,
}

impl SqliteKv {
    pub fn open(dir: &Path) -> std::result::Result<SqliteKv, OpenError> {
        create_dir(dir)?;
        // Kept apart from the queue's file: a counter doesn't wait behind a
        // batch of messages being fsynced, and needs no fsync of its own.
        let writer = Writer::open(&dir.join("kv.sqlite"), "NORMAL", true, KV_SCHEMA)?;
        Ok(SqliteKv { writer })
    }
}

/// The live entry under `(ns, key)` at `now`.
fn live(conn: &Connection, ns: &str, key: &str, now: i64) -> Result<Option<Entry>> {
    conn.prepare_cached(
        "SELECT value, revision, expires_at FROM kv WHERE ns = ?1 AND key = ?2 AND expires_at > ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![ns, key, now], |r| {
            Ok(Entry {
                value: r.get(0)?,
                revision: r.get::<_, i64>(1)? as u64,
                expires_in: millis(r.get::<_, i64>(2)? - now),
            })
        })
        .optional()
    })
    .map_err(error)
}

fn next_revision(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(error)
}

fn write(conn: &Connection, ns: &str, key: &str, value: &[u8], expires_at: i64) -> Result<u64> {
    let revision = next_revision(conn)?;
    conn.prepare_cached(
        "INSERT INTO kv (ns, key, value, revision, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (ns, key) DO UPDATE SET
             value = excluded.value, revision = excluded.revision, expires_at = excluded.expires_at",
    )
    .and_then(|mut s| s.execute(params![ns, key, value, revision, expires_at]))
    .map_err(error)?;
    Ok(revision as u64)
}

impl KvBackend for SqliteKv {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> Fut<'a, Option<Entry>> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        Box::pin(
            self.writer
                .call(move |conn| live(conn, &ns, &key, now(conn)?)),
        )
    }

    fn set<'a>(&'a self, ns: &'a str, key: &'a str, value: &'a [u8], ttl_ms: i64) -> Fut<'a, u64> {
        let (ns, key, value) = (ns.to_owned(), key.to_owned(), value.to_vec());
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            write(conn, &ns, &key, &value, now.saturating_add(ttl_ms))
        }))
    }

    fn cas<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        value: &'a [u8],
        expected: Option<u64>,
        ttl_ms: i64,
    ) -> Fut<'a, u64> {
        let (ns, key, value) = (ns.to_owned(), key.to_owned(), value.to_vec());
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            let current = live(conn, &ns, &key, now)?.map(|e| e.revision);
            if current != expected {
                return Err(StoreError::Conflict(match current {
                    Some(r) => format!("the key is at revision {r}"),
                    None => "the key is absent".into(),
                }));
            }
            write(conn, &ns, &key, &value, now.saturating_add(ttl_ms))
        }))
    }

    fn incr<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        delta: i64,
        window_ms: i64,
    ) -> Fut<'a, Counter> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            let (start, expires_at) = match live(conn, &ns, &key, now)? {
                Some(e) => (
                    parse_counter(&e.value)?,
                    now + e.expires_in.as_millis() as i64,
                ),
                None => (0, now.saturating_add(window_ms)),
            };
            let value = start
                .checked_add(delta)
                .ok_or_else(|| StoreError::Invalid("the counter would overflow".into()))?;
            write(conn, &ns, &key, value.to_string().as_bytes(), expires_at)?;
            Ok(Counter {
                value,
                expires_in: millis(expires_at - now),
            })
        }))
    }

    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> Fut<'a, bool> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            let was_live = live(conn, &ns, &key, now)?.is_some();
            conn.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")
                .and_then(|mut s| s.execute(params![ns, key]))
                .map_err(error)?;
            Ok(was_live)
        }))
    }

    fn sweep(&self, limit: u64) -> Fut<'_, u64> {
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            conn.prepare_cached(
                "DELETE FROM kv WHERE (ns, key) IN
                     (SELECT ns, key FROM kv WHERE expires_at <= ?1 LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![now, limit as i64]))
            .map(|n| n as u64)
            .map_err(error)
        }))
    }
}

/// A counter's stored value: a decimal number.
pub(super) fn parse_counter(value: &[u8]) -> Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Invalid("the key holds a value that is not a counter".into()))
}

// ---- the queue -------------------------------------------------------------

const QUEUE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    lease_until INTEGER,
    consumer TEXT,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,
    facts TEXT NOT NULL,
    size INTEGER NOT NULL,
    message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, not_before);
";

/// The columns of a [`Summary`], in [`summary`]'s order.
const SUMMARY: &str = "id, state, attempts, mail_from, rcpt_to, size, created_at,
    CASE state WHEN 'leased' THEN lease_until ELSE not_before END, consumer, last_error";

fn summary(r: &Row<'_>) -> rusqlite::Result<Summary> {
    let state: String = r.get(1)?;
    let rcpt_to: String = r.get(4)?;
    Ok(Summary {
        id: r.get(0)?,
        state: State::parse(&state).unwrap_or(State::Dead),
        attempts: r.get::<_, i64>(2)? as u32,
        mail_from: r.get(3)?,
        rcpt_to: serde_json::from_str(&rcpt_to).unwrap_or_default(),
        size: r.get::<_, i64>(5)? as u64,
        created_at: r.get(6)?,
        due_at: r.get(7)?,
        consumer: r.get(8)?,
        last_error: r.get(9)?,
    })
}

fn queued(conn: &Connection, id: &str) -> Result<Option<Queued>> {
    conn.prepare_cached(&format!(
        "SELECT {SUMMARY}, facts, message FROM queue WHERE id = ?1"
    ))
    .and_then(|mut s| {
        s.query_row(params![id], |r| {
            Ok(Queued {
                summary: summary(r)?,
                facts: r.get(10)?,
                message: r.get(11)?,
            })
        })
        .optional()
    })
    .map_err(error)
}

/// `queue.sqlite` in the state directory.
pub struct SqliteQueue {
    writer: Writer,
}

impl SqliteQueue {
    pub fn open(dir: &Path, group_commit: bool) -> std::result::Result<SqliteQueue, OpenError> {
        create_dir(dir)?;
        let writer = Writer::open(
            &dir.join("queue.sqlite"),
            "FULL",
            group_commit,
            QUEUE_SCHEMA,
        )?;
        Ok(SqliteQueue { writer })
    }
}

impl QueueBackend for SqliteQueue {
    fn enqueue(&self, m: NewMessage) -> Fut<'_, ()> {
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            let rcpt_to = serde_json::to_string(&m.rcpt_to).expect("strings serialize");
            conn.prepare_cached(
                "INSERT INTO queue (id, state, attempts, not_before, created_at, mail_from,
                     rcpt_to, facts, size, message)
                 VALUES (?1, 'ready', 0, ?2, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    m.id,
                    now,
                    m.mail_from,
                    rcpt_to,
                    m.facts,
                    m.message.len() as i64,
                    m.message
                ])
            })
            .map_err(|e| match error(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("queue id {} is taken", m.id))
                }
                other => other,
            })?;
            Ok(())
        }))
    }

    fn claim<'a>(
        &'a self,
        consumer: &'a str,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Fut<'a, Option<Claimed>> {
        let consumer = consumer.to_owned();
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            conn.prepare_cached(
                "UPDATE queue SET state = 'dead', lease_until = NULL,
                     last_error = 'the lease ended after the last attempt'
                 WHERE state = 'leased' AND lease_until <= ?1 AND attempts >= ?2",
            )
            .and_then(|mut s| s.execute(params![now, max_attempts]))
            .map_err(error)?;
            let id: Option<String> = conn
                .prepare_cached(
                    "SELECT id FROM queue
                     WHERE (state = 'ready' AND not_before <= ?1)
                        OR (state = 'leased' AND lease_until <= ?1 AND attempts < ?2)
                     ORDER BY not_before LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row(params![now, max_attempts], |r| r.get(0))
                        .optional()
                })
                .map_err(error)?;
            let Some(id) = id else { return Ok(None) };
            conn.prepare_cached(
                "UPDATE queue SET state = 'leased', attempts = attempts + 1,
                     lease_until = ?2, consumer = ?3 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, now.saturating_add(lease_ms), consumer]))
            .map_err(error)?;
            let message = queued(conn, &id)?.expect("the row was just updated");
            let lease = Lease {
                id,
                attempt: message.summary.attempts,
            };
            Ok(Some(Claimed { message, lease }))
        }))
    }

    fn ack<'a>(&'a self, lease: &'a Lease) -> Fut<'a, ()> {
        let lease = lease.clone();
        Box::pin(self.writer.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM queue WHERE id = ?1 AND state = 'leased' AND attempts = ?2",
                )
                .and_then(|mut s| s.execute(params![lease.id, lease.attempt]))
                .map_err(error)?;
            if n == 0 {
                return Err(lease_lost(&lease));
            }
            Ok(())
        }))
    }

    fn release<'a>(
        &'a self,
        lease: &'a Lease,
        error_text: &'a str,
        delay_ms: i64,
        max_attempts: u32,
    ) -> Fut<'a, State> {
        let (lease, error_text) = (lease.clone(), error_text.to_owned());
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            let state: Option<String> = conn
                .prepare_cached(
                    "UPDATE queue SET
                         state = CASE WHEN attempts >= ?3 THEN 'dead' ELSE 'ready' END,
                         not_before = ?4, lease_until = NULL, consumer = NULL, last_error = ?5
                     WHERE id = ?1 AND state = 'leased' AND attempts = ?2
                     RETURNING state",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            lease.id,
                            lease.attempt,
                            max_attempts,
                            now.saturating_add(delay_ms),
                            error_text
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(error)?;
            match state.as_deref().and_then(State::parse) {
                Some(state) => Ok(state),
                None => Err(lease_lost(&lease)),
            }
        }))
    }

    fn list(&self, state: Option<State>, limit: u32) -> Fut<'_, Vec<Summary>> {
        Box::pin(self.writer.call(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {SUMMARY} FROM queue WHERE ?1 IS NULL OR state = ?1
                 ORDER BY created_at, id LIMIT ?2"
            ))
            .and_then(|mut s| {
                s.query_map(params![state.map(State::as_str), limit], summary)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(error)
        }))
    }

    fn show<'a>(&'a self, id: &'a str) -> Fut<'a, Option<Queued>> {
        let id = id.to_owned();
        Box::pin(self.writer.call(move |conn| queued(conn, &id)))
    }

    fn requeue<'a>(&'a self, id: &'a str) -> Fut<'a, bool> {
        let id = id.to_owned();
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            conn.prepare_cached(
                "UPDATE queue SET state = 'ready', attempts = 0, not_before = ?2,
                     lease_until = NULL, consumer = NULL
                 WHERE id = ?1 AND state <> 'leased'",
            )
            .and_then(|mut s| s.execute(params![id, now]))
            .map(|n| n > 0)
            .map_err(error)
        }))
    }

    fn delete<'a>(&'a self, id: &'a str) -> Fut<'a, bool> {
        let id = id.to_owned();
        Box::pin(self.writer.call(move |conn| {
            conn.prepare_cached("DELETE FROM queue WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id]))
                .map(|n| n > 0)
                .map_err(error)
        }))
    }

    fn stats(&self) -> Fut<'_, Stats> {
        Box::pin(self.writer.call(move |conn| {
            let now = now(conn)?;
            conn.query_row(
                "SELECT
                     COALESCE(SUM(state = 'ready'), 0), COALESCE(SUM(state = 'leased'), 0),
                     COALESCE(SUM(state = 'dead'), 0), COALESCE(SUM(size), 0), MIN(created_at)
                 FROM queue",
                [],
                |r| {
                    Ok(Stats {
                        ready: r.get::<_, i64>(0)? as u64,
                        leased: r.get::<_, i64>(1)? as u64,
                        dead: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                        oldest_age_ms: r.get::<_, Option<i64>>(4)?.map(|t| now - t),
                    })
                },
            )
            .map_err(error)
        }))
    }
}

pub(super) fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::Conflict(format!(
        "the lease of {} (attempt {}) is no longer held",
        lease.id, lease.attempt
    ))
}
