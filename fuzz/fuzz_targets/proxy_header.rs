//! The PROXY protocol header parser (v1 and v2). Invariant: no panic, and a
//! v1 header is never accepted with more than the 107 bytes the spec allows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proxy_protocol;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = proxy_protocol::parse(data) {
        if header.version == 1 {
            assert!(
                data.len() <= 107 || !data.starts_with(b"PROXY"),
                "{} bytes",
                data.len()
            );
        }
    }
});
