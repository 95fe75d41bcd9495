//! The host's DNS and mail-authentication core (`wasmtp::capability::{dns,
//! mail_auth}`) against a real authoritative DNS server (NSD, started by
//! the tests on loopback and serving the zones below) and real DKIM/ARC
//! signatures made by dkimpy with keys generated at test time.
//!
//! - DNS: record types, NXDOMAIN/NODATA, block lists, concurrency, deadlines
//!   against a server that never answers, and the shared cache proved by
//!   counting queries at the server.
//! - SPF pass/fail/softfail/neutral/none/permerror/temperror, iprev,
//!   DKIM (RSA and Ed25519, several signatures, relaxed/simple, `l=`, a
//!   body changed after signing), ARC, DMARC alignment and policies, and
//!   the `Authentication-Results` value.

#[path = "harness/dns.rs"]
mod dns;
#[path = "harness/mod.rs"]
mod harness;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dns::{DnsServer, SilentServer, Zone};
use wasmtp::capability::dns::{Dns, DnsError, DnsSettings, Query, RecordType, Records};
use wasmtp::capability::mail_auth::{
    AuthInput, AuthResults, DmarcPolicy, MailAuth, MailAuthSettings, TransactionAuth,
};
use wasmtp::smtp::spool::{Content, Spool, SpoolSettings};

/// The client every test message comes from, and the names around it.
const CLIENT: &str = "192.0.2.10";
const HOSTNAME: &str = "mx.wasmtp.test";

/// Keys made once per run by `dkim_sign.py keygen`: (dir, rsa TXT, ed25519 TXT).
fn keys() -> &'static (PathBuf, String, String) {
    static KEYS: OnceLock<(PathBuf, String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wasmtp-dkim-keys-{}", std::process::id()));
        let out = harness::run_client_script("dkim_sign.py", &["keygen", dir.to_str().unwrap()]);
        let mut rsa = String::new();
        let mut ed = String::new();
        for line in out.lines() {
            let (kind, record) = line.split_once(' ').unwrap();
            match kind {
                "rsa" => rsa = record.to_owned(),
                _ => ed = record.to_owned(),
            }
        }
        (dir, rsa, ed)
    })
}

/// A TXT record of any length, in 255-byte strings (RFC 7208 §3.3).
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn zones() -> Vec<Zone> {
    let (_, rsa, ed) = keys();
    let keys = |name: &str| {
        format!(
            "rsa._domainkey{name} TXT ( {} )\ned._domainkey{name} TXT ( {} )\n",
            txt(rsa),
            txt(ed)
        )
    };
    let many_lookups: String = (1..=11).map(|n| format!(" a:h{n}.limits.test")).collect();
    let hosts: String = (1..=11)
        .map(|n| format!("h{n} A 198.51.100.{n}\n"))
        .collect();
    vec![
        // The parent of every test domain, so that DMARC's walk up the tree
        // (`_dmarc.test`) gets an NXDOMAIN, as from a real TLD.
        Zone::new("test", ""),
        // SPF pass for 192.0.2.0/24, DMARC reject, DKIM keys; the client's
        // name with a matching forward record, and one without.
        Zone::new(
            "pass.test",
            &format!(
                "@ A 192.0.2.1\n@ TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n\
                 _dmarc TXT \"v=DMARC1; p=reject\"\n\
                 mail A 192.0.2.10\nnomatch A 198.51.100.7\n\
                 @ MX 10 mail.pass.test.\n@ MX 5 mx1.pass.test.\n@ AAAA 2001:db8::10\n\
                 empty A 192.0.2.2\n{}",
                keys("")
            ),
        ),
        Zone::new("soft.test", "@ TXT \"v=spf1 ~all\""),
        Zone::new("neutral.test", "@ TXT \"v=spf1 ?all\""),
        Zone::new("nospf.test", "@ A 192.0.2.3"),
        Zone::new(
            "limits.test",
            &format!("@ TXT \"v=spf1{many_lookups} -all\"\n{hosts}"),
        ),
        // DMARC alignment and policies. The signing domain is mail.DOMAIN.
        Zone::new(
            "strict.test",
            &format!(
                "@ A 192.0.2.4\n_dmarc TXT \"v=DMARC1; p=reject; adkim=s; aspf=s\"\n{}",
                keys(".mail")
            ),
        ),
        Zone::new(
            "relaxed.test",
            &format!(
                "@ A 192.0.2.5\n_dmarc TXT \"v=DMARC1; p=reject; adkim=r\"\n{}",
                keys(".mail")
            ),
        ),
        Zone::new(
            "quarantine.test",
            "@ A 192.0.2.6\n_dmarc TXT \"v=DMARC1; p=quarantine\"",
        ),
        Zone::new(
            "nopolicy.test",
            "@ A 192.0.2.7\n_dmarc TXT \"v=DMARC1; p=none\"",
        ),
        Zone::new(
            "parent.test",
            "@ A 192.0.2.8\n_dmarc TXT \"v=DMARC1; p=none; sp=reject\"\nsub A 192.0.2.9",
        ),
        Zone::new(
            "pct.test",
            "@ A 192.0.2.11\n_dmarc TXT \"v=DMARC1; p=reject; pct=0\"",
        ),
        // Reverse DNS of the test clients.
        Zone::new(
            "2.0.192.in-addr.arpa",
            "10 PTR mail.pass.test.\n11 PTR nomatch.pass.test.",
        ),
        // A block list (RFC 5782): 127.0.0.2 is its test entry.
        Zone::new(
            "bl.test",
            "2.0.0.127 A 127.0.0.2\n2.0.0.127 TXT \"listed: see https://bl.test/127.0.0.2\"\n\
             10.2.0.192 A 127.0.0.4\n10.2.0.192 A 127.0.0.10",
        ),
    ]
}

