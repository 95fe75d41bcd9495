//! Mailauth: the mail authentication policy of an MX on the host's results
//! (`wasmtp:smtp/mail-auth`), and the `Authentication-Results` field on
//! every message it accepts.
//!
//! Arguments, each optional, in any order (Stalwart's names and modes):
//! `spf=MODE dkim=MODE dmarc=MODE iprev=MODE tempfail=accept|defer
//! forged=rename|remove`. A MODE is
//!
//! - `relaxed` (the default): checked, reported (notes) and never refused
//!   for itself — except DMARC, whose point is the author domain's own
//!   policy: `p=reject` (after `pct=`) is refused `550 5.7.1`, and
//!   `p=quarantine` marks the message `X-Wasmtp-Quarantine: dmarc`;
//! - `strict`: a failure is refused: SPF `fail` → `550 5.7.23`, iprev
//!   `fail`/`permerror` → `550 5.7.25`, a signed message none of whose DKIM
//!   signatures verifies → `550 5.7.20` (unsigned mail is DMARC's
//!   business), and DMARC `p=quarantine` → `550 5.7.1` too;
//! - `off`: not acted on, not noted (the header still states every method:
//!   it is the host's whole value).
//!
//! `tempfail=defer` answers `451 4.7.5` when a check that is not `off`
//! could not be completed (`temperror`: the DNS timed out or failed);
//! `accept` (the default) lets the message through, its header saying so.
//!
//! iprev and SPF are decided at RCPT, the first hook where the host knows
//! the MAIL FROM identity (RFC 7208 §8.4 allows MAIL or RCPT): a refused
//! sender costs the client no DATA, and every recipient gets the same answer
//! (the host computes it once). DKIM and DMARC need the message: they are
//! decided at the end of DATA. A message accepted
//! gets, in this order: incoming `Authentication-Results` claiming our
//! `authserv-id` renamed to `X-Original-Authentication-Results` (or
//! removed, `forged=remove`: RFC 8601 §5), incoming `X-Wasmtp-Quarantine`
//! removed (only ours may file a message), ours added. Each method's
//! result is noted as `mailauth.METHOD` (`mailauth.spf = pass`), and DMARC's
//! policy as `mailauth.dmarc-policy`, for the plugins after this one.

use wasmtp_plugin::mail_auth::{self, AuthResults, DmarcPolicy, MethodResult};
use wasmtp_plugin::{Args, Content, Envelope, Plugin, Reply, Session, headers, notes};

const AUTH_RESULTS: &str = "Authentication-Results";
const FORGED: &str = "X-Original-Authentication-Results";
/// A mailbox files on it: Sieve `if header :is "X-Wasmtp-Quarantine" "dmarc"`.
const QUARANTINE: &str = "X-Wasmtp-Quarantine";

#[derive(Clone, Copy, Default, PartialEq)]
enum Mode {
    #[default]
    Relaxed,
    Strict,
    Off,
}

#[derive(Default)]
struct MailAuth {
    spf: Mode,
    dkim: Mode,
    dmarc: Mode,
    iprev: Mode,
    defer: bool,
    remove_forged: bool,
}

fn mode(args: &mut Args, name: &str) -> Result<Mode, String> {
    Ok(
        match args.choice(name, &["relaxed", "strict", "off"], "relaxed")? {
            "strict" => Mode::Strict,
            "off" => Mode::Off,
            _ => Mode::Relaxed,
        },
    )
}

#[wasmtp_plugin::plugin]
impl Plugin for MailAuth {
    fn init(&mut self, mut args: Args) -> Result<(), String> {
        self.spf = mode(&mut args, "spf")?;
        self.dkim = mode(&mut args, "dkim")?;
        self.dmarc = mode(&mut args, "dmarc")?;
        self.iprev = mode(&mut args, "iprev")?;
        self.defer = args.choice("tempfail", &["accept", "defer"], "accept")? == "defer";
        self.remove_forged = args.choice("forged", &["rename", "remove"], "rename")? == "remove";
        match args.next() {
            None => Ok(()),
            Some(extra) => Err(format!(
                "unknown argument `{extra}` (known: spf=, dkim=, dmarc=, iprev=, tempfail=, forged=)"
            )),
        }
    }

    fn rcpt(&mut self, session: &Session, _: &Envelope, _: &str, _: &[String]) -> Option<Reply> {
        let client = Reply::printable(&session.peer.address);
        let iprev = self.checked(self.iprev, "iprev", mail_auth::iprev);
        let spf = self.checked(self.spf, "spf", mail_auth::spf_mail_from);
        if self.iprev == Mode::Strict
            && iprev
                .as_ref()
                .is_some_and(|r| r.failed() || r.is("permerror"))
        {
            return Some(Reply::new(
                550,
                "5.7.25",
                format!(
                    "Reverse DNS validation failed: {client} has no name that resolves back to it"
                ),
            ));
        }
        if self.spf == Mode::Strict && spf.as_ref().is_some_and(MethodResult::failed) {
            // The null sender's identity is the HELO name (postmaster@HELO).
            let sender = spf
                .as_ref()
                .and_then(|r| r.property("smtp.mailfrom"))
                .unwrap_or_default();
            let domain = Reply::printable(
                sender
                    .rsplit_once('@')
                    .map_or(session.helo_name(), |(_, d)| d),
            );
            return Some(Reply::new(
                550,
                "5.7.23",
                format!("SPF validation failed: {domain} does not allow {client} to send its mail"),
            ));
        }
        self.deferred(&[iprev, spf])
    }

