//! The frame codec and its encoding half: `frame_message` → `version | length | body | CRC-32`.
//!
//! The decoding half is in `decode.rs`.

use bytes::{BufMut, BytesMut};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::protocol::FrameMessage;
use crate::{CHECKSUM_LEN, CodecConfig, EncodeError};

/// Encodes [`FrameMessage`]s into frames and decodes frames back, within the limits of a
/// [`CodecConfig`].
///
/// A codec holds no per-connection state: one may serve every connection of a process.
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    config: CodecConfig,
}

impl FrameCodec {
    /// A codec with the given limits.
    pub fn new(config: CodecConfig) -> Self {
        Self { config }
    }

    /// The limits this codec enforces.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// The number of bytes [`encode`](Self::encode) writes for `message`: header, body and CRC.
    pub fn encoded_len(&self, message: &FrameMessage) -> usize {
        frame_len(self.config.version(), message.encoded_len())
    }

    /// Appends the frame of `message` to `dst` and returns its length in bytes.
    ///
    /// The length is computed first and `dst` grows at most once, so a frame costs at most one
    /// allocation. Nothing is written if the body is over the configured limit.
    pub fn encode(&self, message: &FrameMessage, dst: &mut BytesMut) -> Result<usize, EncodeError> {
        let body_len = message.encoded_len();
        let max = self.config.max_frame_length();
        if body_len > max {
            return Err(EncodeError::FrameTooLong {
                length: body_len,
                max,
            });
        }
        let version = self.config.version();
        let total = frame_len(version, body_len);
        dst.reserve(total);

        let start = dst.len();
        encode_varint(version, dst);
        encode_varint(body_len as u64, dst);
        message.encode_raw(dst);
        let checksum = crc32fast::hash(&dst[start..]);
        dst.put_u32_le(checksum);
        debug_assert_eq!(dst.len() - start, total);
        Ok(total)
    }
}

/// The length of a whole frame of `version` around a body of `body_len` bytes.
fn frame_len(version: u64, body_len: usize) -> usize {
    encoded_len_varint(version) + encoded_len_varint(body_len as u64) + body_len + CHECKSUM_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MessageHead, PingData, frame_message::Body};

    fn ping(source: &str) -> FrameMessage {
        FrameMessage {
            head: Some(MessageHead {
                source: source.into(),
                destination: "peer".into(),
                ..Default::default()
            }),
            body: Some(Body::Ping(PingData {
                sequence: 7,
                timepoint_microseconds: 1_700_000_000_000_000,
            })),
        }
    }

    #[test]
    fn encoded_len_is_exactly_what_encode_writes() {
        let codec = FrameCodec::default();
        for message in [FrameMessage::default(), ping("a"), ping(&"x".repeat(300))] {
            let mut dst = BytesMut::new();
            let written = codec.encode(&message, &mut dst).unwrap();
            assert_eq!(written, dst.len());
            assert_eq!(codec.encoded_len(&message), dst.len());
        }
    }

    #[test]
    fn frame_is_version_length_body_and_crc_of_everything_before_it() {
        let codec = FrameCodec::new(CodecConfig::default().with_version(300));
        let message = ping("a");
        let mut dst = BytesMut::new();
        codec.encode(&message, &mut dst).unwrap();

        let body = message.encode_to_vec();
        let mut expected = vec![0xac, 0x02, body.len() as u8];
        expected.extend_from_slice(&body);
        let crc = crc32fast::hash(&expected);
        expected.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(&dst[..], &expected[..]);
    }

    #[test]
    fn encode_appends_after_existing_bytes_with_a_single_reservation() {
        let codec = FrameCodec::default();
        let message = ping("a");
        let mut dst = BytesMut::with_capacity(codec.encoded_len(&message) + 3);
        dst.extend_from_slice(b"abc");
        let capacity = dst.capacity();
        codec.encode(&message, &mut dst).unwrap();
        assert_eq!(&dst[..3], b"abc");
        assert_eq!(
            dst.capacity(),
            capacity,
            "no growth when the space was there"
        );
        assert_eq!(dst.len(), 3 + codec.encoded_len(&message));
    }

    #[test]
    fn body_over_the_limit_is_refused_and_nothing_is_written() {
        let codec = FrameCodec::new(CodecConfig::default().with_max_frame_length(10).unwrap());
        let message = ping("a");
        let mut dst = BytesMut::new();
        let err = codec.encode(&message, &mut dst).unwrap_err();
        assert_eq!(
            err,
            EncodeError::FrameTooLong {
                length: message.encoded_len(),
                max: 10
            }
        );
        assert!(dst.is_empty());
    }
}