fn server() -> &'static DnsServer {
    DnsServer::shared(zones)
}

fn dns_for(addr: std::net::SocketAddr, timeout: Duration) -> Arc<Dns> {
    let mut settings = DnsSettings::default();
    settings.default.nameservers = Some(vec![addr]);
    settings.default.timeout = timeout;
    settings.default.attempts = 1;
    Arc::new(Dns::new(&settings))
}

fn verifier() -> Arc<MailAuth> {
    static VERIFIER: OnceLock<Arc<MailAuth>> = OnceLock::new();
    Arc::clone(VERIFIER.get_or_init(|| {
        Arc::new(MailAuth::new(
            dns_for(server().addr(), Duration::from_secs(2)),
            MailAuthSettings::default(),
        ))
    }))
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn q(name: &str, kind: RecordType) -> Query {
    Query {
        name: name.into(),
        kind,
    }
}

fn transaction(client: &str, helo: &str, mail_from: &str) -> TransactionAuth {
    TransactionAuth::new(
        verifier(),
        AuthInput {
            client_ip: client.parse().unwrap(),
            helo: helo.into(),
            mail_from: mail_from.into(),
            hostname: HOSTNAME.into(),
        },
    )
}

/// A plain message from `from`.
fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Anne <{from}>\r\nTo: bob@example.net\r\nSubject: {subject}\r\n\
         Date: Mon, 30 Nov 2026 05:00:00 +0000\r\nMessage-ID: <{subject}@wasmtp.test>\r\n\r\n\
         Hello Bob,\r\nthis is {subject}.\r\n"
    )
    .into_bytes()
}

