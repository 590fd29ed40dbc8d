//! Regression tests for engine bugs the `engine_input` fuzzer found. The comment above each test
//! describes the bug as it was; the test asserts the fixed behaviour.
use std::time::Instant;

use atbus_core::engine::{
    CloseCode, CloseReason, ConnectOptions, ConnectionId, ConnectionParams, Credential, Endpoint,
    EngineConfig, Event, ForwardOverflow, MessageMeta, Token,
};
use atbus_core::sim::BackToBack;
use atbus_proto::FrameCodec;
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusCloseReason, AtbusPacketFlagType, CloseReasonData, FrameMessage, MessageHead,
    PacketContent, PacketData,
};
use bytes::{Bytes, BytesMut};
use prost::Message;

fn config() -> EngineConfig {
    EngineConfig {
        max_message_size: 64 * 1024,
        stream_send_window: 16 * 1024,
        peer_send_window: 32 * 1024,
        peer_receive_budget: 256 * 1024,
        stream_receive_window: 96 * 1024,
        initial_window: 32 * 1024,
        max_streams_per_peer: 16,
        ..EngineConfig::default()
    }
}

fn packet(offset: i64, data: Bytes, has_more: bool) -> Bytes {
    let content = PacketContent {
        fragment: vec![FragmentType {
            data,
            fragment_flag: i32::from(has_more),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let frame = FrameMessage {
        head: Some(MessageHead {
            source: "a".into(),
            destination: "b".into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: 1,
            stream_offset: offset,
            content: content.into(),
            ..Default::default()
        })),
    };
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(&frame, &mut wire).unwrap();
    wire.freeze()
}

/// (Fixed in fc9434f.) A peer sends one message of 70 000 bytes in two fragments; max_message_size
/// is 64 KiB.
#[test]
fn a_message_over_max_message_size_is_not_delivered() {
    let now = Instant::now();
    let mut b = Endpoint::new("b", config(), now);
    let conn = b
        .add_connection(now, "a", ConnectionParams::stream())
        .unwrap();
    b.handle_input(now, conn, packet(0, Bytes::from(vec![1; 40_000]), true));
    b.handle_input(
        now,
        conn,
        packet(40_000, Bytes::from(vec![2; 30_000]), false),
    );
    // Fixed in fc9434f: the oversized message is dropped on read.
    if let Some(message) = b.read("a", 1) {
        assert!(
            message.data.len() <= b.config().max_message_size,
            "read a message of {} bytes, max_message_size is {}",
            message.data.len(),
            b.config().max_message_size
        );
    }
}

/// `finish` with a close reason whose message is long: the FINISH packet's fragment carries the
/// reason, which `push_data` does not count, so the packet goes over the connection's MTU.
#[test]
fn a_finish_reason_is_counted_against_the_mtu() {
    let now = Instant::now();
    let mut b = Endpoint::new("b", config(), now);
    let mtu = 548;
    b.add_connection(now, "a", ConnectionParams::datagram_ipv4())
        .unwrap();
    while b.poll_transmit(now).is_some() {} // the first ping
    b.send("a", 0, Bytes::from_static(b"hello"), MessageMeta::default())
        .unwrap();
    let reason = CloseReason::shutdown("x".repeat(1000));
    b.finish("a", 0, reason).unwrap();
    while let Some(transmit) = b.poll_transmit(now) {
        assert!(
            transmit.data.len() <= mtu,
            "a datagram of {} bytes on a connection of MTU {mtu}",
            transmit.data.len()
        );
    }
}

/// (Fixed in 591a163.) A packet arrives (an acknowledgement is now due within max_ack_delay), then the peer's only
/// connection is lost before it goes out. The ack deadline stays set with no connection to send
/// on: poll_timeout returns that instant, in the past, forever, and handle_timeout changes
/// nothing, so a runtime that sleeps until poll_timeout spins until a connection comes back.
#[test]
fn no_ack_deadline_outlives_the_last_connection() {
    let now = Instant::now();
    let mut b = Endpoint::new("b", config(), now);
    let conn = b
        .add_connection(now, "a", ConnectionParams::datagram_ipv6())
        .unwrap();
    while b.poll_transmit(now).is_some() {}
    b.handle_input(now, conn, packet(0, Bytes::from_static(b"hi"), false));
    b.connection_lost(now, conn);
    let later = now + std::time::Duration::from_secs(1);
    for _ in 0..3 {
        b.handle_timeout(later);
        while b.poll_transmit(later).is_some() {}
    }
    let due = b.poll_timeout();
    assert!(
        due.is_none_or(|at| at > later),
        "poll_timeout is {:?} before now after handle_timeout",
        due.map(|at| later - at)
    );
}

/// The latest packet from the peer came on a connection with the smallest MTU allowed (128), and
/// the stream has many gaps: the acknowledgement, with its received ranges (up to
/// max_ack_ranges = 16), does not fit the MTU. push_ack drops the whole entry instead of
/// reporting fewer ranges, so no acknowledgement ever goes out, the stream stays in ack_pending,
/// and the ack deadline stays due: poll_timeout is in the past forever and handle_timeout changes
/// nothing (a runtime spins, and the peer never gets an acknowledgement on that connection).
#[test]
fn an_acknowledgement_sheds_ranges_to_fit_a_small_mtu() {
    let now = Instant::now();
    let mut b = Endpoint::new("b", config(), now);
    let params = ConnectionParams::datagram_ipv4().with_mtu(128);
    let conn = b.add_connection(now, "a", params).unwrap();
    while b.poll_transmit(now).is_some() {}
    // 20 one-byte messages with a gap before each: 20 received ranges above offset 0.
    for i in 0..20 {
        b.handle_input(
            now,
            conn,
            packet(20_000 + 4 * i, Bytes::from_static(b"x"), false),
        );
    }
    let later = now + std::time::Duration::from_millis(10);
    let mut acks = 0;
    for _ in 0..3 {
        b.handle_timeout(later);
        while let Some(transmit) = b.poll_transmit(later) {
            let mut data = transmit.data;
            while let Ok(atbus_proto::Decoded::Frame(frame)) =
                FrameCodec::default().decode_bytes(&mut data)
            {
                acks += usize::from(matches!(frame.message.body, Some(Body::Acknowledge(_))));
            }
        }
    }
    let due = b.poll_timeout();
    assert!(
        acks > 0 && due.is_none_or(|at| at > later),
        "{acks} acknowledgements sent; poll_timeout is {:?} before now",
        due.map(|at| later - at)
    );
}

fn ack_from_a(stream_id: i64, acknowledged: i64, window: i64) -> Bytes {
    use atbus_proto::protocol::{AcknowledgeData, StreamAcknowledge};
    let frame = FrameMessage {
        head: Some(MessageHead {
            source: "a".into(),
            destination: "b".into(),
            ..Default::default()
        }),
        body: Some(Body::Acknowledge(AcknowledgeData {
            acknowledge: vec![StreamAcknowledge {
                stream_id,
                acknowledge_offset: acknowledged,
                received_max_offset: acknowledged,
                received_ranges: vec![],
                window_offset: window,
            }],
            ..Default::default()
        })),
    };
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(&frame, &mut wire).unwrap();
    wire.freeze()
}

/// Packet frames of every transmit until none is left: (stream id, flags, content length).
fn drain(b: &mut Endpoint, now: Instant, mtu: usize) -> Vec<(i64, i32, usize)> {
    let mut packets = Vec::new();
    while let Some(transmit) = b.poll_transmit(now) {
        assert!(
            transmit.data.len() <= mtu,
            "a datagram of {} bytes on a connection of MTU {mtu}",
            transmit.data.len()
        );
        let mut data = transmit.data;
        while let Ok(atbus_proto::Decoded::Frame(frame)) =
            FrameCodec::default().decode_bytes(&mut data)
        {
            if let Some(Body::Packet(packet)) = frame.message.body {
                packets.push((packet.stream_id, packet.flags, packet.content.len()));
            }
        }
    }
    packets
}

/// push_data counts the RESET_OFFSET frame of a stream against the MTU but not its window probe
/// (the empty packet of a stream blocked on the peer's window with nothing in flight): the next
/// stream's data packet is cut as if the probe were not there, and the transmit goes over the MTU.
#[test]
fn a_window_probe_is_counted_against_the_mtu() {
    let t0 = Instant::now();
    let config = EngineConfig {
        message_timeout: Some(std::time::Duration::from_millis(50)),
        ..EngineConfig::default()
    };
    let mtu = 1232;
    let mut b = Endpoint::new("b", config, t0);
    let conn = b
        .add_connection(t0, "a", ConnectionParams::datagram_ipv6())
        .unwrap();
    drain(&mut b, t0, mtu);
    // Stream 1: a message of 3000 bytes (units 0..3001) goes out; the peer announces a window
    // of 3001, so the end of the stream (unit 3001) cannot follow.
    b.send("a", 1, Bytes::from(vec![7; 3000]), MessageMeta::default())
        .unwrap();
    drain(&mut b, t0, mtu);
    b.handle_input(t0, conn, ack_from_a(1, 0, 3001));
    b.finish("a", 1, CloseReason::new(CloseCode::Unknown, ""))
        .unwrap();
    // The message expires unacknowledged: RESET_OFFSET to 3001 goes out, and the stream is now
    // blocked on the window with nothing in flight.
    let t1 = t0 + std::time::Duration::from_millis(60);
    b.handle_timeout(t1);
    drain(&mut b, t1, mtu);
    // Long after: stream 1's RESET_OFFSET and window probe are due again, and stream 3 has data.
    let t2 = t1 + std::time::Duration::from_secs(11);
    b.handle_timeout(t2);
    b.send("a", 3, Bytes::from(vec![9; 5000]), MessageMeta::default())
        .unwrap();
    drain(&mut b, t2, mtu);
}

/// A stream whose flights are all acknowledged while it waits for the peer's window never arms
/// its window probe: the probe timer is only started in push_data, which only visits streams with
/// something to send. If the peer's window update is lost, the stream waits forever.
#[test]
fn a_stream_blocked_by_the_window_sends_probes() {
    let t0 = Instant::now();
    let mtu = 1232;
    let mut b = Endpoint::new("b", EngineConfig::default(), t0);
    let conn = b
        .add_connection(t0, "a", ConnectionParams::datagram_ipv6())
        .unwrap();
    drain(&mut b, t0, mtu);
    b.send("a", 1, Bytes::from(vec![7; 3000]), MessageMeta::default())
        .unwrap();
    drain(&mut b, t0, mtu);
    // Everything acknowledged, window at 3001: the next message cannot go.
    b.handle_input(t0, conn, ack_from_a(1, 3001, 3001));
    b.send("a", 1, Bytes::from(vec![8; 100]), MessageMeta::default())
        .unwrap();
    let mut probes = 0;
    for second in 1..=25 {
        let now = t0 + std::time::Duration::from_secs(second);
        // Keep the connection alive: the peer answers every ping.
        b.handle_input(now, conn, ack_from_a(99, 0, 0));
        b.handle_timeout(now);
        probes += drain(&mut b, now, mtu)
            .iter()
            .filter(|(stream_id, _, _)| *stream_id == 1)
            .count();
    }
    assert!(probes > 0, "no window probe on stream 1 in 25 s");
}

/// On a stream connection with a 64 KiB MTU, a data packet that starts at a RESET_OFFSET point
/// (flags = RESET_OFFSET) goes one byte over the MTU: push_data's size estimate relies on the 2
/// bytes it reserves for the flags field being spare (flags 0 is not encoded), and they are not
/// when the packet carries a flag; at this size the length varints have grown by more than
/// VARINT_SLACK allows.
#[test]
fn a_data_packet_at_a_reset_point_fits_a_64k_mtu() {
    let t0 = Instant::now();
    let config = EngineConfig {
        message_timeout: Some(std::time::Duration::from_millis(1)),
        ..EngineConfig::default()
    };
    let mtu = 64 * 1024;
    let mut b = Endpoint::new("b", config, t0);
    b.add_connection(t0, "a", ConnectionParams::stream())
        .unwrap();
    drain(&mut b, t0, mtu);
    b.send("a", 0, Bytes::from(vec![7; 19]), MessageMeta::default())
        .unwrap();
    drain(&mut b, t0, mtu);
    // The message expires: the stream resets to offset 20.
    let t1 = t0 + std::time::Duration::from_millis(2);
    b.handle_timeout(t1);
    drain(&mut b, t1, mtu);
    // The next message starts at the reset point, in a packet flagged RESET_OFFSET.
    b.send(
        "a",
        0,
        Bytes::from(vec![8; 64 * 1024]),
        MessageMeta::default(),
    )
    .unwrap();
    drain(&mut b, t1, mtu);
}

/// Opens a connection of `b` to a relay named "r" with a real handshake (a token), over `params`:
/// b's side of it then says the peer is a relay. Returns its id at b.
fn connect_to_relay(b: &mut Endpoint, now: Instant, params: ConnectionParams) -> ConnectionId {
    let token = Token::new("fuzz regressions: a relay's token").unwrap();
    let mut config = EngineConfig::default();
    config.auth.tokens = vec![token.clone()];
    config.auth.relay = true;
    let mut relay = Endpoint::new("r", config, now);
    let options = ConnectOptions {
        early_data: false,
        ..ConnectOptions::new("r", Credential::Token(token))
    };
    let link = BackToBack::connect(now, b, &mut relay, params, options).unwrap();
    assert!(
        link.exchange(now, b, &mut relay, 64),
        "the handshake goes quiet"
    );
    let id = link.a;
    assert!(b.peer_identity(id).is_some_and(|identity| identity.relay));
    id
}

/// A frame the relay "r" sends b, speaking for `originator`.
fn from_relay(originator: &str, body: Body) -> Bytes {
    let frame = FrameMessage {
        head: Some(MessageHead {
            source: "r".into(),
            destination: "b".into(),
            forward_for_source: originator.into(),
            hop_count: 1,
            ..Default::default()
        }),
        body: Some(body),
    };
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(&frame, &mut wire).unwrap();
    wire.freeze()
}

/// b reaches "x" through the relay "r" over a datagram connection; what it sends x is in flight
/// on r's connection, in its congestion window. r answers that it knows no route to x
/// (ROUTER_NOT_FOUND on stream -3): b dropped everything queued to x, flights included, without
/// telling the connection's congestion control, so those units stayed in flight on r's
/// connection for ever. Each such notice shrank what the connection could carry, until it sent
/// no new data at all.
#[test]
fn flights_dropped_for_an_unroutable_peer_leave_the_congestion_window() {
    let now = Instant::now();
    let mut b = Endpoint::new("b", config(), now);
    let conn = connect_to_relay(&mut b, now, ConnectionParams::datagram_ipv6());
    for _ in 0..4 {
        b.send("x", 1, Bytes::from(vec![7; 4000]), MessageMeta::default())
            .unwrap();
    }
    while b.poll_transmit(now).is_some() {}
    let (_, in_flight) = b.congestion_window(conn).unwrap();
    assert!(in_flight > 0, "b sent x data through r");

    let notice = PacketData {
        stream_id: -3,
        content: PacketContent {
            fragment: vec![FragmentType {
                close_reason: Some(CloseReasonData {
                    code: AtbusCloseReason::RouterNotFound as i32,
                    message: "no route to x".into(),
                }),
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into(),
        flags: AtbusPacketFlagType::FinishStream as i32,
        ..Default::default()
    };
    b.handle_input(now, conn, from_relay("x", Body::Packet(notice)));
    assert!(
        std::iter::from_fn(|| b.poll_event())
            .any(|event| matches!(event, Event::Unroutable { ref peer, .. } if peer == "x"))
    );
    assert_eq!(b.unacknowledged(), 0, "what was queued to x is dropped");
    assert_eq!(
        b.congestion_window(conn).unwrap().1,
        0,
        "and no longer in flight on r's connection"
    );
}

/// A frame from "a" for "c", through the relay `b`, with `len` bytes of data.
fn for_c(len: usize) -> Bytes {
    let content = PacketContent {
        fragment: vec![FragmentType {
            data: Bytes::from(vec![3; len]),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let frame = FrameMessage {
        head: Some(MessageHead {
            source: "a".into(),
            destination: "c".into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: 1,
            content: content.into(),
            ..Default::default()
        })),
    };
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(&frame, &mut wire).unwrap();
    wire.freeze()
}

/// A relay with `forward_overflow: drop_oldest` gets a frame larger than its whole
/// `forward_queue_limit`: it dropped every frame queued for that connection to make room, and
/// then queued the large frame anyway, over the limit. The large frame is dropped instead, and
/// the queue keeps what it had.
#[test]
fn drop_oldest_never_holds_more_than_the_forward_queue_limit() {
    let now = Instant::now();
    let mut config = config();
    config.auth.relay = true;
    config.forward_queue_limit = 1000;
    config.forward_overflow = ForwardOverflow::DropOldest;
    let mut b = Endpoint::new("b", config, now);
    let from_a = b
        .add_connection(now, "a", ConnectionParams::stream())
        .unwrap();
    let to_c = b
        .add_connection(now, "c", ConnectionParams::stream())
        .unwrap();
    while b.poll_transmit(now).is_some() {}
    b.handle_input(now, from_a, for_c(400));
    b.handle_input(now, from_a, for_c(1200));
    let forwarded: usize = std::iter::from_fn(|| b.poll_transmit(now))
        .filter(|transmit| transmit.connection == to_c)
        .map(|transmit| transmit.data.len())
        .sum();
    assert!(
        forwarded <= 1000,
        "{forwarded} bytes forwarded at once, over the limit of 1000"
    );
    assert!(forwarded > 400, "the small frame went out");
    assert_eq!(b.stats().forward_dropped.get("queue_full"), Some(&1));
}

/// A pong that echoes the sequence of our ping but a forged timepoint far below ours
/// (`i64::MIN`): the round-trip sample was computed as `now - timepoint` and overflowed (a panic
/// in debug builds, a wild sample in release). Input: `fuzz/regressions/engine_input/
/// pong-with-a-forged-timepoint`.
#[test]
fn a_pong_with_a_forged_timepoint_is_ignored() {
    let now = Instant::now();
    let mut b = Endpoint::new("b", config(), now);
    let conn = b
        .add_connection(now, "a", ConnectionParams::stream())
        .unwrap();
    while b.poll_transmit(now).is_some() {} // the first ping: sequence 1
    for timepoint in [i64::MIN, -1, 0, i64::MAX] {
        let pong = FrameMessage {
            head: Some(MessageHead {
                source: "a".into(),
                destination: "b".into(),
                ..Default::default()
            }),
            body: Some(Body::Pong(atbus_proto::protocol::PingData {
                sequence: 1,
                timepoint_microseconds: timepoint,
            })),
        };
        let mut wire = BytesMut::new();
        FrameCodec::default().encode(&pong, &mut wire).unwrap();
        b.handle_input(now, conn, wire.freeze());
    }
    assert_eq!(b.rtt(conn), None, "no round-trip sample from a forged pong");
}
