//! `wasmtp-bench`: the wasmtp benchmark (BENCHMARKS.md says how to run it
//! and what it found). Run everything with `bench/run` (or `bench/run
//! --quick`); the subcommands run one part by hand.
//!
//! - [`load`]: the Rust load generator (latency percentiles, pipelining,
//!   many or idle sessions) — Postfix's `smtp-source` is the other one.
//! - [`peers`]: starting and stopping the servers under test.
//! - [`procfs`]: CPU time and memory of a server from `/proc`.
//! - [`cpus`]: the pinned modes (`--pin`): the server on one CPU, the load
//!   generators on the other.
//! - [`micro`]: in-process microbenchmarks (instantiation, Maildir writes).
//! - [`state`]: PostgreSQL for the state part, key-value latency.
//! - [`auth`]: NSD, the signed message and Haraka's configuration for the
//!   mail-authentication part; Haraka's configuration for the policy part
//!   (the example policy of `examples/` against Haraka).
//! - [`suite`]: the whole benchmark, interleaved, with medians.
//! - [`report`]: the tables for BENCHMARKS.md.
//! - [`handoff`]: mail to an application: `webhook` beside `sink`, and the
//!   parsed-message import against a parse in the guest.

mod auth;
mod cpus;
mod handoff;
mod load;
mod micro;
mod peers;
mod procfs;
mod report;
mod state;
mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wasmtp-bench",
    about = "The wasmtp benchmark (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole benchmark: every peer, every mode, memory, microbenchmarks.
    All(suite::Settings),
    /// Drive an SMTP server on a loopback address with the Rust load generator.
    Load {
        /// The server: 127.0.0.1:PORT (loopback only).
        addr: SocketAddr,
        /// A new connection for every message (default: one per session, reused).
        #[arg(long)]
        per_connection: bool,
        /// Message size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Concurrent sessions.
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Pipeline MAIL, RCPT and DATA (RFC 2920).
        #[arg(long)]
        pipeline: bool,
        /// The server's PID, to report its CPU time per message.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Render the tables of a results file again (and, for a full run,
    /// splice them into BENCHMARKS.md).
    Report {
        /// bench/results/full.json, full-state.json, full-auth.json,
        /// full-policy.json (or quick*.json).
        results: PathBuf,
    },
    /// Mail to an application: `webhook` to a receiver on loopback beside
    /// `sink` (1 KiB and 1 MiB), and the `message` import against a parse
    /// in the guest. Writes bench/results/handoff.{json,md}.
    Handoff {
        /// Seconds of load per server and size (twice that for 1 MiB).
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// `data` calls per parse measurement (1/20 of them for 1 MiB).
        #[arg(long, default_value_t = 2_000)]
        iterations: usize,
    },
    /// Instantiation microbenchmark (pooling allocator as the server sets it).
    Instantiate {
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::All(settings) => suite::run(settings),
        Cmd::Load {
            addr,
            per_connection,
            size,
            sessions,
            seconds,
            messages,
            pipeline,
            pid,
        } => {
            if !addr.ip().is_loopback() {
                bail!(
                    "{addr} is not a loopback address; the load generator only drives servers on this machine"
                );
            }
            let spec = load::LoadSpec {
                addr,
                reuse: !per_connection,
                size,
                sessions,
                duration: Duration::from_secs_f64(seconds.clamp(0.01, 600.0)),
                max_messages: messages,
                pipeline,
                script: None,
            };
            let cpu0 = pid.map(procfs::cpu_time).transpose()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let r = rt.block_on(load::run(&spec))?;
            println!(
                "{} messages in {:.2} s: {:.0} msgs/s, latency p50 {:.0} µs, p99 {:.0} µs{}",
                r.messages,
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.percentile(0.5),
                r.percentile(0.99),
                if r.pipelining_refused {
                    " (the server does not advertise PIPELINING: not pipelined)"
                } else {
                    ""
                }
            );
            if let (Some(pid), Some(cpu0)) = (pid, cpu0) {
                let cpu = procfs::cpu_time(pid)? - cpu0;
                println!(
                    "server CPU {:.2} s: {:.1} µs/msg",
                    cpu.as_secs_f64(),
                    cpu.as_secs_f64() * 1e6 / r.messages.max(1) as f64
                );
            }
            Ok(())
        }
        Cmd::Report { results } => {
            let r: suite::Results = serde_json::from_str(&std::fs::read_to_string(&results)?)?;
            let section = report::Section::of(&r);
            let markdown = report::section_markdown(section, &r);
            std::fs::write(results.with_extension("md"), &markdown)?;
            if r.settings.as_ref().is_some_and(|s| !s.quick) {
                report::splice_section(&repo_root().join("BENCHMARKS.md"), section, &markdown)?;
            }
            println!("{markdown}");
            Ok(())
        }
        Cmd::Handoff {
            seconds,
            iterations,
        } => {
            let tools = suite::default_tools()?;
            let r = handoff::run(&tools, seconds, iterations)?;
            let dir = repo_root().join("bench/results");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("handoff.json"), serde_json::to_string_pretty(&r)?)?;
            let md = handoff::markdown(&r);
            std::fs::write(dir.join("handoff.md"), &md)?;
            println!("{md}");
            Ok(())
        }
        Cmd::Instantiate { iterations } => {
            let tools = suite::default_tools()?;
            std::fs::create_dir_all(&tools.scratch)?;
            let t = Instant::now();
            for f in micro::instantiation_all(&tools.wasm_dir, &tools.scratch, iterations)? {
                println!("{}", serde_json::to_string(&f)?);
            }
            let _ = std::fs::remove_dir_all(&tools.scratch);
            eprintln!("({:.1} s)", t.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

/// The repository root (the bench crate's parent).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
