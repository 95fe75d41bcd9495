//! One SMTP connection: the dialog state machine, in one place.
//!
//! Each verb is checked and answered here with aiosmtpd 1.4.6's replies
//! (DESIGN.md, decision 9); where the plugin exports the verb's hook, the
//! hook decides and the host applies the decision (decision 3).
//!
//! Input is read into one buffer and every complete command in it is
//! answered before the next read; replies are buffered and written when the
//! session needs more input, so a pipelined batch (RFC 2920) costs one write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::address::{self, AddressError};
use super::command::{self, Command, Frame, Framer, Verb, COMMAND_LIMIT};
use super::data::DataDecoder;
use super::envelope::{Envelope, SessionInfo};
use super::reply::{self, Reply};
use crate::plugin::{Chain, Hook, SessionPlugin};

/// aiosmtpd's limit on unrecognised commands before it hangs up.
const BOGUS_LIMIT: u32 = 5;
/// How many bytes to ask the socket for at a time.
const READ_CHUNK: usize = 16 << 10;

/// What a listener's sessions share.
pub struct ListenerSettings {
    pub name: Arc<str>,
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
}

/// Why the dialog stopped.
enum Ending {
    /// QUIT, a closing reply, or too many errors: close after flushing.
    Close,
    /// The client went away (EOF or an I/O error): nothing more to send.
    Gone,
}

type Step = Result<(), Ending>;

pub struct Session<S> {
    io: S,
    input: BytesMut,
    output: Vec<u8>,
    framer: Framer,
    settings: Arc<ListenerSettings>,
    info: SessionInfo,
    envelope: Envelope,
    plugin: SessionPlugin,
    bogus_budget: u32,
    shutdown: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub fn new(io: S, peer: SocketAddr, id: u64, settings: Arc<ListenerSettings>, shutdown: watch::Receiver<bool>) -> Self {
        let info = SessionInfo {
            id,
            listener: settings.name.clone(),
            server_hostname: settings.hostname.clone(),
            peer,
            host_name: None,
            extended_smtp: false,
            lmtp: false,
            authenticated: false,
            auth_identity: None,
        };
        let plugin = SessionPlugin::new(settings.plugin.clone(), id);
        Session {
            io,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(1024),
            framer: Framer::default(),
            settings,
            info,
            envelope: Envelope::default(),
            plugin,
            bogus_budget: BOGUS_LIMIT,
            shutdown,
        }
    }

