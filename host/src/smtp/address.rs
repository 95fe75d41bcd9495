//! Addresses and ESMTP parameters of MAIL, RCPT and VRFY.
//!
//! aiosmtpd parses these with Python's email header parser, which accepts
//! some oddities (a missing `>`, a local part with spaces) and crashes on
//! others (`a@`). This parser follows RFC 5321's `Path` / `Mailbox`
//! grammar, keeping aiosmtpd's leniency where it is harmless: a bare address
//! without angle brackets, a source route (dropped), consecutive dots.

/// Why an address was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing was given (aiosmtpd answers with the syntax reply).
    Empty,
    /// Something was given, but it is not an address (553 5.1.3).
    Malformed,
}

/// Split `arg` into an address and the text after it (the parameters).
/// The null path `<>` is returned as `"<>"`, as aiosmtpd does.
pub fn split_address(arg: &str) -> Result<(String, &str), AddressError> {
    let arg = arg.trim_start();
    if arg.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some(inner) = arg.strip_prefix('<') {
        let end = closing_bracket(inner).ok_or(AddressError::Malformed)?;
        let (path, rest) = (&inner[..end], &inner[end + 1..]);
        let path = path.trim();
        if path.is_empty() {
            return Ok(("<>".to_owned(), rest.trim()));
        }
        let mailbox = strip_source_route(path)?;
        validate_mailbox(mailbox)?;
        Ok((mailbox.to_owned(), rest.trim()))
    } else {
        let end = arg.find(char::is_whitespace).unwrap_or(arg.len());
        let (mailbox, rest) = arg.split_at(end);
        validate_mailbox(mailbox)?;
        Ok((mailbox.to_owned(), rest.trim()))
    }
}

/// The index of the `>` that closes the path, skipping quoted strings.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `@relay1,@relay2:user@example.com` → `user@example.com` (RFC 5321 §4.1.2
/// says a server SHOULD accept and ignore source routes).
fn strip_source_route(path: &str) -> Result<&str, AddressError> {
    if !path.starts_with('@') {
        return Ok(path);
    }
    let colon = path.find(':').ok_or(AddressError::Malformed)?;
    for hop in path[..colon].split(',') {
        let domain = hop
            .trim()
            .strip_prefix('@')
            .ok_or(AddressError::Malformed)?;
        validate_domain(domain)?;
    }
    Ok(&path[colon + 1..])
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `local-part ["@" domain]`; a bare local part is accepted as aiosmtpd
/// accepts `postmaster`.
fn validate_mailbox(mailbox: &str) -> Result<(), AddressError> {
    let (local, domain) = match mailbox.rfind('@') {
        Some(i) => (&mailbox[..i], Some(&mailbox[i + 1..])),
        None => (mailbox, None),
    };
    validate_local_part(local)?;
    if let Some(domain) = domain {
        validate_domain(domain)?;
    }
    Ok(())
}

fn validate_local_part(local: &str) -> Result<(), AddressError> {
    if let Some(quoted) = local.strip_prefix('"') {
        let inner = quoted.strip_suffix('"').ok_or(AddressError::Malformed)?;
        let mut escaped = false;
        for c in inner.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return Err(AddressError::Malformed),
                c if c.is_control() => return Err(AddressError::Malformed),
                _ => {}
            }
        }
        return if escaped {
            Err(AddressError::Malformed)
        } else {
            Ok(())
        };
    }
    if local.is_empty() || !local.chars().all(|c| is_atext(c) || c == '.') {
        return Err(AddressError::Malformed);
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), AddressError> {
    if let Some(literal) = domain.strip_prefix('[') {
        let inner = literal.strip_suffix(']').ok_or(AddressError::Malformed)?;
        let ok = !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_graphic() && !"[]\\".contains(c));
        return if ok {
            Ok(())
        } else {
            Err(AddressError::Malformed)
        };
    }
    let ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
        });
    if ok {
        Ok(())
    } else {
        Err(AddressError::Malformed)
    }
}

/// ESMTP parameters, parsed as aiosmtpd's `_getparams`: each `KEY` or
/// `KEY=VALUE`, with an alphanumeric key and a non-empty value. `None` if
/// any is malformed. Later duplicates override earlier ones.
pub fn parse_params(options: &[String]) -> Option<Vec<(String, Option<String>)>> {
    let mut params: Vec<(String, Option<String>)> = Vec::new();
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((_, "")) => return None,
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (option.as_str(), None),
        };
        if key.is_empty() || !key.chars().all(char::is_alphanumeric) {
            return None;
        }
        params.retain(|(k, _)| k != key);
        params.push((key.to_owned(), value));
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_aiosmtpd_accepts() {
        for (input, address, rest) in [
            ("<a@b.c>", "a@b.c", ""),
            ("a@b.c", "a@b.c", ""),
            ("<a@b.c> SIZE=10", "a@b.c", "SIZE=10"),
            ("a@b.c SIZE=10", "a@b.c", "SIZE=10"),
            ("<a@b.c>SIZE=1", "a@b.c", "SIZE=1"),
            ("<>", "<>", ""),
            ("<\"a b\"@c.d>", "\"a b\"@c.d", ""),
            ("<@x,@y:a@b.c>", "a@b.c", ""),
            (" <a@b.c>", "a@b.c", ""),
            ("<a@[1.2.3.4]>", "a@[1.2.3.4]", ""),
            ("postmaster", "postmaster", ""),
            ("<x>", "x", ""),
            ("<ä@b.c>", "ä@b.c", ""),
            ("<a..b@c>", "a..b@c", ""),
            ("<a@b.c >", "a@b.c", ""),
        ] {
            assert_eq!(
                split_address(input),
                Ok((address.to_owned(), rest)),
                "{input}"
            );
        }
    }

    #[test]
    fn malformed_addresses() {
        assert_eq!(split_address(""), Err(AddressError::Empty));
        for input in [
            "<a@b",
            "@b",
            "a@",
            "<a@>",
            "(comment) <a@b.c>",
            "<a b@c>",
            "<@x:>",
            "<a@b..c>",
            "<\"a@b>",
        ] {
            assert_eq!(
                split_address(input),
                Err(AddressError::Malformed),
                "{input}"
            );
        }
    }

    #[test]
    fn params() {
        let p = |s: &str| parse_params(&s.split_whitespace().map(String::from).collect::<Vec<_>>());
        assert_eq!(p("SIZE=10 BODY=8BITMIME SMTPUTF8").unwrap().len(), 3);
        assert_eq!(p("SIZE="), None);
        assert_eq!(p("X-Y=1"), None);
        assert_eq!(
            p("SIZE=1 SIZE=2").unwrap(),
            vec![("SIZE".into(), Some("2".into()))]
        );
    }
}
