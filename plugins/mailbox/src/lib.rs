//! Mailbox: stores every message in a Maildir, as aiosmtpd's `Mailbox`
//! handler does, with the `X-Peer`, `X-MailFrom` and `X-RcptTo` headers its
//! `Message` base class adds (the SDK's [`Message::prepare`]).
//!
//! Arguments (`setup`): exactly one, the Maildir's directory. The host must
//! preopen that directory read-write at the same (absolute) path inside the
//! guest; the plugin needs no other file. `tmp`, `new` and `cur` are created
//! when missing, as Python's `mailbox.Maildir(create=True)` does.
//!
//! Each message is written to `tmp/`, synced, then renamed into `new/`, so a
//! reader never sees half a message. Only the header block is held in
//! memory; the body streams from the host into the file.
//!
//! The file is written with `wasi:filesystem`'s positioned `write` rather
//! than through `std::fs::File`: std writes files through a WASI output
//! stream, which wasmtime-wasi services on a thread of its blocking pool (a
//! thread hop and back per write), while `descriptor.write` runs where the
//! hook runs, as fsync does (BENCHMARKS.md, Mailbox against a native writer).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};
use wasmtp_plugin::{Args, Content, Envelope, Message, Plugin, Reply, Session};

/// The write buffer: matches the chunks the content arrives in.
const CHUNK: usize = 64 * 1024;

/// The `Q` part of file names: tells apart the messages of one instance
/// (one session) written within the same microsecond.
static DELIVERIES: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct Mailbox {
    /// From `init`; each session's instance gets it.
    maildir: Option<PathBuf>,
}

#[wasmtp_plugin::plugin]
impl Plugin for Mailbox {
    fn init(&mut self, args: Args) -> Result<(), String> {
        // aiosmtpd's `parser.error` texts.
        match <[String; 1]>::try_from(args.rest()) {
            Ok([path]) => {
                // The directories inside may not exist yet: they are made
                // at the first delivery, so nothing is checked here.
                self.maildir = Some(PathBuf::from(path));
                Ok(())
            }
            Err(args) if args.is_empty() => Err("The directory for the maildir is required".into()),
            Err(_) => Err("Too many arguments for Mailbox handler".into()),
        }
    }

    fn data(&mut self, session: &Session, envelope: &Envelope, content: Content) -> Option<Reply> {
        // The host calls `init` first; were it not to, refusing beats
        // accepting a message and storing it nowhere.
        let Some(maildir) = &self.maildir else {
            return Some(not_delivered("no Maildir was configured"));
        };
        let error = Message::prepare(session, envelope, content)
            .and_then(|message| deliver(maildir, session, message))
            .err()?;
        wasmtp_plugin::error!(
            "cannot deliver to the Maildir {}: {error}",
            maildir.display()
        );
        Some(not_delivered(&error.to_string()))
    }
}

/// The reply when a message could not be stored: temporary, so the client
/// tries again later (aiosmtpd would answer 500 with the Python exception).
fn not_delivered(reason: &str) -> Reply {
    Reply::temporary_failure(format!("Error: cannot deliver to mailbox: {reason}"))
}

