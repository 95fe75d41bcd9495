//! Mailbox: stores every message in a Maildir, as aiosmtpd's `Mailbox`
//! handler does, with the `X-Peer`, `X-MailFrom` and `X-RcptTo` headers its
//! `Message` base class adds.
//!
//! Arguments (`setup`): exactly one, the Maildir's directory. The host must
//! preopen that directory read-write at the same (absolute) path inside the
//! guest; the plugin needs no other file. `tmp`, `new` and `cur` are created
//! when missing, as Python's `mailbox.Maildir(create=True)` does.
//!
//! Each message is written to `tmp/`, synced, then renamed into `new/`, so a
//! reader never sees half a message. The content is read through the
//! `content` import in chunks and written as it streams in; only the header
//! block is buffered (see `message`).

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:mailbox;
        world mailbox {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

mod message;

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use exports::wasmtp::smtp::{data, setup};
use message::MessageWriter;
use wasmtp::smtp::content;
use wasmtp::smtp::log::{Level, log};
use wasmtp::smtp::types::{Envelope, Reply, Session};

/// How much of the content to ask the host for, and to write, at a time.
const CHUNK: u32 = 64 * 1024;

/// The Maildir, from `init`; each instance has its own.
static MAILDIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The `Q` part of file names: tells apart the messages of one instance
/// (one session) written within the same microsecond.
static DELIVERIES: AtomicU64 = AtomicU64::new(1);

struct Mailbox;

impl setup::Guest for Mailbox {
    fn init(args: Vec<String>) -> Result<(), String> {
        // aiosmtpd's `parser.error` texts.
        match <[String; 1]>::try_from(args) {
            Ok([path]) => {
                // The directories inside may not exist yet: they are made
                // at the first delivery, so nothing is checked here.
                *MAILDIR.lock().unwrap() = Some(PathBuf::from(path));
                Ok(())
            }
            Err(args) if args.is_empty() => Err("The directory for the maildir is required".into()),
            Err(_) => Err("Too many arguments for Mailbox handler".into()),
        }
    }
}

impl data::Guest for Mailbox {
    fn handle_data(session: Session, envelope: Envelope) -> Option<Reply> {
        // The host calls `init` first; were it not to, refusing beats
        // accepting a message and storing it nowhere.
        let Some(maildir) = MAILDIR.lock().unwrap().clone() else {
            return Some(not_delivered("no Maildir was configured"));
        };
        let error = deliver(&maildir, &session, &envelope).err()?;
        log(Level::Error, &format!("cannot deliver to the Maildir {}: {error}", maildir.display()));
        Some(not_delivered(&error.to_string()))
    }
}

/// The reply when a message could not be stored: temporary, so the client
/// tries again later (aiosmtpd would answer 500 with the Python exception).
fn not_delivered(reason: &str) -> Reply {
    Reply {
        code: 451,
        enhanced: Some("4.3.0".into()),
        lines: vec![format!("Error: cannot deliver to mailbox: {reason}")],
    }
}

/// Writes the message to `tmp/`, syncs it and moves it into `new/`, as
/// `mailbox.Maildir.add` does. Nothing is left in `tmp/` on failure.
fn deliver(maildir: &Path, session: &Session, envelope: &Envelope) -> io::Result<()> {
    for dir in ["tmp", "new", "cur"] {
        match fs::create_dir(maildir.join(dir)) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
    }
    let name = unique_name(&session.server_hostname, session.id)?;
    let tmp = maildir.join("tmp").join(&name);
    let file = File::options().write(true).create_new(true).open(&tmp)?;
    let written = write_message(file, session, envelope).and_then(|()| fs::rename(&tmp, maildir.join("new").join(&name)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn write_message(file: File, session: &Session, envelope: &Envelope) -> io::Result<()> {
    // What aiosmtpd's `Message.prepare_message` adds: `str(session.peer)`,
    // the sender, and the recipients joined by ", ".
    let peer = format!("('{}', {})", session.peer.address, session.peer.port);
    let mail_from = envelope.mail_from.as_deref().unwrap_or_default();
    let rcpt_tos = envelope.rcpt_tos.join(", ");
    let added = [("X-Peer", peer.as_str()), ("X-MailFrom", mail_from), ("X-RcptTo", rcpt_tos.as_str())];
    let mut writer = MessageWriter::new(BufWriter::with_capacity(CHUNK as usize, file), &added);
    let mut offset = 0;
    loop {
        let chunk = content::read(offset, CHUNK);
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        writer.feed(&chunk)?;
    }
    let file = writer.finish()?.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// A Maildir file name, as Python's `mailbox` makes them plus the `R` part
/// of the Maildir convention: `{secs}.M{micros}P{session}Q{count}R{random}.{host}`.
/// A guest has no process id; the session id stands in for it, and the
/// random part keeps names unique across server processes.
fn unique_name(hostname: &str, session_id: u64) -> io::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let count = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    let random = getrandom::u64().map_err(|error| io::Error::other(error.to_string()))?;
    // `/` would make a path and `:` starts a Maildir name's info part.
    let hostname = hostname.replace('/', "\\057").replace(':', "\\072");
    Ok(format!("{}.M{}P{session_id}Q{count}R{random:016x}.{hostname}", now.as_secs(), now.subsec_micros()))
}

export!(Mailbox);
