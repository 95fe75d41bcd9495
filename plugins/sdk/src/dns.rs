//! DNS lookups through the server's resolver and cache (`wasmtp:smtp/dns`):
//! records by type, several at once, and DNS block lists (RFC 5782).
//!
//! ```ignore
//! use wasmtp_plugin::dns;
//! match dns::dnsbl("192.0.2.7", "zen.example") {
//!     Ok(listing) if listing.listed() => { /* 554 5.7.1, listing.reason */ }
//!     Ok(_) => {}                                   // not listed
//!     Err(e) if e.is_temporary() => { /* the list did not answer in time */ }
//!     Err(e) => { /* denied by the grant, budget spent, invalid */ }
//! }
//! let mx = dns::lookup("example.com", dns::RecordType::Mx);
//! ```
//!
//! **Needs `grants.dns`**, which names the domains (`suffixes`), record
//! types and queries per hook call (`budget`) the plugin may ask for;
//! anything else is answered `Error::Denied` or `Error::Budget` without a
//! packet. Every lookup waits at most until just before the hook's deadline.

pub use crate::wit::dns::{Error, Listing, Mx, Query, RecordType, Records};

/// The records of type `kind` at `name`.
pub fn lookup(name: &str, kind: RecordType) -> Result<Records, Error> {
    crate::wit::dns::lookup(name, kind)
}

/// Several lookups sent at once; the answers in the order of `queries`.
pub fn lookup_all(queries: &[Query]) -> Vec<Result<Records, Error>> {
    crate::wit::dns::lookup_all(queries)
}

/// Whether `ip` is listed in the block list `zone`: its codes
/// (`127.0.0.2`...) and TXT reason. Costs two queries of the budget.
pub fn dnsbl(ip: &str, zone: &str) -> Result<Listing, Error> {
    crate::wit::dns::dnsbl(ip, zone)
}

impl Listing {
    pub fn listed(&self) -> bool {
        !self.codes.is_empty()
    }
}

impl Error {
    /// `timeout` or `servfail`: the nameserver did not answer; asking
    /// again later may give an answer.
    pub fn is_temporary(self) -> bool {
        matches!(self, Error::Timeout | Error::Servfail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unanswered_query_is_temporary() {
        assert!(Error::Timeout.is_temporary() && Error::Servfail.is_temporary());
        for e in [
            Error::Nxdomain,
            Error::Nodata,
            Error::Denied,
            Error::Budget,
            Error::Invalid,
        ] {
            assert!(!e.is_temporary(), "{}", e.name());
        }
    }

    #[test]
    fn listed_means_a_code() {
        assert!(
            !Listing {
                codes: vec![],
                reason: None
            }
            .listed()
        );
        assert!(
            Listing {
                codes: vec!["127.0.0.2".into()],
                reason: None
            }
            .listed()
        );
    }
}
