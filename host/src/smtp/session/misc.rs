//! RSET, NOOP, QUIT, VRFY, HELP and STARTTLS.

use super::{Ending, Protocol, Session, Step};
use crate::plugin::Hook;
use crate::smtp::address;
use crate::smtp::reply::{self, Reply};

impl Session {
    pub(super) async fn rset(&mut self, arg: Option<String>) -> Step {
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_RSET);
        }
        self.reset();
        let decided = if self.plugin.has(Hook::Rset) {
            self.plugin.rset(&self.info, &self.envelope).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.answer(&reply)
    }

    pub(super) async fn noop(&mut self, arg: Option<String>) -> Step {
        let decided = if self.plugin.has(Hook::Noop) {
            self.plugin
                .noop(&self.info, &self.envelope, arg.as_deref().unwrap_or(""))
                .await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::OK);
        self.answer(&reply)
    }

    pub(super) async fn quit(&mut self, arg: Option<String>) -> Step {
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_QUIT);
        }
        let decided = if self.plugin.has(Hook::Quit) {
            self.plugin.quit(&self.info, &self.envelope).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::BYE);
        self.push(&reply);
        Err(Ending::Close)
    }

    pub(super) async fn vrfy(&mut self, arg: Option<String>) -> Step {
        if self.need_auth() {
            return Ok(());
        }
        let Some(arg) = arg else {
            return self.answer(&reply::SYNTAX_VRFY);
        };
        let address = match address::split_address(&arg) {
            Ok((address, _)) => address,
            Err(_) => return self.answer(&Reply::new(502, format!("Could not VRFY {arg}"))),
        };
        let decided = if self.plugin.has(Hook::Vrfy) {
            self.plugin.vrfy(&self.info, &self.envelope, &address).await
        } else {
            Ok(None)
        };
        let reply = self.decided(decided, &reply::VRFY_DEFAULT);
        self.answer(&reply)
    }

    /// STARTTLS (RFC 3207): `220`, then the session ends and the connection
    /// runs the handshake and a new session (see `Outcome::StartTls`).
    pub(super) fn starttls(&mut self, arg: Option<String>) -> Step {
        if arg.is_some() {
            return self.answer(&reply::SYNTAX_STARTTLS);
        }
        if self.info.tls.is_some() {
            return self.answer(&reply::TLS_ALREADY_ACTIVE);
        }
        if self.settings.tls.is_none() {
            return self.answer(&reply::TLS_NOT_AVAILABLE);
        }
        self.push(&reply::READY_FOR_TLS);
        Err(Ending::StartTls)
    }

    pub(super) fn help(&mut self, arg: Option<String>) -> Step {
        if self.need_auth() {
            return Ok(());
        }
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        let starttls = self.settings.tls.is_some() && !self.settings.implicit_tls;
        let syntax: Vec<(&str, &str, &str)> = [
            ("AUTH", "AUTH <mechanism>", ""),
            ("DATA", "DATA", ""),
            ("EHLO", "EHLO hostname", ""),
            ("HELO", "HELO hostname", ""),
            ("HELP", "HELP [command]", ""),
            ("LHLO", "LHLO hostname", ""),
            ("MAIL", "MAIL FROM: <address>", " [SP <mail-parameters>]"),
            ("NOOP", "NOOP [ignored]", ""),
            ("QUIT", "QUIT", ""),
            ("RCPT", "RCPT TO: <address>", " [SP <mail-parameters>]"),
            ("RSET", "RSET", ""),
            ("STARTTLS", "STARTTLS", ""),
            ("VRFY", "VRFY <address>", ""),
        ]
        .into_iter()
        .filter(|(verb, _, _)| match *verb {
            "EHLO" | "HELO" => !lmtp,
            "LHLO" => lmtp,
            "STARTTLS" => starttls,
            _ => true,
        })
        .collect();
        let mut code = 250;
        if let Some(arg) = arg {
            let wanted = arg.to_ascii_uppercase();
            if let Some((_, text, extended)) = syntax.iter().find(|(verb, _, _)| *verb == wanted) {
                let extended = if self.info.extended_smtp {
                    *extended
                } else {
                    ""
                };
                return self.answer(&Reply::new(250, format!("Syntax: {text}{extended}")));
            }
            code = 501;
        }
        let verbs: Vec<&str> = syntax.iter().map(|(verb, _, _)| *verb).collect();
        self.answer(&Reply::new(
            code,
            format!("Supported commands: {}", verbs.join(" ")),
        ))
    }
}
