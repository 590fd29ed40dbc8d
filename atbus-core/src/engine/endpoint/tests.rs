//! Unit tests of the endpoint, on two endpoints wired back to back by a tiny in-test link.
//! (Loss, jitter and many seeds are the simulation test's business: `tests/simulation.rs`.)

use std::time::Duration;

use atbus_proto::protocol::{FrameMessage, MessageHead, PingData};

use super::*;
use crate::engine::close::{CloseCode, CloseReason};
use crate::engine::config::ConnectionKind;
use crate::engine::stream_id::StreamId;
use crate::engine::transmit::Transmit;

const MS: Duration = Duration::from_millis(1);

/// Two endpoints, "a" and "b", and the connections between them.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    /// (id at a, id at b, delivering)
    links: Vec<(ConnectionId, ConnectionId, bool)>,
    /// Bytes put on the wire in each direction.
    wire_bytes: usize,
    largest_transmit: usize,
}

impl Pair {
    fn new(config: EngineConfig) -> Self {
        let now = Instant::now();
        Self {
            a: Endpoint::new("a", config.clone(), now),
            b: Endpoint::new("b", config, now),
            now,
            links: Vec::new(),
            wire_bytes: 0,
            largest_transmit: 0,
        }
    }

    fn connect(&mut self, params: ConnectionParams) -> usize {
        let at_a = self.a.add_connection(self.now, "b", params).unwrap();
        let at_b = self.b.add_connection(self.now, "a", params).unwrap();
        self.links.push((at_a, at_b, true));
        self.links.len() - 1
    }

    /// Moves every transmit across (1 ms later), fires due timers, until nothing moves or
    /// `limit` of simulated time has passed. `keep` decides which transmits are delivered.
    fn pump_with(&mut self, limit: Duration, mut keep: impl FnMut(&Transmit) -> bool) {
        let deadline = self.now + limit;
        while self.now < deadline {
            let mut moved = false;
            for from_a in [true, false] {
                loop {
                    let (sender, receiver) = if from_a {
                        (&mut self.a, &mut self.b)
                    } else {
                        (&mut self.b, &mut self.a)
                    };
                    let Some(transmit) = sender.poll_transmit(self.now) else {
                        break;
                    };
                    moved = true;
                    self.wire_bytes += transmit.data.len();
                    self.largest_transmit = self.largest_transmit.max(transmit.data.len());
                    let link = self.links.iter().find(|(at_a, at_b, _)| {
                        transmit.connection == if from_a { *at_a } else { *at_b }
                    });
                    let Some(&(at_a, at_b, delivering)) = link else {
                        continue;
                    };
                    if delivering && keep(&transmit) {
                        let to = if from_a { at_b } else { at_a };
                        receiver.handle_input(self.now + MS, to, transmit.data);
                    }
                }
            }
            if !moved {
                let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(at) if at < deadline => self.now = at.max(self.now + MS),
                    _ => {
                        self.now = deadline;
                        break;
                    }
                }
            } else {
                self.now += MS;
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }

    fn pump(&mut self, limit: Duration) {
        self.pump_with(limit, |_| true);
    }

    fn events(endpoint: &mut Endpoint) -> Vec<Event> {
        std::iter::from_fn(|| endpoint.poll_event()).collect()
    }
}

fn read_all(endpoint: &mut Endpoint, peer: &str, stream_id: i64) -> Vec<Bytes> {
    std::iter::from_fn(|| endpoint.read(peer, stream_id))
        .map(|message| message.data)
        .collect()
}

/// Asserts two lists of messages are equal, printing only their sizes when they are not.
fn assert_messages(got: &[Bytes], expected: &[Bytes]) {
    let sizes = |list: &[Bytes]| list.iter().map(Bytes::len).collect::<Vec<_>>();
    assert!(
        got == expected,
        "got {} messages {:?}, expected {} {:?}; first difference at {:?}",
        got.len(),
        sizes(got),
        expected.len(),
        sizes(expected),
        got.iter().zip(expected).position(|(a, b)| a != b)
    );
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_large_message_is_cut_to_the_datagram_mtu_and_arrives_whole() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::datagram_ipv4());
    let message = pattern(10_000, 1);
    pair.a
        .send("b", 1, message.clone(), MessageMeta::default())
        .unwrap();
    pair.pump(Duration::from_secs(2));
    assert_messages(&read_all(&mut pair.b, "a", 1), &[message]);
    assert!(pair.largest_transmit <= 548, "{}", pair.largest_transmit);
    assert!(pair.a.stats().frames_sent >= 10_000 / 548);
    assert_eq!(pair.a.stats().pieces_resent, 0);
}

