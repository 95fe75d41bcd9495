//! wasmtp against aiosmtpd 1.4.6, dialog by dialog (DESIGN.md decision 9).
//!
//! [`DIALOGS`] is a table of short SMTP dialogs written as transcripts, with
//! the replies aiosmtpd 1.4.6 gives (`python3 -m aiosmtpd -c
//! aiosmtpd.handlers.Sink`). Every dialog is played against aiosmtpd, to
//! prove the transcript right, and against `wasmtp -c sink`, which must give
//! the same replies, line for line, except where [`DIFFERENCES`] says
//! otherwise and why. Host names are normalised to `{host}`; aiosmtpd has no
//! flag to set its own.
//!
//! Transcript syntax, one item per line (indentation and `#` comments ignored):
//! - `C: text` — a client line; CRLF is appended. Consecutive `C` lines go
//!   out in one write (pipelining), before the `S` lines after them are read.
//! - `C> bytes` — client bytes sent as they are, nothing appended.
//! - In both: `\r`, `\n`, `\\`, `\xNN` escapes, and `{c*N}` for N copies of c.
//! - `S: line` — one expected reply line as on the wire (`250-{host}`).
//! - `-- closed` — the server then closes the connection.
//!
//! Each dialog starts with the greeting (implicit), and one that doesn't end
//! closed ends with an implicit `NOOP` → `250 OK`, which proves that client
//! and server still agree on where they are.
//!
//! Run: `cargo test --test aiosmtpd_parity` (needs `pip install aiosmtpd==1.4.6`;
//! set `WASMTP_SKIP_AIOSMTPD=1` to check wasmtp against the recorded replies only).

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use harness::{Aiosmtpd, Client, HOSTNAME, ReadError, Server};

/// The greeting every dialog starts with, as aiosmtpd sends it.
const GREETING: &str = "220 {host} Python SMTP 1.4.6";

/// How long a dialog waits for each reply. Short, so that a server that
/// stays silent where a reply is due fails the test quickly.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Deliberate differences

/// A place where wasmtp answers differently from aiosmtpd on purpose: every
/// run of `aiosmtpd` lines in the expected replies (to `client`, if given)
/// is replaced by `wasmtp` lines when the dialog is played against wasmtp.
struct Difference {
    what: &'static str,
    /// Only in the replies to this client line (`None`: in every reply).
    client: Option<&'static str>,
    aiosmtpd: &'static [&'static str],
    wasmtp: &'static [&'static str],
    why: &'static str,
}

/// The one table of deliberate differences. Each must be exercised by at
/// least one dialog (checked by `dialogs_are_well_formed_and_every_difference_is_exercised`).
const DIFFERENCES: &[Difference] = &[
    Difference {
        what: "the greeting's ident",
        client: None,
        aiosmtpd: &["220 {host} Python SMTP 1.4.6"],
        wasmtp: &["220 {host} wasmtp {version}"],
        why: "it names the software that answers (aiosmtpd's `__ident__`)",
    },
    Difference {
        what: "EHLO advertises SIZE by default",
        client: None,
        aiosmtpd: &["250-{host}", "250-8BITMIME"],
        wasmtp: &["250-{host}", "250-SIZE 33554432", "250-8BITMIME"],
        why: "aiosmtpd's SMTP class defaults to a 33554432-byte limit and advertises it, and \
              its CLI help says so, but its CLI passes None (no limit, no SIZE line) unless \
              -s is given; wasmtp applies the documented default. With -s both say the same.",
    },
    Difference {
        what: "EHLO advertises PIPELINING",
        client: None,
        aiosmtpd: &["250 HELP"],
        wasmtp: &[
            "250-PIPELINING",
            "250-CHUNKING",
            "250-BINARYMIME",
            "250-DSN",
            "250 HELP",
        ],
        why: "RFC 2920; DESIGN.md decision 9: wasmtp reads pipelined commands correctly \
              (see the pipelining dialogs, which aiosmtpd passes without saying so); it also \
              takes BDAT and BINARYMIME (RFC 3030, aiosmtpd issue #558) and DSN parameters \
              (RFC 3461), which aiosmtpd refuses",
    },
    Difference {
        what: "BODY=BINARYMIME is accepted",
        client: Some("MAIL FROM:<anne@example.com> BODY=BINARYMIME"),
        aiosmtpd: &["501 Error: BODY can only be one of 7BIT, 8BITMIME"],
        wasmtp: &["250 OK"],
        why: "RFC 3030 3: wasmtp offers CHUNKING and BINARYMIME",
    },
    Difference {
        what: "DSN's NOTIFY is accepted",
        client: Some("RCPT TO:<bart@example.com> NOTIFY=NEVER"),
        aiosmtpd: &["555 RCPT TO parameters not recognized or not implemented"],
        wasmtp: &["250 OK"],
        why: "RFC 3461: wasmtp offers DSN and passes NOTIFY to the plugins in the rcpt options",
    },
    Difference {
        what: "DSN's ORCPT is checked",
        client: Some("RCPT TO:<bart@example.com> ORCPT"),
        aiosmtpd: &["555 RCPT TO parameters not recognized or not implemented"],
        wasmtp: &["501 5.5.4 Error: ORCPT must be addr-type;xtext"],
        why: "RFC 3461 4.2: ORCPT takes a value; a known parameter with a bad value is a \
              syntax error (501), not an unknown one (555)",
    },
    Difference {
        what: "the reply when a plugin fails",
        client: None,
        aiosmtpd: &["500 Error: (RuntimeError) trap"],
        wasmtp: &["451 4.3.0 Error: plugin failed"],
        why: "DESIGN.md decision 6: a trap, timeout or out-of-memory is the server's \
              transient trouble, not the client's permanent error, and the client must \
              not see the plugin's internals",
    },
    Difference {
        what: "a failed DATA still ends the transaction",
        client: Some("MAIL FROM:<dora@example.com>"),
        aiosmtpd: &["503 Error: nested MAIL command"],
        wasmtp: &["250 OK"],
        why: "RFC 5321 4.1.1.4: the end of the data consumes the transaction and clears its \
              buffers, whatever the reply; aiosmtpd skips its reset when the handler raises",
    },
    Difference {
        what: "an unclosed angle bracket",
        client: Some("MAIL FROM:<anne@example.com"),
        aiosmtpd: &["250 OK"],
        wasmtp: &["553 5.1.3 Error: malformed address"],
        why: "RFC 5321 4.1.2: a Path is `<` Mailbox `>`; aiosmtpd's address parser \
              (email._header_value_parser) repairs the missing `>`",
    },
    Difference {
        what: "an unquoted space in a local part",
        client: Some("MAIL FROM:<anne person@example.com>"),
        aiosmtpd: &["250 OK"],
        wasmtp: &["553 5.1.3 Error: malformed address"],
        why: "RFC 5321 4.1.2: a space is allowed only in a Quoted-string local part; \
              aiosmtpd's header parser accepts it",
    },
];