/// `message` signed by dkimpy: `key` rsa|ed25519, selector = key name.
fn sign(message: &[u8], key: &str, domain: &str, canon: &str, length: bool) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let (dir, _, _) = keys();
    let selector = if key == "rsa" { "rsa" } else { "ed" };
    let mut child = Command::new(harness::python())
        .arg(harness::client_script("dkim_sign.py"))
        .args(["sign", dir.to_str().unwrap(), key, domain, selector, canon])
        .arg(if length { "l" } else { "-" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim_sign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn results(t: &TransactionAuth, message: Vec<u8>) -> AuthResults {
    t.results(&Arc::new(Content::from(message)), soon()).await
}

// ---------------------------------------------------------------------------
// DNS

#[tokio::test]
async fn lookups_of_each_type_answer_records_or_a_reason() {
    let dns = dns_for(server().addr(), Duration::from_secs(2));
    let d = soon();
    assert_eq!(
        dns.lookup(None, &q("pass.test", RecordType::A), d).await,
        Ok(Records::A(vec![Ipv4Addr::new(192, 0, 2, 1)]))
    );
    assert_eq!(
        dns.lookup(None, &q("pass.test", RecordType::Aaaa), d).await,
        Ok(Records::Aaaa(vec!["2001:db8::10".parse().unwrap()]))
    );
    assert_eq!(
        dns.lookup(None, &q("pass.test", RecordType::Mx), d).await,
        Ok(Records::Mx(vec![
            (5, "mx1.pass.test".into()),
            (10, "mail.pass.test".into())
        ]))
    );
    assert_eq!(
        dns.lookup(None, &q("soft.test", RecordType::Txt), d).await,
        Ok(Records::Txt(vec!["v=spf1 ~all".into()]))
    );
    assert_eq!(
        dns.lookup(None, &q(CLIENT, RecordType::Ptr), d).await,
        Ok(Records::Ptr(vec!["mail.pass.test".into()]))
    );
    assert_eq!(
        dns.lookup(None, &q("10.2.0.192.in-addr.arpa", RecordType::Ptr), d)
            .await,
        Ok(Records::Ptr(vec!["mail.pass.test".into()]))
    );
    // A DKIM key longer than 255 bytes comes back as one string.
    let Ok(Records::Txt(key)) = dns
        .lookup(None, &q("rsa._domainkey.pass.test", RecordType::Txt), d)
        .await
    else {
        panic!("no DKIM key");
    };
    assert_eq!(key, vec![keys().1.clone()]);
    assert_eq!(
        dns.lookup(None, &q("missing.pass.test", RecordType::A), d)
            .await,
        Err(DnsError::NxDomain)
    );
    assert_eq!(
        dns.lookup(None, &q("empty.pass.test", RecordType::Txt), d)
            .await,
        Err(DnsError::NoData)
    );
    // Not a zone this server has: it refuses, which is a failure.
    assert_eq!(
        dns.lookup(None, &q("elsewhere.example", RecordType::A), d)
            .await,
        Err(DnsError::ServFail)
    );
    assert_eq!(
        dns.lookup(None, &q("bad..name", RecordType::A), d).await,
        Err(DnsError::Invalid)
    );
    assert_eq!(
        dns.lookup(Some("nope"), &q("pass.test", RecordType::A), d)
            .await,
        Err(DnsError::Denied)
    );
}

#[tokio::test]
async fn block_lists_answer_codes_and_reason() {
    let dns = dns_for(server().addr(), Duration::from_secs(2));
    let listed = dns
        .dnsbl(None, "127.0.0.2".parse().unwrap(), "bl.test", soon())
        .await
        .unwrap();
    assert!(listed.listed());
    assert_eq!(listed.codes, vec![Ipv4Addr::new(127, 0, 0, 2)]);
    assert_eq!(
        listed.reason.as_deref(),
        Some("listed: see https://bl.test/127.0.0.2")
    );
    let mut two = dns
        .dnsbl(None, CLIENT.parse().unwrap(), "bl.test", soon())
        .await
        .unwrap();
    two.codes.sort();
    assert_eq!(
        two.codes,
        vec![Ipv4Addr::new(127, 0, 0, 4), Ipv4Addr::new(127, 0, 0, 10)]
    );
    assert_eq!(two.reason, None);
    let clean = dns
        .dnsbl(None, "127.0.0.1".parse().unwrap(), "bl.test", soon())
        .await
        .unwrap();
    assert!(!clean.listed());
    assert_eq!(clean.reason, None);
}

/// The proof of the shared cache: NSD's own query counter does not move
/// for a repeated lookup, nor for a repeated SPF check of the same sender
/// in another transaction.
#[tokio::test]
async fn a_repeated_lookup_sends_no_packet() {
    let server = DnsServer::start(&zones());
    let dns = dns_for(server.addr(), Duration::from_secs(2));
    let query = q("pass.test", RecordType::Txt);
    let before = server.queries();
    dns.lookup(None, &query, soon()).await.unwrap();
    let first = server.queries() - before;
    dns.lookup(None, &query, soon()).await.unwrap();
    let lookups = dns
        .lookup_all(None, &[query.clone(), query.clone(), query.clone()], soon())
        .await;
    assert!(lookups.iter().all(Result::is_ok));
    assert_eq!((first, server.queries() - before), (1, 1));

    // Mail authentication shares the resolver and its cache.
    let verifier = Arc::new(MailAuth::new(dns, MailAuthSettings::default()));
    let check = || async {
        let t = TransactionAuth::new(
            Arc::clone(&verifier),
            AuthInput {
                client_ip: CLIENT.parse().unwrap(),
                helo: "mail.pass.test".into(),
                mail_from: "anne@pass.test".into(),
                hostname: HOSTNAME.into(),
            },
        );
        t.spf_mail_from(soon()).await.result
    };
    let before = server.queries();
    assert_eq!(check().await, "pass");
    let cold = server.queries() - before;
    assert_eq!(check().await, "pass");
    let warm = server.queries() - before - cold;
    // The TXT of pass.test was cached above already.
    assert_eq!((cold, warm), (0, 0));
    let before = server.queries();
    let soft = TransactionAuth::new(
        Arc::clone(&verifier),
        AuthInput {
            client_ip: CLIENT.parse().unwrap(),
            helo: "mail.pass.test".into(),
            mail_from: "anne@soft.test".into(),
            hostname: HOSTNAME.into(),
        },
    );
    assert_eq!(soft.spf_mail_from(soon()).await.result, "softfail");
    assert_eq!(soft.spf_mail_from(soon()).await.result, "softfail");
    eprintln!(
        "queries for a cold SPF check of soft.test: {}",
        server.queries() - before
    );
    assert_eq!(
        server.queries() - before,
        1,
        "one TXT query, then the cache"
    );
}

/// Queries of one call run at once: against a server that never answers,
/// five lookups cost one deadline, not five.
#[tokio::test]
async fn a_silent_server_costs_the_deadline_once() {
    let silent = SilentServer::start();
    let dns = dns_for(silent.addr(), Duration::from_secs(30));
    let queries: Vec<Query> = (0..5)
        .map(|n| q(&format!("n{n}.pass.test"), RecordType::A))
        .collect();
    let start = Instant::now();
    let answers = dns
        .lookup_all(None, &queries, start + Duration::from_millis(300))
        .await;
    let took = start.elapsed();
    assert_eq!(answers, vec![Err(DnsError::Timeout); 5]);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
}

// ---------------------------------------------------------------------------
// SPF and iprev

#[tokio::test]
async fn spf_results() {
    let spf = |from: &'static str, client: &'static str| async move {
        transaction(client, "mail.pass.test", from)
            .spf_mail_from(soon())
            .await
    };
    let pass = spf("anne@pass.test", CLIENT).await;
    assert_eq!(pass.result, "pass");
    assert_eq!(pass.get("smtp.mailfrom"), Some("anne@pass.test"));
    assert_eq!(spf("anne@pass.test", "198.51.100.1").await.result, "fail");
    assert_eq!(spf("anne@soft.test", CLIENT).await.result, "softfail");
    assert_eq!(spf("anne@neutral.test", CLIENT).await.result, "neutral");
    assert_eq!(spf("anne@nospf.test", CLIENT).await.result, "none");
    assert_eq!(spf("anne@limits.test", CLIENT).await.result, "permerror");
    // The null sender: postmaster@HELO (mail.pass.test publishes no SPF).
    let null = spf("", CLIENT).await;
    assert_eq!(null.result, "none");
    assert_eq!(null.get("smtp.mailfrom"), Some("<>"));
    let helo = transaction(CLIENT, "pass.test", "anne@nospf.test")
        .spf_helo(soon())
        .await;
    assert_eq!(
        (helo.result.as_str(), helo.get("smtp.helo")),
        ("pass", Some("pass.test"))
    );
}

#[tokio::test]
async fn spf_is_a_temperror_when_the_server_is_down_or_silent() {
    let mut down = DnsServer::start(&zones());
    let addr = down.addr();
    down.stop();
    let verifier = Arc::new(MailAuth::new(
        dns_for(addr, Duration::from_secs(1)),
        MailAuthSettings::default(),
    ));
    let input = AuthInput {
        client_ip: CLIENT.parse().unwrap(),
        helo: "mail.pass.test".into(),
        mail_from: "anne@pass.test".into(),
        hostname: HOSTNAME.into(),
    };
    let t = TransactionAuth::new(Arc::clone(&verifier), input.clone());
    assert_eq!(t.spf_mail_from(soon()).await.result, "temperror");

    let silent = SilentServer::start();
    let verifier = Arc::new(MailAuth::new(
        dns_for(silent.addr(), Duration::from_secs(30)),
        MailAuthSettings::default(),
    ));
    let t = TransactionAuth::new(verifier, input);
    let start = Instant::now();
    let r = t.spf_mail_from(start + Duration::from_millis(300)).await;
    assert_eq!(r.result, "temperror");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn iprev_needs_a_matching_forward_record() {
    let pass = transaction(CLIENT, "x", "a@pass.test").iprev(soon()).await;
    assert_eq!(pass.result, "pass");
    assert_eq!(pass.get("policy.iprev"), Some(CLIENT));
    assert_eq!(pass.get("policy.ptr"), Some("mail.pass.test"));
    let fail = transaction("192.0.2.11", "x", "a@pass.test")
        .iprev(soon())
        .await;
    assert_eq!(fail.result, "fail");
    let none = transaction("192.0.2.12", "x", "a@pass.test")
        .iprev(soon())
        .await;
    assert_eq!(none.result, "permerror");
}

// ---------------------------------------------------------------------------
// DKIM, ARC, DMARC and Authentication-Results

#[tokio::test]
async fn dkim_signatures_rsa_ed25519_and_several() {
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let m = message("anne@pass.test", "rsa");
    let r = results(&t, sign(&m, "rsa", "pass.test", "relaxed/relaxed", false)).await;
    assert_eq!(r.dkim.len(), 1);
    assert_eq!(r.dkim[0].result, "pass", "{:?}", r.dkim[0]);
    assert_eq!(r.dkim[0].get("header.d"), Some("pass.test"));
    assert_eq!(r.dkim[0].get("header.s"), Some("rsa"));
    assert_eq!(r.dkim[0].get("header.a"), Some("rsa-sha256"));
    assert_eq!(r.dkim[0].get("header.c"), Some("relaxed/relaxed"));

    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let m = message("anne@pass.test", "ed25519");
    let r = results(&t, sign(&m, "ed25519", "pass.test", "simple/simple", false)).await;
    assert_eq!(r.dkim[0].result, "pass", "{:?}", r.dkim[0]);
    assert_eq!(r.dkim[0].get("header.a"), Some("ed25519-sha256"));
    assert_eq!(r.dkim[0].get("header.c"), Some("simple/simple"));

    // Two signatures, each reported, in the message's order.
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let m = message("anne@pass.test", "both");
    let both = sign(
        &sign(&m, "rsa", "pass.test", "relaxed/simple", false),
        "ed25519",
        "pass.test",
        "relaxed/relaxed",
        false,
    );
    let r = results(&t, both).await;
    let seen: Vec<_> = r
        .dkim
        .iter()
        .map(|d| (d.result.as_str(), d.get("header.s").unwrap()))
        .collect();
    assert_eq!(seen, vec![("pass", "ed"), ("pass", "rsa")]);
}

/// A body changed after signing fails its body hash; a signature with
/// `l=` (which lets anyone append to the body) is not trusted at all.
#[tokio::test]
async fn a_body_changed_after_signing_fails_and_l_is_not_trusted() {
    let m = message("anne@pass.test", "changed");
    let signed = sign(&m, "rsa", "pass.test", "relaxed/relaxed", false);
    let mut changed = signed.clone();
    changed.extend_from_slice(b"P.S. added on the way\r\n");
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let r = results(&t, changed).await;
    assert_eq!(r.dkim[0].result, "neutral", "{:?}", r.dkim[0]);
    assert!(
        r.dkim[0].reason.as_deref().unwrap().contains("body hash"),
        "{:?}",
        r.dkim[0]
    );
    assert_eq!(r.dmarc.result, "pass", "SPF still aligns: {:?}", r.dmarc);

    let mut with_l = sign(&m, "rsa", "pass.test", "relaxed/relaxed", true);
    with_l.extend_from_slice(b"P.S. added on the way\r\n");
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let r = results(&t, with_l).await;
    assert_eq!(r.dkim[0].result, "neutral", "{:?}", r.dkim[0]);
    assert!(
        r.dkim[0].reason.as_deref().unwrap().contains("'l='"),
        "{:?}",
        r.dkim[0]
    );
}

#[tokio::test]
async fn dmarc_alignment_and_policies() {
    let dmarc = |from: &'static str, sign_as: Option<&'static str>, mail_from: &'static str| async move {
        let m = message(from, "dmarc");
        let m = match sign_as {
            Some(d) => sign(&m, "rsa", d, "relaxed/relaxed", false),
            None => m,
        };
        let t = transaction(CLIENT, "mail.pass.test", mail_from);
        results(&t, m).await
    };
    // Aligned SPF and DKIM.
    let r = dmarc("anne@pass.test", Some("pass.test"), "anne@pass.test").await;
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("pass", DmarcPolicy::None)
    );
    assert_eq!(r.dmarc.get("header.from"), Some("pass.test"));
    // Relaxed: mail.relaxed.test aligns with relaxed.test.
    let r = dmarc(
        "anne@relaxed.test",
        Some("mail.relaxed.test"),
        "x@soft.test",
    )
    .await;
    assert_eq!(r.dkim[0].result, "pass");
    assert_eq!(r.dmarc.result, "pass", "{:?}", r.dmarc);
    // Strict: it does not.
    let r = dmarc("anne@strict.test", Some("mail.strict.test"), "x@soft.test").await;
    assert_eq!(r.dkim[0].result, "pass");
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("fail", DmarcPolicy::Reject)
    );
    assert_eq!(r.dmarc.get("policy.dmarc"), Some("reject"));
    // p=quarantine, p=none.
    let r = dmarc("anne@quarantine.test", None, "x@soft.test").await;
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("fail", DmarcPolicy::Quarantine)
    );
    let r = dmarc("anne@nopolicy.test", None, "x@soft.test").await;
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("fail", DmarcPolicy::None)
    );
    // A subdomain without its own record: the parent's sp=.
    let r = dmarc("anne@sub.parent.test", None, "x@soft.test").await;
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("fail", DmarcPolicy::Reject)
    );
    // pct=0: never sampled, so one step less strict.
    let r = dmarc("anne@pct.test", None, "x@soft.test").await;
    assert_eq!(r.dmarc.get("policy.dmarc"), Some("reject"));
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("fail", DmarcPolicy::Quarantine)
    );
    assert_eq!(r.dmarc.get("policy.applied"), Some("quarantine"));
    // No DMARC record at all.
    let r = dmarc("anne@soft.test", None, "x@soft.test").await;
    assert_eq!(
        (r.dmarc.result.as_str(), r.dmarc_policy),
        ("none", DmarcPolicy::None)
    );
}

