//! The message content, read through the host's `content` import.

use std::io::{self, BufRead, Read};

use crate::wit::content;

/// How much to ask the host for at a time: large enough that the per-call
/// cost vanishes, small enough to keep a plugin's memory flat.
pub const CHUNK: u32 = 64 * 1024;

/// A reader of the message during the `data` hook: the content as received,
/// dot-unstuffed, line endings as sent (aiosmtpd's
/// `envelope.original_content`). Implements [`Read`] and [`BufRead`]; the
/// host copies only what is read, `CHUNK` bytes at a time.
///
/// Outside the `data` hook the content is empty.
#[derive(Debug)]
pub struct Content {
    /// The offset of the next byte to fetch from the host.
    offset: u64,
    size: u64,
    buffer: Vec<u8>,
    /// How much of `buffer` was consumed.
    pos: usize,
}

impl Content {
    /// The message of the running `data` hook, from its start.
    pub fn new() -> Content {
        Content {
            offset: 0,
            size: content::size(),
            buffer: Vec::new(),
            pos: 0,
        }
    }

    /// The content's size in bytes (not what remains to be read).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the next byte read is, from the start of the content.
    pub fn position(&self) -> u64 {
        self.offset - (self.buffer.len() - self.pos) as u64
    }

    /// The next chunk as the host hands it (at most `CHUNK` bytes), without
    /// a copy; `None` at the end.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.pos < self.buffer.len() {
            let rest = self.buffer.split_off(self.pos);
            self.buffer.clear();
            self.pos = 0;
            return Some(rest);
        }
        let chunk = content::read(self.offset, CHUNK);
        self.offset += chunk.len() as u64;
        (!chunk.is_empty()).then_some(chunk)
    }

    /// The whole content in memory. Mind the size: a message may be as large
    /// as the listener allows; prefer reading it in pieces.
    pub fn read_all(mut self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.size as usize);
        while let Some(chunk) = self.next_chunk() {
            all.extend_from_slice(&chunk);
        }
        all
    }
}

impl Default for Content {
    fn default() -> Self {
        Content::new()
    }
}

impl BufRead for Content {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.buffer.len() {
            self.buffer = content::read(self.offset, CHUNK);
            self.offset += self.buffer.len() as u64;
            self.pos = 0;
        }
        Ok(&self.buffer[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.buffer.len());
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
