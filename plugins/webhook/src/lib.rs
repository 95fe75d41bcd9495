//! Webhook: posts every accepted message to an application over HTTP(S)
//! and answers the client with the application's decision, while the
//! client is still connected.
//!
//! `webhook URL [format=json|multipart] [secret=S | secret-env=NAME |
//! secret-file=PATH] [on-4xx=CODE] [auth=on] [attachments=content|names]`
//! (`secret-env` and `secret-file` are read by the server at load and
//! handed over as `secret`; given more than once, every secret signs, for
//! rotating one without a moment when the receiver refuses).
//!
//! The request: `POST URL` with the message as JSON (docs/webhook.md, the
//! schema in docs/webhook.schema.json) or as `multipart/form-data` (the
//! same JSON without `message` in the part `envelope`, the raw message in
//! the part `message`), with `Wasmtp-Timestamp: T` and, with a secret,
//! `Wasmtp-Signature: v1=HEX`, HMAC-SHA256 of `T.BODY` keyed by the secret.
//!
//! The answer: 2xx → `250` (or the JSON body's own `smtp` reply); 4xx →
//! `550` (`on-4xx`), or the JSON body's `4xx`/`5xx` reply; anything else —
//! 5xx, a 3xx, a timeout, a refused connection — `451`, so the sender
//! retries and nothing is lost. On LMTP, `recipients` in the JSON body
//! answers recipient by recipient.
//!
//! Memory stays flat whatever the message size: the body is generated
//! twice from the host's parse (`wasmtp:smtp/message`), read in chunks —
//! once to sign and measure it, once to send it.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:webhook;
        world webhook {
            include wasmtp:smtp/plugin@0.1.0;
            import wasmtp:smtp/message@0.1.0;
            import wasmtp:smtp/notes@0.1.0;
            import wasmtp:smtp/mail-auth@0.1.0;
            export wasmtp:smtp/setup@0.1.0;
            export wasmtp:smtp/data@0.1.0;
            export wasmtp:smtp/lmtp-data@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

mod http;
mod json;

use std::cell::RefCell;

use exports::wasmtp::smtp::{data, lmtp_data, setup};
use hmac::{KeyInit, Mac};
use wasmtp::smtp::log::{Level, log};
use wasmtp::smtp::message;
use wasmtp::smtp::types::{Envelope, Reply, Session};

use json::{Json, Out};

/// How the message is posted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Multipart,
}

#[derive(Clone)]
struct Settings {
    url: http::Url,
    format: Format,
    /// Each signs the body; two while one replaces the other.
    secrets: Vec<Vec<u8>>,
    /// The SMTP code an HTTP 4xx without its own reply becomes.
    on_4xx: u16,
    /// Include the transaction's mail authentication results.
    auth: bool,
    /// Include attachments' contents (base64), not only their names.
    attachment_contents: bool,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

fn settings() -> Settings {
    SETTINGS
        .with(|s| s.borrow().clone())
        .expect("setup.init ran")
}

struct Webhook;

impl setup::Guest for Webhook {
    fn init(args: Vec<String>) -> Result<(), String> {
        let Some((url, options)) = args.split_first() else {
            return Err("usage: webhook URL [format=json|multipart] [secret=S] [on-4xx=CODE] [auth=on] [attachments=content|names]".into());
        };
        let mut s = Settings {
            url: http::Url::parse(url)?,
            format: Format::Json,
            secrets: Vec::new(),
            on_4xx: 550,
            auth: false,
            attachment_contents: true,
        };
        for option in options {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("`{option}`: options are KEY=VALUE"))?;
            match (key, value) {
                ("format", "json") => s.format = Format::Json,
                ("format", "multipart") => s.format = Format::Multipart,
                ("secret", v) if !v.is_empty() => s.secrets.push(v.as_bytes().to_vec()),
                ("on-4xx", v) => {
                    s.on_4xx = match v.parse() {
                        Ok(code @ (400..=599)) => code,
                        _ => return Err(format!("on-4xx={v}: a 4xx or 5xx SMTP code")),
                    }
                }
                ("auth", "on") => s.auth = true,
                ("auth", "off") => s.auth = false,
                ("attachments", "content") => s.attachment_contents = true,
                ("attachments", "names") => s.attachment_contents = false,
                _ => return Err(format!("`{option}` is not an option of webhook")),
            }
        }
        SETTINGS.with(|cell| *cell.borrow_mut() = Some(s));
        Ok(())
    }
}

