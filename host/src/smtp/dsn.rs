//! Delivery Status Notification parameters (RFC 3461): RET and ENVID on
//! MAIL, NOTIFY and ORCPT on RCPT. The host checks their syntax and passes
//! them to the plugins in the mail and rcpt options; sending the
//! notifications is the delivering plugin's business.

/// `xtext` (RFC 3461 §4): printable ASCII but `+` and `=`, with `+XX`
/// (upper-case hex) standing for any byte.
pub fn is_xtext(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
                match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&a), Some(&b)) if hex(a) && hex(b) => i += 3,
                    _ => return false,
                }
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    true
}

/// `RET=FULL` or `RET=HDRS`.
pub fn valid_ret(value: Option<&str>) -> bool {
    matches!(
        value.map(str::to_ascii_uppercase).as_deref(),
        Some("FULL" | "HDRS")
    )
}

/// `ENVID=xtext`, at most 100 characters.
pub fn valid_envid(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v.len() <= 100 && is_xtext(v))
}

/// `NOTIFY=NEVER`, or a list of SUCCESS, FAILURE, DELAY, each at most once.
pub fn valid_notify(value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let value = value.to_ascii_uppercase();
    if value == "NEVER" {
        return true;
    }
    let items: Vec<&str> = value.split(',').collect();
    items
        .iter()
        .all(|i| matches!(*i, "SUCCESS" | "FAILURE" | "DELAY"))
        && items
            .iter()
            .enumerate()
            .all(|(n, i)| !items[..n].contains(i))
}

/// `ORCPT=addr-type;xtext`, such as `rfc822;bart@example.com`.
pub fn valid_orcpt(value: Option<&str>) -> bool {
    let Some((addr_type, address)) = value.and_then(|v| v.split_once(';')) else {
        return false;
    };
    !addr_type.is_empty()
        && addr_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !address.is_empty()
        && address.len() <= 500
        && is_xtext(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_parameters() {
        assert!(
            valid_ret(Some("hdrs"))
                && valid_ret(Some("FULL"))
                && !valid_ret(Some("ALL"))
                && !valid_ret(None)
        );
        assert!(
            valid_envid(Some("QQ314159+2Bx"))
                && !valid_envid(Some("a=b"))
                && !valid_envid(Some("+4"))
                && !valid_envid(None)
        );
        assert!(!valid_envid(Some(&"x".repeat(101))));
        assert!(valid_notify(Some("NEVER")) && valid_notify(Some("success,DELAY")));
        assert!(
            !valid_notify(Some("NEVER,SUCCESS"))
                && !valid_notify(Some("SUCCESS,SUCCESS"))
                && !valid_notify(Some(""))
        );
        assert!(
            valid_orcpt(Some("rfc822;bart@example.com"))
                && valid_orcpt(Some("RFC822;b+2Bc@example.com"))
        );
        assert!(
            !valid_orcpt(Some("bart@example.com"))
                && !valid_orcpt(Some("rfc822;"))
                && !valid_orcpt(None)
        );
    }
}
