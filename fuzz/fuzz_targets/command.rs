//! Command lines: framing (any split of the input into reads), parsing with
//! and without SMTPUTF8, and the MAIL/RCPT argument parsers on what comes out.
//! Invariants: no panic; framing does not depend on how reads are split; a
//! framed line never holds a LF and is never longer than the stream limit.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::smtp::command::{self, Frame, Framer, MAX_LINE};
use wasmtp_fuzz::smtp::{address, dsn};

fn frames(input: &[u8], split: usize) -> Vec<Frame> {
    let mut framer = Framer::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(split.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next(&mut buf) {
            out.push(frame);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = frames(input, input.len());
    assert_eq!(
        whole,
        frames(input, usize::from(split % 64) + 1),
        "framing depends on read sizes"
    );
    for frame in whole {
        let Frame::Line(line) = frame else { continue };
        assert!(!line.contains(&b'\n') && line.len() <= MAX_LINE + 1);
        for utf8 in [false, true] {
            let Ok(parsed) = command::parse(&line, utf8, |_| command::COMMAND_LIMIT) else {
                continue;
            };
            let Some(arg) = parsed.arg else { continue };
            for keyword in ["FROM:", "TO:", ""] {
                let rest = arg.get(keyword.len()..).unwrap_or("");
                if let Ok((_, params)) = address::split_address(rest) {
                    let options: Vec<String> =
                        params.split_whitespace().map(str::to_owned).collect();
                    if let Some(params) = address::parse_params(&options) {
                        for (_, value) in params {
                            let value = value.as_deref();
                            let _ = (
                                dsn::valid_ret(value),
                                dsn::valid_envid(value),
                                dsn::valid_notify(value),
                                dsn::valid_orcpt(value),
                            );
                        }
                    }
                }
            }
        }
    }
});
