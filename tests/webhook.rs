//! The `webhook` delivery plugin against a real HTTP(S) server on loopback
//! (Python's `http.server`, tests/clients/webhook_server.py): the JSON the
//! application receives matches the message sent, field by field; the
//! signature verifies with the example receiver's code; and the client's
//! reply is the application's answer — nothing is acknowledged that the
//! application did not accept.

#[path = "harness/mod.rs"]
mod harness;
#[path = "harness/web.rs"]
mod web;

use base64::Engine as _;
use harness::{Client, HOSTNAME, Server};
use serde_json::{Value, json};
use web::{SECRET, TestCa, WebServer};

/// A server whose one listener hands every message to `webhook URL ARGS`.
fn server_for(url: &str, args: &[&str], extra: &str) -> Server {
    let mut all = vec![format!("{url:?}"), format!("\"secret={SECRET}\"")];
    all.extend(args.iter().map(|a| format!("{a:?}")));
    Server::start_config(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nhostname = \"{HOSTNAME}\"\nplugins = [\"hook\"]\nsmtputf8 = true\n{extra}\n\
         [plugin.hook]\ncomponent = \"webhook\"\nargs = [{}]\nhook_timeout = 3\n",
        all.join(", ")
    ))
}

fn addresses(list: &Value) -> Vec<(Option<&str>, Option<&str>)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str(), m["address"].as_str()))
        .collect()
}

#[test]
fn a_plain_message_arrives_as_signed_json_field_by_field() {
    let mut web = WebServer::start();
    let server = server_for(&web.url("inbound/ok"), &[], "");
    let message = "From: Anne Example <anne@example.com>\r\n\
        To: bob@example.com, Carol <carol@example.org>\r\n\
        Cc: dave@example.net\r\n\
        Subject: Quarterly figures\r\n\
        Date: Thu, 03 Dec 2026 10:00:00 +0100\r\n\
        Message-ID: <q4@example.com>\r\n\
        In-Reply-To: <q3@example.com>\r\n\
        References: <q2@example.com> <q3@example.com>\r\n\
        List-Id: Finance <finance.example.com>\r\n\
        List-Unsubscribe: <mailto:leave@example.com>\r\n\
        \r\n\
        Hello Bob,\r\n\
        .the figures are attached in spirit.\r\n";
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message(
        "anne@example.com",
        &["bob@example.com", "carol@example.org"],
        message,
    );
    assert_eq!(reply.code, 250, "{}", c.transcript());

    let r = web.one();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/inbound/ok")
    );
    assert!(
        r.signature_ok,
        "the signature does not verify: {:?}",
        r.headers
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let j = r.json();
    assert_eq!(j["version"], 1);
    let queue_id = j["queue_id"].as_str().unwrap();
    assert!(!queue_id.is_empty());
    assert_eq!(r.header("wasmtp-queue-id"), Some(queue_id));
    assert!(reply.text().contains(queue_id), "{}", reply.text());
    assert_eq!(
        j["timestamp"].as_u64().unwrap().to_string(),
        r.header("wasmtp-timestamp").unwrap()
    );

    assert_eq!(
        j["envelope"],
        json!({
            "mail_from": "anne@example.com",
            "mail_options": [],
            "smtputf8": false,
            "recipients": [
                {"address": "bob@example.com", "options": []},
                {"address": "carol@example.org", "options": []},
            ],
        })
    );
    let s = &j["session"];
    assert_eq!(s["client"]["address"], "127.0.0.1");
    assert_eq!(s["client"]["port"], c.local_addr().port());
    assert_eq!(s["proxied"], false);
    assert_eq!(s["proxy_destination"], Value::Null);
    assert_eq!(s["helo"], "client.example");
    assert_eq!(s["esmtp"], true);
    assert_eq!(s["lmtp"], false);
    assert_eq!(s["tls"], Value::Null);
    assert_eq!(s["auth"], Value::Null);
    assert_eq!(s["server"], HOSTNAME);
    assert!(j.get("authentication_results").is_none());
    assert_eq!(j["notes"], json!({}));

    let m = &j["message"];
    // Dot-unstuffed, as received.
    assert_eq!(m["size"], message.len());
    assert_eq!(
        addresses(&m["from"]),
        [(Some("Anne Example"), Some("anne@example.com"))]
    );
    assert_eq!(
        addresses(&m["to"]),
        [
            (None, Some("bob@example.com")),
            (Some("Carol"), Some("carol@example.org"))
        ]
    );
    assert_eq!(addresses(&m["cc"]), [(None, Some("dave@example.net"))]);
    assert_eq!(m["bcc"], json!([]));
    assert_eq!(m["subject"], "Quarterly figures");
    assert_eq!(m["date"], "2026-12-03T10:00:00+01:00");
    assert_eq!(m["message_id"], "q4@example.com");
    assert_eq!(m["in_reply_to"], json!(["q3@example.com"]));
    assert_eq!(m["references"], json!(["q2@example.com", "q3@example.com"]));
    assert_eq!(
        m["list"],
        json!([
            {"name": "List-Id", "value": "Finance <finance.example.com>"},
            {"name": "List-Unsubscribe", "value": "<mailto:leave@example.com>"},
        ])
    );
    let headers: Vec<(&str, &str)> = m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["value"].as_str().unwrap()))
        .collect();
    assert_eq!(headers.len(), 10);
    assert_eq!(headers[0], ("From", "Anne Example <anne@example.com>"));
    assert_eq!(headers[3], ("Subject", "Quarterly figures"));
    assert_eq!(
        m["text"],
        "Hello Bob,\r\n.the figures are attached in spirit.\r\n"
    );
    assert_eq!(m["html"], Value::Null);
    assert_eq!(m["attachments"], json!([]));
    assert_eq!(m["problems"], json!([]));
}

