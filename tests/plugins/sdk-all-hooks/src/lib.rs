//! sdk-all-hooks: every hook defined through `#[wasmtp_plugin::plugin]`.
//! Each reply names the hook and counts this session's calls, so a test sees
//! that the SDK keeps one value per session and calls the right method.

use wasmtp_plugin::{
    Args, AuthDecision, Content, Credentials, Envelope, Error, Plugin, ProxyData, Reply, Session,
};

#[derive(Default)]
struct AllHooks {
    calls: u32,
    args: Vec<String>,
}

impl AllHooks {
    fn reply(&mut self, code: u16, text: String) -> Option<Reply> {
        self.calls += 1;
        Some(Reply::text(
            code,
            format!("sdk {text} [call {}]", self.calls),
        ))
    }
}

#[wasmtp_plugin::plugin]
impl Plugin for AllHooks {
    fn init(&mut self, args: Args) -> Result<(), String> {
        self.args = args.rest();
        Ok(())
    }
    fn helo(&mut self, _: &Session, _: &Envelope, hostname: &str) -> Option<Reply> {
        self.reply(250, format!("helo {hostname}"))
    }
    fn ehlo(&mut self, _: &Session, _: &Envelope, _: &str, responses: Reply) -> Option<Reply> {
        self.calls += 1;
        Some(responses)
    }
    fn mail(&mut self, _: &Session, _: &Envelope, address: &str, _: &[String]) -> Option<Reply> {
        self.reply(250, format!("mail {address}"))
    }
    fn rcpt(&mut self, _: &Session, _: &Envelope, address: &str, _: &[String]) -> Option<Reply> {
        self.reply(250, format!("rcpt {address}"))
    }
    fn data(&mut self, _: &Session, envelope: &Envelope, content: Content) -> Option<Reply> {
        let size = content.size();
        self.reply(
            250,
            format!("data {size} bytes for {}", envelope.rcpt_tos.join(",")),
        )
    }
    fn rset(&mut self, _: &Session, _: &Envelope) -> Option<Reply> {
        self.reply(250, "rset".into())
    }
    fn noop(&mut self, _: &Session, _: &Envelope, arg: &str) -> Option<Reply> {
        if arg == "args" {
            let args = self.args.join(",");
            return self.reply(250, format!("args {args}"));
        }
        self.reply(250, format!("noop {arg}"))
    }
    fn quit(&mut self, _: &Session, _: &Envelope) -> Option<Reply> {
        self.reply(221, "quit".into())
    }
    fn vrfy(&mut self, _: &Session, _: &Envelope, address: &str) -> Option<Reply> {
        self.reply(252, format!("vrfy {address}"))
    }
    fn auth(&mut self, _: &Session, _: &Envelope, credentials: Credentials) -> AuthDecision {
        if credentials.password == b"secret" {
            AuthDecision::Accept(String::from_utf8_lossy(&credentials.login).into_owned())
        } else {
            AuthDecision::Reject(None)
        }
    }
    fn proxy(&mut self, _: &Session, _: &Envelope, _: &ProxyData) -> bool {
        true
    }
    fn starttls(&mut self, _: &Session, _: &Envelope) -> bool {
        true
    }
    fn exception(&mut self, _: &Session, error: &Error) -> Option<Reply> {
        Some(Reply::new(
            451,
            "4.3.0",
            format!("sdk exception in {}", error.hook),
        ))
    }
    fn lmtp_data(&mut self, _: &Session, envelope: &Envelope, _: Content) -> Vec<Option<Reply>> {
        envelope
            .rcpt_tos
            .iter()
            .map(|r| Some(Reply::text(250, format!("sdk lmtp {r}"))))
            .collect()
    }
}
