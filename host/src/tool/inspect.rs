//! `wasmtp plugin inspect FILE`: what a component is, read from its import
//! and export sections without compiling it (an 18 MB Python plugin takes
//! seconds to compile, and nothing here needs machine code).

use std::fmt::Write as _;
use std::process::ExitCode;

use wasmparser::{Encoding, Parser, Payload};

use crate::plugin::Hook;
use crate::plugin::bindings::{WIT_PACKAGE, WIT_VERSION};
use crate::plugin::builtin;

/// What a component says about itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub size: usize,
    /// The hooks exported, in the WIT file's order.
    pub hooks: Vec<Hook>,
    /// Every `wasmtp:smtp` version named by an import or export.
    pub wit_versions: Vec<String>,
    /// Exports under `wasmtp:smtp/` that are not hooks, and exports of
    /// anything else.
    pub other_exports: Vec<String>,
    pub imports: Vec<String>,
}

/// Why a file can't be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "{0} is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule(String),
    #[error("{0} is not a WebAssembly component: {1}")]
    Invalid(String, String),
}

/// Reads the top-level imports and exports of a component.
pub fn inspect(name: &str, bytes: &[u8]) -> Result<Report, InspectError> {
    let mut report = Report {
        size: bytes.len(),
        ..Report::default()
    };
    // 1 inside the top-level component; nested modules and components go deeper.
    let mut depth = 0usize;
    let mut versions: Vec<String> = Vec::new();
    let invalid =
        |e: wasmparser::BinaryReaderError| InspectError::Invalid(name.to_owned(), e.to_string());
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(InspectError::CoreModule(name.to_owned()));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    if let Some(version) = smtp_version(import.name.name) {
                        versions.push(version.to_owned());
                    }
                    report.imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    let export_name = export.name.name;
                    if let Some(version) = smtp_version(export_name) {
                        versions.push(version.to_owned());
                    }
                    match hook_of(export_name) {
                        Some(hook) => report.hooks.push(hook),
                        None => report.other_exports.push(export_name.to_owned()),
                    }
                }
            }
            _ => {}
        }
    }
    for version in versions {
        if !report.wit_versions.contains(&version) {
            report.wit_versions.push(version);
        }
    }
    report
        .hooks
        .sort_by_key(|h| Hook::ALL.iter().position(|a| a == h));
    Ok(report)
}

/// `wasmtp:smtp/rcpt@0.1.0` → `rcpt`, whatever the version (the version is
/// reported, and judged, separately).
fn hook_of(export: &str) -> Option<Hook> {
    let rest = export.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    let interface = rest.split_once('@').map_or(rest, |(i, _)| i);
    Hook::ALL.into_iter().find(|h| h.name() == interface)
}

/// The version in `wasmtp:smtp/NAME@VERSION`.
fn smtp_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').map_or("", |(_, v)| v))
}

