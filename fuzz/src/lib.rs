//! The host's sans-IO protocol modules, compiled here straight from
//! `host/src`, so that the fuzz targets build in seconds without the
//! WebAssembly runtime the host crate links. These files depend only on
//! each other (through `super::`) and on small crates, which is what makes
//! this possible; a module that grows a dependency on the rest of the host
//! must stay out of the list.

pub mod smtp;

#[path = "../../host/src/proxy_protocol.rs"]
pub mod proxy_protocol;
