//! Unit tests of the decoder: every error from bytes, incremental input, zero copy.

use super::*;
use crate::protocol::frame_message::Body;
use crate::protocol::{MessageHead, PacketData, PingData};
use crate::{CodecConfig, PROTOCOL_VERSION};
use bytes::BufMut;
use proptest::prelude::*;

fn packet(content: &[u8]) -> FrameMessage {
    FrameMessage {
        head: Some(MessageHead {
            source: "node-a".into(),
            destination: "node-b".into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: 1,
            stream_offset: 0,
            content: Bytes::copy_from_slice(content),
            flags: 0,
            padding_size: 0,
            timepoint_microseconds: 5,
        })),
    }
}

fn ping(sequence: i64) -> FrameMessage {
    FrameMessage {
        head: None,
        body: Some(Body::Ping(PingData {
            sequence,
            timepoint_microseconds: 0,
        })),
    }
}

fn encode(codec: &FrameCodec, message: &FrameMessage) -> BytesMut {
    let mut buf = BytesMut::new();
    codec.encode(message, &mut buf).unwrap();
    buf
}

/// A frame built by hand: version, length and body as given, with a correct CRC.
fn raw_frame(version: u64, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    prost::encoding::encode_varint(version, &mut buf);
    prost::encoding::encode_varint(body.len() as u64, &mut buf);
    buf.extend_from_slice(body);
    let crc = crc32fast::hash(&buf);
    buf.put_u32_le(crc);
    buf
}

fn frame_of(decoded: Decoded) -> Frame {
    match decoded {
        Decoded::Frame(frame) => frame,
        Decoded::Incomplete { needed } => panic!("incomplete, {needed} more bytes needed"),
    }
}

#[test]
fn decodes_what_it_encodes() {
    let codec = FrameCodec::default();
    let message = packet(b"hello");
    let mut buf = encode(&codec, &message);
    let wire_len = buf.len();
    let frame = frame_of(codec.decode(&mut buf).unwrap());
    assert_eq!(frame.message, message);
    assert_eq!(frame.version, PROTOCOL_VERSION);
    assert_eq!(frame.wire_len, wire_len);
    assert!(buf.is_empty());
}

#[test]
fn zero_length_body_is_a_valid_empty_frame_message() {
    let codec = FrameCodec::default();
    let mut buf = raw_frame(PROTOCOL_VERSION, &[]);
    assert_eq!(buf.len(), 1 + 1 + CHECKSUM_LEN);
    let frame = frame_of(codec.decode(&mut buf).unwrap());
    assert_eq!(frame.message, FrameMessage::default());
}

#[test]
fn byte_by_byte_input_reports_needed_bytes_then_the_frame() {
    let codec = FrameCodec::default();
    let message = packet(&[7u8; 300]);
    let wire = encode(&codec, &message);
    // Version (1 byte) and length (2 bytes, 300 < body < 16384) make a 3-byte header.
    let header_len = 3;
    let mut buf = BytesMut::new();
    for (index, &byte) in wire.iter().enumerate() {
        let result = codec.decode(&mut buf).unwrap();
        let Decoded::Incomplete { needed } = result else {
            panic!("frame decoded from {index} of {} bytes", wire.len());
        };
        if index >= header_len {
            assert_eq!(needed, wire.len() - index, "exact once the header is in");
        } else {
            assert!(needed >= 1 && needed <= wire.len() - index, "lower bound");
        }
        assert_eq!(buf.len(), index, "nothing consumed while incomplete");
        buf.put_u8(byte);
    }
    assert_eq!(frame_of(codec.decode(&mut buf).unwrap()).message, message);
}

#[test]
fn several_frames_in_one_buffer_come_out_one_by_one() {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for sequence in 0..5 {
        codec.encode(&ping(sequence), &mut buf).unwrap();
    }
    let partial = encode(&codec, &ping(99));
    buf.extend_from_slice(&partial[..2]);
    for sequence in 0..5 {
        assert_eq!(
            frame_of(codec.decode(&mut buf).unwrap()).message,
            ping(sequence)
        );
    }
    assert!(matches!(
        codec.decode(&mut buf).unwrap(),
        Decoded::Incomplete { .. }
    ));
    assert_eq!(buf.len(), 2);
}

