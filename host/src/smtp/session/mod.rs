//! One SMTP (or LMTP) session: the dialog state machine.
//!
//! Each verb is checked and answered with aiosmtpd 1.4.6's replies
//! (DESIGN.md, decision 9); where the plugin exports the verb's hook, the
//! hook decides and the host applies the decision (decision 3). The checks
//! every command passes (security state, STARTTLS required, call limits,
//! unknown verbs) are here, in [`Session::command`]; the verbs are in one
//! file per group, as stalwart lays them out:
//!
//! - [`hello`]: HELO, EHLO, LHLO;
//! - [`transaction`]: MAIL, RCPT, DATA, BDAT;
//! - [`auth`]: AUTH and its SASL exchange;
//! - [`misc`]: RSET, NOOP, QUIT, VRFY, HELP, EXPN, STARTTLS.
//!
//! Input is read into one buffer and every complete command in it is
//! answered before the next read; replies are buffered and written when the
//! session needs more input, so a pipelined batch (RFC 2920) costs one write.
//!
//! A session ends in one of two ways: the connection closes, or STARTTLS
//! succeeds. Then the session is consumed — its input buffer, with any
//! plaintext the client pipelined after STARTTLS, is dropped unread — and the
//! connection starts a new one over TLS with nothing carried over but the
//! connection's identity (RFC 3207 §4.2; see [`super::connection`]).

mod auth;
mod hello;
mod misc;
mod observe;
mod transaction;

pub use auth::{AuthDecision, Credentials};

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::command::{self, COMMAND_LIMIT, Command, Frame, Framer, Verb};
use super::connection::Stream;
use super::envelope::{Envelope, SessionInfo};
use super::reply::{self, Reply};
use super::spool::SpoolSettings;
use crate::plugin::{Chain, SessionPlugin};
use crate::tls::Tls;

/// How many bytes to ask the socket for at a time.
const READ_CHUNK: usize = 16 << 10;

/// SMTP or LMTP (RFC 2033).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Smtp,
    Lmtp,
}

/// SASL mechanisms the host runs for the `auth` hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Login,
    Plain,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Login, Mechanism::Plain];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN",
            Mechanism::Plain => "PLAIN",
        }
    }

    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// AUTH settings of a listener (aiosmtpd's `auth_*` arguments).
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// MAIL, RCPT, DATA, VRFY and HELP need AUTH first (`530 5.7.0`).
    pub required: bool,
    /// AUTH only over TLS (`538 5.7.11` otherwise); on by default.
    pub require_tls: bool,
    /// The mechanisms offered, when a plugin decides AUTH.
    pub mechanisms: Vec<Mechanism>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            required: false,
            require_tls: true,
            mechanisms: Mechanism::ALL.to_vec(),
        }
    }
}

/// Bounds on what one session may ask of the server.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// Unrecognised commands before the server hangs up (aiosmtpd: 5).
    pub max_unknown_commands: u32,
    /// How often each verb may be sent in one session (aiosmtpd's
    /// `command_call_limit`); `None` for no limit.
    pub command_call_limit: Option<u32>,
    /// Recipients in one transaction (`452 4.5.3` past it).
    pub max_recipients: usize,
    /// The longest a whole DATA or BDAT transfer may take.
    pub data_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_unknown_commands: 5,
            command_call_limit: None,
            max_recipients: 1000,
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// What a listener's sessions share.
pub struct ListenerSettings {
    pub name: Arc<str>,
    /// The tenant serving every session here (`tenant = "NAME"`), for metrics.
    pub tenant: Option<Arc<str>>,
    /// The name in the greeting and EHLO reply.
    pub hostname: Arc<str>,
    /// The greeting's text after the host name.
    pub ident: String,
    /// The largest message accepted, in bytes; `None` for no limit.
    pub data_size_limit: Option<usize>,
    pub smtputf8: bool,
    /// How long to wait for the client before closing the connection.
    pub timeout: Duration,
    /// The plugins that serve the listener, in order.
    pub plugin: Arc<Chain>,
    pub protocol: Protocol,
    /// The certificate for STARTTLS, or for the whole connection when
    /// `implicit_tls`.
    pub tls: Option<Tls>,
    /// TLS from the first byte (SMTPS, port 465 style).
    pub implicit_tls: bool,
    /// Before TLS, only NOOP, EHLO, STARTTLS and QUIT (`530` for the rest).
    pub require_starttls: bool,
    pub auth: AuthSettings,
    /// Read a PROXY protocol header first, waiting this long for it.
    pub proxy_protocol: Option<Duration>,
    pub limits: SessionLimits,
    /// Advertise ENHANCEDSTATUSCODES (RFC 2034) and put an enhanced code on
    /// every reply after EHLO. Off by default: aiosmtpd's texts exactly.
    pub enhanced_status_codes: bool,
    /// Where messages wait while the plugins read them.
    pub spool: Arc<SpoolSettings>,
}