/// What the server does about an import: provides it (and under which
/// grant it does anything), or can't link it.
pub fn import_note(import: &str) -> &'static str {
    let (package, version) = import.split_once('@').unwrap_or((import, ""));
    let wasi_02 = version.starts_with("0.2.");
    match package {
        "wasmtp:smtp/types" => "the hooks' types",
        "wasmtp:smtp/content" => "the message, during the data hook",
        "wasmtp:smtp/log" => "lines in the server's log",
        "wasmtp:smtp/transaction" => "the transaction's queue id",
        "wasmtp:smtp/message" => {
            "the message parsed (fields, bodies, attachments), during the data hook"
        }
        "wasi:http/types" if wasi_02 => "HTTP's types: nothing is sent without `grants.http`",
        p if let Some(c) = crate::capability::capability_of(p) => c.note,
        p if p.starts_with("wasmtp:smtp/") => "not provided: the server refuses this plugin",
        p if !wasi_02 && p.starts_with("wasi:") => {
            "not provided (only WASI 0.2 is): the server refuses this plugin"
        }
        "wasi:filesystem/preopens" | "wasi:filesystem/types" => "files: none unless granted `dirs`",
        "wasi:sockets/tcp"
        | "wasi:sockets/tcp-create-socket"
        | "wasi:sockets/network"
        | "wasi:sockets/instance-network" => "TCP: no connection unless granted `network`",
        "wasi:sockets/udp" | "wasi:sockets/udp-create-socket" => "UDP: always denied",
        "wasi:sockets/ip-name-lookup" => {
            "name lookups: always denied (grants are resolved at load)"
        }
        "wasi:cli/stdout" | "wasi:cli/terminal-stdout" => {
            "stdout: discarded unless granted `stdout`"
        }
        "wasi:cli/stderr" | "wasi:cli/terminal-stderr" => {
            "stderr: discarded unless granted `stderr`"
        }
        "wasi:cli/environment" => "environment: empty unless granted `env`",
        "wasi:cli/stdin" | "wasi:cli/terminal-stdin" => "stdin: empty",
        "wasi:cli/terminal-input" | "wasi:cli/terminal-output" => {
            "terminal types: never a terminal"
        }
        "wasi:cli/exit" => "exit: traps the hook",
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => "clocks",
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            "random numbers"
        }
        "wasi:io/error" | "wasi:io/poll" | "wasi:io/streams" => "streams",
        _ => "not provided: the server refuses this plugin",
    }
}

/// Whether the server can load the plugin, and if not why (one sentence).
pub fn verdict(report: &Report) -> Result<(), String> {
    for version in &report.wit_versions {
        if !compatible(version) {
            return Err(format!(
                "built against {WIT_PACKAGE}@{version}, but this server speaks {WIT_PACKAGE}@{WIT_VERSION}: rebuild it against the WIT files of this version"
            ));
        }
    }
    if let Some(export) = report
        .other_exports
        .iter()
        .find(|e| e.starts_with(&format!("{WIT_PACKAGE}/")))
    {
        return Err(format!(
            "exports `{export}`, which is not a hook of {WIT_PACKAGE}@{WIT_VERSION}"
        ));
    }
    if let Some(import) = report
        .imports
        .iter()
        .find(|i| import_note(i).starts_with("not provided"))
    {
        return Err(format!(
            "imports `{import}`, which this server does not provide"
        ));
    }
    Ok(())
}

/// Semver compatibility as the component model applies it (and the loader
/// checks it): for 0.x versions, the same minor version.
fn compatible(version: &str) -> bool {
    let mut ours = WIT_VERSION.split('.');
    let mut theirs = version.split('.');
    let (Some(major), Some(minor)) = (ours.next(), ours.next()) else {
        return false;
    };
    matches!((theirs.next(), theirs.next()), (Some(m), Some(n)) if m == major && (major != "0" || n == minor))
}

