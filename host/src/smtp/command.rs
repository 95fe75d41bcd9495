//! Command lines: framing out of the input buffer and parsing into a verb and
//! its argument. Sans-IO: the session feeds bytes in and gets commands out,
//! so pipelined input and partial lines are handled in one place.

use bytes::{Buf, BytesMut};

use super::reply::{self, Reply};

/// The longest command line read before giving up on it: aiosmtpd's stream
/// limit (RFC 5321 §4.5.3.1.6's 1000 octets + a transparent dot).
pub const MAX_LINE: usize = 1001;
/// The command length limit of RFC 5321 §4.5.3.1.4 (512 with CRLF; aiosmtpd
/// compares the line without CRLF to 512).
pub const COMMAND_LIMIT: usize = 512;

/// One framed line, or the news that one was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its line ending (LF or CRLF).
    Line(BytesMut),
    /// A line longer than [`MAX_LINE`]; it has been read and discarded.
    TooLong,
}

/// Frames command lines. A line ends at LF (as in aiosmtpd; a CR before it
/// is stripped). Only DATA insists on CRLF.
#[derive(Default)]
pub struct Framer {
    /// Inside a line that is already known to be too long.
    discarding: bool,
}

impl Framer {
    /// The next complete line in `buf`, consuming it, or `None` if more bytes
    /// are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            match memchr::memchr(b'\n', buf) {
                Some(i) if self.discarding => {
                    buf.advance(i + 1);
                    self.discarding = false;
                    return Some(Frame::TooLong);
                }
                Some(i) if i > MAX_LINE => {
                    self.discarding = true;
                    continue;
                }
                Some(i) => {
                    let mut line = buf.split_to(i + 1);
                    while matches!(line.last(), Some(b'\r' | b'\n')) {
                        line.truncate(line.len() - 1);
                    }
                    return Some(Frame::Line(line));
                }
                None => {
                    if self.discarding || buf.len() > MAX_LINE {
                        self.discarding = true;
                        buf.clear();
                    }
                    return None;
                }
            }
        }
    }
}

/// The verbs the server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Helo,
    Ehlo,
    Lhlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    Starttls,
    Auth,
    /// RFC 3030 CHUNKING.
    Bdat,
    /// Anything else, upper-cased.
    Unknown(String),
}

impl Verb {
    fn parse(upper: &str) -> Verb {
        match upper {
            "HELO" => Verb::Helo,
            "EHLO" => Verb::Ehlo,
            "LHLO" => Verb::Lhlo,
            "MAIL" => Verb::Mail,
            "RCPT" => Verb::Rcpt,
            "DATA" => Verb::Data,
            "RSET" => Verb::Rset,
            "NOOP" => Verb::Noop,
            "QUIT" => Verb::Quit,
            "VRFY" => Verb::Vrfy,
            "EXPN" => Verb::Expn,
            "HELP" => Verb::Help,
            "STARTTLS" => Verb::Starttls,
            "AUTH" => Verb::Auth,
            "BDAT" => Verb::Bdat,
            other => Verb::Unknown(other.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
            Verb::Lhlo => "LHLO",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP",
            Verb::Quit => "QUIT",
            Verb::Vrfy => "VRFY",
            Verb::Expn => "EXPN",
            Verb::Help => "HELP",
            Verb::Starttls => "STARTTLS",
            Verb::Auth => "AUTH",
            Verb::Bdat => "BDAT",
            Verb::Unknown(v) => v,
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    /// Everything after the first space, trimmed; `None` if nothing.
    pub arg: Option<String>,
}

/// Parse one line (without its line ending). `utf8` allows UTF-8 arguments
/// (SMTPUTF8 enabled); otherwise a non-ASCII argument is refused.
/// `limit` is the length limit for this verb (see [`COMMAND_LIMIT`]).
pub fn parse(line: &[u8], utf8: bool, limit: impl Fn(&Verb) -> usize) -> Result<Command, Reply> {
    if line.is_empty() {
        return Err(reply::BAD_SYNTAX.clone());
    }
    let (verb, arg) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if !verb.is_ascii() {
        return Err(reply::BAD_SYNTAX.clone());
    }
    let verb = Verb::parse(&String::from_utf8_lossy(verb).to_ascii_uppercase());
    let arg = arg.trim_ascii();
    let arg = if arg.is_empty() {
        None
    } else if utf8 {
        // Invalid UTF-8 is kept visible rather than refused, as aiosmtpd's
        // surrogateescape decoding keeps it.
        Some(String::from_utf8_lossy(arg).into_owned())
    } else if arg.is_ascii() {
        Some(String::from_utf8_lossy(arg).into_owned())
    } else {
        return Err(reply::STRICT_ASCII.clone());
    };
    if line.len() > limit(&verb) {
        return Err(reply::LINE_TOO_LONG.clone());
    }
    Ok(Command { verb, arg })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut framer = Framer::default();
        let mut buf = BytesMut::from(input);
        std::iter::from_fn(|| framer.next(&mut buf)).collect()
    }

    #[test]
    fn frames_crlf_and_bare_lf_lines() {
        assert_eq!(
            frames(b"NOOP\r\nQUIT\nRS"),
            vec![
                Frame::Line(BytesMut::from(&b"NOOP"[..])),
                Frame::Line(BytesMut::from(&b"QUIT"[..])),
            ]
        );
    }

    #[test]
    fn overlong_line_is_discarded_whole() {
        let mut input = vec![b'A'; 3000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            frames(&input),
            vec![Frame::TooLong, Frame::Line(BytesMut::from(&b"NOOP"[..]))]
        );
        // The same line arriving in pieces.
        let mut framer = Framer::default();
        let mut buf = BytesMut::from(&[b'A'; 1500][..]);
        assert_eq!(framer.next(&mut buf), None);
        buf.extend_from_slice(&[b'A'; 1500]);
        assert_eq!(framer.next(&mut buf), None);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(framer.next(&mut buf), Some(Frame::TooLong));
    }

    #[test]
    fn parses_verb_and_argument() {
        let c = parse(b"mail FROM:<a@b>  ", false, |_| 512).unwrap();
        assert_eq!(c.verb, Verb::Mail);
        assert_eq!(c.arg.as_deref(), Some("FROM:<a@b>"));
        assert_eq!(parse(b"", false, |_| 512), Err(reply::BAD_SYNTAX.clone()));
        assert_eq!(
            parse("NOOP é".as_bytes(), false, |_| 512),
            Err(reply::STRICT_ASCII.clone())
        );
        assert!(parse("NOOP é".as_bytes(), true, |_| 512).is_ok());
        assert_eq!(
            parse(&[b'N'; 600], false, |_| 512),
            Err(reply::LINE_TOO_LONG.clone())
        );
        assert_eq!(
            parse(b"XYZZY", false, |_| 512).unwrap().verb,
            Verb::Unknown("XYZZY".into())
        );
    }
}