impl data::Guest for Webhook {
    fn handle_data(session: Session, envelope: Envelope) -> Option<Reply> {
        let answers = deliver(&session, &envelope);
        Some(one_reply(answers))
    }
}

impl lmtp_data::Guest for Webhook {
    fn handle_lmtp_data(session: Session, envelope: Envelope) -> Vec<Option<Reply>> {
        deliver(&session, &envelope).into_iter().map(Some).collect()
    }
}

export!(Webhook);

fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply {
        code,
        enhanced: Some(enhanced.into()),
        lines: vec![text.into()],
    }
}

fn try_again(why: &str) -> Reply {
    log(
        Level::Warn,
        &format!("not delivered to the application: {why}"),
    );
    reply(
        451,
        "4.3.0",
        "Error: the application did not take the message; try again later",
    )
}

/// SMTP has one reply for all: the first recipient's refusal if any (so
/// that nothing is acknowledged the application did not accept), else the
/// first answer.
fn one_reply(answers: Vec<Reply>) -> Reply {
    answers
        .iter()
        .find(|r| r.code >= 400)
        .or(answers.first())
        .cloned()
        .unwrap_or_else(|| try_again("no recipients"))
}

/// Post the message; one reply per recipient.
fn deliver(session: &Session, envelope: &Envelope) -> Vec<Reply> {
    let n = envelope.rcpt_tos.len().max(1);
    let s = settings();
    let queue_id = wasmtp::smtp::transaction::queue_id().unwrap_or_default();
    let summary = match message::summary() {
        Ok(summary) => Some(summary),
        Err(message::Error::Malformed(why)) => {
            log(
                Level::Info,
                &format!("posting a message that does not parse: {why}"),
            );
            None
        }
        Err(e) => return vec![try_again(&format!("the message could not be read: {e:?}")); n],
    };
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let auth = if s.auth {
        wasmtp::smtp::mail_auth::results()
    } else {
        None
    };
    let doc = Document {
        settings: &s,
        session,
        envelope,
        queue_id: &queue_id,
        timestamp,
        summary: summary.as_ref(),
        auth: auth.as_ref(),
        // Unguessable: a sender who could write the boundary into the
        // message could add form fields (a forged `envelope`) to the post.
        boundary: format!(
            "wasmtp-{}",
            hex(&wasip2::random::random::get_random_bytes(16))
        ),
    };

    // Pass 1: sign and measure.
    let mut signer = Signer {
        macs: s
            .secrets
            .iter()
            .map(|key| {
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
                mac.update(format!("{timestamp}.").as_bytes());
                mac
            })
            .collect(),
        len: 0,
    };
    if let Err(e) = doc.write(&mut signer) {
        return vec![try_again(&e); n];
    }
    let mut headers = vec![
        (
            "content-type".to_owned(),
            match s.format {
                Format::Json => "application/json".to_owned(),
                Format::Multipart => format!("multipart/form-data; boundary={}", doc.boundary),
            },
        ),
        ("content-length".to_owned(), signer.len.to_string()),
        ("user-agent".to_owned(), "wasmtp-webhook/0.1".to_owned()),
        ("wasmtp-timestamp".to_owned(), timestamp.to_string()),
        ("wasmtp-queue-id".to_owned(), queue_id.clone()),
    ];
    if !signer.macs.is_empty() {
        let signatures: Vec<String> = signer
            .macs
            .into_iter()
            .map(|mac| format!("v1={}", hex(&mac.finalize().into_bytes())))
            .collect();
        headers.push(("wasmtp-signature".to_owned(), signatures.join(",")));
    }

    // Pass 2: send.
    let response = http::post(&s.url, &headers, &mut |out| doc.write(out));
    let (status, body) = match response {
        Ok(r) => r,
        Err(e) => return vec![try_again(&e); n],
    };
    answers(status, &body, &envelope.rcpt_tos, &queue_id, s.on_4xx)
}

