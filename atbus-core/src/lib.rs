//! The atbus-rs node: protocol engine, transports and the async `Node` API.
//!
//! [`engine`] is the sans-IO protocol engine (streams, acknowledgements, fragmentation by MTU,
//! retransmission, flow control, several connections per peer, the token handshake). [`runtime`]
//! is the tokio side: the transports that feed it (`tcp://`, `tls://`, `udp://`, `quic://`,
//! `unix://`, `mem://`) and the `Node` API that services link (see `docs/architecture.md`).
//! The wire format it speaks lives in `atbus-proto`.

mod address;
mod duration;
pub mod engine;
pub mod runtime;

pub use address::{Address, AddressError, HostPort};
#[cfg(feature = "sim")]
pub mod sim;
