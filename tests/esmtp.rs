//! More ESMTP through the real server: CHUNKING/BDAT and BINARYMIME
//! (RFC 3030), with and without pipelining; DSN parameters (RFC 3461)
//! checked and passed to plugins; ENHANCEDSTATUSCODES (RFC 2034) when a
//! listener turns it on.

#[path = "harness/mod.rs"]
mod harness;
#[path = "protocol/mod.rs"]
mod protocol;

use harness::{Client, HOSTNAME, Server, plugin_path};

fn every_hook(extra: &str) -> Server {
    config("every_hook.wasm", extra)
}

fn config(plugin: &str, extra: &str) -> Server {
    let plugin = if plugin.ends_with(".wasm") {
        plugin_path(plugin).to_str().unwrap().to_string()
    } else {
        plugin.to_string()
    };
    Server::start_config(&format!(
        r#"
        [server]
        hostname = "{HOSTNAME}"
        [[listener]]
        address = "127.0.0.1:0"
        plugin = "p"
        {extra}
        [plugin.p]
        component = {plugin:?}
        "#
    ))
}

/// FNV-1a, as every-hook computes it over the content it reads.
fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn in_transaction(server: &Server) -> Client {
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c
}

#[test]
fn ehlo_offers_chunking_binarymime_and_dsn() {
    let server = config("sink", "");
    let mut c = Client::greeted(server.addr());
    let ehlo = c.expect("EHLO client.example", 250);
    for keyword in ["PIPELINING", "CHUNKING", "BINARYMIME", "DSN"] {
        assert!(
            ehlo.lines.contains(&keyword.to_string()),
            "{keyword}: {ehlo}"
        );
    }
    assert!(
        !ehlo.lines.contains(&"ENHANCEDSTATUSCODES".to_string()),
        "off by default: {ehlo}"
    );
}

#[test]
fn bdat_chunks_make_one_message() {
    let server = every_hook("");
    let mut c = in_transaction(&server);
    c.send_raw(b"BDAT 12\r\nHello, BDAT ");
    assert_eq!(c.expect_reply(250).text(), "12 octets received");
    // Chunks are binary: CRLF.CRLF, NUL and a bare CR are content.
    let last = b"\r\n.\r\n\0\r--";
    c.send_raw(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    c.send_raw(last);
    let message = [&b"Hello, BDAT "[..], last].concat();
    let reply = c.expect_reply(250).text();
    assert!(
        reply.contains(&format!(
            "data {} bytes fnv1a={}",
            message.len(),
            fnv1a(&message)
        )),
        "{reply}"
    );
    // The transaction is over; a new one may use DATA.
    c.expect("MAIL FROM:<anne@example.com>", 250);
}

#[test]
fn bdat_pipelined_with_commands() {
    let server = every_hook("");
    let mut c = Client::after_ehlo(server.addr());
    // One write: chunks whose bytes look like commands, between commands.
    c.send_raw(b"MAIL FROM:<anne@example.com>\r\nRCPT TO:<bart@example.com>\r\nBDAT 6\r\nRSET\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP pipelined\r\n");
    c.expect_reply(250);
    c.expect_reply(250);
    assert_eq!(c.expect_reply(250).text(), "6 octets received");
    let reply = c.expect_reply(250).text();
    assert!(
        reply.contains(&format!(
            "data 12 bytes fnv1a={}",
            fnv1a(b"RSET\r\nQUIT\r\n")
        )),
        "{reply}"
    );
    assert!(
        c.expect_reply(250)
            .text()
            .starts_with("every-hook noop pipelined")
    );
}

#[test]
fn bdat_zero_last_and_syntax() {
    let server = every_hook("");
    let mut c = in_transaction(&server);
    c.send_raw(b"BDAT 3\r\nabc");
    c.expect_reply(250);
    assert!(c.expect("BDAT 0 LAST", 250).text().contains("data 3 bytes"));
    for bad in [
        "BDAT",
        "BDAT x",
        "BDAT -1",
        "BDAT 1 FIRST",
        "BDAT 1 LAST more",
    ] {
        assert_eq!(
            c.expect(bad, 501).text(),
            "Syntax: BDAT <size> [LAST]",
            "{bad}"
        );
    }
}

#[test]
fn a_refused_bdat_still_consumes_its_chunk() {
    let server = every_hook("");
    let mut c = Client::after_ehlo(server.addr());
    // Without MAIL the chunk is refused, and its bytes (a command!) are read
    // and dropped, never executed.
    c.send_raw(b"BDAT 6\r\nQUIT\r\n");
    assert_eq!(c.expect_reply(503).text(), "Error: need MAIL command");
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.send_raw(b"BDAT 6\r\nQUIT\r\n");
    assert_eq!(c.expect_reply(503).text(), "Error: need RCPT command");
    c.expect("NOOP", 250);
}

#[test]
fn bdat_and_data_do_not_mix_and_binarymime_needs_bdat() {
    let server = every_hook("");
    let mut c = in_transaction(&server);
    c.send_raw(b"BDAT 2\r\nab");
    c.expect_reply(250);
    assert_eq!(
        c.expect("DATA", 503).text(),
        "5.5.1 Error: BDAT and DATA cannot be mixed in one transaction"
    );
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<anne@example.com> BODY=BINARYMIME", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    assert_eq!(
        c.expect("DATA", 503).text(),
        "5.5.1 Error: BODY=BINARYMIME requires BDAT"
    );
    c.send_raw(b"BDAT 4 LAST\r\n\xff\x00\x80\n");
    assert!(c.expect_reply(250).text().contains("data 4 bytes"));
}

