//! `wasmtp:smtp/queue`: enqueue the message being delivered into the
//! durable queue (`wit/queue.wit`, `crate::store::Queue`), granted with
//! `grants.queue`. The built-in `queue` plugin is this call and a reply.
//!
//! The message is read from the session's spool by the host and never
//! copied into the plugin; the envelope and session facts are the ones the
//! hook was called with. The call returns only once the backend says the
//! message is durable, so the `250` that follows is never a lie; every
//! other outcome is an error value the plugin answers with a `4xx`.

use std::sync::Arc;

use crate::capability::headers::MessageView;
use crate::plugin::bindings::types;
use crate::plugin::bindings::wasmtp::smtp::queue::{self, Error};
use crate::plugin::host::HostState;
use crate::store::{NewMessage, Queue, StoreError};

/// The transaction a `data` (or `lmtp-data`) hook call is delivering:
/// what `enqueue` stores besides the content.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The session's facts, a JSON object ([`facts`]).
    pub facts: String,
}

impl Delivery {
    pub fn new(s: &types::Session, e: &types::Envelope) -> Delivery {
        Delivery {
            mail_from: e.mail_from.clone().unwrap_or_default(),
            rcpt_to: e.rcpt_tos.clone(),
            facts: facts(s, e).to_string(),
        }
    }
}

/// What a consumer may want to know about where a message came from.
pub fn facts(s: &types::Session, e: &types::Envelope) -> serde_json::Value {
    let client = match s.proxy.as_ref().and_then(|p| p.source.as_ref()) {
        Some(source) => source,
        None => &s.peer,
    };
    serde_json::json!({
        "client": { "address": client.address, "port": client.port },
        "peer": { "address": s.peer.address, "port": s.peer.port },
        "proxied": s.proxy.is_some(),
        "helo": s.host_name,
        "esmtp": s.extended_smtp,
        "lmtp": s.lmtp,
        "listener": s.listener,
        "server": s.server_hostname,
        "session": s.id,
        "tls": s.tls.as_ref().map(|t| serde_json::json!({
            "version": t.version,
            "cipher": t.cipher,
            "sni": t.server_name,
        })),
        "auth": s.auth_identity,
        "mail_options": e.mail_options,
        "rcpt_options": e.rcpt_options,
        "smtputf8": e.smtp_utf8,
    })
}

fn error(e: StoreError) -> Error {
    match e {
        StoreError::Unavailable(m) | StoreError::Invalid(m) => Error::Unavailable(m),
        StoreError::Conflict(m) => Error::Conflict(m),
    }
}

/// The queue's view from one plugin instance.
#[derive(Clone)]
pub struct QueueAccess {
    /// `None` when the server runs without a store (`wasmtp check`).
    pub queue: Option<Queue>,
}

impl HostState {
    /// The message as this plugin reads it (with the header edits made
    /// before its call), its delivery facts and the queue.
    fn pending(&self) -> Result<(Arc<MessageView>, Delivery, Queue), Error> {
        let (Some(content), Some(delivery)) = (&self.content, &self.delivery) else {
            return Err(Error::NoMessage);
        };
        let queue = self
            .queue
            .as_ref()
            .and_then(|q| q.queue.clone())
            .ok_or_else(|| Error::Unavailable("this server has no store".into()))?;
        Ok((content.clone(), delivery.clone(), queue))
    }
}

impl HostState {
    /// The facts, with the notes the chain wrote so far (`"notes"`, an
    /// object) when there are any.
    fn facts_with_notes(&self, facts: String) -> String {
        let Some(shared) = self.capabilities.shared.as_ref() else {
            return facts;
        };
        let notes = shared.notes();
        if notes.is_empty() {
            return facts;
        }
        let Ok(serde_json::Value::Object(mut facts)) = serde_json::from_str(&facts) else {
            return facts;
        };
        let notes: serde_json::Map<String, serde_json::Value> = notes
            .keys()
            .into_iter()
            .filter_map(|k| notes.get(&k).map(|v| (k.clone(), v.into())))
            .collect();
        facts.insert("notes".into(), notes.into());
        serde_json::Value::Object(facts).to_string()
    }
}

impl queue::Host for HostState {
    async fn enqueue(&mut self) -> Result<String, Error> {
        let (content, delivery, queue) = self.pending()?;
        let id = self
            .queue_id
            .clone()
            .unwrap_or_else(crate::logging::queue_id);
        // A message split between tenants is delivered once per tenant, each
        // with the recipients that are its own: one entry each.
        let id = match self.plugin.split_once('/') {
            Some((tenant, _)) => format!("{id}-{tenant}"),
            None => id,
        };
        let message = content
            .read(0, usize::try_from(content.len()).unwrap_or(usize::MAX))
            .map_err(|e| Error::Unavailable(format!("reading the spooled message: {e}")))?;
        let new = NewMessage {
            id: id.clone(),
            mail_from: delivery.mail_from,
            rcpt_to: delivery.rcpt_to,
            facts: self.facts_with_notes(delivery.facts),
            message,
        };
        match tokio::time::timeout_at(self.deadline.into(), queue.enqueue(new)).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(error(e)),
            Err(_) => Err(Error::Timeout),
        }
    }
}