/// A 5 MiB attachment's bytes, not quite random.
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn a_multipart_message_with_html_and_two_attachments_over_tls() {
    let ca = TestCa::new();
    let mut web = WebServer::start_tls(&ca);
    let big = pseudo_random(5 << 20);
    let small = b"name,amount\nanne,12\n".to_vec();
    let message = format!(
        "From: anne@example.com\r\n\
         To: bob@example.com\r\n\
         Subject: Report\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
         \r\n\
         --inner\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         The report, =E2=82=AC 12.\r\n\
         --inner\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         \r\n\
         <p>The report, \u{20ac} 12. <img src=\"cid:logo@x\"></p>\r\n\
         --inner--\r\n\
         --outer\r\n\
         Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
         Content-Disposition: attachment; filename=\"data.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\r\n\
         --outer\r\n\
         Content-Type: text/csv; name=\"sums.csv\"\r\n\
         Content-Disposition: inline; filename=\"sums.csv\"\r\n\
         Content-ID: <logo@x>\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\r\n\
         --outer--\r\n",
        base64_lines(&big),
        base64_lines(&small)
    );
    let server = server_for(
        &web.url("inbound/ok"),
        &[],
        &format!("[http]\nca_file = {:?}\n", ca.ca().display().to_string()),
    );
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message("anne@example.com", &["bob@example.com"], &message);
    assert_eq!(reply.code, 250, "{}\n{}", c.transcript(), server.stderr());

    let r = web.one();
    assert!(r.signature_ok);
    let j = r.json();
    let m = &j["message"];
    // The line break before a boundary belongs to the boundary (RFC 2046 §5.1.1).
    assert_eq!(m["text"], "The report, \u{20ac} 12.");
    assert_eq!(
        m["html"],
        "<p>The report, \u{20ac} 12. <img src=\"cid:logo@x\"></p>"
    );
    let attachments = m["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2, "{m:#}");
    let decode = |a: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(a["content_base64"].as_str().unwrap())
            .unwrap()
    };
    let a = &attachments[0];
    assert_eq!(a["name"], "data.bin");
    assert_eq!(a["content_type"], "application/octet-stream");
    assert_eq!(a["size"], big.len());
    assert_eq!(a["inline"], false);
    assert_eq!(a["content_id"], Value::Null);
    assert!(decode(a) == big, "the 5 MiB attachment arrived changed");
    let a = &attachments[1];
    assert_eq!(a["name"], "sums.csv");
    assert_eq!(a["content_type"], "text/csv");
    assert_eq!(a["size"], small.len());
    assert_eq!(a["inline"], true);
    assert_eq!(a["content_id"], "logo@x");
    assert_eq!(decode(a), small);
    assert_eq!(m["problems"], json!([]));
    assert_eq!(
        j["session"]["tls"],
        Value::Null,
        "the SMTP session itself was plain"
    );
}

#[test]
fn non_ascii_headers_and_an_smtputf8_address() {
    let mut web = WebServer::start();
    let server = server_for(&web.url("inbound/ok"), &[], "");
    let message = "From: =?ISO-8859-1?Q?Ren=E9e_M=FCller?= <renee@example.com>\r\n\
        To: =?UTF-8?B?w4lsb2lzZQ==?= <zoë@exämple.de>\r\n\
        Subject: =?UTF-8?Q?Caf=C3=A9?= and =?UTF-8?B?bcO8c2xp?=\r\n\
        X-Note: plain ascii\r\n\
        \r\n\
        Gr\u{fc}\u{df}e\r\n";
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<jörg@exämple.de> SMTPUTF8", 250);
    c.expect("RCPT TO:<zoë@exämple.de>", 250);
    c.expect("DATA", 354);
    c.send_raw(message.as_bytes());
    c.send_raw(b".\r\n");
    assert_eq!(c.read_reply().code, 250, "{}", c.transcript());

    let r = web.one();
    assert!(r.signature_ok);
    let j = r.json();
    assert_eq!(j["envelope"]["mail_from"], "jörg@exämple.de");
    assert_eq!(j["envelope"]["smtputf8"], true);
    assert_eq!(j["envelope"]["mail_options"], json!(["SMTPUTF8"]));
    assert_eq!(j["envelope"]["recipients"][0]["address"], "zoë@exämple.de");
    let m = &j["message"];
    assert_eq!(
        addresses(&m["from"]),
        [(Some("Renée Müller"), Some("renee@example.com"))]
    );
    assert_eq!(
        addresses(&m["to"]),
        [(Some("Éloise"), Some("zoë@exämple.de"))]
    );
    assert_eq!(m["subject"], "Café and müsli");
    assert_eq!(m["headers"][2]["value"], "Café and müsli");
    assert_eq!(
        m["headers"][3],
        json!({"name": "X-Note", "value": "plain ascii"})
    );
    assert_eq!(m["text"], "Grüße\r\n");
}

#[test]
fn the_application_answer_is_the_smtp_reply() {
    let mut web = WebServer::start();
    let message = "Subject: x\r\n\r\nbody\r\n";
    let send = |server: &Server| {
        let mut c = Client::after_ehlo(server.addr());
        c.set_timeout(std::time::Duration::from_secs(15));
        c.send_message("anne@example.com", &["bob@example.com"], message)
    };

    // 200: accepted.
    let server = server_for(&web.url("inbound/ok"), &[], "");
    assert_eq!(send(&server).code, 250);
    assert_eq!(web.one().path, "/inbound/ok");

    // 422 with the application's own reply, passed on while the client is there.
    let server = server_for(&web.url("inbound/reject"), &[], "");
    let reply = send(&server);
    assert_eq!(reply.code, 550);
    assert_eq!(reply.lines, ["5.7.1 No such mailbox here"]);
    web.one();

    // A 4xx without a reply of its own: 550, unless configured.
    let server = server_for(&web.url("inbound/forbidden"), &[], "");
    let reply = send(&server);
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(reply.text().contains("HTTP 403"), "{reply:?}");
    web.one();
    let server = server_for(&web.url("inbound/forbidden"), &["on-4xx=451"], "");
    assert_eq!(send(&server).code, 451);
    web.one();

    // 500: the sender keeps the message and retries.
    let server = server_for(&web.url("inbound/fail"), &[], "");
    let reply = send(&server);
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text().starts_with("4.3.0"), "{reply:?}");
    web.one();

    // No answer before the deadline (hook_timeout = 3 s): 451, in time.
    let server = server_for(&web.url("inbound/hang"), &[], "");
    let started = std::time::Instant::now();
    let reply = send(&server);
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The application saw the request, but said nothing: not acknowledged.
    web.one();

    // Nobody listening: 451.
    let closed = format!("http://127.0.0.1:{}/inbound/ok", harness::free_port());
    let server = server_for(&closed, &[], "");
    let mut server = server;
    let reply = send(&server);
    assert_eq!(reply.code, 451, "{reply:?}");
    server.wait_for_stderr("not delivered to the application");
}

