//! The mail transaction: MAIL, RCPT and DATA.

use std::sync::Arc;

use super::{Ending, Protocol, Session, Step, strip_keyword};
use crate::plugin::Hook;
use crate::smtp::address::{self, AddressError};
use crate::smtp::data::DataDecoder;
use crate::smtp::dsn;
use crate::smtp::reply::{self, Reply};
use crate::smtp::spool::{Content, Spool, SpoolSettings};

impl Session {
    pub(super) async fn mail(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) || self.need_auth() {
            return Ok(());
        }
        let syntax = if self.info.extended_smtp {
            &reply::SYNTAX_MAIL_ESMTP
        } else {
            &reply::SYNTAX_MAIL
        };
        let Some(rest) = arg.as_deref().and_then(|a| strip_keyword(a, "FROM:")) else {
            return self.answer(syntax);
        };
        let (address, params) = match address::split_address(rest) {
            Ok(parsed) => parsed,
            Err(AddressError::Empty) => return self.answer(syntax),
            Err(AddressError::Malformed) => return self.answer(&reply::MALFORMED_ADDRESS),
        };
        if !self.info.extended_smtp && !params.is_empty() {
            return self.answer(syntax);
        }
        if self.envelope.mail_from.is_some() {
            return self.answer(&reply::NESTED_MAIL);
        }
        let options = options_of(params);
        let Some(mut params) = address::parse_params(&options) else {
            return self.answer(syntax);
        };
        let mut take = |key: &str| {
            params
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| params.remove(i).1)
        };
        if let Some(body) = take("BODY") {
            // BINARYMIME with CHUNKING (RFC 3030 §3); the refusal keeps
            // aiosmtpd's text, which names the two it knows.
            if !matches!(body.as_deref(), Some("7BIT" | "8BITMIME" | "BINARYMIME")) {
                return self.answer(&reply::BODY_INVALID);
            }
        }
        if let Some(ret) = take("RET")
            && !dsn::valid_ret(ret.as_deref())
        {
            return self.answer(&reply::RET_INVALID);
        }
        if let Some(envid) = take("ENVID")
            && !dsn::valid_envid(envid.as_deref())
        {
            return self.answer(&reply::ENVID_INVALID);
        }
        let smtputf8 = match take("SMTPUTF8") {
            Some(Some(_)) => return self.answer(&reply::SMTPUTF8_ARGS),
            Some(None) if !self.settings.smtputf8 => return self.answer(&reply::SMTPUTF8_DISABLED),
            Some(None) => true,
            None => false,
        };
        self.envelope.smtp_utf8 = smtputf8;
        if let Some(size) = take("SIZE") {
            let Some(size) = size.filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
                return self.answer(syntax);
            };
            let too_big = match (size.parse::<u128>(), self.settings.data_size_limit) {
                (Ok(size), Some(limit)) => size > limit as u128,
                (Err(_), Some(_)) => true,
                (_, None) => false,
            };
            if too_big {
                return self.answer(&reply::SIZE_EXCEEDED);
            }
        }
        if !params.is_empty() {
            return self.answer(&reply::MAIL_PARAMS_UNKNOWN);
        }
        let decided = if self.plugin.has(Hook::Mail) {
            self.plugin
                .mail(&self.info, &self.envelope, &address, &options)
                .await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        let edits = self.plugin.take_envelope_edits();
        if reply.is_positive() {
            let queue_id = crate::logging::queue_id();
            tracing::debug!(queue_id, "sender: {address}");
            self.envelope.queue_id = Some(queue_id);
            self.envelope.mail_from = Some(address);
            self.envelope.mail_options.extend(options);
            self.apply_envelope_edits(&edits);
        }
        self.answer(&reply)
    }

    pub(super) async fn rcpt(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) || self.need_auth() {
            return Ok(());
        }
        if self.envelope.mail_from.is_none() {
            return self.answer(&reply::NEED_MAIL);
        }
        let syntax = if self.info.extended_smtp {
            &reply::SYNTAX_RCPT_ESMTP
        } else {
            &reply::SYNTAX_RCPT
        };
        let Some(rest) = arg.as_deref().and_then(|a| strip_keyword(a, "TO:")) else {
            return self.answer(syntax);
        };
        let (address, params) = match address::split_address(rest) {
            Ok(parsed) => parsed,
            Err(AddressError::Empty) => return self.answer(syntax),
            Err(AddressError::Malformed) => return self.answer(&reply::MALFORMED_ADDRESS),
        };
        if !self.info.extended_smtp && !params.is_empty() {
            return self.answer(syntax);
        }
        let options = options_of(params);
        let Some(mut params) = address::parse_params(&options) else {
            return self.answer(syntax);
        };
        let mut take = |key: &str| {
            params
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| params.remove(i).1)
        };
        if let Some(notify) = take("NOTIFY")
            && !dsn::valid_notify(notify.as_deref())
        {
            return self.answer(&reply::NOTIFY_INVALID);
        }
        if let Some(orcpt) = take("ORCPT")
            && !dsn::valid_orcpt(orcpt.as_deref())
        {
            return self.answer(&reply::ORCPT_INVALID);
        }
        if !params.is_empty() {
            return self.answer(&reply::RCPT_PARAMS_UNKNOWN);
        }
        if self.envelope.rcpt_tos.len() >= self.settings.limits.max_recipients {
            return self.answer(&reply::TOO_MANY_RECIPIENTS);
        }
        let decided = if self.plugin.has(Hook::Rcpt) {
            self.plugin
                .rcpt(&self.info, &self.envelope, &address, &options)
                .await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.count_recipient(&address, reply.code);
        let edits = self.plugin.take_envelope_edits();
        if reply.is_positive() {
            tracing::debug!(
                queue_id = self.envelope.queue_id.as_deref(),
                "recipient: {address}"
            );
            self.envelope.rcpt_tos.push(address);
            self.envelope.rcpt_options.push(options);
            self.apply_envelope_edits(&edits);
        }
        self.answer(&reply)
    }

    pub(super) async fn data(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) || self.need_auth() {
            return Ok(());
        }
        if self.envelope.rcpt_tos.is_empty() {
            return self.answer(&reply::NEED_RCPT);
        }
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_DATA);
        }
        if self.chunks.is_some() {
            return self.answer(&reply::BDAT_AND_DATA);
        }
        if self
            .envelope
            .mail_options
            .iter()
            .any(|o| o == "BODY=BINARYMIME")
        {
            return self.answer(&reply::BINARYMIME_NEEDS_BDAT);
        }
        self.push(&reply::START_DATA);
        let mut decoder =
            DataDecoder::new(self.settings.data_size_limit, self.settings.spool.clone());
        let bound = self.settings.limits.data_timeout;
        self.receiving = true;
        let received = tokio::time::timeout(bound, async {
            loop {
                if let Some(done) = decoder.feed(&mut self.input) {
                    return Ok(done);
                }
                self.fill().await?;
            }
        })
        .await;
        self.receiving = false;
        let received = match received {
            Ok(Ok(received)) => received,
            Ok(Err(ending)) => return Err(ending),
            Err(_elapsed) => {
                tracing::info!("DATA took longer than {bound:?}, closing");
                self.push(&reply::DATA_TIMEOUT);
                return Err(Ending::Close);
            }
        };
        let content = match received {
            Ok(content) => content,
            Err(refusal) => {
                self.end_transaction(Some(refusal.code));
                self.reset();
                return self.answer(&refusal);
            }
        };
        tracing::debug!(
            queue_id = self.envelope.queue_id.as_deref(),
            bytes = content.len(),
            "message received"
        );
        self.count_received(content.len());
        self.deliver(content).await
    }

    /// A whole message has arrived: the data hook decides; LMTP answers once
    /// per recipient. The transaction ends whatever the reply.
    pub(super) async fn deliver(&mut self, content: Content) -> Step {
        if self.settings.protocol == Protocol::Lmtp {
            return self.deliver_lmtp(content).await;
        }
        let decided = if self.plugin.has(Hook::Data) {
            self.plugin
                .data(&self.info, &self.envelope, Arc::new(content))
                .await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.end_transaction(Some(reply.code));
        self.reset();
        self.answer(&reply)
    }
}