/// The report as `wasmtp plugin inspect` prints it.
pub fn render(name: &str, report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{name}: WebAssembly component, {} bytes", report.size);
    let versions = if report.wit_versions.is_empty() {
        "none (it names no wasmtp:smtp interface)".to_owned()
    } else {
        report
            .wit_versions
            .iter()
            .map(|v| format!("{WIT_PACKAGE}@{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "targets: {versions}; this server speaks {WIT_PACKAGE}@{WIT_VERSION}"
    );
    let names = |hooks: &mut dyn Iterator<Item = Hook>| {
        hooks.map(Hook::name).collect::<Vec<_>>().join(", ")
    };
    // `reuse` is not an SMTP hook: it gets a line of its own below.
    let provided = names(&mut report.hooks.iter().copied().filter(|h| *h != Hook::Reuse));
    let _ = writeln!(
        out,
        "hooks: {}",
        if provided.is_empty() {
            "none".to_owned()
        } else {
            provided
        }
    );
    let defaults = names(
        &mut Hook::ALL
            .into_iter()
            .filter(|h| *h != Hook::Reuse && !report.hooks.contains(h)),
    );
    if !defaults.is_empty() {
        let _ = writeln!(out, "server defaults (never called): {defaults}");
    }
    if report.hooks.contains(&Hook::Setup) {
        let _ = writeln!(out, "arguments: taken by `setup`");
    } else {
        let _ = writeln!(
            out,
            "arguments: none (no `setup` hook; the server refuses any)"
        );
    }
    let _ = writeln!(
        out,
        "{}",
        if report.hooks.contains(&Hook::Reuse) {
            "instances: per session, or reused across sessions with `instances = \"reuse\"` (exports `reuse`)"
        } else {
            "instances: per session only (no `reuse` export)"
        }
    );
    for export in &report.other_exports {
        let _ = writeln!(out, "other export: {export}");
    }
    let _ = writeln!(out, "imports:");
    let width = report.imports.iter().map(String::len).max().unwrap_or(0);
    for import in &report.imports {
        let _ = writeln!(out, "  {import:width$}  {}", import_note(import));
    }
    match verdict(report) {
        Ok(()) => {
            let _ = writeln!(out, "verdict: this server can load it");
        }
        Err(why) => {
            let _ = writeln!(out, "verdict: this server refuses it: {why}");
        }
    }
    out
}

/// `wasmtp plugin inspect FILE`: exit status 0 when the server can load
/// the plugin, 1 when it would refuse it.
pub fn run(file: &str) -> Result<ExitCode, String> {
    let bytes: std::borrow::Cow<'static, [u8]> = match builtin::find(file) {
        Some(b) if !file.contains('/') => b.wasm.into(),
        _ => std::fs::read(file)
            .map_err(|e| format!("cannot read {file}: {e}"))?
            .into(),
    };
    let report = inspect(file, &bytes).map_err(|e| e.to_string())?;
    print!("{}", render(file, &report));
    Ok(if verdict(&report).is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_mailbox() {
        let mailbox = builtin::find("mailbox").unwrap();
        let report = inspect("mailbox", mailbox.wasm).unwrap();
        assert_eq!(report.hooks, [Hook::Setup, Hook::Data]);
        assert_eq!(report.wit_versions, [WIT_VERSION]);
        assert!(
            report
                .imports
                .iter()
                .any(|i| i == "wasmtp:smtp/content@0.1.0"),
            "{report:?}"
        );
        assert!(verdict(&report).is_ok());
    }

    /// A granted import is provided, and the note names its grant.
    #[test]
    fn builtin_queue_needs_its_grant() {
        let queue = builtin::find("queue").unwrap();
        let report = inspect("queue", queue.wasm).unwrap();
        assert_eq!(report.hooks, [Hook::Data]);
        assert!(
            report
                .imports
                .iter()
                .any(|i| i == "wasmtp:smtp/queue@0.1.0")
        );
        assert!(import_note("wasmtp:smtp/queue@0.1.0").contains("`grants.queue`"));
        assert!(import_note("wasmtp:smtp/kv@0.1.0").contains("`grants.kv`"));
        assert!(verdict(&report).is_ok());
    }

    #[test]
    fn a_core_module_is_named_as_such() {
        let err = inspect("m.wasm", b"\0asm\x01\0\0\0").unwrap_err();
        assert!(matches!(err, InspectError::CoreModule(_)), "{err}");
    }

    #[test]
    fn notes() {
        assert!(import_note("wasi:http/outgoing-handler@0.2.0").contains("`grants.http`"));
        assert!(import_note("wasi:http/types@0.2.6").contains("`grants.http`"));
        assert!(import_note("wasmtp:smtp/message@0.1.0").contains("parsed"));
        assert!(import_note("wasi:sockets/tcp@0.2.3").contains("network"));
        assert!(import_note("wasi:filesystem/preopens@0.3.0").starts_with("not provided"));
    }
}