/// The application's answer as SMTP replies, one per recipient.
fn answers(status: u16, body: &[u8], rcpts: &[String], queue_id: &str, on_4xx: u16) -> Vec<Reply> {
    let n = rcpts.len().max(1);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let own = |v: Option<&serde_json::Value>| v.and_then(smtp_reply);
    let top = own(parsed.as_ref().and_then(|p| p.get("smtp")));
    let per = |rcpt: &str| -> Option<Reply> {
        let map = parsed.as_ref()?.get("recipients")?.as_object()?;
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(rcpt.trim_matches(['<', '>'])))
            .and_then(|(_, v)| smtp_reply(v))
    };
    match status {
        200..=299 => {
            let accepted = top.unwrap_or_else(|| {
                reply(
                    250,
                    "2.0.0",
                    &format!("Ok: delivered to the application as {queue_id}"),
                )
            });
            if rcpts.is_empty() {
                return vec![accepted];
            }
            rcpts
                .iter()
                .map(|r| per(r).unwrap_or_else(|| accepted.clone()))
                .collect()
        }
        400..=499 => {
            // A refusal stays a refusal: a 2xx reply in its body is ignored.
            let refused = top.filter(|r| r.code >= 400).unwrap_or_else(|| {
                let enhanced = if on_4xx < 500 { "4.0.0" } else { "5.0.0" };
                reply(
                    on_4xx,
                    enhanced,
                    &format!("Error: refused by the application (HTTP {status})"),
                )
            });
            if rcpts.is_empty() {
                return vec![refused];
            }
            rcpts
                .iter()
                .map(|r| {
                    per(r)
                        .filter(|r| r.code >= 400)
                        .unwrap_or_else(|| refused.clone())
                })
                .collect()
        }
        _ => vec![try_again(&format!("HTTP {status}")); n],
    }
}

