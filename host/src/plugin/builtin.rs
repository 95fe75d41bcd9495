//! The reference plugins, compiled from `plugins/` by the build script and
//! embedded, so `-c sink`, `-c debugging`, `-c mailbox`, `-c proxy`,
//! `-c queue`, `-c greylist`, `-c ratelimit`, `-c webhook`, `-c mailauth`
//! and `-c dnsbl` need no files.

/// A built-in plugin: its name and component bytes.
pub struct Builtin {
    pub name: &'static str,
    pub wasm: &'static [u8],
    /// What the plugin is for, for `--help` and errors.
    pub summary: &'static str,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin")
            .field("name", &self.name)
            .field("bytes", &self.wasm.len())
            .finish()
    }
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "sink",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/sink.wasm")),
        summary: "accepts every message and discards it; no arguments",
    },
    Builtin {
        name: "debugging",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/debugging.wasm")),
        summary: "prints every message; argument: stdout (default) or stderr",
    },
    Builtin {
        name: "mailbox",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/mailbox.wasm")),
        summary: "delivers every message into a Maildir; argument: the Maildir path",
    },
    Builtin {
        name: "proxy",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/proxy.wasm")),
        summary: "relays every message to another SMTP server; arguments: HOST PORT",
    },
    Builtin {
        name: "queue",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/queue.wasm")),
        summary: "commits every message to the durable queue ([store]); no arguments",
    },
    Builtin {
        name: "greylist",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/greylist.wasm")),
        summary: "defers a new (network, sender, recipient) triplet; arguments: [DELAY [EXPIRY [NETWORK...]]]",
    },
    Builtin {
        name: "ratelimit",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/ratelimit.wasm")),
        summary: "limits messages per ip, sender or auth, or recipients per domain; arguments: KIND LIMIT WINDOW",
    },
    Builtin {
        name: "webhook",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/webhook.wasm")),
        summary: "posts every message to an application over HTTP(S), signed, and answers with its decision; arguments: URL [format=json|multipart] [secret-env=NAME|secret-file=PATH|secret=S] [on-4xx=CODE] [auth=on] [attachments=names]",
    },
    Builtin {
        name: "mailauth",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/mailauth.wasm")),
        summary: "SPF, DKIM, DMARC and iprev policy, and the Authentication-Results header; arguments: [spf=|dkim=|dmarc=|iprev=relaxed|strict|off] [tempfail=accept|defer] [forged=rename|remove]",
    },
    Builtin {
        name: "dnsbl",
        wasm: include_bytes!(concat!(env!("WASMTP_PLUGIN_DIR"), "/dnsbl.wasm")),
        summary: "refuses or tags clients listed in DNS block lists; arguments: ZONE... [mode=reject|tag]",
    },
];

pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name.eq_ignore_ascii_case(name))
}
