//! reusable: a plugin an operator may reuse across sessions
//! (`instances = "reuse"`). `NOOP` answers
//! `250 born=B resets=R calls=C`:
//! - `B`: the id of the session this instance was created for (statics live
//!   as long as the instance, so this names the instance);
//! - `R`: how many times `reuse.reset` ran on this instance;
//! - `C`: NOOPs seen by this session's plugin value (the SDK gives every
//!   session a fresh value, reused instance or not).
//!
//! RCPT accepts every recipient with the same answer.
//!
//! Arguments: `fail-reset` makes `reset` refuse, so the instance is dropped;
//! `NOOP trap` traps, so the instance is dropped as failed.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use wasmtp_plugin::{Args, Envelope, Plugin, Reply, Session};

/// This instance's name: std seeds `RandomState` from `wasi:random`.
static BORN: OnceLock<u64> = OnceLock::new();
static RESETS: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
struct Reusable {
    calls: u32,
    fail_reset: bool,
}

impl Reusable {
    fn answer(&mut self) -> Reply {
        let born = *BORN.get_or_init(|| RandomState::new().hash_one(0u8));
        self.calls += 1;
        Reply::new(
            250,
            "",
            format!(
                "born={born} resets={} calls={}",
                RESETS.load(Ordering::Relaxed),
                self.calls
            ),
        )
    }
}

#[wasmtp_plugin::plugin]
impl Plugin for Reusable {
    fn init(&mut self, args: Args) -> Result<(), String> {
        for arg in args.rest() {
            match arg.as_str() {
                "fail-reset" => self.fail_reset = true,
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(())
    }

    fn noop(&mut self, _session: &Session, _envelope: &Envelope, arg: &str) -> Option<Reply> {
        if arg == "trap" {
            panic!("asked to trap");
        }
        Some(self.answer())
    }

    /// Accepts every recipient, saying the same (a tenant's plugin is
    /// called for its recipients, not for NOOP).
    fn rcpt(
        &mut self,
        _session: &Session,
        _envelope: &Envelope,
        _address: &str,
        _options: &[String],
    ) -> Option<Reply> {
        Some(self.answer())
    }

    fn reset(&mut self) -> Result<(), String> {
        RESETS.fetch_add(1, Ordering::Relaxed);
        if self.fail_reset {
            return Err("asked to refuse".into());
        }
        Ok(())
    }
}
