//! Plugins as one session uses them: one instance of each plugin per SMTP
//! session (DESIGN.md, decision 1), and the chain that passes each hook
//! along the plugins that serve a listener.
//!
//! An instance is created the first time the session reaches a hook its
//! plugin exports, lives in its own `Store` (so sessions never see each
//! other's plugin state), and is dropped with the session. A hook that traps,
//! runs past its deadline or returns an invalid reply loses the instance and
//! costs the session what the plugin's failure policy says; the host state
//! it was given was a copy, so nothing is left half-written (decision 3).
//!
//! ## The chain
//!
//! A hook goes to each plugin that exports it, in the configured order:
//! - a plugin that answers `none` passes the hook on to the next one;
//! - a plugin that answers with a reply decides, and the chain stops there;
//! - when no plugin decides, the host applies its default.
//!
//! With one plugin this is exactly aiosmtpd's single-handler behaviour.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Instance;
use wasmtime::{Store, UpdateDeadline};

use crate::capability::envelope::{Editor, Op};
use crate::capability::headers::MessageView;
use crate::capability::mail_auth::{AuthInput, AuthSlot};
use crate::capability::queue::Delivery;
use crate::smtp::envelope::{Envelope, Peer, SessionInfo};
use crate::smtp::reply::{self, Reply};
use crate::smtp::spool::Content;

use super::bindings::hooks::auth;
use super::bindings::types::{self, ErrorKind};
use super::convert;
use super::host::HostState;
use super::loaded::{FailurePolicy, Hook, Plugin};
use super::reuse::InstancePool;
use super::runtime::Running;
use crate::proxy_protocol::ProxyHeader;
use crate::smtp::session::{AuthDecision, Credentials};

/// The outcome of a hook as the session sees it: `Ok(None)` for the host's
/// default, `Ok(Some(reply))` for a decision, `Err(reply)` for the reply to
/// send because a plugin failed.
pub type HookResult<T> = Result<T, Reply>;

/// How long past its deadline a hook blocked in a host call is given before
/// its call is abandoned (a running hook is stopped by the epoch callback first).
const WAIT_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// The epoch callback's error: the hook's deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the hook ran past its deadline")]
struct DeadlineExceeded;

/// Why an instance could not be started.
#[derive(Debug)]
pub enum StartError {
    /// `setup.init` refused the arguments, with this message.
    Refused(String),
    /// Instantiation or `setup.init` failed.
    Failed(String),
}

/// A live instance and its store.
pub struct Live {
    store: Store<HostState>,
    instance: Instance,
    /// Sessions this instance has served, the current one included (more
    /// than one only with `instances = "reuse"`).
    sessions: u32,
}

impl Live {
    /// Instantiate `plugin` and hand it its arguments.
    pub async fn start(plugin: &Arc<Plugin>, session_id: u64) -> Result<Live, StartError> {
        let failed = |e: wasmtime::Error| StartError::Failed(format!("{e:#}"));
        let wasi = plugin.grants.wasi_ctx().map_err(failed)?;
        let state = HostState::new(plugin, wasi, session_id);
        let mut store = Store::new(&plugin.runtime.engine, state);
        store.limiter(|state| &mut state.memory);
        // Each epoch tick, a running hook either yields to tokio (so it never
        // holds a worker thread for long) or, past its deadline, is stopped.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        if plugin.runtime.fuel {
            let _ = store.set_fuel(plugin.limits.fuel.unwrap_or(u64::MAX));
        }
        let _running = plugin.runtime.ticker.running();
        let instance = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(failed)?;
        let mut live = Live {
            store,
            instance,
            sessions: 1,
        };
        if let Some(setup) = &plugin.hooks.setup {
            let _running = live.arm(plugin);
            let guest = setup
                .load(&mut live.store, &live.instance)
                .map_err(failed)?;
            guest
                .call_init(&mut live.store, &plugin.args)
                .await
                .map_err(failed)?
                .map_err(StartError::Refused)?;
        }
        Ok(live)
    }

    /// Sessions served so far, the current one included.
    pub fn sessions(&self) -> u32 {
        self.sessions
    }

    /// Serve session `session_id` next (an instance taken from a
    /// [`super::reuse::InstancePool`]).
    pub fn enter_session(&mut self, session_id: u64) {
        self.sessions = self.sessions.saturating_add(1);
        self.store.data_mut().session_id = session_id;
    }

    /// Between two sessions: the host forgets the one that ended, then the
    /// plugin's `reuse.reset` runs, bounded like a hook call (deadline,
    /// fuel, `max_concurrent_calls`). `Err` says why the instance must go.
    pub async fn reset(&mut self, plugin: &Plugin) -> Result<(), String> {
        self.store.data_mut().forget_session();
        let indices = plugin
            .hooks
            .reuse
            .as_ref()
            .ok_or("the plugin does not export reuse")?;
        let _turn = turn(plugin).await.map_err(|NoTurn| NO_TURN)?;
        let _running = self.arm(plugin);
        let _timer = CallTimer::start(&plugin.name, Hook::Reuse);
        let guest = indices
            .load(&mut self.store, &self.instance)
            .map_err(|e| format!("{e:#}"))?;
        let limit = plugin.limits.hook_timeout + WAIT_GRACE;
        let call = tokio::time::timeout(limit, guest.call_reset(&mut self.store));
        let answer = if plugin.grants.files_on_calling_thread() {
            on_blocking_thread(call).await
        } else {
            call.await
        };
        match answer {
            Err(_) => Err(DeadlineExceeded.to_string()),
            Ok(Err(trap)) => Err(trap.root_cause().to_string()),
            Ok(Ok(refused)) => refused,
        }
    }

    /// Start the clock (and refill the fuel) for one hook call.
    /// The call runs while the returned guard lives: it keeps the epoch
    /// advancing, so the deadline and the yields work.
    #[must_use = "the epoch stops advancing when the guard is dropped"]
    fn arm(&mut self, plugin: &Plugin) -> Running {
        self.store.data_mut().deadline = Instant::now() + plugin.limits.hook_timeout;
        if let Some(dns) = &mut self.store.data_mut().dns {
            dns.used = 0;
        }
        self.store.set_epoch_deadline(1);
        if plugin.runtime.fuel {
            // Fails only when the engine does not count fuel; it does here.
            let _ = self.store.set_fuel(plugin.limits.fuel.unwrap_or(u64::MAX));
        }
        plugin.runtime.ticker.running()
    }
}

