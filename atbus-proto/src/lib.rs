//! The atbus-rs wire: the protobuf messages and the frame codec.
//!
//! Every transport carries the same frames:
//!
//! ```text
//! varint version | varint length | frame_message (length bytes, protobuf) | CRC-32 (4 bytes, LE)
//! ```
//!
//! The CRC-32 (IEEE) covers every byte before it. [`protocol`] holds the generated message types
//! (package `atbus.protocol`); [`FrameCodec`] turns them into frames and back. The decoder is
//! incremental and safe on hostile input: it never panics, reports each kind of bad input as its
//! own [`DecodeError`] variant, and never allocates more than the bytes it was given. The
//! normative description of the wire is `docs/protocol.md` in the repository.
//!
//! ```
//! use atbus_proto::protocol::{frame_message::Body, FrameMessage, MessageHead, PingData};
//! use atbus_proto::{CodecConfig, Decoded, FrameCodec};
//! use bytes::BytesMut;
//!
//! let codec = FrameCodec::new(CodecConfig::default());
//! let ping = FrameMessage {
//!     head: Some(MessageHead { source: "a".into(), destination: "b".into(), ..Default::default() }),
//!     body: Some(Body::Ping(PingData { sequence: 1, timepoint_microseconds: 42 })),
//! };
//!
//! let mut wire = BytesMut::new();
//! codec.encode(&ping, &mut wire)?;
//!
//! // A stream transport may hand the decoder any prefix of the bytes.
//! let mut received = wire.split_to(3);
//! assert!(matches!(codec.decode(&mut received)?, Decoded::Incomplete { .. }));
//! received.unsplit(wire);
//! match codec.decode(&mut received)? {
//!     Decoded::Frame(frame) => assert_eq!(frame.message, ping),
//!     Decoded::Incomplete { needed } => unreachable!("{needed} more bytes needed"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod config;
mod decode;
mod error;
mod varint;

/// The generated message types of `proto/libatbus_protocol.proto` (package `atbus.protocol`).
///
/// Byte fields are [`bytes::Bytes`] that share the decoded buffer; maps are `BTreeMap`s, so
/// encoding is deterministic.
#[allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::doc_overindented_list_items
)]
pub mod protocol {
    include!(concat!(env!("OUT_DIR"), "/atbus.protocol.rs"));
}

/// The generated message types of `proto/atbus_handshake.proto` (package `atbus.handshake`): the
/// handshake that authenticates a connection (`docs/protocol.md` section 8).
#[allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::doc_overindented_list_items
)]
pub mod handshake {
    include!(concat!(env!("OUT_DIR"), "/atbus.handshake.rs"));
}

/// The messages of `proto/atbus_routing.proto`: the route tables relays exchange
/// (`docs/protocol.md` section 5.9).
#[allow(missing_docs)]
pub mod routing {
    include!(concat!(env!("OUT_DIR"), "/atbus.routing.rs"));
}

/// The messages of `proto/atbus_discovery.proto`: node records, and discovery through a relay
/// (register, list, watch by selector).
#[allow(missing_docs, clippy::large_enum_variant)]
pub mod discovery {
    include!(concat!(env!("OUT_DIR"), "/atbus.discovery.rs"));
}

pub use codec::FrameCodec;
pub use config::{CodecConfig, ConfigError, DEFAULT_MAX_FRAME_LENGTH, MAX_FRAME_LENGTH_LIMIT};
pub use decode::{Decoded, Frame};
pub use error::{DecodeError, EncodeError, HeaderField};

/// The protocol version this implementation writes and, by default, the only one it accepts.
pub const PROTOCOL_VERSION: u64 = 1;

/// The smallest `packet_type` an application may use; types up to 100 belong to the bus.
pub const USER_PACKET_TYPE_MIN: i32 = 101;

/// Length of the CRC-32 trailer of every frame.
pub const CHECKSUM_LEN: usize = 4;

/// The longest varint the header may hold (a 64-bit value in LEB128).
pub const MAX_VARINT_LEN: usize = 10;
