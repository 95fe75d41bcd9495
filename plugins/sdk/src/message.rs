//! aiosmtpd's `Message` handler: the content parsed into a message, given
//! `X-Peer`, `X-MailFrom` and `X-RcptTo` headers (`prepare_message`), then
//! handed to the plugin (`handle_message`):
//!
//! ```ignore
//! fn data(&mut self, session: &Session, envelope: &Envelope, content: Content) -> Option<Reply> {
//!     let message = Message::prepare(session, envelope, content).ok()?;
//!     self.handle_message(message)
//! }
//! ```
//!
//! A message may be hundreds of megabytes, and a plugin's memory is capped,
//! so only the header block is read into memory (up to [`HEADER_LIMIT`]);
//! the body stays in the host and streams through [`Message::body`] or
//! [`Message::write_flattened`].
//!
//! The header block is cut where Python's `email` parser cuts it: at the
//! first empty line or the first line that is neither a header nor a
//! continuation. What the parser drops is dropped: a first-line or stray
//! `From ` line, a header without a name, a continuation with no header
//! before it; a `From ` line ending the headers starts the body.
//! [`Message::parsed_headers`] decodes the headers (RFC 2047 words,
//! addresses, dates) with the `mail-parser` crate.

use std::io::{self, Chain, Cursor, Read, Write};

use crate::{Content, Envelope, Session};

/// The header block is read into memory to parse it; past this size it is
/// cut short and the rest is body, so memory stays bounded.
pub const HEADER_LIMIT: usize = 1024 * 1024;

/// How much is read from the content at a time while looking for the end of
/// the header block.
const READ_SIZE: usize = 64 * 1024;

/// One header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    name: String,
    /// As received: from the first non-blank after the colon to the end of
    /// the last continuation line, line breaks inside included; or, for a
    /// header the plugin added, its value as given.
    value: Vec<u8>,
    /// Added by [`Message::add_header`]: written as `email.header.Header`
    /// encodes a value set from Python.
    added: bool,
}

impl Header {
    /// The name as received (`Subject`, `X-MailFrom`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value as received, folding line breaks included.
    pub fn raw_value(&self) -> &[u8] {
        &self.value
    }

    /// The value unfolded (line breaks removed), invalid UTF-8 replaced.
    /// Encoded words are left as they are; see [`Message::parsed_headers`].
    pub fn value(&self) -> String {
        let mut unfolded = Vec::with_capacity(self.value.len());
        for line in lines(&self.value) {
            unfolded.extend_from_slice(line);
        }
        String::from_utf8_lossy(&unfolded).into_owned()
    }
}

/// A message: its headers in memory, its body still to be read from `R`
/// (the host's [`Content`], for a plugin).
pub struct Message<R = Content> {
    header_block: Vec<u8>,
    headers: Vec<Header>,
    body: Chain<Cursor<Vec<u8>>, R>,
}

impl Message<Content> {
    /// aiosmtpd's `Message.prepare_message`: parses the message and adds,
    /// at the end of its headers,
    /// - `X-Peer`: `str(session.peer)`, the Python tuple: `('192.0.2.7', 4567)`;
    /// - `X-MailFrom`: the envelope's sender (empty for `<>`);
    /// - `X-RcptTo`: the recipients, joined with `, `.
    pub fn prepare(
        session: &Session,
        envelope: &Envelope,
        content: Content,
    ) -> io::Result<Message> {
        let mut message = Message::parse(content)?;
        message.add_header("X-Peer", &session.peer.python_tuple());
        message.add_header(
            "X-MailFrom",
            envelope.mail_from.as_deref().unwrap_or_default(),
        );
        message.add_header("X-RcptTo", &envelope.rcpt_tos.join(", "));
        Ok(message)
    }
}

