//! The DATA decoder. Invariants: no panic; the outcome (content or refusal,
//! and what is left in the buffer after the terminator) does not depend on
//! how the input is split into reads; accepted content is never larger than the
//! limit, nor than what was sent.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

use wasmtp_fuzz::smtp::data::DataDecoder;
use wasmtp_fuzz::smtp::spool::SpoolSettings;

type Outcome = (Option<Result<Vec<u8>, String>>, Vec<u8>);

fn decode(limit: Option<usize>, input: &[u8], split: usize) -> Outcome {
    // A small threshold, so longer inputs go through the spool file too.
    let spool = SpoolSettings {
        dir: std::env::temp_dir(),
        threshold: 256,
    };
    let mut decoder = DataDecoder::new(limit, Arc::new(spool));
    let mut buf = BytesMut::new();
    let mut pieces = input.chunks(split.max(1));
    loop {
        match pieces.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => return (None, Vec::new()),
        }
        if let Some(done) = decoder.feed(&mut buf) {
            // What is left: the buffer plus the pieces not yet read.
            let mut rest = buf.to_vec();
            pieces.for_each(|p| rest.extend_from_slice(p));
            let done = done
                .map(|c| c.read(0, c.len() as usize).expect("the spool reads back"))
                .map_err(|r| r.to_string());
            return (Some(done), rest);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let limit = match knobs & 3 {
        0 => None,
        1 => Some(16),
        2 => Some(1000),
        _ => Some(usize::from(knobs)),
    };
    let whole = decode(limit, input, input.len());
    assert_eq!(
        whole,
        decode(limit, input, usize::from(knobs >> 2) + 1),
        "decoding depends on read sizes"
    );
    if let (Some(Ok(content)), rest) = &whole {
        assert!(
            limit.is_none_or(|l| content.len() <= l),
            "content over the limit"
        );
        // Unstuffing only removes bytes, and the terminator (5 bytes) was consumed.
        assert!(
            content.len() + rest.len() + 3 <= input.len(),
            "more out than in"
        );
    }
});
