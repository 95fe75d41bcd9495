//! `wasmtp check --config FILE`: is this config deployable?
//!
//! Reads and checks the config exactly as the server would, then compiles,
//! links and initialises (`setup.init` with its arguments) every plugin of
//! every listener and tenant, with the server's engine settings, without
//! binding any address. Every plugin is tried, so one run lists every
//! plugin problem, each as `FILE: KEY: reason`. Exit status 0 when the
//! server would start with this config (bar binding its addresses), 2 when
//! it would not.
//!
//! Like the server, it creates a built-in Mailbox's Maildir when missing,
//! and fills the compile cache (`[server] compile_cache`), so a server
//! started after a successful check does not compile its plugins again.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::config::Config;
use crate::plugin::{Plugin, PluginError, PluginSpec, Runtime};

/// Check a config file: the TOML, then every plugin it names.
#[derive(Debug, Parser)]
#[command(name = "wasmtp check", version, max_term_width = 100)]
pub struct CheckCli {
    /// The config file to check.
    #[arg(long = "config", value_name = "FILE")]
    pub config: PathBuf,
}

/// One problem: where (file and key) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// What a check found: the config's plugins by name, and its problems.
#[derive(Debug, Default)]
pub struct Report {
    pub listeners: usize,
    pub plugins: Vec<String>,
    pub problems: Vec<Problem>,
}

/// Runs `wasmtp check ...`; `args` starts with `check`.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = CheckCli::parse_from(args);
    let started = Instant::now();
    let file = cli.config.display().to_string();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            // Already `FILE:LINE:COLUMN: KEY: reason`.
            eprintln!("{e}");
            eprintln!("wasmtp check: {file} is not deployable: 1 problem");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmtp check: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(check(config, &cli.config));
    for p in &report.problems {
        eprintln!("{file}: {}: {}", p.key, p.message);
    }
    if report.problems.is_empty() {
        println!(
            "{file}: deployable: {} listener(s), {} plugin(s) ({}) compiled, linked and initialised in {:.1?}",
            report.listeners,
            report.plugins.len(),
            report.plugins.join(", "),
            started.elapsed()
        );
        ExitCode::SUCCESS
    } else {
        let n = report.problems.len();
        eprintln!(
            "wasmtp check: {file} is not deployable: {n} problem{}",
            if n == 1 { "" } else { "s" }
        );
        ExitCode::from(2)
    }
}

/// Load every plugin of a checked config; `file` is where it came from (to
/// name the keys of the problems).
pub async fn check(config: Config, file: &Path) -> Report {
    let sections = plugin_sections(file);
    let mut report = Report {
        listeners: config.listeners.len(),
        ..Report::default()
    };
    let runtime = match Runtime::new(&config.runtime) {
        Ok(runtime) => {
            runtime.configure_services(&config.dns, &config.mail_auth, &config.http);
            runtime
        }
        Err(e) => {
            report.problems.push(Problem {
                key: "server".into(),
                message: e.to_string(),
            });
            return report;
        }
    };
    // (the spec, the key naming where the listener or tenant uses it)
    let mut specs: Vec<(PluginSpec, String)> = Vec::new();
    for (i, l) in config.listeners.into_iter().enumerate() {
        for spec in l.plugins {
            let key = match &l.tenant {
                Some(t) => format!("tenant.{t}.plugins"),
                None => format!("listener[{i}].plugins"),
            };
            specs.push((spec, key));
        }
        for t in l.tenants {
            for spec in t.plugins {
                specs.push((spec, format!("tenant.{}.plugins", t.name)));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (spec, used_at) in specs {
        if !seen.insert(spec.name.clone()) {
            continue;
        }
        report.plugins.push(spec.name.clone());
        // A tenant's copy, `acme/inbox`, is the `[plugin.inbox]` section.
        let section = spec
            .name
            .split_once('/')
            .map_or(spec.name.as_str(), |(_, p)| p)
            .to_owned();
        if let Err(e) = Plugin::load(&runtime, spec).await {
            let key = if sections.contains(&section) {
                format!("plugin.{section}{}", field(&e))
            } else {
                used_at
            };
            // One line per problem: wasmtime's text-format errors add an
            // annotated snippet after the first line.
            let message = e.to_string().lines().next().unwrap_or_default().to_owned();
            report.problems.push(Problem { key, message });
        }
    }
    report
}

/// The key within a `[plugin.NAME]` section a load error is about.
fn field(e: &PluginError) -> &'static str {
    match e {
        PluginError::Read { .. }
        | PluginError::CoreModule { .. }
        | PluginError::Invalid { .. }
        | PluginError::WitVersion { .. }
        | PluginError::UnknownExport { .. }
        | PluginError::Link { .. } => ".component",
        PluginError::ArgsRefused { .. } => ".args",
        PluginError::NotGranted { .. } => ".grants",
        PluginError::NotReusable { .. } => ".instances",
        PluginError::Start { .. } | PluginError::Engine(_) => "",
    }
}

/// The names of the `[plugin.NAME]` sections of the file (already checked,
/// so it parses).
fn plugin_sections(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let table: toml::Table = toml::from_str(&text).unwrap_or_default();
    match table.get("plugin") {
        Some(toml::Value::Table(plugins)) => plugins.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}
