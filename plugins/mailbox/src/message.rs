//! The file Python writes for aiosmtpd's `Mailbox`: the message parsed by the
//! `email` package, given `X-Peer`, `X-MailFrom` and `X-RcptTo` headers, and
//! flattened by `mailbox.Maildir.add` — produced while the content streams in.
//!
//! What Python's round trip does, and this module reproduces:
//! - every line break (`\r\n`, `\r`, `\n`) becomes `\n`;
//! - the header block ends at the first empty line or the first line that is
//!   neither a header nor a continuation; a blank line always follows it;
//! - the new headers go at the end of the header block;
//! - each header is rewritten `Name: value` (the blanks after the colon
//!   become one space), with the quirks of `email.header.Header` for folded
//!   headers (see [`write_header`]);
//! - what the parser rejects is dropped: a first-line or stray `From ` line,
//!   a header without a name, a continuation with no header before it; a
//!   `From ` line ending the headers starts the body.
//!
//! What it does not: MIME parts and attached messages are written as
//! received, where Python also rewrites their headers.

use std::io::{self, Write};

/// The header block is buffered to rewrite it; past this size it is cut
/// short and the rest is written as body, so memory stays bounded.
pub const HEADER_LIMIT: usize = 1024 * 1024;

/// Writes the Maildir file of one message to `out`.
pub struct MessageWriter<W: Write> {
    out: W,
    /// The added headers, rendered; written at the end of the header block.
    added: Vec<u8>,
    /// `Some` while the header block is being read.
    headers: Option<HeaderBlock>,
    /// The last chunk ended with `\r`: a `\n` starting the next one belongs
    /// to the same line break.
    after_cr: bool,
}

/// The header lines read so far, as received (terminators included, as
/// Python keeps them inside a non-ASCII folded header).
#[derive(Default)]
struct HeaderBlock {
    bytes: Vec<u8>,
    lines: Vec<Line>,
    /// Where the line being read starts in `bytes`.
    current: usize,
}

#[derive(Clone, Copy)]
struct Line {
    start: usize,
    /// The end of the text, before the line break.
    text_end: usize,
    /// The end of the line break.
    end: usize,
}

impl<W: Write> MessageWriter<W> {
    /// `added` are the headers to add, `(name, value)`, in order.
    pub fn new(out: W, added: &[(&str, &str)]) -> Self {
        let mut rendered = Vec::new();
        for (name, value) in added {
            rendered.extend_from_slice(name.as_bytes());
            rendered.extend_from_slice(b": ");
            encode_value(&mut rendered, value);
            rendered.push(b'\n');
        }
        MessageWriter { out, added: rendered, headers: Some(HeaderBlock::default()), after_cr: false }
    }

    /// Writes the next chunk of the content.
    pub fn feed(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        if std::mem::take(&mut self.after_cr)
            && let Some(rest) = chunk.strip_prefix(b"\n")
        {
            chunk = rest;
            if let Some(block) = &mut self.headers
                && let Some(line) = block.lines.last_mut()
                && line.end == block.bytes.len()
            {
                // The `\r` that ended the last header line was a `\r\n`.
                block.bytes.push(b'\n');
                line.end += 1;
                block.current += 1;
            }
        }
        while !chunk.is_empty() {
            let (text, line_break, rest) = split_line(chunk);
            if line_break == b"\r" && rest.is_empty() {
                self.after_cr = true;
            }
            match &mut self.headers {
                Some(block) => {
                    block.bytes.extend_from_slice(text);
                    if line_break.is_empty() {
                        if block.bytes.len() > HEADER_LIMIT {
                            self.end_headers_in_line()?;
                        }
                    } else {
                        block.bytes.extend_from_slice(line_break);
                        self.end_header_line()?;
                    }
                }
                None => {
                    self.out.write_all(text)?;
                    if !line_break.is_empty() {
                        self.out.write_all(b"\n")?;
                    }
                }
            }
            chunk = rest;
        }
        Ok(())
    }

