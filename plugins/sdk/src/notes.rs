//! The transaction's notes (`wasmtp:smtp/notes`): a small key → value map
//! shared by the plugins of a chain, Haraka's `transaction.notes`. One
//! plugin writes what it learned, the next reads it:
//!
//! ```ignore
//! // in a policy plugin's rcpt or data hook
//! wasmtp_plugin::notes::set("spam-score", "7.5")?;
//! // in a plugin later in the chain
//! let score: f32 = wasmtp_plugin::notes::get("spam-score").and_then(|s| s.parse().ok()).unwrap_or(0.0);
//! ```
//!
//! **Needs `grants.notes = true`** in the plugin's `[plugin.NAME.grants]`:
//! a plugin that calls any function of this module imports the interface,
//! and the server refuses to load it without the grant. A plugin that
//! never calls one does not import it.
//!
//! The notes are cleared when the transaction ends (after DATA, RSET, a new
//! HELO/EHLO). Bounds: a key is 1–128 bytes of printable ASCII without
//! spaces, a value at most 16 KiB; at most 128 notes and 64 KiB per
//! transaction. A call past a bound stores nothing and returns the error.

pub use crate::wit::notes::Error;

/// The value of `key`, if some plugin of the chain set it in this transaction.
pub fn get(key: &str) -> Option<String> {
    crate::wit::notes::get(key)
}

/// Set `key` to `value` (replacing an earlier value).
pub fn set(key: &str, value: &str) -> Result<(), Error> {
    crate::wit::notes::set(key, value)
}

/// Remove `key`; `true` if it was there.
pub fn remove(key: &str) -> bool {
    crate::wit::notes::remove(key)
}

/// Every key, in the order they were first set.
pub fn keys() -> Vec<String> {
    crate::wit::notes::keys()
}