impl ListenerSettings {
    /// Whether STARTTLS is offered to a session in this state.
    fn offers_starttls(&self, info: &SessionInfo) -> bool {
        self.tls.is_some() && info.tls.is_none()
    }
}

/// What ended a wait for input.
enum Woke {
    Read(std::io::Result<usize>),
    Timer,
    Shutdown,
}

/// Why the dialog stopped.
enum Ending {
    /// QUIT, a closing reply, or too many errors: close after flushing.
    Close,
    /// The client went away (EOF or an I/O error): nothing more to send.
    Gone,
    /// `220 Ready to start TLS` was sent: the connection goes on over TLS.
    StartTls,
}

type Step = Result<(), Ending>;

/// How a session ended, for the connection that ran it.
pub enum Outcome {
    Closed,
    /// STARTTLS: the stream to run the handshake on. Everything else of the
    /// session — buffered input included — is gone.
    StartTls(Stream),
}

pub struct Session {
    io: Stream,
    input: BytesMut,
    output: Vec<u8>,
    framer: Framer,
    settings: Arc<ListenerSettings>,
    info: SessionInfo,
    envelope: Envelope,
    plugin: SessionPlugin,
    /// Unrecognised commands left before the server hangs up.
    bogus_budget: u32,
    /// Calls left per verb, when a call limit is set.
    call_budget: HashMap<String, u32>,
    /// The starttls hook refused the handshake: only QUIT is served.
    insecure: bool,
    /// A message arriving in BDAT chunks (RFC 3030).
    chunks: Option<transaction::Chunks>,
    /// The verb being answered, for enhanced status codes.
    verb: Verb,
    shutdown: watch::Receiver<bool>,
    /// Message content is being read (DATA, or a BDAT chunk): a shutdown
    /// waits for it rather than cut it off (see `server::run`).
    receiving: bool,
    /// The size of the transaction's message, once it arrived whole.
    message_bytes: Option<u64>,
    /// The idle timer: one per session, not one per read (registering and
    /// cancelling a timer for every command showed in the profile). It may
    /// fire early, for an older wait; `fill` then sets it again.
    idle: Pin<Box<Sleep>>,
}

