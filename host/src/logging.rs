//! Logs: human-readable lines by default, one JSON object a line with
//! `--log-format json` or `[server] log_format = "json"`; and the queue ids
//! that name each mail transaction in them.
//!
//! Every line of a session is logged inside its `session` span (opened in
//! [`crate::server::run`]), so it carries the session's fields:
//!
//! | field | when | what |
//! |---|---|---|
//! | `id` | always | the session id plugins see as `session.id` |
//! | `peer` | always | the socket's peer (behind a proxy: the proxy) |
//! | `listener` | always | the listener's name |
//! | `tenant` | a listener served by one tenant | its name |
//! | `client` | after a PROXY header | the original client |
//! | `tls` | after a TLS handshake | `TLSv1.3` |
//! | `user` | after AUTH | the identity the auth hook accepted (never the credentials) |
//!
//! Transaction lines (sender, recipient, message received, transaction
//! ended) carry `queue_id`. Plugin lines carry `plugin` and `session`.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields (`message` included), and the session span's fields
    /// under `span`.
    Json,
}

/// Install the process's logger: to stderr (stdout belongs to plugins
/// granted it, like Debugging), at the level `-d` chose unless `RUST_LOG`
/// says otherwise.
pub fn init(debug: u8, format: LogFormat) {
    let level = match debug {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,wasmtp={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// A new queue id: 16 upper-case hex digits, unique within this process and
/// very likely across processes and machines. The first 11 digits are the
/// time in microseconds (mod 2^44, ~203 days), so ids sort roughly by time;
/// the last 5 come from a counter that starts at a random value per process.
pub fn queue_id() -> String {
    static COUNTER: OnceLock<AtomicU64> = OnceLock::new();
    let counter = COUNTER.get_or_init(|| AtomicU64::new(random_seed()));
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!("{:011X}{:05X}", micros & ((1 << 44) - 1), n & 0xF_FFFF)
}

/// A random number from the standard library's per-process hash keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::queue_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| {
            id.len() == 16
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        }));
    }
}
