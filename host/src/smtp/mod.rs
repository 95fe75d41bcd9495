//! The SMTP protocol side: parsing, replies, and the session state machine.
//!
//! - [`command`]: framing and parsing command lines (sans-IO).
//! - [`address`]: addresses and ESMTP parameters of MAIL/RCPT/VRFY.
//! - [`data`]: the DATA decoder (sans-IO): dot-unstuffing, terminator, limits.
//! - [`spool`]: where a message waits while plugins read it (memory, or an
//!   unlinked file past a threshold).
//! - [`dsn`]: the syntax of DSN parameters (RFC 3461).
//! - [`reply`]: replies as data, and every reply the host sends by itself.
//! - [`envelope`]: the session and envelope state the host owns.
//! - [`session`]: one session's dialog, calling the plugin's hooks (one
//!   file per verb group under `session/`).
//! - [`connection`]: one accepted connection: PROXY header, TLS, and the
//!   session (or two, around STARTTLS) it runs.

pub mod address;
pub mod command;
pub mod connection;
pub mod data;
pub mod dsn;
pub mod envelope;
pub mod reply;
pub mod session;
pub mod spool;
