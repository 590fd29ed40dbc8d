//! Structured frames through the codec: arbitrary `FrameMessage`s, encoded and decoded again.
//!
//! Proves that every message the builder below can make survives a frame. The builder covers
//! every message type and field: the head, each body (ping, pong, packet, acknowledge), and a
//! packet whose content is an encoded `packet_content` (fragments with options, custom options,
//! labels, forward_for and close_reason), possibly followed by cipher padding. For an arbitrary
//! version and limit the decoded message and version equal what was encoded, `wire_len` equals
//! `encoded_len` and what `encode` wrote, `decode` and `decode_bytes` agree, a proper prefix of
//! the frame is `Incomplete` asking for at most the missing bytes (exactly those once the header
//! is in), and the content decodes back to the same `PacketContent`. A message over the limit is
//! refused by the encoder with nothing written.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AcknowledgeData, CloseReasonData, ForwardData, FrameMessage, MessageHead, OffsetRange,
    PacketContent, PacketData, PacketOptions, PingData, StreamAcknowledge, frame_message::Body,
};
use atbus_proto::{
    CodecConfig, DEFAULT_MAX_FRAME_LENGTH, Decoded, EncodeError, FrameCodec, PROTOCOL_VERSION,
};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// An `i64`, often one of the edge values.
fn int64(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&[
            0,
            1,
            -1,
            i64::MIN,
            i64::MAX,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            i64::from(u32::MAX),
        ])?,
        1 => i64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

/// An `i32`, often one of the edge values or an enum value of the protocol.
fn int32(u: &mut Unstructured) -> Result<i32> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&[0, 1, 2, 4, 8, 100, 101, -1, i32::MIN, i32::MAX])?,
        1 => i32::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

fn string(u: &mut Unstructured) -> Result<String> {
    u.arbitrary()
}

fn bytes(u: &mut Unstructured) -> Result<Bytes> {
    Ok(Bytes::from(u.arbitrary::<Vec<u8>>()?))
}

/// Up to `max` items from `item`.
fn some<T>(
    u: &mut Unstructured,
    max: usize,
    mut item: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| item(u)).collect()
}

fn head(u: &mut Unstructured) -> Result<MessageHead> {
    Ok(MessageHead {
        source: string(u)?,
        destination: string(u)?,
        forward_for_source: string(u)?,
        forward_for_connection_id: int64(u)?,
        hop_count: u.arbitrary()?,
        source_instance: u.arbitrary()?,
        destination_instance: u.arbitrary()?,
    })
}

fn ping(u: &mut Unstructured) -> Result<PingData> {
    Ok(PingData {
        sequence: int64(u)?,
        timepoint_microseconds: int64(u)?,
    })
}

fn acknowledge(u: &mut Unstructured) -> Result<AcknowledgeData> {
    Ok(AcknowledgeData {
        acknowledge: some(u, 6, |u| {
            Ok(StreamAcknowledge {
                stream_id: int64(u)?,
                acknowledge_offset: int64(u)?,
                received_max_offset: int64(u)?,
                received_ranges: some(u, 4, |u| {
                    Ok(OffsetRange {
                        start: int64(u)?,
                        end: int64(u)?,
                    })
                })?,
                window_offset: int64(u)?,
            })
        })?,
        timepoint_microseconds: int64(u)?,
        ack_delay_microseconds: int64(u)?,
    })
}

fn options(u: &mut Unstructured) -> Result<PacketOptions> {
    Ok(PacketOptions {
        request_id: int64(u)?,
        reply_to: int64(u)?,
        custom: some(u, 4, |u| Ok((string(u)?, bytes(u)?)))?
            .into_iter()
            .collect(),
    })
}

fn forward_for(u: &mut Unstructured) -> Result<ForwardData> {
    Ok(ForwardData {
        source: string(u)?,
        scheme: u.choose(&["", "tcp", "udp", "quic", "unix"])?.to_string(),
        address: string(u)?,
        port: int32(u)?,
        connection_id: int64(u)?,
    })
}

fn close_reason(u: &mut Unstructured) -> Result<CloseReasonData> {
    // Any i32: codes this version does not know must survive too.
    Ok(CloseReasonData {
        code: int32(u)?,
        message: string(u)?,
    })
}

fn fragment(u: &mut Unstructured) -> Result<FragmentType> {
    let labels: BTreeMap<String, String> = some(u, 4, |u| Ok((string(u)?, string(u)?)))?
        .into_iter()
        .collect();
    Ok(FragmentType {
        packet_type: int32(u)?,
        data: bytes(u)?,
        fragment_flag: int32(u)?,
        options: if u.arbitrary()? {
            Some(options(u)?)
        } else {
            None
        },
        labels,
        forward_for: if u.arbitrary()? {
            Some(forward_for(u)?)
        } else {
            None
        },
        close_reason: if u.arbitrary()? {
            Some(close_reason(u)?)
        } else {
            None
        },
    })
}

fn packet_content(u: &mut Unstructured) -> Result<PacketContent> {
    Ok(PacketContent {
        fragment: some(u, 4, fragment)?,
    })
}