impl Session {
    /// The envelope edits of an accepted MAIL or RCPT's plugins.
    fn apply_envelope_edits(&mut self, edits: &[crate::capability::envelope::Op]) {
        for op in edits {
            tracing::debug!(
                queue_id = self.envelope.queue_id.as_deref(),
                "envelope edited by a plugin: {op:?}"
            );
            crate::capability::envelope::apply(&mut self.envelope, op);
        }
    }

    /// LMTP (RFC 2033 §4.2): one reply per accepted recipient, in RCPT
    /// order, each the plugin's decision for that recipient.
    async fn deliver_lmtp(&mut self, content: Content) -> Step {
        let recipients = self.envelope.rcpt_tos.len();
        let decided = if self.plugin.has(Hook::LmtpData) || self.plugin.has(Hook::Data) {
            self.plugin
                .lmtp_data(&self.info, &self.envelope, Arc::new(content))
                .await
        } else {
            Ok(vec![None; recipients])
        };
        let replies: Vec<Reply> = match decided {
            Ok(decided) => decided
                .into_iter()
                .map(|d| d.unwrap_or_else(|| reply::OK.clone()))
                .collect(),
            Err(failure) => vec![failure; recipients],
        };
        // Accepted only when every recipient was.
        self.end_transaction(Some(
            replies
                .iter()
                .map(|r| r.code)
                .find(|c| c / 100 != 2)
                .unwrap_or(250),
        ));
        let rcpts = std::mem::take(&mut self.envelope.rcpt_tos);
        for (rcpt, reply) in rcpts.iter().zip(&replies) {
            tracing::info!("LMTP {rcpt}: {}", reply.code);
        }
        self.reset();
        let mut closing = false;
        for reply in &replies {
            self.push(reply);
            closing |= reply.closes_connection();
        }
        if closing { Err(Ending::Close) } else { Ok(()) }
    }
}