#[tokio::test]
async fn arc_chains_are_validated() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut m =
        b"Authentication-Results: relay.pass.test; spf=pass smtp.mailfrom=anne@pass.test\r\n"
            .to_vec();
    m.extend(message("anne@pass.test", "arc"));
    let mut child = Command::new(harness::python())
        .arg(harness::client_script("dkim_sign.py"))
        .args([
            "arc",
            keys().0.to_str().unwrap(),
            "pass.test",
            "rsa",
            "relay.pass.test",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&m).unwrap();
    let sealed = child.wait_with_output().unwrap().stdout;
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let r = results(&t, sealed).await;
    assert_eq!(r.arc.result, "pass", "{:?}", r.arc);
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let r = results(&t, message("anne@pass.test", "no-arc")).await;
    assert_eq!(r.arc.result, "none");
}

/// The whole `Authentication-Results` value, and that a transaction
/// computes it once: a second caller gets the same without a packet.
#[tokio::test]
async fn the_authentication_results_value_is_complete_and_computed_once() {
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let m = sign(
        &message("anne@pass.test", "header"),
        "ed25519",
        "pass.test",
        "relaxed/relaxed",
        false,
    );
    let content = Arc::new(Content::from(m));
    let first = t.results(&content, soon()).await;
    let v = &first.header_value;
    assert!(v.starts_with("mx.wasmtp.test;"), "{v}");
    for part in [
        "iprev=pass policy.iprev=192.0.2.10",
        "spf=pass",
        "smtp.helo=mail.pass.test",
        "smtp.mailfrom=anne@pass.test",
        "dkim=pass header.i=@pass.test header.s=ed",
        "arc=none",
        "dmarc=pass header.from=pass.test policy.dmarc=reject",
    ] {
        assert!(v.contains(part), "no `{part}` in {v}");
    }
    assert!(
        !v.contains("\r\n\r\n") && v.lines().skip(1).all(|l| l.starts_with('\t')),
        "{v:?}"
    );
    let before = server().queries();
    let again = t.results(&content, soon()).await;
    assert_eq!(again, first);
    assert_eq!(server().queries(), before);

    // authserv-id from [auth].
    let verifier = Arc::new(MailAuth::new(
        Arc::clone(verifier().dns()),
        MailAuthSettings {
            authserv_id: Some("auth.example".into()),
            ..MailAuthSettings::default()
        },
    ));
    let t = TransactionAuth::new(
        verifier,
        AuthInput {
            client_ip: CLIENT.parse().unwrap(),
            helo: "mail.pass.test".into(),
            mail_from: "anne@pass.test".into(),
            hostname: HOSTNAME.into(),
        },
    );
    let r = t.results(&content, soon()).await;
    assert!(r.header_value.starts_with("auth.example;"));
    assert_eq!(r.authserv_id, "auth.example");
}

