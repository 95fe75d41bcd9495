//! SMTP replies as data: a code and text, with the replies the host itself
//! sends named here. The texts are aiosmtpd 1.4.6's, so that clients and
//! tests written against aiosmtpd see the same dialog.

use std::borrow::Cow;
use std::fmt;

/// A reply: a three-digit code and its text. Lines of a multi-line reply are
/// separated by `\n` in `text`; [`Reply::write_to`] frames them as
/// `250-first\r\n250 last\r\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn fixed(code: u16, text: &'static str) -> Reply {
        Reply {
            code,
            text: Cow::Borrowed(text),
        }
    }

    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// A multi-line reply from its lines.
    pub fn lines<I, S>(code: u16, lines: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut text = String::new();
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(line.as_ref());
        }
        Reply {
            code,
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 421 replies end the session (RFC 5321 §3.8).
    pub fn closes_connection(&self) -> bool {
        self.code == 421
    }

    pub fn text_lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }

    /// Append the wire form of the reply to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { b'-' } else { b' ' };
            out.extend_from_slice(itoa3(self.code).as_slice());
            if line.is_empty() && sep == b' ' {
                // A bare code: `250\r\n`, not `250 \r\n`.
            } else {
                out.push(sep);
                out.extend_from_slice(line.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn itoa3(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text.replace('\n', " / "))
    }
}

pub static OK: Reply = Reply::fixed(250, "OK");
pub static BYE: Reply = Reply::fixed(221, "Bye");
pub static START_DATA: Reply = Reply::fixed(354, "End data with <CR><LF>.<CR><LF>");
pub static VRFY_DEFAULT: Reply = Reply::fixed(
    252,
    "Cannot VRFY user, but will accept message and attempt delivery",
);

pub static BAD_SYNTAX: Reply = Reply::fixed(500, "Error: bad syntax");
pub static LINE_TOO_LONG: Reply = Reply::fixed(500, "Command line too long");
pub static STRICT_ASCII: Reply = Reply::fixed(500, "Error: strict ASCII mode");
pub static TOO_MANY_UNKNOWN: Reply =
    Reply::fixed(502, "5.5.1 Too many unrecognized commands, goodbye.");
pub static DATA_LINE_TOO_LONG: Reply = Reply::fixed(500, "Line too long (see RFC5321 4.5.3.1.6)");
pub static TOO_MUCH_DATA: Reply = Reply::fixed(552, "Error: Too much mail data");
/// The message could not be kept (the spool is full or gone): try later.
pub static LOCAL_ERROR: Reply =
    Reply::fixed(451, "Requested action aborted: local error in processing");
pub static SIZE_EXCEEDED: Reply = Reply::fixed(
    552,
    "Error: message size exceeds fixed maximum message size",
);

pub static SYNTAX_HELO: Reply = Reply::fixed(501, "Syntax: HELO hostname");
pub static SYNTAX_EHLO: Reply = Reply::fixed(501, "Syntax: EHLO hostname");
pub static SYNTAX_LHLO: Reply = Reply::fixed(501, "Syntax: LHLO hostname");
pub static SYNTAX_QUIT: Reply = Reply::fixed(501, "Syntax: QUIT");
pub static SYNTAX_RSET: Reply = Reply::fixed(501, "Syntax: RSET");
pub static SYNTAX_DATA: Reply = Reply::fixed(501, "Syntax: DATA");
pub static SYNTAX_VRFY: Reply = Reply::fixed(501, "Syntax: VRFY <address>");
pub static SYNTAX_STARTTLS: Reply = Reply::fixed(501, "Syntax: STARTTLS");
pub static SYNTAX_MAIL: Reply = Reply::fixed(501, "Syntax: MAIL FROM: <address>");
pub static SYNTAX_MAIL_ESMTP: Reply =
    Reply::fixed(501, "Syntax: MAIL FROM: <address> [SP <mail-parameters>]");
pub static SYNTAX_RCPT: Reply = Reply::fixed(501, "Syntax: RCPT TO: <address>");
pub static SYNTAX_RCPT_ESMTP: Reply =
    Reply::fixed(501, "Syntax: RCPT TO: <address> [SP <mail-parameters>]");

