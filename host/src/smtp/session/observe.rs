//! What a session reports to the metrics (see [`crate::metrics`]) and the
//! log: recipients, messages received, and how each transaction ended.

use std::sync::Arc;

use super::Session;
use crate::metrics::{self, Outcome};

impl Session {
    /// The tenant a recipient belongs to: the listener's, or by its domain.
    fn tenant_of(&self, address: &str) -> Option<Arc<str>> {
        self.settings
            .tenant
            .clone()
            .or_else(|| self.settings.plugin.tenant_name(address).cloned())
    }

    /// The tenant of the current transaction (see [`metrics::tenant_of_all`]).
    fn transaction_tenant(&self) -> Option<Arc<str>> {
        if self.settings.tenant.is_some() {
            return self.settings.tenant.clone();
        }
        let chain = &self.settings.plugin;
        metrics::tenant_of_all(self.envelope.rcpt_tos.iter().map(|r| chain.tenant_name(r)))
    }

    /// A RCPT reply for a well-formed recipient.
    pub(super) fn count_recipient(&self, address: &str, code: u16) {
        if let Some(m) = metrics::get() {
            m.recipient(&self.settings.name, self.tenant_of(address).as_ref(), code);
        }
    }

    /// A message's content arrived whole.
    pub(super) fn count_received(&mut self, bytes: u64) {
        self.message_bytes = Some(bytes);
        if let Some(m) = metrics::get() {
            m.received(
                &self.settings.name,
                self.transaction_tenant().as_ref(),
                bytes,
            );
        }
    }

    /// The transaction in progress ends: with a final reply (`Some(code)`),
    /// or abandoned (`None`; nothing is counted when no transaction is open).
    /// The sender is cleared so that the reset which follows does not count
    /// it again.
    pub(super) fn end_transaction(&mut self, code: Option<u16>) {
        if self.envelope.mail_from.is_none() {
            return;
        }
        let outcome = code.map_or(Outcome::Abandoned, Outcome::of);
        // The one line per transaction at the default level: who, to whom,
        // how big, and the answer (the per-command lines are at debug).
        let e = &self.envelope;
        tracing::info!(
            queue_id = e.queue_id.as_deref(),
            from = e.mail_from.as_deref(),
            to = e.rcpt_tos.join(",").as_str(),
            bytes = self.message_bytes.take(),
            outcome = outcome.name(),
            code,
            recipients = e.rcpt_tos.len(),
            "transaction ended"
        );
        if let Some(m) = metrics::get() {
            m.transaction(
                &self.settings.name,
                self.transaction_tenant().as_ref(),
                outcome,
            );
        }
        self.envelope.mail_from = None;
    }
}