/// MAIL/RCPT parameters as the plugins get them: keys upper-cased, as
/// aiosmtpd gives them, and values too, except ENVID's and ORCPT's, whose
/// case belongs to the original message (RFC 3461).
fn options_of(params: &str) -> Vec<String> {
    params
        .split_whitespace()
        .map(|param| match param.split_once('=') {
            Some((key, value))
                if key.eq_ignore_ascii_case("ENVID") || key.eq_ignore_ascii_case("ORCPT") =>
            {
                format!("{}={value}", key.to_ascii_uppercase())
            }
            _ => param.to_ascii_uppercase(),
        })
        .collect()
}

/// A message arriving in BDAT chunks.
pub(super) struct Chunks {
    /// The content so far; `None` once the message is refused.
    content: Option<Spool>,
    /// Bytes received, kept or not.
    received: u64,
    /// Why the message is refused (the rest is read and dropped).
    refusal: Option<&'static Reply>,
}

impl Chunks {
    fn new(spool: Arc<SpoolSettings>) -> Chunks {
        Chunks {
            content: Some(Spool::new(spool)),
            received: 0,
            refusal: None,
        }
    }

    fn refuse(&mut self, refusal: &'static Reply) {
        if self.refusal.is_none() {
            self.refusal = Some(refusal);
            self.content = None;
        }
    }

    fn keep(&mut self, bytes: &[u8], limit: Option<u64>) {
        self.received += bytes.len() as u64;
        if limit.is_some_and(|limit| self.received > limit) {
            self.refuse(&reply::TOO_MUCH_DATA);
        }
        if let Some(spool) = &mut self.content
            && let Err(e) = spool.write(bytes)
        {
            tracing::error!("can't spool the message: {e}");
            self.refuse(&reply::LOCAL_ERROR);
        }
    }
}

