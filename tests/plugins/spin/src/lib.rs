//! Spins in DATA until the host's deadline (or fuel budget) stops it: the
//! noisy neighbour of the tenant-isolation benchmark.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:spin;
        world spin {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/data@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::data;
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Spin;

impl data::Guest for Spin {
    fn handle_data(_: Session, _: Envelope) -> Option<Reply> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Spin);
