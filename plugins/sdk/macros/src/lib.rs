//! `#[wasmtp_plugin::plugin]`: turns `impl Plugin for MyPlugin { ... }` into
//! a component that exports exactly the hooks the impl block defines.
//!
//! The host decides which hooks a plugin has from the component's exports
//! (DESIGN.md, decision 2), so a plugin must not export a hook it leaves to
//! the default. The attribute reads the method names of the impl block —
//! `rcpt`, `data`, `init` (→ `setup`), ... — and emits one
//! `wit_bindgen::generate!` whose world exports those hooks' interfaces and
//! nothing else, plus the glue that calls the trait methods. Only a macro
//! that sees the impl block can do this without the author repeating the
//! list, and `generate!` takes its world as a string literal, which only a
//! procedural macro can compose.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// The WIT package the bindings are generated from. A procedural macro is
/// always compiled on the machine that uses it, so this path is valid where
/// the macro expands.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../wit");
const WIT_VERSION: &str = "0.1.0";

/// (trait method, WIT interface) for every hook.
const HOOKS: &[(&str, &str)] = &[
    ("init", "setup"),
    ("helo", "helo"),
    ("ehlo", "ehlo"),
    ("mail", "mail"),
    ("rcpt", "rcpt"),
    ("data", "data"),
    ("rset", "rset"),
    ("noop", "noop"),
    ("quit", "quit"),
    ("vrfy", "vrfy"),
    ("auth", "auth"),
    ("proxy", "proxy"),
    ("starttls", "starttls"),
    ("exception", "exception"),
    ("lmtp_data", "lmtp-data"),
    // Not an SMTP hook: lets the operator reuse the instance across sessions.
    ("reset", "reuse"),
];

/// Exports the hooks an `impl wasmtp_plugin::Plugin for T` block defines.
///
/// ```ignore
/// #[derive(Default)]
/// struct Allowlist { allowed: Vec<String> }
///
/// #[wasmtp_plugin::plugin]
/// impl Plugin for Allowlist {
///     fn init(&mut self, args: Args) -> Result<(), String> { ... }   // exports `setup`
///     fn rcpt(&mut self, ...) -> Option<Reply> { ... }               // exports `rcpt`
/// }
/// ```
///
/// One per crate. The type must implement `Default`: each SMTP session gets a
/// fresh value, made before its first hook call.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            Span::call_site(),
            "#[wasmtp_plugin::plugin] takes no arguments",
        )
        .into_compile_error()
        .into();
    }
    let imp = parse_macro_input!(item as ItemImpl);
    match expand(&imp) {
        Ok(glue) => quote!(#imp #glue).into(),
        Err(e) => {
            let e = e.into_compile_error();
            quote!(#imp #e).into()
        }
    }
}

fn expand(imp: &ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    if imp.trait_.is_none() {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "#[wasmtp_plugin::plugin] goes on `impl Plugin for YourType`",
        ));
    }
    let self_ty = &imp.self_ty;
    let mut exported: Vec<&'static str> = Vec::new();
    for item in &imp.items {
        if let ImplItem::Fn(f) = item {
            let name = f.sig.ident.to_string();
            // Any other name is not a trait method: the compiler says so.
            if let Some((_, interface)) = HOOKS.iter().find(|(method, _)| *method == name) {
                exported.push(interface);
            }
        }
    }
    // In the order of the WIT file, so the world text is stable.
    exported.sort_by_key(|i| HOOKS.iter().position(|(_, h)| h == i));

    let world: String = exported
        .iter()
        .map(|i| format!("export wasmtp:smtp/{i}@{WIT_VERSION}; "))
        .collect();
    let inline = format!(
        "package wasmtp:sdk-plugin; world plugin {{ include wasmtp:smtp/plugin@{WIT_VERSION}; import wasmtp:smtp/types@{WIT_VERSION}; {world}}}"
    );
    let impls = exported.iter().map(|i| guest_impl(i));

    Ok(quote! {
        #[doc(hidden)]
        type __WasmtpPlugin = #self_ty;

        #[doc(hidden)]
        #[allow(clippy::all, unused_imports, dead_code)]
        mod __wasmtp_plugin_exports {
            type __Plugin = super::__WasmtpPlugin;
            use ::wasmtp_plugin::__private::{self as __sdk, with_instance};

            ::wasmtp_plugin::__private::wit_bindgen::generate!({
                inline: #inline,
                path: #WIT_DIR,
                runtime_path: "::wasmtp_plugin::__private::wit_bindgen::rt",
                with: {
                    "wasmtp:smtp/types@0.1.0": ::wasmtp_plugin::wit::types,
                    "wasmtp:smtp/content@0.1.0": ::wasmtp_plugin::wit::content,
                    "wasmtp:smtp/log@0.1.0": ::wasmtp_plugin::wit::log,
                    "wasmtp:smtp/transaction@0.1.0": ::wasmtp_plugin::wit::transaction,
                },
            });

            ::std::thread_local! {
                static INSTANCE: ::std::cell::RefCell<Option<__Plugin>> = const { ::std::cell::RefCell::new(None) };
                /// The arguments `setup.init` took, for the value of the next
                /// session of a reused instance.
                static ARGS: ::std::cell::RefCell<Option<Vec<String>>> = const { ::std::cell::RefCell::new(None) };
            }

            /// The session's plugin value, made on first use.
            fn with_plugin<R>(f: impl FnOnce(&mut __Plugin) -> R) -> R {
                INSTANCE.with(|cell| with_instance(cell, f))
            }

            struct Exports;
            #(#impls)*
            export!(Exports);
        }
    })
}