#[test]
fn zero_length_and_maximum_sized_messages_arrive() {
    let config = EngineConfig {
        max_message_size: 200_000,
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.connect(ConnectionParams::stream());
    let big = pattern(200_000, 2);
    pair.a
        .send("b", 0, Bytes::new(), MessageMeta::default())
        .unwrap();
    pair.a
        .send("b", 0, big.clone(), MessageMeta::default())
        .unwrap();
    assert!(matches!(
        pair.a
            .send("b", 0, pattern(200_001, 3), MessageMeta::default()),
        Err(SendError::MessageTooLarge { .. })
    ));
    pair.pump(Duration::from_secs(2));
    assert_messages(&read_all(&mut pair.b, "a", 0), &[Bytes::new(), big]);
}

#[test]
fn small_messages_to_one_peer_share_one_transmit() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::datagram_ipv4());
    pair.pump(Duration::from_millis(10)); // pings answered
    for index in 0..10u8 {
        pair.a
            .send("b", 1, pattern(20, index), MessageMeta::default())
            .unwrap();
    }
    let transmit = pair.a.poll_transmit(pair.now).expect("a transmit");
    assert!(
        pair.a.poll_transmit(pair.now).is_none(),
        "all in one datagram"
    );
    pair.b
        .handle_input(pair.now, pair.links[0].1, transmit.data);
    assert_eq!(read_all(&mut pair.b, "a", 1).len(), 10);
}

#[test]
fn a_full_send_window_refuses_with_would_block_then_signals_writable() {
    let config = EngineConfig {
        stream_send_window: 1000,
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.connect(ConnectionParams::datagram_ipv4());
    pair.a
        .send("b", 7, pattern(900, 1), MessageMeta::default())
        .unwrap();
    assert!(matches!(
        pair.a.send("b", 7, pattern(200, 2), MessageMeta::default()),
        Err(SendError::WouldBlock { .. })
    ));
    Pair::events(&mut pair.a);
    pair.pump(Duration::from_secs(1));
    let events = Pair::events(&mut pair.a);
    assert!(
        events.contains(&Event::Writable {
            peer: "b".into(),
            stream_id: StreamId::new(7)
        }),
        "{events:?}"
    );
    pair.a
        .send("b", 7, pattern(200, 2), MessageMeta::default())
        .unwrap();
}

#[test]
fn a_dead_connections_data_arrives_over_the_other() {
    let mut pair = Pair::new(EngineConfig::default());
    let first = pair.connect(ConnectionParams::datagram_ipv4());
    pair.connect(ConnectionParams::datagram_ipv6());
    pair.pump(Duration::from_millis(10));
    let messages: Vec<Bytes> = (0..20).map(|i| pattern(3000, i)).collect();
    for message in &messages {
        pair.a
            .send("b", 1, message.clone(), MessageMeta::default())
            .unwrap();
    }
    // Whichever connection carries the data, it dies after a few datagrams.
    let mut sent = 0;
    let (dead_a, dead_b) = (pair.links[first].0, pair.links[first].1);
    pair.pump_with(Duration::from_millis(3), |transmit| {
        sent += 1;
        sent < 5 || (transmit.connection != dead_a && transmit.connection != dead_b)
    });
    pair.links[first].2 = false;
    pair.a.connection_lost(pair.now, dead_a);
    pair.b.connection_lost(pair.now, dead_b);
    pair.pump(Duration::from_secs(5));
    assert_messages(&read_all(&mut pair.b, "a", 1), &messages);
    assert!(Pair::events(&mut pair.a).iter().any(|event| matches!(
        event,
        Event::ConnectionLost { connection, .. } if *connection == dead_a
    )));
}

#[test]
fn a_silent_connection_is_declared_dead_and_its_peer_unreachable() {
    let config = EngineConfig {
        idle_timeout: Duration::from_secs(3),
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(config);
    let link = pair.connect(ConnectionParams::datagram_ipv4());
    pair.pump(Duration::from_millis(10));
    Pair::events(&mut pair.a);
    pair.links[link].2 = false;
    pair.pump(Duration::from_secs(5));
    let events = Pair::events(&mut pair.a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ConnectionLost { .. })),
        "{events:?}"
    );
    assert!(events.contains(&Event::PeerUnreachable { peer: "b".into() }));
    assert_eq!(pair.a.reachable_peers().count(), 0);
}

