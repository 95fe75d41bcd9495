//! Host capabilities: what a plugin may use beyond its session, one WIT
//! interface each, each off until the config grants it (DESIGN.md,
//! decision 12).
//!
//! - [`kv`]: `wasmtp:smtp/kv`, the key-value store that outlives sessions
//!   and nodes (`grants.kv`);
//! - [`queue`]: `wasmtp:smtp/queue`, the durable queue of accepted
//!   messages (`grants.queue`);
//! - [`dns`]: `wasmtp:smtp/dns`, lookups through the server's resolver and
//!   cache, bounded by the hook's deadline (`grants.dns`: names, types,
//!   resolver, a query budget per hook call);
//! - [`mail_auth`]: `wasmtp:smtp/mail-auth`, the transaction's SPF, iprev,
//!   DKIM, ARC and DMARC results and `Authentication-Results` value,
//!   computed by the host once, on demand (`grants.mail_auth`);
//! - [`notes`]: `wasmtp:smtp/notes`, a key → value map per transaction
//!   shared by the plugins of a chain (`grants.notes`).
//! - [`headers`]: `wasmtp:smtp/headers`, header fields added, removed and
//!   renamed in a view of the message (`grants.headers`).
//! - [`http`]: WASI's `wasi:http/outgoing-handler`, for the URL prefixes
//!   of `grants.http`, with the server's TLS roots, timeouts and bounds.
//! - [`message`]: `wasmtp:smtp/message`, the message parsed once (fields,
//!   bodies, attachments); free, like `content`.
//! - [`envelope`]: `wasmtp:smtp/envelope`, the sender replaced, recipients
//!   added and removed (`grants.envelope`).
//!
//! Every capability follows one pattern:
//! - its interface lives in `wit/<name>.wit`, is imported by the `host`
//!   world (`wit/host.wit`) the bindings are generated from, and is never
//!   part of `world plugin`, so components built without it keep loading;
//! - [`CAPABILITIES`] maps the interface to its grant: the loader refuses a
//!   component that imports an interface it was not granted, before linking,
//!   naming the grant to set ([`check_imports`]);
//! - its module implements the bindings' `Host` trait for
//!   [`HostState`](crate::plugin::host::HostState), with its own state type
//!   in one field of it;
//! - what the plugins of a transaction share ([`Shared`]) lives with the
//!   session's transaction (the envelope) and is handed to each instance for
//!   the duration of a hook call, so every plugin of a chain, and tenants'
//!   chains, see the same;
//! - errors are values (`invalid`, `denied`, `unavailable`, `timeout`...),
//!   never traps, and every wait is capped by what is left of the hook's
//!   deadline.

pub mod dns;
pub mod envelope;
pub mod headers;
pub mod http;
pub mod kv;
pub mod mail_auth;
pub mod message;
pub mod notes;
pub mod queue;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::plugin::bindings::{WIT_PACKAGE, WIT_VERSION};
use crate::plugin::host::Grants;

/// One granted interface.
pub struct Capability {
    /// The interface's name in the WIT package (`kv` in
    /// `wasmtp:smtp/kv@0.1.0`), or an interface of another package in full
    /// (`wasi:http/outgoing-handler`, any version).
    pub interface: &'static str,
    /// Its key under `[plugin.NAME.grants]`.
    pub grant: &'static str,
    /// Whether `grants` allow it.
    pub granted: fn(&Grants) -> bool,
    /// What it gives, for `wasmtp plugin inspect`.
    pub note: &'static str,
}

/// Every granted interface of the WIT package. An interface of the package
/// that is not in this table (`content`, `log`, `transaction`, `types`) is
/// free for every plugin.
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        interface: "kv",
        grant: "kv",
        granted: |g| g.kv.is_some(),
        note: "the key-value store shared by sessions and nodes: only with `grants.kv`",
    },
    Capability {
        interface: "queue",
        grant: "queue",
        granted: |g| g.queue,
        note: "the durable queue of accepted messages: only with `grants.queue`",
    },
    Capability {
        interface: "dns",
        grant: "dns",
        granted: |g| g.dns.is_some(),
        note: "DNS lookups: only with `grants.dns`, for the names, types and budget it gives",
    },
    Capability {
        interface: "mail-auth",
        grant: "mail_auth",
        granted: |g| g.mail_auth,
        note: "the transaction's SPF, DKIM, DMARC, ARC and iprev results: only with `grants.mail_auth`",
    },
    Capability {
        interface: "notes",
        grant: "notes",
        granted: |g| g.notes,
        note: "transaction notes shared by the chain: only with `grants.notes`",
    },
    Capability {
        interface: "headers",
        grant: "headers",
        granted: |g| g.headers,
        note: "header fields added, removed, renamed: only with `grants.headers`",
    },
    Capability {
        interface: http::OUTGOING_HANDLER,
        grant: "http",
        granted: |g| g.http.is_some(),
        note: "outbound HTTP requests: only with `grants.http`, to the URL prefixes it names",
    },
    Capability {
        interface: "envelope",
        grant: "envelope",
        granted: |g| g.envelope,
        note: "the sender replaced, recipients added and removed: only with `grants.envelope`",
    },
];

