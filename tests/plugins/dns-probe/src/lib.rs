//! dns-probe: a test plugin for the `dns` and `mail-auth` imports. Each
//! recipient names a question; the `rcpt` reply (`250 2.1.5 ...`) is the
//! answer, so a test reads results as a transcript:
//!
//! - `TYPE+NAME@…` (`txt+pass.test@probe`): `dns.lookup` → `TYPE: r1 | r2`
//!   or `error: nxdomain`;
//! - `all+N+NAME@…`: `dns.lookup-all` of N A queries of NAME →
//!   `all: ok,ok,budget`;
//! - `bl+IP+ZONE@…`: `dns.dnsbl` → `listed 127.0.0.2 (reason)` or `clean`;
//! - `spf@…`, `helo@…`, `iprev@…`: `mail-auth` → `spf=pass smtp.mailfrom=…`.
//!
//! `data` answers `250 2.0.0` with one line per `mail-auth.results` item:
//! `iprev=…`, `spf-helo=…`, `spf-mail-from=…`, `dkim=…` (one per
//! signature), `arc=…`, `dmarc=…`, `policy=…`, and `header: …` (the
//! Authentication-Results value, unfolded).

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:dns-probe;
        world probe {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/dns@0.1.0;
            import wasmtp:smtp/mail-auth@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::{data, rcpt};
use wasmtp::smtp::dns::{self, Query, RecordType, Records};
use wasmtp::smtp::mail_auth::{self, MethodResult};
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Probe;

fn kind(name: &str) -> Option<RecordType> {
    Some(match name {
        "a" => RecordType::A,
        "aaaa" => RecordType::Aaaa,
        "mx" => RecordType::Mx,
        "txt" => RecordType::Txt,
        "ptr" => RecordType::Ptr,
        _ => return None,
    })
}

fn error(e: dns::Error) -> String {
    format!(
        "error: {}",
        match e {
            dns::Error::Nxdomain => "nxdomain",
            dns::Error::Nodata => "nodata",
            dns::Error::Timeout => "timeout",
            dns::Error::Servfail => "servfail",
            dns::Error::Denied => "denied",
            dns::Error::Budget => "budget",
            dns::Error::Invalid => "invalid",
        }
    )
}

fn records(r: Records) -> String {
    let list = match r {
        Records::A(v) | Records::Aaaa(v) | Records::Txt(v) | Records::Ptr(v) => v,
        Records::Mx(v) => v
            .into_iter()
            .map(|m| format!("{} {}", m.preference, m.exchange))
            .collect(),
    };
    list.join(" | ")
}

fn method(r: &MethodResult) -> String {
    let mut text = r.result.clone();
    if let Some(reason) = &r.reason {
        text.push_str(&format!(" ({reason})"));
    }
    for p in &r.properties {
        text.push_str(&format!(" {}={}", p.key, p.value));
    }
    text
}

fn answer(local: &str) -> String {
    let parts: Vec<&str> = local.split('+').collect();
    match parts.as_slice() {
        ["spf"] => {
            mail_auth::spf_mail_from().map_or("none".into(), |r| format!("spf={}", method(&r)))
        }
        ["helo"] => mail_auth::spf_helo().map_or("none".into(), |r| format!("spf={}", method(&r))),
        ["iprev"] => mail_auth::iprev().map_or("none".into(), |r| format!("iprev={}", method(&r))),
        ["all", n, name] => {
            let queries: Vec<Query> = (0..n.parse::<u32>().unwrap_or(1))
                .map(|_| Query {
                    name: name.to_string(),
                    kind: RecordType::A,
                })
                .collect();
            let answers: Vec<String> = dns::lookup_all(&queries)
                .into_iter()
                .map(|r| match r {
                    Ok(_) => "ok".to_string(),
                    Err(e) => error(e).trim_start_matches("error: ").to_string(),
                })
                .collect();
            format!("all: {}", answers.join(","))
        }
        ["bl", ip, zone] => match dns::dnsbl(ip, zone) {
            Ok(l) if l.codes.is_empty() => "clean".into(),
            Ok(l) => format!(
                "listed {} ({})",
                l.codes.join(","),
                l.reason.unwrap_or_default()
            ),
            Err(e) => error(e),
        },
        [t, name] => match kind(t) {
            Some(k) => match dns::lookup(name, k) {
                Ok(r) => format!("{t}: {}", records(r)),
                Err(e) => error(e),
            },
            None => "unknown question".into(),
        },
        _ => "unknown question".into(),
    }
}

/// Reply lines are at most 510 bytes, without control characters.
fn line(text: String) -> String {
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.truncate(400);
    text
}

impl rcpt::Guest for Probe {
    fn handle_rcpt(_: Session, _: Envelope, address: String, _: Vec<String>) -> Option<Reply> {
        let local = address
            .trim_matches(['<', '>'])
            .rsplit_once('@')
            .map_or(address.as_str(), |(l, _)| l)
            .to_string();
        Some(Reply {
            code: 250,
            enhanced: Some("2.1.5".into()),
            lines: vec![line(answer(&local))],
        })
    }
}

impl data::Guest for Probe {
    fn handle_data(_: Session, _: Envelope) -> Option<Reply> {
        let Some(r) = mail_auth::results() else {
            return Some(Reply {
                code: 250,
                enhanced: Some("2.0.0".into()),
                lines: vec!["no results".into()],
            });
        };
        let mut lines = vec![
            format!("iprev={}", method(&r.iprev)),
            format!("spf-helo={}", method(&r.spf_helo)),
            format!("spf-mail-from={}", method(&r.spf_mail_from)),
        ];
        lines.extend(r.dkim.iter().map(|d| format!("dkim={}", method(d))));
        lines.push(format!("arc={}", method(&r.arc)));
        lines.push(format!("dmarc={}", method(&r.dmarc)));
        lines.push(format!(
            "policy={}",
            match r.dmarc_policy {
                mail_auth::DmarcPolicy::None => "none",
                mail_auth::DmarcPolicy::Quarantine => "quarantine",
                mail_auth::DmarcPolicy::Reject => "reject",
            }
        ));
        lines.push(format!("header: {}", r.header_value.replace("\r\n\t", " ")));
        Some(Reply {
            code: 250,
            enhanced: Some("2.0.0".into()),
            lines: lines.into_iter().map(line).collect(),
        })
    }
}

export!(Probe);
