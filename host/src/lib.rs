//! wasmtp: an SMTP server whose every policy and delivery decision is made
//! by WebAssembly component plugins implementing aiosmtpd's handler hooks.
//!
//! # Layout
//!
//! - [`server`]: binds listeners, accepts connections, shuts down gracefully.
//! - [`smtp`]: the protocol — command parsing, replies, the DATA decoder,
//!   and the session state machine that calls the hooks.
//! - [`capability`]: the host imports a plugin is granted one by one
//!   (`kv`, `queue`, `notes`) and the per-transaction state the plugins of
//!   a chain share; [`store`]: the state behind kv and queue (SQLite,
//!   PostgreSQL).
//! - [`plugin`]: the WebAssembly side — engine, loading and checking
//!   components, one instance per session, the host imports and sandbox.
//! - [`capability`]: what plugins may ask of the world when granted:
//!   DNS lookups, mail authentication results.
//! - [`tls`]: certificates and the TLS handshake (STARTTLS, implicit TLS).
//! - [`proxy_protocol`]: the PROXY protocol header in front of a connection.
//! - [`config`]: the TOML config and its checks; [`cli`]: the command line.
//! - [`metrics`]: Prometheus metrics and their `/metrics` endpoint;
//!   [`logging`]: text or JSON logs, queue ids.
//! - [`tool`]: `wasmtp plugin inspect|test`, for plugin authors;
//!   [`check`]: `wasmtp check --config FILE`, for operators.
//!
//! The plugin contract is the WIT package in `wit/` (`smtp.wit`, and one
//! file per granted interface).

pub mod capability;
pub mod check;
pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod proxy_protocol;
pub mod server;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod tool;