/// The capability a component import names, if it is one of ours:
/// `wasmtp:smtp/kv@0.1.0` → the `kv` row.
pub fn capability_of(import: &str) -> Option<&'static Capability> {
    let full = import.split_once('@').map_or(import, |(i, _)| i);
    if let Some(c) = CAPABILITIES
        .iter()
        .find(|c| c.interface.contains(':') && c.interface == full)
    {
        return Some(c);
    }
    let rest = import.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    let interface = rest.split_once('@').map_or(rest, |(i, _)| i);
    CAPABILITIES.iter().find(|c| c.interface == interface)
}

/// An import a plugin was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotGranted {
    /// The import as the component names it: `wasmtp:smtp/kv@0.1.0`.
    pub import: String,
    /// The grant key: `kv`.
    pub grant: &'static str,
}

/// The first import of `imports` (a component's import names) that needs
/// a grant `grants` does not give.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    grants: &Grants,
) -> Result<(), NotGranted> {
    for import in imports {
        if let Some(c) = capability_of(import)
            && !(c.granted)(grants)
        {
            return Err(NotGranted {
                import: import.to_owned(),
                grant: c.grant,
            });
        }
    }
    Ok(())
}

/// The full name of a capability's interface, for messages.
pub fn import_name(interface: &str) -> String {
    format!("{WIT_PACKAGE}/{interface}@{WIT_VERSION}")
}

/// The host's own machinery behind the capabilities, one per config
/// generation: the resolver (kept across reloads that leave `[dns]` alone)
/// and the mail-authentication verifier on it.
pub struct Services {
    pub dns_settings: dns::DnsSettings,
    pub mail_auth: Arc<mail_auth::MailAuth>,
    /// The client behind plugins' `wasi:http` requests (`[http]`).
    pub http: Arc<http::HttpClient>,
}

impl Services {
    pub fn new(
        dns_settings: dns::DnsSettings,
        resolver: Arc<dns::Dns>,
        auth: mail_auth::MailAuthSettings,
        http: http::HttpSettings,
    ) -> Services {
        Services {
            dns_settings,
            mail_auth: Arc::new(mail_auth::MailAuth::new(resolver, auth)),
            http: Arc::new(http::HttpClient::new(http)),
        }
    }

    pub fn dns(&self) -> &Arc<dns::Dns> {
        self.mail_auth.dns()
    }
}

/// How long before its deadline a hook's host wait gives up, so that the
/// plugin still has time to act on the `timeout` it is told (the deadline
/// itself stops the plugin).
pub const WAIT_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// When a host wait of a hook whose deadline is `deadline` must end.
pub fn wait_deadline(deadline: std::time::Instant) -> std::time::Instant {
    deadline.checked_sub(WAIT_MARGIN).unwrap_or(deadline)
}

/// What the plugins of one transaction share, whichever chain (the
/// listener's, a tenant's) they are in. Cloning shares it; a new
/// transaction makes a new one (`Envelope::default()`).
#[derive(Clone, Debug, Default)]
pub struct Shared {
    notes: Arc<Mutex<notes::Notes>>,
    headers: Arc<Mutex<headers::Edits>>,
}

impl Shared {
    pub fn notes(&self) -> MutexGuard<'_, notes::Notes> {
        // A plugin can't poison it: the lock is held only inside host calls.
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn headers(&self) -> MutexGuard<'_, headers::Edits> {
        self.headers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of one tenant's delivery of the message: the same notes,
    /// and header edits of its own from here on (a tenant's edits in `data`
    /// reach only its chain).
    pub fn fork(&self) -> Shared {
        Shared {
            notes: self.notes.clone(),
            headers: Arc::new(Mutex::new(self.headers().clone())),
        }
    }

    /// What a hook call may change, before it runs: a failed call's changes
    /// are undone ([`Shared::rollback`]), so a plugin that traps halfway
    /// leaves nothing half-written (DESIGN.md, decision 3).
    pub fn mark(&self) -> Mark {
        Mark {
            notes: self.notes().clone(),
            headers: self.headers().len(),
        }
    }