/// `handle_message`: writes the message to `tmp/` as `mailbox.Maildir.add`
/// flattens it, syncs it and moves it into `new/`. Nothing is left in
/// `tmp/` on failure.
fn deliver(maildir: &Path, session: &Session, message: Message) -> io::Result<()> {
    for dir in ["tmp", "new", "cur"] {
        match fs::create_dir(maildir.join(dir)) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
    }
    let name = unique_name(&session.server_hostname, session.id)?;
    let tmp = maildir.join("tmp").join(&name);
    let file = PositionedFile::create_new(maildir, &format!("tmp/{name}"))?;
    let mut out = BufWriter::with_capacity(CHUNK, file);
    let written = out
        .write_all(received(session, SystemTime::now()).as_bytes())
        .and_then(|()| message.write_flattened(out))
        .and_then(|out| out.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|file| file.sync())
        .and_then(|()| fs::rename(&tmp, maildir.join("new").join(&name)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A new file written with positioned writes (`pwrite`), see the crate docs.
struct PositionedFile {
    file: Descriptor,
    offset: u64,
}

impl PositionedFile {
    /// Create `relative` (which must not exist) under `maildir`, which must
    /// be a preopened directory or lie inside one.
    fn create_new(maildir: &Path, relative: &str) -> io::Result<PositionedFile> {
        let (dir, inside) = preopen_of(maildir)?;
        let path = match inside.as_os_str().is_empty() {
            true => relative.to_owned(),
            false => format!("{}/{relative}", inside.display()),
        };
        let file = dir
            .open_at(
                PathFlags::empty(),
                &path,
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::WRITE,
            )
            .map_err(wasi_error)?;
        Ok(PositionedFile { file, offset: 0 })
    }

    fn sync(self) -> io::Result<()> {
        self.file.sync().map_err(wasi_error)
    }
}

impl Write for PositionedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf, self.offset).map_err(wasi_error)?;
        self.offset += n;
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The preopened directory `path` is in, and `path` relative to it.
fn preopen_of(path: &Path) -> io::Result<(Descriptor, PathBuf)> {
    get_directories()
        .into_iter()
        .filter_map(|(dir, guest)| {
            let inside = path.strip_prefix(&guest).ok()?.to_path_buf();
            Some((guest.len(), dir, inside))
        })
        // The innermost preopen, should several contain the path.
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, dir, inside)| (dir, inside))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not in a directory granted to the plugin",
                    path.display()
                ),
            )
        })
}

fn wasi_error(code: ErrorCode) -> io::Error {
    let kind = match code {
        ErrorCode::Exist => io::ErrorKind::AlreadyExists,
        ErrorCode::NoEntry => io::ErrorKind::NotFound,
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
            io::ErrorKind::PermissionDenied
        }
        ErrorCode::InsufficientSpace => io::ErrorKind::StorageFull,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, code.message())
}

/// The trace header MTAs put on top of a message they take in (RFC 5321
/// §4.4), with the server's queue id so the log lines of the transaction
/// can be found from the stored message:
/// `Received: from HELO (PEER) by HOST (wasmtp) with ESMTP id QUEUEID; DATE`.
fn received(session: &Session, now: SystemTime) -> String {
    let helo = session.host_name.as_deref().unwrap_or("unknown");
    // RFC 3848's protocol names: S for TLS, A for an authenticated client.
    let mut with = if session.lmtp {
        "LMTP"
    } else if session.extended_smtp {
        "ESMTP"
    } else {
        "SMTP"
    }
    .to_owned();
    if session.tls.is_some() {
        with.push('S');
    }
    if session.authenticated && !session.lmtp {
        with.push('A');
    }
    let id = wasmtp_plugin::queue_id()
        .map(|id| format!(" id {id}"))
        .unwrap_or_default();
    format!(
        "Received: from {helo} ({})\n\tby {} (wasmtp) with {with}{id};\n\t{}\n",
        session.peer.address,
        session.server_hostname,
        rfc5322_date(now)
    )
}

/// `Fri, 27 Nov 2026 00:15:03 +0000` (UTC; a plugin has no time zone).
fn rfc5322_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates_as_rfc_5322_writes_them() {
        assert_eq!(
            super::rfc5322_date(UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        assert_eq!(
            super::rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_795_738_503)),
            "Fri, 27 Nov 2026 00:15:03 +0000"
        );
        assert_eq!(
            super::rfc5322_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }
}

/// A Maildir file name, as Python's `mailbox` makes them plus the `R` part
/// of the Maildir convention: `{secs}.M{micros}P{session}Q{count}R{random}.{host}`.
/// A guest has no process id; the session id stands in for it, and the
/// random part keeps names unique across server processes.
fn unique_name(hostname: &str, session_id: u64) -> io::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let count = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    let random = getrandom::u64().map_err(|error| io::Error::other(error.to_string()))?;
    // `/` would make a path and `:` starts a Maildir name's info part.
    let hostname = hostname.replace('/', "\\057").replace(':', "\\072");
    Ok(format!(
        "{}.M{}P{session_id}Q{count}R{random:016x}.{hostname}",
        now.as_secs(),
        now.subsec_micros()
    ))
}
