//! Mail authentication computed by the host: SPF (HELO and MAIL FROM),
//! iprev, DKIM (every signature), ARC and DMARC, and the
//! `Authentication-Results` value (RFC 8601) that sums them up.
//!
//! Verification is Stalwart's `mail-auth`, run natively on the server's
//! resolver ([`super::dns::Dns`]) so that it shares the DNS cache. It is
//! lazy and done once per transaction: a [`TransactionAuth`] belongs to one
//! SMTP transaction, is shared by every plugin of the chain (and by
//! tenants), and computes each part the first time someone asks for it.
//! The message is read from the spool by the host, never copied into a
//! plugin.
//!
//! Every part is bounded by a deadline (the asking hook's, and
//! `[auth] timeout`): a part cut short answers `temperror` to that caller
//! and is not remembered, so a later caller tries again (on a warm cache).

use crate::plugin::bindings::wasmtp::smtp::mail_auth as wit;
use crate::plugin::host::HostState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::common::crypto::Algorithm;
use mail_auth::dkim::Canonicalization;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, IprevOutput, IprevResult, SpfOutput, SpfResult,
};
use tokio::sync::OnceCell;

use super::dns::{Dns, Query, RecordType, Records};
use crate::smtp::spool::Content;

/// The largest message DKIM reads by default.
pub const DEFAULT_DKIM_MAX_SIZE: u64 = 25 << 20;
/// How long one part (SPF, DKIM…) may take by default, whatever the hook's
/// deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// `[auth]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailAuthSettings {
    /// The `authserv-id` of `Authentication-Results`; `None`: the
    /// listener's host name.
    pub authserv_id: Option<String>,
    /// Messages larger than this are not DKIM-verified (their signatures
    /// are reported `neutral`).
    pub dkim_max_size: u64,
    /// The longest one part of the verification may take.
    pub timeout: Duration,
}

impl Default for MailAuthSettings {
    fn default() -> Self {
        MailAuthSettings {
            authserv_id: None,
            dkim_max_size: DEFAULT_DKIM_MAX_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The authentication methods of RFC 8601 this host reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Spf,
    Dkim,
    Arc,
    Dmarc,
    Iprev,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Spf => "spf",
            Method::Dkim => "dkim",
            Method::Arc => "arc",
            Method::Dmarc => "dmarc",
            Method::Iprev => "iprev",
        }
    }
}

