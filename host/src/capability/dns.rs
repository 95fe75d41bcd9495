//! DNS lookups for plugins and for mail authentication: one resolver and
//! one cache for the whole server.
//!
//! [`Dns`] holds hickory's `TokioResolver`, configured by `[dns]`
//! ([`DnsSettings`]): its cache is shared by every session, every plugin
//! and by [`super::mail_auth`] (whose `MessageAuthenticator` is built on the
//! same resolver), so a repeated lookup within a record's TTL sends no
//! packet. Named extra resolvers (`[dns.resolver.NAME]`, for block lists
//! served by a local rbldnsd, say) each have their own.
//!
//! Every lookup is bounded by a deadline (what is left of the hook's) and
//! answers with a value: records, or a [`DnsError`] — never a panic or a
//! trap. Several queries of one call run concurrently ([`Dns::lookup_all`]).
//! Names are always looked up as absolute names: no search list is applied,
//! so a lookup sends exactly the name asked for.

use crate::plugin::bindings::wasmtp::smtp::dns as wit;
use crate::plugin::host::HostState;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as ResolveError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType as WireType};
use mail_auth::MessageAuthenticator;

/// hickory's default, and resolv.conf's: seconds per attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// resolv.conf's default attempts per query.
pub const DEFAULT_ATTEMPTS: usize = 2;
/// Records kept in a resolver's cache.
pub const DEFAULT_CACHE_SIZE: u64 = 8192;

/// How to reach nameservers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `None`: the nameservers of `/etc/resolv.conf`.
    pub nameservers: Option<Vec<SocketAddr>>,
    /// How long one attempt waits for an answer.
    pub timeout: Duration,
    /// Tries per query, per nameserver.
    pub attempts: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            nameservers: None,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// `[dns]`: the server's resolver and the named extra ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    pub default: ResolverSettings,
    /// Records each resolver's cache keeps.
    pub cache_size: u64,
    /// `[dns.resolver.NAME]`.
    pub resolvers: BTreeMap<String, ResolverSettings>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            default: ResolverSettings::default(),
            cache_size: DEFAULT_CACHE_SIZE,
            resolvers: BTreeMap::new(),
        }
    }
}

/// The record types a lookup may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

impl RecordType {
    pub const ALL: [RecordType; 5] = [
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Mx,
        RecordType::Txt,
        RecordType::Ptr,
    ];

    /// `a`, `aaaa`, `mx`, `txt`, `ptr`: as the config and the WIT name them.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::A => "a",
            RecordType::Aaaa => "aaaa",
            RecordType::Mx => "mx",
            RecordType::Txt => "txt",
            RecordType::Ptr => "ptr",
        }
    }

    pub fn parse(name: &str) -> Option<RecordType> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    fn wire(self) -> WireType {
        match self {
            RecordType::A => WireType::A,
            RecordType::Aaaa => WireType::AAAA,
            RecordType::Mx => WireType::MX,
            RecordType::Txt => WireType::TXT,
            RecordType::Ptr => WireType::PTR,
        }
    }
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Records {
    A(Vec<Ipv4Addr>),
    Aaaa(Vec<Ipv6Addr>),
    /// Preference and exchange, lowest preference first.
    Mx(Vec<(u16, String)>),
    /// Each record's strings joined (RFC 7208 §3.3), lossily as UTF-8.
    Txt(Vec<String>),
    /// Names, without the trailing dot.
    Ptr(Vec<String>),
}

/// Why a lookup has no records: always a value, never a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist.
    #[error("nxdomain")]
    NxDomain,
    /// The name exists but has no records of this type.
    #[error("nodata")]
    NoData,
    /// No answer before the deadline (the hook's, or the resolver's).
    #[error("timeout")]
    Timeout,
    /// The nameserver failed, refused, or could not be reached.
    #[error("servfail")]
    ServFail,
    /// The plugin's grant does not cover this name, type or resolver.
    #[error("denied")]
    Denied,
    /// The plugin's query budget for this hook call is spent.
    #[error("budget")]
    Budget,
    /// Not a valid domain name or address.
    #[error("invalid")]
    Invalid,
}