#[test]
fn bdat_past_the_size_limit_fails_the_transaction() {
    let server = every_hook("size = 100");
    let mut c = in_transaction(&server);
    c.send_raw(b"BDAT 60\r\n");
    c.send_raw(&[b'x'; 60]);
    c.expect_reply(250);
    c.send_raw(b"BDAT 60 LAST\r\n");
    c.send_raw(&[b'y'; 60]);
    assert_eq!(c.expect_reply(552).text(), "Error: Too much mail data");
    // RFC 3030 2: the transaction failed; the chunk was read to its end.
    c.expect("RCPT TO:<bart@example.com>", 503);
    c.expect("NOOP", 250);
}

#[test]
fn lmtp_bdat_answers_per_recipient() {
    let server = config(&protocol::gatekeeper(), r#"protocol = "lmtp""#);
    let mut c = Client::greeted(server.addr());
    c.expect("LHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@example.com>", 250);
    c.expect("RCPT TO:<full@example.com>", 250);
    c.send_raw(b"BDAT 5 LAST\r\nhello");
    assert_eq!(
        c.expect_reply(250).text(),
        "2.0.0 <bart@example.com> delivered (5 bytes)"
    );
    assert_eq!(
        c.expect_reply(452).text(),
        "4.2.2 <full@example.com> mailbox full"
    );
}

#[test]
fn dsn_parameters_are_checked_and_passed_on() {
    let server = every_hook("");
    let mut c = Client::after_ehlo(server.addr());
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com> RET=ALL", 501).text(),
        "5.5.4 Error: RET can only be one of FULL, HDRS"
    );
    c.expect("MAIL FROM:<anne@example.com> ENVID=a=b", 501);
    let mail = c
        .expect("MAIL FROM:<anne@example.com> ret=hdrs ENVID=Msg+2B1", 250)
        .text();
    assert!(
        mail.contains("options=RET=HDRS,ENVID=Msg+2B1 "),
        "ENVID keeps its case: {mail}"
    );
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com> NOTIFY=NEVER,SUCCESS", 501)
            .text(),
        "5.5.4 Error: NOTIFY can only be NEVER or a list of SUCCESS, FAILURE, DELAY"
    );
    c.expect("RCPT TO:<bart@example.com> ORCPT=bart@example.com", 501);
    let rcpt = c
        .expect(
            "RCPT TO:<bart@example.com> NOTIFY=success,delay ORCPT=rfc822;Bart@Example.com",
            250,
        )
        .text();
    assert!(
        rcpt.contains("options=NOTIFY=SUCCESS,DELAY,ORCPT=rfc822;Bart@Example.com "),
        "{rcpt}"
    );
    assert_eq!(
        c.expect("RCPT TO:<cate@example.com> XFOO=1", 555).text(),
        "RCPT TO parameters not recognized or not implemented"
    );
}

#[test]
fn enhanced_status_codes_when_turned_on() {
    let server = config("sink", "enhanced_status_codes = true");
    let mut c = Client::greeted(server.addr());
    // Before EHLO, and after HELO, replies stay as they are.
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 503).text(),
        "Error: send HELO first"
    );
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.contains(&"ENHANCEDSTATUSCODES".to_string()),
        "{ehlo}"
    );
    assert_eq!(
        c.expect("MAIL FROM:<anne@example.com>", 250).text(),
        "2.1.0 OK"
    );
    assert_eq!(
        c.expect("RCPT TO:<bart@example.com>", 250).text(),
        "2.1.5 OK"
    );
    assert_eq!(
        c.expect("RCPT TO:<bart@>", 553).text(),
        "5.1.3 Error: malformed address"
    );
    assert_eq!(
        c.expect("XYZZY", 500).text(),
        "5.5.2 Error: command \"XYZZY\" not recognized"
    );
    assert_eq!(
        c.expect("DATA", 354).text(),
        "End data with <CR><LF>.<CR><LF>"
    );
    c.send_raw(b"hi\r\n.\r\n");
    assert_eq!(c.expect_reply(250).text(), "2.0.0 OK");
    assert_eq!(
        c.expect("VRFY bart", 252).text(),
        "2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
    );
    assert_eq!(c.expect("QUIT", 221).text(), "2.0.0 Bye");
}