    /// Ends the message; returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(block) = &self.headers {
            // A last line without a line break, still in the header block.
            let line = Line { start: block.current, text_end: block.bytes.len(), end: block.bytes.len() };
            if line.start == line.text_end {
                self.end_headers(None)?;
            } else if is_header_line(&block.bytes[line.start..line.text_end]) {
                self.headers.as_mut().unwrap().lines.push(line);
                self.end_headers(None)?;
            } else {
                self.end_headers(Some(line))?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// A line of the header block is complete: keep it as a header, or end
    /// the block at it.
    fn end_header_line(&mut self) -> io::Result<()> {
        let block = self.headers.as_mut().unwrap();
        let text_end = block.bytes.len() - if block.bytes.ends_with(b"\r\n") { 2 } else { 1 };
        let line = Line { start: block.current, text_end, end: block.bytes.len() };
        block.current = line.end;
        let text = &block.bytes[line.start..line.text_end];
        if text.is_empty() {
            // The separator; the generator writes its own.
            self.end_headers(None)
        } else if is_header_line(text) {
            block.lines.push(line);
            if block.bytes.len() > HEADER_LIMIT { self.end_headers(None) } else { Ok(()) }
        } else {
            self.end_headers(Some(line))
        }
    }

    /// The header block outgrew its limit in the middle of a line: what was
    /// read of that line starts the body.
    fn end_headers_in_line(&mut self) -> io::Result<()> {
        let block = self.headers.as_ref().unwrap();
        let end = block.bytes.len();
        self.end_headers(Some(Line { start: block.current, text_end: end, end }))
    }

    /// Writes the header block, the added headers and the blank line, then
    /// `first_body_line` (the line that ended the block), if any.
    fn end_headers(&mut self, first_body_line: Option<Line>) -> io::Result<()> {
        let block = self.headers.take().unwrap();
        let pushed_back = write_headers(&mut self.out, &block)?;
        self.out.write_all(&self.added)?;
        self.out.write_all(b"\n")?;
        for line in pushed_back.into_iter().chain(first_body_line) {
            self.out.write_all(&block.bytes[line.start..line.text_end])?;
            if line.end > line.text_end {
                self.out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

/// Splits off the first line: (text, line break, rest). The line break is
/// empty when the chunk has none.
fn split_line(chunk: &[u8]) -> (&[u8], &[u8], &[u8]) {
    match chunk.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => (chunk, &[], &[]),
        Some(at) => {
            let len = if chunk[at..].starts_with(b"\r\n") { 2 } else { 1 };
            (&chunk[..at], &chunk[at..at + len], &chunk[at + len..])
        }
    }
}

/// The `email.feedparser` test for a header line: `From `, a name of
/// printable ASCII but `:` followed by `:`, or a continuation.
fn is_header_line(text: &[u8]) -> bool {
    let name_len = text.iter().take_while(|&&b| matches!(b, 0x21..=0x39 | 0x3b..=0x7e)).count();
    text.starts_with(b"From ") || text.get(name_len) == Some(&b':') || matches!(text.first(), Some(b' ' | b'\t'))
}

/// Writes the headers as `email.feedparser._parse_headers` takes them and
/// the generator writes them back. Returns a `From ` line the parser pushed
/// back into the body.
fn write_headers(out: &mut impl Write, block: &HeaderBlock) -> io::Result<Option<Line>> {
    let lines = &block.lines;
    // The header being gathered: its lines, first to last.
    let mut header: Option<(usize, usize)> = None;
    for (i, line) in lines.iter().enumerate() {
        let text = &block.bytes[line.start..line.text_end];
        if matches!(text[0], b' ' | b'\t') {
            // A continuation with no header to continue is dropped.
            if let Some((_, last)) = &mut header {
                *last = i;
            }
            continue;
        }
        if let Some((first, last)) = header.take() {
            write_header(out, &block.bytes, &lines[first..=last])?;
        }
        if text.starts_with(b"From ") {
            // The mbox envelope line (first) is not written back; one ending
            // the headers is the body's first line; any other is dropped.
            if i == lines.len() - 1 && i != 0 {
                return Ok(Some(*line));
            }
            continue;
        }
        if text[0] != b':' {
            header = Some((i, i));
        }
    }
    if let Some((first, last)) = header {
        write_header(out, &block.bytes, &lines[first..=last])?;
    }
    Ok(None)
}

/// Writes one header as Python's compat32 policy folds it back.
///
/// The value is the text after the colon with leading blanks removed, plus
/// any continuation lines. With a non-ASCII byte in it the value is written
/// as received, line breaks inside it included. Otherwise
/// `email.header.Header` re-joins its lines with `\n` and, when it has more
/// than one line, drops a single trailing space from each line, drops lines
/// left empty and joins blank lines to the line before.
fn write_header(out: &mut impl Write, bytes: &[u8], lines: &[Line]) -> io::Result<()> {
    let first = &bytes[lines[0].start..lines[0].text_end];
    let colon = first.iter().position(|&b| b == b':').unwrap();
    let value_start = lines[0].start
        + colon
        + 1
        + first[colon + 1..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let value_end = lines[lines.len() - 1].text_end;
    let value = &bytes[value_start..value_end];
    out.write_all(&first[..colon])?;
    out.write_all(b": ")?;
    if !value.is_ascii() {
        out.write_all(value)?;
        return out.write_all(b"\n");
    }
    // `str.splitlines()` of the value: its lines, also split at the ASCII
    // controls Python counts as line boundaries, with no empty last line.
    let mut pieces: Vec<&[u8]> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let start = if i == 0 { value_start } else { line.start };
        pieces.extend(bytes[start..line.text_end].split(|&b| matches!(b, 0x0b | 0x0c | 0x1c..=0x1e)));
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
        let blanks = piece.iter().rev().take_while(|&&b| b == b' ' || b == b'\t').count();
        let piece = if blanks == 1 && piece.ends_with(b" ") { &piece[..piece.len() - 1] } else { piece };
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
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
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

    const ADDED: &[(&str, &str)] =
        &[("X-Peer", "('127.0.0.1', 54321)"), ("X-MailFrom", "anne@example.com"), ("X-RcptTo", "bart@example.com")];
    const ADDED_TEXT: &str = "X-Peer: ('127.0.0.1', 54321)\nX-MailFrom: anne@example.com\nX-RcptTo: bart@example.com\n";

    fn written(content: &[u8], chunk: usize) -> Vec<u8> {
        let mut writer = MessageWriter::new(Vec::new(), ADDED);
        for piece in content.chunks(chunk.max(1)) {
            writer.feed(piece).unwrap();
        }
        writer.finish().unwrap()
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
            format!("From: Anne Person <anne@example.com>\nSubject: A test\nMessage-ID: <ant>\n{ADDED_TEXT}\nHi Bart, this is Anne.\n")
        );
    }

    #[test]
    fn line_breaks_become_lf() {
        let out = file(b"Subject: x\r\n\r\nbody\r\nline2\rline3\n\r\n");
        assert_eq!(out, format!("Subject: x\n{ADDED_TEXT}\nbody\nline2\nline3\n\n"));
    }

    #[test]
    fn headers_rewritten_as_python() {
        // Expected outputs are Python 3.11's.
        assert_eq!(file(b"Subject:nospace\r\nX-A:   lots  \r\n\r\nb"), format!("Subject: nospace\nX-A: lots  \n{ADDED_TEXT}\nb"));
        assert_eq!(file(b"Subject: a \r\n\tb \r\n\r\nb"), format!("Subject: a\n\tb\n{ADDED_TEXT}\nb"));
        assert_eq!(file(b"Subject: a\r\n\t \r\nX: y\r\n\r\nb"), format!("Subject: a\t \nX: y\n{ADDED_TEXT}\nb"));
        assert_eq!(file(b"Subject:\r\n\tfoo\r\n\r\nb"), format!("Subject: \n\tfoo\n{ADDED_TEXT}\nb"));
        assert_eq!(file(b"Subject: caf\xc3\xa9\r\n\tmore\r\n\r\nb"), format!("Subject: café\r\n\tmore\n{ADDED_TEXT}\nb"));
        assert_eq!(file(b"From bob Mon\r\nSubject: a\r\n\r\nbody"), format!("Subject: a\n{ADDED_TEXT}\nbody"));
        assert_eq!(file(b"Subject: a\r\nFrom bob\r\n\r\nbody"), format!("Subject: a\n{ADDED_TEXT}\nFrom bob\nbody"));
        assert_eq!(file(b": noname\r\n cont\r\n leading\r\nSubject: a\r\n\r\nbody"), format!("Subject: a\n{ADDED_TEXT}\nbody"));
        assert_eq!(file(b"Subject: a"), format!("Subject: a\n{ADDED_TEXT}\n"));
        assert_eq!(file(b""), format!("{ADDED_TEXT}\n"));
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
}