impl DnsError {
    /// Whether trying again later could give another answer (RFC 7208's
    /// temperror as against permerror/none).
    pub fn is_temporary(self) -> bool {
        matches!(self, DnsError::Timeout | DnsError::ServFail)
    }
}

/// One query of a [`Dns::lookup_all`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// A domain name; for [`RecordType::Ptr`], an IP address or a name
    /// under `in-addr.arpa`/`ip6.arpa`.
    pub name: String,
    pub kind: RecordType,
}

/// A DNS block list's answer for one address (RFC 5782).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The A records at the address's name in the zone: `127.0.0.2`…; empty
    /// when the address is not listed.
    pub codes: Vec<Ipv4Addr>,
    /// The zone's TXT record for it (its reason, often a URL), when listed.
    pub reason: Option<String>,
}

impl Listing {
    pub fn listed(&self) -> bool {
        !self.codes.is_empty()
    }
}

/// The server's resolvers.
pub struct Dns {
    /// The server's resolver, inside mail-auth's authenticator so that
    /// mail authentication and plugins share one cache.
    default: Result<MessageAuthenticator, String>,
    named: BTreeMap<String, Result<TokioResolver, String>>,
}

impl Dns {
    /// Builds the resolvers `settings` describes. A resolver that cannot be
    /// built (no readable `/etc/resolv.conf`) is logged, and its lookups
    /// answer [`DnsError::ServFail`]: DNS is one capability, not a reason to
    /// refuse to serve mail.
    pub fn new(settings: &DnsSettings) -> Dns {
        let warn = |name: &str, e: &String| {
            tracing::warn!(resolver = name, "DNS lookups will fail: {e}");
        };
        let default = resolver_config(&settings.default, settings.cache_size)
            .and_then(|(config, options)| {
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                    .with_options(options)
                    .build()
                    .map(MessageAuthenticator)
                    .map_err(|e| format!("cannot build the resolver: {e}"))
            })
            .inspect_err(|e| warn("default", e));
        let named = settings
            .resolvers
            .iter()
            .map(|(name, s)| {
                let resolver = resolver_config(s, settings.cache_size)
                    .and_then(|(config, options)| {
                        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                            .with_options(options)
                            .build()
                            .map_err(|e| format!("cannot build the resolver: {e}"))
                    })
                    .inspect_err(|e| warn(name, e));
                (name.clone(), resolver)
            })
            .collect();
        Dns { default, named }
    }

    /// mail-auth's verifier, on the server's resolver and its cache.
    pub fn authenticator(&self) -> Result<&MessageAuthenticator, String> {
        self.default.as_ref().map_err(Clone::clone)
    }

    /// The resolver named in `[dns.resolver.NAME]`, or the server's for
    /// `None`. An unknown name is [`DnsError::Denied`]: the config, checked
    /// at load, names only resolvers that exist.
    fn pick(&self, resolver: Option<&str>) -> Result<&TokioResolver, DnsError> {
        let chosen = match resolver {
            None => self.default.as_ref().map(|a| &a.0),
            Some(name) => self.named.get(name).ok_or(DnsError::Denied)?.as_ref(),
        };
        chosen.map_err(|_| DnsError::ServFail)
    }

