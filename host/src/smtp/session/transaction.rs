//! The mail transaction: MAIL, RCPT and DATA.

use std::sync::Arc;

use super::{strip_keyword, Ending, Protocol, Session, Step};
use crate::plugin::Hook;
use crate::smtp::address::{self, AddressError};
use crate::smtp::data::DataDecoder;
use crate::smtp::reply::{self, Reply};

impl Session {
    pub(super) async fn mail(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_HELO) || self.need_auth() {
            return Ok(());
        }
        let syntax = if self.info.extended_smtp { &reply::SYNTAX_MAIL_ESMTP } else { &reply::SYNTAX_MAIL };
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
        let options: Vec<String> = params.to_ascii_uppercase().split_whitespace().map(str::to_owned).collect();
        let Some(mut params) = address::parse_params(&options) else {
            return self.answer(syntax);
        };
        let mut take = |key: &str| params.iter().position(|(k, _)| k == key).map(|i| params.remove(i).1);
        if let Some(body) = take("BODY") {
            if !matches!(body.as_deref(), Some("7BIT" | "8BITMIME")) {
                return self.answer(&reply::BODY_INVALID);
            }
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
            self.plugin.mail(&self.info, &self.envelope, &address, &options).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        if reply.is_positive() {
            tracing::info!("sender: {address}");
            self.envelope.mail_from = Some(address);
            self.envelope.mail_options.extend(options);
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
        let syntax = if self.info.extended_smtp { &reply::SYNTAX_RCPT_ESMTP } else { &reply::SYNTAX_RCPT };
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
        let options: Vec<String> = params.to_ascii_uppercase().split_whitespace().map(str::to_owned).collect();
        match address::parse_params(&options) {
            None => return self.answer(syntax),
            Some(params) if !params.is_empty() => return self.answer(&reply::RCPT_PARAMS_UNKNOWN),
            Some(_) => {}
        }
        if self.envelope.rcpt_tos.len() >= self.settings.limits.max_recipients {
            return self.answer(&reply::TOO_MANY_RECIPIENTS);
        }
        let decided = if self.plugin.has(Hook::Rcpt) {
            self.plugin.rcpt(&self.info, &self.envelope, &address, &options).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        if reply.is_positive() {
            tracing::info!("recipient: {address}");
            self.envelope.rcpt_tos.push(address);
            self.envelope.rcpt_options.push(options);
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
        self.push(&reply::START_DATA);
        let mut decoder = DataDecoder::new(self.settings.data_size_limit);
        let bound = self.settings.limits.data_timeout;
        let received = tokio::time::timeout(bound, async {
            loop {
                if let Some(done) = decoder.feed(&mut self.input) {
                    return Ok(done);
                }
                self.fill().await?;
            }
        })
        .await;
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
                self.reset();
                return self.answer(&refusal);
            }
        };
        tracing::info!(bytes = content.len(), "message received");
        self.deliver(content).await
    }

    /// A whole message has arrived: the data hook decides; LMTP answers once
    /// per recipient. The transaction ends whatever the reply.
    pub(super) async fn deliver(&mut self, content: Vec<u8>) -> Step {
        if self.settings.protocol == Protocol::Lmtp {
            return self.deliver_lmtp(content).await;
        }
        let decided = if self.plugin.has(Hook::Data) {
            self.plugin.data(&self.info, &self.envelope, Arc::new(content)).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.reset();
        self.answer(&reply)
    }
}

impl Session {
    /// LMTP (RFC 2033 §4.2): one reply per accepted recipient, in RCPT
    /// order, each the plugin's decision for that recipient.
    async fn deliver_lmtp(&mut self, content: Vec<u8>) -> Step {
        let recipients = self.envelope.rcpt_tos.len();
        let decided = if self.plugin.has(Hook::LmtpData) || self.plugin.has(Hook::Data) {
            self.plugin.lmtp_data(&self.info, &self.envelope, Arc::new(content)).await
        } else {
            Ok(vec![None; recipients])
        };
        let replies: Vec<Reply> = match decided {
            Ok(decided) => decided.into_iter().map(|d| d.unwrap_or_else(|| reply::OK.clone())).collect(),
            Err(failure) => vec![failure; recipients],
        };
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