    pub fn rollback(&self, mark: Mark) {
        *self.notes() = mark.notes;
        self.headers().truncate(mark.headers);
    }
}

/// The shared state as it was before a hook call.
pub struct Mark {
    notes: notes::Notes,
    headers: usize,
}

/// A plugin instance's view of the per-transaction capabilities during one
/// hook call.
#[derive(Default)]
pub struct State {
    /// The transaction's shared state, while a hook call runs; `None` at
    /// load (`setup.init`) and between calls.
    pub shared: Option<Shared>,
    /// Whether the call may edit the message or the envelope: not a
    /// tenant's plugin before `data`, whose edits would reach other tenants.
    pub edits_allowed: bool,
    /// The envelope a plugin granted `envelope` may edit in this call
    /// (`mail`, `rcpt`, `data`), and its edits; `None` where it may not.
    pub envelope: Option<envelope::Editor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_need_their_grant() {
        let none = Grants::default();
        let kv = Grants {
            kv: Some(kv::KvGrant::default()),
            ..Grants::default()
        };
        let imports = [
            "wasi:cli/stdout@0.2.6",
            "wasmtp:smtp/content@0.1.0",
            "wasmtp:smtp/kv@0.1.0",
        ];
        assert_eq!(
            check_imports(imports, &none),
            Err(NotGranted {
                import: "wasmtp:smtp/kv@0.1.0".into(),
                grant: "kv"
            })
        );
        assert_eq!(check_imports(imports, &kv), Ok(()));
        assert_eq!(
            check_imports(["wasmtp:smtp/queue@0.1.0"], &kv)
                .unwrap_err()
                .grant,
            "queue"
        );
        let notes = Grants {
            notes: true,
            ..Grants::default()
        };
        assert_eq!(check_imports(["wasmtp:smtp/notes@0.1.0"], &notes), Ok(()));
        assert_eq!(
            check_imports(["wasmtp:smtp/notes@0.1.0"], &kv)
                .unwrap_err()
                .grant,
            "notes"
        );
        assert!(capability_of("other:pkg/kv@0.1.0").is_none());
        assert!(capability_of("wasmtp:smtp/log@0.1.0").is_none());
        assert_eq!(import_name("kv"), "wasmtp:smtp/kv@0.1.0");
    }

    #[test]
    fn dns_and_mail_auth_need_their_grant() {
        let none = Grants::default();
        let granted = Grants {
            dns: Some(Arc::new(dns::DnsGrant {
                suffixes: vec![String::new()],
                types: dns::RecordType::ALL.to_vec(),
                resolver: None,
                budget: 1,
            })),
            mail_auth: true,
            ..Grants::default()
        };
        let imports = [
            "wasi:cli/stdout@0.2.6",
            "wasmtp:smtp/content@0.1.0",
            "wasmtp:smtp/dns@0.1.0",
            "wasmtp:smtp/mail-auth@0.1.0",
        ];
        assert_eq!(
            check_imports(imports, &none),
            Err(NotGranted {
                import: "wasmtp:smtp/dns@0.1.0".into(),
                grant: "dns"
            })
        );
        assert_eq!(
            check_imports(["wasmtp:smtp/mail-auth@0.1.0"], &none),
            Err(NotGranted {
                import: "wasmtp:smtp/mail-auth@0.1.0".into(),
                grant: "mail_auth"
            })
        );
        assert_eq!(check_imports(imports, &granted), Ok(()));
        assert!(capability_of("other:pkg/dns@0.1.0").is_none());
        assert!(capability_of("wasmtp:smtp/log@0.1.0").is_none());
    }

    #[test]
    fn outgoing_http_needs_its_grant_and_the_message_is_free() {
        let none = Grants::default();
        let granted = Grants {
            http: Some(Arc::new(
                http::HttpGrant::parse(["https://app.example.com/inbound/"]).unwrap(),
            )),
            ..Grants::default()
        };
        for version in ["0.2.0", "0.2.6", "0.2.12"] {
            let import = format!("wasi:http/outgoing-handler@{version}");
            assert_eq!(
                check_imports([import.as_str()], &none),
                Err(NotGranted {
                    import: import.clone(),
                    grant: "http"
                })
            );
            assert_eq!(check_imports([import.as_str()], &granted), Ok(()));
        }
        // The types alone send nothing.
        assert_eq!(check_imports(["wasi:http/types@0.2.6"], &none), Ok(()));
        assert_eq!(check_imports(["wasmtp:smtp/message@0.1.0"], &none), Ok(()));
        assert!(capability_of("wasmtp:smtp/outgoing-handler@0.1.0").is_none());
    }
}
