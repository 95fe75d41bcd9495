//! A plugin ready to serve sessions: compiled, checked against the WIT
//! version, linked, with the set of hooks it exports known up front
//! (DESIGN.md, decision 2), and its arguments accepted by its `setup` hook.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, InstancePre};

use super::bindings::{WIT_PACKAGE, WIT_VERSION, hooks};
use super::builtin;
use super::host::{Grants, HostState};
use super::instance::Live;
use super::runtime::Runtime;

/// The hooks of the WIT package, one exported interface each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Setup,
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Auth,
    Proxy,
    Starttls,
    Exception,
    /// LMTP's per-recipient end of DATA.
    LmtpData,
    /// Not an SMTP hook: `reuse.reset`, between two sessions served by one
    /// instance (`instances = "reuse"`).
    Reuse,
}

impl Hook {
    pub const ALL: [Hook; 16] = [
        Hook::Setup,
        Hook::Helo,
        Hook::Ehlo,
        Hook::Mail,
        Hook::Rcpt,
        Hook::Data,
        Hook::Rset,
        Hook::Noop,
        Hook::Quit,
        Hook::Vrfy,
        Hook::Auth,
        Hook::Proxy,
        Hook::Starttls,
        Hook::Exception,
        Hook::LmtpData,
        Hook::Reuse,
    ];

    /// The interface name in the WIT package (`rcpt` in `wasmtp:smtp/rcpt@0.1.0`).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Setup => "setup",
            Hook::Helo => "helo",
            Hook::Ehlo => "ehlo",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::Data => "data",
            Hook::Rset => "rset",
            Hook::Noop => "noop",
            Hook::Quit => "quit",
            Hook::Vrfy => "vrfy",
            Hook::Auth => "auth",
            Hook::Proxy => "proxy",
            Hook::Starttls => "starttls",
            Hook::Exception => "exception",
            Hook::LmtpData => "lmtp-data",
            Hook::Reuse => "reuse",
        }
    }

    pub fn export_name(self) -> String {
        format!("{WIT_PACKAGE}/{}@{WIT_VERSION}", self.name())
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug)]
pub enum Source {
    Builtin(&'static builtin::Builtin),
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Builtin(b) => write!(f, "built-in plugin `{}`", b.name),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Source {
    /// A built-in name (`sink`, `debugging`, `mailbox`) or a path to a component.
    pub fn parse(name: &str) -> Source {
        match builtin::find(name) {
            Some(b) if !name.contains('/') => Source::Builtin(b),
            _ => Source::File(PathBuf::from(name)),
        }
    }
}

/// Per-plugin bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most linear memory one instance may have, in bytes.
    pub memory: usize,
    /// How long one hook call may run.
    pub hook_timeout: Duration,
    /// Instructions (wasmtime fuel units) one hook call may execute, when
    /// the server counts fuel (`[server] fuel = true`).
    pub fuel: Option<u64>,
    /// How many of this plugin's hook calls may run at once, across all
    /// sessions; more wait their turn. `None`: no limit. Bounds the CPU a
    /// busy or spinning plugin can take from everything else.
    pub max_concurrent_calls: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            hook_timeout: Duration::from_secs(30),
            fuel: None,
            max_concurrent_calls: None,
        }
    }
}

/// What a plugin's failure (trap, timeout, out-of-memory, invalid reply)
/// costs the session. The instance is discarded in every case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// `451 4.3.0`: the client retries later. The default.
    #[default]
    Tempfail,
    /// `554 5.3.0`: the client gives up.
    Reject,
    /// Go on as if the plugin had answered `none` (the next plugin of the
    /// chain, or the host's default). For plugins whose opinion is optional.
    Skip,
    /// `421 4.3.0` and close the connection.
    Disconnect,
}

/// What the config or command line says about one plugin.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// The name it is known by in logs and errors.
    pub name: String,
    pub source: Source,
    pub args: Vec<String>,
    pub grants: Grants,
    pub limits: Limits,
    pub on_failure: FailurePolicy,
    /// `instances = "reuse"`: one instance may serve successive sessions.
    pub reuse: Option<Reuse>,
}

/// How an instance is reused across sessions (`instances = "reuse"`; see
/// `wit/smtp.wit`, interface `reuse`). Off by default: each session gets a
/// fresh instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// Sessions one instance serves before it is dropped and a fresh one
    /// started (bounds what a slow leak in the plugin can grow to).
    pub max_sessions: u32,
    /// Idle instances kept per listener or tenant for the next sessions;
    /// one that finds the pool full is dropped.
    pub max_idle: usize,
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            max_sessions: 1000,
            max_idle: 64,
        }
    }
}

