//! The engine's timers against the number of idle peers: what `poll_timeout` and a
//! `handle_timeout` with nothing due cost at 10, 1,000 and 10,000 connected peers that have nothing
//! to send, and what one event costs there (a ping from one peer taken, its pong sent, the next
//! deadline asked for, as the runtime does after every input).
//!
//! The endpoint is a relay's (`auth.relay` on). Each peer has an established stream connection
//! (added as transport-vouched, no handshake) and a little history, as a node registered with a
//! relay has: it sent a message on stream 0, the relay read it and answered on the same stream,
//! and both acknowledgements went through. Then the network is quiet: no timer is due for the
//! next second (keep-alive pings come every 5 s), which is when the calls are timed.
//!
//! The runtime asks for the next deadline after every action; when that walks every peer, an idle
//! relay with thousands of nodes spends its time on nothing. The costs should stay flat (within 2×)
//! from 10 to 10,000 peers.
//!
//! `cargo bench -p atbus-benches --bench timers` prints criterion's figures, then a table of the
//! nanoseconds per call at each size and the ratio of the largest to the smallest.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use atbus_benches::report::nanoseconds;
use atbus_core::engine::{ConnectionId, ConnectionParams, Endpoint, EngineConfig, MessageMeta};
use atbus_proto::FrameCodec;
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AcknowledgeData, FrameMessage, MessageHead, PacketContent, PacketData, PingData,
    StreamAcknowledge,
};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion};
use prost::Message;

/// Idle peers of the endpoint.
const PEERS: [usize; 3] = [10, 1_000, 10_000];

/// The benchmark groups, in the order of the summary's rows.
const GROUPS: [&str; 3] = [
    "timers-poll_timeout",
    "timers-handle_timeout",
    "timers-event",
];

/// The endpoint's name.
const RELAY: &str = "relay";

/// `frame`, encoded.
fn encode(frame: &FrameMessage) -> Bytes {
    let mut wire = BytesMut::new();
    FrameCodec::default()
        .encode(frame, &mut wire)
        .expect("encode");
    wire.freeze()
}

fn head(peer: &str) -> Option<MessageHead> {
    Some(MessageHead {
        source: peer.to_string(),
        destination: RELAY.to_string(),
        ..Default::default()
    })
}

/// One whole message of `data` at offset 0 of stream 0, from `peer`.
fn message_from(peer: &str, data: &'static [u8]) -> Bytes {
    let content = PacketContent {
        fragment: vec![FragmentType {
            data: Bytes::from_static(data),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    encode(&FrameMessage {
        head: head(peer),
        body: Some(Body::Packet(PacketData {
            stream_id: 0,
            stream_offset: 0,
            content: content.into(),
            ..Default::default()
        })),
    })
}

/// `peer`'s acknowledgement of the first `units` of stream 0.
fn ack_from(peer: &str, units: i64) -> Bytes {
    encode(&FrameMessage {
        head: head(peer),
        body: Some(Body::Acknowledge(AcknowledgeData {
            acknowledge: vec![StreamAcknowledge {
                stream_id: 0,
                acknowledge_offset: units,
                received_max_offset: units,
                window_offset: 1 << 20,
                received_ranges: Vec::new(),
            }],
            ..Default::default()
        })),
    })
}

/// A ping from a peer.
fn ping(sequence: i64) -> Bytes {
    encode(&FrameMessage {
        head: None,
        body: Some(Body::Ping(PingData {
            sequence,
            timepoint_microseconds: 1,
        })),
    })
}

/// A relay's endpoint with `peers` idle connected peers, and the time at which nothing is due.
fn idle_relay(peers: usize) -> (Endpoint, Instant) {
    let t0 = Instant::now();
    let mut config = EngineConfig::default();
    config.auth.relay = true;
    let mut endpoint = Endpoint::new(RELAY, config, t0);
    for index in 0..peers {
        let peer = format!("node-{index}");
        let connection = endpoint
            .add_connection(t0, &peer, ConnectionParams::stream())
            .expect("connection");
        endpoint.handle_input(t0, connection, message_from(&peer, b"register"));
        let message = endpoint.read(&peer, 0).expect("the peer's message");
        assert_eq!(message.data, Bytes::from_static(b"register"));
        endpoint
            .send(&peer, 0, Bytes::from_static(b"ok"), MessageMeta::default())
            .expect("send");
        while endpoint.poll_transmit(t0).is_some() {}
        endpoint.handle_input(t0, connection, ack_from(&peer, 3));
        while endpoint.poll_transmit(t0).is_some() {}
    }
    // Past the acknowledgement delay and the route announcement: everything went out.
    let quiet = t0 + Duration::from_millis(100);
    endpoint.handle_timeout(quiet);
    while endpoint.poll_transmit(quiet).is_some() {}
    assert_eq!(endpoint.unacknowledged(), 0);
    let next = endpoint.poll_timeout().expect("keep-alive timers");
    assert!(
        next > quiet + Duration::from_secs(1),
        "a timer is due {:?} after the quiet time",
        next - quiet
    );
    (endpoint, quiet)
}

fn bench_timers(criterion: &mut Criterion) {
    for group_name in GROUPS {
        let mut group = criterion.benchmark_group(group_name);
        for peers in PEERS {
            let (mut endpoint, now) = idle_relay(peers);
            let id = BenchmarkId::from_parameter(peers);
            match group_name {
                "timers-poll_timeout" => {
                    group.bench_function(id, |b| b.iter(|| black_box(endpoint.poll_timeout())));
                }
                "timers-handle_timeout" => {
                    group.bench_function(id, |b| b.iter(|| endpoint.handle_timeout(now)));
                }
                _ => {
                    let mut sequence = 0i64;
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            sequence += 1;
                            let connection = ConnectionId(sequence as u64 % peers as u64 + 1);
                            endpoint.handle_input(now, connection, ping(sequence));
                            while let Some(transmit) = endpoint.poll_transmit(now) {
                                black_box(transmit);
                            }
                            black_box(endpoint.poll_timeout())
                        })
                    });
                }
            }
        }
        group.finish();
    }
}

/// Prints the nanoseconds per call at each size, and the ratio of the largest to the smallest.
fn print_summary(directory: &Path, start: SystemTime) {
    println!();
    print!("{:<22}", "ns per call");
    for peers in PEERS {
        print!(" | {:>8} peers", peers);
    }
    println!(" | {}×/{}×", PEERS[2], PEERS[0]);
    for group in GROUPS {
        let times: Vec<Option<f64>> = PEERS
            .iter()
            .map(|&peers| nanoseconds(directory, group, peers, start))
            .collect();
        print!("{group:<22}");
        for time in &times {
            match time {
                Some(ns) => print!(" | {ns:>14.1}"),
                None => print!(" | {:>14}", "-"),
            }
        }
        match (times[0], times[2]) {
            (Some(small), Some(large)) => println!(" | {:.2}", large / small),
            _ => println!(" | -"),
        }
    }
}

fn main() {
    atbus_benches::report::run(Duration::from_secs(3), bench_timers, print_summary);
}
