//! empty: a plugin that exports no hook at all.
//!
//! The host knows from the component's exports that there is nothing to call
//! (DESIGN.md, decision 2), so every command gets the host's default reply and
//! no session ever instantiates this plugin. The benchmark (`bench/`) uses it
//! as the honest floor of the wasm cost: the host's own SMTP work, with no
//! wasm call at all.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:empty;
        world empty {
            include wasmtp:smtp/plugin@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});
