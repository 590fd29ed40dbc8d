//! Engine throughput: messages of 64 B, 1 KiB and 64 KiB from one endpoint to another over a
//! loss-free simulated link, next to the frame codec alone measured in the same run.
//!
//! Each iteration queues a batch of messages at node "a" (1 MiB worth, and at least 100) on one
//! stream, as fast as the send windows let it, and runs the simulated network until node "b" has
//! read them all. Both nodes run the real engine with the default `EngineConfig`; the network is
//! `atbus_core::sim` with one perfect link (no delay, no loss, unlimited bandwidth), so the time
//! measured is the engine's work on both sides (fragmenting, acknowledging, reassembling, flow
//! control) plus the simulator's bookkeeping, and no I/O. Every size runs on both kinds of link:
//! a datagram link of MTU 1232 (64 KiB messages then travel in 55 fragments) and a stream link
//! (transmits of up to 64 KiB, read back in the simulator's random chunks).
//!
//! The baseline, `engine-codec`, is the cost of the same bytes as frames without any engine
//! logic: for every message of the batch, a packet frame holding one fragment with the message is
//! encoded (the `packet_content`, then the frame) and decoded again (the frame, then its content).
//!
//! `cargo bench -p atbus-benches --bench engine` prints criterion's figures (messages/s), then a
//! table with messages/s, payload bytes/s and each engine figure as a fraction of the codec
//! baseline's throughput, which is what to compare across runs and machines.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use atbus_benches::report::nanoseconds;
use atbus_core::engine::{Endpoint, EngineConfig, Event, MessageMeta, SendError};
use atbus_core::sim::{Application, EngineNode, LinkProfile, Network, NodeIndex};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent, PacketData};
use atbus_proto::{Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use prost::Message;

/// Message sizes, in bytes.
const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

/// The benchmark groups, in the order of the summary's columns; the first is the baseline.
const GROUPS: [&str; 3] = ["engine-codec", "engine-datagram", "engine-stream"];

/// The stream the messages go on.
const STREAM: i64 = 1;

/// MTU of the datagram link (IPv6's minimum less headers).
const DATAGRAM_MTU: usize = 1232;

/// Messages per iteration: 1 MiB worth, and at least 100.
fn batch_len(size: usize) -> usize {
    (1024 * 1024 / size).max(100)
}

/// The bytes of every message of `size` bytes.
fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The application of a node of the pair: sends what it is told to as the windows allow, and
/// reads everything that arrives.
struct Node {
    peer: &'static str,
    payload: Bytes,
    /// Messages still to queue.
    to_send: usize,
    /// Messages read, and their bytes.
    received: usize,
    received_bytes: usize,
}

impl Node {
    fn new(name: &str, peer: &'static str, payload: Bytes, now: Instant) -> EngineNode<Self> {
        let endpoint = Endpoint::new(name, EngineConfig::default(), now);
        let app = Self {
            peer,
            payload,
            to_send: 0,
            received: 0,
            received_bytes: 0,
        };
        EngineNode::new(endpoint, app)
    }
}

impl Application for Node {
    /// Queues what the windows allow, and reads what arrived.
    fn pump(&mut self, endpoint: &mut Endpoint) {
        while self.to_send > 0 {
            let data = self.payload.clone();
            match endpoint.send(self.peer, STREAM, data, MessageMeta::default()) {
                Ok(_) => self.to_send -= 1,
                Err(SendError::WouldBlock { .. }) => break,
                Err(error) => panic!("send failed: {error}"),
            }
        }
        while let Some(event) = endpoint.poll_event() {
            if let Event::Readable { stream_id, .. } = event {
                while let Some(message) = endpoint.read(self.peer, stream_id) {
                    self.received += 1;
                    self.received_bytes += message.data.len();
                }
            }
        }
    }
}

/// Two endpoints joined by one perfect link, kept from one iteration to the next.
struct Pair {
    net: Network<EngineNode<Node>>,
    a: NodeIndex,
    b: NodeIndex,
    batch: usize,
    size: usize,
}

impl Pair {
    fn new(size: usize, profile: LinkProfile) -> Self {
        let mut net = Network::new(size as u64);
        // Nothing delays anything on a perfect link, so simulated time only moves for timers.
        net.set_instant_step_limit(u64::MAX);
        let now = net.now();
        let data = payload(size);
        let a = net.add_node(Node::new("a", "b", data.clone(), now));
        let b = net.add_node(Node::new("b", "a", data, now));
        net.bind(a, b, profile).expect("a valid MTU");
        Self {
            net,
            a,
            b,
            batch: batch_len(size),
            size,
        }
    }

    /// Sends one batch from a and runs the network until b has read all of it.
    fn transfer(&mut self) {
        let target = self.net.node(self.b).received + self.batch;
        let sender = self.net.node_mut(self.a);
        sender.to_send += self.batch;
        sender.pump();
        self.net.poll_node(self.a);
        let b = self.b;
        let limit = self.net.now() + Duration::from_secs(3600);
        let done = self
            .net
            .run_while(|net| net.node(b).received < target, limit);
        assert!(
            done,
            "b read {} of {target} messages of {} B",
            self.net.node(b).received,
            self.size
        );
    }
}

/// The baseline: every message of a batch as a packet frame, encoded and decoded.
struct CodecBaseline {
    codec: FrameCodec,
    payload: Bytes,
    batch: usize,
    wire: BytesMut,
    offset: i64,
}

impl CodecBaseline {
    fn new(size: usize) -> Self {
        Self {
            codec: FrameCodec::default(),
            payload: payload(size),
            batch: batch_len(size),
            wire: BytesMut::new(),
            offset: 0,
        }
    }

    /// Encodes and decodes the batch; returns the data bytes decoded.
    fn transfer(&mut self) -> usize {
        let mut decoded = 0;
        for _ in 0..self.batch {
            let content = PacketContent {
                fragment: vec![FragmentType {
                    data: self.payload.clone(),
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
                    stream_id: STREAM,
                    stream_offset: self.offset,
                    content: content.into(),
                    flags: 0,
                    padding_size: 0,
                    timepoint_microseconds: 1_700_000_000_000_000,
                })),
            };
            self.offset += self.payload.len() as i64 + 1;
            self.wire.clear();
            self.codec.encode(&frame, &mut self.wire).expect("encode");
            let mut wire = self.wire.split().freeze();
            let Ok(Decoded::Frame(frame)) = self.codec.decode_bytes(&mut wire) else {
                unreachable!("a whole frame was given");
            };
            let Some(Body::Packet(packet)) = frame.message.body else {
                unreachable!("a packet was encoded");
            };
            let content = PacketContent::decode(packet.content).expect("packet_content");
            decoded += content.fragment[0].data.len();
        }
        decoded
    }
}

