//! The SMTP protocol side: parsing, replies, and the session state machine.
//!
//! - [`command`]: framing and parsing command lines (sans-IO).
//! - [`address`]: addresses and ESMTP parameters of MAIL/RCPT/VRFY.
//! - [`data`]: the DATA decoder (sans-IO): dot-unstuffing, terminator, limits.
//! - [`reply`]: replies as data, and every reply the host sends by itself.
//! - [`envelope`]: the session and envelope state the host owns.
//! - [`session`]: one connection's dialog, calling the plugin's hooks.

pub mod address;
pub mod command;
pub mod data;
pub mod envelope;
pub mod reply;
pub mod session;
