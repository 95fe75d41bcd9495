//! The DATA decoder: reads the message text up to the end-of-data line,
//! undoes dot-stuffing (RFC 5321 §4.5.2) and enforces the size and line
//! limits. Sans-IO, so the session can feed it whatever the socket delivered.
//!
//! The terminator is `CRLF . CRLF` and nothing else: a line ends only at
//! CRLF, so a bare LF followed by `.` is message content, not the end. That
//! closes the SMTP smuggling hole (a message ending early on `LF . LF` and the
//! rest of its text read as new commands).

use bytes::BytesMut;

use super::command::MAX_LINE;
use super::reply::{self, Reply};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Nominal,
    /// A line exceeded the limit: the rest is read and discarded, then 500.
    TooLong,
    /// The message exceeded the size limit: read and discarded, then 552.
    TooMuch,
}

/// Decodes one message; create a new one for each DATA command.
pub struct DataDecoder {
    limit: Option<usize>,
    state: State,
    /// Bytes received so far, counted as aiosmtpd counts them (each line
    /// with its CRLF and any stuffed dot).
    received: usize,
    /// Inside a line whose beginning was already consumed.
    mid_line: bool,
    /// Length of the current line so far, when `mid_line`.
    line_len: usize,
    content: Vec<u8>,
}

impl DataDecoder {
    /// `limit`: the maximum size in bytes, or `None` for no limit.
    pub fn new(limit: Option<usize>) -> DataDecoder {
        DataDecoder {
            limit,
            state: State::Nominal,
            received: 0,
            mid_line: false,
            line_len: 0,
            content: Vec::new(),
        }
    }

    /// Consume what `buf` holds. `Some` once the end-of-data line has been
    /// read: the content, or the reply refusing it.
    pub fn feed(&mut self, buf: &mut BytesMut) -> Option<Result<Vec<u8>, Reply>> {
        loop {
            let Some(i) = memchr::memmem::find(buf, b"\r\n") else {
                // Keep a trailing CR: it may be the first half of a CRLF.
                let keep = usize::from(buf.last() == Some(&b'\r'));
                let take = buf.len() - keep;
                if take > 0 && (self.mid_line || take > MAX_LINE) {
                    let fragment = buf.split_to(take);
                    self.fragment(&fragment);
                }
                return None;
            };
            let line = buf.split_to(i + 2);
            if !self.mid_line && &line[..] == b".\r\n" {
                return Some(self.finish());
            }
            self.line(&line);
        }
    }

    /// A part of a line that is not yet complete (it is already too long to
    /// keep, or continues one that is).
    fn fragment(&mut self, fragment: &[u8]) {
        self.count(fragment.len());
        self.line_len += fragment.len();
        self.mid_line = true;
        if self.line_len > MAX_LINE {
            self.fail(State::TooLong);
        }
        if self.state == State::Nominal {
            self.content.extend_from_slice(fragment);
        }
    }

    /// A line ending in CRLF (possibly the end of a fragmented one).
    fn line(&mut self, line: &[u8]) {
        let starts_line = !self.mid_line;
        self.count(line.len());
        // aiosmtpd counts the CRLF: 999 octets of text is the longest line.
        let length = self.line_len + line.len();
        self.mid_line = false;
        self.line_len = 0;
        if length > MAX_LINE {
            self.fail(State::TooLong);
        }
        if self.state == State::Nominal {
            let unstuffed = if starts_line && line.first() == Some(&b'.') {
                &line[1..]
            } else {
                line
            };
            self.content.extend_from_slice(unstuffed);
        }
    }

    fn count(&mut self, n: usize) {
        self.received += n;
        if self.limit.is_some_and(|limit| self.received > limit) {
            self.fail(State::TooMuch);
        }
    }

    /// The first problem wins, as in aiosmtpd; the content is dropped at once
    /// so a refused message holds no memory while the client finishes it.
    fn fail(&mut self, state: State) {
        if self.state == State::Nominal {
            self.state = state;
            self.content = Vec::new();
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, Reply> {
        match self.state {
            State::Nominal => Ok(std::mem::take(&mut self.content)),
            State::TooLong => Err(reply::DATA_LINE_TOO_LONG.clone()),
            State::TooMuch => Err(reply::TOO_MUCH_DATA.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(limit: Option<usize>, chunks: &[&[u8]]) -> (Option<Result<Vec<u8>, Reply>>, Vec<u8>) {
        let mut d = DataDecoder::new(limit);
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            if let Some(done) = d.feed(&mut buf) {
                return (Some(done), buf.to_vec());
            }
        }
        (None, buf.to_vec())
    }

    #[test]
    fn unstuffs_and_stops_at_the_terminator_only() {
        let (done, rest) = decode(
            None,
            &[b"Subject: x\r\n\r\n..dot\r\nbare\n.\nstill\r\n.\r\nQUIT\r\n"],
        );
        assert_eq!(
            done,
            Some(Ok(b"Subject: x\r\n\r\n.dot\r\nbare\n.\nstill\r\n".to_vec()))
        );
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn terminator_split_across_reads() {
        let (done, _) = decode(None, &[b"a\r", b"\n.", b"\r", b"\n"]);
        assert_eq!(done, Some(Ok(b"a\r\n".to_vec())));
    }

    #[test]
    fn smuggling_attempt_is_content() {
        // Bare LFs never end a line: all of this is one line of content.
        let (done, _) = decode(None, &[b"a\n.\nMAIL FROM:<x@y>\n.\r\n"]);
        assert_eq!(done, None);
        let (done, _) = decode(None, &[b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n"]);
        assert_eq!(done, Some(Ok(b"a\r\n\nMAIL FROM:<x@y>\r\n".to_vec())));
    }

    #[test]
    fn too_much_data_is_read_to_the_end_then_refused() {
        let (done, rest) = decode(Some(10), &[b"0123456789\r\nmore\r\n.\r\nNOOP\r\n"]);
        assert_eq!(done, Some(Err(reply::TOO_MUCH_DATA.clone())));
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn long_lines() {
        let ok = vec![b'x'; MAX_LINE - 2];
        let (done, _) = decode(None, &[&ok, b"\r\n.\r\n"]);
        assert_eq!(done.unwrap().unwrap().len(), MAX_LINE);
        let long = vec![b'x'; MAX_LINE - 1];
        let (done, _) = decode(None, &[&long[..600], &long[600..], b"\r\n.\r\n"]);
        assert_eq!(done, Some(Err(reply::DATA_LINE_TOO_LONG.clone())));
        let huge = vec![b'x'; 100_000];
        let (done, _) = decode(None, &[&huge, b"\r\n.\r\n"]);
        assert_eq!(done, Some(Err(reply::DATA_LINE_TOO_LONG.clone())));
    }
}