impl<R: Read> Message<R> {
    /// Reads the header block from `source` and keeps the rest as the body.
    pub fn parse(mut source: R) -> io::Result<Message<R>> {
        let mut buf = Vec::new();
        let mut eof = false;
        let mut lines: Vec<Line> = Vec::new();
        let mut pos = 0;
        // Where the body starts in `buf`.
        let body_start;
        loop {
            match next_line(&buf[pos..], eof) {
                Some((text_len, break_len)) => {
                    let line = Line {
                        start: pos,
                        text_end: pos + text_len,
                        end: pos + text_len + break_len,
                    };
                    let text = &buf[line.start..line.text_end];
                    if text.is_empty() {
                        // The separator; the body follows it.
                        body_start = line.end;
                        break;
                    }
                    if !is_header_line(text) {
                        body_start = line.start;
                        break;
                    }
                    lines.push(line);
                    pos = line.end;
                    if pos > HEADER_LIMIT || (break_len == 0 && eof) {
                        body_start = pos;
                        break;
                    }
                }
                None if eof => {
                    body_start = pos;
                    break;
                }
                None if buf.len() > HEADER_LIMIT => {
                    // Cut in the middle of a line: what was read of it is body.
                    body_start = pos;
                    break;
                }
                None => {
                    let old = buf.len();
                    buf.resize(old + READ_SIZE, 0);
                    let n = loop {
                        match source.read(&mut buf[old..]) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            other => break other,
                        }
                    };
                    let n = n.inspect_err(|_| buf.truncate(old))?;
                    buf.truncate(old + n);
                    eof = n == 0;
                }
            }
        }
        let (headers, pushed_back) = gather_headers(&buf, &lines);
        let mut body = Vec::new();
        if let Some(line) = pushed_back {
            body.extend_from_slice(&buf[line.start..line.end]);
        }
        body.extend_from_slice(&buf[body_start..]);
        buf.truncate(lines.last().map_or(0, |l| l.end));
        Ok(Message {
            header_block: buf,
            headers,
            body: Cursor::new(body).chain(source),
        })
    }

    /// The header fields, in order (added ones last).
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The first header named `name` (case-insensitive), unfolded.
    pub fn get(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(Header::value)
    }

    /// Every header named `name` (case-insensitive), unfolded.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(Header::value)
            .collect()
    }

    /// Adds a header after the others, as Python's `message[name] = value`.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push(Header {
            name: name.to_owned(),
            value: value.as_bytes().to_vec(),
            added: true,
        });
    }

    /// Removes every header named `name`, as Python's `del message[name]`.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// The header block as received (without the headers added since).
    pub fn header_block(&self) -> &[u8] {
        &self.header_block
    }

    /// The received headers decoded by `mail-parser`: `subject()`, `from()`,
    /// `date()`, with RFC 2047 words decoded.
    pub fn parsed_headers(&self) -> Option<mail_parser::Message<'_>> {
        mail_parser::MessageParser::new().parse_headers(&self.header_block[..])
    }

    /// The body as received: what follows the header block, line endings
    /// as sent. Streams from the host as it is read.
    pub fn body(&mut self) -> &mut impl Read {
        &mut self.body
    }

    /// The body reader, for a plugin done with the headers.
    pub fn into_body(self) -> impl Read {
        self.body
    }

    /// Writes the message as Python's `email` generator flattens it, which
    /// is what `mailbox.Maildir.add` stores for aiosmtpd's `Mailbox`: every
    /// line break becomes `\n`; each header is written `Name: value` (the
    /// blanks after the colon become one space), with the folding quirks of
    /// `email.header.Header` (see [`write_header`]); added headers are
    /// encoded as Python encodes a value set on a message; one blank line
    /// ends the headers. The body streams through `out`.
    ///
    /// Unlike Python, MIME parts and attached messages are written as
    /// received, where Python also rewrites their headers.
    pub fn write_flattened<W: Write>(mut self, mut out: W) -> io::Result<W> {
        for header in &self.headers {
            out.write_all(header.name.as_bytes())?;
            out.write_all(b": ")?;
            if header.added {
                let mut encoded = Vec::new();
                encode_value(&mut encoded, &String::from_utf8_lossy(&header.value));
                out.write_all(&encoded)?;
                out.write_all(b"\n")?;
            } else {
                write_header(&mut out, &header.value)?;
            }
        }
        out.write_all(b"\n")?;
        let mut after_cr = false;
        let mut chunk = vec![0; READ_SIZE];
        loop {
            let n = match self.body.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            write_lf(&mut out, &chunk[..n], &mut after_cr)?;
        }
        out.flush()?;
        Ok(out)
    }
}

/// Writes `bytes` with each line break (`\r\n`, `\r`, `\n`) as `\n`;
/// `after_cr` carries a `\r` that ended the previous piece.
fn write_lf(out: &mut impl Write, mut bytes: &[u8], after_cr: &mut bool) -> io::Result<()> {
    if std::mem::take(after_cr)
        && let Some(rest) = bytes.strip_prefix(b"\n")
    {
        bytes = rest;
    }
    while let Some(at) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
        out.write_all(&bytes[..at])?;
        out.write_all(b"\n")?;
        let len = if bytes[at..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        if bytes[at] == b'\r' && at + 1 == bytes.len() {
            *after_cr = true;
        }
        bytes = &bytes[at + len..];
    }
    out.write_all(bytes)
}

