//! gatekeeper: a test plugin for the connection-level hooks (issue 3).
//!
//! - `auth`: password `secret` → accepted as the login; password `custom`
//!   → refused with `535 5.7.8 gatekeeper says no`; anything else → refused
//!   with the host's default. The authzid, if any, is appended to the
//!   identity as `login+authzid`.
//! - `starttls`: refuses a TLS session whose SNI is `refuse.example`.
//! - `proxy`: refuses a header whose source is 192.0.2.66.
//! - `noop`: `NOOP whoami` answers `250 peer=… tls=VERSION/CIPHER sni=…
//!   auth=… proxy=vN:SOURCE tlvs=N lmtp=…` — what the session says.
//! - `lmtp-data`: per recipient, `452 4.2.2 <rcpt> mailbox full` when the
//!   address contains `full`, else `250 2.0.0 <rcpt> delivered (N bytes)`.
//! - `data` (SMTP): `250 2.0.0 gatekeeper got N bytes for M recipients`.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:gatekeeper;
        world gatekeeper {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/auth@0.1.0;
            export wasmtp:smtp/starttls@0.1.0;
            export wasmtp:smtp/proxy@0.1.0;
            export wasmtp:smtp/noop@0.1.0;
            export wasmtp:smtp/data@0.1.0;
            export wasmtp:smtp/lmtp-data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::auth::{AuthDecision, Credentials};
use exports::wasmtp::smtp::{auth, data, lmtp_data, noop, proxy, starttls};
use wasmtp::smtp::content;
use wasmtp::smtp::types::{Envelope, ProxyData, Reply, Session};

struct Gatekeeper;

fn reply(code: u16, enhanced: &str, text: String) -> Reply {
    Reply {
        code,
        enhanced: Some(enhanced.into()),
        lines: vec![text],
    }
}

impl auth::Guest for Gatekeeper {
    fn handle_auth(
        _session: Session,
        _envelope: Envelope,
        credentials: Credentials,
    ) -> AuthDecision {
        let login = String::from_utf8_lossy(&credentials.login).into_owned();
        match credentials.password.as_slice() {
            b"secret" => AuthDecision::Accept(match credentials.authzid {
                Some(authzid) => format!("{login}+{authzid}"),
                None => login,
            }),
            b"custom" => {
                AuthDecision::Reject(Some(reply(535, "5.7.8", "gatekeeper says no".into())))
            }
            _ => AuthDecision::Reject(None),
        }
    }
}

impl starttls::Guest for Gatekeeper {
    fn handle_starttls(session: Session, _envelope: Envelope) -> bool {
        session.tls.and_then(|tls| tls.server_name).as_deref() != Some("refuse.example")
    }
}

impl proxy::Guest for Gatekeeper {
    fn handle_proxy(_session: Session, _envelope: Envelope, proxy: ProxyData) -> bool {
        proxy.source.map(|s| s.address).as_deref() != Some("192.0.2.66")
    }
}

impl noop::Guest for Gatekeeper {
    fn handle_noop(session: Session, _envelope: Envelope, arg: String) -> Option<Reply> {
        if arg != "whoami" {
            return None;
        }
        let tls = session
            .tls
            .as_ref()
            .map_or("-".into(), |t| format!("{}/{}", t.version, t.cipher));
        let sni = session
            .tls
            .and_then(|t| t.server_name)
            .unwrap_or_else(|| "-".into());
        let proxy = session.proxy.as_ref().map_or("-".into(), |p| {
            let source = p
                .source
                .as_ref()
                .map_or("-".into(), |s| format!("{}:{}", s.address, s.port));
            format!("v{}:{source}", p.version)
        });
        let tlvs = session.proxy.as_ref().map_or(0, |p| p.tlvs.len());
        let text = format!(
            "peer={}:{} tls={tls} sni={sni} auth={} proxy={proxy} tlvs={tlvs} lmtp={}",
            session.peer.address,
            session.peer.port,
            session.auth_identity.unwrap_or_else(|| "-".into()),
            session.lmtp,
        );
        Some(Reply {
            code: 250,
            enhanced: None,
            lines: vec![text],
        })
    }
}

impl data::Guest for Gatekeeper {
    fn handle_data(_session: Session, envelope: Envelope) -> Option<Reply> {
        let size = content::size();
        Some(reply(
            250,
            "2.0.0",
            format!(
                "gatekeeper got {size} bytes for {} recipients",
                envelope.rcpt_tos.len()
            ),
        ))
    }
}

impl lmtp_data::Guest for Gatekeeper {
    fn handle_lmtp_data(_session: Session, envelope: Envelope) -> Vec<Option<Reply>> {
        let size = content::size();
        envelope
            .rcpt_tos
            .iter()
            .map(|rcpt| {
                Some(if rcpt.contains("full") {
                    reply(452, "4.2.2", format!("<{rcpt}> mailbox full"))
                } else {
                    reply(250, "2.0.0", format!("<{rcpt}> delivered ({size} bytes)"))
                })
            })
            .collect()
    }
}

export!(Gatekeeper);
