//! Envelope edits (`wasmtp:smtp/envelope`): replace the sender, add or
//! remove recipients — milter's `chgfrom`, `addrcpt`, `delrcpt` — for
//! aliases, forwarding, an archive copy. The server applies them, so the
//! plugins after this one and the delivering plugin see the edited
//! envelope. (Named `edit_envelope` so that a hook's `envelope` argument
//! does not hide it.)
//!
//! ```ignore
//! use wasmtp_plugin::edit_envelope;
//! fn rcpt(&mut self, _: &Session, _: &Envelope, address: &str, _: &[String]) -> Option<Reply> {
//!     if address.eq_ignore_ascii_case("sales@example.com") {
//!         edit_envelope::remove_recipient(address).ok();         // the alias...
//!         edit_envelope::add_recipient("anne@example.com").ok(); // ...goes to anne
//!     }
//!     None
//! }
//! ```
//!
//! **Needs `grants.envelope = true`** in the plugin's `[plugin.NAME.grants]`
//! (a plugin that never calls this module does not import it).
//!
//! Where: in `mail` and `rcpt` the edits take effect when the command is
//! accepted, against the envelope as it will then be (in `rcpt`, the
//! recipient being given is already in it); in `data` at once, for the
//! plugins after this one. On a listener with tenants, a tenant's plugins
//! edit only in `data`, their own envelope. Anywhere else:
//! `Error::Unavailable`. Addresses are checked with the server's own parser
//! (`Error::Invalid`), recipients stay within `max_recipients`
//! (`Error::Budget`).

pub use crate::wit::envelope::Error;

/// Replace the sender (`"<>"` for the null sender).
pub fn set_sender(address: &str) -> Result<(), Error> {
    crate::wit::envelope::set_sender(address)
}

/// Add a recipient; one already there is left as it is.
pub fn add_recipient(address: &str) -> Result<(), Error> {
    crate::wit::envelope::add_recipient(address)
}

/// Remove a recipient (case-insensitively); `true` if it was one.
pub fn remove_recipient(address: &str) -> Result<bool, Error> {
    crate::wit::envelope::remove_recipient(address)
}
