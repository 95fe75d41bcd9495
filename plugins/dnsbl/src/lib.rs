//! Dnsbl: the client's address against DNS block lists (RFC 5782).
//!
//! Arguments: `ZONE... [mode=reject|tag]`, one or more list zones
//! (`zen.example`), asked in order.
//!
//! - `mode=reject` (the default): every recipient of a listed client is
//!   refused `554 5.7.1 Service unavailable; client [IP] blocked using ZONE:
//!   REASON` (the list's TXT record). At RCPT rather than at connection or
//!   HELO, as Postfix's `reject_rbl_client` does: clients take a refused
//!   recipient as final, where some retry a refused HELO at once, and the
//!   log shows who was refused mail from whom.
//! - `mode=tag`: the message gets `X-DNSBL: zone=ZONE; code=127.0.0.2` per
//!   list that lists the client (incoming `X-DNSBL` fields are removed, so
//!   only ours remain), and the note `dnsbl.ZONE = 127.0.0.2` (codes
//!   comma-separated), for a scoring plugin later in the chain.
//!
//! The lists are asked once per session, at its first MAIL (the client's
//! address does not change). A list that does not answer (a timeout, a
//! server failure) or may not be asked (the grant) counts as not listing
//! the client, with a warning in the log: a DNS error never refuses mail.

use wasmtp_plugin::dns::{self, Listing};
use wasmtp_plugin::{Args, Envelope, Plugin, Reply, Session, headers, notes};

const HEADER: &str = "X-DNSBL";

#[derive(Default)]
struct Dnsbl {
    zones: Vec<String>,
    tag: bool,
    /// The lists that list the client, asked at the session's first MAIL.
    listed: Option<Vec<(String, Listing)>>,
}

#[wasmtp_plugin::plugin]
impl Plugin for Dnsbl {
    fn init(&mut self, mut args: Args) -> Result<(), String> {
        self.tag = args.choice("mode", &["reject", "tag"], "reject")? == "tag";
        self.zones = args.rest();
        if let Some(bad) = self.zones.iter().find(|z| !is_zone(z)) {
            return Err(format!(
                "`{bad}` is not a DNS zone (zen.example) nor mode=reject|tag"
            ));
        }
        if self.zones.is_empty() {
            return Err("missing argument: a block list zone (zen.example)".into());
        }
        Ok(())
    }

    fn mail(&mut self, session: &Session, _: &Envelope, _: &str, _: &[String]) -> Option<Reply> {
        // A Unix-socket client has no address to look up.
        let ip = session.peer.ip()?.to_string();
        let zones = &self.zones;
        let listed = self.listed.get_or_insert_with(|| ask(&ip, zones));
        if self.tag {
            tag(listed);
        }
        None
    }

    fn rcpt(&mut self, session: &Session, _: &Envelope, _: &str, _: &[String]) -> Option<Reply> {
        if self.tag {
            return None;
        }
        let (zone, listing) = self.listed.as_ref()?.first()?;
        let reason = listing
            .reason
            .as_deref()
            .map(|r| format!(": {}", Reply::printable(r)))
            .unwrap_or_default();
        let client = Reply::printable(&session.peer.address);
        Some(Reply::new(
            554,
            "5.7.1",
            format!("Service unavailable; client [{client}] blocked using {zone}{reason}"),
        ))
    }
}

/// The zones that list `ip`, with their answers.
fn ask(ip: &str, zones: &[String]) -> Vec<(String, Listing)> {
    zones
        .iter()
        .filter_map(|zone| match dns::dnsbl(ip, zone) {
            Ok(listing) => listing.listed().then(|| (zone.clone(), listing)),
            Err(e) => {
                wasmtp_plugin::warn!(
                    "{zone}: {} asking about {ip}; counted as not listed",
                    e.name()
                );
                None
            }
        })
        .collect()
}

fn tag(listed: &[(String, Listing)]) {
    let mut edits = vec![headers::remove(HEADER).map(drop)];
    for (zone, listing) in listed {
        let codes = listing.codes.join(",");
        edits.push(headers::add(HEADER, &format!("zone={zone}; code={codes}")));
        if let Err(e) = notes::set(&format!("dnsbl.{zone}"), &codes) {
            wasmtp_plugin::warn!("note dnsbl.{zone} not kept: {e:?}");
        }
    }
    for e in edits.into_iter().filter_map(Result::err) {
        wasmtp_plugin::warn!("header edit refused: {e:?}");
    }
}

/// A domain name as block lists are named: labels of letters, digits, `-`, `_`.
fn is_zone(zone: &str) -> bool {
    let zone = zone.trim_end_matches('.');
    !zone.is_empty()
        && zone.len() <= 200
        && zone.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