/// The message is read from the spool file, and one larger than
/// `dkim_max_size` is not verified.
#[tokio::test]
async fn dkim_reads_spooled_messages_and_skips_oversized_ones() {
    let signed = sign(
        &message("anne@pass.test", "spooled"),
        "rsa",
        "pass.test",
        "relaxed/relaxed",
        false,
    );
    let mut spool = Spool::new(Arc::new(SpoolSettings {
        threshold: 16,
        ..SpoolSettings::default()
    }));
    spool.write(&signed).unwrap();
    let content = Arc::new(spool.finish().unwrap());
    assert!(content.is_spooled());
    let t = transaction(CLIENT, "mail.pass.test", "anne@pass.test");
    let r = t.results(&content, soon()).await;
    assert_eq!(r.dkim[0].result, "pass");

    let verifier = Arc::new(MailAuth::new(
        Arc::clone(verifier().dns()),
        MailAuthSettings {
            dkim_max_size: 100,
            ..MailAuthSettings::default()
        },
    ));
    let t = TransactionAuth::new(
        verifier,
        AuthInput {
            client_ip: CLIENT.parse().unwrap(),
            helo: "mail.pass.test".into(),
            mail_from: "anne@pass.test".into(),
            hostname: HOSTNAME.into(),
        },
    );
    let r = t.results(&content, soon()).await;
    assert_eq!(r.dkim[0].result, "none");
    assert!(
        r.dkim[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("dkim_max_size")
    );
}

// ---------------------------------------------------------------------------
// Through the server: the `dns` and `mail-auth` imports, granted, bounded
// and refused, read by a Rust test plugin (tests/plugins/dns-probe).

/// A config serving dns-probe behind the PROXY protocol (so a test can
/// speak for any client address) with `grants`, resolving at `nameserver`.
fn probe_config(nameserver: std::net::SocketAddr, grants: &str, hook_timeout: f64) -> String {
    format!(
        "[dns]\nnameservers = [\"{nameserver}\"]\ntimeout = 5\nattempts = 1\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"probe\"\nhostname = \"{HOSTNAME}\"\n\
         proxy_protocol = true\n\
         [plugin.probe]\ncomponent = \"{}\"\nhook_timeout = {hook_timeout}\n\
         [plugin.probe.grants]\n{grants}\n",
        harness::plugin_path("dns_probe.wasm").display()
    )
}

const PROBE_GRANTS: &str = "dns = { suffixes = [\"pass.test\", \"bl.test\", \"in-addr.arpa\"], \
                            types = [\"a\", \"txt\", \"ptr\", \"mx\"], budget = 3 }\nmail_auth = true";

/// A client of `server` that the PROXY header says is `client`.
fn client_as(server: &harness::Server, client: &str) -> harness::Client {
    let mut c = harness::Client::connect(server.addr());
    c.send_raw(format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n").as_bytes());
    c.expect_reply(220);
    c
}

/// What dns-probe answered for the recipient `local@probe.test`.
fn ask(c: &mut harness::Client, local: &str) -> String {
    c.expect(&format!("RCPT TO:<{local}@probe.test>"), 250)
        .text()
}

#[test]
fn plugins_look_up_what_they_are_granted_and_nothing_else() {
    let server = harness::Server::start_config(&probe_config(server().addr(), PROBE_GRANTS, 5.0));
    let mut c = client_as(&server, CLIENT);
    c.expect("EHLO mail.pass.test", 250);
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    assert_eq!(
        ask(&mut c, "txt+pass.test"),
        "2.1.5 txt: v=spf1 ip4:192.0.2.0/24 -all"
    );
    assert_eq!(
        ask(&mut c, "mx+pass.test"),
        "2.1.5 mx: 5 mx1.pass.test | 10 mail.pass.test"
    );
    assert_eq!(ask(&mut c, "ptr+192.0.2.10"), "2.1.5 ptr: mail.pass.test");
    assert_eq!(ask(&mut c, "a+missing.pass.test"), "2.1.5 error: nxdomain");
    // Outside the grant: another name (an exfiltration channel), another type.
    assert_eq!(
        ask(&mut c, "a+secret-data.attacker.example"),
        "2.1.5 error: denied"
    );
    assert_eq!(
        ask(&mut c, "a+pass.test.attacker.example"),
        "2.1.5 error: denied"
    );
    assert_eq!(ask(&mut c, "aaaa+pass.test"), "2.1.5 error: denied");
    // Three queries per hook call: the fourth and fifth are refused.
    assert_eq!(
        ask(&mut c, "all+5+pass.test"),
        "2.1.5 all: ok,ok,ok,budget,budget"
    );
    // A new hook call, a new budget; a block-list query costs two.
    assert_eq!(
        ask(&mut c, "bl+127.0.0.2+bl.test"),
        "2.1.5 listed 127.0.0.2 (listed: see https://bl.test/127.0.0.2)"
    );
    assert_eq!(ask(&mut c, "bl+127.0.0.1+bl.test"), "2.1.5 clean");
    assert_eq!(
        ask(&mut c, "bl+127.0.0.2+zen.example"),
        "2.1.5 error: denied"
    );
}

#[test]
fn plugins_read_the_transactions_authentication() {
    let server = harness::Server::start_config(&probe_config(server().addr(), PROBE_GRANTS, 5.0));
    let mut c = client_as(&server, CLIENT);
    c.expect("EHLO mail.pass.test", 250);
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    assert_eq!(
        ask(&mut c, "helo"),
        "2.1.5 spf=none smtp.helo=mail.pass.test"
    );
    assert_eq!(
        ask(&mut c, "spf"),
        "2.1.5 spf=pass smtp.mailfrom=anne@pass.test"
    );
    assert_eq!(
        ask(&mut c, "iprev"),
        "2.1.5 iprev=pass policy.iprev=192.0.2.10 policy.ptr=mail.pass.test"
    );
    c.expect("DATA", 354);
    let signed = sign(
        &message("anne@pass.test", "probe"),
        "ed25519",
        "pass.test",
        "relaxed/relaxed",
        false,
    );
    let mut body = String::from_utf8(signed).unwrap();
    body.push_str(".\r\n");
    c.send_raw(body.as_bytes());
    let reply = c.expect_reply(250);
    let text = reply.text();
    for line in [
        "2.0.0 iprev=pass policy.iprev=192.0.2.10",
        "2.0.0 spf-mail-from=pass smtp.mailfrom=anne@pass.test",
        "2.0.0 dkim=pass header.d=pass.test header.s=ed",
        "2.0.0 arc=none",
        "2.0.0 dmarc=pass header.from=pass.test policy.dmarc=reject policy.applied=none",
        "2.0.0 policy=none",
        "2.0.0 header: mx.wasmtp.test; iprev=pass",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    // Strict SPF failure and DMARC rejection, as a policy plugin sees them.
    let mut c = client_as(&server, "198.51.100.1");
    c.expect("EHLO unknown.example", 250);
    c.expect("MAIL FROM:<anne@strict.test>", 250);
    assert!(ask(&mut c, "spf").starts_with("2.1.5 spf=none"));
    c.expect("DATA", 354);
    let mut body = String::from_utf8(message("anne@strict.test", "forged")).unwrap();
    body.push_str(".\r\n");
    c.send_raw(body.as_bytes());
    let text = c.expect_reply(250).text();
    assert!(text.contains("2.0.0 dmarc=fail"), "{text}");
    assert!(text.contains("2.0.0 policy=reject"), "{text}");
}

#[test]
fn a_plugin_importing_dns_or_mail_auth_needs_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    for (grants, import, grant) in [
        ("mail_auth = true", "wasmtp:smtp/dns@0.1.0", "dns"),
        (
            "dns = { suffixes = [\".\"] }",
            "wasmtp:smtp/mail-auth@0.1.0",
            "mail_auth",
        ),
    ] {
        let config = dir.path().join("wasmtp.toml");
        std::fs::write(&config, probe_config(server().addr(), grants, 5.0)).unwrap();
        let out = harness::run_wasmtp(
            &["--config", config.to_str().unwrap()],
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "dns_probe.wasm imports {import}, which needs `grants.{grant}` in [plugin.probe.grants]"
            )),
            "{stderr}"
        );
    }
}