/// No turn came for a call within the hook deadline.
struct NoTurn;

const NO_TURN: &str = "no turn to run within the hook deadline (max_concurrent_calls)";

/// Wait for a turn to call into `plugin` when its concurrent calls are
/// limited (`max_concurrent_calls`); `Ok(None)` when they are not.
async fn turn(plugin: &Plugin) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, NoTurn> {
    let Some(calls) = &plugin.calls else {
        return Ok(None);
    };
    match tokio::time::timeout(plugin.limits.hook_timeout, calls.acquire()).await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        _ => Err(NoTurn),
    }
}

/// A command hook call and its own arguments.
#[derive(Clone, Copy)]
pub enum HookCall<'a> {
    Helo {
        hostname: &'a str,
    },
    Ehlo {
        hostname: &'a str,
        planned: &'a types::Reply,
    },
    Mail {
        address: &'a str,
        options: &'a [String],
    },
    Rcpt {
        address: &'a str,
        options: &'a [String],
    },
    Data {
        content: &'a Arc<MessageView>,
    },
    Rset,
    Noop {
        arg: &'a str,
    },
    Quit,
    Vrfy {
        address: &'a str,
    },
}

impl HookCall<'_> {
    pub fn hook(&self) -> Hook {
        match self {
            HookCall::Helo { .. } => Hook::Helo,
            HookCall::Ehlo { .. } => Hook::Ehlo,
            HookCall::Mail { .. } => Hook::Mail,
            HookCall::Rcpt { .. } => Hook::Rcpt,
            HookCall::Data { .. } => Hook::Data,
            HookCall::Rset => Hook::Rset,
            HookCall::Noop { .. } => Hook::Noop,
            HookCall::Quit => Hook::Quit,
            HookCall::Vrfy { .. } => Hook::Vrfy,
        }
    }
}

/// The WIT name of an error kind, for logs.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Trap => "trap",
        ErrorKind::Timeout => "timeout",
        ErrorKind::OutOfMemory => "out-of-memory",
        ErrorKind::InvalidReply => "invalid-reply",
    }
}

/// Times one hook call for the metrics, from its start to the guard's drop
/// (whatever the call's outcome); does nothing when metrics are off.
struct CallTimer {
    plugin: Arc<str>,
    hook: Hook,
    started: Instant,
}

impl CallTimer {
    fn start(plugin: &Arc<str>, hook: Hook) -> Option<CallTimer> {
        crate::metrics::get()?;
        Some(CallTimer {
            plugin: plugin.clone(),
            hook,
            started: Instant::now(),
        })
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        if let Some(m) = crate::metrics::get() {
            m.hook_call(&self.plugin, self.hook, self.started.elapsed());
        }
    }
}

/// A failure of one hook call.
struct Failure {
    kind: ErrorKind,
    message: String,
}

/// What a plugin's failure means for the chain.
enum Failed {
    /// Send this reply; the chain stops.
    Reply(Reply),
    /// The failure policy says to go on as if the plugin had answered `none`.
    Skip,
}

/// One plugin's instance for one session.
pub struct PluginInstance {
    plugin: Arc<Plugin>,
    session_id: u64,
    live: Option<Live>,
    /// Where the instance comes from and goes back to, for a plugin
    /// reused across sessions (`instances = "reuse"`).
    pool: Option<Arc<InstancePool>>,
    /// The transaction's queue id, handed to the instance with each call.
    queue_id: Option<String>,
    /// What mail authentication is about (client, HELO, MAIL FROM) and the
    /// transaction's shared verification, handed over likewise.
    auth: Option<(AuthInput, bool, AuthSlot)>,
    /// The transaction's shared state, handed to the instance with each
    /// call when the plugin is granted an import that uses it.
    shared: Option<crate::capability::Shared>,
    /// Whether the next calls may edit the message (not a tenant's plugin
    /// before `data`).
    edits_allowed: bool,
    /// The envelope the next call may edit, handed in by the chain and
    /// back with the call's edits when it succeeded.
    editor: Option<Editor>,
}

/// The session is over: a reusable instance goes back to its pool (which
/// resets it); any other is dropped with its store.
impl Drop for PluginInstance {
    fn drop(&mut self) {
        if let (Some(pool), Some(live)) = (&self.pool, self.live.take()) {
            pool.give_back(Arc::clone(&self.plugin), live);
        }
    }
}

impl PluginInstance {
    fn new(
        plugin: Arc<Plugin>,
        session_id: u64,
        pool: Option<Arc<InstancePool>>,
    ) -> PluginInstance {
        PluginInstance {
            plugin,
            session_id,
            live: None,
            pool,
            queue_id: None,
            auth: None,
            shared: None,
            edits_allowed: false,
            editor: None,
        }
    }

