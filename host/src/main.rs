//! The `wasmtp` binary: parse the command line, load the config and
//! plugins, serve until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;

use wasmtp::cli::Cli;
use wasmtp::plugin::PluginError;
use wasmtp::server::{self, StartError};

fn main() -> ExitCode {
    // `wasmtp plugin inspect|test ...`: the tools for plugin authors, with
    // their own command line; anything else is the server's.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "plugin") {
        return wasmtp::tool::main(std::env::args_os().skip(1));
    }
    // `wasmtp check --config FILE`: is this config deployable?
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "check") {
        return wasmtp::check::main(std::env::args_os().skip(1));
    }
    let cli = Cli::parse();

    // Usage errors exit with 2, as argparse's do (aiosmtpd's CLI).
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => return fail(2, &e.to_string()),
    };
    wasmtp::logging::init(cli.debug, cli.log_format.or(config.log_format).unwrap_or_default());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let reload = reload_signal();
        let listeners = match server::start(config).await {
            Ok(listeners) => listeners,
            Err(e @ StartError::Plugin(PluginError::ArgsRefused { .. })) => return fail(2, &e.to_string()),
            Err(e) => return fail(1, &e.to_string()),
        };
        server::run(listeners, shutdown_signal(), reload).await;
        ExitCode::SUCCESS
    })
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("wasmtp: error: {message}");
    ExitCode::from(code)
}

/// SIGHUP asks for a reload of the config and plugins (see `server::run`).
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // Installed now, before any listener says it is ready: a SIGHUP that
    // comes before the handler would end the process.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = hup else { return };
        while hup.recv().await.is_some() {
            // A reload already queued covers this one too.
            let _ = tx.try_send(());
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