#[derive(Clone, Copy, Debug)]
struct Line {
    start: usize,
    /// The end of the text, before the line break.
    text_end: usize,
    /// The end of the line break.
    end: usize,
}

/// The next line of `bytes`: (text length, line break length), or `None` if
/// more bytes are needed to tell. At the end (`eof`), a last line without a
/// line break is a line; an empty rest is none.
fn next_line(bytes: &[u8], eof: bool) -> Option<(usize, usize)> {
    match bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
        // A `\r` may be the first half of `\r\n`.
        Some(at) if bytes[at] == b'\r' && at + 1 == bytes.len() && !eof => None,
        Some(at) => Some((
            at,
            if bytes[at..].starts_with(b"\r\n") {
                2
            } else {
                1
            },
        )),
        None if eof && !bytes.is_empty() => Some((bytes.len(), 0)),
        None => None,
    }
}

/// The lines of a header value, without their line breaks.
fn lines(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let bytes = rest?;
        match bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                rest = None;
                Some(bytes)
            }
            Some(at) => {
                let len = if bytes[at..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&bytes[at + len..]);
                Some(&bytes[..at])
            }
        }
    })
}

/// The `email.feedparser` test for a header line: `From `, a name of
/// printable ASCII but `:` followed by `:`, or a continuation.
fn is_header_line(text: &[u8]) -> bool {
    let name_len = text
        .iter()
        .take_while(|&&b| matches!(b, 0x21..=0x39 | 0x3b..=0x7e))
        .count();
    text.starts_with(b"From ")
        || text.get(name_len) == Some(&b':')
        || matches!(text.first(), Some(b' ' | b'\t'))
}

/// The headers as `email.feedparser._parse_headers` takes them from the
/// header block's lines, and a `From ` line it pushes back into the body.
fn gather_headers(bytes: &[u8], lines: &[Line]) -> (Vec<Header>, Option<Line>) {
    let mut headers = Vec::new();
    // The header being gathered: its lines, first to last.
    let mut current: Option<(usize, usize)> = None;
    let finish = |first: usize, last: usize, headers: &mut Vec<Header>| {
        let text = &bytes[lines[first].start..lines[first].text_end];
        let colon = text
            .iter()
            .position(|&b| b == b':')
            .expect("a header line has a colon");
        let blanks = text[colon + 1..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let value_start = lines[first].start + colon + 1 + blanks;
        headers.push(Header {
            name: String::from_utf8_lossy(&text[..colon]).into_owned(),
            value: bytes[value_start..lines[last].text_end].to_vec(),
            added: false,
        });
    };
    for (i, line) in lines.iter().enumerate() {
        let text = &bytes[line.start..line.text_end];
        if matches!(text[0], b' ' | b'\t') {
            // A continuation with no header to continue is dropped.
            if let Some((_, last)) = &mut current {
                *last = i;
            }
            continue;
        }
        if let Some((first, last)) = current.take() {
            finish(first, last, &mut headers);
        }
        if text.starts_with(b"From ") {
            // The mbox envelope line (first) is not kept; one ending the
            // headers is the body's first line; any other is dropped.
            if i == lines.len() - 1 && i != 0 {
                return (headers, Some(*line));
            }
            continue;
        }
        if text[0] != b':' {
            current = Some((i, i));
        }
    }
    if let Some((first, last)) = current {
        finish(first, last, &mut headers);
    }
    (headers, None)
}

/// Writes one received header's value as Python's compat32 policy folds it
/// back, and the line break.
///
/// With a non-ASCII byte in it the value is written as received, line
/// breaks inside it included. Otherwise `email.header.Header` re-joins its
/// lines with `\n` and, when it has more than one line, drops a single
/// trailing space from each line, drops lines left empty and joins blank
/// lines to the line before.
fn write_header(out: &mut impl Write, value: &[u8]) -> io::Result<()> {
    if !value.is_ascii() {
        out.write_all(value)?;
        return out.write_all(b"\n");
    }
    // `str.splitlines()` of the value: its lines, also split at the ASCII
    // controls Python counts as line boundaries, with no empty last line.
    let mut pieces: Vec<&[u8]> = Vec::new();
    for line in lines(value) {
        pieces.extend(line.split(|&b| matches!(b, 0x0b | 0x0c | 0x1c..=0x1e)));
    }
    if pieces.len() > 1 && pieces.last().is_some_and(|piece| piece.is_empty()) {
        pieces.pop();
    }
    if let [piece] = pieces[..] {
        out.write_all(piece)?;
        return out.write_all(b"\n");
    }
    let mut folded: Vec<Vec<u8>> = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        let blanks = piece
            .iter()
            .rev()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let piece = if blanks == 1 && piece.ends_with(b" ") {
            &piece[..piece.len() - 1]
        } else {
            piece
        };
        if i == 0 {
            folded.push(piece.to_vec());
        } else if piece.is_empty() {
        } else if piece.iter().all(|&b| matches!(b, b' ' | b'\t' | 0x1f)) {
            folded.last_mut().unwrap().extend_from_slice(piece);
        } else {
            folded.push(piece.to_vec());
        }
    }
    out.write_all(&folded.join(&b"\n"[..]))?;
    out.write_all(b"\n")
}

