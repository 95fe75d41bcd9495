//! WebAssembly plugins: loading components, and running their hooks for
//! SMTP sessions.
//!
//! - [`runtime`]: the engine and linker shared by every plugin.
//! - [`loaded`]: a compiled, checked, pre-linked plugin ([`Plugin`]).
//! - [`instance`]: one plugin instance per SMTP session, and the [`Chain`]
//!   that passes each hook along a listener's plugins ([`SessionPlugin`]).
//! - [`reuse`]: instances that serve successive sessions, for plugins
//!   marked `instances = "reuse"`.
//! - [`host`]: what the host gives a plugin: its imports and its sandbox.
//! - [`convert`]: host session/envelope/reply ↔ WIT types.
//! - [`builtin`]: the reference plugins embedded in the binary.

pub mod bindings;
pub mod builtin;
pub mod convert;
pub mod host;
pub mod instance;
pub mod loaded;
pub mod reuse;
pub mod runtime;

pub use instance::{Chain, SessionPlugin, Tenant};
pub use loaded::{FailurePolicy, Hook, Plugin, PluginError, PluginSpec};
pub use runtime::Runtime;
