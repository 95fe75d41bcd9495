//! Log lines in the server's log, tagged with the plugin's name and the
//! session id: `wasmtp_plugin::log::info("...")` or
//! `wasmtp_plugin::info!("{} recipients", n)`.

pub use crate::wit::log::Level;

/// Writes one line at `level`. Control characters become spaces and long
/// lines are cut by the host.
pub fn log(level: Level, message: &str) {
    crate::wit::log::log(level, message)
}

pub fn trace(message: &str) {
    log(Level::Trace, message)
}

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}

/// `trace!("format", args...)`: a formatted log line.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log::trace(&::std::format!($($arg)*)) }; }
/// `debug!("format", args...)`: a formatted log line.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::debug(&::std::format!($($arg)*)) }; }
/// `info!("format", args...)`: a formatted log line.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::info(&::std::format!($($arg)*)) }; }
/// `warn!("format", args...)`: a formatted log line.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::warn(&::std::format!($($arg)*)) }; }
/// `error!("format", args...)`: a formatted log line.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::error(&::std::format!($($arg)*)) }; }
