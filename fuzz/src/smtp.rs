//! `host/src/smtp`'s sans-IO modules (see lib.rs).

#[path = "../../host/src/smtp/address.rs"]
pub mod address;
#[path = "../../host/src/smtp/command.rs"]
pub mod command;
#[path = "../../host/src/smtp/data.rs"]
pub mod data;
#[path = "../../host/src/smtp/dsn.rs"]
pub mod dsn;
#[path = "../../host/src/smtp/reply.rs"]
pub mod reply;
#[path = "../../host/src/smtp/spool.rs"]
pub mod spool;
