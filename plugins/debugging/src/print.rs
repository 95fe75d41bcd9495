//! The text aiosmtpd's `Debugging.handle_DATA` prints, byte for byte, produced
//! while the content streams in rather than from the whole message.

use std::fmt::Write as _;
use std::io::{self, Write};

/// Prints one message: the banner, the envelope's options, the content with
/// the `X-Peer` line at the end of its headers, and the closing banner.
/// `read(offset)` returns the content from `offset`; empty at its end.
pub fn dump<W: Write>(
    mut out: W,
    mail_options: &[String],
    rcpt_options: &[Vec<String>],
    peer: &str,
    mut read: impl FnMut(u64) -> Vec<u8>,
) -> io::Result<()> {
    writeln!(out, "---------- MESSAGE FOLLOWS ----------")?;
    let mut add_separator = false;
    if !mail_options.is_empty() {
        writeln!(out, "mail options: {}", list_repr(mail_options))?;
        add_separator = true;
    }
    // aiosmtpd keeps one flat list of every recipient's options; print that
    // list, so the output is the same as aiosmtpd's.
    if rcpt_options.iter().any(|options| !options.is_empty()) {
        writeln!(
            out,
            "rcpt options: {}",
            list_repr(rcpt_options.iter().flatten())
        )?;
        add_separator = true;
    }
    if add_separator {
        writeln!(out)?;
    }
    let mut lines = ContentPrinter::new(&mut out, peer);
    let mut offset = 0;
    loop {
        let chunk = read(offset);
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        lines.feed(&chunk)?;
    }
    lines.finish()?;
    writeln!(out, "------------ END MESSAGE ------------")?;
    out.flush()
}

/// Python's `repr()` of session.peer, the tuple `(address, port)`.
pub fn peer_repr(address: &str, port: u16) -> String {
    let mut repr = String::from("(");
    push_str_repr(&mut repr, address);
    write!(repr, ", {port})").unwrap();
    repr
}

/// Python's `repr()` of a list of `str`: `['SIZE=12', 'BODY=8BITMIME']`.
fn list_repr<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let mut repr = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            repr.push_str(", ");
        }
        push_str_repr(&mut repr, item);
    }
    repr.push(']');
    repr
}