/// A packet, and the `packet_content` encoded in it with its padding, when there is one.
fn packet(u: &mut Unstructured) -> Result<(PacketData, Option<PacketContent>)> {
    let stream_id = int64(u)?;
    let stream_offset = int64(u)?;
    let (content, padding_size, inner) = if u.ratio(3, 4)? {
        let inner = packet_content(u)?;
        let mut content = inner.encode_to_vec();
        let padding = u.int_in_range(0..=15u8)?;
        content.extend((0..padding).map(|_| 0xa5));
        (Bytes::from(content), i32::from(padding), Some(inner))
    } else {
        // Opaque (encrypted, say) content with any padding size.
        (bytes(u)?, int32(u)?, None)
    };
    let data = PacketData {
        stream_id,
        stream_offset,
        content,
        flags: int32(u)?,
        padding_size,
        timepoint_microseconds: int64(u)?,
    };
    Ok((data, inner))
}

/// One round trip to run.
#[derive(Debug)]
struct Case {
    version: u64,
    max_frame_length: usize,
    message: FrameMessage,
    content: Option<PacketContent>,
    /// Where to cut the frame for the prefix check.
    cut: u16,
}

impl Case {
    fn build(u: &mut Unstructured) -> Result<Self> {
        let version = if u.ratio(1, 4)? {
            u.arbitrary()?
        } else {
            PROTOCOL_VERSION
        };
        let max_frame_length = if u.ratio(1, 8)? {
            u.int_in_range(0..=512)?
        } else {
            DEFAULT_MAX_FRAME_LENGTH
        };
        let head = if u.ratio(7, 8)? { Some(head(u)?) } else { None };
        let mut content = None;
        let body = match u.int_in_range(0..=4u8)? {
            0 => None,
            1 => Some(Body::Ping(ping(u)?)),
            2 => Some(Body::Pong(ping(u)?)),
            3 => {
                let (data, inner) = packet(u)?;
                content = inner;
                Some(Body::Packet(data))
            }
            _ => Some(Body::Acknowledge(acknowledge(u)?)),
        };
        Ok(Self {
            version,
            max_frame_length,
            message: FrameMessage { head, body },
            content,
            cut: u.arbitrary()?,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = Case::build(&mut Unstructured::new(data)) else {
        return;
    };
    let config = CodecConfig::default()
        .with_version(case.version)
        .with_accepted_versions([case.version])
        .and_then(|config| config.with_max_frame_length(case.max_frame_length))
        .expect("valid configuration");
    let codec = FrameCodec::new(config);
    let message = &case.message;

    let mut wire = BytesMut::new();
    let written = match codec.encode(message, &mut wire) {
        Ok(written) => written,
        Err(EncodeError::FrameTooLong { length, max }) => {
            assert_eq!(length, message.encoded_len());
            assert_eq!(max, case.max_frame_length);
            assert!(length > max);
            assert!(wire.is_empty(), "a refused frame writes nothing");
            return;
        }
    };
    assert!(message.encoded_len() <= case.max_frame_length);
    assert_eq!(written, wire.len());
    assert_eq!(written, codec.encoded_len(message));
    let encoded = wire.clone().freeze();

    // A proper prefix is incomplete, consumes nothing and asks for no more than is missing.
    let cut = usize::from(case.cut) % written;
    let mut prefix = BytesMut::from(&encoded[..cut]);
    match codec.decode(&mut prefix) {
        Ok(Decoded::Incomplete { needed }) => {
            assert!(needed > 0);
            assert!(cut + needed <= written, "asked for more than the frame");
            let header_len = written - message.encoded_len() - atbus_proto::CHECKSUM_LEN;
            if cut >= header_len {
                assert_eq!(cut + needed, written, "inexact `needed` after the header");
            }
            assert_eq!(prefix.len(), cut, "Incomplete consumed bytes");
        }
        other => panic!("a {cut}-byte prefix of a {written}-byte frame gave {other:?}"),
    }

    let frame = match codec.decode(&mut wire) {
        Ok(Decoded::Frame(frame)) => frame,
        other => panic!("an encoded frame does not decode: {other:?}"),
    };
    assert!(wire.is_empty(), "the frame left bytes behind");
    assert_eq!(&frame.message, message);
    assert_eq!(frame.version, case.version);
    assert_eq!(frame.wire_len, written);

    let mut datagram = encoded.clone();
    match codec.decode_bytes(&mut datagram) {
        Ok(Decoded::Frame(same)) => assert_eq!(same, frame, "decode_bytes disagrees"),
        other => panic!("decode_bytes does not decode the frame: {other:?}"),
    }
    assert!(datagram.is_empty());

    if let Some(expected) = &case.content {
        let Some(Body::Packet(packet)) = &frame.message.body else {
            panic!("the packet is gone");
        };
        let padding = usize::try_from(packet.padding_size).expect("padding we added");
        let content = packet.content.slice(..packet.content.len() - padding);
        let decoded = PacketContent::decode(content).expect("packet_content decodes");
        assert_eq!(&decoded, expected);
    }
});
