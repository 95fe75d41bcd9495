//! Ratelimit: at most LIMIT per WINDOW seconds, counted per client address,
//! sender, authenticated identity or recipient domain, exact across the
//! nodes of a cluster (one atomic counter in the server's key-value store,
//! shared namespace `ratelimit`; with `[store] backend = "postgres"` every
//! node counts into the same one). The window is fixed at its first count.
//!
//! Arguments: `KIND LIMIT WINDOW`, KIND one of
//! - `ip`: messages (MAIL commands) per client address, `451 4.7.1` past it;
//! - `sender`: messages per envelope sender, `451 4.7.1`;
//! - `auth`: messages per authenticated identity (unauthenticated sessions
//!   are not counted), `451 4.7.1`;
//! - `rcpt-domain`: recipients per recipient domain, `452 4.7.1`, that
//!   recipient only.
//!
//! Several limits: several plugins of this component with other names. When
//! the store is unavailable, mail goes through and a warning is logged: a
//! limit that can't be counted does not stop mail.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:ratelimit;
        world ratelimit {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/kv@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/mail@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

use std::sync::OnceLock;

use exports::wasmtp::smtp::{mail, rcpt, setup};
use wasmtp::smtp::kv;
use wasmtp::smtp::log::{Level, log};
use wasmtp::smtp::types::{Envelope, Reply, Session};

const NAMESPACE: &str = "ratelimit";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ip,
    Sender,
    Auth,
    RcptDomain,
}

struct Rule {
    kind: Kind,
    name: &'static str,
    limit: i64,
    window_ms: u64,
}

static RULE: OnceLock<Rule> = OnceLock::new();

/// Count one against `subject`; the reply if that went past the limit.
fn count(rule: &Rule, subject: &str, code: u16) -> Option<Reply> {
    let key = format!(
        "{}:{}/{}:{}",
        rule.name,
        rule.limit,
        rule.window_ms,
        subject.to_ascii_lowercase()
    );
    let key: String = key.chars().take(500).collect();
    match kv::incr(Some(NAMESPACE), &key, 1, rule.window_ms) {
        Ok(c) if c.value > rule.limit => Some(Reply {
            code,
            enhanced: Some("4.7.1".into()),
            lines: vec![format!(
                "Rate limit reached for {subject}: try again in {} seconds",
                c.expires_in_ms.div_ceil(1000)
            )],
        }),
        Ok(_) => None,
        Err(e) => {
            log(
                Level::Warn,
                &format!("ratelimit store: {e:?}; not counted, let through"),
            );
            None
        }
    }
}

struct Ratelimit;

impl setup::Guest for Ratelimit {
    fn init(args: Vec<String>) -> Result<(), String> {
        let [kind, limit, window] = args.as_slice() else {
            return Err(
                "ratelimit takes KIND LIMIT WINDOW (ip|sender|auth|rcpt-domain, a count, seconds)"
                    .into(),
            );
        };
        let (kind, name) = match kind.as_str() {
            "ip" => (Kind::Ip, "ip"),
            "sender" => (Kind::Sender, "sender"),
            "auth" => (Kind::Auth, "auth"),
            "rcpt-domain" => (Kind::RcptDomain, "rcpt-domain"),
            other => return Err(format!("`{other}` is not ip, sender, auth or rcpt-domain")),
        };
        let limit = limit
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("the limit `{limit}` is not a count of at least 1"))?;
        let window_ms = window
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|v| (v * 1000.0) as u64)
            .ok_or_else(|| format!("the window `{window}` is not a positive number of seconds"))?;
        let _ = RULE.set(Rule {
            kind,
            name,
            limit,
            window_ms,
        });
        Ok(())
    }
}

impl mail::Guest for Ratelimit {
    fn handle_mail(
        session: Session,
        _: Envelope,
        address: String,
        _: Vec<String>,
    ) -> Option<Reply> {
        let rule = RULE.get()?;
        let subject = match rule.kind {
            Kind::Ip => session.peer.address,
            Kind::Sender => address,
            Kind::Auth => session.auth_identity?,
            Kind::RcptDomain => return None,
        };
        count(rule, &subject, 451)
    }
}

impl rcpt::Guest for Ratelimit {
    fn handle_rcpt(_: Session, _: Envelope, address: String, _: Vec<String>) -> Option<Reply> {
        let rule = RULE.get()?;
        if rule.kind != Kind::RcptDomain {
            return None;
        }
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
        count(rule, &domain, 452)
    }
}

export!(Ratelimit);
