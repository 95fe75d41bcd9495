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
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "plugin")
    {
        return wasmtp::tool::main(std::env::args_os().skip(1));
    }
    // `wasmtp check --config FILE`: is this config deployable?
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "check") {
        return wasmtp::check::main(std::env::args_os().skip(1));
    }
    // `wasmtp queue list|show|stats|requeue|delete|claim|ack|release`.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "queue") {
        return wasmtp::tool::queue::main(std::env::args_os().skip(1));
    }
    let cli = Cli::parse();

    // Usage errors exit with 2, as argparse's do (aiosmtpd's CLI).
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => return fail(2, &e.to_string()),
    };
    wasmtp::logging::init(
        cli.debug,
        cli.log_format.or(config.log_format).unwrap_or_default(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let reload = reload_signal();
        let listeners = match server::start(config).await {
            Ok(listeners) => listeners,
            Err(e @ StartError::Plugin(PluginError::ArgsRefused { .. })) => {
                return fail(2, &e.to_string());
            }
            Err(e) => return fail(1, &e.to_string()),
        };
        // Handlers installed before run() says `listening on`: a SIGTERM
        // right after that line must start the drain, never be missed.
        let shutdown = shutdown_signal();
        server::run(listeners, shutdown, reload).await;
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

/// SIGINT or SIGTERM: the handlers are installed when this is called, not
/// when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