/// `{"code": 550, "enhanced": "5.7.1", "message": "text" | ["line", ...]}`,
/// checked so that the server never sees an invalid reply.
fn smtp_reply(v: &serde_json::Value) -> Option<Reply> {
    let code = u16::try_from(v.get("code")?.as_u64()?).ok()?;
    if !matches!(code / 100, 2 | 4 | 5) {
        return None;
    }
    let enhanced = v
        .get("enhanced")
        .and_then(|e| e.as_str())
        .filter(|e| {
            let parts: Vec<&str> = e.split('.').collect();
            parts.len() == 3
                && parts[0] == (code / 100).to_string()
                && parts[1..]
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned);
    let clean = |s: &str| -> String {
        let mut line: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if line.len() > 400 {
            let mut end = 400;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        line
    };
    let lines = match v.get("message") {
        Some(serde_json::Value::String(s)) => vec![clean(s)],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|l| l.as_str())
            .take(10)
            .map(clean)
            .collect(),
        _ => Vec::new(),
    };
    Some(Reply {
        code,
        enhanced,
        lines,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pass 1's sink: the signature and the length.
struct Signer {
    macs: Vec<hmac::Hmac<sha2::Sha256>>,
    len: u64,
}

impl Out for Signer {
    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        for mac in &mut self.macs {
            mac.update(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// Everything the request body is made of. `write` produces the same
/// bytes every time it is called.
struct Document<'a> {
    settings: &'a Settings,
    session: &'a Session,
    envelope: &'a Envelope,
    queue_id: &'a str,
    timestamp: u64,
    summary: Option<&'a message::MessageSummary>,
    auth: Option<&'a wasmtp::smtp::mail_auth::AuthResults>,
    boundary: String,
}

/// The chunk size for reading the message and its parts.
const CHUNK: u32 = 48 << 10;

impl Document<'_> {
    fn write(&self, out: &mut dyn Out) -> Result<(), String> {
        match self.settings.format {
            Format::Json => self.json(out, true),
            Format::Multipart => {
                let b = &self.boundary;
                out.put(
                    format!(
                        "--{b}\r\nContent-Disposition: form-data; name=\"envelope\"\r\nContent-Type: application/json\r\n\r\n"
                    )
                    .as_bytes(),
                )?;
                self.json(out, false)?;
                out.put(
                    format!(
                        "\r\n--{b}\r\nContent-Disposition: form-data; name=\"message\"; filename=\"message.eml\"\r\nContent-Type: message/rfc822\r\n\r\n"
                    )
                    .as_bytes(),
                )?;
                let mut offset = 0;
                loop {
                    let chunk = wasmtp::smtp::content::read(offset, CHUNK);
                    if chunk.is_empty() {
                        break;
                    }
                    offset += chunk.len() as u64;
                    out.put(&chunk)?;
                }
                out.put(format!("\r\n--{b}--\r\n").as_bytes())
            }
        }
    }

    fn json(&self, out: &mut dyn Out, with_message: bool) -> Result<(), String> {
        let (s, e) = (self.session, self.envelope);
        let mut j = Json::new(out);
        j.begin_object()?;
        j.key("version")?;
        j.number(1u64)?;
        j.key("queue_id")?;
        j.string(self.queue_id)?;
        j.key("timestamp")?;
        j.number(self.timestamp)?;

        j.key("envelope")?;
        j.begin_object()?;
        j.key("mail_from")?;
        j.string(
            e.mail_from
                .as_deref()
                .unwrap_or("")
                .trim_matches(['<', '>']),
        )?;
        j.key("mail_options")?;
        j.strings(&e.mail_options)?;
        j.key("smtputf8")?;
        j.bool(e.smtp_utf8)?;
        j.key("recipients")?;
        j.begin_array()?;
        for (i, rcpt) in e.rcpt_tos.iter().enumerate() {
            j.begin_object()?;
            j.key("address")?;
            j.string(rcpt.trim_matches(['<', '>']))?;
            j.key("options")?;
            j.strings(e.rcpt_options.get(i).map_or(&[][..], Vec::as_slice))?;
            j.end_object()?;
        }
        j.end_array()?;
        j.end_object()?;

        j.key("session")?;
        j.begin_object()?;
        let client = s
            .proxy
            .as_ref()
            .and_then(|p| p.source.as_ref())
            .unwrap_or(&s.peer);
        j.key("client")?;
        endpoint(&mut j, &client.address, client.port)?;
        j.key("proxied")?;
        j.bool(s.proxy.is_some())?;
        j.key("proxy_destination")?;
        match s.proxy.as_ref().and_then(|p| p.destination.as_ref()) {
            Some(d) => endpoint(&mut j, &d.address, d.port)?,
            None => j.null()?,
        }
        j.key("helo")?;
        j.opt_string(s.host_name.as_deref())?;
        j.key("esmtp")?;
        j.bool(s.extended_smtp)?;
        j.key("lmtp")?;
        j.bool(s.lmtp)?;
        j.key("tls")?;
        match &s.tls {
            None => j.null()?,
            Some(t) => {
                j.begin_object()?;
                j.key("version")?;
                j.string(&t.version)?;
                j.key("cipher")?;
                j.string(&t.cipher)?;
                j.key("sni")?;
                j.opt_string(t.server_name.as_deref())?;
                j.key("client_certificate")?;
                j.bool(t.peer_certificate.is_some())?;
                j.end_object()?;
            }
        }
        j.key("auth")?;
        j.opt_string(s.auth_identity.as_deref())?;
        j.key("listener")?;
        j.string(&s.listener)?;
        j.key("server")?;
        j.string(&s.server_hostname)?;
        j.key("id")?;
        j.number(s.id)?;
        j.end_object()?;

        if let Some(a) = self.auth {
            j.key("authentication_results")?;
            auth_results(&mut j, a)?;
        }

        j.key("notes")?;
        j.begin_object()?;
        for key in wasmtp::smtp::notes::keys() {
            if let Some(value) = wasmtp::smtp::notes::get(&key) {
                j.key(&key)?;
                j.string(&value)?;
            }
        }
        j.end_object()?;

        if with_message {
            j.key("message")?;
            self.message(&mut j)?;
        }
        j.end_object()
    }

    fn message(&self, j: &mut Json) -> Result<(), String> {
        j.begin_object()?;
        j.key("size")?;
        j.number(wasmtp::smtp::content::size())?;
        let Some(m) = self.summary else {
            j.key("problems")?;
            j.strings(&["the message could not be parsed at all".to_owned()])?;
            return j.end_object();
        };
        for (key, list) in [
            ("from", &m.from),
            ("sender", &m.sender),
            ("reply_to", &m.reply_to),
            ("to", &m.to),
            ("cc", &m.cc),
            ("bcc", &m.bcc),
        ] {
            j.key(key)?;
            j.begin_array()?;
            for mb in list {
                j.begin_object()?;
                j.key("name")?;
                j.opt_string(mb.name.as_deref())?;
                j.key("address")?;
                j.opt_string(mb.address.as_deref())?;
                j.end_object()?;
            }
            j.end_array()?;
        }
        j.key("subject")?;
        j.opt_string(m.subject.as_deref())?;
        j.key("date")?;
        j.opt_string(m.date.as_deref())?;
        j.key("message_id")?;
        j.opt_string(m.message_id.as_deref())?;
        j.key("in_reply_to")?;
        j.strings(&m.in_reply_to)?;
        j.key("references")?;
        j.strings(&m.references)?;
        for (key, fields) in [("list", &m.list_fields), ("headers", &m.headers)] {
            j.key(key)?;
            j.begin_array()?;
            for f in fields {
                j.begin_object()?;
                j.key("name")?;
                j.string(&f.name)?;
                j.key("value")?;
                j.string(&f.value)?;
                j.end_object()?;
            }
            j.end_array()?;
        }
        for (key, which, size) in [
            ("text", message::Body::Text, m.text_size),
            ("html", message::Body::Html, m.html_size),
        ] {
            j.key(key)?;
            if size.is_none() {
                j.null()?;
                continue;
            }
            j.begin_string()?;
            let mut offset = 0;
            loop {
                let chunk =
                    message::read_body(which, offset, CHUNK).map_err(|e| format!("{e:?}"))?;
                if chunk.is_empty() {
                    break;
                }
                offset += chunk.len() as u64;
                j.string_bytes(&chunk)?;
            }
            j.end_string()?;
        }
        j.key("attachments")?;
        j.begin_array()?;
        for a in &m.attachments {
            j.begin_object()?;
            j.key("name")?;
            j.opt_string(a.name.as_deref())?;
            j.key("content_type")?;
            j.string(&a.content_type)?;
            j.key("size")?;
            j.number(a.size)?;
            j.key("content_id")?;
            j.opt_string(a.content_id.as_deref())?;
            j.key("inline")?;
            j.bool(a.inline)?;
            if self.settings.attachment_contents {
                j.key("content_base64")?;
                j.begin_string()?;
                let mut offset = 0;
                loop {
                    // A multiple of 3: the pieces' base64 concatenates.
                    let chunk = message::read_attachment(a.index, offset, CHUNK)
                        .map_err(|e| format!("{e:?}"))?;
                    if chunk.is_empty() {
                        break;
                    }
                    offset += chunk.len() as u64;
                    j.raw(json::base64(&chunk).as_bytes())?;
                }
                j.end_string()?;
            }
            j.end_object()?;
        }
        j.end_array()?;
        j.key("problems")?;
        j.strings(&m.problems)?;
        j.end_object()
    }
}

fn endpoint(j: &mut Json, address: &str, port: u16) -> Result<(), String> {
    j.begin_object()?;
    j.key("address")?;
    j.string(address)?;
    j.key("port")?;
    j.number(port)?;
    j.end_object()
}

fn auth_results(j: &mut Json, a: &wasmtp::smtp::mail_auth::AuthResults) -> Result<(), String> {
    use wasmtp::smtp::mail_auth::MethodResult;
    fn method(j: &mut Json, r: &MethodResult) -> Result<(), String> {
        j.begin_object()?;
        j.key("result")?;
        j.string(&r.result)?;
        j.key("reason")?;
        j.opt_string(r.reason.as_deref())?;
        j.key("properties")?;
        j.begin_object()?;
        for p in &r.properties {
            j.key(&p.key)?;
            j.string(&p.value)?;
        }
        j.end_object()?;
        j.end_object()
    }
    j.begin_object()?;
    j.key("header")?;
    j.string(&a.header_value)?;
    for (key, r) in [
        ("iprev", &a.iprev),
        ("spf_helo", &a.spf_helo),
        ("spf_mail_from", &a.spf_mail_from),
        ("arc", &a.arc),
        ("dmarc", &a.dmarc),
    ] {
        j.key(key)?;
        method(j, r)?;
    }
    j.key("dkim")?;
    j.begin_array()?;
    for r in &a.dkim {
        method(j, r)?;
    }
    j.end_array()?;
    j.end_object()
}
