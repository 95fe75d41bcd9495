//! Header edits (`wasmtp:smtp/headers`): add a field on top of the message,
//! remove or rename fields by name. The host applies them to what every
//! later reader of the message sees — the plugins after this one in the
//! chain and the delivering plugin (Mailbox stores the edited message) —
//! without rewriting the received message.
//!
//! ```ignore
//! use wasmtp_plugin::headers;
//! headers::add("X-Spam-Score", "7.5")?;
//! headers::rename("X-Spam-Flag", "X-Original-Spam-Flag")?;
//! // RFC 8601 §5: incoming Authentication-Results claiming our authserv-id
//! headers::remove_claiming("Authentication-Results", "mx.example.com")?;
//! ```
//!
//! **Needs `grants.headers = true`** in the plugin's `[plugin.NAME.grants]`
//! (a plugin that never calls this module does not import it).
//!
//! Edits may be made from any hook of a transaction and are dropped with
//! it. In `data`, your own reads of the message see it as it was when your
//! call began; the plugins after you see your edits. `add` puts the field on
//! top (the last added is first). Names compare case-insensitively. A value
//! may fold (a line break followed by a space or tab) and holds no other
//! line break or control character: anything else is `Error::Invalid`, and
//! nothing is changed. At most 64 edits and 64 KiB of added fields per
//! transaction (`Error::Budget`).

pub use crate::wit::headers::Error;

/// Add `name: value` on top of the header block.
pub fn add(name: &str, value: &str) -> Result<(), Error> {
    crate::wit::headers::add(name, value)
}

/// Remove every field named `name`; how many the message (as this call
/// sees it) had.
pub fn remove(name: &str) -> Result<u32, Error> {
    crate::wit::headers::remove(name)
}

/// Rename every field named `name` to `new_name`, keeping the values.
pub fn rename(name: &str, new_name: &str) -> Result<u32, Error> {
    crate::wit::headers::rename(name, new_name)
}

/// Remove the fields named `name` whose value starts with `authserv_id`
/// (RFC 8601 §5: an `Authentication-Results` field claiming to be ours).
pub fn remove_claiming(name: &str, authserv_id: &str) -> Result<u32, Error> {
    crate::wit::headers::remove_claiming(name, authserv_id)
}

/// Rename the fields [`remove_claiming`] would remove to `new_name`.
pub fn rename_claiming(name: &str, authserv_id: &str, new_name: &str) -> Result<u32, Error> {
    crate::wit::headers::rename_claiming(name, authserv_id, new_name)
}