#[test]
fn finishing_a_stream_is_reported_to_both_ends() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::stream());
    pair.a
        .send("b", 3, pattern(10, 1), MessageMeta::default())
        .unwrap();
    let reason = CloseReason::shutdown("done");
    pair.a.finish("b", 3, reason.clone()).unwrap();
    assert!(matches!(
        pair.a.send("b", 3, pattern(1, 1), MessageMeta::default()),
        Err(SendError::StreamFinished { .. })
    ));
    pair.pump(Duration::from_secs(1));
    assert_eq!(read_all(&mut pair.b, "a", 3).len(), 1);
    let events = Pair::events(&mut pair.b);
    assert!(events.contains(&Event::StreamFinished {
        peer: "a".into(),
        stream_id: StreamId::new(3),
        reason
    }));
    assert!(Pair::events(&mut pair.a).contains(&Event::StreamClosed {
        peer: "b".into(),
        stream_id: StreamId::new(3)
    }));
}

#[test]
fn connections_with_an_mtu_outside_the_frame_limits_are_refused() {
    let mut pair = Pair::new(EngineConfig::default());
    let now = pair.now;
    assert_eq!(
        pair.a
            .add_connection(now, "b", ConnectionParams::stream().with_mtu(64)),
        Err(ConnectionError::MtuTooSmall {
            mtu: 64,
            min: MIN_MTU
        })
    );
    let huge = ConnectionParams::stream().with_mtu(8 * 1024 * 1024);
    assert!(matches!(
        pair.a.add_connection(now, "b", huge),
        Err(ConnectionError::MtuTooLarge { .. })
    ));
    let first = pair
        .a
        .add_connection(now, "b", ConnectionParams::stream())
        .unwrap();
    // The endpoint hands out the ids: a second connection never gets the first one's (what
    // `DuplicateId` guarded against when callers chose them), and refused ones take none.
    let second = pair
        .a
        .add_connection(now, "b", ConnectionParams::stream())
        .unwrap();
    assert_eq!((first, second), (ConnectionId(1), ConnectionId(2)));
}

#[test]
fn negative_stream_ids_are_reserved() {
    let mut pair = Pair::new(EngineConfig::default());
    assert_eq!(
        pair.a.send("b", -1, Bytes::new(), MessageMeta::default()),
        Err(SendError::ReservedStream { stream_id: -1 })
    );
}

#[test]
fn a_frame_that_speaks_for_another_node_closes_the_connection_as_unauthorized() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::datagram_ipv4());
    Pair::events(&mut pair.b);
    let codec = atbus_proto::FrameCodec::default();
    let ping_from = |source: &str, destination: &str| {
        let mut out = bytes::BytesMut::new();
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: source.into(),
                destination: destination.into(),
                ..Default::default()
            }),
            body: Some(atbus_proto::protocol::frame_message::Body::Ping(
                PingData::default(),
            )),
        };
        codec.encode(&frame, &mut out).unwrap();
        out.freeze()
    };
    // From the right peer to someone else: not ours, dropped.
    pair.b
        .handle_input(pair.now, pair.links[0].1, ping_from("a", "carol"));
    assert_eq!(pair.b.stats().misaddressed_frames, 1);
    // Speaking for another node: refused.
    pair.b
        .handle_input(pair.now, pair.links[0].1, ping_from("mallory", "b"));
    assert_eq!(
        pair.b
            .stats()
            .auth_failures(crate::engine::AuthFailure::SpoofedSource),
        1
    );
    let close = pair.b.poll_transmit(pair.now).expect("a close frame");
    assert_eq!(close.connection, pair.links[0].1);
    let lost = Pair::events(&mut pair.b);
    assert!(
        lost.iter()
            .any(|e| matches!(e, Event::ConnectionLost { reason, .. }
            if reason.code == CloseCode::Unauthorized)),
        "{lost:?}"
    );
}

