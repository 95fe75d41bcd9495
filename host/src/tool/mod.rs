//! `wasmtp plugin ...`: tools for plugin authors and operators.
//!
//! - `wasmtp plugin inspect FILE`: the hooks a component provides, the WIT
//!   version it targets, what it imports and so what it would need granted
//!   ([`inspect`]);
//! - `wasmtp plugin test FILE [ARGS...] --transcript T`: replays an SMTP
//!   dialog against the plugin through the real server and compares the
//!   replies ([`transcript`]);
//! - `wasmtp queue ...`: the durable queue, for operators and consumers
//!   ([`queue`]).
//!
//! The binary hands `wasmtp plugin ...` here before parsing its own command
//! line, so the server's command line stays exactly aiosmtpd's.

pub mod inspect;
pub mod queue;
pub mod transcript;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tools for plugin authors: look inside a plugin, replay a dialog against it.
#[derive(Debug, Parser)]
#[command(name = "wasmtp plugin", version, max_term_width = 100)]
pub struct PluginCli {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show the hooks a component provides, the WIT version it targets and
    /// what it imports (what it would need to be granted).
    Inspect {
        /// The plugin: a `.wasm` component, or a built-in name (sink, debugging, mailbox).
        file: String,
    },
    /// Replay an SMTP dialog against one plugin, through the real server,
    /// and compare the replies with the transcript's.
    ///
    /// The transcript has one line per line of the dialog: `C: text` is sent
    /// by the client, `S: text` is a reply line expected from the server
    /// (`*` matches any text: `S: 250 *`, `S: 220 *`). A line starting with
    /// `#` and an empty line are ignored. The server's greeting comes first.
    Test {
        /// The plugin: a `.wasm` component, or a built-in name.
        file: String,
        /// The dialog to replay.
        #[arg(long, short = 't', value_name = "FILE")]
        transcript: PathBuf,
        /// The host name the server announces.
        #[arg(long, default_value = transcript::HOSTNAME)]
        hostname: String,
        /// Arguments for the plugin (as after `-c PLUGIN`).
        #[arg(
            value_name = "ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
}

/// Runs `wasmtp plugin ...`; `args` starts with `plugin`.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = PluginCli::parse_from(args);
    let result = match cli.command {
        PluginCommand::Inspect { file } => inspect::run(&file),
        PluginCommand::Test {
            file,
            transcript,
            hostname,
            args,
        } => transcript::run(&file, &args, &transcript, &hostname),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("wasmtp plugin: error: {message}");
            ExitCode::from(2)
        }
    }
}