#[test]
fn lmtp_gets_an_answer_per_recipient() {
    let mut web = WebServer::start();
    let server = server_for(&web.url("inbound/per-rcpt"), &[], "protocol = \"lmtp\"");
    let mut c = Client::connect(server.addr());
    c.expect_reply(220);
    c.expect("LHLO client.example", 250);
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bob@example.com>", 250);
    c.expect("RCPT TO:<nobody@example.com>", 250);
    c.expect("RCPT TO:<carol@example.com>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n");
    let replies: Vec<u16> = (0..3).map(|_| c.read_reply().code).collect();
    assert_eq!(replies, [250, 550, 250], "{}", c.transcript());
    let j = web.one().json();
    assert_eq!(j["session"]["lmtp"], true);
    assert_eq!(j["envelope"]["recipients"].as_array().unwrap().len(), 3);
}

#[test]
fn multipart_form_data_carries_the_raw_message() {
    let mut web = WebServer::start();
    let server = server_for(&web.url("inbound/ok"), &["format=multipart"], "");
    let message = "Subject: raw\r\n\r\nas sent\r\n";
    let mut c = Client::after_ehlo(server.addr());
    assert_eq!(
        c.send_message("anne@example.com", &["bob@example.com"], message)
            .code,
        250
    );
    let r = web.one();
    assert!(r.signature_ok);
    let ctype = r.header("content-type").unwrap();
    let boundary = ctype
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("{ctype}"));
    // 128 random bits: a sender can't write it into the message to forge a part.
    assert_eq!(boundary.len(), "wasmtp-".len() + 32, "{boundary}");
    let body = String::from_utf8(r.body.clone()).unwrap();
    let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
    assert_eq!(parts.len(), 4, "{body}");
    assert!(parts[1].contains("name=\"envelope\""));
    let json_part = parts[1].split_once("\r\n\r\n").unwrap().1.trim_end();
    let j: Value = serde_json::from_str(json_part).unwrap();
    assert_eq!(j["envelope"]["recipients"][0]["address"], "bob@example.com");
    assert!(j.get("message").is_none());
    assert!(parts[2].contains("name=\"message\"; filename=\"message.eml\""));
    assert!(parts[2].contains("Content-Type: message/rfc822"));
    assert_eq!(
        parts[2].split_once("\r\n\r\n").unwrap().1,
        format!("{message}\r\n")
    );
    assert_eq!(parts[3], "--\r\n");
}