#[test]
fn garbage_on_a_stream_connection_closes_it_without_panicking() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::stream());
    Pair::events(&mut pair.b);
    pair.b.handle_input(
        pair.now,
        pair.links[0].1,
        Bytes::from_static(b"\x01\x05garbage, not a frame"),
    );
    assert_eq!(pair.b.stats().invalid_frames, 1);
    assert!(
        Pair::events(&mut pair.b)
            .iter()
            .any(|e| matches!(e, Event::ConnectionLost { .. }))
    );
    // Garbage on a datagram connection only costs the datagram.
    pair.connect(ConnectionParams::datagram_ipv4());
    pair.b
        .handle_input(pair.now, pair.links[1].1, Bytes::from_static(&[0xff; 64]));
    assert_eq!(pair.b.stats().invalid_frames, 2);
    assert_eq!(pair.b.reachable_peers().count(), 1);
}

#[test]
fn a_reader_that_stops_bounds_the_receivers_memory() {
    let config = EngineConfig {
        peer_receive_budget: 64 * 1024,
        max_message_size: 16 * 1024,
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.connect(ConnectionParams::datagram_ipv4());
    let messages: Vec<Bytes> = (0..40).map(|i| pattern(8 * 1024, i)).collect();
    for message in &messages {
        pair.a
            .send("b", 1, message.clone(), MessageMeta::default())
            .unwrap();
    }
    pair.pump(Duration::from_secs(2));
    assert!(pair.b.memory() <= 64 * 1024, "{}", pair.b.memory());
    // The congestion window holds the first burst below the budget, and the windows announced
    // after it keep the sender there: nothing has to be dropped and asked for again. (Pieces
    // over the budget from a sender ignoring the windows: the reassembler's own tests.)
    let stats = pair.b.stats();
    assert_eq!(
        stats.dropped_over_budget + stats.dropped_out_of_range,
        0,
        "{stats:?}"
    );
    let mut received = Vec::new();
    for _ in 0..200 {
        received.extend(read_all(&mut pair.b, "a", 1));
        pair.pump(Duration::from_millis(200));
        if received.len() == messages.len() {
            break;
        }
    }
    assert_messages(&received, &messages);
}

#[test]
fn the_connection_kind_decides_how_input_is_framed() {
    // A stream connection takes frames split anywhere.
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::stream());
    pair.a
        .send("b", 1, pattern(5000, 9), MessageMeta::default())
        .unwrap();
    let mut wire = Vec::new();
    while let Some(transmit) = pair.a.poll_transmit(pair.now) {
        wire.extend_from_slice(&transmit.data);
    }
    for chunk in wire.chunks(7) {
        pair.b
            .handle_input(pair.now, pair.links[0].1, Bytes::copy_from_slice(chunk));
    }
    assert_messages(&read_all(&mut pair.b, "a", 1), &[pattern(5000, 9)]);
    assert_eq!(ConnectionParams::stream().kind, ConnectionKind::Stream);
}

#[test]
fn closing_a_connection_tells_the_peer_why_and_the_data_moves_to_another() {
    let mut pair = Pair::new(EngineConfig::default());
    let first = pair.connect(ConnectionParams::stream());
    pair.connect(ConnectionParams::datagram_ipv4());
    pair.pump(Duration::from_millis(10));
    Pair::events(&mut pair.b);
    let reason = CloseReason::shutdown("moving to another path");
    pair.a.close_connection(pair.links[first].0, reason.clone());
    let messages: Vec<Bytes> = (0..5).map(|i| pattern(2000, i)).collect();
    for message in &messages {
        pair.a
            .send("b", 1, message.clone(), MessageMeta::default())
            .unwrap();
    }
    pair.pump(Duration::from_secs(2));
    let closed_at_b = pair.links[first].1;
    assert!(
        Pair::events(&mut pair.b).contains(&Event::ConnectionLost {
            connection: closed_at_b,
            peer: "a".into(),
            reason
        }),
        "b learns the reason"
    );
    assert_messages(&read_all(&mut pair.b, "a", 1), &messages);
    assert_eq!(
        pair.a.reachable_peers().count(),
        1,
        "the other connection lives"
    );
}