/// A nameserver that never answers costs the hook its deadline, as a
/// `timeout` the plugin can act on; the session and the server go on.
#[test]
fn a_silent_nameserver_costs_the_hook_its_deadline_not_the_server() {
    let silent = SilentServer::start();
    let server = harness::Server::start_config(&probe_config(silent.addr(), PROBE_GRANTS, 1.0));
    let mut c = client_as(&server, CLIENT);
    c.expect("EHLO mail.pass.test", 250);
    c.expect("MAIL FROM:<anne@pass.test>", 250);
    let start = Instant::now();
    assert_eq!(ask(&mut c, "txt+pass.test"), "2.1.5 error: timeout");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(ask(&mut c, "spf").starts_with("2.1.5 spf=temperror"));
    // Meanwhile another session is served at once.
    let mut other = client_as(&server, CLIENT);
    other.expect("NOOP", 250);
    c.expect("NOOP", 250);
}

/// The same results, read by a Python plugin (componentize-py) and a
/// JavaScript one (componentize-qjs): the WIT types work beyond Rust.
#[test]
fn python_and_javascript_plugins_read_the_same_results() {
    let python = harness::python_component("auth_reader", "test:auth-reader/reader");
    let javascript = harness::javascript_component("auth_reader", "reader");
    let rust = harness::plugin_path("dns_probe.wasm");
    let signed = sign(
        &message("anne@pass.test", "python"),
        "rsa",
        "pass.test",
        "relaxed/simple",
        false,
    );
    let mut answers = Vec::new();
    for component in [rust.as_path(), python.as_path(), javascript.as_path()] {
        let config = probe_config(
            server().addr(),
            "mail_auth = true\ndns = { suffixes = [\".\"] }",
            5.0,
        )
        .replace(
            &rust.display().to_string(),
            &component.display().to_string(),
        );
        // A first compile of an 18 MB Python component takes a while on a
        // loaded machine: wait longer than `Server::start_config` does.
        let file =
            std::env::temp_dir().join(format!("wasmtp-auth-reader-{}.toml", std::process::id()));
        std::fs::write(&file, &config).unwrap();
        let mut command = std::process::Command::new(harness::WASMTP);
        command
            .arg("--config")
            .arg(&file)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let mut process = harness::Process::spawn("wasmtp", command);
        let log = process.wait_for_stderr("listening on", Duration::from_secs(300));
        let addr = harness::listening_addrs(&log)[0];
        let mut c = harness::Client::connect(addr);
        c.send_raw(format!("PROXY TCP4 {CLIENT} 127.0.0.1 40000 25\r\n").as_bytes());
        c.expect_reply(220);
        c.expect("EHLO mail.pass.test", 250);
        c.expect("MAIL FROM:<anne@pass.test>", 250);
        c.send("RCPT TO:<bob@example.net>");
        c.read_reply();
        c.expect("DATA", 354);
        let mut body = String::from_utf8(signed.clone()).unwrap();
        body.push_str(".\r\n");
        c.send_raw(body.as_bytes());
        answers.push(c.expect_reply(250).text());
    }
    assert!(
        answers[0].contains("dkim=pass header.d=pass.test header.s=rsa"),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1], answers[0], "Python");
    assert_eq!(answers[2], answers[0], "JavaScript");
}

