//! Helpers for [`Reply`], the WIT record every command hook may return.

use std::fmt;

use crate::Reply;

impl Reply {
    /// A one-line reply with an enhanced status code:
    /// `Reply::new(550, "5.1.1", "no such user")` → `550 5.1.1 no such user`.
    /// An empty `enhanced` sends the text alone.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_owned()),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced status code: `250 OK`.
    pub fn text(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A reply of several lines (`250-first`, `250 last` on the wire).
    pub fn lines(
        code: u16,
        enhanced: &str,
        lines: impl IntoIterator<Item = impl Into<String>>,
    ) -> Reply {
        Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_owned()),
            lines: lines.into_iter().map(Into::into).collect(),
        }
    }

    /// `250 OK`, what the host answers MAIL, RCPT, DATA, RSET and NOOP
    /// without a hook.
    pub fn ok() -> Reply {
        Reply::text(250, "OK")
    }

    /// `451 4.3.0 text`: a temporary failure; the client tries again later.
    pub fn temporary_failure(text: impl Into<String>) -> Reply {
        Reply::new(451, "4.3.0", text)
    }

    /// `550 5.7.1 text`: refused by policy.
    pub fn refused(text: impl Into<String>) -> Reply {
        Reply::new(550, "5.7.1", text)
    }

    /// `text` made fit to quote in a reply line — a domain from the
    /// message, a block list's reason: control characters become spaces and
    /// it is cut to 200 bytes (a reply line may not hold CR or LF, nor pass
    /// 506 bytes, or the host takes the reply for a plugin failure).
    pub fn printable(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
            if out.len() + c.len_utf8() > 200 {
                out.push_str("...");
                break;
            }
            out.push(c);
        }
        out
    }

    /// Adds a line at the end.
    pub fn with_line(mut self, line: impl Into<String>) -> Reply {
        self.lines.push(line.into());
        self
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// As the client sees it, lines joined with CRLF: `250-a\r\n250 b`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enhanced = self
            .enhanced
            .as_deref()
            .map(|e| format!("{e} "))
            .unwrap_or_default();
        if self.lines.is_empty() {
            return write!(f, "{}", self.code);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            if i > 0 {
                f.write_str("\r\n")?;
            }
            write!(f, "{}{sep}{enhanced}{line}", self.code)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        assert_eq!(
            Reply::new(550, "5.1.1", "no such user").to_string(),
            "550 5.1.1 no such user"
        );
        assert_eq!(Reply::ok().to_string(), "250 OK");
        assert_eq!(Reply::new(250, "", "x").enhanced, None);
        assert_eq!(
            Reply::lines(250, "", ["a", "b"]).to_string(),
            "250-a\r\n250 b"
        );
        assert!(Reply::temporary_failure("later").is_transient());
    }

    #[test]
    fn quoted_text_keeps_to_one_short_line() {
        assert_eq!(
            Reply::printable("listed\r\nRCPT TO:<x>\t"),
            "listed  RCPT TO:<x> "
        );
        let long = Reply::printable(&"é".repeat(150));
        assert!(long.len() <= 203 && long.ends_with("...") && long.starts_with("éé"));
        assert_eq!(Reply::printable("bl.example"), "bl.example");
    }
}
