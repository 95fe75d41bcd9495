//! HELO, EHLO and LMTP's LHLO.

use super::{Session, Step};
use crate::plugin::Hook;
use crate::smtp::reply::{self, Reply};

impl Session {
    pub(super) async fn helo(&mut self, arg: Option<String>) -> Step {
        let Some(hostname) = arg else {
            return self.answer(&reply::SYNTAX_HELO);
        };
        self.reset();
        self.info.extended_smtp = false;
        let default = Reply::new(250, self.settings.hostname.to_string());
        let decided = if self.plugin.has(Hook::Helo) {
            self.plugin
                .helo(&self.info, &self.envelope, &hostname)
                .await
        } else {
            Ok(None)
        };
        self.greeted(hostname, decided, default)
    }

    /// The EHLO (LHLO) reply the host plans: aiosmtpd's keywords in its
    /// order, then wasmtp's own, then `HELP`.
    fn ehlo_keywords(&self) -> Reply {
        let mut lines = vec![self.settings.hostname.to_string()];
        if let Some(limit) = self.settings.data_size_limit {
            lines.push(format!("SIZE {limit}"));
        }
        lines.push("8BITMIME".into());
        if self.settings.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if self.settings.offers_starttls(&self.info) {
            lines.push("STARTTLS".into());
        }
        if let Some(mechanisms) = self.auth_offered() {
            lines.push(format!("AUTH {mechanisms}"));
        }
        lines.push("PIPELINING".into());
        lines.push("CHUNKING".into());
        lines.push("BINARYMIME".into());
        lines.push("DSN".into());
        if self.settings.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        lines.push("HELP".into());
        Reply::lines(250, lines)
    }

    pub(super) async fn ehlo(&mut self, arg: Option<String>) -> Step {
        let Some(hostname) = arg else {
            let syntax = if self.settings.protocol == super::Protocol::Lmtp {
                &reply::SYNTAX_LHLO
            } else {
                &reply::SYNTAX_EHLO
            };
            return self.answer(syntax);
        };
        self.reset();
        self.info.extended_smtp = true;
        let planned = self.ehlo_keywords();
        let decided = if self.plugin.has(Hook::Ehlo) {
            self.plugin
                .ehlo(&self.info, &self.envelope, &hostname, &planned)
                .await
        } else {
            Ok(None)
        };
        self.greeted(hostname, decided, planned)
    }

    /// Apply a HELO/EHLO decision: a positive reply greets the client.
    fn greeted(
        &mut self,
        hostname: String,
        decided: Result<Option<Reply>, Reply>,
        default: Reply,
    ) -> Step {
        let reply = self.decided(decided, &default);
        self.info.host_name = reply.is_positive().then_some(hostname);
        self.answer(&reply)
    }
}