#[test]
fn decoded_byte_fields_share_the_input_buffer() {
    let codec = FrameCodec::default();
    let mut buf = encode(&codec, &packet(&[0xab; 1000]));
    let input = buf.as_ptr_range();
    let frame = frame_of(codec.decode(&mut buf).unwrap());
    let Some(Body::Packet(packet)) = frame.message.body else {
        panic!("not a packet");
    };
    assert!(
        input.contains(&packet.content.as_ptr()),
        "content was copied"
    );

    let mut datagram = encode(&codec, &self::packet(&[1; 64])).freeze();
    let input = datagram.as_ptr_range();
    let frame = frame_of(codec.decode_bytes(&mut datagram).unwrap());
    let Some(Body::Packet(packet)) = frame.message.body else {
        panic!("not a packet");
    };
    assert!(
        input.contains(&packet.content.as_ptr()),
        "content was copied"
    );
    assert!(datagram.is_empty());
}

#[test]
fn unsupported_version_is_reported_with_the_version_and_consumes_nothing() {
    let codec = FrameCodec::default();
    let mut buf = raw_frame(2, &[]);
    let len = buf.len();
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::UnsupportedVersion { version: 2 })
    );
    assert_eq!(buf.len(), len);
    // Reported as soon as the version varint is in.
    let mut only_version = BytesMut::from(&[0x02u8][..]);
    assert_eq!(
        codec.decode(&mut only_version),
        Err(DecodeError::UnsupportedVersion { version: 2 })
    );
}

#[test]
fn other_versions_decode_when_configured() {
    let codec = FrameCodec::new(
        CodecConfig::default()
            .with_accepted_versions([1, 7])
            .unwrap(),
    );
    let frame = frame_of(codec.decode(&mut raw_frame(7, &[])).unwrap());
    assert_eq!(frame.version, 7);
}

#[test]
fn length_over_the_limit_is_reported_before_the_body_arrives() {
    let codec = FrameCodec::new(CodecConfig::default().with_max_frame_length(100).unwrap());
    // Only the header of a frame announcing 101 bytes.
    let mut buf = BytesMut::from(&[PROTOCOL_VERSION as u8, 101][..]);
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::FrameTooLong {
            length: 101,
            max: 100
        })
    );
    assert_eq!(buf.len(), 2);
    // Exactly at the limit is fine.
    let mut header = BytesMut::from(&[PROTOCOL_VERSION as u8, 100][..]);
    assert_eq!(
        codec.decode(&mut header),
        Ok(Decoded::Incomplete {
            needed: 100 + CHECKSUM_LEN
        })
    );
}

#[test]
fn huge_announced_length_is_refused_without_allocating_for_it() {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[PROTOCOL_VERSION as u8][..]);
    prost::encoding::encode_varint(u64::MAX, &mut buf);
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::FrameTooLong {
            length: u64::MAX,
            max: crate::DEFAULT_MAX_FRAME_LENGTH
        })
    );
}

#[test]
fn version_varint_longer_than_ten_bytes_is_refused() {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[0xffu8; 10][..]);
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::VarintTooLong {
            field: HeaderField::Version
        })
    );
}

#[test]
fn length_varint_longer_than_ten_bytes_is_refused() {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[PROTOCOL_VERSION as u8][..]);
    buf.extend_from_slice(&[0x80; 10]);
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::VarintTooLong {
            field: HeaderField::Length
        })
    );
}

#[test]
fn ten_byte_varint_over_64_bits_is_an_overflow() {
    let codec = FrameCodec::default();
    let mut overflow = [0xffu8; 10];
    overflow[9] = 0x7f;
    assert_eq!(
        codec.decode(&mut BytesMut::from(&overflow[..])),
        Err(DecodeError::VarintOverflow {
            field: HeaderField::Version
        })
    );
    let mut buf = BytesMut::from(&[PROTOCOL_VERSION as u8][..]);
    buf.extend_from_slice(&overflow);
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::VarintOverflow {
            field: HeaderField::Length
        })
    );
}

