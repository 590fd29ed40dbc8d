//! What can go wrong turning frames into bytes and back.

use std::fmt;

/// One of the two varints of the frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    /// The protocol version, first in the frame.
    Version,
    /// The length of the `frame_message` body, after the version.
    Length,
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderField::Version => "version",
            HeaderField::Length => "length",
        })
    }
}

/// Bytes that are not a valid frame.
///
/// Errors in the header ([`UnsupportedVersion`](Self::UnsupportedVersion),
/// [`FrameTooLong`](Self::FrameTooLong), [`VarintTooLong`](Self::VarintTooLong),
/// [`VarintOverflow`](Self::VarintOverflow)) consume nothing: the stream cannot be resynchronised
/// and its connection should be closed. Errors found once the whole frame is in
/// ([`ChecksumMismatch`](Self::ChecksumMismatch), [`InvalidMessage`](Self::InvalidMessage))
/// consume the bad frame, so a datagram transport may go on with the next datagram.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The frame's version is not one the codec was configured to accept.
    #[error(
        "unsupported protocol version {version}: the peer speaks another version of the atbus \
         protocol, or this is not an atbus connection"
    )]
    UnsupportedVersion {
        /// The version the frame carries.
        version: u64,
    },
    /// The length field announces a body over the configured limit. Reported as soon as the
    /// length field is read, before the body arrives.
    #[error(
        "frame length {length} is over the limit of {max} bytes: raise max_frame_length on both \
         sides if such frames are expected"
    )]
    FrameTooLong {
        /// The body length the frame announces.
        length: u64,
        /// The configured limit.
        max: usize,
    },
    /// A header varint continues past 10 bytes, longer than any 64-bit value needs.
    #[error("the {field} varint of the frame header is longer than 10 bytes")]
    VarintTooLong {
        /// Which header varint.
        field: HeaderField,
    },
    /// A header varint of 10 bytes holds a value over 64 bits.
    #[error("the {field} varint of the frame header overflows 64 bits")]
    VarintOverflow {
        /// Which header varint.
        field: HeaderField,
    },
    /// The CRC-32 trailer does not match the frame's bytes: they were corrupted on the way.
    #[error(
        "CRC-32 mismatch: the frame carries {expected:#010x} but its bytes hash to {actual:#010x}"
    )]
    ChecksumMismatch {
        /// The checksum written in the frame.
        expected: u32,
        /// The checksum computed over the received bytes.
        actual: u32,
    },
    /// The body passed its checksum but is not a valid `frame_message`.
    #[error("the frame body is not a valid frame_message: {0}")]
    InvalidMessage(#[source] prost::DecodeError),
}

/// A message that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded `frame_message` is over the configured limit, so the peer would refuse it.
    #[error(
        "frame_message of {length} bytes is over the limit of {max} bytes: send less per frame, \
         or raise max_frame_length on both sides"
    )]
    FrameTooLong {
        /// The encoded length of the message.
        length: usize,
        /// The configured limit.
        max: usize,
    },
}