/// The `Guest` impl of one hook's interface, calling the trait method.
fn guest_impl(interface: &str) -> proc_macro2::TokenStream {
    let module = format_ident!("{}", interface.replace('-', "_"));
    let path = quote!(exports::wasmtp::smtp::#module);
    let body = match interface {
        "setup" => quote! {
            fn init(args: Vec<String>) -> Result<(), String> {
                ARGS.with(|a| *a.borrow_mut() = Some(args.clone()));
                with_plugin(|p| ::wasmtp_plugin::Plugin::init(p, ::wasmtp_plugin::Args::new(args)))
            }
        },
        // The ended session's value gets `reset`, then the next session's
        // value is made as for a fresh instance: `Default`, then `init` with
        // the same arguments.
        "reuse" => quote! {
            fn reset() -> Result<(), String> {
                if let Some(mut ended) = INSTANCE.with(|cell| cell.borrow_mut().take()) {
                    ::wasmtp_plugin::Plugin::reset(&mut ended)?;
                }
                let mut next = <__Plugin as ::std::default::Default>::default();
                if let Some(args) = ARGS.with(|a| a.borrow().clone()) {
                    ::wasmtp_plugin::Plugin::init(&mut next, ::wasmtp_plugin::Args::new(args))?;
                }
                INSTANCE.with(|cell| *cell.borrow_mut() = Some(next));
                Ok(())
            }
        },
        "helo" => quote! {
            fn handle_helo(session: __sdk::Session, envelope: __sdk::Envelope, hostname: String) -> Option<__sdk::Reply> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::helo(p, &session, &envelope, &hostname))
            }
        },
        "ehlo" => quote! {
            fn handle_ehlo(session: __sdk::Session, envelope: __sdk::Envelope, hostname: String, responses: __sdk::Reply) -> Option<__sdk::Reply> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::ehlo(p, &session, &envelope, &hostname, responses))
            }
        },
        "mail" | "rcpt" => {
            let handle = format_ident!("handle_{}", interface);
            let method = format_ident!("{}", interface);
            quote! {
                fn #handle(session: __sdk::Session, envelope: __sdk::Envelope, address: String, options: Vec<String>) -> Option<__sdk::Reply> {
                    with_plugin(|p| ::wasmtp_plugin::Plugin::#method(p, &session, &envelope, &address, &options))
                }
            }
        }
        "data" => quote! {
            fn handle_data(session: __sdk::Session, envelope: __sdk::Envelope) -> Option<__sdk::Reply> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::data(p, &session, &envelope, ::wasmtp_plugin::Content::new()))
            }
        },
        "rset" | "quit" => {
            let handle = format_ident!("handle_{}", interface);
            let method = format_ident!("{}", interface);
            quote! {
                fn #handle(session: __sdk::Session, envelope: __sdk::Envelope) -> Option<__sdk::Reply> {
                    with_plugin(|p| ::wasmtp_plugin::Plugin::#method(p, &session, &envelope))
                }
            }
        }
        "noop" => quote! {
            fn handle_noop(session: __sdk::Session, envelope: __sdk::Envelope, arg: String) -> Option<__sdk::Reply> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::noop(p, &session, &envelope, &arg))
            }
        },
        "vrfy" => quote! {
            fn handle_vrfy(session: __sdk::Session, envelope: __sdk::Envelope, address: String) -> Option<__sdk::Reply> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::vrfy(p, &session, &envelope, &address))
            }
        },
        "auth" => quote! {
            fn handle_auth(session: __sdk::Session, envelope: __sdk::Envelope, credentials: #path::Credentials) -> #path::AuthDecision {
                let credentials = ::wasmtp_plugin::Credentials {
                    mechanism: credentials.mechanism,
                    authzid: credentials.authzid,
                    login: credentials.login,
                    password: credentials.password,
                };
                match with_plugin(|p| ::wasmtp_plugin::Plugin::auth(p, &session, &envelope, credentials)) {
                    ::wasmtp_plugin::AuthDecision::Accept(identity) => #path::AuthDecision::Accept(identity),
                    ::wasmtp_plugin::AuthDecision::Reject(reply) => #path::AuthDecision::Reject(reply),
                }
            }
        },
        "proxy" => quote! {
            fn handle_proxy(session: __sdk::Session, envelope: __sdk::Envelope, proxy: __sdk::ProxyData) -> bool {
                with_plugin(|p| ::wasmtp_plugin::Plugin::proxy(p, &session, &envelope, &proxy))
            }
        },
        "starttls" => quote! {
            fn handle_starttls(session: __sdk::Session, envelope: __sdk::Envelope) -> bool {
                with_plugin(|p| ::wasmtp_plugin::Plugin::starttls(p, &session, &envelope))
            }
        },
        "exception" => quote! {
            fn handle_exception(session: __sdk::Session, error: __sdk::Error) -> Option<__sdk::Reply> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::exception(p, &session, &error))
            }
        },
        "lmtp-data" => quote! {
            fn handle_lmtp_data(session: __sdk::Session, envelope: __sdk::Envelope) -> Vec<Option<__sdk::Reply>> {
                with_plugin(|p| ::wasmtp_plugin::Plugin::lmtp_data(p, &session, &envelope, ::wasmtp_plugin::Content::new()))
            }
        },
        _ => unreachable!("every hook of HOOKS is handled"),
    };
    quote! {
        impl #path::Guest for Exports {
            #body
        }
    }
}
