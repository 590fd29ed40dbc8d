//! The golden vectors in `testdata/frames/`: each `NAME.frame` is the raw bytes of one whole
//! frame and `NAME.txt` its `frame_message` as `protoc --decode` prints it; packet vectors also have
//! `NAME.content.txt`, the `packet_content` their content holds.
//!
//! These tests prove, for every vector, that our encoder writes exactly its bytes, our decoder
//! reads exactly its message, protoc (an independent protobuf implementation) agrees with both
//! (it decodes the body to `NAME.txt` and encodes `NAME.txt` back to the body byte for byte, and
//! likewise for the content), and Python's `zlib.crc32` (an independent CRC-32) agrees with its
//! trailer.
//!
//! Regenerate the files after a deliberate change to a vector with
//! `ATBUS_BLESS_VECTORS=1 cargo test -p atbus-proto --test golden_vectors`, and review the diff.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{body_of, protoc};

use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AcknowledgeData, AtbusCloseReason, AtbusPacketFlagType, AtbusPacketFragmentFlagType,
    CloseReasonData, FrameMessage, MessageHead, PacketContent, PacketData, PacketOptions, PingData,
    StreamAcknowledge,
};
use atbus_proto::{CHECKSUM_LEN, Decoded, FrameCodec, PROTOCOL_VERSION};
use bytes::{Bytes, BytesMut};
use prost::Message;

/// A fixed clock reading, so the vectors never change.
const TIMEPOINT: i64 = 1_700_000_000_000_000;

/// The content length that makes `large_65000` exactly 65000 bytes on the wire.
const LARGE_DATA_LEN: usize = 64_947;

fn head(source: &str, destination: &str) -> Option<MessageHead> {
    Some(MessageHead {
        source: source.into(),
        destination: destination.into(),
        ..Default::default()
    })
}

fn packet(
    head: Option<MessageHead>,
    stream_id: i64,
    stream_offset: i64,
    flags: i32,
    content: &PacketContent,
) -> FrameMessage {
    FrameMessage {
        head,
        body: Some(Body::Packet(PacketData {
            stream_id,
            stream_offset,
            content: content.encode_to_vec().into(),
            flags,
            padding_size: 0,
            timepoint_microseconds: TIMEPOINT,
        })),
    }
}

/// A notice from relay-1 to node-a about frames for `destination` (stream -3): not stream data,
/// so no timepoint.
fn routing_notice(destination: &str, packet: PacketData) -> FrameMessage {
    FrameMessage {
        head: Some(MessageHead {
            source: "relay-1".into(),
            destination: "node-a".into(),
            forward_for_source: destination.into(),
            hop_count: 1,
            ..Default::default()
        }),
        body: Some(Body::Packet(packet)),
    }
}

fn fragment(data: &[u8], fragment_flag: i32) -> FragmentType {
    FragmentType {
        data: Bytes::copy_from_slice(data),
        fragment_flag,
        ..Default::default()
    }
}

