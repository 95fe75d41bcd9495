//! Host bindings generated from `wit/`, the single source of the plugin
//! contract. The `host` world (`wit/host.wit`) names every hook and every
//! import, granted ones included; a plugin exports any subset of the hooks
//! and imports any subset of the imports, so the host never instantiates
//! this world as a whole: it looks each hook's interface up on its own (see
//! `plugin::hooks`), and the loader checks the imports against the grants
//! (see `capability`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "host",
    exports: { default: async },
    imports: {
        // Reading a spooled message can fail on the host's side (an I/O
        // error): those calls trap instead of returning a short read.
        "wasmtp:smtp/content.read": trappable,
        "wasmtp:smtp/content.read-next": trappable,
        // The store's calls wait for its engine (a thread, PostgreSQL).
        "wasmtp:smtp/kv": async,
        "wasmtp:smtp/queue": async,
        // Lookups and verification wait on the network: the hook yields
        // while they run (bounded by its deadline, `capability::dns`).
        "wasmtp:smtp/dns.lookup": async,
        "wasmtp:smtp/dns.lookup-all": async,
        "wasmtp:smtp/dns.dnsbl": async,
        "wasmtp:smtp/mail-auth.iprev": async,
        "wasmtp:smtp/mail-auth.spf-helo": async,
        "wasmtp:smtp/mail-auth.spf-mail-from": async,
        "wasmtp:smtp/mail-auth.results": async,
        // The message is parsed on a blocking thread, once, by whichever
        // call comes first.
        "wasmtp:smtp/message": async,
    },
});

pub use self::exports::wasmtp::smtp as hooks;
pub use self::wasmtp::smtp::types;

/// The WIT package version this host speaks.
pub const WIT_PACKAGE: &str = "wasmtp:smtp";
pub const WIT_VERSION: &str = "0.1.0";
