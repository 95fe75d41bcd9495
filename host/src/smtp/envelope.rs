//! The host-owned state a session's hooks see: the session and the envelope
//! of the current transaction (aiosmtpd's `Session` and `Envelope`). Plugins
//! get snapshots of these; only the host writes them (DESIGN.md, decision 3).

use std::net::SocketAddr;
use std::sync::Arc;

/// One connection.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: u64,
    pub listener: Arc<str>,
    pub server_hostname: Arc<str>,
    pub peer: SocketAddr,
    pub host_name: Option<String>,
    pub extended_smtp: bool,
    pub lmtp: bool,
    pub authenticated: bool,
    pub auth_identity: Option<String>,
}

/// The current mail transaction.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub mail_from: Option<String>,
    pub mail_options: Vec<String>,
    pub smtp_utf8: bool,
    pub rcpt_tos: Vec<String>,
    pub rcpt_options: Vec<Vec<String>>,
}