#[test]
fn from_the_command_line_with_the_secret_in_a_file() {
    let mut web = WebServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let server = Server::start(&[
        "--hostname",
        HOSTNAME,
        "-c",
        "webhook",
        &web.url("inbound/ok"),
        &format!("secret-file={}", secret.display()),
    ]);
    let mut c = Client::after_ehlo(server.addr());
    let reply = c.send_message(
        "anne@example.com",
        &["bob@example.com"],
        "Subject: cli\r\n\r\nx\r\n",
    );
    assert_eq!(reply.code, 250, "{}", c.transcript());
    assert!(web.one().signature_ok);

    // Rotating the secret: the old and the new one both sign meanwhile.
    let server = server_for(&web.url("inbound/ok"), &["secret=the-next-one"], "");
    let mut c = Client::after_ehlo(server.addr());
    assert_eq!(
        c.send_message(
            "a@example.com",
            &["b@example.com"],
            "Subject: r\r\n\r\nx\r\n"
        )
        .code,
        250
    );
    let r = web.one();
    assert!(r.signature_ok);
    let signature = r.header("wasmtp-signature").unwrap();
    assert_eq!(signature.matches("v1=").count(), 2, "{signature}");

    // The grant is the URL itself: a plugin redirected elsewhere would be refused.
    let out = harness::run_wasmtp(
        &["-c", "webhook", "ftp://example.com/"],
        std::time::Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an https:// or http:// URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn notes_header_edits_authentication_and_the_client_behind_a_proxy() {
    let mut web = WebServer::start();
    // A nameserver that answers nothing: authentication is `temperror`,
    // quickly (the port refuses), and still reported.
    let dead_dns = format!("127.0.0.1:{}", harness::free_port());
    let server = Server::start_config(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nhostname = \"{HOSTNAME}\"\nplugins = [\"annotate\", \"hook\"]\nproxy_protocol = true\n\n\
         [plugin.annotate]\ncomponent = {:?}\nargs = [\"rcpt:note-set:spam-score=1.5\", \"data:header-add:X-Checked=yes\"]\n\
         grants = {{ notes = true, headers = true, envelope = true }}\n\n\
         [plugin.hook]\ncomponent = \"webhook\"\nargs = [{:?}, \"secret={SECRET}\", \"auth=on\", \"attachments=names\"]\nhook_timeout = 5\n\n\
         [dns]\nnameservers = [{dead_dns:?}]\ntimeout = 1\nattempts = 1\n",
        harness::plugin_path("annotator.wasm").display().to_string(),
        web.url("inbound/ok"),
    ));
    let mut c = Client::connect(server.addr());
    c.send_raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 50412 25\r\n");
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    let reply = c.send_message(
        "anne@example.com",
        &["bob@example.com"],
        "Subject: s\r\n\r\nx\r\n",
    );
    assert_eq!(reply.code, 250, "{}\n{}", c.transcript(), server.stderr());
    let r = web.one();
    assert!(r.signature_ok);
    let j = r.json();
    let s = &j["session"];
    assert_eq!(s["client"], json!({"address": "192.0.2.7", "port": 50412}));
    assert_eq!(
        s["proxy_destination"],
        json!({"address": "127.0.0.1", "port": 25})
    );
    assert_eq!(s["proxied"], true);
    assert_eq!(j["notes"], json!({"spam-score": "1.5"}));
    // The message as the plugins before it left it.
    assert_eq!(
        j["message"]["headers"][0],
        json!({"name": "X-Checked", "value": "yes"})
    );
    let auth = &j["authentication_results"];
    assert!(
        auth["header"].as_str().unwrap().starts_with(HOSTNAME),
        "{auth:#}"
    );
    assert_eq!(auth["spf_mail_from"]["result"], "temperror", "{auth:#}");
    assert!(auth["dkim"].is_array());
}
