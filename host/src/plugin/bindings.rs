//! Host bindings generated from `wit/`, the single source of the plugin
//! contract. The `all-hooks` world names every hook; a plugin exports any
//! subset of them, so the host never instantiates this world as a whole: it
//! looks each hook's interface up on its own (see `plugin::hooks`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "all-hooks",
    exports: { default: async },
    // Reading a spooled message can fail on the host's side (an I/O error):
    // those calls trap instead of returning a short read.
    imports: {
        "wasmtp:smtp/content.read": trappable,
        "wasmtp:smtp/content.read-next": trappable,
    },
});

pub use self::exports::wasmtp::smtp as hooks;
pub use self::wasmtp::smtp::types;

/// The WIT package version this host speaks.
pub const WIT_PACKAGE: &str = "wasmtp:smtp";
pub const WIT_VERSION: &str = "0.1.0";
