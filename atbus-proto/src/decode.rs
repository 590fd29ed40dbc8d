//! The decoding half of the frame codec: incremental, zero-copy and safe on hostile input.
//!
//! The header is parsed again on every call (at most 20 bytes), so the decoder keeps no state
//! between calls: the caller's buffer is the only state. Nothing is allocated here; the decoded
//! message's byte fields are slices of the input buffer.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::protocol::FrameMessage;
use crate::varint::{Varint, VarintError, read_varint};
use crate::{CHECKSUM_LEN, DecodeError, FrameCodec, HeaderField};

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The protocol version from the frame header.
    pub version: u64,
    /// The decoded body. Its byte fields share the buffer the frame was decoded from.
    pub message: FrameMessage,
    /// How many bytes the whole frame took on the wire (header, body and CRC).
    pub wire_len: usize,
}

/// The result of one decoding step.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A whole frame, removed from the front of the buffer.
    Frame(Frame),
    /// The buffer holds only the beginning of a frame; nothing was consumed.
    Incomplete {
        /// At least this many more bytes are needed; exactly this many once the header is in.
        needed: usize,
    },
}

/// Where the frame at the front of a buffer stands.
enum Header {
    /// The header is in (from `locate_frame`: the whole frame is in).
    Complete(Bounds),
    /// More bytes are needed, at least `needed`.
    Incomplete { needed: usize },
}

/// The parts of a frame, from its header.
#[derive(Clone, Copy)]
struct Bounds {
    version: u64,
    header_len: usize,
    body_len: usize,
}

impl Bounds {
    /// Header and body: the bytes the CRC covers.
    fn checked_len(self) -> usize {
        self.header_len + self.body_len
    }

    /// The whole frame.
    fn total_len(self) -> usize {
        self.checked_len() + CHECKSUM_LEN
    }
}

/// The fewest bytes a frame can take after a version varint: a one-byte length and the CRC.
const MIN_AFTER_VERSION: usize = 1 + CHECKSUM_LEN;

impl FrameCodec {
    /// Decodes the frame at the front of a stream transport's read buffer.
    ///
    /// On [`Decoded::Frame`] the frame's bytes are split off `src` (without copying: the message's
    /// byte fields point into them); call again for the next frame. On
    /// [`Decoded::Incomplete`] nothing is consumed: read more and call again. See [`DecodeError`]
    /// for what errors consume.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Decoded, DecodeError> {
        match self.locate_frame(src)? {
            Header::Complete(bounds) => finish(src.split_to(bounds.total_len()).freeze(), bounds),
            Header::Incomplete { needed } => Ok(Decoded::Incomplete { needed }),
        }
    }

    /// Decodes the frame at the front of `src`, such as a received datagram, splitting it off
    /// without copying. Otherwise the same as [`decode`](Self::decode).
    pub fn decode_bytes(&self, src: &mut Bytes) -> Result<Decoded, DecodeError> {
        match self.locate_frame(src)? {
            Header::Complete(bounds) => finish(src.split_to(bounds.total_len()), bounds),
            Header::Incomplete { needed } => Ok(Decoded::Incomplete { needed }),
        }
    }

    /// Finds the frame at the front of `buf`: `Complete` once all its bytes are in.
    fn locate_frame(&self, buf: &[u8]) -> Result<Header, DecodeError> {
        let bounds = match self.parse_header(buf)? {
            Header::Complete(bounds) => bounds,
            incomplete => return Ok(incomplete),
        };
        let total = bounds.total_len();
        if buf.len() < total {
            return Ok(Header::Incomplete {
                needed: total - buf.len(),
            });
        }
        Ok(Header::Complete(bounds))
    }

    /// Reads the version and length varints and checks them against the configuration.
    fn parse_header(&self, buf: &[u8]) -> Result<Header, DecodeError> {
        let (version, version_len) = match header_varint(buf, HeaderField::Version)? {
            Varint::Complete { value, len } => (value, len),
            Varint::Incomplete => {
                return Ok(Header::Incomplete {
                    needed: 1 + MIN_AFTER_VERSION,
                });
            }
        };
        if !self.config().accepts_version(version) {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let (length, length_len) = match header_varint(&buf[version_len..], HeaderField::Length)? {
            Varint::Complete { value, len } => (value, len),
            Varint::Incomplete => {
                return Ok(Header::Incomplete {
                    needed: MIN_AFTER_VERSION,
                });
            }
        };
        let max = self.config().max_frame_length();
        // The limit is at most 1 GiB, so a body within it fits a usize on every platform.
        let body_len = match usize::try_from(length) {
            Ok(len) if len <= max => len,
            _ => return Err(DecodeError::FrameTooLong { length, max }),
        };
        Ok(Header::Complete(Bounds {
            version,
            header_len: version_len + length_len,
            body_len,
        }))
    }
}

/// Reads one header varint, naming the field in its errors.
fn header_varint(buf: &[u8], field: HeaderField) -> Result<Varint, DecodeError> {
    read_varint(buf).map_err(|err| match err {
        VarintError::TooLong => DecodeError::VarintTooLong { field },
        VarintError::Overflow => DecodeError::VarintOverflow { field },
    })
}

/// Checks the CRC of a whole frame, already split off its buffer, and decodes its body.
fn finish(mut frame: Bytes, bounds: Bounds) -> Result<Decoded, DecodeError> {
    let checked_len = bounds.checked_len();
    let mut trailer = [0u8; CHECKSUM_LEN];
    trailer.copy_from_slice(&frame[checked_len..]);
    let expected = u32::from_le_bytes(trailer);
    let actual = crc32fast::hash(&frame[..checked_len]);
    if expected != actual {
        return Err(DecodeError::ChecksumMismatch { expected, actual });
    }
    let wire_len = frame.len();
    frame.advance(bounds.header_len);
    frame.truncate(bounds.body_len);
    let message = FrameMessage::decode(frame).map_err(DecodeError::InvalidMessage)?;
    Ok(Decoded::Frame(Frame {
        version: bounds.version,
        message,
        wire_len,
    }))
}

#[cfg(test)]
mod tests;
