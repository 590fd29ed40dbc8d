//! An outside implementation of the atbus wire, for tests.
//!
//! Everything here is written from `docs/protocol.md` and the `.proto` files, as a client in
//! another language would be: the messages and the frame codec come from `atbus-proto`, HMAC
//! from `ring`, and nothing from `atbus-core`. Tests use it to hold the engine and the relay to
//! the document rather than to themselves:
//!
//! - [`transcript`]: the transcripts and proofs of section 8.4, byte by byte;
//! - [`handshake`]: the handshake frames of section 8.2 (the hello padded, accept, confirm);
//! - [`inbound`]: what a receiver keeps of a stream (section 5.3) and the acknowledgements it
//!   owes (5.7, 5.11);
//! - [`client`]: a node over TCP or UDP that handshakes with a TOKEN proof, sends and reads raw
//!   frames, answers pings, and receives and acknowledges messages.

pub mod client;
pub mod handshake;
pub mod inbound;
pub mod transcript;

pub use client::{Client, ClientError, Transport};
pub use inbound::{Inbound, Received};
