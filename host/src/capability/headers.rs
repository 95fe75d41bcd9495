//! `wasmtp:smtp/headers`: add, remove and rename header fields. The edits
//! are kept with the transaction, in order, and applied to a *view* of the
//! message ([`MessageView`]): the edited header block followed by the
//! original rest, read from the spool unchanged. Every plugin reading
//! `content` after an edit (a later plugin of the chain, Mailbox, Proxy)
//! reads the view.

use std::io;
use std::sync::Arc;

use crate::plugin::bindings::wasmtp::smtp::headers::{self, Error};
use crate::plugin::host::HostState;
use crate::smtp::spool::Content;

/// The longest field name.
pub const MAX_NAME: usize = 76;
/// The longest value of an added field, in bytes.
pub const MAX_VALUE: usize = 8192;
/// The longest line of an added field (RFC 5322 §2.1.1), without its ending.
pub const MAX_LINE: usize = 998;
/// The most edits in one transaction.
pub const MAX_EDITS: usize = 64;
/// The most bytes of added fields in one transaction.
pub const MAX_ADDED: usize = 64 << 10;
/// How much of a message's header block `remove` and `rename` look at.
pub const MAX_HEAD: usize = 1 << 20;

/// One edit, as a plugin asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// `name: value`, the value's folding as given (normalised when written).
    Add { name: String, value: String },
    Remove {
        name: String,
        claiming: Option<String>,
    },
    Rename {
        name: String,
        claiming: Option<String>,
        to: String,
    },
}

/// A transaction's header edits, in the order they were made.
#[derive(Clone, Debug, Default)]
pub struct Edits {
    edits: Vec<Edit>,
    added: usize,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    pub fn len(&self) -> usize {
        self.edits.len()
    }

    /// Check `edit` and keep it, or say why not (keeping nothing).
    pub fn push(&mut self, edit: Edit) -> Result<(), Error> {
        match &edit {
            Edit::Add { name, value } => {
                check_name(name)?;
                check_value(name, value)?;
            }
            Edit::Remove { name, claiming } => {
                check_name(name)?;
                check_claiming(claiming.as_deref())?;
            }
            Edit::Rename { name, claiming, to } => {
                check_name(name)?;
                check_name(to)?;
                check_claiming(claiming.as_deref())?;
            }
        }
        if self.edits.len() >= MAX_EDITS {
            return Err(Error::Budget(format!(
                "the transaction already has {MAX_EDITS} header edits"
            )));
        }
        let added = added_bytes(&edit);
        if self.added + added > MAX_ADDED {
            return Err(Error::Budget(format!(
                "the added fields would take {} bytes; at most {MAX_ADDED}",
                self.added + added
            )));
        }
        self.added += added;
        self.edits.push(edit);
        Ok(())
    }
}

/// What an edit adds to the message, about.
fn added_bytes(edit: &Edit) -> usize {
    match edit {
        Edit::Add { name, value } => name.len() + value.len() + 4,
        _ => 0,
    }
}

