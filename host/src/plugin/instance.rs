//! One plugin instance per SMTP session (DESIGN.md, decision 1).
//!
//! The instance is created the first time the session reaches a hook the
//! plugin exports, lives in its own `Store` (so sessions never see each
//! other's plugin state), and is dropped with the session. A hook that traps,
//! runs past its deadline or returns an invalid reply loses the instance and
//! costs the session one reply; the host state it was given was a copy, so
//! nothing is left half-written (decision 3).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{Instance, ResourceTable};
use wasmtime::{Store, UpdateDeadline};

use crate::smtp::envelope::{Envelope, SessionInfo};
use crate::smtp::reply::{self, Reply};

use super::bindings::types::{self, ErrorKind};
use super::convert;
use super::host::{HostState, MemoryCap};
use super::loaded::{Hook, Plugin};

/// The outcome of a hook as the session sees it: the hook's answer, or the
/// reply to send because the plugin failed.
pub type HookResult<T> = Result<T, Reply>;

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
}

impl Live {
    /// Instantiate `plugin` and hand it its arguments.
    pub async fn start(plugin: &Arc<Plugin>, session_id: u64) -> Result<Live, StartError> {
        let failed = |e: wasmtime::Error| StartError::Failed(format!("{e:#}"));
        let wasi = plugin.grants.wasi_ctx().map_err(failed)?;
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap { limit: plugin.limits.memory, hit: false },
            content: None,
            deadline: Instant::now() + plugin.limits.hook_timeout,
            plugin: plugin.name.clone(),
            session_id,
        };
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
        let instance = plugin.pre.instantiate_async(&mut store).await.map_err(failed)?;
        let mut live = Live { store, instance };
        if let Some(setup) = &plugin.hooks.setup {
            live.arm(plugin);
            let guest = setup.load(&mut live.store, &live.instance).map_err(failed)?;
            guest.call_init(&mut live.store, &plugin.args).await.map_err(failed)?.map_err(StartError::Refused)?;
        }
        Ok(live)
    }

    /// Start the clock for one hook call.
    fn arm(&mut self, plugin: &Plugin) {
        self.store.data_mut().deadline = Instant::now() + plugin.limits.hook_timeout;
        self.store.set_epoch_deadline(1);
    }
}

/// A failure of one hook call.
struct Failure {
    kind: ErrorKind,
    message: String,
}

/// The plugin as one session uses it.
pub struct SessionPlugin {
    plugin: Arc<Plugin>,
    session_id: u64,
    live: Option<Live>,
}