    /// Run the dialog to its end.
    pub async fn run(mut self) {
        let greeting = Reply::new(220, format!("{} {}", self.settings.hostname, self.settings.ident));
        self.push(&greeting);
        if let Err(Ending::Close) = self.dialog().await {
            let _ = self.flush().await;
        }
        let _ = self.io.shutdown().await;
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

    /// Write pending replies, then wait for more input.
    async fn fill(&mut self) -> Step {
        self.flush().await?;
        self.input.reserve(READ_CHUNK);
        let timeout = self.settings.timeout;
        let read = tokio::select! {
            read = tokio::time::timeout(timeout, self.io.read_buf(&mut self.input)) => Some(read),
            _ = self.shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(read) = read else {
            self.push(&reply::SHUTTING_DOWN);
            return Err(Ending::Close);
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => Err(Ending::Gone),
            Ok(Ok(_)) => Ok(()),
            Err(_elapsed) => {
                tracing::info!("idle for {timeout:?}, closing");
                self.push(&Reply::fixed(421, "4.4.2 Timeout, closing connection"));
                Err(Ending::Close)
            }
        }
    }

    async fn flush(&mut self) -> Step {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.io.write_all(&self.output).await;
        self.output.clear();
        result.map_err(|_| Ending::Gone)
    }

    fn push(&mut self, reply: &Reply) {
        tracing::debug!("<< {reply}");
        reply.write_to(&mut self.output);
    }

    /// Send a reply that may end the session (a plugin's 421).
    fn answer(&mut self, reply: &Reply) -> Step {
        self.push(reply);
        if reply.closes_connection() { Err(Ending::Close) } else { Ok(()) }
    }

    fn limit_for(&self, verb: &Verb) -> usize {
        match verb {
            // RFC 1870 and RFC 6531 each lengthen MAIL for their parameters.
            Verb::Mail if self.info.extended_smtp => {
                COMMAND_LIMIT
                    + if self.settings.data_size_limit.is_some() { 26 } else { 0 }
                    + if self.settings.smtputf8 { 10 } else { 0 }
            }
            _ => COMMAND_LIMIT,
        }
    }

    async fn command(&mut self, line: &[u8]) -> Step {
        let command = match command::parse(line, self.settings.smtputf8, |verb| self.limit_for(verb)) {
            Ok(command) => command,
            Err(reply) => {
                self.push(&reply);
                return Ok(());
            }
        };
        tracing::debug!(">> {} {}", command.verb.name(), if command.verb == Verb::Auth { "…" } else { command.arg.as_deref().unwrap_or("") });
        let Command { verb, arg } = command;
        match verb {
            Verb::Helo => self.helo(arg).await,
            Verb::Ehlo => self.ehlo(arg).await,
            Verb::Mail => self.mail(arg).await,
            Verb::Rcpt => self.rcpt(arg).await,
            Verb::Data => self.data(arg).await,
            Verb::Rset => self.rset(arg).await,
            Verb::Noop => self.noop(arg).await,
            Verb::Quit => self.quit(arg).await,
            Verb::Vrfy => self.vrfy(arg).await,
            Verb::Help => {
                self.help(arg);
                Ok(())
            }
            Verb::Expn => {
                self.push(&reply::EXPN_NOT_IMPLEMENTED);
                Ok(())
            }
            Verb::Starttls => {
                self.push(if arg.is_some() { &reply::SYNTAX_STARTTLS } else { &reply::TLS_NOT_AVAILABLE });
                Ok(())
            }
            Verb::Auth => {
                self.auth();
                Ok(())
            }
            Verb::Lhlo | Verb::Unknown(_) => self.unknown(verb.name()),
        }
    }

    fn unknown(&mut self, verb: &str) -> Step {
        self.bogus_budget -= 1;
        if self.bogus_budget < 1 {
            self.push(&reply::TOO_MANY_UNKNOWN);
            return Err(Ending::Close);
        }
        self.push(&reply::unknown_command(verb));
        Ok(())
    }

    /// A new greeting resets the transaction, as RSET does.
    fn reset(&mut self) {
        self.envelope = Envelope::default();
    }

    fn need_helo(&mut self, which: &'static Reply) -> bool {
        if self.info.host_name.is_none() {
            self.push(which);
            return true;
        }
        false
    }

    async fn helo(&mut self, arg: Option<String>) -> Step {
        let Some(hostname) = arg else {
            self.push(&reply::SYNTAX_HELO);
            return Ok(());
        };
        self.reset();
        self.info.extended_smtp = false;
        let default = Reply::new(250, self.settings.hostname.to_string());
        let decided = if self.plugin.has(Hook::Helo) {
            self.plugin.helo(&self.info, &self.envelope, &hostname).await
        } else {
            Ok(None)
        };
        self.greeted(hostname, decided, default)
    }

    fn ehlo_keywords(&self) -> Reply {
        let mut lines = vec![self.settings.hostname.to_string()];
        if let Some(limit) = self.settings.data_size_limit {
            lines.push(format!("SIZE {limit}"));
        }
        lines.push("8BITMIME".into());
        if self.settings.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        lines.push("PIPELINING".into());
        lines.push("HELP".into());
        Reply::lines(250, lines)
    }

    async fn ehlo(&mut self, arg: Option<String>) -> Step {
        let Some(hostname) = arg else {
            self.push(&reply::SYNTAX_EHLO);
            return Ok(());
        };
        self.reset();
        self.info.extended_smtp = true;
        let planned = self.ehlo_keywords();
        let decided = if self.plugin.has(Hook::Ehlo) {
            self.plugin.ehlo(&self.info, &self.envelope, &hostname, &planned).await
        } else {
            Ok(None)
        };
        self.greeted(hostname, decided, planned)
    }

    /// Apply a HELO/EHLO decision: a positive reply greets the client.
    fn greeted(&mut self, hostname: String, decided: Result<Option<Reply>, Reply>, default: Reply) -> Step {
        let reply = match decided {
            Ok(Some(reply)) => reply,
            Ok(None) => default,
            Err(failure) => failure,
        };
        self.info.host_name = reply.is_positive().then_some(hostname);
        self.answer(&reply)
    }

    async fn mail(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) {
            return Ok(());
        }
        let syntax = if self.info.extended_smtp { &reply::SYNTAX_MAIL_ESMTP } else { &reply::SYNTAX_MAIL };
        let Some(rest) = arg.as_deref().and_then(|a| strip_keyword(a, "FROM:")) else {
            self.push(syntax);
            return Ok(());
        };
        let (address, params) = match address::split_address(rest) {
            Ok(parsed) => parsed,
            Err(AddressError::Empty) => return self.answer(syntax),
            Err(AddressError::Malformed) => return self.answer(&reply::MALFORMED_ADDRESS),
        };
        if !self.info.extended_smtp && !params.is_empty() {
            return self.answer(syntax);
        }
        if self.envelope.mail_from.is_some() {
            return self.answer(&reply::NESTED_MAIL);
        }
        let options: Vec<String> = params.to_ascii_uppercase().split_whitespace().map(str::to_owned).collect();
        let Some(mut params) = address::parse_params(&options) else {
            return self.answer(syntax);
        };
        let mut take = |key: &str| params.iter().position(|(k, _)| k == key).map(|i| params.remove(i).1);
        if let Some(body) = take("BODY") {
            if !matches!(body.as_deref(), Some("7BIT" | "8BITMIME")) {
                return self.answer(&reply::BODY_INVALID);
            }
        }
        let smtputf8 = match take("SMTPUTF8") {
            Some(Some(_)) => return self.answer(&reply::SMTPUTF8_ARGS),
            Some(None) if !self.settings.smtputf8 => return self.answer(&reply::SMTPUTF8_DISABLED),
            Some(None) => true,
            None => false,
        };
        self.envelope.smtp_utf8 = smtputf8;
        if let Some(size) = take("SIZE") {
            let Some(size) = size.filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
                return self.answer(syntax);
            };
            let too_big = match (size.parse::<u128>(), self.settings.data_size_limit) {
                (Ok(size), Some(limit)) => size > limit as u128,
                (Err(_), Some(_)) => true,
                (_, None) => false,
            };
            if too_big {
                return self.answer(&reply::SIZE_EXCEEDED);
            }
        }
        if !params.is_empty() {
            return self.answer(&reply::MAIL_PARAMS_UNKNOWN);
        }
        let decided = if self.plugin.has(Hook::Mail) {
            self.plugin.mail(&self.info, &self.envelope, &address, &options).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        if reply.is_positive() {
            tracing::info!("sender: {address}");
            self.envelope.mail_from = Some(address);
            self.envelope.mail_options.extend(options);
        }
        self.answer(&reply)
    }

    async fn rcpt(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) {
            return Ok(());
        }
        if self.envelope.mail_from.is_none() {
            return self.answer(&reply::NEED_MAIL);
        }
        let syntax = if self.info.extended_smtp { &reply::SYNTAX_RCPT_ESMTP } else { &reply::SYNTAX_RCPT };
        let Some(rest) = arg.as_deref().and_then(|a| strip_keyword(a, "TO:")) else {
            return self.answer(syntax);
        };
        let (address, params) = match address::split_address(rest) {
            Ok(parsed) => parsed,
            Err(AddressError::Empty) => return self.answer(syntax),
            Err(AddressError::Malformed) => return self.answer(&reply::MALFORMED_ADDRESS),
        };
        if !self.info.extended_smtp && !params.is_empty() {
            return self.answer(syntax);
        }
        let options: Vec<String> = params.to_ascii_uppercase().split_whitespace().map(str::to_owned).collect();
        match address::parse_params(&options) {
            None => return self.answer(syntax),
            Some(params) if !params.is_empty() => return self.answer(&reply::RCPT_PARAMS_UNKNOWN),
            Some(_) => {}
        }
        let decided = if self.plugin.has(Hook::Rcpt) {
            self.plugin.rcpt(&self.info, &self.envelope, &address, &options).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        if reply.is_positive() {
            tracing::info!("recipient: {address}");
            self.envelope.rcpt_tos.push(address);
            self.envelope.rcpt_options.push(options);
        }
        self.answer(&reply)
    }

    async fn data(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) {
            return Ok(());
        }
        if self.envelope.rcpt_tos.is_empty() {
            return self.answer(&reply::NEED_RCPT);
        }
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_DATA);
        }
        self.push(&reply::START_DATA);
        let mut decoder = DataDecoder::new(self.settings.data_size_limit);
        let received = loop {
            if let Some(done) = decoder.feed(&mut self.input) {
                break done;
            }
            self.fill().await?;
        };
        let content = match received {
            Ok(content) => content,
            Err(refusal) => {
                self.reset();
                return self.answer(&refusal);
            }
        };
        tracing::info!(bytes = content.len(), "message received");
        let decided = if self.plugin.has(Hook::Data) {
            self.plugin.data(&self.info, &self.envelope, Arc::new(content)).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.reset();
        self.answer(&reply)
    }

    async fn rset(&mut self, arg: Option<String>) -> Step {
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_RSET);
        }
        self.reset();
        let decided = if self.plugin.has(Hook::Rset) { self.plugin.rset(&self.info, &self.envelope).await } else { Ok(None) };
        let reply = self.decided(decided, &reply::OK);
        self.answer(&reply)
    }

    async fn noop(&mut self, arg: Option<String>) -> Step {
        let decided = if self.plugin.has(Hook::Noop) {
            self.plugin.noop(&self.info, &self.envelope, arg.as_deref().unwrap_or("")).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.answer(&reply)
    }

    async fn quit(&mut self, arg: Option<String>) -> Step {
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_QUIT);
        }
        let decided = if self.plugin.has(Hook::Quit) { self.plugin.quit(&self.info, &self.envelope).await } else { Ok(None) };
        let reply = self.decided(decided, &reply::BYE);
        self.push(&reply);
        Err(Ending::Close)
    }

    async fn vrfy(&mut self, arg: Option<String>) -> Step {
        let Some(arg) = arg else {
            return self.answer(&reply::SYNTAX_VRFY);
        };
        let address = match address::split_address(&arg) {
            Ok((address, _)) => address,
            Err(_) => return self.answer(&Reply::new(502, format!("Could not VRFY {arg}"))),
        };
        let decided = if self.plugin.has(Hook::Vrfy) {
            self.plugin.vrfy(&self.info, &self.envelope, &address).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::VRFY_DEFAULT);
        self.answer(&reply)
    }

    /// AUTH on a listener without TLS: aiosmtpd's answers when AUTH requires
    /// TLS (its default) and TLS is not available.
    fn auth(&mut self) {
        if self.need_helo(&reply::NEED_EHLO) {
            return;
        }
        if !self.info.extended_smtp {
            self.push(&reply::AUTH_NOT_RECOGNIZED);
        } else {
            self.push(&reply::AUTH_ENCRYPTION_REQUIRED);
        }
    }

    fn help(&mut self, arg: Option<String>) {
        const SYNTAX: &[(&str, &str, &str)] = &[
            ("AUTH", "AUTH <mechanism>", ""),
            ("DATA", "DATA", ""),
            ("EHLO", "EHLO hostname", ""),
            ("HELO", "HELO hostname", ""),
            ("HELP", "HELP [command]", ""),
            ("MAIL", "MAIL FROM: <address>", " [SP <mail-parameters>]"),
            ("NOOP", "NOOP [ignored]", ""),
            ("QUIT", "QUIT", ""),
            ("RCPT", "RCPT TO: <address>", " [SP <mail-parameters>]"),
            ("RSET", "RSET", ""),
            ("VRFY", "VRFY <address>", ""),
        ];
        let mut code = 250;
        if let Some(arg) = arg {
            let wanted = arg.to_ascii_uppercase();
            if let Some((_, syntax, extended)) = SYNTAX.iter().find(|(verb, _, _)| *verb == wanted) {
                let extended = if self.info.extended_smtp { *extended } else { "" };
                self.push(&Reply::new(250, format!("Syntax: {syntax}{extended}")));
                return;
            }
            code = 501;
        }
        let verbs: Vec<&str> = SYNTAX.iter().map(|(verb, _, _)| *verb).collect();
        self.push(&Reply::new(code, format!("Supported commands: {}", verbs.join(" "))));
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
    head.eq_ignore_ascii_case(keyword).then(|| arg[keyword.len()..].trim())
}