/// Python's `repr()` of a `str`: single quotes unless the text has a single
/// quote and no double quote; escapes for the backslash, the quote and the
/// characters Python does not consider printable.
fn push_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32).unwrap(),
            c if (c as u32) < 0x10000 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => write!(out, "\\U{:08x}", c as u32).unwrap(),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for one character: exact for Latin-1 (which
/// covers ESMTP parameters and IP addresses); beyond it, only the separators
/// and format characters one may meet in text are treated as unprintable,
/// rather than carrying Unicode's category tables into the plugin.
fn is_printable(c: char) -> bool {
    !matches!(c as u32,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064
        | 0x3000 | 0xfeff | 0xe000..=0xf8ff | 0xf0000..)
}

/// Prints the content line by line as `bytes.splitlines()` splits it (on
/// `\r\n`, `\r` and `\n`), each line decoded as UTF-8 with U+FFFD for bad
/// bytes, and prints `X-Peer: (...)` before the first empty line.
///
/// It keeps no line in memory: text is written as it arrives, except an
/// incomplete UTF-8 sequence at the end of a chunk (at most 3 bytes), whose
/// decoding waits for the next chunk.
struct ContentPrinter<'a, W: Write> {
    out: &'a mut W,
    peer: &'a str,
    /// Until the first empty line, where aiosmtpd inserts `X-Peer`.
    in_headers: bool,
    /// The current line has text, so a line break ending it is not the
    /// empty line that ends the headers.
    line_started: bool,
    /// The start of a UTF-8 sequence cut by the end of a chunk.
    partial_char: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` starting the next one belongs
    /// to the same line break.
    after_cr: bool,
}

impl<'a, W: Write> ContentPrinter<'a, W> {
    fn new(out: &'a mut W, peer: &'a str) -> Self {
        ContentPrinter {
            out,
            peer,
            in_headers: true,
            line_started: false,
            partial_char: Vec::new(),
            after_cr: false,
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        if std::mem::take(&mut self.after_cr)
            && let Some(rest) = chunk.strip_prefix(b"\n")
        {
            chunk = rest;
        }
        while let Some(at) = chunk.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.text(&chunk[..at])?;
            self.end_line()?;
            let mut next = at + 1;
            if chunk[at] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            chunk = &chunk[next..];
        }
        self.text(chunk)
    }

    /// Ends the last line when the content does not end with a line break,
    /// as `splitlines()` keeps such a line.
    fn finish(mut self) -> io::Result<()> {
        if self.line_started {
            self.end_line()?;
        }
        Ok(())
    }

    fn text(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.line_started = true;
        if self.partial_char.is_empty() {
            let done = write_lossy(self.out, bytes, false)?;
            self.partial_char.extend_from_slice(&bytes[done..]);
        } else {
            self.partial_char.extend_from_slice(bytes);
            let done = write_lossy(self.out, &self.partial_char, false)?;
            self.partial_char.drain(..done);
        }
        Ok(())
    }

    fn end_line(&mut self) -> io::Result<()> {
        write_lossy(self.out, &self.partial_char, true)?;
        self.partial_char.clear();
        if self.in_headers && !self.line_started {
            writeln!(self.out, "X-Peer: {}", self.peer)?;
            self.in_headers = false;
        }
        self.line_started = false;
        self.out.write_all(b"\n")
    }
}

/// Writes `bytes` as UTF-8, each invalid sequence replaced by U+FFFD as
/// `String::from_utf8_lossy` and Python's `errors="replace"` both do. Unless
/// `at_end`, an incomplete sequence at the end is left unwritten; returns how
/// many bytes were consumed.
fn write_lossy(out: &mut impl Write, mut bytes: &[u8], at_end: bool) -> io::Result<usize> {
    let total = bytes.len();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.write_all(text.as_bytes())?;
                return Ok(total);
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                out.write_all(valid)?;
                match error.error_len() {
                    Some(bad) => bytes = &rest[bad..],
                    None if at_end => bytes = &[],
                    None => return Ok(total - rest.len()),
                }
                out.write_all("\u{FFFD}".as_bytes())?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "('127.0.0.1', 54321)";

    /// Runs `dump` with the content handed over `chunk` bytes at a time.
    fn dumped(content: &[u8], chunk: usize, mail: &[&str], rcpt: &[&[&str]]) -> String {
        let mail: Vec<String> = mail.iter().map(|s| s.to_string()).collect();
        let rcpt: Vec<Vec<String>> = rcpt
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        let mut out = Vec::new();
        dump(&mut out, &mail, &rcpt, PEER, |offset| {
            let start = (offset as usize).min(content.len());
            content[start..(start + chunk).min(content.len())].to_vec()
        })
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn every_chunking(content: &[u8]) -> String {
        let whole = dumped(content, usize::MAX / 2, &[], &[]);
        for chunk in 1..8 {
            assert_eq!(
                dumped(content, chunk, &[], &[]),
                whole,
                "chunk size {chunk}"
            );
        }
        whole
    }

    #[test]
    fn prints_as_aiosmtpd() {
        let out = dumped(
            b"From: anne@example.com\r\nSubject: A test\r\n\r\nHi Bart.\r\n",
            64,
            &["SIZE=12", "BODY=8BITMIME"],
            &[&[], &["NOTIFY=NEVER"]],
        );
        assert_eq!(
            out,
            "---------- MESSAGE FOLLOWS ----------\n\
             mail options: ['SIZE=12', 'BODY=8BITMIME']\n\
             rcpt options: ['NOTIFY=NEVER']\n\
             \n\
             From: anne@example.com\n\
             Subject: A test\n\
             X-Peer: ('127.0.0.1', 54321)\n\
             \n\
             Hi Bart.\n\
             ------------ END MESSAGE ------------\n"
        );
    }

    #[test]
    fn splits_lines_as_bytes_splitlines() {
        // \r\n cut between chunks is one break; \r and \n alone are breaks.
        let out = every_chunking(b"A: 1\r\n\r\nx\ry\n\n\r\rz");
        assert_eq!(
            out,
            "---------- MESSAGE FOLLOWS ----------\nA: 1\nX-Peer: ('127.0.0.1', 54321)\n\nx\ny\n\n\n\nz\n------------ END MESSAGE ------------\n"
        );
    }

    #[test]
    fn decodes_with_replacement_across_chunks() {
        let content =
            b"S: caf\xc3\xa9 \xe2\x82\xac \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98\x80\xff\n\nb\xe2";
        let out = every_chunking(content);
        assert!(
            out.contains("S: café € \u{FFFD} \u{FFFD}\u{FFFD}\u{FFFD} 😀\u{FFFD}\n"),
            "{out}"
        );
        assert!(out.contains("\nb\u{FFFD}\n---"), "{out}");
    }

    #[test]
    fn no_peer_without_empty_line() {
        let out = every_chunking(b"no headers here");
        assert!(!out.contains("X-Peer"));
        assert_eq!(
            every_chunking(b""),
            "---------- MESSAGE FOLLOWS ----------\n------------ END MESSAGE ------------\n"
        );
    }

    #[test]
    fn reprs_as_python() {
        assert_eq!(
            list_repr(&["it's".to_string(), "a\"'\\\x01é\u{a0}".to_string()]),
            r#"["it's", 'a"\'\\\x01é\xa0']"#
        );
        assert_eq!(peer_repr("::1", 25), "('::1', 25)");
    }
}
