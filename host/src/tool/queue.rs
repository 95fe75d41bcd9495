//! `wasmtp queue ...`: the durable queue, for operators and consumers.
//!
//! - `list`, `show ID`, `stats`, `requeue ID`, `delete ID`: look at the
//!   queue and repair it;
//! - `claim`, `ack ID ATTEMPT`, `release ID ATTEMPT`: the consumer protocol
//!   from a shell or any language (README, "The queue: consumers"):
//!   `claim` prints one message as a JSON object, or nothing when none is
//!   due, and the consumer answers with `ack` or `release`.
//!
//! The store is the one a config file names (`--config`), a SQLite state
//! directory (`--state-dir`), or a PostgreSQL server (`--postgres URL`).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use clap::{Parser, Subcommand};

use crate::store::{
    BackendSettings, Lease, Queue, Queued, State, Store, StoreError, StoreSettings, Summary,
};

/// Look at, repair and consume the durable queue.
#[derive(Debug, Parser)]
#[command(name = "wasmtp queue", version, max_term_width = 100)]
pub struct QueueCli {
    /// Use the `[store]` of this config file.
    #[arg(long, value_name = "FILE", global = true, conflicts_with_all = ["state_dir", "postgres"])]
    pub config: Option<PathBuf>,
    /// Use the SQLite store in this state directory (default /var/lib/wasmtp).
    #[arg(
        long = "state-dir",
        value_name = "DIR",
        global = true,
        conflicts_with = "postgres"
    )]
    pub state_dir: Option<PathBuf>,
    /// Use the PostgreSQL store at this connection string.
    #[arg(long, value_name = "URL", global = true)]
    pub postgres: Option<String>,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// The queued messages, oldest first: id, state, attempts, size, age,
    /// sender and recipients.
    List {
        /// Only messages in this state: ready, leased or dead.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One message: its envelope, session facts and state; with
    /// `--message`, the message itself (raw, as received).
    Show {
        id: String,
        #[arg(long)]
        message: bool,
    },
    /// Counts by state, bytes queued, the oldest message's age.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Make a dead (or waiting) message due now, its attempts reset.
    Requeue { id: String },
    /// Remove a message from the queue for good.
    Delete { id: String },
    /// Lease the next due message: prints it as one JSON object (id,
    /// attempt, mail_from, rcpt_to, facts, message in base64), or nothing
    /// (exit 0) when none is due.
    Claim {
        /// The consumer's name, shown by `list` while it holds the lease.
        #[arg(long, default_value = "cli")]
        consumer: String,
        /// Seconds the lease lasts; unacknowledged by then, the message
        /// goes to the next consumer that claims.
        #[arg(long, default_value_t = 300.0)]
        lease: f64,
        /// Seconds to wait for a message when none is due (0: answer at
        /// once). A consumer loops on `claim --wait`: woken as soon as a
        /// message is committed on PostgreSQL, within 0.1 s on SQLite.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
    },
    /// The message of this claim (id and attempt, from `claim`) is
    /// delivered: remove it.
    Ack { id: String, attempt: u32 },
    /// The message of this claim was not delivered: offer it again after
    /// the back-off, or dead-letter it if that was the last attempt.
    Release {
        id: String,
        attempt: u32,
        /// Why it was not delivered (shown by `list` and `show`).
        #[arg(long, default_value = "")]
        error: String,
        /// Seconds before it is offered again, instead of the back-off.
        #[arg(long)]
        delay: Option<f64>,
    },
}

/// Runs `wasmtp queue ...`; `args` starts with `queue`.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = QueueCli::parse_from(args);
    let settings = match settings(&cli) {
        Ok(s) => s,
        Err(message) => return fail(2, &message),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let store = match Store::open(&settings) {
            Ok(store) => store,
            Err(e) => return fail(1, &e.to_string()),
        };
        match run(&store.queue, cli.command).await {
            Ok(code) => code,
            Err(Failure::Usage(m)) => fail(2, &m),
            Err(Failure::Store(e)) => fail(1, &e.to_string()),
            Err(Failure::NotFound(id)) => fail(1, &format!("no message {id} in the queue")),
        }
    })
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("wasmtp queue: error: {message}");
    ExitCode::from(code)
}

fn settings(cli: &QueueCli) -> Result<StoreSettings, String> {
    if let Some(path) = &cli.config {
        return crate::config::Config::load(path)
            .map(|c| c.store)
            .map_err(|e| e.to_string());
    }
    let mut settings = StoreSettings::default();
    if let Some(url) = &cli.postgres {
        crate::store::postgres::parse_url(url).map_err(|m| format!("--postgres: {m}"))?;
        settings.backend = BackendSettings::Postgres {
            url: url.clone(),
            pool_size: 2,
        };
    } else if let Some(dir) = &cli.state_dir {
        settings.backend = BackendSettings::Sqlite { dir: dir.clone() };
    }
    Ok(settings)
}

