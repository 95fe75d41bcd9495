//! The transaction's mail authentication (`wasmtp:smtp/mail-auth`): iprev,
//! SPF, DKIM, ARC and DMARC, computed by the host once per transaction and
//! shared by every plugin of the chain.
//!
//! ```ignore
//! use wasmtp_plugin::mail_auth;
//! // in mail: SPF of the MAIL FROM identity is known
//! if mail_auth::spf_mail_from().is_some_and(|spf| spf.failed()) { /* 550 5.7.23 */ }
//! // in data: everything, and the Authentication-Results value to add
//! if let Some(r) = mail_auth::results() {
//!     if r.dmarc_policy == mail_auth::DmarcPolicy::Reject { /* 550 5.7.1 */ }
//!     wasmtp_plugin::headers::add("Authentication-Results", &r.header_value)?;
//! }
//! ```
//!
//! **Needs `grants.mail_auth = true`** (a plugin that never calls this
//! module does not import it). A part that could not finish in time is
//! `temperror`, and is computed again for the next caller.

pub use crate::wit::mail_auth::{AuthResults, DmarcPolicy, Method, MethodResult, Property};

/// iprev: whether the client's PTR name resolves back to its address.
/// `None` on a Unix-socket listener.
pub fn iprev() -> Option<MethodResult> {
    crate::wit::mail_auth::iprev()
}

/// SPF for the HELO/EHLO name; `None` before HELO.
pub fn spf_helo() -> Option<MethodResult> {
    crate::wit::mail_auth::spf_helo()
}

/// SPF for the MAIL FROM address; `None` before MAIL.
pub fn spf_mail_from() -> Option<MethodResult> {
    crate::wit::mail_auth::spf_mail_from()
}

/// Everything, DKIM, ARC and DMARC included; `None` outside `data`.
pub fn results() -> Option<AuthResults> {
    crate::wit::mail_auth::results()
}

impl Method {
    /// The RFC 8601 name: `spf`, `dkim`, `arc`, `dmarc`, `iprev`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Spf => "spf",
            Method::Dkim => "dkim",
            Method::Arc => "arc",
            Method::Dmarc => "dmarc",
            Method::Iprev => "iprev",
        }
    }
}

impl MethodResult {
    /// A result of this method with no reason or properties: what DKIM's
    /// summary is made of.
    pub fn new(method: Method, result: &str) -> MethodResult {
        MethodResult {
            method,
            result: result.to_owned(),
            reason: None,
            properties: Vec::new(),
        }
    }

    /// Whether the result is `name` (`pass`, `fail`, ...), in any case.
    pub fn is(&self, name: &str) -> bool {
        self.result.eq_ignore_ascii_case(name)
    }

    pub fn passed(&self) -> bool {
        self.is("pass")
    }

    /// `fail`: the domain says this client or signature is not its own.
    /// (`softfail`, `neutral` and the errors are not.)
    pub fn failed(&self) -> bool {
        self.is("fail")
    }

    /// `temperror`: a DNS lookup failed or timed out; trying later may
    /// give an answer.
    pub fn is_temporary(&self) -> bool {
        self.is("temperror")
    }

    /// The value of a property: `smtp.mailfrom`, `header.d`, `policy.iprev`...
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.key.eq_ignore_ascii_case(key))
            .map(|p| p.value.as_str())
    }
}

impl AuthResults {
    /// The DKIM signatures as one result: `pass` if any signature passed;
    /// else `temperror` if one could not be checked (it might have passed);
    /// else the first signature's result (`fail`, `permerror`, `neutral`);
    /// `none` for an unsigned message.
    pub fn dkim_summary(&self) -> MethodResult {
        let pick = |wanted: &str| self.dkim.iter().find(|d| d.is(wanted));
        pick("pass")
            .or_else(|| pick("temperror"))
            .or(self.dkim.first())
            .cloned()
            .unwrap_or_else(|| MethodResult::new(Method::Dkim, "none"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dkim(results: &[&str]) -> AuthResults {
        let none = |method| MethodResult::new(method, "none");
        AuthResults {
            authserv_id: "mx.example".into(),
            iprev: none(Method::Iprev),
            spf_helo: none(Method::Spf),
            spf_mail_from: none(Method::Spf),
            dkim: results
                .iter()
                .map(|r| MethodResult::new(Method::Dkim, r))
                .collect(),
            arc: none(Method::Arc),
            dmarc: none(Method::Dmarc),
            dmarc_policy: DmarcPolicy::None,
            header_value: "mx.example; dkim=none".into(),
        }
    }

    #[test]
    fn one_passing_signature_is_enough_and_an_unchecked_one_is_temporary() {
        assert_eq!(dkim(&[]).dkim_summary().result, "none");
        assert_eq!(dkim(&["fail", "pass"]).dkim_summary().result, "pass");
        assert_eq!(
            dkim(&["fail", "temperror"]).dkim_summary().result,
            "temperror"
        );
        assert_eq!(
            dkim(&["permerror", "fail"]).dkim_summary().result,
            "permerror"
        );
        assert!(dkim(&["FAIL"]).dkim_summary().failed());
    }

    #[test]
    fn results_and_properties_compare_without_case() {
        let mut spf = MethodResult::new(Method::Spf, "TempError");
        spf.properties.push(Property {
            key: "smtp.mailfrom".into(),
            value: "anne@example.com".into(),
        });
        assert!(spf.is_temporary() && !spf.passed() && !spf.failed());
        assert_eq!(spf.property("SMTP.MailFrom"), Some("anne@example.com"));
        assert_eq!(spf.property("smtp.helo"), None);
        assert_eq!(Method::Dmarc.name(), "dmarc");
    }
}