/// Why a plugin could not be loaded. Each names the plugin and says, in one
/// sentence, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}`: cannot read {path}: {reason}")]
    Read {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin `{plugin}`: {source_name} is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { plugin: String, source_name: String },
    #[error("plugin `{plugin}`: {source_name} is not a valid WebAssembly component: {reason}")]
    Invalid {
        plugin: String,
        source_name: String,
        reason: String,
    },
    #[error(
        "plugin `{plugin}`: {source_name} was built against {found}, but this server speaks {WIT_PACKAGE}@{WIT_VERSION}; rebuild it against the WIT files of this version"
    )]
    WitVersion {
        plugin: String,
        source_name: String,
        found: String,
    },
    #[error(
        "plugin `{plugin}`: {source_name} exports `{export}`, which is not a hook of {WIT_PACKAGE}@{WIT_VERSION}"
    )]
    UnknownExport {
        plugin: String,
        source_name: String,
        export: String,
    },
    #[error(
        "plugin `{plugin}`: {source_name} imports {import}, which needs `grants.{grant}` in [plugin.{section}.grants]"
    )]
    NotGranted {
        plugin: String,
        source_name: String,
        import: String,
        grant: &'static str,
        /// The config section the grant goes in (`inbox` for the tenant copy `acme/inbox`).
        section: String,
    },
    #[error(
        "plugin `{plugin}`: {source_name} needs an import this server does not provide: {reason}"
    )]
    Link {
        plugin: String,
        source_name: String,
        reason: String,
    },
    #[error("plugin `{plugin}`: {message}")]
    ArgsRefused { plugin: String, message: String },
    #[error("plugin `{plugin}`: failed while starting: {reason}")]
    Start { plugin: String, reason: String },
    #[error(
        "plugin `{plugin}`: `instances = \"reuse\"`, but {source_name} does not export {WIT_PACKAGE}/reuse@{WIT_VERSION}, which reuse needs (its `reset` forgets one session before the next); export it, or leave `instances` at \"per-session\""
    )]
    NotReusable { plugin: String, source_name: String },
}

macro_rules! hook_indices {
    ($($field:ident: $hook:ident),* $(,)?) => {
        /// The export indices of the hooks a plugin provides; `None` for the
        /// hooks it leaves to the host's default.
        #[derive(Clone, Default)]
        pub struct HookIndices {
            $(pub $field: Option<hooks::$field::GuestIndices>,)*
        }

        impl HookIndices {
            fn find(pre: &InstancePre<HostState>) -> HookIndices {
                HookIndices { $($field: hooks::$field::GuestIndices::new(pre).ok(),)* }
            }

            pub fn has(&self, hook: Hook) -> bool {
                match hook {
                    $(Hook::$hook => self.$field.is_some(),)*
                }
            }
        }
    };
}

hook_indices! {
    setup: Setup, helo: Helo, ehlo: Ehlo, mail: Mail, rcpt: Rcpt, data: Data, rset: Rset,
    noop: Noop, quit: Quit, vrfy: Vrfy, auth: Auth, proxy: Proxy, starttls: Starttls,
    exception: Exception, lmtp_data: LmtpData, reuse: Reuse,
}

/// A loaded plugin. Shared by every session of a listener; each session
/// instantiates it on its own ([`super::SessionPlugin`]).
pub struct Plugin {
    pub name: Arc<str>,
    pub source: Source,
    pub args: Vec<String>,
    pub grants: Grants,
    pub limits: Limits,
    pub on_failure: FailurePolicy,
    /// Whether (and how) one instance serves successive sessions.
    pub reuse: Option<Reuse>,
    pub runtime: Arc<Runtime>,
    /// The resolver and verifier of the generation that loaded it.
    pub services: Arc<crate::capability::Services>,
    pub pre: InstancePre<HostState>,
    pub hooks: HookIndices,
    /// Permits for `limits.max_concurrent_calls`.
    pub calls: Option<Arc<tokio::sync::Semaphore>>,
}