#[test]
fn corrupted_byte_gives_checksum_mismatch_with_expected_and_actual() {
    let codec = FrameCodec::default();
    let mut buf = encode(&codec, &packet(b"payload"));
    let body_end = buf.len() - CHECKSUM_LEN;
    let expected = u32::from_le_bytes(buf[body_end..].try_into().unwrap());
    buf[body_end - 1] ^= 0x01;
    let actual = crc32fast::hash(&buf[..body_end]);
    assert_ne!(expected, actual);
    assert_eq!(
        codec.decode(&mut buf),
        Err(DecodeError::ChecksumMismatch { expected, actual })
    );
    assert!(buf.is_empty(), "the bad frame is consumed");
}

#[test]
fn corrupted_checksum_is_only_reported_once_the_frame_is_whole() {
    let codec = FrameCodec::default();
    let mut wire = encode(&codec, &ping(1));
    let last = wire.len() - 1;
    wire[last] ^= 0xff;
    let mut partial = BytesMut::from(&wire[..last]);
    assert_eq!(
        codec.decode(&mut partial),
        Ok(Decoded::Incomplete { needed: 1 })
    );
    assert!(matches!(
        codec.decode(&mut wire),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
}

#[test]
fn body_that_is_not_protobuf_gives_invalid_message_and_is_consumed() {
    let codec = FrameCodec::default();
    // Field 1 (head), wire type 2, announcing 5 bytes but holding 1.
    let mut buf = raw_frame(PROTOCOL_VERSION, &[0x0a, 0x05, 0x00]);
    buf.extend_from_slice(&encode(&codec, &ping(3)));
    assert!(matches!(
        codec.decode(&mut buf),
        Err(DecodeError::InvalidMessage(_))
    ));
    // The next frame is still there and decodes.
    assert_eq!(frame_of(codec.decode(&mut buf).unwrap()).message, ping(3));
}

#[test]
fn invalid_utf8_in_a_string_field_is_an_invalid_message() {
    let codec = FrameCodec::default();
    // head { source: "\xff" }
    let mut buf = raw_frame(PROTOCOL_VERSION, &[0x0a, 0x03, 0x0a, 0x01, 0xff]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(DecodeError::InvalidMessage(_))
    ));
}

fn any_message() -> impl Strategy<Value = FrameMessage> {
    prop_oneof![
        (any::<i64>(), any::<i64>()).prop_map(|(sequence, timepoint_microseconds)| FrameMessage {
            head: None,
            body: Some(Body::Pong(PingData {
                sequence,
                timepoint_microseconds
            })),
        }),
        (
            "[a-z0-9-]{0,20}",
            any::<i64>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..3000),
            any::<i32>()
        )
            .prop_map(|(source, stream_id, stream_offset, content, flags)| {
                FrameMessage {
                    head: Some(MessageHead {
                        source,
                        ..Default::default()
                    }),
                    body: Some(Body::Packet(PacketData {
                        stream_id,
                        stream_offset,
                        content: content.into(),
                        flags,
                        ..Default::default()
                    })),
                }
            }),
    ]
}

proptest! {
    #[test]
    fn any_messages_in_any_chunking_decode_to_the_same_messages(
        messages in proptest::collection::vec(any_message(), 1..6),
        chunk in 1usize..700,
    ) {
        let codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        for message in &messages {
            codec.encode(message, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Decoded::Frame(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame.message);
            }
        }
        prop_assert_eq!(decoded, messages);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_consume_more_than_given(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let codec = FrameCodec::new(CodecConfig::default().with_max_frame_length(150).unwrap());
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Decoded::Frame(frame)) => prop_assert_eq!(before - buf.len(), frame.wire_len),
                Ok(Decoded::Incomplete { needed }) => {
                    prop_assert!(needed > 0);
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => break,
            }
        }
    }
}
