//! `wasmtp:smtp/envelope`: replace the sender, add and remove recipients
//! (milter's `chgfrom`, `addrcpt`, `delrcpt`). A plugin's calls are
//! checked against an [`Editor`] the chain hands it for one hook call (the
//! envelope as it will be, and the bound), and recorded as [`Op`]s that the
//! chain and the session apply ([`apply`]) — the host owns the envelope
//! (DESIGN.md, decision 3).

use crate::plugin::bindings::wasmtp::smtp::envelope::{self, Error};
use crate::plugin::host::HostState;
use crate::smtp::address;
use crate::smtp::envelope::Envelope;

/// One edit of the envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Sender(String),
    Add(String),
    Remove(String),
}

/// Apply `op` to `envelope`.
pub fn apply(envelope: &mut Envelope, op: &Op) {
    match op {
        Op::Sender(address) => envelope.mail_from = Some(address.clone()),
        Op::Add(address) => {
            if !envelope
                .rcpt_tos
                .iter()
                .any(|r| r.eq_ignore_ascii_case(address))
            {
                envelope.rcpt_tos.push(address.clone());
                envelope.rcpt_options.push(Vec::new());
            }
        }
        Op::Remove(address) => {
            while let Some(i) = envelope
                .rcpt_tos
                .iter()
                .position(|r| r.eq_ignore_ascii_case(address))
            {
                envelope.rcpt_tos.remove(i);
                if i < envelope.rcpt_options.len() {
                    envelope.rcpt_options.remove(i);
                }
            }
        }
    }
}

/// What a plugin may edit during one hook call.
#[derive(Clone, Debug)]
pub struct Editor {
    /// The envelope as it will be with the edits so far.
    pub view: Envelope,
    /// The edits so far, in order.
    pub ops: Vec<Op>,
    /// The listener's `max_recipients`.
    pub max_recipients: usize,
}

impl Editor {
    pub fn new(view: Envelope, max_recipients: usize) -> Editor {
        Editor {
            view,
            ops: Vec::new(),
            max_recipients,
        }
    }

    /// Whether `rcpt` is a recipient of the envelope as it will be.
    fn has(&self, rcpt: &str) -> bool {
        self.view
            .rcpt_tos
            .iter()
            .any(|r| r.eq_ignore_ascii_case(rcpt))
    }

    fn push(&mut self, op: Op) {
        apply(&mut self.view, &op);
        self.ops.push(op);
    }

    /// `address` as the server's MAIL/RCPT parser reads it (bare or in
    /// `<>`), or why it is not an address.
    fn parse(&self, address: &str, null_ok: bool) -> Result<String, Error> {
        let invalid = |why: &str| Error::Invalid(format!("`{}`: {why}", address.escape_debug()));
        let (mailbox, rest) = address::split_address(address)
            .map_err(|_| invalid("not an address (RFC 5321 Mailbox)"))?;
        if !rest.is_empty() {
            return Err(invalid("not one address"));
        }
        if mailbox == "<>" && !null_ok {
            return Err(invalid("the null sender is not a recipient"));
        }
        if !mailbox.is_ascii() && !self.view.smtp_utf8 {
            return Err(invalid(
                "a non-ASCII address needs a transaction that gave SMTPUTF8",
            ));
        }
        Ok(mailbox)
    }
}

impl HostState {
    /// The envelope this call may edit: `unavailable` where it may not.
    fn editor(&mut self) -> Result<&mut Editor, Error> {
        self.capabilities
            .envelope
            .as_mut()
            .ok_or(Error::Unavailable)
    }
}

impl envelope::Host for HostState {
    fn set_sender(&mut self, address: String) -> Result<(), Error> {
        let editor = self.editor()?;
        let sender = editor.parse(&address, true)?;
        editor.push(Op::Sender(sender));
        Ok(())
    }

    fn add_recipient(&mut self, address: String) -> Result<(), Error> {
        let editor = self.editor()?;
        let rcpt = editor.parse(&address, false)?;
        if editor.has(&rcpt) {
            return Ok(());
        }
        if editor.view.rcpt_tos.len() >= editor.max_recipients {
            return Err(Error::Budget(format!(
                "the transaction has {} recipients, the listener's max_recipients",
                editor.max_recipients
            )));
        }
        editor.push(Op::Add(rcpt));
        Ok(())
    }

    fn remove_recipient(&mut self, address: String) -> Result<bool, Error> {
        let editor = self.editor()?;
        let rcpt = editor.parse(&address, false)?;
        if !editor.has(&rcpt) {
            return Ok(false);
        }
        editor.push(Op::Remove(rcpt));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_and_are_checked() {
        let mut e = Envelope {
            mail_from: Some("a@example.com".into()),
            rcpt_tos: vec!["b@example.com".into()],
            rcpt_options: vec![vec!["NOTIFY=NEVER".into()]],
            ..Envelope::default()
        };
        let mut ed = Editor::new(e.clone(), 2);
        assert!(matches!(
            ed.parse("not an address", false),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(ed.parse("a@b>", false), Err(Error::Invalid(_))));
        assert!(matches!(ed.parse("<>", false), Err(Error::Invalid(_))));
        assert!(matches!(
            ed.parse("jörg@example.com", false),
            Err(Error::Invalid(_))
        ));
        assert_eq!(ed.parse("<x@example.com>", false).unwrap(), "x@example.com");
        assert_eq!(ed.parse("<>", true).unwrap(), "<>");
        ed.push(Op::Add("c@example.com".into()));
        ed.push(Op::Remove("B@EXAMPLE.COM".into()));
        ed.push(Op::Sender("<>".into()));
        for op in &ed.ops {
            apply(&mut e, op);
        }
        assert_eq!(e.rcpt_tos, ["c@example.com"]);
        assert_eq!(e.rcpt_options, [Vec::<String>::new()]);
        assert_eq!(e.mail_from.as_deref(), Some("<>"));
        assert_eq!(e.rcpt_tos, ed.view.rcpt_tos);
    }
}