// ---------------------------------------------------------------------------
// Dialogs

/// Which handler serves the dialog.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Handler {
    /// aiosmtpd.handlers.Sink / `-c sink`.
    Sink,
    /// tests/clients/aiosmtpd_handlers.py `Trap` / tests/plugins/trap.
    Trap,
}

struct Dialog {
    name: &'static str,
    /// Server flags both take: `-s 100`, `-u`.
    flags: &'static [&'static str],
    handler: Handler,
    transcript: &'static str,
}

const fn sink(name: &'static str, transcript: &'static str) -> Dialog {
    Dialog {
        name,
        flags: &[],
        handler: Handler::Sink,
        transcript,
    }
}

const fn sink_with(
    name: &'static str,
    flags: &'static [&'static str],
    transcript: &'static str,
) -> Dialog {
    Dialog {
        name,
        flags,
        handler: Handler::Sink,
        transcript,
    }
}

/// `-s 100`: the size dialogs, and the command-length ones (where the
/// SIZE extension lengthens MAIL's limit by 26, RFC 1870).
const SIZE_100: &[&str] = &["-s", "100"];
const SMTPUTF8: &[&str] = &["-u"];

// Laid out by hand: rustfmt would put every name and transcript on lines of their own.
#[rustfmt::skip]
const DIALOGS: &[Dialog] = &[
    // -- before HELO -------------------------------------------------------
    sink("MAIL, RCPT and DATA need HELO first", r#"
        C: MAIL FROM:<anne@example.com>
        S: 503 Error: send HELO first
        C: RCPT TO:<bart@example.com>
        S: 503 Error: send HELO first
        C: DATA
        S: 503 Error: send HELO first
    "#),
    sink("NOOP, RSET, VRFY, HELP and EXPN need no HELO", r#"
        C: NOOP
        S: 250 OK
        C: RSET
        S: 250 OK
        C: VRFY anne@example.com
        S: 252 Cannot VRFY user, but will accept message and attempt delivery
        C: HELP
        S: 250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY
        C: EXPN staff
        S: 502 EXPN not implemented
    "#),
    sink("QUIT before HELO", r#"
        C: QUIT
        S: 221 Bye
        -- closed
    "#),
    // -- HELO / EHLO -------------------------------------------------------
    sink("HELO", r#"
        C: HELO client.example
        S: 250 {host}
    "#),
    sink("EHLO", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
    "#),
    sink("HELO and EHLO without a name", r#"
        C: HELO
        S: 501 Syntax: HELO hostname
        C: EHLO
        S: 501 Syntax: EHLO hostname
        C: HELO \x20\x20
        S: 501 Syntax: HELO hostname
        # a failed HELO leaves the client un-greeted
        C: MAIL FROM:<anne@example.com>
        S: 503 Error: send HELO first
    "#),
    sink("HELO with more than a name", r#"
        C: HELO client.example extra words
        S: 250 {host}
    "#),
    sink("HELO and EHLO end the transaction", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: RCPT TO:<bart@example.com>
        S: 503 Error: need MAIL command
    "#),
    sink("verbs and keywords in any case", r#"
        C: helo client.example
        S: 250 {host}
        C: mail from:<anne@example.com>
        S: 250 OK
        C: Rcpt To:<bart@example.com>
        S: 250 OK
        C: data
        S: 354 End data with <CR><LF>.<CR><LF>
        C: hello
        C: .
        S: 250 OK
        C: nOoP
        S: 250 OK
    "#),
    // -- MAIL --------------------------------------------------------------
    sink("nested MAIL", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: MAIL FROM:<cate@example.com>
        S: 503 Error: nested MAIL command
    "#),
    sink("MAIL syntax errors after HELO", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL
        S: 501 Syntax: MAIL FROM: <address>
        C: MAIL FROM:
        S: 501 Syntax: MAIL FROM: <address>
        C: MAIL TO:<anne@example.com>
        S: 501 Syntax: MAIL FROM: <address>
        C: MAIL FROM <anne@example.com>
        S: 501 Syntax: MAIL FROM: <address>
    "#),
    sink("MAIL syntax errors after EHLO", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL
        S: 501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
        C: MAIL FROM:
        S: 501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
        C: MAIL TO:<anne@example.com>
        S: 501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
    "#),
    sink("malformed sender addresses", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<<anne@example.com>>
        S: 553 5.1.3 Error: malformed address
        C: MAIL FROM:<anne@>
        S: 553 5.1.3 Error: malformed address
        C: MAIL FROM:<@>
        S: 553 5.1.3 Error: malformed address
    "#),
    sink("sender address forms that are accepted", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM: <anne@example.com>
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:anne@example.com
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:<@relay.example:anne@example.com>
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:<"anne person"@example.com>
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:<anne@[192.0.2.1]>
        S: 250 OK
    "#),
    sink("an unclosed angle bracket", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com
        S: 250 OK
    "#),
    sink("an unquoted space in a local part", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne person@example.com>
        S: 250 OK
    "#),
    sink("the null sender", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: bounce
        C:
        C: undeliverable
        C: .
        S: 250 OK
    "#),
    sink("MAIL parameters after HELO", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        # HELO after EHLO: the session is no longer extended
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com> BODY=8BITMIME
        S: 501 Syntax: MAIL FROM: <address>
    "#),
    sink("unknown and malformed MAIL parameters", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com> FOO=BAR
        S: 555 MAIL FROM parameters not recognized or not implemented
        C: MAIL FROM:<anne@example.com> FOO
        S: 555 MAIL FROM parameters not recognized or not implemented
        C: MAIL FROM:<anne@example.com> BODY=
        S: 501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
    "#),
    sink("BODY", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com> BODY=BINARYMIME
        S: 501 Error: BODY can only be one of 7BIT, 8BITMIME
        # (wasmtp accepts it: see DIFFERENCES; RSET puts both in the same place)
        C: RSET
        S: 250 OK
        C: MAIL FROM:<anne@example.com> BODY
        S: 501 Error: BODY can only be one of 7BIT, 8BITMIME
        C: MAIL FROM:<anne@example.com> BODY=7BIT
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:<anne@example.com> body=8bitmime
        S: 250 OK
    "#),
    sink("SMTPUTF8 when it is not enabled", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com> SMTPUTF8
        S: 501 Error: SMTPUTF8 disabled
        C: MAIL FROM:<anne@example.com> SMTPUTF8=YES
        S: 501 Error: SMTPUTF8 takes no arguments
    "#),
    sink_with("SIZE", SIZE_100, r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-SIZE 100
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com> SIZE=101
        S: 552 Error: message size exceeds fixed maximum message size
        C: MAIL FROM:<anne@example.com> SIZE=ten
        S: 501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
        C: MAIL FROM:<anne@example.com> SIZE
        S: 501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
        C: MAIL FROM:<anne@example.com> SIZE=100 BODY=8BITMIME
        S: 250 OK
    "#),
    // -- RCPT --------------------------------------------------------------
    sink("RCPT before MAIL", r#"
        C: HELO client.example
        S: 250 {host}
        C: RCPT TO:<bart@example.com>
        S: 503 Error: need MAIL command
    "#),
    sink("RCPT syntax errors", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT
        S: 501 Syntax: RCPT TO: <address>
        C: RCPT TO:
        S: 501 Syntax: RCPT TO: <address>
        C: RCPT FROM:<bart@example.com>
        S: 501 Syntax: RCPT TO: <address>
        C: RCPT TO:<bart@example.com> NOTIFY=NEVER
        S: 501 Syntax: RCPT TO: <address>
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:
        S: 501 Syntax: RCPT TO: <address> [SP <mail-parameters>]
    "#),
    sink("malformed recipient addresses", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<<bart@example.com>>
        S: 553 5.1.3 Error: malformed address
        C: RCPT TO:<bart@>
        S: 553 5.1.3 Error: malformed address
        # no recipient was accepted
        C: DATA
        S: 503 Error: need RCPT command
    "#),
    sink("the null path as a recipient", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        # RFC 5321 4.1.1.3 wants a Forward-path; both record the recipient `<>`
        C: RCPT TO:<>
        S: 250 OK
    "#),
    sink("RCPT parameters", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com> NOTIFY=NEVER
        S: 555 RCPT TO parameters not recognized or not implemented
        C: RCPT TO:<bart@example.com> ORCPT
        S: 555 RCPT TO parameters not recognized or not implemented
    "#),
    sink("several recipients, and postmaster without a domain", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: RCPT TO:<cate@example.com>
        S: 250 OK
        C: RCPT TO:<postmaster>
        S: 250 OK
    "#),
    // -- DATA --------------------------------------------------------------
    sink("DATA before RCPT, and with an argument", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: DATA
        S: 503 Error: need RCPT command
        C: DATA now
        S: 503 Error: need RCPT command
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA now
        S: 501 Syntax: DATA
    "#),
    sink("a message ends the transaction", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: one
        C:
        C: first
        C: .
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 503 Error: need MAIL command
        C: MAIL FROM:<cate@example.com>
        S: 250 OK
    "#),
    sink("dot-stuffed lines are content, a lone dot ends it", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: ..
        C: ...
        C: ..QUIT
        C: .x
        C: .
        S: 250 OK
    "#),
    sink("SMTP smuggling: only CRLF.CRLF ends the data", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        # <LF>.<LF>, <LF>.<CR><LF> and <CR><LF>.<LF> are not the end
        C> Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<mallory@example.com>\r\n
        C> body\n.\r\nRCPT TO:<victim@example.com>\r\n
        C> body\r\n.\nDATA\r\n
        C: .
        S: 250 OK
    "#),
    sink("a DATA line of 999 characters is accepted, one of 1000 is not", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: {x*999}
        C: .
        S: 250 OK
        C: MAIL FROM:<anne@example.com>
        C: RCPT TO:<bart@example.com>
        C: DATA
        S: 250 OK
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        C: {x*1000}
        C: more
        C: .
        S: 500 Line too long (see RFC5321 4.5.3.1.6)
        # the transaction is over
        C: RCPT TO:<bart@example.com>
        S: 503 Error: need MAIL command
    "#),
    sink("a very long DATA line is read to its end", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        C: RCPT TO:<bart@example.com>
        C: DATA
        S: 250 OK
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        C: {x*100000}
        C: .
        S: 500 Line too long (see RFC5321 4.5.3.1.6)
    "#),
    sink_with("100 bytes of data with -s 100 are accepted, 101 are not", SIZE_100, r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        C: RCPT TO:<bart@example.com>
        C: DATA
        S: 250 OK
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        # 48 + CRLF, twice: 100 bytes
        C: {a*48}
        C: {b*48}
        C: .
        S: 250 OK
        C: MAIL FROM:<anne@example.com>
        C: RCPT TO:<bart@example.com>
        C: DATA
        S: 250 OK
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        C: {a*48}
        C: {b*49}
        C: .
        S: 552 Error: Too much mail data
        # the transaction is over
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
    "#),
    // -- pipelining --------------------------------------------------------
    sink("pipelined MAIL, RCPT, DATA", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<anne@example.com>
        C: RCPT TO:<bart@example.com>
        C: RCPT TO:<bad@>
        C: RCPT TO:<cate@example.com>
        C: DATA
        S: 250 OK
        S: 250 OK
        S: 553 5.1.3 Error: malformed address
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: pipelined
        C:
        C: body
        C: .
        C: QUIT
        S: 250 OK
        S: 221 Bye
        -- closed
    "#),
    sink("a whole session in one write", r#"
        C: HELO client.example
        C: MAIL FROM:<anne@example.com>
        C: RCPT TO:<bart@example.com>
        C: DATA
        C: Subject: all at once
        C:
        C: body
        C: .
        C: MAIL FROM:<cate@example.com>
        C: RCPT TO:<dave@example.com>
        C: DATA
        C: second
        C: .
        C: QUIT
        S: 250 {host}
        S: 250 OK
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        S: 250 OK
        S: 250 OK
        S: 250 OK
        S: 354 End data with <CR><LF>.<CR><LF>
        S: 250 OK
        S: 221 Bye
        -- closed
    "#),
    // -- RSET, NOOP, QUIT, VRFY, HELP, EXPN, STARTTLS, AUTH ----------------
    sink("RSET", r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: RSET now
        S: 501 Syntax: RSET
        C: RSET
        S: 250 OK
        C: RCPT TO:<bart@example.com>
        S: 503 Error: need MAIL command
        # RSET keeps the greeting
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
    "#),
    sink("NOOP with an argument", r#"
        C: NOOP anything at all
        S: 250 OK
    "#),
    sink("QUIT with an argument", r#"
        C: QUIT now
        S: 501 Syntax: QUIT
        C: QUIT
        S: 221 Bye
        -- closed
    "#),
    sink("VRFY", r#"
        C: VRFY
        S: 501 Syntax: VRFY <address>
        C: VRFY <anne@example.com>
        S: 252 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY anne
        S: 252 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY <<anne>>
        S: 502 Could not VRFY <<anne>>
    "#),
    sink("HELP", r#"
        C: HELP
        S: 250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY
        C: HELP MAIL
        S: 250 Syntax: MAIL FROM: <address>
        C: HELP rcpt
        S: 250 Syntax: RCPT TO: <address>
        C: HELP DATA
        S: 250 Syntax: DATA
        C: HELP BOGUS
        S: 501 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY
        C: HELP EXPN
        S: 501 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY
        C: HELP STARTTLS
        S: 501 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: HELP MAIL
        S: 250 Syntax: MAIL FROM: <address> [SP <mail-parameters>]
        C: HELP HELO
        S: 250 Syntax: HELO hostname
        C: HELP EHLO
        S: 250 Syntax: EHLO hostname
        C: HELP NOOP
        S: 250 Syntax: NOOP [ignored]
        C: HELP VRFY
        S: 250 Syntax: VRFY <address>
        C: HELP QUIT
        S: 250 Syntax: QUIT
        C: HELP RSET
        S: 250 Syntax: RSET
        C: HELP HELP
        S: 250 Syntax: HELP [command]
        C: HELP AUTH
        S: 250 Syntax: AUTH <mechanism>
    "#),
    sink("EXPN", r#"
        C: HELO client.example
        S: 250 {host}
        C: EXPN
        S: 502 EXPN not implemented
        C: EXPN staff
        S: 502 EXPN not implemented
    "#),
    sink("STARTTLS without TLS", r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: STARTTLS now
        S: 501 Syntax: STARTTLS
        C: STARTTLS
        S: 454 TLS not available
    "#),
    sink("AUTH without TLS", r#"
        C: AUTH PLAIN
        S: 503 Error: send EHLO first
        C: HELO client.example
        S: 250 {host}
        C: AUTH PLAIN
        S: 500 Error: command 'AUTH' not recognized
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250 HELP
        C: AUTH PLAIN
        S: 538 5.7.11 Encryption required for requested authentication mechanism
    "#),
    // -- bad command lines -------------------------------------------------
    sink("unknown commands", r#"
        C: FOO
        S: 500 Error: command "FOO" not recognized
        C: bar with arguments
        S: 500 Error: command "BAR" not recognized
    "#),
    sink("the fifth unknown command closes the connection", r#"
        C: FOO
        S: 500 Error: command "FOO" not recognized
        C: BAR
        S: 500 Error: command "BAR" not recognized
        # known commands don't restore the budget
        C: NOOP
        S: 250 OK
        C: BAZ
        S: 500 Error: command "BAZ" not recognized
        C: QUX
        S: 500 Error: command "QUX" not recognized
        C: ZAP
        S: 502 5.5.1 Too many unrecognized commands, goodbye.
        -- closed
    "#),
    sink("empty lines", r#"
        C:
        S: 500 Error: bad syntax
        C:
        S: 500 Error: bad syntax
        C:
        S: 500 Error: bad syntax
        C:
        S: 500 Error: bad syntax
        C:
        S: 500 Error: bad syntax
        # empty lines are not unknown commands
        C: HELO client.example
        S: 250 {host}
    "#),
    sink("a line of spaces is an unknown command", r#"
        C: \x20
        S: 500 Error: command "" not recognized
    "#),
    sink("non-ASCII without SMTPUTF8", r#"
        C: N\xc3\x96OP
        S: 500 Error: bad syntax
        C: N\xd6OP
        S: 500 Error: bad syntax
        C: NOOP gr\xc3\xbc\xc3\x9fe
        S: 500 Error: strict ASCII mode
        C: HELO h\xc3\xa9.example
        S: 500 Error: strict ASCII mode
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<b\xc3\xa4rbel@example.com>
        S: 500 Error: strict ASCII mode
    "#),
    sink("a bare LF ends a command line", r#"
        C> NOOP\n
        S: 250 OK
        C> HELO client.example\n
        S: 250 {host}
    "#),
    sink("a command line of 512 characters is accepted, one of 513 is not", r#"
        C: NOOP {x*507}
        S: 250 OK
        C: NOOP {x*508}
        S: 500 Command line too long
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<{a*488}@example.com>
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:<{a*489}@example.com>
        S: 500 Command line too long
    "#),
    sink("a command line over 1001 bytes is read to its end", r#"
        C: NOOP {x*2000}
        S: 500 Command line too long
        C: NOOP {x*100000}
        S: 500 Command line too long
    "#),
    sink_with("SIZE lengthens MAIL's line limit by 26 after EHLO", SIZE_100, r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-SIZE 100
        S: 250-8BITMIME
        S: 250 HELP
        C: MAIL FROM:<{a*514}@example.com>
        S: 250 OK
        C: RSET
        S: 250 OK
        C: MAIL FROM:<{a*515}@example.com>
        S: 500 Command line too long
        # other commands keep 512
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        C: RCPT TO:<{a*490}@example.com>
        S: 250 OK
        C: RCPT TO:<{a*491}@example.com>
        S: 500 Command line too long
    "#),
    // -- SMTPUTF8 ----------------------------------------------------------
    sink_with("SMTPUTF8 with -u", SMTPUTF8, r#"
        C: EHLO client.example
        S: 250-{host}
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250 HELP
        C: MAIL FROM:<anne@example.com> SMTPUTF8
        S: 250 OK
        C: RCPT TO:<b\xc3\xa4rbel@example.com>
        S: 250 OK
        C: NOOP gr\xc3\xbc\xc3\x9fe
        S: 250 OK
        # the verb must still be ASCII
        C: N\xc3\x96OP
        S: 500 Error: bad syntax
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: gr\xc3\xbc\xc3\x9fe
        C:
        C: Gr\xc3\xbc\xc3\x9fe!
        C: .
        S: 250 OK
        C: HELO h\xc3\xa9.example
        S: 250 {host}
    "#),
    // -- a failing handler -------------------------------------------------
    Dialog {
        name: "a handler that fails in RCPT and in DATA",
        flags: &[],
        handler: Handler::Trap,
        transcript: r#"
        C: HELO client.example
        S: 250 {host}
        C: MAIL FROM:<anne@example.com>
        S: 250 OK
        # the trap handler fails for addresses with `trap` in them
        C: RCPT TO:<trap@example.com>
        S: 500 Error: (RuntimeError) trap
        # the recipient was not recorded; the session goes on
        C: DATA
        S: 503 Error: need RCPT command
        C: RCPT TO:<bart@example.com>
        S: 250 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: trapped
        C:
        C: body
        C: .
        S: 500 Error: (RuntimeError) trap
        C: MAIL FROM:<dora@example.com>
        S: 503 Error: nested MAIL command
    "#,
    },
];

// ---------------------------------------------------------------------------
// Transcripts

/// One write and the reply lines it must produce.
#[derive(Debug, Clone)]
struct Step {
    send: Vec<u8>,
    expect: Vec<String>,
}

#[derive(Debug, Clone)]
struct Script {
    steps: Vec<Step>,
    closes: bool,
}

/// Parses a transcript, adding the greeting and the final NOOP.
fn parse(transcript: &str) -> Result<Script, String> {
    let mut steps = vec![Step {
        send: Vec::new(),
        expect: vec![GREETING.to_string()],
    }];
    let mut closes = false;
    for (n, raw) in transcript.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if closes {
            return Err(format!("line {n}: nothing may follow `-- closed`"));
        }
        let (send, expect) = if let Some(text) = line.strip_prefix("C:") {
            let mut bytes = expand(text.strip_prefix(' ').unwrap_or(text))?;
            bytes.extend_from_slice(b"\r\n");
            (Some(bytes), None)
        } else if let Some(text) = line.strip_prefix("C> ") {
            (Some(expand(text)?), None)
        } else if let Some(text) = line.strip_prefix("S: ") {
            (None, Some(text.to_string()))
        } else if line == "-- closed" {
            closes = true;
            continue;
        } else {
            return Err(format!("line {n}: cannot read {raw:?}"));
        };
        let last = steps.last_mut().unwrap();
        if let Some(bytes) = send {
            if last.expect.is_empty() {
                last.send.extend_from_slice(&bytes);
            } else {
                steps.push(Step {
                    send: bytes,
                    expect: Vec::new(),
                });
            }
        } else if let Some(line) = expect {
            last.expect.push(line);
        }
    }
    if steps.last().unwrap().expect.is_empty() {
        return Err("the last client lines expect no reply".to_string());
    }
    if !closes {
        steps.push(Step {
            send: b"NOOP\r\n".to_vec(),
            expect: vec!["250 OK".to_string()],
        });
    }
    Ok(Script { steps, closes })
}

/// Expands `\r`, `\n`, `\\`, `\xNN` and `{c*N}` in a client line.
fn expand(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix('\\') {
            let (byte, len) = match after.as_bytes().first() {
                Some(b'r') => (b'\r', 1),
                Some(b'n') => (b'\n', 1),
                Some(b'\\') => (b'\\', 1),
                Some(b'x') => {
                    let hex = after
                        .get(1..3)
                        .ok_or_else(|| format!("bad \\x in {text:?}"))?;
                    (
                        u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x in {text:?}"))?,
                        3,
                    )
                }
                _ => return Err(format!("bad escape in {text:?}")),
            };
            out.push(byte);
            rest = &after[len..];
            continue;
        }
        if c == '{'
            && let Some((unit, count, len)) = repeat(rest)
        {
            out.extend(unit.repeat(count).bytes());
            rest = &rest[len..];
            continue;
        }
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// `{x*512}...` → ("x", 512, length of `{x*512}`).
fn repeat(text: &str) -> Option<(String, usize, usize)> {
    let end = text.find('}')?;
    let inner = &text[1..end];
    let (unit, count) = inner.split_once('*')?;
    if unit.chars().count() != 1 {
        return None;
    }
    Some((unit.to_string(), count.parse().ok()?, end + 1))
}

/// What wasmtp must answer to `step`: its expected lines with every
/// deliberate difference applied. Records which differences applied in `used`.
fn wasmtp_lines(step: &Step, used: &mut [bool]) -> Vec<String> {
    let mut lines = step.expect.clone();
    for (i, difference) in DIFFERENCES.iter().enumerate() {
        if let Some(client) = difference.client
            && step.send != [client.as_bytes(), b"\r\n"].concat()
        {
            continue;
        }
        let from = difference.aiosmtpd;
        let mut out = Vec::new();
        let mut at = 0;
        while at < lines.len() {
            if lines[at..].starts_with_strs(from) {
                out.extend(difference.wasmtp.iter().map(|s| s.to_string()));
                at += from.len();
                used[i] = true;
            } else {
                out.push(lines[at].clone());
                at += 1;
            }
        }
        lines = out;
    }
    lines
        .into_iter()
        .map(|line| line.replace("{version}", env!("CARGO_PKG_VERSION")))
        .collect()
}

trait StartsWithStrs {
    fn starts_with_strs(&self, prefix: &[&str]) -> bool;
}

impl StartsWithStrs for [String] {
    fn starts_with_strs(&self, prefix: &[&str]) -> bool {
        self.len() >= prefix.len() && self.iter().zip(prefix).all(|(a, b)| a == b)
    }
}

// ---------------------------------------------------------------------------
// Playing dialogs

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Against {
    Aiosmtpd,
    Wasmtp,
}

/// A server the dialogs of one (flags, handler) group are played against.
enum Running {
    Aiosmtpd(Aiosmtpd),
    Wasmtp(Server),
}

impl Running {
    fn start(against: Against, flags: &[&str], handler: Handler) -> Running {
        match against {
            Against::Aiosmtpd => {
                let class = match handler {
                    Handler::Sink => "aiosmtpd.handlers.Sink",
                    Handler::Trap => "aiosmtpd_handlers.Trap",
                };
                Running::Aiosmtpd(Aiosmtpd::start(class, flags))
            }
            Against::Wasmtp => {
                let plugin = match handler {
                    Handler::Sink => "sink".to_string(),
                    Handler::Trap => harness::plugin_path("trap.wasm")
                        .to_str()
                        .unwrap()
                        .to_string(),
                };
                let mut args = vec!["--hostname", HOSTNAME];
                args.extend_from_slice(flags);
                args.extend_from_slice(&["-c", &plugin]);
                Running::Wasmtp(Server::start(&args))
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Aiosmtpd(s) => s.addr(),
            Running::Wasmtp(s) => s.addr(),
        }
    }

    fn log(&self) -> String {
        match self {
            Running::Aiosmtpd(s) => s.stderr(),
            Running::Wasmtp(s) => s.stderr(),
        }
    }
}

/// What one dialog gave: the reply lines of each step, normalised, and
/// where it stopped early (if it did).
struct Played {
    got: Vec<Vec<String>>,
    error: Option<String>,
}

/// Replaces the server's host name (learnt from the greeting) by `{host}`.
fn normalise(line: &str, hostname: &str) -> String {
    if line.len() < 4 {
        return line.to_string();
    }
    let (head, text) = line.split_at(4);
    let text: Vec<&str> = text
        .split(' ')
        .map(|word| if word == hostname { "{host}" } else { word })
        .collect();
    format!("{head}{}", text.join(" "))
}

fn play(addr: SocketAddr, script: &Script) -> Played {
    let mut client = Client::connect(addr);
    client.set_timeout(REPLY_TIMEOUT);
    let mut got = Vec::new();
    let mut hostname = String::new();
    for step in &script.steps {
        if !step.send.is_empty() {
            client.send_raw(&step.send);
        }
        let replies = step
            .expect
            .iter()
            .filter(|l| harness::parse_reply_line(l).is_none_or(|(_, last, _)| last))
            .count();
        let mut lines = Vec::new();
        for _ in 0..replies {
            match client.try_read_reply() {
                Ok(reply) => {
                    if hostname.is_empty() {
                        hostname = reply.lines[0].split(' ').next().unwrap_or("").to_string();
                    }
                    lines.extend(reply.wire().iter().map(|l| normalise(l, &hostname)));
                }
                Err(e) => {
                    got.push(lines);
                    return Played {
                        got,
                        error: Some(e.to_string()),
                    };
                }
            }
        }
        got.push(lines);
    }
    if script.closes {
        match client.try_read_reply() {
            Err(ReadError::Closed) => {}
            Ok(reply) => {
                return Played {
                    got,
                    error: Some(format!("expected a close, got {reply}")),
                };
            }
            Err(e) => {
                return Played {
                    got,
                    error: Some(format!("expected a close: {e}")),
                };
            }
        }
    }
    Played { got, error: None }
}

/// Plays every dialog against `against` and returns a report of every
/// mismatch (empty when all agree).
fn run_all(against: Against) -> String {
    let mut groups: BTreeMap<(&[&str], Handler), Vec<&Dialog>> = BTreeMap::new();
    for dialog in DIALOGS {
        groups
            .entry((dialog.flags, dialog.handler))
            .or_default()
            .push(dialog);
    }
    let mut used = vec![false; DIFFERENCES.len()];
    let mut report = String::new();
    for ((flags, handler), dialogs) in groups {
        let server = Running::start(against, flags, handler);
        let addr = server.addr();
        let scripts: Vec<Script> = dialogs
            .iter()
            .map(|d| parse(d.transcript).unwrap())
            .collect();
        // One dialog after another: aiosmtpd keeps its command-length limits
        // in a class attribute that every connection resets and every EHLO
        // raises, so concurrent sessions change each other's MAIL limit.
        let played: Vec<Played> = scripts.iter().map(|script| play(addr, script)).collect();
        for ((dialog, script), played) in dialogs.iter().zip(&scripts).zip(&played) {
            let expected: Vec<Vec<String>> = script
                .steps
                .iter()
                .map(|step| match against {
                    Against::Aiosmtpd => step.expect.clone(),
                    Against::Wasmtp => wasmtp_lines(step, &mut used),
                })
                .collect();
            if played.error.is_none() && played.got == expected {
                continue;
            }
            report.push_str(&describe(dialog, script, &expected, played));
        }
        if !report.is_empty() {
            report.push_str(&format!(
                "--- {against:?} log (flags {flags:?}, {handler:?})\n{}\n",
                server.log()
            ));
        }
    }
    report
}

/// A side-by-side account of one failed dialog.
fn describe(dialog: &Dialog, script: &Script, expected: &[Vec<String>], played: &Played) -> String {
    let mut out = format!(
        "=== {:?} (flags {:?}, {:?})\n",
        dialog.name, dialog.flags, dialog.handler
    );
    for (i, step) in script.steps.iter().enumerate() {
        for line in step.send.split_inclusive(|&b| b == b'\n') {
            out.push_str(&format!("    C: {}\n", harness::show(line)));
        }
        let got = played.got.get(i);
        let want = &expected[i];
        if got == Some(want) {
            for line in want {
                out.push_str(&format!("    S: {line}\n"));
            }
            continue;
        }
        for line in want {
            out.push_str(&format!("  - S: {line}\n"));
        }
        for line in got.into_iter().flatten() {
            out.push_str(&format!("  + S: {line}\n"));
        }
        if got.is_none() || played.got.len() == i + 1 {
            break;
        }
    }
    if let Some(error) = &played.error {
        out.push_str(&format!("  ! {error}\n"));
    }
    out.push_str("  (- expected, + got)\n");
    out
}

// ---------------------------------------------------------------------------
// Tests

fn skip_aiosmtpd() -> bool {
    if std::env::var_os("WASMTP_SKIP_AIOSMTPD").is_some() {
        eprintln!("WASMTP_SKIP_AIOSMTPD is set: NOT checking the dialogs against aiosmtpd");
        return true;
    }
    false
}

#[test]
fn dialogs_are_well_formed_and_every_difference_is_exercised() {
    // For each dialog, which differences apply to it.
    let mut applied = Vec::new();
    for dialog in DIALOGS {
        let script =
            parse(dialog.transcript).unwrap_or_else(|e| panic!("dialog {:?}: {e}", dialog.name));
        let mut used = vec![false; DIFFERENCES.len()];
        for step in &script.steps {
            for line in &step.expect {
                assert!(
                    harness::parse_reply_line(line).is_some(),
                    "dialog {:?}: {line:?} is not a reply line",
                    dialog.name
                );
            }
            wasmtp_lines(step, &mut used);
        }
        applied.push(used);
    }
    let names: Vec<&str> = DIALOGS.iter().map(|d| d.name).collect();
    for (i, name) in names.iter().enumerate() {
        assert!(!names[..i].contains(name), "two dialogs are named {name:?}");
    }
    for (i, difference) in DIFFERENCES.iter().enumerate() {
        let dialogs: Vec<&str> = (0..DIALOGS.len())
            .filter(|&d| applied[d][i])
            .map(|d| names[d])
            .collect();
        assert!(
            !dialogs.is_empty(),
            "no dialog shows the difference {:?}",
            difference.what
        );
        assert!(!difference.why.is_empty());
        // One tied to a client line must not leak into another dialog.
        assert!(
            difference.client.is_none() || dialogs.len() == 1,
            "the difference {:?} applies in {dialogs:?}; give it a client line of one dialog",
            difference.what
        );
    }
}

#[test]
fn aiosmtpd_answers_as_the_dialogs_say() {
    if skip_aiosmtpd() {
        return;
    }
    let report = run_all(Against::Aiosmtpd);
    assert!(
        report.is_empty(),
        "aiosmtpd does not answer as the dialogs say:\n{report}"
    );
}

#[test]
fn wasmtp_answers_as_aiosmtpd_does() {
    let report = run_all(Against::Wasmtp);
    assert!(
        report.is_empty(),
        "wasmtp differs from aiosmtpd beyond the deliberate differences:\n{report}"
    );
}

// ---------------------------------------------------------------------------
// Debugging and Mailbox, which show the content (dot-unstuffing included)

/// The message of the Debugging dialog, as sent (dot-stuffed).
const DEBUGGING_DATA: &str = "From: Anne Person <anne@example.com>\r\n\
    To: Bart Person <bart@example.com>\r\n\
    Subject: dots\r\n\
    Message-ID: <dots@example.com>\r\n\
    \r\n\
    ..a line that began with a dot\r\n\
    ...\r\n\
    Gr\u{fc}\u{df}e, Bart\r\n\
    .\r\n";

/// What aiosmtpd's Debugging handler prints for it.
const DEBUGGING_OUTPUT: &str = "\
---------- MESSAGE FOLLOWS ----------
mail options: ['BODY=8BITMIME']

From: Anne Person <anne@example.com>
To: Bart Person <bart@example.com>
Subject: dots
Message-ID: <dots@example.com>
X-Peer: ('127.0.0.1', PORT)

.a line that began with a dot
..
Grüße, Bart
------------ END MESSAGE ------------
";

/// Replaces the port in `('127.0.0.1', 43210)` by `PORT`.
fn normalise_peer(text: &str) -> String {
    const PEER: &str = "('127.0.0.1', ";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(PEER) {
        out.push_str(&rest[..at + PEER.len()]);
        rest = rest[at + PEER.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push_str("PORT");
    }
    out.push_str(rest);
    out
}

fn debugging_dialog(addr: SocketAddr) {
    let mut client = Client::after_ehlo(addr);
    client.expect("MAIL FROM:<anne@example.com> BODY=8BITMIME", 250);
    client.expect("RCPT TO:<bart@example.com>", 250);
    client.expect("DATA", 354);
    client.send_raw(DEBUGGING_DATA.as_bytes());
    client.expect_reply(250);
    client.expect("QUIT", 221);
}

#[test]
fn debugging_prints_what_aiosmtpd_prints() {
    if !skip_aiosmtpd() {
        let mut aiosmtpd = Aiosmtpd::start("aiosmtpd.handlers.Debugging", &["stdout"]);
        debugging_dialog(aiosmtpd.addr());
        let out = aiosmtpd.wait_for_stdout("END MESSAGE");
        assert_eq!(
            normalise_peer(&out),
            DEBUGGING_OUTPUT,
            "aiosmtpd's Debugging output"
        );
    }
    let mut wasmtp = Server::start(&["--hostname", HOSTNAME, "-c", "debugging", "stdout"]);
    debugging_dialog(wasmtp.addr());
    let out = wasmtp.wait_for_stdout("END MESSAGE");
    assert_eq!(
        normalise_peer(&out),
        DEBUGGING_OUTPUT,
        "wasmtp's Debugging output"
    );
}

/// What tests/clients/mailbox_walkthrough.py prints (peer port normalised).
const WALKTHROUGH_OUTPUT: &str = "\
<ant@example.com> Anne Person <anne@example.com> Bart Person <bart@example.com>
  X-Peer: ('127.0.0.1', PORT)
  X-MailFrom: anne@example.com
  X-RcptTo: bart@example.com
<bee@example.com> Cate Person <cate@example.com> Dave Person <dave@example.com>
  X-Peer: ('127.0.0.1', PORT)
  X-MailFrom: cate@example.com
  X-RcptTo: dave@example.com
<cat@example.com> Elle Person <elle@example.com> Fred Person <fred@example.com>
  X-Peer: ('127.0.0.1', PORT)
  X-MailFrom: elle@example.com
  X-RcptTo: fred@example.com, gwen@example.com
";

fn walkthrough(addr: SocketAddr, maildir: &std::path::Path) -> String {
    let out = harness::run_client_script(
        "mailbox_walkthrough.py",
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            maildir.to_str().unwrap(),
        ],
    );
    normalise_peer(&out)
}

#[test]
fn mailbox_walkthrough_gives_what_aiosmtpd_gives() {
    if !skip_aiosmtpd() {
        let dir = tempfile::tempdir().unwrap();
        // As in the seed, the Maildir does not exist yet: the handler makes it.
        let maildir = dir.path().join("maildir");
        let aiosmtpd = Aiosmtpd::start("aiosmtpd.handlers.Mailbox", &[maildir.to_str().unwrap()]);
        assert_eq!(
            walkthrough(aiosmtpd.addr(), &maildir),
            WALKTHROUGH_OUTPUT,
            "against aiosmtpd"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let wasmtp = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "mailbox",
        maildir.to_str().unwrap(),
    ]);
    assert_eq!(
        walkthrough(wasmtp.addr(), &maildir),
        WALKTHROUGH_OUTPUT,
        "against wasmtp"
    );
}