pub static NEED_HELO: Reply = Reply::fixed(503, "Error: send HELO first");
pub static NEED_EHLO: Reply = Reply::fixed(503, "Error: send EHLO first");
pub static NEED_LHLO: Reply = Reply::fixed(503, "Error: send LHLO first");
pub static NEED_MAIL: Reply = Reply::fixed(503, "Error: need MAIL command");
pub static NEED_RCPT: Reply = Reply::fixed(503, "Error: need RCPT command");
pub static NESTED_MAIL: Reply = Reply::fixed(503, "Error: nested MAIL command");
pub static MALFORMED_ADDRESS: Reply = Reply::fixed(553, "5.1.3 Error: malformed address");
pub static BODY_INVALID: Reply = Reply::fixed(501, "Error: BODY can only be one of 7BIT, 8BITMIME");
pub const SMTPUTF8_ARGS: Reply = Reply::fixed(501, "Error: SMTPUTF8 takes no arguments");
pub const SMTPUTF8_DISABLED: Reply = Reply::fixed(501, "Error: SMTPUTF8 disabled");
pub static MAIL_PARAMS_UNKNOWN: Reply = Reply::fixed(
    555,
    "MAIL FROM parameters not recognized or not implemented",
);
pub static RCPT_PARAMS_UNKNOWN: Reply =
    Reply::fixed(555, "RCPT TO parameters not recognized or not implemented");

pub static EXPN_NOT_IMPLEMENTED: Reply = Reply::fixed(502, "EXPN not implemented");
pub static TLS_NOT_AVAILABLE: Reply = Reply::fixed(454, "TLS not available");
pub static AUTH_NOT_RECOGNIZED: Reply = Reply::fixed(500, "Error: command 'AUTH' not recognized");
pub static AUTH_ENCRYPTION_REQUIRED: Reply = Reply::fixed(
    538,
    "5.7.11 Encryption required for requested authentication mechanism",
);
pub static AUTH_ALREADY: Reply = Reply::fixed(503, "Already authenticated");
pub static AUTH_NOT_ENOUGH: Reply = Reply::fixed(501, "Not enough value");
pub static AUTH_TOO_MANY: Reply = Reply::fixed(501, "Too many values");
pub static AUTH_UNKNOWN_MECHANISM: Reply =
    Reply::fixed(504, "5.5.4 Unrecognized authentication type");
pub static AUTH_SUCCESSFUL: Reply = Reply::fixed(235, "2.7.0 Authentication successful");
pub static AUTH_INVALID: Reply = Reply::fixed(535, "5.7.8 Authentication credentials invalid");
pub static AUTH_ABORTED: Reply = Reply::fixed(501, "5.7.0 Auth aborted");
pub static AUTH_BAD_BASE64: Reply = Reply::fixed(501, "5.5.2 Can't decode base64");
pub static AUTH_CANNOT_SPLIT: Reply = Reply::fixed(501, "5.5.2 Can't split auth value");
pub static AUTH_REQUIRED: Reply = Reply::fixed(530, "5.7.0 Authentication required");

pub static READY_FOR_TLS: Reply = Reply::fixed(220, "Ready to start TLS");
pub static STARTTLS_FIRST: Reply = Reply::fixed(530, "Must issue a STARTTLS command first");
/// After the starttls hook refused the TLS session (aiosmtpd's text).
pub static INSECURE: Reply = Reply::fixed(554, "Command refused due to lack of security");
/// STARTTLS inside TLS; aiosmtpd would start a second handshake.
pub static TLS_ALREADY_ACTIVE: Reply = Reply::fixed(503, "5.5.1 Error: TLS already active");

/// The reply to a session whose plugin failed, when its `exception` hook
/// does not choose another. aiosmtpd answers `500 Error: (Exception) ...`;
/// a plugin failure is the server's problem, not the client's, so wasmtp
/// answers with a temporary failure the client will retry.
pub static PLUGIN_FAILED: Reply = Reply::fixed(451, "4.3.0 Error: plugin failed");
/// The reply when a plugin whose failure policy is `reject` fails.
pub static PLUGIN_FAILED_REJECT: Reply = Reply::fixed(554, "5.3.0 Error: plugin failed");
/// The reply when a plugin whose failure policy is `disconnect` fails; the
/// connection is closed after it.
pub static PLUGIN_FAILED_DISCONNECT: Reply =
    Reply::fixed(421, "4.3.0 Error: plugin failed, closing connection");
/// The reply to a recipient whose domain no tenant of the listener serves.
pub static NO_TENANT: Reply = Reply::fixed(550, "5.1.2 Error: recipient domain not served here");
/// The reply to a connection the server cannot serve right now.
/// The idle timeout (aiosmtpd closes silently; RFC 5321 §4.5.3.2 prefers a 421).
pub static TIMEOUT: Reply = Reply::fixed(421, "4.4.2 Timeout, closing connection");
/// A DATA or BDAT transfer ran past the listener's `data_timeout`.
pub static DATA_TIMEOUT: Reply = Reply::fixed(
    421,
    "4.4.2 Message transfer took too long, closing connection",
);
/// `max_recipients` reached (RFC 5321 §4.5.3.1.10 says 452, RFC 3463 4.5.3).
pub static TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3 Error: too many recipients");
pub static SHUTTING_DOWN: Reply =
    Reply::fixed(421, "4.3.2 Service shutting down, closing connection");

