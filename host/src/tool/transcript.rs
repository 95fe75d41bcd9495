//! `wasmtp plugin test FILE [ARGS...] --transcript T`: replays an SMTP dialog
//! against one plugin, through the real server (in this process, on a
//! loopback port), and compares each reply line with the transcript's.
//!
//! ```text
//! # The greeting comes first.
//! S: 220 *
//! C: EHLO client.example
//! S: 250-*
//! S: 250-*
//! ...
//! C: RCPT TO:<eve@evil.example>
//! S: 550 5.1.1 *
//! ```
//!
//! `C:` lines are sent as they are, with CRLF (dot-stuff message lines
//! yourself; `C: .` ends the message). Each `S:` line is one line the server
//! must send; `*` matches any text. The replay stops at the first line that
//! does not match.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::Cli;
use crate::server;

/// The host name the server announces unless told otherwise.
pub const HOSTNAME: &str = "mx.wasmtp.test";

/// How long to wait for one reply line.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of a transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `C: text`: the client sends `text` CRLF.
    Send { line: usize, text: String },
    /// `S: pattern`: the server's next line must match `pattern`.
    Expect { line: usize, pattern: String },
}

/// Reads a transcript; an error names the line.
pub fn parse(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        // `C:` alone sends an empty line (the blank line after headers).
        let rest = |prefix: &str| {
            raw.strip_prefix(prefix)
                .map(|r| r.strip_prefix(' ').unwrap_or(r).to_owned())
        };
        if let Some(text) = rest("C:") {
            steps.push(Step::Send { line, text });
        } else if let Some(pattern) = rest("S:") {
            steps.push(Step::Expect { line, pattern });
        } else {
            return Err(format!(
                "line {line}: a transcript line starts with `C:` (client), `S:` (server) or `#` (comment): {raw:?}"
            ));
        }
    }
    if steps.is_empty() {
        return Err("the transcript has no `C:` or `S:` line".into());
    }
    Ok(steps)
}

/// `*` matches any run of characters; everything else matches itself.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer glob with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What a replay found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every `S:` line matched; how many there were.
    Passed(usize),
    /// The first line that did not: the transcript line, what was expected,
    /// and what came (`None`: the connection closed or timed out).
    Failed {
        line: usize,
        expected: String,
        got: Option<String>,
    },
}

/// Plays `steps` against the server at `addr`, printing the dialog to `log`.
pub fn replay(addr: SocketAddr, steps: &[Step], log: &mut impl Write) -> std::io::Result<Outcome> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut matched = 0;
    for step in steps {
        match step {
            Step::Send { text, .. } => {
                writeln!(log, "  C: {text}")?;
                writer.write_all(text.as_bytes())?;
                writer.write_all(b"\r\n")?;
            }
            Step::Expect { line, pattern } => {
                let mut got = Vec::new();
                let read = reader.read_until(b'\n', &mut got);
                if read.is_err() || got.is_empty() {
                    writeln!(
                        log,
                        "✗ S: (nothing: the connection closed or timed out)   expected `{pattern}` (line {line})"
                    )?;
                    return Ok(Outcome::Failed {
                        line: *line,
                        expected: pattern.clone(),
                        got: None,
                    });
                }
                let got = String::from_utf8_lossy(&got);
                let got = got.trim_end_matches(['\r', '\n']).to_owned();
                if !matches(pattern, &got) {
                    writeln!(log, "✗ S: {got}   expected `{pattern}` (line {line})")?;
                    return Ok(Outcome::Failed {
                        line: *line,
                        expected: pattern.clone(),
                        got: Some(got),
                    });
                }
                writeln!(log, "  S: {got}")?;
                matched += 1;
            }
        }
    }
    Ok(Outcome::Passed(matched))
}

/// `wasmtp plugin test`: exit status 0 when every reply matched, 1 when one
/// did not, 2 when the plugin or the transcript could not be used.
pub fn run(
    plugin: &str,
    args: &[String],
    transcript: &Path,
    hostname: &str,
) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(transcript)
        .map_err(|e| format!("cannot read {}: {e}", transcript.display()))?;
    let steps = parse(&text).map_err(|e| format!("{}: {e}", transcript.display()))?;

    // The server's own command line, so the plugin is loaded, sandboxed and
    // granted exactly as `wasmtp -c PLUGIN ARGS...` would.
    let mut argv: Vec<&str> = vec![
        "wasmtp",
        "-l",
        "127.0.0.1:0",
        "--hostname",
        hostname,
        "-c",
        plugin,
    ];
    argv.extend(args.iter().map(String::as_str));
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let config = cli.config().map_err(|e| e.to_string())?;

    // The plugin's log lines (and the server's warnings) go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,wasmtp::plugin=debug",
        ))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let server = runtime
        .block_on(server::start(config))
        .map_err(|e| e.to_string())?;
    let addr: std::net::SocketAddr =
        server.listeners[0]
            .socket
            .local_addr()
            .parse()
            .map_err(|_| {
                "the transcript runner listens on TCP; it got another kind of listener".to_string()
            })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_reload, reloads) = tokio::sync::mpsc::channel(1);
    let serving = runtime.spawn(server::run(
        server,
        async move {
            let _ = stopped.await;
        },
        reloads,
    ));

    let mut out = std::io::stdout().lock();
    let outcome = replay(addr, &steps, &mut out).map_err(|e| format!("the dialog broke off: {e}"));
    let _ = stop.send(());
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), serving).await });
    runtime.shutdown_timeout(Duration::from_secs(1));

    match outcome? {
        Outcome::Passed(n) => {
            let _ = writeln!(out, "{}: {n} reply lines matched", transcript.display());
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Failed {
            line,
            expected,
            got,
        } => {
            let got = got.map_or_else(|| "nothing".to_owned(), |g| format!("`{g}`"));
            let _ = writeln!(
                out,
                "{}:{line}: expected `{expected}`, got {got}",
                transcript.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("250 OK", "250 OK"));
        assert!(matches("250 *", "250 2.0.0 accepted"));
        assert!(matches("2*0 *ted", "250 2.0.0 accepted"));
        assert!(matches("*", ""));
        assert!(!matches("250 OK", "250 OK then"));
        assert!(!matches("550 *", "250 OK"));
    }

    #[test]
    fn transcripts() {
        let steps = parse("# hello\nS: 220 *\nC: EHLO x\n\nC:\nS: 250 OK\n").unwrap();
        assert_eq!(
            steps,
            [
                Step::Expect {
                    line: 2,
                    pattern: "220 *".into()
                },
                Step::Send {
                    line: 3,
                    text: "EHLO x".into()
                },
                Step::Send {
                    line: 5,
                    text: "".into()
                },
                Step::Expect {
                    line: 6,
                    pattern: "250 OK".into()
                },
            ]
        );
        assert!(parse("X: nope").unwrap_err().starts_with("line 1:"));
        assert!(parse("# only comments\n").is_err());
    }
}