fn bench_engine(criterion: &mut Criterion) {
    for group_name in GROUPS {
        let mut group = criterion.benchmark_group(group_name);
        // An iteration is a whole batch (milliseconds): few, equal samples fit the time.
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for size in SIZES {
            group.throughput(Throughput::Elements(batch_len(size) as u64));
            let id = BenchmarkId::from_parameter(size);
            match group_name {
                "engine-codec" => {
                    let mut baseline = CodecBaseline::new(size);
                    group.bench_function(id, |b| b.iter(|| black_box(baseline.transfer())));
                }
                "engine-datagram" => {
                    // The connection's MTU is the link's (`sim::params_of`).
                    let profile = LinkProfile::perfect_datagram().with_mtu(DATAGRAM_MTU);
                    let mut pair = Pair::new(size, profile);
                    group.bench_function(id, |b| b.iter(|| pair.transfer()));
                    check_bytes(&pair);
                }
                _ => {
                    let mut pair = Pair::new(size, LinkProfile::perfect_stream());
                    group.bench_function(id, |b| b.iter(|| pair.transfer()));
                    check_bytes(&pair);
                }
            }
        }
        group.finish();
    }
}

/// Every message read had its full size, and nothing was lost on the way.
fn check_bytes(pair: &Pair) {
    let b = pair.net.node(pair.b);
    assert_eq!(b.received_bytes, b.received * pair.size);
    assert_eq!(
        pair.net.total_stats().dropped_mtu,
        0,
        "datagrams over the MTU"
    );
}

/// Prints thousands of messages/s, payload MB/s and the fraction of the codec baseline's throughput for every
/// size measured since `start`.
fn print_summary(directory: &Path, start: SystemTime) {
    println!();
    println!(
        "size (B)  batch | codec kmsg/s    MB/s | datagram kmsg/s    MB/s  ×codec | stream kmsg/s    MB/s  ×codec"
    );
    for size in SIZES {
        let Some([codec, datagram, stream]) = GROUPS
            .map(|group| nanoseconds(directory, group, size, start))
            .into_iter()
            .collect::<Option<Vec<f64>>>()
            .and_then(|times| <[f64; 3]>::try_from(times).ok())
        else {
            continue;
        };
        let batch = batch_len(size) as f64;
        let kmsgs = |ns: f64| batch * 1e6 / ns;
        let mbps = |ns: f64| batch * size as f64 * 1e3 / ns;
        println!(
            "{size:>8} {:>6} | {:>12.1} {:>7.0} | {:>15.1} {:>7.0} {:>7.3} | {:>13.1} {:>7.0} {:>7.3}",
            batch_len(size),
            kmsgs(codec),
            mbps(codec),
            kmsgs(datagram),
            mbps(datagram),
            codec / datagram,
            kmsgs(stream),
            mbps(stream),
            codec / stream,
        );
    }
}

fn main() {
    atbus_benches::report::run(Duration::from_secs(3), bench_engine, print_summary);
}
