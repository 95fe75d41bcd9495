//! The DATA decoder: reads the message text up to the end-of-data line,
//! undoes dot-stuffing (RFC 5321 §4.5.2) and enforces the size and line
//! limits. Sans-IO, so the session can feed it whatever the socket delivered.
//!
//! The terminator is `CRLF . CRLF` and nothing else: a line ends only at
//! CRLF, so a bare LF followed by `.` is message content, not the end. That
//! closes the SMTP smuggling hole (a message ending early on `LF . LF` and the
//! rest of its text read as new commands).

use std::sync::Arc;

use bytes::BytesMut;

use super::command::MAX_LINE;
use super::reply::{self, Reply};
use super::spool::{Content, Spool, SpoolSettings};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Nominal,
    /// A line exceeded the limit: the rest is read and discarded, then 500.
    TooLong,
    /// The message exceeded the size limit: read and discarded, then 552.
    TooMuch,
    /// The spool could not take it (no space): read and discarded, then 451.
    Unspooled,
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
    /// The content so far; `None` once the message is refused.
    content: Option<Spool>,
}

impl DataDecoder {
    /// `limit`: the maximum size in bytes, or `None` for no limit.
    pub fn new(limit: Option<usize>, spool: Arc<SpoolSettings>) -> DataDecoder {
        DataDecoder {
            limit,
            state: State::Nominal,
            received: 0,
            mid_line: false,
            line_len: 0,
            content: Some(Spool::new(spool)),
        }
    }

    /// Consume what `buf` holds. `Some` once the end-of-data line has been
    /// read: the content, or the reply refusing it.
    pub fn feed(&mut self, buf: &mut BytesMut) -> Option<Result<Content, Reply>> {
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
        self.keep(fragment);
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
        let unstuffed = if starts_line && line.first() == Some(&b'.') {
            &line[1..]
        } else {
            line
        };
        self.keep(unstuffed);
    }

    fn keep(&mut self, bytes: &[u8]) {
        if let Some(spool) = &mut self.content
            && let Err(e) = spool.write(bytes)
        {
            tracing::error!("can't spool the message: {e}");
            self.fail(State::Unspooled);
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
            self.content = None;
        }
    }

    fn finish(&mut self) -> Result<Content, Reply> {
        match self.state {
            State::Nominal => match self.content.take().map(Spool::finish) {
                Some(Ok(content)) => Ok(content),
                Some(Err(e)) => {
                    tracing::error!("can't spool the message: {e}");
                    Err(reply::LOCAL_ERROR.clone())
                }
                None => Err(reply::LOCAL_ERROR.clone()),
            },
            State::TooLong => Err(reply::DATA_LINE_TOO_LONG.clone()),
            State::TooMuch => Err(reply::TOO_MUCH_DATA.clone()),
            State::Unspooled => Err(reply::LOCAL_ERROR.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(limit: Option<usize>, chunks: &[&[u8]]) -> (Option<Result<Vec<u8>, Reply>>, Vec<u8>) {
        decode_with(limit, SpoolSettings::default(), chunks)
    }

    fn decode_with(
        limit: Option<usize>,
        spool: SpoolSettings,
        chunks: &[&[u8]],
    ) -> (Option<Result<Vec<u8>, Reply>>, Vec<u8>) {
        let mut d = DataDecoder::new(limit, Arc::new(spool));
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            if let Some(done) = d.feed(&mut buf) {
                let done = done.map(|c| c.read(0, c.len() as usize).unwrap());
                return (Some(done), buf.to_vec());
            }
        }
        (None, buf.to_vec())
    }

    #[test]
    fn a_message_past_the_threshold_is_spooled_and_decoded_the_same() {
        let mut text = Vec::new();
        for i in 0..2000 {
            text.extend_from_slice(format!(".line {i}\r\n").as_bytes());
        }
        let mut wire = Vec::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            wire.push(b'.');
            wire.extend_from_slice(line);
        }
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        let spool = SpoolSettings {
            dir: std::env::temp_dir(),
            threshold: 1000,
        };
        let (done, rest) = decode_with(None, spool, &[&wire[..5000], &wire[5000..]]);
        assert_eq!(done, Some(Ok(text)));
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn a_spool_that_fails_refuses_with_451_and_reads_to_the_end() {
        let spool = SpoolSettings {
            dir: "/nonexistent/spool".into(),
            threshold: 10,
        };
        let (done, rest) = decode_with(None, spool, &[b"0123456789\r\nmore\r\n.\r\nNOOP\r\n"]);
        assert_eq!(done, Some(Err(reply::LOCAL_ERROR.clone())));
        assert_eq!(rest, b"NOOP\r\n");
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