impl Edits {
    /// Drop the edits after the first `n` (a failed hook call's).
    pub fn truncate(&mut self, n: usize) {
        self.edits.truncate(n);
        self.added = self.edits.iter().map(added_bytes).sum();
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "a field name is 1 to {MAX_NAME} characters; `{}` is {}",
            name.escape_debug(),
            name.len()
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(Error::Invalid(format!(
            "a field name is printable ASCII without `:` or spaces; not `{}`",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn check_claiming(id: Option<&str>) -> Result<(), Error> {
    match id {
        Some(id)
            if id.is_empty()
                || id
                    .chars()
                    .any(|c| c.is_whitespace() || c == ';' || c.is_control()) =>
        {
            Err(Error::Invalid(format!(
                "an authserv-id is one token, not `{}`",
                id.escape_debug()
            )))
        }
        _ => Ok(()),
    }
}

/// A value may fold (a line break followed by a space or tab), and holds no
/// other control character than tab: no header injection.
fn check_value(name: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_VALUE {
        return Err(Error::Invalid(format!(
            "the value is {} bytes; at most {MAX_VALUE}",
            value.len()
        )));
    }
    let bytes = value.as_bytes();
    // The first line carries `Name: ` too.
    let mut line = name.len() + 2;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let brk = match b {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => 2,
            b'\n' => 1,
            b'\r' => return Err(Error::Invalid("a bare CR in the value".into())),
            b'\t' => 0,
            _ if b < 0x20 || b == 0x7f => {
                return Err(Error::Invalid(format!(
                    "a control character (0x{b:02x}) in the value"
                )));
            }
            _ => 0,
        };
        if brk > 0 {
            if !matches!(bytes.get(i + brk), Some(b' ' | b'\t')) {
                return Err(Error::Invalid(
                    "a line break in the value not followed by a space or tab (only folding is allowed)"
                        .into(),
                ));
            }
            line = 0;
            i += brk;
            continue;
        }
        line += 1;
        if line > MAX_LINE {
            return Err(Error::Invalid(format!(
                "a line of the field is longer than {MAX_LINE} bytes; fold it"
            )));
        }
        i += 1;
    }
    Ok(())
}

/// One field of a header block, as its bytes.
#[derive(Clone, Debug)]
struct Field {
    /// Where the name ends in `raw`.
    name_len: usize,
    raw: Vec<u8>,
}

impl Field {
    fn name(&self) -> &[u8] {
        &self.raw[..self.name_len]
    }

    fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value: after the colon.
    fn value(&self) -> &[u8] {
        let colon = self.raw[self.name_len..]
            .iter()
            .position(|b| *b == b':')
            .map_or(self.raw.len(), |p| self.name_len + p + 1);
        &self.raw[colon..]
    }

    fn claims(&self, id: &str) -> bool {
        let value = skip_cfws(self.value());
        value.len() >= id.len()
            && value[..id.len()].eq_ignore_ascii_case(id.as_bytes())
            && value
                .get(id.len())
                .is_none_or(|b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
    }

    fn renamed(&self, to: &str) -> Field {
        let mut raw = to.as_bytes().to_vec();
        raw.extend_from_slice(&self.raw[self.name_len..]);
        Field {
            name_len: to.len(),
            raw,
        }
    }
}

/// Skips white space, line breaks and (nested) comments.
fn skip_cfws(mut s: &[u8]) -> &[u8] {
    loop {
        match s.first() {
            Some(b' ' | b'\t' | b'\r' | b'\n') => s = &s[1..],
            Some(b'(') => {
                let mut depth = 0usize;
                let mut i = 0;
                while i < s.len() {
                    match s[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                s = s.get(i + 1..).unwrap_or_default();
            }
            _ => return s,
        }
    }
}

/// A parsed header block: its fields, where the rest of the message starts,
/// and the message's line ending.
struct Head {
    fields: Vec<Field>,
    rest: u64,
    crlf: bool,
}

/// Reads the header block of `content` (its first [`MAX_HEAD`] bytes at most).
fn parse(content: &Content) -> io::Result<Head> {
    let bytes = content.read(0, MAX_HEAD)?;
    let complete = bytes.len() as u64 == content.len();
    let crlf = match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => i > 0 && bytes[i - 1] == b'\r',
        None => true,
    };
    let mut fields: Vec<Field> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = match bytes[at..].iter().position(|b| *b == b'\n') {
            Some(i) => at + i + 1,
            // The last line, without an ending: a field only if the
            // message ends here (not cut by MAX_HEAD).
            None if complete => bytes.len(),
            None => break,
        };
        let line = &bytes[at..end];
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            match fields.last_mut() {
                Some(field) => field.raw.extend_from_slice(line),
                None => break,
            }
        } else {
            let name_len = line
                .iter()
                .position(|b| !b.is_ascii_graphic() || *b == b':')
                .unwrap_or(line.len());
            let colon = line[name_len..]
                .iter()
                .position(|b| *b != b' ' && *b != b'\t')
                .is_some_and(|p| line[name_len + p] == b':');
            if name_len == 0 || !colon {
                break; // not a header line: the body starts here
            }
            fields.push(Field {
                name_len,
                raw: line.to_vec(),
            });
        }
        at = end;
    }
    // Cut by MAX_HEAD: the last field may go on past what was read; leave
    // it (and the rest) as they are.
    if at >= bytes.len()
        && !complete
        && let Some(last) = fields.pop()
    {
        at -= last.raw.len();
    }
    Ok(Head {
        fields,
        rest: at as u64,
        crlf,
    })
}

/// Apply `edit` to `fields`; how many fields it concerned.
fn apply(fields: &mut Vec<Field>, edit: &Edit, crlf: bool) -> u32 {
    let concerned = |f: &Field, name: &str, claiming: &Option<String>| {
        f.is(name) && claiming.as_deref().is_none_or(|id| f.claims(id))
    };
    match edit {
        Edit::Add { name, value } => {
            let ending: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut raw = format!("{name}: ").into_bytes();
            // Folding as given, with the message's own line endings.
            for (i, line) in value.split('\n').enumerate() {
                if i > 0 {
                    raw.extend_from_slice(ending);
                }
                raw.extend_from_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
            }
            raw.extend_from_slice(ending);
            fields.insert(
                0,
                Field {
                    name_len: name.len(),
                    raw,
                },
            );
            1
        }
        Edit::Remove { name, claiming } => {
            let before = fields.len();
            fields.retain(|f| !concerned(f, name, claiming));
            (before - fields.len()) as u32
        }
        Edit::Rename { name, claiming, to } => {
            let mut n = 0;
            for f in fields.iter_mut() {
                if concerned(f, name, claiming) {
                    *f = f.renamed(to);
                    n += 1;
                }
            }
            n
        }
    }
}

/// The message as the plugins read it: the original content, or, once a
/// plugin has edited its header fields, the edited header block followed
/// by the original rest.
pub struct MessageView {
    content: Arc<Content>,
    /// The edited header block, and where the original's rest starts.
    head: Option<(Vec<u8>, u64)>,
    /// This view parsed, once, by the first `wasmtp:smtp/message` call.
    pub parsed: super::message::ParseCache,
}

impl From<Arc<Content>> for MessageView {
    /// The message as received.
    fn from(content: Arc<Content>) -> MessageView {
        MessageView {
            content,
            head: None,
            parsed: Default::default(),
        }
    }
}

impl MessageView {
    /// `content` with `edits` applied. With no edits this is the content
    /// itself, at no cost.
    pub fn new(content: Arc<Content>, edits: &Edits) -> io::Result<MessageView> {
        if edits.is_empty() {
            return Ok(MessageView {
                content,
                head: None,
                parsed: Default::default(),
            });
        }
        let mut head = parse(&content)?;
        for edit in &edits.edits {
            apply(&mut head.fields, edit, head.crlf);
        }
        let bytes = head
            .fields
            .iter()
            .flat_map(|f| f.raw.iter().copied())
            .collect();
        Ok(MessageView {
            content,
            head: Some((bytes, head.rest)),
            parsed: Default::default(),
        })
    }

    /// The original content, as received.
    pub fn original(&self) -> &Arc<Content> {
        &self.content
    }

    pub fn len(&self) -> u64 {
        match &self.head {
            None => self.content.len(),
            Some((head, rest)) => head.len() as u64 + self.content.len() - rest,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` bytes from `offset` (fewer only at the end).
    pub fn read(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let Some((head, rest)) = &self.head else {
            return self.content.read(offset, max);
        };
        let head_len = head.len() as u64;
        let mut out = Vec::new();
        if offset < head_len {
            let end = (offset as usize).saturating_add(max).min(head.len());
            out.extend_from_slice(&head[offset as usize..end]);
        }
        let wanted = max - out.len();
        if wanted > 0 {
            let from = rest + offset.saturating_sub(head_len);
            out.extend(self.content.read(from, wanted)?);
        }
        Ok(out)
    }
}

impl HostState {
    /// Record `edit` in the transaction's header edits; how many fields of
    /// the message as this call sees it (the fields added so far before
    /// DATA) it concerned.
    fn edit_headers(&mut self, edit: Edit) -> Result<u32, Error> {
        let Some(shared) = &self.capabilities.shared else {
            return Err(Error::Unavailable);
        };
        if !self.capabilities.edits_allowed {
            return Err(Error::Unavailable);
        }
        let mut edits = shared.headers();
        edits.push(edit.clone())?;
        let mut fields = Vec::new();
        let mut crlf = true;
        if let Some(view) = &self.content
            && let Ok(head) = parse(view.original())
        {
            fields = head.fields;
            crlf = head.crlf;
        }
        let (done, last) = edits.edits.split_at(edits.edits.len() - 1);
        for e in done {
            apply(&mut fields, e, crlf);
        }
        Ok(apply(&mut fields, &last[0], crlf))
    }
}

impl headers::Host for HostState {
    fn add(&mut self, name: String, value: String) -> Result<(), Error> {
        self.edit_headers(Edit::Add { name, value }).map(drop)
    }

    fn remove(&mut self, name: String) -> Result<u32, Error> {
        self.edit_headers(Edit::Remove {
            name,
            claiming: None,
        })
    }

    fn rename(&mut self, name: String, new_name: String) -> Result<u32, Error> {
        self.edit_headers(Edit::Rename {
            name,
            claiming: None,
            to: new_name,
        })
    }

    fn remove_claiming(&mut self, name: String, authserv_id: String) -> Result<u32, Error> {
        self.edit_headers(Edit::Remove {
            name,
            claiming: Some(authserv_id),
        })
    }

    fn rename_claiming(
        &mut self,
        name: String,
        authserv_id: String,
        new_name: String,
    ) -> Result<u32, Error> {
        self.edit_headers(Edit::Rename {
            name,
            claiming: Some(authserv_id),
            to: new_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(message: &str, edits: &[Edit]) -> String {
        let mut e = Edits::default();
        for edit in edits {
            e.push(edit.clone()).unwrap();
        }
        let v = MessageView::new(Arc::new(Content::from(message.as_bytes().to_vec())), &e).unwrap();
        let mut out = Vec::new();
        // Odd piece sizes cross the head/rest boundary.
        loop {
            let piece = v.read(out.len() as u64, 7).unwrap();
            if piece.is_empty() {
                break;
            }
            out.extend(piece);
        }
        assert_eq!(out.len() as u64, v.len());
        String::from_utf8(out).unwrap()
    }

    fn add(name: &str, value: &str) -> Edit {
        Edit::Add {
            name: name.into(),
            value: value.into(),
        }
    }

    fn remove(name: &str) -> Edit {
        Edit::Remove {
            name: name.into(),
            claiming: None,
        }
    }

    const MESSAGE: &str = "Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam: yes\r\nx-spam: also\r\n\r\nbody\r\nX-Spam: in the body\r\n";

    #[test]
    fn edits_apply_in_order_to_the_header_block_only() {
        assert_eq!(view(MESSAGE, &[]), MESSAGE);
        assert_eq!(
            view(
                MESSAGE,
                &[
                    add("X-First", "1"),
                    add("X-Second", "2\r\n\tfolded"),
                    remove("X-SPAM"),
                    Edit::Rename {
                        name: "subject".into(),
                        claiming: None,
                        to: "X-Original-Subject".into()
                    },
                ]
            ),
            "X-Second: 2\r\n\tfolded\r\nX-First: 1\r\nReceived: from a\r\n\tby b\r\nX-Original-Subject: hi\r\n\r\nbody\r\nX-Spam: in the body\r\n"
        );
        // Bare-LF messages get bare-LF fields.
        assert_eq!(
            view("A: 1\n\nbody\n", &[add("B", "2\n folded")]),
            "B: 2\n folded\nA: 1\n\nbody\n"
        );
        // No body, no blank line, no final line ending.
        assert_eq!(view("A: 1\r\nB: 2", &[remove("b")]), "A: 1\r\n");
        // A line that is not a field starts the body.
        assert_eq!(
            view("A: 1\r\nnot a header\r\nB: 2\r\n", &[remove("B")]),
            "A: 1\r\nnot a header\r\nB: 2\r\n"
        );
    }

    #[test]
    fn fields_claiming_an_authserv_id() {
        let message = "Authentication-Results: mx.example.com; spf=pass\r\n\
            Authentication-Results: (comment) MX.Example.com 1; dkim=pass\r\n\
            Authentication-Results: mx.example.com.evil; spf=pass\r\n\
            Authentication-Results: other.example; spf=fail\r\n\r\nbody\r\n";
        assert_eq!(
            view(
                message,
                &[Edit::Rename {
                    name: "authentication-results".into(),
                    claiming: Some("mx.example.com".into()),
                    to: "X-Forged-Authentication-Results".into()
                }]
            ),
            "X-Forged-Authentication-Results: mx.example.com; spf=pass\r\n\
            X-Forged-Authentication-Results: (comment) MX.Example.com 1; dkim=pass\r\n\
            Authentication-Results: mx.example.com.evil; spf=pass\r\n\
            Authentication-Results: other.example; spf=fail\r\n\r\nbody\r\n"
        );
        assert_eq!(
            view(
                message,
                &[Edit::Remove {
                    name: "Authentication-Results".into(),
                    claiming: Some("mx.example.com".into()),
                }]
            ),
            "Authentication-Results: mx.example.com.evil; spf=pass\r\n\
            Authentication-Results: other.example; spf=fail\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn injection_and_bounds_are_refused() {
        let mut e = Edits::default();
        let invalid = |r: Result<(), Error>| matches!(r, Err(Error::Invalid(_)));
        assert!(invalid(e.push(add("X-A", "1\r\nBcc: victim@example.com"))));
        assert!(invalid(e.push(add("X-A", "1\nBcc: x"))));
        assert!(invalid(e.push(add("X-A", "1\r\n\r\nbody"))));
        assert!(invalid(e.push(add("X-A", "1\rx"))));
        assert!(invalid(e.push(add("X-A", "nul\0"))));
        assert!(invalid(e.push(add("X-A:", "1"))));
        assert!(invalid(e.push(add("X A", "1"))));
        assert!(invalid(e.push(add("", "1"))));
        assert!(invalid(e.push(add(&"X".repeat(77), "1"))));
        assert!(invalid(e.push(add("X-A", &"v".repeat(997)))));
        assert!(invalid(e.push(add("X-A", &"v".repeat(8193)))));
        assert!(invalid(e.push(Edit::Remove {
            name: "A".into(),
            claiming: Some("a b".into())
        })));
        assert!(e.is_empty());
        e.push(add(
            "X-A",
            &format!("{}\r\n {}", "v".repeat(990), "w".repeat(990)),
        ))
        .unwrap();
        e.push(add("X-Tab", "a\tb")).unwrap();
        for _ in 2..MAX_EDITS {
            e.push(remove("X")).unwrap();
        }
        assert!(matches!(e.push(remove("X")), Err(Error::Budget(_))));
        // Eight folded values of 7941 bytes fit in 64 KiB; a ninth does not.
        let big = vec!["v".repeat(990); 8].join("\r\n ");
        let mut e = Edits::default();
        for _ in 0..8 {
            e.push(add("X-Big", &big)).unwrap();
        }
        assert!(matches!(e.push(add("X-Big", &big)), Err(Error::Budget(_))));
    }
}
