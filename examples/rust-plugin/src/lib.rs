//! An example wasmtp plugin: a recipient allowlist and a header filter.
//!
//! The examples in Python, JavaScript and C implement the same policy, so
//! they can be compared:
//!
//! - arguments: the recipient domains (`example.com`) or addresses
//!   (`postmaster@example.org`) to accept; at least one;
//! - `RCPT TO`: any other recipient gets `550 5.1.1`;
//! - `DATA`: a message whose headers carry `X-Spam-Flag: YES` gets
//!   `550 5.7.1`; any other gets `250 2.0.0 accepted by the rust policy`.
//!
//! Only the hooks defined below are exported (`setup`, `rcpt`, `data`):
//! the server does its default for every other command without calling
//! the plugin.

use std::io::BufRead;

use wasmtp_plugin::{Args, Content, Envelope, Plugin, Reply, Session};

/// One value per SMTP session: made with `Default`, then `init` runs.
#[derive(Default)]
struct Policy {
    /// Lower-cased domains and addresses.
    allowed: Vec<String>,
}

#[wasmtp_plugin::plugin]
impl Plugin for Policy {
    fn init(&mut self, args: Args) -> Result<(), String> {
        if args.is_empty() {
            return Err("give at least one allowed recipient domain or address".into());
        }
        self.allowed = args.rest().into_iter().map(|a| a.to_lowercase()).collect();
        Ok(())
    }

    fn rcpt(
        &mut self,
        _session: &Session,
        _envelope: &Envelope,
        address: &str,
        _options: &[String],
    ) -> Option<Reply> {
        let address = address.to_lowercase();
        let domain = address.rsplit_once('@').map_or("", |(_, domain)| domain);
        if self.allowed.iter().any(|a| *a == address || a == domain) {
            return None; // the default: 250 OK, and the recipient is recorded
        }
        wasmtp_plugin::info!("refused recipient {address}");
        Some(Reply::new(
            550,
            "5.1.1",
            format!("<{address}>: recipient not allowed"),
        ))
    }

    // Defining `reset` lets an operator reuse one instance across sessions
    // (`instances = "reuse"`): the SDK gives each session a fresh `Policy`
    // anyway, and this policy keeps nothing outside it.
    fn reset(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn data(
        &mut self,
        _session: &Session,
        _envelope: &Envelope,
        content: Content,
    ) -> Option<Reply> {
        // Read the header block only, line by line; the body is never copied
        // into the plugin.
        for line in content.split(b'\n') {
            let Ok(line) = line else { break };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split_once(':'))
                && name.trim().eq_ignore_ascii_case("x-spam-flag")
                && value.trim().eq_ignore_ascii_case("yes")
            {
                return Some(Reply::new(
                    550,
                    "5.7.1",
                    "message refused: X-Spam-Flag is YES",
                ));
            }
        }
        Some(Reply::new(250, "2.0.0", "accepted by the rust policy"))
    }
}