impl Session {
    /// A session on `io`, for the connection `info` describes. `greet`:
    /// send the 220 greeting (not after STARTTLS, where the client speaks
    /// first, with EHLO).
    pub fn new(
        io: Stream,
        info: SessionInfo,
        plugin: SessionPlugin,
        settings: Arc<ListenerSettings>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Session {
            io,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(1024),
            framer: Framer::default(),
            bogus_budget: settings.limits.max_unknown_commands,
            call_budget: HashMap::new(),
            settings,
            info,
            envelope: Envelope::default(),
            plugin,
            insecure: false,
            chunks: None,
            verb: Verb::Noop,
            shutdown,
            receiving: false,
            message_bytes: None,
            idle: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// The starttls hook refused the TLS layer: from now on every command
    /// but QUIT gets `554` (aiosmtpd's `_tls_handshake_okay`).
    pub fn refuse_insecure(&mut self) {
        self.insecure = true;
    }

    /// Run the dialog to its end; `greet` sends the 220 greeting first.
    pub async fn run(mut self, greet: bool) -> Outcome {
        if greet {
            let greeting = Reply::new(
                220,
                format!("{} {}", self.settings.hostname, self.settings.ident),
            );
            self.push(&greeting);
        }
        let ending = self.dialog().await;
        self.end_transaction(None);
        match ending {
            Err(Ending::StartTls) => {
                if self.flush().await.is_err() {
                    return Outcome::Closed;
                }
                // `self.input` may hold plaintext pipelined after STARTTLS:
                // it is dropped with the session, never read as commands.
                if !self.input.is_empty() {
                    tracing::warn!(
                        bytes = self.input.len(),
                        "discarding plaintext sent after STARTTLS"
                    );
                }
                return Outcome::StartTls(self.io);
            }
            Err(Ending::Close) => {
                let _ = self.flush().await;
            }
            Err(Ending::Gone) | Ok(()) => {}
        }
        let _ = self.io.shutdown().await;
        Outcome::Closed
    }

    async fn dialog(&mut self) -> Step {
        loop {
            while let Some(frame) = self.framer.next(&mut self.input) {
                match frame {
                    Frame::TooLong => self.push(&reply::LINE_TOO_LONG),
                    Frame::Line(line) => self.command(&line).await?,
                }
            }
            self.fill().await?;
        }
    }

    /// The next line from the client (for SASL exchanges), reading as needed.
    async fn read_line(&mut self) -> Result<Frame, Ending> {
        loop {
            if let Some(frame) = self.framer.next(&mut self.input) {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Write pending replies, then wait for more input.
    async fn fill(&mut self) -> Step {
        self.flush().await?;
        self.input.reserve(READ_CHUNK);
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let woke = tokio::select! {
                read = self.io.read_buf(&mut self.input) => Woke::Read(read),
                () = self.idle.as_mut() => Woke::Timer,
                // Draining: 421 when waiting for a command, not mid-message.
                _ = self.shutdown.wait_for(|stop| *stop), if !self.receiving => Woke::Shutdown,
            };
            match woke {
                Woke::Read(Ok(0) | Err(_)) => return Err(Ending::Gone),
                Woke::Read(Ok(_)) => return Ok(()),
                Woke::Shutdown => {
                    self.push(&reply::SHUTTING_DOWN);
                    return Err(Ending::Close);
                }
                Woke::Timer if Instant::now() >= deadline => {
                    tracing::info!("idle for {timeout:?}, closing");
                    self.push(&reply::TIMEOUT);
                    return Err(Ending::Close);
                }
                // Set for an earlier wait: wait for the rest of this one.
                Woke::Timer => self.idle.as_mut().reset(deadline),
            }
        }
    }

    async fn flush(&mut self) -> Step {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = async {
            self.io.write_all(&self.output).await?;
            // A TLS stream holds written records until flushed.
            self.io.flush().await
        }
        .await;
        self.output.clear();
        result.map_err(|_| Ending::Gone)
    }

    fn push(&mut self, reply: &Reply) {
        // RFC 2034: once advertised (and the client said EHLO), every reply
        // but the greeting's and HELO/EHLO's carries an enhanced code.
        let enhanced;
        let reply = if self.settings.enhanced_status_codes
            && self.info.extended_smtp
            && !matches!(self.verb, Verb::Helo | Verb::Ehlo | Verb::Lhlo)
        {
            enhanced = reply::enhance(reply, self.verb.name());
            &enhanced
        } else {
            reply
        };
        tracing::debug!("<< {reply}");
        reply.write_to(&mut self.output);
    }

    /// Send a reply that may end the session (a plugin's 421).
    fn answer(&mut self, reply: &Reply) -> Step {
        self.push(reply);
        if reply.closes_connection() {
            Err(Ending::Close)
        } else {
            Ok(())
        }
    }

    fn limit_for(&self, verb: &Verb) -> usize {
        match verb {
            // RFC 1870 and RFC 6531 each lengthen MAIL for their parameters.
            Verb::Mail if self.info.extended_smtp => {
                COMMAND_LIMIT
                    + if self.settings.data_size_limit.is_some() {
                        26
                    } else {
                        0
                    }
                    + if self.settings.smtputf8 { 10 } else { 0 }
            }
            _ => COMMAND_LIMIT,
        }
    }

    /// One command line: the checks every command passes, in aiosmtpd's
    /// order, then the verb.
    async fn command(&mut self, line: &[u8]) -> Step {
        let command =
            match command::parse(line, self.settings.smtputf8, |verb| self.limit_for(verb)) {
                Ok(command) => command,
                Err(reply) => {
                    self.push(&reply);
                    return Ok(());
                }
            };
        // AUTH's argument may carry credentials (an initial response).
        tracing::debug!(
            ">> {} {}",
            command.verb.name(),
            if command.verb == Verb::Auth {
                "…"
            } else {
                command.arg.as_deref().unwrap_or("")
            }
        );
        let Command { verb, arg } = command;
        self.verb = verb.clone();
        if self.insecure && verb != Verb::Quit {
            return self.answer(&reply::INSECURE);
        }
        if self.settings.require_starttls
            && self.info.tls.is_none()
            && !matches!(verb, Verb::Noop | Verb::Ehlo | Verb::Starttls | Verb::Quit)
        {
            return self.answer(&reply::STARTTLS_FIRST);
        }
        if let Some(limit) = self.settings.limits.command_call_limit {
            let budget = self
                .call_budget
                .entry(verb.name().to_owned())
                .or_insert(limit);
            if *budget < 1 {
                tracing::warn!("over the call limit for {}", verb.name());
                self.push(&reply::too_many_calls(verb.name()));
                return Err(Ending::Close);
            }
            *budget -= 1;
        }
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        match verb {
            Verb::Helo if lmtp => self.answer(&reply::unknown_command("HELO")),
            Verb::Ehlo if lmtp => self.answer(&reply::unknown_command("EHLO")),
            Verb::Lhlo if !lmtp => self.unknown(verb.name()),
            Verb::Helo => self.helo(arg).await,
            Verb::Ehlo | Verb::Lhlo => self.ehlo(arg).await,
            Verb::Mail => self.mail(arg).await,
            Verb::Rcpt => self.rcpt(arg).await,
            Verb::Data => self.data(arg).await,
            Verb::Rset => self.rset(arg).await,
            Verb::Noop => self.noop(arg).await,
            Verb::Quit => self.quit(arg).await,
            Verb::Vrfy => self.vrfy(arg).await,
            Verb::Help => self.help(arg),
            Verb::Expn => self.answer(&reply::EXPN_NOT_IMPLEMENTED),
            Verb::Starttls => self.starttls(arg),
            Verb::Auth => self.auth(arg).await,
            Verb::Bdat => self.bdat(arg).await,
            Verb::Unknown(_) => self.unknown(verb.name()),
        }
    }

    fn unknown(&mut self, verb: &str) -> Step {
        tracing::debug!("unrecognised: {verb}");
        self.bogus_budget = self.bogus_budget.saturating_sub(1);
        if self.bogus_budget < 1 {
            tracing::warn!("too many unrecognised commands");
            self.push(&reply::TOO_MANY_UNKNOWN);
            return Err(Ending::Close);
        }
        self.push(&reply::unknown_command(verb));
        Ok(())
    }

    /// A new greeting resets the transaction, as RSET does.
    fn reset(&mut self) {
        self.end_transaction(None);
        self.envelope = Envelope::default();
        self.chunks = None;
    }

    /// `503 Error: send HELO first` (or the given reply) before a greeting.
    fn need_helo(&mut self, which: &'static Reply) -> bool {
        if self.info.host_name.is_none() {
            let which = if self.settings.protocol == Protocol::Lmtp {
                &reply::NEED_LHLO
            } else {
                which
            };
            self.push(which);
            return true;
        }
        false
    }

    /// `530 5.7.0 Authentication required` on a listener that requires AUTH.
    fn need_auth(&mut self) -> bool {
        if self.settings.auth.required && !self.info.authenticated {
            self.push(&reply::AUTH_REQUIRED);
            return true;
        }
        false
    }

    /// The reply for a hook decision: the plugin's, the default, or the
    /// failure reply.
    fn decided(&self, decided: Result<Option<Reply>, Reply>, default: &Reply) -> Reply {
        match decided {
            Ok(Some(reply)) => reply,
            Ok(None) => default.clone(),
            Err(failure) => failure,
        }
    }
}

/// `FROM:<a@b>` → `<a@b>` (case-insensitive keyword), as aiosmtpd's
/// `_strip_command_keyword`.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim())
}