/// One method's result, as `Authentication-Results` states it: `dkim=fail
/// (reason) header.d=example.com header.s=sel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodResult {
    pub method: Method,
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`,
    /// `permerror` (RFC 8601 §2.7).
    pub result: String,
    /// Why, in words, when there is more to say.
    pub reason: Option<String>,
    /// `ptype.property` = value: `smtp.mailfrom`, `header.d`, `policy.dmarc`…
    pub properties: Vec<(String, String)>,
}

impl MethodResult {
    fn new(method: Method, result: &str) -> MethodResult {
        MethodResult {
            method,
            result: result.to_owned(),
            reason: None,
            properties: Vec::new(),
        }
    }

    fn reason(mut self, reason: impl ToString) -> MethodResult {
        self.reason = Some(reason.to_string());
        self
    }

    fn property(mut self, key: &str, value: impl ToString) -> MethodResult {
        self.properties.push((key.to_owned(), value.to_string()));
        self
    }

    /// The value of property `key` (`header.d`), if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A part that could not finish in time.
    fn timed_out(method: Method) -> MethodResult {
        MethodResult::new(method, "temperror").reason("timed out")
    }
}

/// What DMARC asks the receiver to do with a message that fails it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn name(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }

    fn from_published(policy: Policy) -> DmarcPolicy {
        match policy {
            Policy::Reject => DmarcPolicy::Reject,
            Policy::Quarantine => DmarcPolicy::Quarantine,
            Policy::None | Policy::Unspecified => DmarcPolicy::None,
        }
    }

    /// The next less strict policy (RFC 7489 §6.6.4, a message not sampled
    /// by `pct`).
    fn relaxed(self) -> DmarcPolicy {
        match self {
            DmarcPolicy::Reject => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        }
    }
}

/// Everything about a message: what the `data` stage sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    pub iprev: MethodResult,
    pub spf_helo: MethodResult,
    pub spf_mail_from: MethodResult,
    /// One per `DKIM-Signature`, in the message's order; empty when the
    /// message is unsigned.
    pub dkim: Vec<MethodResult>,
    pub arc: MethodResult,
    pub dmarc: MethodResult,
    /// What the author domain asks for this message: `none` when DMARC
    /// passed or does not apply; otherwise its policy (`p=`, `sp=` or `np=`)
    /// after `pct=` sampling.
    pub dmarc_policy: DmarcPolicy,
    /// The complete `Authentication-Results` field value (without the
    /// name), folded: `authserv-id; iprev=pass ...; spf=pass ...`.
    pub header_value: String,
}

/// The verifier: the server's resolver and `[auth]`. One per generation.
pub struct MailAuth {
    dns: Arc<Dns>,
    settings: MailAuthSettings,
}

impl MailAuth {
    pub fn new(dns: Arc<Dns>, settings: MailAuthSettings) -> MailAuth {
        MailAuth { dns, settings }
    }

    pub fn settings(&self) -> &MailAuthSettings {
        &self.settings
    }

    pub fn dns(&self) -> &Arc<Dns> {
        &self.dns
    }
}

/// What a transaction's checks are about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthInput {
    /// The SMTP client's address.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: String,
    /// The reverse-path, empty for `<>`.
    pub mail_from: String,
    /// The receiving host's name (SPF's `%{r}`), and the `authserv-id`
    /// unless `[auth] authserv_id` says otherwise.
    pub hostname: String,
}

/// The message part: DKIM, ARC and DMARC, which need the content.
#[derive(Clone, Debug)]
struct MessagePart {
    dkim: Vec<MethodResult>,
    arc: MethodResult,
    dmarc: MethodResult,
    dmarc_policy: DmarcPolicy,
    /// `;\r\n\tdkim=...` and the rest, as mail-auth writes them.
    header: String,
}

/// One transaction's authentication, computed on demand, once.
pub struct TransactionAuth {
    verifier: Arc<MailAuth>,
    input: AuthInput,
    authserv_id: String,
    iprev: OnceCell<IprevOutput>,
    spf_helo: OnceCell<SpfOutput>,
    spf_mail_from: OnceCell<SpfOutput>,
    message: OnceCell<MessagePart>,
}

/// A part that ran out of time.
struct TimedOut;

impl TransactionAuth {
    pub fn new(verifier: Arc<MailAuth>, input: AuthInput) -> TransactionAuth {
        let authserv_id = verifier
            .settings
            .authserv_id
            .clone()
            .unwrap_or_else(|| input.hostname.clone());
        TransactionAuth {
            verifier,
            input,
            authserv_id,
            iprev: OnceCell::new(),
            spf_helo: OnceCell::new(),
            spf_mail_from: OnceCell::new(),
            message: OnceCell::new(),
        }
    }

    pub fn input(&self) -> &AuthInput {
        &self.input
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// The part's own deadline: the caller's, or `[auth] timeout` from now.
    fn cap(&self, deadline: Instant) -> tokio::time::Instant {
        deadline
            .min(Instant::now() + self.verifier.settings.timeout)
            .into()
    }

    async fn iprev_output(&self, deadline: Instant) -> Result<&IprevOutput, TimedOut> {
        let Ok(authenticator) = self.verifier.dns.authenticator() else {
            return Ok(self
                .iprev
                .get_or_init(|| async { unavailable_iprev() })
                .await);
        };
        let ip = self.input.client_ip;
        self.iprev
            .get_or_try_init(|| async {
                tokio::time::timeout_at(self.cap(deadline), authenticator.verify_iprev(ip))
                    .await
                    .map_err(|_| TimedOut)
            })
            .await
    }

    async fn spf_output(&self, helo: bool, deadline: Instant) -> Result<&SpfOutput, TimedOut> {
        let cell = if helo {
            &self.spf_helo
        } else {
            &self.spf_mail_from
        };
        let Ok(authenticator) = self.verifier.dns.authenticator() else {
            return Ok(cell
                .get_or_init(|| async {
                    SpfOutput::new(String::new()).with_result(SpfResult::TempError)
                })
                .await);
        };
        let i = &self.input;
        let params = if helo {
            SpfParameters::verify_ehlo(i.client_ip, &i.helo, &i.hostname)
        } else {
            SpfParameters::verify_mail_from(i.client_ip, &i.helo, &i.hostname, &i.mail_from)
        };
        cell.get_or_try_init(|| async {
            tokio::time::timeout_at(self.cap(deadline), authenticator.verify_spf(params))
                .await
                .map_err(|_| TimedOut)
        })
        .await
    }

    /// iprev (RFC 8601 §3): the client's PTR names, and whether one of them
    /// resolves back to its address.
    pub async fn iprev(&self, deadline: Instant) -> MethodResult {
        match self.iprev_output(deadline).await {
            Ok(output) => iprev_result(output, self.input.client_ip),
            Err(TimedOut) => MethodResult::timed_out(Method::Iprev)
                .property("policy.iprev", self.input.client_ip),
        }
    }

    /// SPF for the HELO identity.
    pub async fn spf_helo(&self, deadline: Instant) -> MethodResult {
        match self.spf_output(true, deadline).await {
            Ok(output) => spf_result(output).property("smtp.helo", &self.input.helo),
            Err(TimedOut) => {
                MethodResult::timed_out(Method::Spf).property("smtp.helo", &self.input.helo)
            }
        }
    }

    /// SPF for the MAIL FROM identity (`postmaster@HELO` for `<>`).
    pub async fn spf_mail_from(&self, deadline: Instant) -> MethodResult {
        let from = if self.input.mail_from.is_empty() {
            "<>"
        } else {
            &self.input.mail_from
        };
        match self.spf_output(false, deadline).await {
            Ok(output) => spf_result(output).property("smtp.mailfrom", from),
            Err(TimedOut) => MethodResult::timed_out(Method::Spf).property("smtp.mailfrom", from),
        }
    }

    /// Everything, with the message: DKIM, ARC and DMARC need `content`.
    pub async fn results(&self, content: &Arc<Content>, deadline: Instant) -> AuthResults {
        let (iprev, spf_helo, spf_mail_from) = tokio::join!(
            self.iprev(deadline),
            self.spf_helo(deadline),
            self.spf_mail_from(deadline)
        );
        let message = match self
            .message
            .get_or_try_init(|| async {
                tokio::time::timeout_at(self.cap(deadline), self.verify_message(content, deadline))
                    .await
                    .map_err(|_| TimedOut)
            })
            .await
        {
            Ok(part) => part.clone(),
            Err(TimedOut) => MessagePart {
                dkim: vec![MethodResult::timed_out(Method::Dkim)],
                arc: MethodResult::timed_out(Method::Arc),
                dmarc: MethodResult::timed_out(Method::Dmarc),
                dmarc_policy: DmarcPolicy::None,
                header: String::new(),
            },
        };
        let header_value = self.header_value(&message, deadline).await;
        AuthResults {
            authserv_id: self.authserv_id.clone(),
            iprev,
            spf_helo,
            spf_mail_from,
            dkim: message.dkim,
            arc: message.arc,
            dmarc: message.dmarc,
            dmarc_policy: message.dmarc_policy,
            header_value,
        }
    }

    /// The `Authentication-Results` value: iprev, SPF for HELO and MAIL
    /// FROM, then DKIM, ARC and DMARC as mail-auth writes them.
    async fn header_value(&self, message: &MessagePart, deadline: Instant) -> String {
        let i = &self.input;
        let mut header = AuthenticationResults::new(&self.authserv_id);
        let mut timed_out = Vec::new();
        match self.iprev_output(deadline).await {
            Ok(output) => header = header.with_iprev_result(output, i.client_ip),
            Err(TimedOut) => timed_out.push("iprev=temperror (timed out)".to_owned()),
        }
        match self.spf_output(true, deadline).await {
            Ok(output) => header = header.with_spf_ehlo_result(output, i.client_ip, &i.helo),
            Err(TimedOut) => timed_out.push("spf=temperror (timed out)".to_owned()),
        }
        match self.spf_output(false, deadline).await {
            Ok(output) => {
                header = header.with_spf_mailfrom_result(output, i.client_ip, &i.mail_from, &i.helo)
            }
            Err(TimedOut) => timed_out.push("spf=temperror (timed out)".to_owned()),
        }
        let mut value = header.to_string();
        value.push_str(&message.header);
        if message.header.is_empty() {
            timed_out.push("dkim=temperror (timed out)".to_owned());
        }
        for part in timed_out {
            value.push_str(";\r\n\t");
            value.push_str(&part);
        }
        value
    }

    async fn verify_message(&self, content: &Arc<Content>, deadline: Instant) -> MessagePart {
        let dns = &self.verifier.dns;
        let limit = self.verifier.settings.dkim_max_size;
        let raw = if content.len() > limit {
            None
        } else {
            let content = Arc::clone(content);
            let len = content.len() as usize;
            match tokio::task::spawn_blocking(move || content.read(0, len)).await {
                Ok(Ok(raw)) => Some(raw),
                Ok(Err(e)) => {
                    tracing::warn!("reading the spooled message for DKIM: {e}");
                    None
                }
                Err(e) => {
                    tracing::warn!("reading the spooled message for DKIM: {e}");
                    None
                }
            }
        };
        let too_large = raw.is_none();
        let raw = raw.unwrap_or_default();
        let parsed = if too_large {
            None
        } else {
            AuthenticatedMessage::parse(&raw)
        };
        let authenticator = dns.authenticator().ok();
        let (Some(message), Some(authenticator)) = (parsed, authenticator) else {
            let why = if too_large {
                "not verified: the message is larger than [auth] dkim_max_size"
            } else if dns.authenticator().is_err() {
                "not verified: no resolver"
            } else {
                "not verified: the message could not be parsed"
            };
            let result = if dns.authenticator().is_err() {
                "temperror"
            } else {
                "none"
            };
            let dkim = MethodResult::new(Method::Dkim, result).reason(why);
            return MessagePart {
                header: format!(";\r\n\tdkim={result} ({why})"),
                dkim: vec![dkim],
                arc: MethodResult::new(Method::Arc, result).reason(why),
                dmarc: MethodResult::new(Method::Dmarc, result).reason(why),
                dmarc_policy: DmarcPolicy::None,
            };
        };
        let (dkim, arc) = tokio::join!(
            authenticator.verify_dkim(&message),
            authenticator.verify_arc(&message)
        );
        let (spf, spf_domain) = match self.spf_output(false, deadline).await {
            Ok(spf) => (spf.clone(), spf_domain(&self.input)),
            Err(TimedOut) => (
                SpfOutput::new(spf_domain(&self.input)).with_result(SpfResult::TempError),
                spf_domain(&self.input),
            ),
        };
        let dmarc = authenticator
            .verify_dmarc(DmarcParameters::new(&message, &dkim, &spf_domain, &spf))
            .await;
        let dmarc_policy = self.applied_policy(&dmarc, deadline).await;
        // An unsigned message says so (RFC 8601 §2.7.1), as mail-auth does not.
        let mut header = if dkim.is_empty() {
            ";\r\n\tdkim=none".to_owned()
        } else {
            String::new()
        };
        header += &AuthenticationResults::new("")
            .with_dkim_results(&dkim, message.from())
            .with_arc_result(&arc, self.input.client_ip)
            .with_dmarc_result(&dmarc)
            .to_string();
        MessagePart {
            dkim: dkim.iter().map(dkim_result).collect(),
            arc: arc_result(&arc),
            dmarc: dmarc_result(&dmarc, dmarc_policy),
            dmarc_policy,
            header,
        }
    }

    /// The policy to apply to this message: the published one for a
    /// failing message, lowered one step when `pct=` does not sample it
    /// (RFC 7489 §6.6.4; mail-auth follows DMARCbis, which dropped `pct`).
    async fn applied_policy(&self, dmarc: &DmarcOutput, deadline: Instant) -> DmarcPolicy {
        if !matches!(dmarc.result(), DmarcResult::Fail(_)) {
            return DmarcPolicy::None;
        }
        let published = DmarcPolicy::from_published(dmarc.policy());
        if published == DmarcPolicy::None {
            return published;
        }
        let pct = self.published_pct(dmarc.domain(), deadline).await;
        if pct >= 100 || sample_percent() < pct {
            published
        } else {
            published.relaxed()
        }
    }

    /// `pct=` of the DMARC record that applies to `domain`: at
    /// `_dmarc.DOMAIN`, else at its parents' (the names mail-auth just
    /// looked up, so answered from the cache). 100 when absent.
    async fn published_pct(&self, domain: &str, deadline: Instant) -> u32 {
        let mut name = domain.trim_end_matches('.');
        loop {
            let query = Query {
                name: format!("_dmarc.{name}"),
                kind: RecordType::Txt,
            };
            if let Ok(Records::Txt(texts)) = self.verifier.dns.lookup(None, &query, deadline).await
                && let Some(record) = texts
                    .iter()
                    .find(|t| t.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
            {
                return pct_of(record);
            }
            match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => name = parent,
                _ => return 100,
            }
        }
    }
}

/// The domain SPF's MAIL FROM check was about: the reverse-path's, or the
/// HELO name for `<>`.
fn spf_domain(input: &AuthInput) -> String {
    input
        .mail_from
        .rsplit_once('@')
        .map_or(input.helo.as_str(), |(_, d)| d)
        .to_ascii_lowercase()
}

/// `pct=N` of a DMARC record; 100 when absent or malformed.
fn pct_of(record: &str) -> u32 {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
        .map_or(100, |n| n.min(100))
}

/// A number in 0..100, different each call.
fn sample_percent() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() % 100) as u32
}

fn unavailable_iprev() -> IprevOutput {
    IprevOutput {
        result: IprevResult::TempError(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
            "no resolver".into(),
        ))),
        ptr: None,
    }
}

fn spf_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn spf_result(output: &SpfOutput) -> MethodResult {
    let mut r = MethodResult::new(Method::Spf, spf_name(output.result()));
    if let Some(explanation) = output.explanation() {
        r = r.reason(explanation);
    }
    r
}

/// `pass`/`fail (why)`…: the result of DKIM, ARC (same enum) and its reason.
fn dkim_name(result: &DkimResult) -> (&'static str, Option<String>) {
    match result {
        DkimResult::Pass => ("pass", None),
        DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
        DkimResult::Fail(e) => ("fail", Some(e.to_string())),
        DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
        DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
        DkimResult::None => ("none", None),
    }
}

fn dkim_result(output: &DkimOutput) -> MethodResult {
    let (name, reason) = dkim_name(output.result());
    let mut r = MethodResult::new(Method::Dkim, name);
    r.reason = reason;
    if let Some(s) = output.signature() {
        r = r.property("header.d", &s.d).property("header.s", &s.s);
        if !s.i.is_empty() {
            r = r.property("header.i", &s.i);
        }
        let algorithm = match s.a {
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        };
        let canon = |c: Canonicalization| match c {
            Canonicalization::Relaxed => "relaxed",
            Canonicalization::Simple => "simple",
        };
        r = r
            .property("header.a", algorithm)
            .property("header.c", format!("{}/{}", canon(s.ch), canon(s.cb)));
        if s.l > 0 {
            r = r.property("header.l", s.l);
        }
    }
    r
}

fn arc_result(output: &ArcOutput) -> MethodResult {
    let (name, reason) = dkim_name(output.result());
    let mut r = MethodResult::new(Method::Arc, name);
    r.reason = reason;
    r
}

fn dmarc_name(result: &DmarcResult) -> (&'static str, Option<String>) {
    match result {
        DmarcResult::Pass => ("pass", None),
        DmarcResult::Fail(e) => ("fail", Some(e.to_string())),
        DmarcResult::TempError(e) => ("temperror", Some(e.to_string())),
        DmarcResult::PermError(e) => ("permerror", Some(e.to_string())),
        DmarcResult::None => ("none", None),
    }
}

fn dmarc_result(output: &DmarcOutput, applied: DmarcPolicy) -> MethodResult {
    let (name, reason) = dmarc_name(&output.result());
    let mut r = MethodResult::new(Method::Dmarc, name);
    r.reason = reason;
    let published = DmarcPolicy::from_published(output.policy());
    r.property("header.from", output.domain())
        .property("policy.dmarc", published.name())
        .property("policy.applied", applied.name())
}

fn iprev_result(output: &IprevOutput, ip: IpAddr) -> MethodResult {
    let (name, reason) = match &output.result {
        IprevResult::Pass => ("pass", None),
        IprevResult::Fail(e) => ("fail", Some(e.to_string())),
        IprevResult::TempError(e) => ("temperror", Some(e.to_string())),
        IprevResult::PermError(e) => ("permerror", Some(e.to_string())),
        IprevResult::None => ("none", None),
    };
    let mut r = MethodResult::new(Method::Iprev, name);
    r.reason = reason;
    r = r.property("policy.iprev", ip);
    if let Some(ptr) = output.ptr.as_ref().and_then(|p| p.first()) {
        r = r.property("policy.ptr", ptr.trim_end_matches('.'));
    }
    r
}

// ---- the `wasmtp:smtp/mail-auth` import -----------------------------------

/// The transaction's verification, shared by the plugins of a chain (and
/// tenants): it lives with the envelope, and the first plugin that asks
/// creates it. A later HELO or MAIL (new inputs) starts a new one.
#[derive(Clone, Default)]
pub struct AuthSlot(Arc<std::sync::Mutex<Option<Arc<TransactionAuth>>>>);

impl std::fmt::Debug for AuthSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthSlot")
    }
}

impl AuthSlot {
    /// The transaction's verification for `input`, made on first use.
    pub fn get(&self, verifier: &Arc<MailAuth>, input: &AuthInput) -> Arc<TransactionAuth> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(t) if t.input() == input => Arc::clone(t),
            _ => {
                let t = Arc::new(TransactionAuth::new(Arc::clone(verifier), input.clone()));
                *slot = Some(Arc::clone(&t));
                t
            }
        }
    }
}

/// A plugin instance's view during a hook call: the verifier, what the
/// session knows so far, and the transaction's slot.
pub struct AuthAccess {
    pub verifier: Arc<MailAuth>,
    /// `None` on a Unix-socket listener (no client address) or between calls.
    pub input: Option<AuthInput>,
    /// Whether MAIL was given (SPF for MAIL FROM needs it).
    pub has_mail_from: bool,
    pub slot: AuthSlot,
}

impl From<&MethodResult> for wit::MethodResult {
    fn from(r: &MethodResult) -> wit::MethodResult {
        wit::MethodResult {
            method: match r.method {
                Method::Spf => wit::Method::Spf,
                Method::Dkim => wit::Method::Dkim,
                Method::Arc => wit::Method::Arc,
                Method::Dmarc => wit::Method::Dmarc,
                Method::Iprev => wit::Method::Iprev,
            },
            result: r.result.clone(),
            reason: r.reason.clone(),
            properties: r
                .properties
                .iter()
                .map(|(key, value)| wit::Property {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }
    }
}

impl HostState {
    /// The transaction's verification, if the session has a client address.
    fn transaction_auth(&self) -> Option<(Arc<TransactionAuth>, &AuthAccess)> {
        let access = self.mail_auth.as_ref()?;
        let input = access.input.as_ref()?;
        Some((access.slot.get(&access.verifier, input), access))
    }
}

impl wit::Host for HostState {
    async fn iprev(&mut self) -> Option<wit::MethodResult> {
        let (t, _) = self.transaction_auth()?;
        Some((&t.iprev(super::wait_deadline(self.deadline)).await).into())
    }

    async fn spf_helo(&mut self) -> Option<wit::MethodResult> {
        let (t, _) = self.transaction_auth()?;
        if t.input().helo.is_empty() {
            return None;
        }
        Some((&t.spf_helo(super::wait_deadline(self.deadline)).await).into())
    }

    async fn spf_mail_from(&mut self) -> Option<wit::MethodResult> {
        let (t, access) = self.transaction_auth()?;
        if !access.has_mail_from {
            return None;
        }
        Some((&t.spf_mail_from(super::wait_deadline(self.deadline)).await).into())
    }

    async fn results(&mut self) -> Option<wit::AuthResults> {
        // DKIM and ARC verify the message as received, not as edited.
        let content = self.content.as_ref()?.original().clone();
        let (t, _) = self.transaction_auth()?;
        let r = t
            .results(&content, super::wait_deadline(self.deadline))
            .await;
        Some(wit::AuthResults {
            authserv_id: r.authserv_id,
            iprev: (&r.iprev).into(),
            spf_helo: (&r.spf_helo).into(),
            spf_mail_from: (&r.spf_mail_from).into(),
            dkim: r.dkim.iter().map(Into::into).collect(),
            arc: (&r.arc).into(),
            dmarc: (&r.dmarc).into(),
            dmarc_policy: match r.dmarc_policy {
                DmarcPolicy::None => wit::DmarcPolicy::None,
                DmarcPolicy::Quarantine => wit::DmarcPolicy::Quarantine,
                DmarcPolicy::Reject => wit::DmarcPolicy::Reject,
            },
            header_value: r.header_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_is_read_from_the_record() {
        assert_eq!(pct_of("v=DMARC1; p=reject; pct=25"), 25);
        assert_eq!(pct_of("v=DMARC1; p=reject"), 100);
        assert_eq!(pct_of("v=DMARC1; p=reject; pct=250"), 100);
        assert_eq!(pct_of("v=DMARC1; p=reject; pct=x"), 100);
    }

    #[test]
    fn an_unsampled_message_gets_the_next_less_strict_policy() {
        assert_eq!(DmarcPolicy::Reject.relaxed(), DmarcPolicy::Quarantine);
        assert_eq!(DmarcPolicy::Quarantine.relaxed(), DmarcPolicy::None);
        let samples: Vec<u32> = (0..200).map(|_| sample_percent()).collect();
        assert!(samples.iter().all(|&n| n < 100));
        assert!(samples.iter().any(|&n| n != samples[0]));
    }
}