    fn data(&mut self, _: &Session, _: &Envelope, _: Content) -> Option<Reply> {
        let results = mail_auth::results()?;
        let dkim = results.dkim_summary();
        let dmarc_on = self.dmarc != Mode::Off;
        for (name, mode, result) in [
            ("iprev", self.iprev, &results.iprev),
            ("spf", self.spf, &results.spf_mail_from),
            ("dkim", self.dkim, &dkim),
            ("arc", Mode::Relaxed, &results.arc),
            ("dmarc", self.dmarc, &results.dmarc),
        ] {
            if mode != Mode::Off {
                note(name, &result.result);
            }
        }
        let policy = if dmarc_on {
            results.dmarc_policy
        } else {
            DmarcPolicy::None
        };
        if dmarc_on {
            note("dmarc-policy", policy_name(policy));
        }

        // Permanent refusals first: a message that fails for good is not
        // deferred only to be refused later.
        if policy == DmarcPolicy::Reject
            || (policy == DmarcPolicy::Quarantine && self.dmarc == Mode::Strict)
        {
            let domain = Reply::printable(
                results
                    .dmarc
                    .property("header.from")
                    .unwrap_or("the author domain"),
            );
            return Some(Reply::new(
                550,
                "5.7.1",
                format!("Rejected by the DMARC policy of {domain}"),
            ));
        }
        if self.dkim == Mode::Strict
            && !results.dkim.is_empty()
            && !dkim.passed()
            && !dkim.is_temporary()
        {
            return Some(Reply::new(
                550,
                "5.7.20",
                "DKIM validation failed: no signature of the message verifies",
            ));
        }
        let dkim = (self.dkim != Mode::Off).then_some(dkim);
        let dmarc = dmarc_on.then(|| results.dmarc.clone());
        if let Some(reply) = self.deferred(&[dkim, dmarc]) {
            return Some(reply);
        }

        if let Err(e) = self.mark(&results, policy == DmarcPolicy::Quarantine) {
            // Delivering it unmarked could pass a forged result off as ours.
            wasmtp_plugin::error!("cannot edit the message's header: {e:?}");
            return Some(Reply::temporary_failure(
                "Error: cannot record the authentication results",
            ));
        }
        None
    }
}

impl MailAuth {
    /// `check()`'s result, noted, unless the method is off.
    fn checked(
        &self,
        mode: Mode,
        name: &str,
        check: fn() -> Option<MethodResult>,
    ) -> Option<MethodResult> {
        let result = (mode != Mode::Off).then(check).flatten()?;
        note(name, &result.result);
        Some(result)
    }

    /// `451 4.7.5` with `tempfail=defer` when one of these could not be completed.
    fn deferred(&self, checked: &[Option<MethodResult>]) -> Option<Reply> {
        let unfinished = checked.iter().flatten().find(|r| r.is_temporary())?;
        let method = unfinished.method.name();
        if !self.defer {
            wasmtp_plugin::info!("{method}: temperror; accepted (tempfail=accept)");
            return None;
        }
        Some(Reply::new(
            451,
            "4.7.5",
            format!("Temporary DNS failure checking {method}; try again later"),
        ))
    }

    /// The header edits of an accepted message (see the crate docs).
    fn mark(&self, results: &AuthResults, quarantine: bool) -> Result<(), headers::Error> {
        let id = &results.authserv_id;
        if self.remove_forged {
            headers::remove_claiming(AUTH_RESULTS, id)?;
        } else {
            headers::rename_claiming(AUTH_RESULTS, id, FORGED)?;
        }
        headers::remove(QUARANTINE)?;
        if quarantine {
            headers::add(QUARANTINE, "dmarc")?;
        }
        headers::add(AUTH_RESULTS, &results.header_value)
    }
}

fn policy_name(policy: DmarcPolicy) -> &'static str {
    match policy {
        DmarcPolicy::None => "none",
        DmarcPolicy::Quarantine => "quarantine",
        DmarcPolicy::Reject => "reject",
    }
}

/// `mailauth.NAME = value`; a note that does not fit is logged, not fatal.
fn note(name: &str, value: &str) {
    if let Err(e) = notes::set(&format!("mailauth.{name}"), value) {
        wasmtp_plugin::warn!("note mailauth.{name} not kept: {e:?}");
    }
}