/// Writes a value set by the plugin as `email.header.Header` encodes it: as
/// is when ASCII, else one RFC 2047 UTF-8 encoded word, `b` or `q`
/// whichever is shorter (`q` on a tie).
fn encode_value(out: &mut Vec<u8>, value: &str) {
    if value.is_ascii() {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    let bytes = value.as_bytes();
    let q_safe = |b: u8| b.is_ascii_alphanumeric() || b"-!*+/ ".contains(&b);
    let b_len = bytes.len().div_ceil(3) * 4;
    let q_len: usize = bytes.iter().map(|&b| if q_safe(b) { 1 } else { 3 }).sum();
    if b_len < q_len {
        out.extend_from_slice(b"=?utf-8?b?");
        base64(out, bytes);
    } else {
        out.extend_from_slice(b"=?utf-8?q?");
        for &b in bytes {
            match b {
                b' ' => out.push(b'_'),
                b if q_safe(b) => out.push(b),
                b => out.extend_from_slice(format!("={b:02X}").as_bytes()),
            }
        }
    }
    out.extend_from_slice(b"?=");
}

fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDED: &[(&str, &str)] = &[
        ("X-Peer", "('127.0.0.1', 54321)"),
        ("X-MailFrom", "anne@example.com"),
        ("X-RcptTo", "bart@example.com"),
    ];
    const ADDED_TEXT: &str =
        "X-Peer: ('127.0.0.1', 54321)\nX-MailFrom: anne@example.com\nX-RcptTo: bart@example.com\n";

    /// Hands out `content` at most `chunk` bytes per read.
    struct Chunked<'a> {
        content: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.content.len().min(self.chunk).min(buf.len());
            buf[..n].copy_from_slice(&self.content[..n]);
            self.content = &self.content[n..];
            Ok(n)
        }
    }

    fn parsed(content: &[u8], chunk: usize) -> Message<Chunked<'_>> {
        let mut message = Message::parse(Chunked {
            content,
            chunk: chunk.max(1),
        })
        .unwrap();
        for (name, value) in ADDED {
            message.add_header(name, value);
        }
        message
    }

    fn written(content: &[u8], chunk: usize) -> Vec<u8> {
        parsed(content, chunk).write_flattened(Vec::new()).unwrap()
    }

    /// The file for `content`, the same however the content is chunked.
    fn file(content: &[u8]) -> String {
        let whole = written(content, content.len());
        for chunk in 1..6 {
            assert_eq!(written(content, chunk), whole, "chunk size {chunk}");
        }
        String::from_utf8(whole).unwrap()
    }

    #[test]
    fn seed_walk_through_message() {
        // No blank line before the body: Python's generator inserts one.
        let out = file(b"From: Anne Person <anne@example.com>\r\nSubject: A test\r\nMessage-ID: <ant>\r\nHi Bart, this is Anne.\r\n");
        assert_eq!(
            out,
            format!(
                "From: Anne Person <anne@example.com>\nSubject: A test\nMessage-ID: <ant>\n{ADDED_TEXT}\nHi Bart, this is Anne.\n"
            )
        );
    }

    #[test]
    fn line_breaks_become_lf() {
        let out = file(b"Subject: x\r\n\r\nbody\r\nline2\rline3\n\r\n");
        assert_eq!(
            out,
            format!("Subject: x\n{ADDED_TEXT}\nbody\nline2\nline3\n\n")
        );
    }

    #[test]
    fn headers_rewritten_as_python() {
        // Expected outputs are Python 3.11's.
        assert_eq!(
            file(b"Subject:nospace\r\nX-A:   lots  \r\n\r\nb"),
            format!("Subject: nospace\nX-A: lots  \n{ADDED_TEXT}\nb")
        );
        assert_eq!(
            file(b"Subject: a \r\n\tb \r\n\r\nb"),
            format!("Subject: a\n\tb\n{ADDED_TEXT}\nb")
        );
        assert_eq!(
            file(b"Subject: a\r\n\t \r\nX: y\r\n\r\nb"),
            format!("Subject: a\t \nX: y\n{ADDED_TEXT}\nb")
        );
        assert_eq!(
            file(b"Subject:\r\n\tfoo\r\n\r\nb"),
            format!("Subject: \n\tfoo\n{ADDED_TEXT}\nb")
        );
        assert_eq!(
            file(b"Subject: caf\xc3\xa9\r\n\tmore\r\n\r\nb"),
            format!("Subject: café\r\n\tmore\n{ADDED_TEXT}\nb")
        );
        assert_eq!(
            file(b"From bob Mon\r\nSubject: a\r\n\r\nbody"),
            format!("Subject: a\n{ADDED_TEXT}\nbody")
        );
        assert_eq!(
            file(b"Subject: a\r\nFrom bob\r\n\r\nbody"),
            format!("Subject: a\n{ADDED_TEXT}\nFrom bob\nbody")
        );
        assert_eq!(
            file(b": noname\r\n cont\r\n leading\r\nSubject: a\r\n\r\nbody"),
            format!("Subject: a\n{ADDED_TEXT}\nbody")
        );
        assert_eq!(file(b"Subject: a"), format!("Subject: a\n{ADDED_TEXT}\n"));
        assert_eq!(file(b""), format!("{ADDED_TEXT}\n"));
        assert_eq!(file(b"Subject: a\r"), format!("Subject: a\n{ADDED_TEXT}\n"));
        assert_eq!(
            file(b"Subject: a\r\n\r"),
            format!("Subject: a\n{ADDED_TEXT}\n")
        );
    }

    #[test]
    fn non_ascii_added_values_are_encoded_words() {
        // Expected outputs are Python 3.11's `Header(value).encode(maxlinelen=0)`.
        for (value, encoded) in [
            ("anné@example.com", "=?utf-8?b?YW5uw6lAZXhhbXBsZS5jb20=?="),
            ("bé@x, c@y", "=?utf-8?b?YsOpQHgsIGNAeQ==?="),
            ("abcdefghijklmnopqé", "=?utf-8?q?abcdefghijklmnopq=C3=A9?="),
            ("a b-c!é x", "=?utf-8?q?a_b-c!=C3=A9_x?="),
            ("éé", "=?utf-8?b?w6nDqQ==?="),
            ("plain@example.com", "plain@example.com"),
        ] {
            let mut out = Vec::new();
            encode_value(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), encoded);
        }
    }

    #[test]
    fn oversized_header_block_ends_as_body() {
        let mut content = b"Subject: a\r\nX-Long: ".to_vec();
        content.resize(HEADER_LIMIT + 100_000, b'x');
        content.extend_from_slice(b"\r\n\r\nbody");
        let out = written(&content, 64 * 1024);
        let head = format!("Subject: a\n{ADDED_TEXT}\nX-Long: xxx");
        assert!(out.starts_with(head.as_bytes()));
        assert!(out.ends_with(b"xxx\n\nbody"));
    }

    #[test]
    fn headers_and_body_are_readable() {
        let content =
            b"Subject: =?utf-8?q?caf=C3=A9?=\r\nTo: a@x,\r\n b@y\r\n\r\nline 1\r\nline 2\r\n";
        let mut message = parsed(content, 7);
        assert_eq!(
            message.get("subject").as_deref(),
            Some("=?utf-8?q?caf=C3=A9?=")
        );
        assert_eq!(message.get("TO").as_deref(), Some("a@x, b@y"));
        assert_eq!(message.get("x-rcptto").as_deref(), Some("bart@example.com"));
        assert_eq!(message.parsed_headers().unwrap().subject(), Some("café"));
        let mut body = String::new();
        message.body().read_to_string(&mut body).unwrap();
        assert_eq!(body, "line 1\r\nline 2\r\n");
        message.remove_header("X-Peer");
        assert_eq!(message.get("X-Peer"), None);
    }
}