    /// Whether `[dns.resolver.NAME]` exists.
    pub fn has_resolver(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    /// One lookup, answered by `deadline` at the latest.
    pub async fn lookup(
        &self,
        resolver: Option<&str>,
        query: &Query,
        deadline: Instant,
    ) -> Result<Records, DnsError> {
        let resolver = self.pick(resolver)?;
        let name = query_name(query)?;
        let lookup = resolver.lookup(name, query.kind.wire());
        let lookup = match tokio::time::timeout_at(deadline.into(), lookup).await {
            Err(_) => return Err(DnsError::Timeout),
            Ok(result) => result.map_err(classify)?,
        };
        let answers = lookup.answers().iter().map(|r| &r.data);
        let records = match query.kind {
            RecordType::A => Records::A(
                answers
                    .filter_map(|d| match d {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect(),
            ),
            RecordType::Aaaa => Records::Aaaa(
                answers
                    .filter_map(|d| match d {
                        RData::AAAA(a) => Some(a.0),
                        _ => None,
                    })
                    .collect(),
            ),
            RecordType::Mx => {
                let mut mx: Vec<(u16, String)> = answers
                    .filter_map(|d| match d {
                        RData::MX(mx) => Some((mx.preference, relative(&mx.exchange))),
                        _ => None,
                    })
                    .collect();
                mx.sort();
                Records::Mx(mx)
            }
            RecordType::Txt => Records::Txt(
                answers
                    .filter_map(|d| match d {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect(),
            ),
            RecordType::Ptr => Records::Ptr(
                answers
                    .filter_map(|d| match d {
                        RData::PTR(ptr) => Some(relative(&ptr.0)),
                        _ => None,
                    })
                    .collect(),
            ),
        };
        // A CNAME chain to nothing of this type is no data.
        let empty = match &records {
            Records::A(v) => v.is_empty(),
            Records::Aaaa(v) => v.is_empty(),
            Records::Mx(v) => v.is_empty(),
            Records::Txt(v) | Records::Ptr(v) => v.is_empty(),
        };
        if empty {
            return Err(DnsError::NoData);
        }
        Ok(records)
    }

    /// Several lookups at once; the answers in the order of `queries`.
    pub async fn lookup_all(
        &self,
        resolver: Option<&str>,
        queries: &[Query],
        deadline: Instant,
    ) -> Vec<Result<Records, DnsError>> {
        let lookups = queries.iter().map(|q| self.lookup(resolver, q, deadline));
        join_all(lookups).await
    }

    /// Whether `ip` is listed in the block list `zone` (RFC 5782): the A
    /// records at the address's reversed name in the zone, and, when
    /// listed, the TXT reason (both queries sent at once).
    pub async fn dnsbl(
        &self,
        resolver: Option<&str>,
        ip: IpAddr,
        zone: &str,
        deadline: Instant,
    ) -> Result<Listing, DnsError> {
        let name = dnsbl_name(ip, zone)?;
        let a = Query {
            name: name.clone(),
            kind: RecordType::A,
        };
        let txt = Query {
            name,
            kind: RecordType::Txt,
        };
        let (codes, reason) = tokio::join!(
            self.lookup(resolver, &a, deadline),
            self.lookup(resolver, &txt, deadline)
        );
        let codes = match codes {
            Ok(Records::A(codes)) => codes,
            Ok(_) => unreachable!("an A lookup answers A records"),
            Err(DnsError::NxDomain | DnsError::NoData) => Vec::new(),
            Err(e) => return Err(e),
        };
        let reason = match reason {
            Ok(Records::Txt(texts)) if !codes.is_empty() => texts.into_iter().next(),
            _ => None,
        };
        Ok(Listing { codes, reason })
    }
}

/// The name a block list is asked about `ip`: `2.0.0.127.zen.example` for
/// 127.0.0.2, the nibbles reversed for IPv6 (RFC 5782 §2.1, §2.4).
pub fn dnsbl_name(ip: IpAddr, zone: &str) -> Result<String, DnsError> {
    let zone = zone.trim_end_matches('.');
    if zone.is_empty() || Name::from_ascii(zone).is_err() {
        return Err(DnsError::Invalid);
    }
    Ok(format!("{}.{zone}", reversed(ip)))
}

/// `d.c.b.a` of an IPv4 address; the 32 nibbles of an IPv6 one, reversed.
fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let mut labels = Vec::with_capacity(32);
            for byte in v6.octets().iter().rev() {
                labels.push(format!("{:x}", byte & 0xf));
                labels.push(format!("{:x}", byte >> 4));
            }
            labels.join(".")
        }
    }
}

/// The absolute name to send for `query`: an IP address asked for PTR
/// becomes its `in-addr.arpa`/`ip6.arpa` name.
pub fn query_name(query: &Query) -> Result<Name, DnsError> {
    let text = query.name.trim_end_matches('.');
    let text = match (query.kind, text.parse::<IpAddr>()) {
        (RecordType::Ptr, Ok(ip @ IpAddr::V4(_))) => format!("{}.in-addr.arpa", reversed(ip)),
        (RecordType::Ptr, Ok(ip @ IpAddr::V6(_))) => format!("{}.ip6.arpa", reversed(ip)),
        _ => text.to_owned(),
    };
    if text.is_empty() {
        return Err(DnsError::Invalid);
    }
    Name::from_utf8(format!("{text}.")).map_err(|_| DnsError::Invalid)
}

/// `mx.example.com.` → `mx.example.com`.
fn relative(name: &Name) -> String {
    let mut text = name.to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

/// hickory's error → what a plugin is told.
fn classify(error: NetError) -> DnsError {
    match &error {
        NetError::Dns(ResolveError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => DnsError::NxDomain,
            ResponseCode::NoError => DnsError::NoData,
            _ => DnsError::ServFail,
        },
        NetError::Timeout => DnsError::Timeout,
        _ => {
            tracing::debug!("DNS lookup failed: {error}");
            DnsError::ServFail
        }
    }
}

fn resolver_config(
    settings: &ResolverSettings,
    cache_size: u64,
) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (name_servers, mut options) = match &settings.nameservers {
        Some(addrs) => (
            addrs.iter().map(|addr| name_server(*addr)).collect(),
            ResolverOpts::default(),
        ),
        None => {
            let (config, options) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
            (config.name_servers().to_vec(), options)
        }
    };
    if name_servers.is_empty() {
        return Err("no nameserver is configured".into());
    }
    // No domain, no search list: the name asked is the name sent.
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    options.timeout = settings.timeout;
    options.attempts = settings.attempts;
    options.cache_size = cache_size;
    options.ndots = 0;
    options.use_hosts_file = ResolveHosts::Never;
    Ok((config, options))
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Runs futures concurrently on the calling task, answers in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (future, slot) in pending.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// Shared by the server: built once per config generation.
pub type SharedDns = Arc<Dns>;

/// Queries per hook call a DNS grant allows by default.
pub const DEFAULT_BUDGET: u32 = 10;

/// What a plugin granted DNS may ask (`grants.dns`): a plugin may not use
/// DNS as a channel out, so it names the suffixes, the types, the resolver
/// and a budget of queries per hook call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsGrant {
    /// Lower-case, without the trailing dot; `""` (written `"."`) for
    /// every name.
    pub suffixes: Vec<String>,
    pub types: Vec<RecordType>,
    /// A `[dns.resolver.NAME]`, or `None` for the server's.
    pub resolver: Option<String>,
    /// Queries per hook call.
    pub budget: u32,
}

impl DnsGrant {
    /// Whether the grant covers a query of `kind` for `query.name` (as
    /// sent: an address asked for PTR is its arpa name).
    pub fn allows(&self, query: &Query) -> Result<(), DnsError> {
        if !self.types.contains(&query.kind) {
            return Err(DnsError::Denied);
        }
        let name = query_name(query)?.to_ascii().to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        let covered = self.suffixes.iter().any(|suffix| {
            suffix.is_empty()
                || name == suffix
                || name
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        });
        if covered {
            Ok(())
        } else {
            Err(DnsError::Denied)
        }
    }
}

// ---- the `wasmtp:smtp/dns` import -----------------------------------------

/// A plugin instance's DNS: the server's resolvers, its grant, and the
/// queries spent in the current hook call.
pub struct DnsAccess {
    pub dns: Arc<Dns>,
    pub grant: Arc<DnsGrant>,
    /// Queries asked in this hook call; reset when a hook call starts.
    pub used: u32,
}

impl DnsAccess {
    /// Checks `queries` against the grant and spends their budget; the
    /// resolver to ask.
    fn admit(&mut self, queries: &[&Query]) -> Result<(Arc<Dns>, Option<String>), DnsError> {
        for query in queries {
            self.grant.allows(query)?;
        }
        let n = queries.len() as u32;
        if self.used.saturating_add(n) > self.grant.budget {
            return Err(DnsError::Budget);
        }
        self.used += n;
        Ok((Arc::clone(&self.dns), self.grant.resolver.clone()))
    }
}

impl From<wit::RecordType> for RecordType {
    fn from(t: wit::RecordType) -> RecordType {
        match t {
            wit::RecordType::A => RecordType::A,
            wit::RecordType::Aaaa => RecordType::Aaaa,
            wit::RecordType::Mx => RecordType::Mx,
            wit::RecordType::Txt => RecordType::Txt,
            wit::RecordType::Ptr => RecordType::Ptr,
        }
    }
}

impl From<DnsError> for wit::Error {
    fn from(e: DnsError) -> wit::Error {
        match e {
            DnsError::NxDomain => wit::Error::Nxdomain,
            DnsError::NoData => wit::Error::Nodata,
            DnsError::Timeout => wit::Error::Timeout,
            DnsError::ServFail => wit::Error::Servfail,
            DnsError::Denied => wit::Error::Denied,
            DnsError::Budget => wit::Error::Budget,
            DnsError::Invalid => wit::Error::Invalid,
        }
    }
}

impl From<Records> for wit::Records {
    fn from(r: Records) -> wit::Records {
        let text = |v: Vec<_>| {
            v.into_iter()
                .map(|a: std::net::IpAddr| a.to_string())
                .collect()
        };
        match r {
            Records::A(v) => wit::Records::A(text(v.into_iter().map(IpAddr::V4).collect())),
            Records::Aaaa(v) => wit::Records::Aaaa(text(v.into_iter().map(IpAddr::V6).collect())),
            Records::Mx(v) => wit::Records::Mx(
                v.into_iter()
                    .map(|(preference, exchange)| wit::Mx {
                        preference,
                        exchange,
                    })
                    .collect(),
            ),
            Records::Txt(v) => wit::Records::Txt(v),
            Records::Ptr(v) => wit::Records::Ptr(v),
        }
    }
}

impl HostState {
    fn dns_admit(&mut self, queries: &[&Query]) -> Result<(Arc<Dns>, Option<String>), DnsError> {
        // The loader refuses a plugin importing `dns` without the grant, so
        // there is always access here; `denied` is the safe answer anyway.
        self.dns.as_mut().ok_or(DnsError::Denied)?.admit(queries)
    }
}

impl wit::Host for HostState {
    async fn lookup(
        &mut self,
        name: String,
        kind: wit::RecordType,
    ) -> Result<wit::Records, wit::Error> {
        let query = Query {
            name,
            kind: kind.into(),
        };
        let (dns, resolver) = self.dns_admit(&[&query])?;
        let records = dns
            .lookup(
                resolver.as_deref(),
                &query,
                super::wait_deadline(self.deadline),
            )
            .await?;
        Ok(records.into())
    }

    async fn lookup_all(
        &mut self,
        queries: Vec<wit::Query>,
    ) -> Vec<Result<wit::Records, wit::Error>> {
        let queries: Vec<Query> = queries
            .into_iter()
            .map(|q| Query {
                name: q.name,
                kind: q.kind.into(),
            })
            .collect();
        // Each query is admitted on its own: the ones past the budget or
        // outside the grant answer so, the others are asked (all at once).
        let mut admitted = Vec::new();
        let mut answers: Vec<Option<Result<wit::Records, wit::Error>>> = Vec::new();
        let mut resolver = None;
        let mut dns = None;
        for query in &queries {
            match self.dns_admit(&[query]) {
                Ok((d, r)) => {
                    dns = Some(d);
                    resolver = r;
                    admitted.push(query.clone());
                    answers.push(None);
                }
                Err(e) => answers.push(Some(Err(e.into()))),
            }
        }
        let mut looked_up = match dns {
            Some(dns) => dns
                .lookup_all(
                    resolver.as_deref(),
                    &admitted,
                    super::wait_deadline(self.deadline),
                )
                .await
                .into_iter(),
            None => Vec::new().into_iter(),
        };
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    looked_up
                        .next()
                        .expect("one answer per admitted query")
                        .map(Into::into)
                        .map_err(Into::into)
                })
            })
            .collect()
    }

    async fn dnsbl(&mut self, ip: String, zone: String) -> Result<wit::Listing, wit::Error> {
        let ip: IpAddr = ip.trim().parse().map_err(|_| wit::Error::Invalid)?;
        let name = dnsbl_name(ip, &zone)?;
        let a = Query {
            name: name.clone(),
            kind: RecordType::A,
        };
        let txt = Query {
            name,
            kind: RecordType::Txt,
        };
        let (dns, resolver) = self.dns_admit(&[&a, &txt])?;
        let listing = dns
            .dnsbl(
                resolver.as_deref(),
                ip,
                &zone,
                super::wait_deadline(self.deadline),
            )
            .await?;
        Ok(wit::Listing {
            codes: listing.codes.iter().map(ToString::to_string).collect(),
            reason: listing.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_list_names_reverse_the_address() {
        assert_eq!(
            dnsbl_name("127.0.0.2".parse().unwrap(), "zen.example.").unwrap(),
            "2.0.0.127.zen.example"
        );
        assert_eq!(
            dnsbl_name("2001:db8:1::2".parse().unwrap(), "bl.test").unwrap(),
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        );
        assert_eq!(
            dnsbl_name("127.0.0.2".parse().unwrap(), ""),
            Err(DnsError::Invalid)
        );
    }

    #[test]
    fn grants_cover_names_under_their_suffixes_and_their_types() {
        let grant = DnsGrant {
            suffixes: vec!["zen.example".into(), "in-addr.arpa".into()],
            types: vec![RecordType::A, RecordType::Txt, RecordType::Ptr],
            resolver: None,
            budget: DEFAULT_BUDGET,
        };
        let q = |name: &str, kind| Query {
            name: name.into(),
            kind,
        };
        assert_eq!(
            grant.allows(&q("2.0.0.127.zen.example", RecordType::A)),
            Ok(())
        );
        assert_eq!(grant.allows(&q("ZEN.example.", RecordType::Txt)), Ok(()));
        assert_eq!(grant.allows(&q("192.0.2.1", RecordType::Ptr)), Ok(()));
        assert_eq!(
            grant.allows(&q("evilzen.example", RecordType::A)),
            Err(DnsError::Denied)
        );
        assert_eq!(
            grant.allows(&q("secret.attacker.example", RecordType::A)),
            Err(DnsError::Denied)
        );
        assert_eq!(
            grant.allows(&q("zen.example", RecordType::Mx)),
            Err(DnsError::Denied)
        );
        let every = DnsGrant {
            suffixes: vec![String::new()],
            ..grant
        };
        assert_eq!(every.allows(&q("anything.test", RecordType::A)), Ok(()));
    }

    #[test]
    fn names_are_absolute_and_addresses_become_arpa_names() {
        let q = |name: &str, kind| {
            query_name(&Query {
                name: name.into(),
                kind,
            })
            .map(|n| n.to_ascii())
        };
        assert_eq!(q("example.test", RecordType::Txt).unwrap(), "example.test.");
        assert_eq!(
            q("192.0.2.10", RecordType::Ptr).unwrap(),
            "10.2.0.192.in-addr.arpa."
        );
        assert_eq!(q("192.0.2.10", RecordType::A).unwrap(), "192.0.2.10.");
        assert_eq!(q("", RecordType::A), Err(DnsError::Invalid));
        assert_eq!(q("a..b", RecordType::A), Err(DnsError::Invalid));
    }
}
