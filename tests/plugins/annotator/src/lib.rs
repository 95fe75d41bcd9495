//! annotator: calls the granted imports as its arguments say, so the tests
//! drive every capability through the real server with one plugin.
//!
//! Each argument is `HOOK:ACTION[:ARG]`, HOOK one of `mail`, `rcpt`,
//! `data`, `rset`; the actions of a hook run in order when it is called:
//!
//! - `note-set:KEY=VALUE`, `note-fill:KEY=N` (N bytes of `x`), `note-del:KEY`;
//! - `reply-notes`: answer the hook `250 notes: k=v, ...` (a value over 40
//!   bytes shows as `k=<N bytes>`; `(none)` when empty), so a client reads
//!   the notes;
//! - `header-add:NAME=VALUE`, `header-remove:NAME`, `header-rename:NAME=NEW`,
//!   `header-remove-claiming:NAME=ID`, `header-rename-claiming:NAME=ID=NEW`;
//! - `sender:ADDRESS`, `add-rcpt:ADDRESS`, `del-rcpt:ADDRESS`: envelope edits;
//! - `reply-head` (in `data`): answer `250 head: NAME, NAME, ... (N bytes)`,
//!   the field names of the message as this call reads it, and its size.
//!
//! Every action's outcome is logged (`annotator: ACTION: ok` or `... error:
//! ...`), so a test reads the errors the host returned as values.

use std::io::BufRead;

use wasmtp_plugin::{
    Args, Content, Envelope, Plugin, Reply, Session, edit_envelope, headers, info, notes,
};

#[derive(Default)]
struct Annotator {
    actions: Vec<(String, String)>,
}

fn show_notes() -> String {
    let notes: Vec<String> = notes::keys()
        .into_iter()
        .map(|k| {
            let v = notes::get(&k).unwrap_or_default();
            if v.len() > 40 {
                format!("{k}=<{} bytes>", v.len())
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    if notes.is_empty() {
        return "notes: (none)".into();
    }
    format!("notes: {}", notes.join(", "))
}

/// The field names of the message's header block, and its size.
fn show_head(content: &mut Option<Content>) -> String {
    let Some(content) = content else {
        return "head: no message here".into();
    };
    let size = content.size();
    let mut names = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if content.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            break;
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    format!("head: {} ({size} bytes)", names.join(", "))
}

fn counted(result: Result<u32, headers::Error>) -> Result<String, String> {
    result
        .map(|n| format!("ok {n}"))
        .map_err(|e| format!("{e:?}"))
}

impl Annotator {
    fn run(&mut self, hook: &str) -> Option<Reply> {
        self.run_with(hook, None)
    }

    fn run_with(&mut self, hook: &str, mut content: Option<Content>) -> Option<Reply> {
        let mut reply = None;
        for (h, action) in &self.actions {
            if h != hook {
                continue;
            }
            let (verb, arg) = action.split_once(':').unwrap_or((action, ""));
            let outcome: Result<String, String> = match verb {
                "note-set" => {
                    let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
                    notes::set(k, v)
                        .map(|()| "ok".into())
                        .map_err(|e| format!("{e:?}"))
                }
                "note-fill" => {
                    let (k, n) = arg.split_once('=').unwrap_or((arg, "0"));
                    let value = "x".repeat(n.parse().unwrap_or(0));
                    notes::set(k, &value)
                        .map(|()| "ok".into())
                        .map_err(|e| format!("{e:?}"))
                }
                "note-del" => Ok(format!("removed={}", notes::remove(arg))),
                "header-add" => {
                    let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
                    counted(headers::add(name, value).map(|()| 1))
                }
                "header-remove" => counted(headers::remove(arg)),
                "header-rename" => {
                    let (name, to) = arg.split_once('=').unwrap_or((arg, ""));
                    counted(headers::rename(name, to))
                }
                "header-remove-claiming" => {
                    let (name, id) = arg.split_once('=').unwrap_or((arg, ""));
                    counted(headers::remove_claiming(name, id))
                }
                "header-rename-claiming" => {
                    let mut parts = arg.splitn(3, '=');
                    let (name, id, to) = (
                        parts.next().unwrap_or_default(),
                        parts.next().unwrap_or_default(),
                        parts.next().unwrap_or_default(),
                    );
                    counted(headers::rename_claiming(name, id, to))
                }
                "sender" => edit_envelope::set_sender(arg)
                    .map(|()| "ok".into())
                    .map_err(|e| format!("{e:?}")),
                "add-rcpt" => edit_envelope::add_recipient(arg)
                    .map(|()| "ok".into())
                    .map_err(|e| format!("{e:?}")),
                "del-rcpt" => edit_envelope::remove_recipient(arg)
                    .map(|found| format!("ok {found}"))
                    .map_err(|e| format!("{e:?}")),
                "reply-head" => {
                    reply = Some(Reply::text(250, show_head(&mut content)));
                    Ok("ok".into())
                }
                "reply-notes" => {
                    reply = Some(Reply::text(250, show_notes()));
                    Ok("ok".into())
                }
                other => Err(format!("unknown action {other}")),
            };
            match outcome {
                Ok(what) => info!("annotator: {hook}:{action}: {what}"),
                Err(e) => info!("annotator: {hook}:{action}: error: {e}"),
            }
        }
        reply
    }
}

#[wasmtp_plugin::plugin]
impl Plugin for Annotator {
    fn init(&mut self, args: Args) -> Result<(), String> {
        for arg in args.rest() {
            let (hook, action) = arg
                .split_once(':')
                .ok_or_else(|| format!("`{arg}`: expected HOOK:ACTION"))?;
            self.actions.push((hook.to_owned(), action.to_owned()));
        }
        Ok(())
    }

    fn mail(&mut self, _: &Session, _: &Envelope, _: &str, _: &[String]) -> Option<Reply> {
        self.run("mail")
    }

    fn rcpt(&mut self, _: &Session, _: &Envelope, _: &str, _: &[String]) -> Option<Reply> {
        self.run("rcpt")
    }

    fn data(&mut self, _: &Session, _: &Envelope, content: Content) -> Option<Reply> {
        self.run_with("data", Some(content))
    }

    fn rset(&mut self, _: &Session, _: &Envelope) -> Option<Reply> {
        self.run("rset")
    }
}