/// What verification costs on a warm cache: a 9 KB message signed with
/// RSA-2048, all of iprev, SPF (HELO and MAIL FROM), DKIM, ARC and DMARC
/// per transaction. Printed, not asserted (`--nocapture` shows it); the
/// packets are counted: none after the first transaction.
#[tokio::test]
async fn verification_cost_on_a_warm_cache() {
    let server = DnsServer::start(&zones());
    let verifier = Arc::new(MailAuth::new(
        dns_for(server.addr(), Duration::from_secs(2)),
        MailAuthSettings::default(),
    ));
    let mut m = message("anne@pass.test", "cost");
    let body: String = (0..140)
        .map(|i| format!("line {i:03} of a ten kilobyte message body, padding it out.\r\n"))
        .collect();
    m.extend_from_slice(body.as_bytes());
    let content = Arc::new(Content::from(sign(
        &m,
        "rsa",
        "pass.test",
        "relaxed/relaxed",
        false,
    )));
    let run = || {
        TransactionAuth::new(
            Arc::clone(&verifier),
            AuthInput {
                client_ip: CLIENT.parse().unwrap(),
                helo: "mail.pass.test".into(),
                mail_from: "anne@pass.test".into(),
                hostname: HOSTNAME.into(),
            },
        )
    };
    let first = run().results(&content, soon()).await;
    assert_eq!(first.dkim[0].result, "pass");
    let cold = server.queries();
    let n = 50;
    let start = Instant::now();
    for _ in 0..n {
        let r = run().results(&content, soon()).await;
        assert_eq!(r.dmarc.result, "pass");
    }
    let each = start.elapsed() / n;
    assert_eq!(server.queries(), cold, "a warm cache sends no packet");
    eprintln!(
        "verification of a {} byte message, warm cache: {each:?} per transaction; \
         DNS queries: {cold} for the first transaction, 0 for the next {n}",
        content.len()
    );
}