enum Failure {
    Usage(String),
    Store(StoreError),
    NotFound(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration, Failure> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(Failure::Usage(format!(
            "{flag}: {value} is not a number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

async fn run(queue: &Queue, command: QueueCommand) -> Result<ExitCode, Failure> {
    let mut out = std::io::stdout().lock();
    match command {
        QueueCommand::List { state, limit, json } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(State::parse(s).ok_or_else(|| {
                    Failure::Usage(format!(
                        "--state: `{s}` is not a state (ready, leased, dead)"
                    ))
                })?),
            };
            let now = now_ms();
            let messages = queue.list(state, limit).await?;
            if !json {
                let _ = writeln!(
                    out,
                    "{:<24} {:<7} {:>8} {:>10} {:>8}  FROM -> TO",
                    "ID", "STATE", "ATTEMPTS", "SIZE", "AGE"
                );
            }
            for m in &messages {
                if json {
                    let _ = writeln!(out, "{}", summary_json(m));
                } else {
                    let _ = writeln!(
                        out,
                        "{:<24} {:<7} {:>8} {:>10} {:>7}s  <{}> -> {}",
                        m.id,
                        m.state,
                        m.attempts,
                        m.size,
                        (now - m.created_at).max(0) / 1000,
                        m.mail_from,
                        m.rcpt_to.join(", ")
                    );
                }
            }
        }
        QueueCommand::Show { id, message } => {
            let q = queue.show(&id).await?.ok_or(Failure::NotFound(id))?;
            if message {
                let _ = out.write_all(&q.message);
            } else {
                let mut v = summary_json(&q.summary);
                v["facts"] = serde_json::from_str(&q.facts).unwrap_or(serde_json::Value::Null);
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
            }
        }
        QueueCommand::Stats { json } => {
            let s = queue.stats().await?;
            let v = serde_json::json!({
                "ready": s.ready,
                "leased": s.leased,
                "dead": s.dead,
                "bytes": s.bytes,
                "oldest_age_s": s.oldest_age_ms.map(|ms| ms / 1000),
            });
            if json {
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(
                    out,
                    "ready {}\nleased {}\ndead {}\nbytes {}\noldest_age_s {}",
                    s.ready,
                    s.leased,
                    s.dead,
                    s.bytes,
                    s.oldest_age_ms
                        .map_or("-".into(), |ms| (ms / 1000).to_string())
                );
            }
        }
        QueueCommand::Requeue { id } => {
            if !queue.requeue(&id).await? {
                return Err(Failure::NotFound(format!("{id} (or it is leased)")));
            }
        }
        QueueCommand::Delete { id } => {
            if !queue.delete(&id).await? {
                return Err(Failure::NotFound(id));
            }
        }
        QueueCommand::Claim {
            consumer,
            lease,
            wait,
        } => {
            let lease = seconds(lease, "--lease")?;
            let wait = seconds(wait, "--wait")?;
            if let Some(c) = queue.claim_waiting(&consumer, lease, wait).await? {
                let _ = writeln!(out, "{}", claimed_json(&c.message, c.lease.attempt));
            }
        }
        QueueCommand::Ack { id, attempt } => {
            queue.ack(&Lease { id, attempt }).await?;
        }
        QueueCommand::Release {
            id,
            attempt,
            error,
            delay,
        } => {
            let delay = delay.map(|d| seconds(d, "--delay")).transpose()?;
            let state = queue.release(&Lease { id, attempt }, &error, delay).await?;
            let _ = writeln!(out, "{state}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn summary_json(m: &Summary) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "state": m.state.as_str(),
        "attempts": m.attempts,
        "mail_from": m.mail_from,
        "rcpt_to": m.rcpt_to,
        "size": m.size,
        "created_at_ms": m.created_at,
        "due_at_ms": m.due_at,
        "consumer": m.consumer,
        "last_error": m.last_error,
    })
}

fn claimed_json(q: &Queued, attempt: u32) -> serde_json::Value {
    serde_json::json!({
        "id": q.summary.id,
        "attempt": attempt,
        "mail_from": q.summary.mail_from,
        "rcpt_to": q.summary.rcpt_to,
        "facts": serde_json::from_str::<serde_json::Value>(&q.facts).unwrap_or(serde_json::Value::Null),
        "message": base64::engine::general_purpose::STANDARD.encode(&q.message),
    })
}