impl Plugin {
    /// Compile, check and link `spec`, and have the plugin accept its
    /// arguments.
    pub async fn load(
        runtime: &Arc<Runtime>,
        spec: PluginSpec,
    ) -> Result<Arc<Plugin>, PluginError> {
        let plugin = spec.name.clone();
        let source_name = spec.source.to_string();
        let bytes: std::borrow::Cow<'static, [u8]> = match &spec.source {
            Source::Builtin(b) => b.wasm.into(),
            Source::File(path) => std::fs::read(path)
                .map_err(|e| PluginError::Read {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .into(),
        };
        // A core module has layer 0 in the header's version field; a
        // component has layer 1. Say which it is rather than a parse error.
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0, 0] {
            return Err(PluginError::CoreModule {
                plugin,
                source_name,
            });
        }
        let engine = runtime.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| PluginError::Engine(e.to_string()))?
            .map_err(|e| PluginError::Invalid {
                plugin: plugin.clone(),
                source_name: source_name.clone(),
                reason: format!("{e:#}"),
            })?;

        check_exports(&runtime.engine, &component, &plugin, &source_name)?;
        // Before linking: the linker provides every import, granted or not.
        let imports = component.component_type();
        let imports = imports.imports(&runtime.engine).map(|(name, _)| name);
        if let Err(e) = crate::capability::check_imports(imports, &spec.grants) {
            return Err(PluginError::NotGranted {
                section: plugin
                    .split_once('/')
                    .map_or(plugin.as_str(), |(_, p)| p)
                    .to_owned(),
                plugin,
                source_name,
                import: e.import,
                grant: e.grant,
            });
        }

        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link {
                plugin: plugin.clone(),
                source_name: source_name.clone(),
                reason: format!("{e:#}"),
            })?;
        let hooks = HookIndices::find(&pre);
        if spec.reuse.is_some() && !hooks.has(Hook::Reuse) {
            return Err(PluginError::NotReusable {
                plugin,
                source_name,
            });
        }

        let max_concurrent_calls = spec.limits.max_concurrent_calls;
        let loaded = Arc::new(Plugin {
            name: plugin.clone().into(),
            source: spec.source,
            args: spec.args,
            grants: spec.grants,
            limits: spec.limits,
            on_failure: spec.on_failure,
            reuse: spec.reuse,
            runtime: runtime.clone(),
            services: runtime.services(),
            pre,
            hooks,
            calls: max_concurrent_calls.map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1)))),
        });

        // aiosmtpd's from_cli: without `setup` a plugin takes no arguments.
        if !loaded.hooks.has(Hook::Setup) {
            if !loaded.args.is_empty() {
                return Err(PluginError::ArgsRefused {
                    plugin,
                    message: format!("takes no arguments, but was given {}", loaded.args.len()),
                });
            }
        } else {
            // Instantiating runs setup.init with the arguments.
            Live::start(&loaded, 0).await.map_err(|e| match e {
                super::instance::StartError::Refused(message) => PluginError::ArgsRefused {
                    plugin: plugin.clone(),
                    message,
                },
                super::instance::StartError::Failed(reason) => PluginError::Start {
                    plugin: plugin.clone(),
                    reason,
                },
            })?;
        }
        Ok(loaded)
    }
}

/// Refuse a component built for another version of the WIT package, or one
/// exporting something under `wasmtp:smtp/` that is not a hook.
fn check_exports(
    engine: &wasmtime::Engine,
    component: &Component,
    plugin: &str,
    source_name: &str,
) -> Result<(), PluginError> {
    let prefix = format!("{WIT_PACKAGE}/");
    for (name, _) in component.component_type().exports(engine) {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !compatible(version) {
            let found = if version.is_empty() {
                WIT_PACKAGE.to_owned()
            } else {
                format!("{WIT_PACKAGE}@{version}")
            };
            return Err(PluginError::WitVersion {
                plugin: plugin.to_owned(),
                source_name: source_name.to_owned(),
                found,
            });
        }
        if !Hook::ALL.iter().any(|h| h.name() == interface) {
            return Err(PluginError::UnknownExport {
                plugin: plugin.to_owned(),
                source_name: source_name.to_owned(),
                export: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// Semver compatibility as the component model applies it: for 0.x
/// versions, the same minor version.
fn compatible(version: &str) -> bool {
    let mut ours = WIT_VERSION.split('.');
    let mut theirs = version.split('.');
    let (Some(om), Some(on)) = (ours.next(), ours.next()) else {
        return false;
    };
    matches!((theirs.next(), theirs.next()), (Some(tm), Some(tn)) if tm == om && (om != "0" || tn == on))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_compatibility() {
        assert!(super::compatible("0.1.0"));
        assert!(super::compatible("0.1.7"));
        assert!(!super::compatible("0.2.0"));
        assert!(!super::compatible("1.1.0"));
        assert!(!super::compatible(""));
    }
}