/// `BDAT <size> [LAST]` → (size, last).
fn parse_bdat(arg: &str) -> Option<(u64, bool)> {
    let mut words = arg.split_ascii_whitespace();
    let size = words.next()?;
    if !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size = size.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}

impl Session {
    /// BDAT (RFC 3030): `size` octets follow the command line, binary, with
    /// no dot-stuffing and no terminator. They are read whatever the reply
    /// — before it — so that a refused chunk is never taken for commands.
    /// Pipelined chunks and commands interleave in the one input buffer.
    pub(super) async fn bdat(&mut self, arg: Option<String>) -> Step {
        let Some((size, last)) = arg.as_deref().and_then(parse_bdat) else {
            return self.answer(&reply::SYNTAX_BDAT);
        };
        let refusal = if self.info.host_name.is_none() {
            Some(&reply::NEED_HELO)
        } else if self.settings.auth.required && !self.info.authenticated {
            Some(&reply::AUTH_REQUIRED)
        } else if self.envelope.mail_from.is_none() {
            Some(&reply::NEED_MAIL)
        } else if self.envelope.rcpt_tos.is_empty() {
            Some(&reply::NEED_RCPT)
        } else {
            None
        };
        let limit = self.settings.data_size_limit.map(|l| l as u64);
        let mut chunks = if refusal.is_none() {
            let spool = &self.settings.spool;
            self.chunks
                .take()
                .or_else(|| Some(Chunks::new(spool.clone())))
        } else {
            None
        };
        let bound = self.settings.limits.data_timeout;
        self.receiving = true;
        let read = tokio::time::timeout(bound, async {
            let mut remaining = size;
            loop {
                let take = remaining.min(self.input.len() as u64) as usize;
                let bytes = self.input.split_to(take);
                remaining -= take as u64;
                if let Some(chunks) = chunks.as_mut() {
                    chunks.keep(&bytes, limit);
                }
                if remaining == 0 {
                    return Ok(());
                }
                self.fill().await?;
            }
        })
        .await;
        self.receiving = false;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(ending)) => return Err(ending),
            Err(_elapsed) => {
                tracing::info!("BDAT took longer than {bound:?}, closing");
                self.push(&reply::DATA_TIMEOUT);
                return Err(Ending::Close);
            }
        }
        if let Some(refusal) = refusal {
            return self.answer(refusal);
        }
        let chunks = chunks.expect("kept when not refused");
        if let Some(refusal) = chunks.refusal {
            // RFC 3030 §2: a failed chunk fails the transaction.
            self.end_transaction(Some(refusal.code));
            self.reset();
            return self.answer(refusal);
        }
        if !last {
            self.chunks = Some(chunks);
            return self.answer(&reply::chunk_received(size));
        }
        let content = match chunks.content.map(Spool::finish) {
            Some(Ok(content)) => content,
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::error!("can't spool the message: {e}");
                }
                self.end_transaction(Some(reply::LOCAL_ERROR.code));
                self.reset();
                return self.answer(&reply::LOCAL_ERROR);
            }
        };
        tracing::debug!(
            queue_id = self.envelope.queue_id.as_deref(),
            bytes = content.len(),
            "message received (BDAT)"
        );
        self.count_received(content.len());
        self.deliver(content).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bdat_arguments() {
        assert_eq!(super::parse_bdat("10"), Some((10, false)));
        assert_eq!(super::parse_bdat("0 last"), Some((0, true)));
        assert_eq!(super::parse_bdat("10 LAST x"), None);
        assert_eq!(super::parse_bdat("-1"), None);
        assert_eq!(super::parse_bdat("99999999999999999999999"), None);
        assert_eq!(super::parse_bdat("10 FIRST"), None);
    }

    #[test]
    fn dsn_values_keep_their_case() {
        assert_eq!(
            super::options_of("ret=hdrs envid=Q+2Bx orcpt=rfc822;Bart@Example.com notify=never"),
            vec![
                "RET=HDRS",
                "ENVID=Q+2Bx",
                "ORCPT=rfc822;Bart@Example.com",
                "NOTIFY=NEVER"
            ]
        );
    }
}