    /// The session and transaction the next hook calls belong to.
    fn enter(&mut self, session: &SessionInfo, envelope: &Envelope, edits_allowed: bool) {
        self.edits_allowed = edits_allowed;
        self.queue_id.clone_from(&envelope.queue_id);
        if self.plugin.grants.shares_transaction() {
            self.shared = Some(envelope.shared.clone());
        }
        if self.plugin.grants.mail_auth {
            self.auth = match &session.peer {
                Peer::Ip(addr) => Some((
                    AuthInput {
                        client_ip: addr.ip(),
                        helo: session.host_name.clone().unwrap_or_default(),
                        mail_from: match envelope.mail_from.as_deref() {
                            Some("<>") | None => String::new(),
                            Some(from) => from.to_owned(),
                        },
                        hostname: session.server_hostname.to_string(),
                    },
                    envelope.mail_from.is_some(),
                    envelope.auth.clone(),
                )),
                Peer::Unix(_) => None,
            };
        }
    }

    fn has(&self, hook: Hook) -> bool {
        self.plugin.hooks.has(hook)
    }

    async fn live(&mut self) -> wasmtime::Result<&mut Live> {
        if self.live.is_none()
            && let Some(live) = self.pool.as_ref().and_then(|p| p.take(self.session_id))
        {
            if let Some(m) = crate::metrics::get() {
                m.reuse(&self.plugin.name);
            }
            self.live = Some(live);
        }
        if self.live.is_none() {
            let started = Instant::now();
            let live = Live::start(&self.plugin, self.session_id)
                .await
                .map_err(|e| match e {
                    StartError::Refused(m) => {
                        wasmtime::format_err!("setup.init refused its arguments: {m}")
                    }
                    StartError::Failed(m) => wasmtime::format_err!("{m}"),
                })?;
            if let Some(m) = crate::metrics::get() {
                m.instantiation(&self.plugin.name, started.elapsed());
            }
            self.live = Some(live);
        }
        let live = self.live.as_mut().expect("just set");
        let state = live.store.data_mut();
        state.queue_id.clone_from(&self.queue_id);
        if let Some(access) = &mut state.mail_auth {
            match &self.auth {
                Some((input, has_mail_from, slot)) => {
                    access.input = Some(input.clone());
                    access.has_mail_from = *has_mail_from;
                    access.slot = slot.clone();
                }
                None => access.input = None,
            }
        }
        state.capabilities.shared.clone_from(&self.shared);
        state.capabilities.edits_allowed = self.edits_allowed;
        state.capabilities.envelope = self.editor.take();
        Ok(live)
    }

    /// Call one command hook; the caller checked that the plugin exports it.
    async fn call(
        &mut self,
        session: &SessionInfo,
        s: &types::Session,
        e: &types::Envelope,
        call: HookCall<'_>,
    ) -> Result<Option<Reply>, Failed> {
        // Wait for a turn when the plugin's concurrent calls are limited; a
        // turn that doesn't come within the hook deadline counts as a timeout.
        let plugin = self.plugin.clone();
        let _turn = match turn(&plugin).await {
            Ok(turn) => turn,
            Err(NoTurn) => {
                let failure = Failure {
                    kind: ErrorKind::Timeout,
                    message: NO_TURN.into(),
                };
                return Err(self.fail(call.hook(), session, failure).await);
            }
        };
        let mark = self.shared.as_ref().map(crate::capability::Shared::mark);
        // The epoch deadline stops wasm that runs; this one also stops a hook
        // waiting in a host call (a socket read, say), which no epoch reaches.
        let limit = plugin.limits.hook_timeout + WAIT_GRACE;
        let invoke = tokio::time::timeout(limit, self.invoke(s, e, call));
        let answer = if plugin.grants.files_on_calling_thread() {
            on_blocking_thread(invoke).await
        } else {
            invoke.await
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(_) => Err(DeadlineExceeded.into()),
        };
        // The envelope's edits come back with a call that succeeds.
        let edited = self
            .live
            .as_mut()
            .and_then(|live| live.store.data_mut().capabilities.envelope.take());
        let failure = match answer {
            Ok(None) => {
                self.editor = edited;
                return Ok(None);
            }
            Ok(Some(reply)) => match convert::from_wit_reply(reply) {
                Ok(reply) => {
                    self.editor = edited;
                    return Ok(Some(reply));
                }
                Err(message) => Failure {
                    kind: ErrorKind::InvalidReply,
                    message,
                },
            },
            Err(error) => self.classify(error),
        };
        if let (Some(shared), Some(mark)) = (&self.shared, mark) {
            shared.rollback(mark);
        }
        Err(self.fail(call.hook(), session, failure).await)
    }

    async fn invoke(
        &mut self,
        s: &types::Session,
        e: &types::Envelope,
        call: HookCall<'_>,
    ) -> wasmtime::Result<Option<types::Reply>> {
        let plugin = self.plugin.clone();
        let hooks = &plugin.hooks;
        let live = self.live().await?;
        let _running = live.arm(&plugin);
        let (store, instance) = (&mut live.store, &live.instance);
        let missing =
            || wasmtime::format_err!("the plugin does not export the {} hook", call.hook());
        let _timer = CallTimer::start(&plugin.name, call.hook());
        match call {
            HookCall::Helo { hostname } => {
                hooks
                    .helo
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_helo(store, s, e, hostname)
                    .await
            }
            HookCall::Ehlo { hostname, planned } => {
                hooks
                    .ehlo
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_ehlo(store, s, e, hostname, planned)
                    .await
            }
            HookCall::Mail { address, options } => {
                hooks
                    .mail
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_mail(store, s, e, address, options)
                    .await
            }
            HookCall::Rcpt { address, options } => {
                hooks
                    .rcpt
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_rcpt(store, s, e, address, options)
                    .await
            }
            HookCall::Data { content } => {
                let guest = hooks
                    .data
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?;
                // The content is readable through the `content` import for
                // the duration of the call, without being copied in.
                store.data_mut().set_content(Some(content.clone()));
                store.data_mut().delivery =
                    store.data().queue.is_some().then(|| Delivery::new(s, e));
                let answer = guest.call_handle_data(&mut *store, s, e).await;
                store.data_mut().set_content(None);
                store.data_mut().delivery = None;
                answer
            }
            HookCall::Rset => {
                hooks
                    .rset
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_rset(store, s, e)
                    .await
            }
            HookCall::Noop { arg } => {
                hooks
                    .noop
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_noop(store, s, e, arg)
                    .await
            }
            HookCall::Quit => {
                hooks
                    .quit
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_quit(store, s, e)
                    .await
            }
            HookCall::Vrfy { address } => {
                hooks
                    .vrfy
                    .as_ref()
                    .ok_or_else(missing)?
                    .load(&mut *store, instance)?
                    .call_handle_vrfy(store, s, e, address)
                    .await
            }
        }
    }