#[test]
fn messages_past_their_timeout_are_abandoned_and_the_peer_skips_them() {
    let config = EngineConfig {
        message_timeout: Some(Duration::from_millis(300)),
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(config);
    let link = pair.connect(ConnectionParams::datagram_ipv4());
    pair.pump(Duration::from_millis(10));
    // The path is down while the first two messages wait.
    pair.links[link].2 = false;
    pair.a
        .send("b", 1, pattern(1000, 1), MessageMeta::default())
        .unwrap();
    pair.a
        .send("b", 1, pattern(1000, 2), MessageMeta::default())
        .unwrap();
    pair.pump(Duration::from_millis(400));
    let events = Pair::events(&mut pair.a);
    assert!(
        events.contains(&Event::MessagesExpired {
            peer: "b".into(),
            stream_id: StreamId::new(1),
            count: 2
        }),
        "{events:?}"
    );
    assert_eq!(pair.a.memory(), 0, "abandoned data is released");
    pair.links[link].2 = true;
    pair.a
        .send("b", 1, pattern(1000, 3), MessageMeta::default())
        .unwrap();
    pair.pump(Duration::from_secs(2));
    assert_messages(&read_all(&mut pair.b, "a", 1), &[pattern(1000, 3)]);
    assert_eq!(pair.b.stats().units_skipped, 2002);
    assert_eq!(pair.a.stats().messages_expired, 2);
}

/// Decodes the frames of a transmit and counts the acknowledgements among them.
fn acks_in(transmit: &Transmit) -> usize {
    let codec = atbus_proto::FrameCodec::default();
    let mut data = transmit.data.clone();
    let mut count = 0;
    while let Ok(atbus_proto::Decoded::Frame(frame)) = codec.decode_bytes(&mut data) {
        count += usize::from(matches!(
            frame.message.body,
            Some(atbus_proto::protocol::frame_message::Body::Acknowledge(_))
        ));
    }
    count
}

#[test]
fn acknowledgements_wait_a_little_come_every_second_packet_and_at_once_for_a_gap() {
    let config = EngineConfig {
        max_ack_delay: Duration::from_millis(5),
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.connect(ConnectionParams::datagram_ipv4());
    pair.pump(Duration::from_millis(10));
    let mut datagrams = Vec::new();
    for index in 0..5u8 {
        pair.a
            .send("b", 1, pattern(500, index), MessageMeta::default())
            .unwrap();
        datagrams.extend(std::iter::from_fn(|| pair.a.poll_transmit(pair.now)));
    }
    assert_eq!(datagrams.len(), 5);
    let (now, at_b) = (pair.now, pair.links[0].1);
    let acks_after = |b: &mut Endpoint, at: Instant| -> usize {
        std::iter::from_fn(|| b.poll_transmit(at))
            .map(|t| acks_in(&t))
            .sum()
    };
    // One packet: held back until the delay passes.
    pair.b.handle_input(now, at_b, datagrams[0].data.clone());
    assert_eq!(acks_after(&mut pair.b, now), 0);
    assert_eq!(pair.b.poll_timeout(), Some(now + Duration::from_millis(5)));
    pair.b.handle_timeout(now + Duration::from_millis(5));
    assert_eq!(acks_after(&mut pair.b, now + Duration::from_millis(5)), 1);
    // Two packets in order: one acknowledgement, at once after the second.
    pair.b.handle_input(now, at_b, datagrams[1].data.clone());
    assert_eq!(acks_after(&mut pair.b, now), 0);
    pair.b.handle_input(now, at_b, datagrams[2].data.clone());
    assert_eq!(acks_after(&mut pair.b, now), 1);
    // The fifth before the fourth: a new gap, acknowledged at once.
    pair.b.handle_input(now, at_b, datagrams[4].data.clone());
    assert_eq!(acks_after(&mut pair.b, now), 1);
    // A duplicate means our acknowledgement was lost: at once again.
    pair.b.handle_input(now, at_b, datagrams[4].data.clone());
    assert_eq!(
        acks_after(&mut pair.b, now),
        1,
        "a duplicate asks for one at once"
    );
}

#[test]
fn no_timer_keeps_firing_for_a_peer_without_connections() {
    let mut pair = Pair::new(EngineConfig::default());
    let link = pair.connect(ConnectionParams::datagram_ipv4());
    pair.pump(Duration::from_millis(10));
    pair.a
        .send("b", 1, pattern(3000, 1), MessageMeta::default())
        .unwrap();
    let first = pair.a.poll_transmit(pair.now).expect("data");
    pair.b
        .handle_input(pair.now, pair.links[link].1, first.data);
    // b owes an acknowledgement, a has data in flight; then both lose the connection.
    pair.a.connection_lost(pair.now, pair.links[link].0);
    pair.b.connection_lost(pair.now, pair.links[link].1);
    let later = pair.now + Duration::from_secs(1);
    for endpoint in [&mut pair.a, &mut pair.b] {
        endpoint.handle_timeout(later);
        while endpoint.poll_transmit(later).is_some() {}
        assert!(
            endpoint.poll_timeout().is_none_or(|at| at > later),
            "{}: a timer in the past would spin",
            endpoint.name()
        );
    }
}

#[test]
fn a_message_over_the_receivers_limit_is_dropped_and_the_stream_goes_on() {
    let small = EngineConfig {
        max_message_size: 1000,
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(EngineConfig::default());
    pair.b = Endpoint::new("b", small, pair.now);
    pair.connect(ConnectionParams::stream());
    pair.a
        .send("b", 1, pattern(5000, 1), MessageMeta::default())
        .unwrap();
    pair.a
        .send("b", 1, pattern(500, 2), MessageMeta::default())
        .unwrap();
    pair.pump(Duration::from_secs(1));
    assert_messages(&read_all(&mut pair.b, "a", 1), &[pattern(500, 2)]);
    assert_eq!(pair.b.stats().oversized_messages, 1);
}

#[test]
fn a_datagram_connections_congestion_window_counts_every_flight_back_out() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::datagram_ipv6());
    let messages: Vec<Bytes> = (0..60).map(|i| pattern(20 * 1024, i)).collect();
    for message in &messages {
        pair.a
            .send("b", 1, message.clone(), MessageMeta::default())
            .unwrap();
    }
    // Every fifth transmit lost: flights leave the books acknowledged, lost and resent.
    let mut count = 0;
    let mut received = Vec::new();
    for _ in 0..100 {
        pair.pump_with(Duration::from_millis(200), |_| {
            count += 1;
            count % 5 != 0
        });
        received.extend(read_all(&mut pair.b, "a", 1));
        if received.len() == messages.len() && pair.a.unacknowledged() == 0 {
            break;
        }
    }
    assert_messages(&received, &messages);
    let (window, in_flight) = pair.a.congestion_window(pair.links[0].0).expect("datagram");
    assert_eq!(in_flight, 0, "every flight acknowledged, lost or forgotten");
    assert!(window >= 4 * 1232, "{window}");
    assert!(pair.a.stats().pieces_resent > 0);
    assert_eq!(pair.a.congestion_window(ConnectionId(99)), None);
}

/// A blackout of a datagram path while the window is full: nothing is acknowledged to tell the
/// flights lost, and each retransmission timeout takes one flight off the books. Each timeout
/// also sends a probe into the full window, whose acknowledgement declares the rest lost, so
/// the transfer resumes at the first timeout after the path returns (1.1 s here; it used to
/// wait for a timeout per flight, doubling up to `max_rto`: 8.5 s here, more than 10 s in
/// `atbus-core/tests/node/failover.rs`, which then failed at times).
#[test]
fn after_a_blackout_the_first_timeout_probe_resumes_a_window_full_of_lost_flights() {
    let mut pair = Pair::new(EngineConfig::default());
    pair.connect(ConnectionParams::datagram_ipv6());
    let messages: Vec<Bytes> = (0..200).map(|i| pattern(4096, i as u8)).collect();
    for message in &messages {
        pair.a
            .send("b", 1, message.clone(), MessageMeta::default())
            .unwrap();
    }
    pair.pump(Duration::from_millis(5));
    let mut received = read_all(&mut pair.b, "a", 1);
    // Two seconds in which nothing from a arrives.
    let first = pair.links[0].0;
    pair.pump_with(Duration::from_secs(2), |transmit| {
        transmit.connection != first
    });
    let back = pair.now;
    while received.len() < messages.len() && pair.now < back + Duration::from_secs(60) {
        pair.pump(Duration::from_millis(100));
        received.extend(read_all(&mut pair.b, "a", 1));
    }
    assert_messages(&received, &messages);
    let took = pair.now - back;
    assert!(
        took < Duration::from_secs(3),
        "{took:?} from the path's return to the last message (max_rto is 10 s)"
    );
}
