//! Where a message's content waits while the plugins read it: in memory
//! while it is small, in an unlinked file once it passes the threshold, so a
//! 200 MiB message costs the host a bounded amount of memory however large
//! it is (the plugins read it in pieces through the `content` interface).
//!
//! The file is created with `O_TMPFILE` where the file system has it (an
//! unlinked file otherwise), so it never has a name another process could
//! open and it disappears when the last handle drops, whatever happens to
//! the session. Writes go to the page cache with plain blocking calls, in
//! pieces of [`WRITE_CHUNK`]: cheaper than a thread hop per piece, and only
//! messages past the threshold take this path.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Content is written to the file in pieces of this size.
const WRITE_CHUNK: usize = 256 * 1024;

/// Where and from what size messages are spooled (`[server] spool_dir`,
/// `spool_threshold`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// Messages up to this many bytes stay in memory.
    pub threshold: usize,
}

impl Default for SpoolSettings {
    fn default() -> SpoolSettings {
        SpoolSettings {
            dir: std::env::temp_dir(),
            threshold: 1 << 20,
        }
    }
}

impl SpoolSettings {
    /// Whether a spool file can be created in `dir` (checked when the
    /// configuration is loaded, so a bad directory is a config error and not
    /// a 451 on the first large message).
    pub fn check(&self) -> Result<(), String> {
        tempfile::tempfile_in(&self.dir)
            .map(drop)
            .map_err(|e| format!("can't create a spool file in {}: {e}", self.dir.display()))
    }
}

/// A message being received.
pub struct Spool {
    settings: Arc<SpoolSettings>,
    /// Content not yet written to `file` (all of it while there is none).
    buffer: Vec<u8>,
    file: Option<File>,
    /// Bytes already in `file`.
    written: u64,
}

impl Spool {
    pub fn new(settings: Arc<SpoolSettings>) -> Spool {
        Spool {
            settings,
            buffer: Vec::new(),
            file: None,
            written: 0,
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.written + self.buffer.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append `bytes`. An error (no space, no spool directory) loses this
    /// message only: the session refuses it with a 451.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buffer.extend_from_slice(bytes);
        let limit = if self.file.is_some() {
            WRITE_CHUNK
        } else {
            self.settings.threshold
        };
        if self.buffer.len() > limit {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile_in(&self.settings.dir)?),
        };
        file.write_all(&self.buffer)?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        if self.buffer.capacity() > 2 * WRITE_CHUNK {
            // The in-memory phase grew it up to the threshold: give that back.
            self.buffer = Vec::with_capacity(2 * WRITE_CHUNK);
        }
        Ok(())
    }

    /// The whole message, readable by the plugins.
    pub fn finish(mut self) -> io::Result<Content> {
        if self.file.is_none() {
            return Ok(Content::from(std::mem::take(&mut self.buffer)));
        }
        self.flush()?;
        let len = self.written;
        Ok(Content(Stored::File {
            file: self.file.take().expect("flushed to a file"),
            len,
        }))
    }
}

/// A received message's content, shared by the plugins that read it.
pub struct Content(Stored);

enum Stored {
    Memory(Vec<u8>),
    File { file: File, len: u64 },
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Content {
        Content(Stored::Memory(bytes))
    }
}

impl Content {
    pub fn len(&self) -> u64 {
        match &self.0 {
            Stored::Memory(bytes) => bytes.len() as u64,
            Stored::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` bytes from `offset` (fewer only at the end).
    pub fn read(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let start = offset.min(self.len());
        let end = start.saturating_add(max as u64).min(self.len());
        match &self.0 {
            Stored::Memory(bytes) => Ok(bytes[start as usize..end as usize].to_vec()),
            Stored::File { file, .. } => {
                // A positioned read: plugins reading at once share no cursor.
                let mut piece = vec![0; (end - start) as usize];
                file.read_exact_at(&mut piece, start)?;
                Ok(piece)
            }
        }
    }

    /// Whether the content went to a spool file.
    pub fn is_spooled(&self) -> bool {
        matches!(self.0, Stored::File { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(threshold: usize) -> Spool {
        Spool::new(Arc::new(SpoolSettings {
            dir: std::env::temp_dir(),
            threshold,
        }))
    }

    fn read_all(content: &Content, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let chunk = content.read(out.len() as u64, piece).unwrap();
            if chunk.is_empty() {
                return out;
            }
            out.extend_from_slice(&chunk);
        }
    }

    #[test]
    fn small_messages_stay_in_memory() {
        let mut s = spool(100);
        s.write(b"Subject: hi\r\n\r\nbody\r\n").unwrap();
        let content = s.finish().unwrap();
        assert!(!content.is_spooled());
        assert_eq!(read_all(&content, 7), b"Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn large_messages_go_to_a_file_and_read_back_whole() {
        let message: Vec<u8> = (0..3 * WRITE_CHUNK + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut s = spool(1000);
        for piece in message.chunks(4093) {
            s.write(piece).unwrap();
            assert!(
                s.buffer.len() <= WRITE_CHUNK + 4093,
                "the buffer stays bounded"
            );
        }
        assert_eq!(s.len(), message.len() as u64);
        let content = s.finish().unwrap();
        assert!(content.is_spooled());
        assert_eq!(content.len(), message.len() as u64);
        assert_eq!(read_all(&content, 65536), message);
        assert_eq!(content.read(10, 5).unwrap(), &message[10..15]);
        assert!(content.read(content.len() + 7, 5).unwrap().is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let settings = SpoolSettings {
            dir: "/nonexistent/spool".into(),
            threshold: 4,
        };
        assert!(settings.check().unwrap_err().contains("/nonexistent/spool"));
        let mut s = Spool::new(Arc::new(settings));
        assert!(s.write(b"0123456789").is_err());
    }
}