/// aiosmtpd's `command_call_limit` reply; the connection is then closed.
pub fn too_many_calls(verb: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {verb} sent too many times"))
}

/// BDAT's syntax (RFC 3030 §2).
pub static SYNTAX_BDAT: Reply = Reply::fixed(501, "Syntax: BDAT <size> [LAST]");
pub static BDAT_AND_DATA: Reply = Reply::fixed(
    503,
    "5.5.1 Error: BDAT and DATA cannot be mixed in one transaction",
);
pub static BINARYMIME_NEEDS_BDAT: Reply =
    Reply::fixed(503, "5.5.1 Error: BODY=BINARYMIME requires BDAT");
pub static RET_INVALID: Reply = Reply::fixed(501, "5.5.4 Error: RET can only be one of FULL, HDRS");
pub static ENVID_INVALID: Reply = Reply::fixed(
    501,
    "5.5.4 Error: ENVID must be xtext of at most 100 characters",
);
pub static NOTIFY_INVALID: Reply = Reply::fixed(
    501,
    "5.5.4 Error: NOTIFY can only be NEVER or a list of SUCCESS, FAILURE, DELAY",
);
pub static ORCPT_INVALID: Reply = Reply::fixed(501, "5.5.4 Error: ORCPT must be addr-type;xtext");

/// A BDAT chunk that is not the last, received.
pub fn chunk_received(size: u64) -> Reply {
    Reply::new(250, format!("{size} octets received"))
}

/// The reply with an RFC 3463 enhanced status code on each line, for a
/// session where ENHANCEDSTATUSCODES is in force: the reply's own if it
/// has one, else the usual one for its code after `verb`. 1xx and 3xx
/// replies (AUTH challenges, 354) carry none.
pub fn enhance(reply: &Reply, verb: &str) -> Reply {
    if !matches!(reply.code / 100, 2 | 4 | 5) || has_enhanced(&reply.text) {
        return reply.clone();
    }
    let code = match (reply.code, verb) {
        (250, "MAIL") => "2.1.0",
        (250, "RCPT") => "2.1.5",
        (252, _) => "2.5.0",
        (code, _) if code / 100 == 2 => "2.0.0",
        (421, _) => "4.3.0",
        (450, _) => "4.2.0",
        (451, _) => "4.3.0",
        (452, "RCPT") => "4.5.3",
        (452, _) => "4.3.1",
        (454, _) => "4.7.0",
        (code, _) if code / 100 == 4 => "4.0.0",
        (500, _) => "5.5.2",
        (501 | 504 | 555, _) => "5.5.4",
        (502 | 503, _) => "5.5.1",
        (530, _) => "5.7.0",
        (535, _) => "5.7.8",
        (538, _) => "5.7.11",
        (550, "RCPT") => "5.1.1",
        (552, _) => "5.3.4",
        (553, _) => "5.1.3",
        (554, _) => "5.7.0",
        _ => "5.0.0",
    };
    Reply::lines(
        reply.code,
        reply.text_lines().map(|line| {
            if line.is_empty() {
                code.to_owned()
            } else {
                format!("{code} {line}")
            }
        }),
    )
}

/// Whether `text` starts with `class.subject.detail`.
fn has_enhanced(text: &str) -> bool {
    let first = text.split([' ', '\n']).next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

pub fn unknown_command(verb: &str) -> Reply {
    Reply::new(500, format!("Error: command \"{verb}\" not recognized"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(wire(&enhance(&OK, "MAIL")), "250 2.1.0 OK\r\n");
        assert_eq!(wire(&enhance(&OK, "RCPT")), "250 2.1.5 OK\r\n");
        assert_eq!(
            wire(&enhance(&MALFORMED_ADDRESS, "MAIL")),
            "553 5.1.3 Error: malformed address\r\n"
        );
        assert_eq!(
            wire(&enhance(&START_DATA, "DATA")),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(
            wire(&enhance(&Reply::lines(502, ["a", "b"]), "X")),
            "502-5.5.1 a\r\n502 5.5.1 b\r\n"
        );
    }

    #[test]
    fn single_and_multi_line() {
        assert_eq!(wire(&OK), "250 OK\r\n");
        assert_eq!(
            wire(&Reply::lines(250, ["mx", "SIZE 10", "HELP"])),
            "250-mx\r\n250-SIZE 10\r\n250 HELP\r\n"
        );
        assert_eq!(wire(&Reply::new(250, "")), "250\r\n");
    }
}