/// Every vector: its file name and the message it holds.
fn vectors() -> Vec<(&'static str, FrameMessage)> {
    let has_more = AtbusPacketFragmentFlagType::HasMore as i32;
    let ping = PingData {
        sequence: 1,
        timepoint_microseconds: TIMEPOINT,
    };
    let labelled = FragmentType {
        packet_type: 101,
        data: Bytes::from_static(b"{\"op\":\"echo\",\"text\":\"hello from node-a\"}"),
        options: Some(PacketOptions {
            request_id: 7,
            ..Default::default()
        }),
        labels: [("app", "echo"), ("area.region", "eu-west")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        // Field 6 (forward_for) is not set: relays never fill it (docs/protocol.md 5.9).
        ..Default::default()
    };
    let closing = FragmentType {
        close_reason: Some(CloseReasonData {
            code: AtbusCloseReason::Shutdown as i32,
            message: "node-a is shutting down".into(),
        }),
        ..Default::default()
    };
    let large: Vec<u8> = b"0123456789abcdef"
        .iter()
        .copied()
        .cycle()
        .take(LARGE_DATA_LEN)
        .collect();
    vec![
        (
            "ping",
            FrameMessage {
                head: head("node-a", "node-b"),
                body: Some(Body::Ping(ping)),
            },
        ),
        (
            "pong",
            FrameMessage {
                head: head("node-b", "node-a"),
                body: Some(Body::Pong(ping)),
            },
        ),
        (
            "acknowledge",
            FrameMessage {
                head: head("node-b", "node-a"),
                body: Some(Body::Acknowledge(AcknowledgeData {
                    acknowledge: vec![
                        StreamAcknowledge {
                            stream_id: 1,
                            acknowledge_offset: 4096,
                            received_max_offset: 8192,
                            ..Default::default()
                        },
                        StreamAcknowledge {
                            stream_id: -1,
                            acknowledge_offset: 10,
                            received_max_offset: 10,
                            ..Default::default()
                        },
                    ],
                    timepoint_microseconds: TIMEPOINT,
                    ack_delay_microseconds: 250,
                })),
            },
        ),
        (
            "data_two_fragments",
            packet(
                head("node-a", "node-b"),
                1,
                0,
                0,
                &PacketContent {
                    fragment: vec![fragment(b"hello, ", has_more), fragment(b"world", 0)],
                },
            ),
        ),
        (
            "packet_labels_forward_for",
            packet(
                Some(MessageHead {
                    source: "relay-1".into(),
                    destination: "node-b".into(),
                    forward_for_source: "node-a".into(),
                    forward_for_connection_id: 42,
                    // The first relay counts itself.
                    hop_count: 1,
                    // node-a's instance a0 a1 a2 a3 …, and node-b's b0 b1 b2 b3 …
                    source_instance: u32::from_le_bytes([0xa0, 0xa1, 0xa2, 0xa3]),
                    destination_instance: u32::from_le_bytes([0xb0, 0xb1, 0xb2, 0xb3]),
                }),
                3,
                128,
                0,
                &PacketContent {
                    fragment: vec![labelled],
                },
            ),
        ),
        (
            "close_with_reason",
            packet(
                head("node-a", "node-b"),
                1,
                12,
                AtbusPacketFlagType::FinishStream as i32
                    | AtbusPacketFlagType::FinishConnection as i32,
                &PacketContent {
                    fragment: vec![closing],
                },
            ),
        ),
        (
            // The message "hello, world" (units 0–12) from offset 7: "world" with HAS_MORE,
            // then a fragment holding only the message's end, unit 12 (docs/protocol.md 5.3).
            "end_of_message_alone",
            packet(
                head("node-a", "node-b"),
                1,
                7,
                0,
                &PacketContent {
                    fragment: vec![fragment(b"world", has_more), fragment(b"", 0)],
                },
            ),
        ),
        (
            // A relay's routing notice (docs/protocol.md 5.9): no route to node-c.
            "no_route_notice",
            routing_notice(
                "node-c",
                PacketData {
                    stream_id: -3,
                    content: PacketContent {
                        fragment: vec![FragmentType {
                            close_reason: Some(CloseReasonData {
                                code: AtbusCloseReason::RouterNotFound as i32,
                                message: "relay relay-1 knows no route to node-c".into(),
                            }),
                            ..Default::default()
                        }],
                    }
                    .encode_to_vec()
                    .into(),
                    flags: AtbusPacketFlagType::FinishStream as i32,
                    ..Default::default()
                },
            ),
        ),
        (
            // A relay's routing notice: frames to node-b must fit 548 bytes once stamped.
            "frame_too_large_notice",
            routing_notice(
                "node-b",
                PacketData {
                    stream_id: -3,
                    stream_offset: 548,
                    ..Default::default()
                },
            ),
        ),
        ("empty_body", FrameMessage::default()),
        (
            "large_65000",
            packet(
                head("node-a", "node-b"),
                2,
                0,
                0,
                &PacketContent {
                    fragment: vec![fragment(&large, 0)],
                },
            ),
        ),
    ]
}

fn frames_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/frames")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; regenerate with ATBUS_BLESS_VECTORS=1",
            path.display()
        )
    })
}

fn blessing() -> bool {
    std::env::var_os("ATBUS_BLESS_VECTORS").is_some()
}

fn content_of(message: &FrameMessage) -> Option<&Bytes> {
    match &message.body {
        Some(Body::Packet(packet)) => Some(&packet.content),
        _ => None,
    }
}

fn decode_one(codec: &FrameCodec, bytes: &[u8]) -> FrameMessage {
    let mut buf = BytesMut::from(bytes);
    match codec.decode(&mut buf) {
        Ok(Decoded::Frame(frame)) => {
            assert!(buf.is_empty(), "one frame per vector");
            assert_eq!(frame.wire_len, bytes.len());
            assert_eq!(frame.version, PROTOCOL_VERSION);
            frame.message
        }
        other => panic!("vector does not decode: {other:?}"),
    }
}

