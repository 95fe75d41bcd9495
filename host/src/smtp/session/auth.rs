//! AUTH (RFC 4954): the SASL exchange of PLAIN (RFC 4616) and LOGIN runs
//! here; the plugin's `auth` hook decides the credentials. Replies are
//! aiosmtpd 1.4.6's. Credentials are never logged: the command is logged as
//! `AUTH …` and challenge responses not at all.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Ending, Mechanism, Session, Step};
use crate::plugin::Hook;
use crate::smtp::command::Frame;
use crate::smtp::reply::{self, Reply};

/// What the client presented, for the `auth` hook.
#[derive(Debug)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub authzid: Option<String>,
    pub login: Vec<u8>,
    pub password: Vec<u8>,
}

/// The `auth` hook's decision.
pub enum AuthDecision {
    /// Authenticated as this identity.
    Accept(String),
    /// Refused, with this reply or the default 535.
    Reject(Option<Reply>),
}

/// The client's answer to a challenge.
enum Response {
    Data(Vec<u8>),
    /// `*`, or undecodable base64: the reply was sent, the exchange is over.
    Refused,
}

impl Session {
    /// The mechanisms EHLO offers (`LOGIN PLAIN`), or `None` when AUTH is
    /// not offered: no plugin decides it, or TLS is required and absent.
    pub(super) fn auth_offered(&self) -> Option<String> {
        let auth = &self.settings.auth;
        if !self.plugin.has(Hook::Auth)
            || auth.mechanisms.is_empty()
            || (auth.require_tls && self.info.tls.is_none())
        {
            return None;
        }
        let mut names: Vec<&str> = auth.mechanisms.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        Some(names.join(" "))
    }

    pub(super) async fn auth(&mut self, arg: Option<String>) -> Step {
        if self.need_helo(&reply::NEED_EHLO) {
            return Ok(());
        }
        if !self.info.extended_smtp {
            return self.answer(&reply::AUTH_NOT_RECOGNIZED);
        }
        if self.settings.auth.require_tls && self.info.tls.is_none() {
            return self.answer(&reply::AUTH_ENCRYPTION_REQUIRED);
        }
        if self.info.authenticated {
            return self.answer(&reply::AUTH_ALREADY);
        }
        let Some(arg) = arg else {
            return self.answer(&reply::AUTH_NOT_ENOUGH);
        };
        let args: Vec<&str> = arg.split_whitespace().collect();
        if args.len() > 2 {
            return self.answer(&reply::AUTH_TOO_MANY);
        }
        let mechanism = Mechanism::parse(args[0])
            .filter(|m| self.plugin.has(Hook::Auth) && self.settings.auth.mechanisms.contains(m));
        let Some(mechanism) = mechanism else {
            return self.answer(&reply::AUTH_UNKNOWN_MECHANISM);
        };
        let initial = args.get(1).copied();
        let credentials = match mechanism {
            Mechanism::Plain => self.sasl_plain(initial).await?,
            Mechanism::Login => self.sasl_login(initial).await?,
        };
        let Some(credentials) = credentials else {
            return Ok(());
        };
        let decided = self
            .plugin
            .auth(&self.info, &self.envelope, &credentials)
            .await;
        match decided {
            Ok(AuthDecision::Accept(identity)) => {
                tracing::Span::current().record("user", identity.as_str());
                tracing::info!(
                    mechanism = mechanism.name(),
                    "authenticated as {identity:?}"
                );
                self.info.authenticated = true;
                self.info.auth_identity = Some(identity);
                self.answer(&reply::AUTH_SUCCESSFUL)
            }
            Ok(AuthDecision::Reject(reply)) => {
                tracing::info!(mechanism = mechanism.name(), "authentication refused");
                self.answer(reply.as_ref().unwrap_or(&reply::AUTH_INVALID))
            }
            Err(failure) => self.answer(&failure),
        }
    }

    /// PLAIN: `authzid NUL login NUL password`, as the initial response or
    /// after an empty challenge. `None` when the reply was already sent.
    async fn sasl_plain(&mut self, initial: Option<&str>) -> Result<Option<Credentials>, Ending> {
        let blob = match initial {
            Some(initial) => match decode(initial) {
                Some(blob) => blob,
                None => {
                    self.push(&reply::AUTH_BAD_BASE64);
                    return Ok(None);
                }
            },
            None => match self.challenge("").await? {
                Response::Data(blob) => blob,
                Response::Refused => return Ok(None),
            },
        };
        let parts: Vec<&[u8]> = blob.split(|&b| b == 0).collect();
        let [authzid, login, password] = parts[..] else {
            self.push(&reply::AUTH_CANNOT_SPLIT);
            return Ok(None);
        };
        Ok(Some(Credentials {
            mechanism: Mechanism::Plain,
            authzid: (!authzid.is_empty()).then(|| String::from_utf8_lossy(authzid).into_owned()),
            login: login.to_vec(),
            password: password.to_vec(),
        }))
    }

    /// LOGIN: the user name (initial response or first challenge), then the
    /// password, with aiosmtpd's challenges.
    async fn sasl_login(&mut self, initial: Option<&str>) -> Result<Option<Credentials>, Ending> {
        let login = match initial {
            Some(initial) => match decode(initial) {
                Some(login) => login,
                None => {
                    self.push(&reply::AUTH_BAD_BASE64);
                    return Ok(None);
                }
            },
            None => match self.challenge("User Name\0").await? {
                Response::Data(login) => login,
                Response::Refused => return Ok(None),
            },
        };
        let password = match self.challenge("Password\0").await? {
            Response::Data(password) => password,
            Response::Refused => return Ok(None),
        };
        Ok(Some(Credentials {
            mechanism: Mechanism::Login,
            authzid: None,
            login,
            password,
        }))
    }

    /// `334 <base64 challenge>`, then the client's line.
    async fn challenge(&mut self, challenge: &str) -> Result<Response, Ending> {
        // `334 ` keeps its space even when the challenge is empty (RFC 4954 §4).
        let mut line = b"334 ".to_vec();
        line.extend_from_slice(BASE64.encode(challenge).as_bytes());
        line.extend_from_slice(b"\r\n");
        self.output.extend_from_slice(&line);
        let line = match self.read_line().await? {
            Frame::Line(line) => line,
            Frame::TooLong => {
                self.push(&reply::AUTH_BAD_BASE64);
                return Ok(Response::Refused);
            }
        };
        let line = line.trim_ascii();
        if line == b"*" {
            tracing::info!("client aborted AUTH");
            self.push(&reply::AUTH_ABORTED);
            return Ok(Response::Refused);
        }
        match decode_bytes(line) {
            Some(data) => Ok(Response::Data(data)),
            None => {
                self.push(&reply::AUTH_BAD_BASE64);
                Ok(Response::Refused)
            }
        }
    }
}

/// Strict base64, as aiosmtpd's `b64decode(validate=True)`; RFC 4954's `=`
/// stands for an empty initial response.
fn decode(text: &str) -> Option<Vec<u8>> {
    decode_bytes(text.as_bytes())
}

fn decode_bytes(text: &[u8]) -> Option<Vec<u8>> {
    if text == b"=" {
        return Some(Vec::new());
    }
    BASE64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_strict() {
        assert_eq!(super::decode("AGEAYg==").unwrap(), b"\0a\0b");
        assert_eq!(super::decode("=").unwrap(), b"");
        assert!(super::decode("AGEAYg").is_none());
        assert!(super::decode("not base64!").is_none());
    }
}