    fn classify(&self, error: wasmtime::Error) -> Failure {
        let out_of_memory = self
            .live
            .as_ref()
            .is_some_and(|l| l.store.data().memory.hit);
        let out_of_fuel =
            error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel);
        let kind = if error.downcast_ref::<DeadlineExceeded>().is_some() || out_of_fuel {
            ErrorKind::Timeout
        } else if out_of_memory {
            ErrorKind::OutOfMemory
        } else {
            ErrorKind::Trap
        };
        // The root cause ("wasm trap: ...", "the hook ran past its deadline")
        // without wasmtime's multi-line backtrace: one log line per failure.
        Failure {
            kind,
            message: error.root_cause().to_string(),
        }
    }

    /// Discard the failed instance, log the failure, and answer as the
    /// plugin's failure policy says; for a policy that replies, the plugin's
    /// `exception` hook (on a fresh instance) may choose the reply instead.
    async fn fail(&mut self, hook: Hook, session: &SessionInfo, failure: Failure) -> Failed {
        self.live = None;
        if let Some(m) = crate::metrics::get() {
            m.hook_failure(&self.plugin.name, hook, kind_name(failure.kind));
        }
        let policy = self.plugin.on_failure;
        tracing::warn!(
            plugin = &*self.plugin.name,
            session = self.session_id,
            hook = hook.name(),
            kind = kind_name(failure.kind),
            ?policy,
            "plugin failed: {}",
            failure.message
        );
        let default = match policy {
            FailurePolicy::Skip => return Failed::Skip,
            FailurePolicy::Tempfail => reply::PLUGIN_FAILED.clone(),
            FailurePolicy::Reject => reply::PLUGIN_FAILED_REJECT.clone(),
            FailurePolicy::Disconnect => reply::PLUGIN_FAILED_DISCONNECT.clone(),
        };
        if !self.has(Hook::Exception) {
            return Failed::Reply(default);
        }
        let error = types::Error {
            kind: failure.kind,
            hook: hook.name().to_owned(),
            message: failure.message,
        };
        let plugin = self.plugin.clone();
        let wit_session = convert::session(session);
        let answer = match self.live().await {
            Ok(live) => {
                let _running = live.arm(&plugin);
                let indices = plugin.hooks.exception.as_ref().expect("checked above");
                let _timer = CallTimer::start(&plugin.name, Hook::Exception);
                match indices.load(&mut live.store, &live.instance) {
                    Ok(guest) => {
                        guest
                            .call_handle_exception(&mut live.store, &wit_session, &error)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let chosen = match answer {
            Ok(Some(reply)) => convert::from_wit_reply(reply)
                .map_err(|m| {
                    tracing::warn!(
                        plugin = &*self.plugin.name,
                        session = self.session_id,
                        "exception hook returned an invalid reply: {m}"
                    )
                })
                .ok(),
            Ok(None) => None,
            Err(e) => {
                self.live = None;
                tracing::warn!(
                    plugin = &*self.plugin.name,
                    session = self.session_id,
                    "exception hook failed: {e:#}"
                );
                None
            }
        };
        Failed::Reply(chosen.unwrap_or(default))
    }
}

/// The ordered plugins that serve a listener or a tenant, and the tenants
/// that take over recipients in their domains.
pub struct Chain {
    /// The chain's name in logs: the listener's or the tenant's.
    pub name: Arc<str>,
    /// The plugins, in order. May be empty when every recipient must belong
    /// to a tenant.
    pub plugins: Vec<Arc<Plugin>>,
    /// Tenants whose recipients are routed to their own chain.
    pub tenants: Vec<Tenant>,
    /// Per plugin, the idle instances of this chain's sessions when the
    /// plugin is reused across sessions (`instances = "reuse"`): per
    /// chain, so never shared by two listeners or two tenants.
    pools: Vec<Option<Arc<InstancePool>>>,
}

/// A named chain serving the recipients of some domains.
pub struct Tenant {
    pub name: Arc<str>,
    /// Lower-case domains; a recipient `user@DOMAIN` in one of them is the tenant's.
    pub domains: Vec<String>,
    pub chain: Arc<Chain>,
}

impl Chain {
    /// A chain of plugins without tenants.
    pub fn of(name: &str, plugins: Vec<Arc<Plugin>>) -> Chain {
        Chain::new(name, plugins, Vec::new())
    }

    /// A chain of plugins, and the tenants that take over some recipients.
    pub fn new(name: &str, plugins: Vec<Arc<Plugin>>, tenants: Vec<Tenant>) -> Chain {
        let pools = plugins
            .iter()
            .map(|p| p.reuse.map(|reuse| Arc::new(InstancePool::new(p, reuse))))
            .collect();
        Chain {
            name: name.into(),
            plugins,
            tenants,
            pools,
        }
    }

    /// Idle instances waiting for this chain's next sessions, per plugin
    /// (`instances = "reuse"`), for logs and tests.
    pub fn idle_instances(&self) -> usize {
        self.pools.iter().flatten().map(|p| p.idle()).sum()
    }

    /// Whether any plugin of the chain or of its tenants exports `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        self.plugins.iter().any(|p| p.hooks.has(hook))
            || self.tenants.iter().any(|t| t.chain.has(hook))
            // Recipients of no tenant are refused when the chain has no plugin to ask.
            || (hook == Hook::Rcpt && !self.tenants.is_empty() && self.plugins.is_empty())
    }

    /// The plugins' names, joined, for logs.
    pub fn names(&self) -> String {
        let mut names: Vec<String> = self.plugins.iter().map(|p| p.name.to_string()).collect();
        names.extend(self.tenants.iter().map(|t| format!("tenant:{}", t.name)));
        names.join(",")
    }

    /// The name of the tenant a recipient belongs to, by its domain.
    pub fn tenant_name(&self, address: &str) -> Option<&Arc<str>> {
        self.tenant_of(address).map(|t| &self.tenants[t].name)
    }

    /// The tenant a recipient belongs to, by its domain.
    fn tenant_of(&self, address: &str) -> Option<usize> {
        let domain = address.rsplit_once('@')?.1.trim_end_matches('>');
        self.tenants
            .iter()
            .position(|t| t.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }
}

/// A chain's plugins as one session uses them.
pub struct SessionPlugin {
    chain: Arc<Chain>,
    instances: Vec<PluginInstance>,
    /// The tenants' chains for this session, created when first needed.
    tenants: Vec<Option<SessionPlugin>>,
    session_id: u64,
    /// A tenant's chain: its plugins may edit the message and the envelope
    /// only in `data` (their own delivery), not before.
    tenant: bool,
    /// The listener's `max_recipients`, which envelope edits respect.
    max_recipients: usize,
    /// Envelope edits made in the last MAIL or RCPT, for the session to
    /// apply when it accepts the command.
    envelope_ops: Vec<Op>,
}

/// The message as the next plugin of a chain reads it: `content` with the
/// transaction's header edits, made again only when the edits changed.
fn message_view(
    content: &Arc<MessageView>,
    shared: &crate::capability::Shared,
    cache: &mut Option<(usize, Arc<MessageView>)>,
) -> Result<Arc<MessageView>, Reply> {
    let edits = shared.headers();
    if edits.is_empty() {
        return Ok(content.clone());
    }
    if let Some((n, view)) = cache
        && *n == edits.len()
    {
        return Ok(view.clone());
    }
    let view = MessageView::new(content.original().clone(), &edits)
        .map(Arc::new)
        .map_err(|e| {
            tracing::error!("can't read the spooled message back: {e}");
            reply::LOCAL_ERROR.clone()
        })?;
    *cache = Some((edits.len(), view.clone()));
    Ok(view)
}

impl SessionPlugin {
    pub fn new(chain: Arc<Chain>, session_id: u64) -> SessionPlugin {
        let instances = chain
            .plugins
            .iter()
            .zip(&chain.pools)
            .map(|(p, pool)| PluginInstance::new(p.clone(), session_id, pool.clone()))
            .collect();
        let tenants = chain.tenants.iter().map(|_| None).collect();
        SessionPlugin {
            chain,
            instances,
            tenants,
            session_id,
            tenant: false,
            max_recipients: usize::MAX,
            envelope_ops: Vec::new(),
        }
    }

    /// Envelope edits stay within the listener's `max_recipients`.
    pub fn with_max_recipients(mut self, max_recipients: usize) -> SessionPlugin {
        self.max_recipients = max_recipients;
        self
    }

    /// The envelope edits the plugins made in the last MAIL or RCPT, in
    /// order: the session applies them ([`crate::capability::envelope::apply`])
    /// when it accepts the command, and drops them otherwise.
    pub fn take_envelope_edits(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.envelope_ops)
    }

    /// Whether any plugin exports `hook`. When none does, the session
    /// applies the default without calling into any plugin.
    pub fn has(&self, hook: Hook) -> bool {
        self.chain.has(hook)
    }

    /// How many plugin instances this session has created so far.
    pub fn instantiated(&self) -> usize {
        self.instances.iter().filter(|i| i.live.is_some()).count()
            + self
                .tenants
                .iter()
                .flatten()
                .map(SessionPlugin::instantiated)
                .sum::<usize>()
    }

    fn tenant(&mut self, index: usize) -> &mut SessionPlugin {
        let (chain, id, max) = (&self.chain, self.session_id, self.max_recipients);
        self.tenants[index].get_or_insert_with(|| SessionPlugin {
            tenant: true,
            max_recipients: max,
            ..SessionPlugin::new(chain.tenants[index].chain.clone(), id)
        })
    }

    /// Pass a command hook along this chain's own plugins (see the module docs).
    pub async fn call(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        call: HookCall<'_>,
    ) -> HookResult<Option<Reply>> {
        let hook = call.hook();
        let (s, mut e) = (convert::session(session), convert::envelope(envelope));
        let edits_allowed = !self.tenant || hook == Hook::Data;
        let mut view = None;
        // Envelope edits: the envelope as it will be if the command is
        // accepted (MAIL, RCPT of the listener's chain), or as it is (DATA).
        // Not on LMTP, whose DATA answers once per recipient accepted at RCPT.
        let editable: Option<Envelope> = match call {
            _ if session.lmtp => None,
            HookCall::Mail { address, .. } if !self.tenant => Some(Envelope {
                mail_from: Some(address.to_owned()),
                ..envelope.clone()
            }),
            HookCall::Rcpt { address, options } if !self.tenant => {
                let mut will_be = envelope.clone();
                will_be.rcpt_tos.push(address.to_owned());
                will_be.rcpt_options.push(options.to_vec());
                Some(will_be)
            }
            HookCall::Data { .. } => Some(envelope.clone()),
            _ => None,
        }
        .filter(|_| self.instances.iter().any(|i| i.plugin.grants.envelope));
        let mut editor = editable.map(|will_be| Editor::new(will_be, self.max_recipients));
        self.envelope_ops.clear();
        for instance in self.instances.iter_mut().filter(|i| i.has(hook)) {
            instance.enter(session, envelope, edits_allowed);
            instance.editor = editor
                .as_ref()
                .filter(|_| instance.plugin.grants.envelope)
                .cloned();
            // Each plugin reads the message with the edits made before it.
            let content;
            let call = match call {
                HookCall::Data { content: original } => {
                    content = message_view(original, &envelope.shared, &mut view)?;
                    HookCall::Data { content: &content }
                }
                call => call,
            };
            let answer = instance.call(session, &s, &e, call).await;
            if let Some(edited) = instance.editor.take()
                && editor
                    .as_ref()
                    .is_some_and(|ed| edited.ops.len() > ed.ops.len())
            {
                if hook == Hook::Data {
                    // The plugins after this one deliver to the edited envelope.
                    e = convert::envelope(&edited.view);
                } else {
                    self.envelope_ops.clone_from(&edited.ops);
                }
                editor = Some(edited);
            }
            match answer {
                Ok(None) | Err(Failed::Skip) => continue,
                Ok(Some(reply)) => return Ok(Some(reply)),
                Err(Failed::Reply(reply)) => return Err(reply),
            }
        }
        Ok(None)
    }

    pub async fn helo(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        hostname: &str,
    ) -> HookResult<Option<Reply>> {
        self.call(session, envelope, HookCall::Helo { hostname })
            .await
    }

    /// EHLO/LHLO: a plugin may replace the planned reply.
    pub async fn ehlo(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        hostname: &str,
        planned: &Reply,
    ) -> HookResult<Option<Reply>> {
        let planned = convert::to_wit_reply(planned);
        self.call(
            session,
            envelope,
            HookCall::Ehlo {
                hostname,
                planned: &planned,
            },
        )
        .await
    }

    pub async fn mail(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        address: &str,
        options: &[String],
    ) -> HookResult<Option<Reply>> {
        self.call(session, envelope, HookCall::Mail { address, options })
            .await
    }

    /// RCPT: a recipient in a tenant's domain is the tenant chain's to decide;
    /// any other is this chain's, or refused if this chain has no plugins.
    pub async fn rcpt(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        address: &str,
        options: &[String],
    ) -> HookResult<Option<Reply>> {
        match self.chain.tenant_of(address) {
            Some(t) => {
                let tenant = self.tenant(t);
                if !tenant.has(Hook::Rcpt) {
                    return Ok(None);
                }
                Box::pin(tenant.rcpt(session, envelope, address, options)).await
            }
            None if !self.chain.tenants.is_empty() && self.chain.plugins.is_empty() => {
                Ok(Some(reply::NO_TENANT.clone()))
            }
            None => {
                self.call(session, envelope, HookCall::Rcpt { address, options })
                    .await
            }
        }
    }

    /// The end of DATA. With tenants, each group of recipients (each
    /// tenant's, and the rest) goes to its own chain with an envelope holding
    /// only its recipients. The client gets one reply: the first refusal or
    /// failure if any group had one (so it retries; groups that accepted may
    /// then see the message twice, never zero times), otherwise the first
    /// group's reply.
    pub async fn data(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        content: Arc<Content>,
    ) -> HookResult<Option<Reply>> {
        let content = Arc::new(MessageView::from(content));
        if self.chain.tenants.is_empty() {
            return self
                .call(session, envelope, HookCall::Data { content: &content })
                .await;
        }
        // Group the recipients: None for this chain, Some(t) for tenant t.
        let mut groups: Vec<(Option<usize>, Envelope)> = Vec::new();
        for (i, rcpt) in envelope.rcpt_tos.iter().enumerate() {
            let owner = self.chain.tenant_of(rcpt);
            let group = match groups.iter_mut().position(|(o, _)| *o == owner) {
                Some(g) => &mut groups[g].1,
                None => {
                    // Each group's own header edits from here on.
                    let e = Envelope {
                        rcpt_tos: Vec::new(),
                        rcpt_options: Vec::new(),
                        shared: envelope.shared.fork(),
                        ..envelope.clone()
                    };
                    groups.push((owner, e));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            group.rcpt_tos.push(rcpt.clone());
            group
                .rcpt_options
                .push(envelope.rcpt_options.get(i).cloned().unwrap_or_default());
        }
        let mut first: Option<HookResult<Option<Reply>>> = None;
        for (owner, group) in groups {
            let result = match owner {
                Some(t) => {
                    let tenant = self.tenant(t);
                    if tenant.has(Hook::Data) {
                        Box::pin(tenant.data(session, &group, content.original().clone())).await
                    } else {
                        Ok(None)
                    }
                }
                None => {
                    self.call(session, &group, HookCall::Data { content: &content })
                        .await
                }
            };
            let refused = match &result {
                Ok(Some(reply)) => !reply.is_positive(),
                Ok(None) => false,
                Err(_) => true,
            };
            if refused {
                if first.as_ref().is_some_and(|f| {
                    matches!(f, Ok(None)) || matches!(f, Ok(Some(r)) if r.is_positive())
                }) {
                    tracing::warn!(
                        session = self.session_id,
                        "a tenant refused a message other tenants accepted; the client will retry it to all"
                    );
                }
                return result;
            }
            first.get_or_insert(result);
        }
        first.unwrap_or(Ok(None))
    }

    pub async fn rset(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
    ) -> HookResult<Option<Reply>> {
        self.call(session, envelope, HookCall::Rset).await
    }

    pub async fn noop(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        arg: &str,
    ) -> HookResult<Option<Reply>> {
        self.call(session, envelope, HookCall::Noop { arg }).await
    }

    pub async fn quit(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
    ) -> HookResult<Option<Reply>> {
        self.call(session, envelope, HookCall::Quit).await
    }

    pub async fn vrfy(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        address: &str,
    ) -> HookResult<Option<Reply>> {
        self.call(session, envelope, HookCall::Vrfy { address })
            .await
    }
}

// ---------------------------------------------------------------------------
// The connection-level hooks: AUTH, PROXY, STARTTLS (issue 3). Kept apart
// from the command hooks above: they answer a decision, not a reply.

impl PluginInstance {
    /// AUTH on this plugin: its decision, or what its failure means.
    async fn auth(
        &mut self,
        session: &SessionInfo,
        s: &types::Session,
        e: &types::Envelope,
        credentials: &auth::Credentials,
    ) -> Result<AuthDecision, Failed> {
        let answer = async {
            let plugin = self.plugin.clone();
            let live = self.live().await?;
            let _running = live.arm(&plugin);
            let indices =
                plugin.hooks.auth.as_ref().ok_or_else(|| {
                    wasmtime::format_err!("the plugin does not export the auth hook")
                })?;
            let _timer = CallTimer::start(&plugin.name, Hook::Auth);
            indices
                .load(&mut live.store, &live.instance)?
                .call_handle_auth(&mut live.store, s, e, credentials)
                .await
        }
        .await;
        let failure = match answer {
            Ok(auth::AuthDecision::Accept(identity)) => match convert::check_identity(&identity) {
                Ok(()) => return Ok(AuthDecision::Accept(identity)),
                Err(message) => Failure {
                    kind: ErrorKind::InvalidReply,
                    message,
                },
            },
            Ok(auth::AuthDecision::Reject(None)) => return Ok(AuthDecision::Reject(None)),
            Ok(auth::AuthDecision::Reject(Some(reply))) => match convert::from_wit_reply(reply) {
                Ok(reply) => return Ok(AuthDecision::Reject(Some(reply))),
                Err(message) => Failure {
                    kind: ErrorKind::InvalidReply,
                    message,
                },
            },
            Err(error) => self.classify(error),
        };
        Err(self.fail(Hook::Auth, session, failure).await)
    }

    /// PROXY or STARTTLS on this plugin: yes or no. A failure is logged, the
    /// instance dropped, and the answer is no (there is no command to answer,
    /// so every failure policy fails closed here).
    async fn verdict(
        &mut self,
        hook: Hook,
        s: &types::Session,
        e: &types::Envelope,
        proxy: Option<&types::ProxyData>,
    ) -> bool {
        let answer = async {
            let plugin = self.plugin.clone();
            let live = self.live().await?;
            let _running = live.arm(&plugin);
            let missing = || wasmtime::format_err!("the plugin does not export the {hook} hook");
            let (store, instance) = (&mut live.store, &live.instance);
            let _timer = CallTimer::start(&plugin.name, hook);
            match (hook, proxy) {
                (Hook::Proxy, Some(proxy)) => {
                    plugin
                        .hooks
                        .proxy
                        .as_ref()
                        .ok_or_else(missing)?
                        .load(&mut *store, instance)?
                        .call_handle_proxy(store, s, e, proxy)
                        .await
                }
                _ => {
                    plugin
                        .hooks
                        .starttls
                        .as_ref()
                        .ok_or_else(missing)?
                        .load(&mut *store, instance)?
                        .call_handle_starttls(store, s, e)
                        .await
                }
            }
        }
        .await;
        match answer {
            Ok(yes) => yes,
            Err(error) => {
                let failure = self.classify(error);
                self.live = None;
                if let Some(m) = crate::metrics::get() {
                    m.hook_failure(&self.plugin.name, hook, kind_name(failure.kind));
                }
                tracing::warn!(
                    plugin = &*self.plugin.name,
                    session = self.session_id,
                    hook = hook.name(),
                    kind = kind_name(failure.kind),
                    "plugin failed: {}; answering no",
                    failure.message
                );
                false
            }
        }
    }
}

impl SessionPlugin {
    /// AUTH: the first plugin of the chain that exports `auth` decides
    /// (one that fails under the `skip` policy passes it to the next).
    pub async fn auth(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        credentials: &Credentials,
    ) -> HookResult<AuthDecision> {
        let (s, e) = (convert::session(session), convert::envelope(envelope));
        let credentials = auth::Credentials {
            mechanism: credentials.mechanism.name().to_owned(),
            authzid: credentials.authzid.clone(),
            login: credentials.login.clone(),
            password: credentials.password.clone(),
        };
        for instance in self.instances.iter_mut().filter(|i| i.has(Hook::Auth)) {
            instance.enter(session, envelope, false);
            match instance.auth(session, &s, &e, &credentials).await {
                Ok(decision) => return Ok(decision),
                Err(Failed::Skip) => continue,
                Err(Failed::Reply(reply)) => return Err(reply),
            }
        }
        Ok(AuthDecision::Reject(None))
    }

    /// The PROXY header: the connection goes on only if every plugin of the
    /// chain that exports `proxy` says so.
    pub async fn proxy(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        header: &ProxyHeader,
    ) -> bool {
        let (s, e) = (convert::session(session), convert::envelope(envelope));
        let data = convert::proxy_data(header);
        for instance in self.instances.iter_mut().filter(|i| i.has(Hook::Proxy)) {
            if !instance.verdict(Hook::Proxy, &s, &e, Some(&data)).await {
                return false;
            }
        }
        true
    }

    /// A finished TLS handshake: accepted only if every plugin of the chain
    /// that exports `starttls` accepts it.
    pub async fn starttls(&mut self, session: &SessionInfo, envelope: &Envelope) -> bool {
        let (s, e) = (convert::session(session), convert::envelope(envelope));
        for instance in self.instances.iter_mut().filter(|i| i.has(Hook::Starttls)) {
            if !instance.verdict(Hook::Starttls, &s, &e, None).await {
                return false;
            }
        }
        true
    }
}

impl PluginInstance {
    /// LMTP's per-recipient end of DATA on this plugin.
    async fn lmtp_data(
        &mut self,
        session: &SessionInfo,
        s: &types::Session,
        e: &types::Envelope,
        content: &Arc<MessageView>,
        recipients: usize,
    ) -> Result<Vec<Option<Reply>>, Failed> {
        let blocking = self.plugin.grants.files_on_calling_thread();
        let answer = async {
            let plugin = self.plugin.clone();
            let live = self.live().await?;
            let _running = live.arm(&plugin);
            let indices = plugin.hooks.lmtp_data.as_ref().ok_or_else(|| {
                wasmtime::format_err!("the plugin does not export the lmtp-data hook")
            })?;
            let guest = indices.load(&mut live.store, &live.instance)?;
            let _timer = CallTimer::start(&plugin.name, Hook::LmtpData);
            live.store.data_mut().set_content(Some(content.clone()));
            live.store.data_mut().delivery = live
                .store
                .data()
                .queue
                .is_some()
                .then(|| Delivery::new(s, e));
            let answer = guest.call_handle_lmtp_data(&mut live.store, s, e).await;
            live.store.data_mut().set_content(None);
            live.store.data_mut().delivery = None;
            answer
        };
        let answer = if blocking {
            on_blocking_thread(answer).await
        } else {
            answer.await
        };
        let failure = match answer {
            Ok(replies) if replies.len() != recipients => Failure {
                kind: ErrorKind::InvalidReply,
                message: format!(
                    "lmtp-data returned {} replies for {recipients} recipients",
                    replies.len()
                ),
            },
            Ok(replies) => match replies
                .into_iter()
                .map(|r| r.map(convert::from_wit_reply).transpose())
                .collect()
            {
                Ok(replies) => return Ok(replies),
                Err(message) => Failure {
                    kind: ErrorKind::InvalidReply,
                    message,
                },
            },
            Err(error) => self.classify(error),
        };
        Err(self.fail(Hook::LmtpData, session, failure).await)
    }
}

impl SessionPlugin {
    /// LMTP's end of DATA: one decision per recipient of `envelope`, `None`
    /// where the default applies. Along the chain, in order: a plugin with
    /// `lmtp-data` decides the recipients still undecided, one by one; a
    /// plugin with only `data` decides them all with its one reply. Without
    /// any `lmtp-data` in the chain this is `data` (tenants included), its
    /// reply repeated.
    pub async fn lmtp_data(
        &mut self,
        session: &SessionInfo,
        envelope: &Envelope,
        content: Arc<Content>,
    ) -> HookResult<Vec<Option<Reply>>> {
        for instance in &mut self.instances {
            instance.enter(session, envelope, true);
        }
        let recipients = envelope.rcpt_tos.len();
        if !self
            .chain
            .plugins
            .iter()
            .any(|p| p.hooks.has(Hook::LmtpData))
        {
            let reply = if self.has(Hook::Data) {
                self.data(session, envelope, content).await?
            } else {
                None
            };
            return Ok(vec![reply; recipients]);
        }
        let (s, e) = (convert::session(session), convert::envelope(envelope));
        let mut decided: Vec<Option<Reply>> = vec![None; recipients];
        let original = Arc::new(MessageView::from(content));
        let mut view = None;
        for instance in self.instances.iter_mut() {
            if decided.iter().all(Option::is_some) {
                break;
            }
            let content = message_view(&original, &envelope.shared, &mut view)?;
            let answers = if instance.has(Hook::LmtpData) {
                instance
                    .lmtp_data(session, &s, &e, &content, recipients)
                    .await
            } else if instance.has(Hook::Data) {
                instance
                    .call(session, &s, &e, HookCall::Data { content: &content })
                    .await
                    .map(|reply| vec![reply; recipients])
            } else {
                continue;
            };
            match answers {
                Ok(answers) => {
                    for (slot, answer) in decided.iter_mut().zip(answers) {
                        if slot.is_none() {
                            *slot = answer;
                        }
                    }
                }
                Err(Failed::Skip) => continue,
                Err(Failed::Reply(reply)) => return Err(reply),
            }
        }
        Ok(decided)
    }
}

/// Run a hook call that may block its thread: a plugin granted directories
/// makes its file calls (an fsync included) in place. On the server's
/// multi-thread runtime tokio is told first (`block_in_place`), so the
/// worker's other sessions move to another thread while this one blocks:
/// one hand-off per hook call instead of a thread hop per file call.
async fn on_blocking_thread<F: std::future::Future>(call: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(call))
        }
        _ => call.await,
    }
}