/// Generates the methods of the command hooks that answer `option<reply>`.
macro_rules! reply_hooks {
    ($(
        $(#[$doc:meta])*
        $method:ident => $field:ident, $hook:ident, $call:ident ($($arg:ident: $ty:ty),*);
    )*) => {$(
        $(#[$doc])*
        pub async fn $method(&mut self, session: &SessionInfo, envelope: &Envelope $(, $arg: $ty)*) -> HookResult<Option<Reply>> {
            let plugin = self.plugin.clone();
            let wit_session = convert::session(session);
            let wit_envelope = convert::envelope(envelope);
            let answer = match self.live().await {
                Ok(live) => {
                    live.arm(&plugin);
                    let indices = plugin.hooks.$field.as_ref().expect("the caller checks that the hook exists");
                    match indices.load(&mut live.store, &live.instance) {
                        Ok(guest) => guest.$call(&mut live.store, &wit_session, &wit_envelope $(, $arg)*).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            self.answer(Hook::$hook, session, answer).await
        }
    )*};
}

impl SessionPlugin {
    pub fn new(plugin: Arc<Plugin>, session_id: u64) -> SessionPlugin {
        SessionPlugin { plugin, session_id, live: None }
    }

    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// Whether the plugin exports `hook`. When it does not, the session
    /// applies the default without calling into the plugin.
    pub fn has(&self, hook: Hook) -> bool {
        self.plugin.hooks.has(hook)
    }

    /// Whether an instance exists (for tests of lazy instantiation and logs).
    pub fn is_instantiated(&self) -> bool {
        self.live.is_some()
    }

    async fn live(&mut self) -> wasmtime::Result<&mut Live> {
        if self.live.is_none() {
            let live = Live::start(&self.plugin, self.session_id).await.map_err(|e| match e {
                StartError::Refused(m) => wasmtime::format_err!("setup.init refused its arguments: {m}"),
                StartError::Failed(m) => wasmtime::format_err!("{m}"),
            })?;
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("just set"))
    }

    reply_hooks! {
        /// HELO.
        helo => helo, Helo, call_handle_helo(hostname: &str);
        /// MAIL FROM.
        mail => mail, Mail, call_handle_mail(address: &str, options: &[String]);
        /// RCPT TO.
        rcpt => rcpt, Rcpt, call_handle_rcpt(address: &str, options: &[String]);
        /// RSET.
        rset => rset, Rset, call_handle_rset();
        /// NOOP.
        noop => noop, Noop, call_handle_noop(arg: &str);
        /// QUIT.
        quit => quit, Quit, call_handle_quit();
        /// VRFY.
        vrfy => vrfy, Vrfy, call_handle_vrfy(address: &str);
    }

    /// EHLO/LHLO: the plugin may replace the planned reply.
    pub async fn ehlo(&mut self, session: &SessionInfo, envelope: &Envelope, hostname: &str, planned: &Reply) -> HookResult<Option<Reply>> {
        let plugin = self.plugin.clone();
        let (wit_session, wit_envelope) = (convert::session(session), convert::envelope(envelope));
        let planned = convert::to_wit_reply(planned);
        let answer = match self.live().await {
            Ok(live) => {
                live.arm(&plugin);
                let indices = plugin.hooks.ehlo.as_ref().expect("the caller checks that the hook exists");
                match indices.load(&mut live.store, &live.instance) {
                    Ok(guest) => guest.call_handle_ehlo(&mut live.store, &wit_session, &wit_envelope, hostname, &planned).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        self.answer(Hook::Ehlo, session, answer).await
    }

    /// The end of DATA: `content` is readable through the `content` import
    /// for the duration of the call, without being copied into the plugin.
    pub async fn data(&mut self, session: &SessionInfo, envelope: &Envelope, content: Arc<Vec<u8>>) -> HookResult<Option<Reply>> {
        let plugin = self.plugin.clone();
        let (wit_session, wit_envelope) = (convert::session(session), convert::envelope(envelope));
        let answer = match self.live().await {
            Ok(live) => {
                live.arm(&plugin);
                live.store.data_mut().content = Some(content);
                let indices = plugin.hooks.data.as_ref().expect("the caller checks that the hook exists");
                let answer = match indices.load(&mut live.store, &live.instance) {
                    Ok(guest) => guest.call_handle_data(&mut live.store, &wit_session, &wit_envelope).await,
                    Err(e) => Err(e),
                };
                live.store.data_mut().content = None;
                answer
            }
            Err(e) => Err(e),
        };
        self.answer(Hook::Data, session, answer).await
    }

    /// Turn a hook's raw answer into what the session sends: the validated
    /// reply, or the failure reply.
    async fn answer(&mut self, hook: Hook, session: &SessionInfo, answer: wasmtime::Result<Option<types::Reply>>) -> HookResult<Option<Reply>> {
        let failure = match answer {
            Ok(None) => return Ok(None),
            Ok(Some(reply)) => match convert::from_wit_reply(reply) {
                Ok(reply) => return Ok(Some(reply)),
                Err(message) => Failure { kind: ErrorKind::InvalidReply, message },
            },
            Err(error) => self.classify(error),
        };
        Err(self.fail(hook, session, failure).await)
    }

    fn classify(&self, error: wasmtime::Error) -> Failure {
        let out_of_memory = self.live.as_ref().is_some_and(|l| l.store.data().memory.hit);
        let kind = if error.downcast_ref::<DeadlineExceeded>().is_some() {
            ErrorKind::Timeout
        } else if out_of_memory {
            ErrorKind::OutOfMemory
        } else {
            ErrorKind::Trap
        };
        Failure { kind, message: format!("{error:#}") }
    }

    /// Discard the failed instance, log the failure, and let the plugin's
    /// `exception` hook (on a fresh instance) choose the reply.
    async fn fail(&mut self, hook: Hook, session: &SessionInfo, failure: Failure) -> Reply {
        self.live = None;
        tracing::warn!(
            plugin = &*self.plugin.name, session = self.session_id, hook = hook.name(),
            kind = ?failure.kind, "plugin failed: {}", failure.message
        );
        if hook == Hook::Exception || !self.has(Hook::Exception) {
            return reply::PLUGIN_FAILED.clone();
        }
        let error = types::Error { kind: failure.kind, hook: hook.name().to_owned(), message: failure.message };
        let plugin = self.plugin.clone();
        let wit_session = convert::session(session);
        let answer = match self.live().await {
            Ok(live) => {
                live.arm(&plugin);
                let indices = plugin.hooks.exception.as_ref().expect("checked above");
                match indices.load(&mut live.store, &live.instance) {
                    Ok(guest) => guest.call_handle_exception(&mut live.store, &wit_session, &error).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(Some(reply)) => match convert::from_wit_reply(reply) {
                Ok(reply) => reply,
                Err(message) => {
                    tracing::warn!(plugin = &*self.plugin.name, session = self.session_id, "exception hook returned an invalid reply: {message}");
                    reply::PLUGIN_FAILED.clone()
                }
            },
            Ok(None) => reply::PLUGIN_FAILED.clone(),
            Err(e) => {
                self.live = None;
                tracing::warn!(plugin = &*self.plugin.name, session = self.session_id, "exception hook failed: {e:#}");
                reply::PLUGIN_FAILED.clone()
            }
        }
    }
}
