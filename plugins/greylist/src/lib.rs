//! Greylist: the first time a (client network, sender, recipient) triplet
//! is seen, the recipient gets `451 4.7.1`; a retry after the delay passes,
//! and the triplet then passes until it expires. The client network is the
//! address's /24 (IPv4) or /64 (IPv6). Networks on the allowlist always pass.
//!
//! Arguments: `[DELAY [EXPIRY [NETWORK...]]]`: seconds before a retry
//! passes (default 300), seconds a triplet is remembered (default 2592000,
//! 30 days; at most `[store] ttl_cap`), and allowlisted networks
//! (`192.0.2.0/24`, `2001:db8::/32`, or a single address).
//!
//! The triplets live in the server's key-value store, in the shared
//! namespace `greylist`, so a retry that lands on another node of a cluster
//! (`[store] backend = "postgres"`) is recognised. Time is the store's: the
//! age of a triplet is its TTL's start, by the database's clock. When the
//! store is unavailable the recipient is deferred (`451 4.7.1`): mail is
//! delayed, never let through unchecked.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:greylist;
        world greylist {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/kv@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/rcpt@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

use std::net::IpAddr;
use std::sync::OnceLock;

use exports::wasmtp::smtp::{rcpt, setup};
use wasmtp::smtp::kv;
use wasmtp::smtp::log::{Level, log};
use wasmtp::smtp::types::{Envelope, Reply, Session};

const NAMESPACE: &str = "greylist";
/// The value of a triplet that waited its delay and passed.
const PASSED: &[u8] = b"passed";

struct Settings {
    delay_ms: u64,
    expiry_ms: u64,
    allow: Vec<(IpAddr, u8)>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn network(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{text}` is not a network (192.0.2.0/24, 2001:db8::/32)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{text}` has a bad prefix length"))?,
        None => max,
    };
    Ok((addr, bits))
}

fn prefix(addr: IpAddr, bits: u8) -> u128 {
    let (value, width) = match addr {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if bits == 0 {
        0
    } else {
        value >> (width - bits as u32)
    }
}

fn allowed(addr: IpAddr, allow: &[(IpAddr, u8)]) -> bool {
    allow.iter().any(|(net, bits)| {
        net.is_ipv4() == addr.is_ipv4() && prefix(*net, *bits) == prefix(addr, *bits)
    })
}

/// The client's /24 or /64, as text.
fn client_network(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// A key of at most 512 bytes: the triplet, or its FNV-1a hash when long.
fn key(network: &str, sender: &str, recipient: &str) -> String {
    let triplet = format!(
        "{network}|{}|{}",
        sender.to_ascii_lowercase(),
        recipient.to_ascii_lowercase()
    );
    if triplet.len() <= 400 {
        return triplet;
    }
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in triplet.bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{network}|#{hash:016x}")
}

fn defer(text: String) -> Option<Reply> {
    Some(Reply {
        code: 451,
        enhanced: Some("4.7.1".into()),
        lines: vec![text],
    })
}

struct Greylist;

impl setup::Guest for Greylist {
    fn init(args: Vec<String>) -> Result<(), String> {
        let secs = |i: usize, default: u64, what: &str| -> Result<u64, String> {
            match args.get(i) {
                None => Ok(default * 1000),
                Some(s) => s
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .map(|v| (v * 1000.0) as u64)
                    .ok_or_else(|| format!("{what} `{s}` is not a positive number of seconds")),
            }
        };
        let delay_ms = secs(0, 300, "the delay")?;
        let expiry_ms = secs(1, 30 * 24 * 3600, "the expiry")?;
        if expiry_ms <= delay_ms {
            return Err("the expiry must be longer than the delay".into());
        }
        let allow = args
            .iter()
            .skip(2)
            .map(|a| network(a))
            .collect::<Result<_, _>>()?;
        let _ = SETTINGS.set(Settings {
            delay_ms,
            expiry_ms,
            allow,
        });
        Ok(())
    }
}

impl rcpt::Guest for Greylist {
    fn handle_rcpt(
        session: Session,
        envelope: Envelope,
        address: String,
        _: Vec<String>,
    ) -> Option<Reply> {
        let s = SETTINGS.get_or_init(|| Settings {
            delay_ms: 300_000,
            expiry_ms: 30 * 24 * 3600 * 1000,
            allow: Vec::new(),
        });
        // A Unix-socket client has no network: nothing to greylist.
        let addr: IpAddr = session.peer.address.parse().ok()?;
        if allowed(addr, &s.allow) {
            return None;
        }
        let sender = envelope.mail_from.unwrap_or_default();
        let key = key(&client_network(addr), &sender, &address);
        let ns = Some(NAMESPACE);
        let entry = match kv::get(ns, &key) {
            Ok(entry) => entry,
            Err(e) => {
                log(Level::Warn, &format!("greylist store: {e:?}; deferring"));
                return defer("Greylisting is unavailable; try again later".into());
            }
        };
        match entry {
            Some(e) if e.value == PASSED => None,
            Some(e) => {
                let age = s.expiry_ms.saturating_sub(e.expires_in_ms);
                if age < s.delay_ms {
                    let wait = (s.delay_ms - age).div_ceil(1000);
                    return defer(format!("Greylisted: try again in {wait} seconds"));
                }
                // Waited long enough: remember it passed, for the expiry.
                if let Err(err) = kv::set(ns, &key, PASSED, s.expiry_ms) {
                    log(Level::Warn, &format!("greylist store: {err:?}"));
                }
                None
            }
            None => {
                // First sight (or another node's at the same moment: then
                // its entry stands, and this one defers all the same).
                let _ = kv::compare_and_set(ns, &key, b"seen", None, s.expiry_ms);
                defer(format!(
                    "Greylisted: try again in {} seconds",
                    s.delay_ms.div_ceil(1000)
                ))
            }
        }
    }
}

export!(Greylist);