#[test]
fn every_vector_encodes_to_its_bytes_and_decodes_to_its_message() {
    let codec = FrameCodec::default();
    let dir = frames_dir();
    let vectors = vectors();
    assert!(vectors.len() >= 11);
    for (name, message) in vectors {
        let mut encoded = BytesMut::new();
        codec.encode(&message, &mut encoded).expect("encode");
        let frame_path = dir.join(format!("{name}.frame"));
        if blessing() {
            std::fs::create_dir_all(&dir).expect("create testdata/frames");
            std::fs::write(&frame_path, &encoded).expect("write .frame");
            let text = protoc(
                &["--decode=atbus.protocol.frame_message"],
                body_of(&encoded),
            );
            std::fs::write(dir.join(format!("{name}.txt")), text).expect("write .txt");
            if let Some(content) = content_of(&message) {
                let text = protoc(&["--decode=atbus.protocol.packet_content"], content);
                std::fs::write(dir.join(format!("{name}.content.txt")), text).expect("write");
            }
        }
        let on_disk = read(&frame_path);
        assert!(
            encoded[..] == on_disk[..],
            "{name}: encoder output differs from {name}.frame"
        );
        assert_eq!(
            decode_one(&codec, &on_disk),
            message,
            "{name}: decoded message"
        );
    }
}

#[test]
fn protoc_decodes_every_vector_to_its_txt_and_encodes_the_txt_back() {
    let codec = FrameCodec::default();
    let dir = frames_dir();
    for (name, _) in vectors() {
        let frame = read(&dir.join(format!("{name}.frame")));
        let body = body_of(&frame);
        let txt = read(&dir.join(format!("{name}.txt")));
        let decoded = protoc(&["--decode=atbus.protocol.frame_message"], body);
        assert!(
            decoded == txt,
            "{name}: protoc --decode prints\n{}\nbut {name}.txt holds\n{}",
            String::from_utf8_lossy(&decoded),
            String::from_utf8_lossy(&txt)
        );
        // protoc's own encoding of the text is the vector's body, byte for byte, and decodes,
        // with our types, to the vector's message.
        let reencoded = protoc(&["--encode=atbus.protocol.frame_message"], &txt);
        assert!(
            reencoded == body,
            "{name}: protoc --encode of {name}.txt differs from the body of {name}.frame"
        );
        let ours = decode_one(&codec, &frame);
        assert_eq!(
            FrameMessage::decode(&reencoded[..]).expect("protoc's bytes decode"),
            ours,
            "{name}: protoc --encode of {name}.txt"
        );
        let content_path = dir.join(format!("{name}.content.txt"));
        match content_of(&ours) {
            Some(content) => {
                let expected = read(&content_path);
                let printed = protoc(&["--decode=atbus.protocol.packet_content"], content);
                assert!(
                    printed == expected,
                    "{name}: content decodes to\n{}",
                    String::from_utf8_lossy(&printed)
                );
                let reencoded = protoc(&["--encode=atbus.protocol.packet_content"], &expected);
                assert!(
                    reencoded[..] == content[..],
                    "{name}: protoc --encode of {name}.content.txt differs from the content"
                );
            }
            None => assert!(!content_path.exists(), "{name}: stray .content.txt"),
        }
    }
}

#[test]
fn python_zlib_crc32_matches_every_vector_trailer() {
    let dir = frames_dir();
    let names: Vec<&str> = vectors().into_iter().map(|(name, _)| name).collect();
    let script = "import sys, zlib\n\
        for path in sys.argv[1:]:\n\
        \x20   data = open(path, 'rb').read()\n\
        \x20   ok = zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], 'little')\n\
        \x20   print(path.rsplit('/', 1)[-1], 'ok' if ok else 'MISMATCH')\n";
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(names.iter().map(|name| dir.join(format!("{name}.frame"))))
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run python3: {err}; install python3 (scripts/test does)")
        });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: String = names
        .iter()
        .map(|name| format!("{name}.frame ok\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn vectors_cover_the_required_shapes() {
    let sizes: Vec<(&str, usize)> = vectors()
        .iter()
        .map(|(name, message)| (*name, FrameCodec::default().encoded_len(message)))
        .collect();
    assert!(sizes.contains(&("large_65000", 65_000)), "{sizes:?}");
    assert!(
        sizes.contains(&("empty_body", 1 + 1 + CHECKSUM_LEN)),
        "{sizes:?}"
    );
}
