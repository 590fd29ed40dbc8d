//! Arbitrary input into one protocol engine: an endpoint "b" with a datagram and a stream
//! connection to its peer "a", driven by a sequence of operations the input decides.
//!
//! The operations: raw bytes as a datagram or as a chunk of the stream connection; mostly-valid
//! frames from "a" (pings, pongs answering b's pings, packets whose fragments land near the
//! previous ones so reassembly, RESET_OFFSET and FINISH_* are exercised, acknowledgements of what
//! b sent with arbitrary ranges and windows), whole or cut into chunks, sometimes corrupted; the
//! passing of time with `handle_timeout`, by an arbitrary step or to `poll_timeout`; the
//! application reading, sending and finishing streams; connections lost, closed and added again.
//! The input may set a `message_timeout`, so that queued messages expire. After every operation
//! the endpoint's transmits and events are drained and checked.
//!
//! Proves that the engine never panics on hostile input, and that: every transmit goes on a live
//! connection, holds whole frames that b's codec decodes, addressed from "b" to "a", and is no
//! larger than its connection's MTU; `memory()` stays within `peer_send_window +
//! max_message_size + peer_receive_budget`; `poll_transmit` runs dry; a message read is no larger
//! than `max_message_size` and starts past the previous one of its stream; events agree with what
//! happened (reachability alternates and matches the live connections, a lost connection was
//! live, `Writable` follows `WouldBlock`, `StreamClosed` follows `finish`, a stream finishes once);
//! and the timers settle: after time passes, calling `handle_timeout` again at the same instant
//! while `poll_timeout` says a timer is due makes progress every round (a counter changes) and
//! ends, so a runtime that sleeps until `poll_timeout` never spins.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{
    ConnectionId, ConnectionKind, ConnectionParams, Endpoint, EngineConfig, Event, MessageMeta,
    SendError, Transmit,
};
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AcknowledgeData, AtbusCloseReason, AtbusPacketFlagType, AtbusPacketFragmentFlagType,
    CloseReasonData, FrameMessage, MessageHead, OffsetRange, PacketContent, PacketData,
    PacketOptions, PingData, StreamAcknowledge, frame_message::Body,
};
use atbus_proto::{CodecConfig, Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The endpoint under test.
const LOCAL: &str = "b";
/// Its only peer.
const PEER: &str = "a";
/// Frames b's codec accepts: small, so that the limit is reachable.
const MAX_FRAME_LENGTH: usize = 128 * 1024;
/// Simulated time never goes further than this from the start.
const MAX_ELAPSED: Duration = Duration::from_secs(4 * 3600);
/// Operations per input.
const MAX_OPS: usize = 200;
/// Live connections at most.
const MAX_CONNECTIONS: usize = 4;
/// `poll_transmit` must run dry within this many transmits after one operation.
const MAX_TRANSMITS: usize = 100_000;
/// Rounds of `handle_timeout` at one instant before the timers must be quiet.
const MAX_SETTLE_ROUNDS: usize = 10_000;
/// The streams most operations use; others come from arbitrary ids.
const STREAMS: [i64; 5] = [0, 1, 2, 3, 7];

/// Small limits, so that windows, budgets and the stream limit are all reachable; messages expire
/// after `message_timeout` if the input sets one.
fn config(message_timeout: Option<Duration>) -> EngineConfig {
    EngineConfig {
        max_message_size: 64 * 1024,
        stream_send_window: 16 * 1024,
        peer_send_window: 32 * 1024,
        peer_receive_budget: 256 * 1024,
        stream_receive_window: 96 * 1024,
        initial_window: 32 * 1024,
        max_streams_per_peer: 16,
        message_timeout,
        max_frame_length: MAX_FRAME_LENGTH,
        ..EngineConfig::default()
    }
}

/// The instant every run starts at, captured once.
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The codec that encodes what "a" sends: it may build frames over b's limit.
fn peer_codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let config = CodecConfig::default()
            .with_max_frame_length(4 * MAX_FRAME_LENGTH)
            .expect("valid codec configuration");
        FrameCodec::new(config)
    })
}

/// The codec b decodes with: what it sends must decode with it.
fn local_codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let config = CodecConfig::default()
            .with_max_frame_length(MAX_FRAME_LENGTH)
            .expect("valid codec configuration");
        FrameCodec::new(config)
    })
}

/// An `i64`, often an edge value.
fn int64(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&[0, 1, -1, i64::MIN, i64::MAX, i64::MAX - 1, 1 << 62])?,
        1 => i64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

/// `base` moved by a small amount either way, never below 0.
fn near(u: &mut Unstructured, base: u64) -> Result<u64> {
    let delta = u64::from(u.int_in_range(0..=300u16)?);
    Ok(if u.arbitrary()? {
        base.saturating_add(delta)
    } else {
        base.saturating_sub(delta)
    })
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

/// Data bytes: taken from the input, or a long run of one byte (large messages from few input
/// bytes).
fn data(u: &mut Unstructured) -> Result<Bytes> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => Bytes::new(),
        1 => {
            let len = u.int_in_range(0..=70 * 1024)?;
            Bytes::from(vec![u.arbitrary::<u8>()?; len])
        }
        2 => {
            let len = u.int_in_range(0..=4096)?;
            Bytes::from(vec![u.arbitrary::<u8>()?; len])
        }
        _ => {
            let len = u.int_in_range(0..=64)?;
            Bytes::copy_from_slice(u.bytes(len.min(u.len()))?)
        }
    })
}

fn short_string(u: &mut Unstructured) -> Result<String> {
    let len = u.int_in_range(0..=12)?;
    (0..len)
        .map(|_| Ok(char::from(u.int_in_range(b'a'..=b'z')?)))
        .collect()
}

/// Type, options and labels of a message: mostly none, sometimes too large to fit a fragment.
fn meta(u: &mut Unstructured) -> Result<MessageMeta> {
    if u.ratio(3, 4)? {
        return Ok(MessageMeta::default());
    }
    let options = if u.arbitrary()? {
        Some(PacketOptions {
            request_id: int64(u)?,
            reply_to: int64(u)?,
            custom: some(u, 3, |u| {
                let len = u.int_in_range(0..=40)?;
                Ok((short_string(u)?, Bytes::from(vec![0x5a; len])))
            })?
            .into_iter()
            .collect(),
        })
    } else {
        None
    };
    Ok(MessageMeta {
        packet_type: *u.choose(&[0, 1, 2, 101, 1000, -1, i32::MAX])?,
        options,
        labels: some(u, 3, |u| Ok((short_string(u)?, short_string(u)?)))?
            .into_iter()
            .collect(),
    })
}

fn close_reason(u: &mut Unstructured) -> Result<CloseReasonData> {
    Ok(CloseReasonData {
        code: *u.choose(&[
            AtbusCloseReason::Unknown as i32,
            AtbusCloseReason::Shutdown as i32,
            AtbusCloseReason::PeerReset as i32,
            77,
            -1,
        ])?,
        message: short_string(u)?,
    })
}

/// The driver: the endpoint and what the fuzzer knows of it.
struct Harness {
    endpoint: Endpoint,
    bound: usize,
    max_message_size: usize,
    now: Instant,
    /// The connections the endpoint has, as its events tell.
    live: BTreeMap<ConnectionId, ConnectionParams>,
    next_id: u64,
    /// Whether the last reachability event said "a" is reachable.
    reachable: bool,
    /// Per stream, where the next packet from "a" would naturally start.
    incoming_next: BTreeMap<i64, u64>,
    /// Per stream, one past the highest unit b has put on the wire.
    outgoing_end: BTreeMap<i64, u64>,
    /// The latest ping b sent on each connection, for "a" to answer.
    pings: BTreeMap<ConnectionId, PingData>,
    /// The latest packet timepoint b sent, for "a" to echo.
    timepoint: i64,
    /// Per stream, where the next message read may start at the earliest.
    read_next: BTreeMap<i64, u64>,
    /// Streams that refused a send and await `Writable`.
    blocked: BTreeSet<i64>,
    /// Streams finished by the application and not yet closed.
    finishing: BTreeSet<i64>,
    /// Streams of "a" that finished.
    peer_finished: BTreeSet<i64>,
    /// Folded over everything the endpoint gives back, so none of it is optimised away.
    digest: u64,
}

impl Harness {
    fn new(u: &mut Unstructured) -> Result<Self> {
        let message_timeout = match u.int_in_range(0..=3u8)? {
            0 => Some(Duration::from_millis(u.int_in_range(1..=10_000)?)),
            _ => None,
        };
        let config = config(message_timeout);
        let bound =
            config.peer_send_window as usize + config.max_message_size + config.peer_receive_budget;
        let max_message_size = config.max_message_size;
        let now = start();
        let mut harness = Self {
            endpoint: Endpoint::new(LOCAL, config, now),
            bound,
            max_message_size,
            now,
            live: BTreeMap::new(),
            next_id: 1,
            reachable: false,
            incoming_next: BTreeMap::new(),
            outgoing_end: BTreeMap::new(),
            pings: BTreeMap::new(),
            timepoint: 0,
            read_next: BTreeMap::new(),
            blocked: BTreeSet::new(),
            finishing: BTreeSet::new(),
            peer_finished: BTreeSet::new(),
            digest: 0,
        };
        harness.add_connection(u, ConnectionKind::Datagram)?;
        harness.add_connection(u, ConnectionKind::Stream)?;
        Ok(harness)
    }

    fn add_connection(&mut self, u: &mut Unstructured, kind: ConnectionKind) -> Result<()> {
        let mtu = match kind {
            ConnectionKind::Datagram => *u.choose(&[1232, 548, 128, 1500, 200])?,
            ConnectionKind::Stream => *u.choose(&[64 * 1024, 1232, 128, 16 * 1024])?,
        };
        let params = ConnectionParams { kind, mtu };
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.endpoint
            .add_connection(self.now, id, PEER, params)
            .expect("a fresh id and a valid MTU");
        self.live.insert(id, params);
        Ok(())
    }

    /// A live connection of `kind` if there is one, else any live one, else an unknown id.
    fn pick_connection(
        &self,
        u: &mut Unstructured,
        kind: ConnectionKind,
    ) -> Result<(ConnectionId, Option<ConnectionKind>)> {
        let of_kind: Vec<ConnectionId> = self
            .live
            .iter()
            .filter(|(_, params)| params.kind == kind)
            .map(|(&id, _)| id)
            .collect();
        let all: Vec<ConnectionId> = self.live.keys().copied().collect();
        let id = if !of_kind.is_empty() && u.ratio(15, 16)? {
            *u.choose(&of_kind)?
        } else if !all.is_empty() && u.ratio(7, 8)? {
            *u.choose(&all)?
        } else {
            ConnectionId(u.int_in_range(0..=self.next_id + 1)?)
        };
        Ok((id, self.live.get(&id).map(|params| params.kind)))
    }

    fn stream_id(&self, u: &mut Unstructured) -> Result<i64> {
        Ok(match u.int_in_range(0..=7u8)? {
            0 => int64(u)?,
            1 => i64::from(u.int_in_range(0..=40u8)?),
            _ => *u.choose(&STREAMS)?,
        })
    }

    fn head(&self, u: &mut Unstructured) -> Result<Option<MessageHead>> {
        if u.ratio(1, 32)? {
            return Ok(None);
        }
        let (source, destination) = match u.int_in_range(0..=31u8)? {
            0 => (String::new(), String::new()),
            1 => ("c".to_string(), LOCAL.to_string()),
            2 => (PEER.to_string(), "c".to_string()),
            3 => (short_string(u)?, short_string(u)?),
            _ => (PEER.to_string(), LOCAL.to_string()),
        };
        Ok(Some(MessageHead {
            source,
            destination,
            ..Default::default()
        }))
    }

    /// A ping from "a", or a pong: usually answering b's latest ping on `connection`.
    fn ping(&self, u: &mut Unstructured, connection: ConnectionId) -> Result<Body> {
        if u.arbitrary()? {
            return Ok(Body::Ping(PingData {
                sequence: int64(u)?,
                timepoint_microseconds: int64(u)?,
            }));
        }
        let pong = match self.pings.get(&connection) {
            Some(&ping) if u.ratio(7, 8)? => ping,
            _ => PingData {
                sequence: int64(u)?,
                timepoint_microseconds: int64(u)?,
            },
        };
        Ok(Body::Pong(pong))
    }

    /// A packet from "a": fragments from near where its stream left off.
    fn packet(&mut self, u: &mut Unstructured) -> Result<Body> {
        let stream_id = self.stream_id(u)?;
        let next = self.incoming_next.get(&stream_id).copied().unwrap_or(0);
        let stream_offset = match u.int_in_range(0..=15u8)? {
            0 => int64(u)?,
            1 => 0,
            2..=5 => near(u, next)? as i64,
            _ => next as i64,
        };
        let mut flags = 0;
        if u.ratio(1, 8)? {
            flags |= AtbusPacketFlagType::ResetOffset as i32;
        }
        let close = u.ratio(1, 8)?;
        if close {
            flags |= *u.choose(&[
                AtbusPacketFlagType::FinishStream as i32,
                AtbusPacketFlagType::FinishStream as i32,
                AtbusPacketFlagType::FinishConnection as i32,
                0,
            ])?;
        }
        if u.ratio(1, 32)? {
            flags = u.arbitrary()?;
        }
        let count = u.int_in_range(0..=4)?;
        let mut fragments = Vec::with_capacity(count + 1);
        let mut units = 0u64;
        for _ in 0..count {
            let meta = meta(u)?;
            let data = data(u)?;
            let has_more = u.ratio(1, 3)?;
            units += data.len() as u64 + u64::from(!has_more);
            fragments.push(FragmentType {
                packet_type: meta.packet_type,
                data,
                fragment_flag: if u.ratio(1, 32)? {
                    u.arbitrary()?
                } else if has_more {
                    AtbusPacketFragmentFlagType::HasMore as i32
                } else {
                    0
                },
                options: meta.options,
                labels: meta.labels,
                forward_for: None,
                close_reason: if u.ratio(1, 32)? {
                    Some(close_reason(u)?)
                } else {
                    None
                },
            });
        }
        if close {
            units += 1;
            fragments.push(FragmentType {
                close_reason: Some(close_reason(u)?),
                ..Default::default()
            });
        }
        let mut content = PacketContent {
            fragment: fragments,
        }
        .encode_to_vec();
        let padding_size = match u.int_in_range(0..=15u8)? {
            0 => {
                let padding = u.int_in_range(0..=16u8)?;
                content.extend((0..padding).map(|_| 0xa5));
                i32::from(padding)
            }
            1 => u.arbitrary()?,
            _ => 0,
        };
        if u.ratio(1, 64)? {
            // Content that is not a packet_content.
            content = u.arbitrary()?;
        }
        if let Ok(offset) = u64::try_from(stream_offset) {
            self.incoming_next
                .insert(stream_id, offset.saturating_add(units));
        }
        Ok(Body::Packet(PacketData {
            stream_id,
            stream_offset,
            content: Bytes::from(content),
            flags,
            padding_size,
            timepoint_microseconds: if u.ratio(7, 8)? {
                self.elapsed_micros()
            } else {
                int64(u)?
            },
        }))
    }

    /// An acknowledgement from "a" of what b sent, with arbitrary ranges and windows.
    fn acknowledge(&self, u: &mut Unstructured) -> Result<Body> {
        let entries = u.int_in_range(0..=3)?;
        let mut acknowledge = Vec::with_capacity(entries);
        for _ in 0..entries {
            let stream_id = if !self.outgoing_end.is_empty() && u.ratio(7, 8)? {
                let known: Vec<i64> = self.outgoing_end.keys().copied().collect();
                *u.choose(&known)?
            } else {
                self.stream_id(u)?
            };
            let sent = self.outgoing_end.get(&stream_id).copied().unwrap_or(0);
            let offset = |u: &mut Unstructured| -> Result<i64> {
                Ok(match u.int_in_range(0..=7u8)? {
                    0 => int64(u)?,
                    1 => 0,
                    2 | 3 => near(u, sent)? as i64,
                    4 => u.int_in_range(0..=sent)? as i64,
                    _ => sent as i64,
                })
            };
            let acknowledge_offset = offset(u)?;
            let received_max_offset = offset(u)?;
            let received_ranges = some(u, 4, |u| {
                let start = offset(u)?;
                let end = if u.ratio(3, 4)? {
                    start.saturating_add(i64::from(u.int_in_range(0..=2000u16)?))
                } else {
                    offset(u)?
                };
                Ok(OffsetRange { start, end })
            })?;
            let window_offset = match u.int_in_range(0..=7u8)? {
                0 => 0,
                1 => int64(u)?,
                2 => near(u, sent)? as i64,
                _ => sent.saturating_add(u64::from(u.int_in_range(0..=128u8)?) * 1024) as i64,
            };
            acknowledge.push(StreamAcknowledge {
                stream_id,
                acknowledge_offset,
                received_max_offset,
                received_ranges,
                window_offset,
            });
        }
        Ok(Body::Acknowledge(AcknowledgeData {
            acknowledge,
            timepoint_microseconds: if u.ratio(7, 8)? {
                self.timepoint
            } else {
                int64(u)?
            },
            ack_delay_microseconds: if u.ratio(7, 8)? {
                i64::from(u.int_in_range(0..=10_000u16)?)
            } else {
                int64(u)?
            },
        }))
    }

    fn elapsed_micros(&self) -> i64 {
        i64::try_from((self.now - start()).as_micros()).unwrap_or(i64::MAX)
    }

    /// One to three frames from "a", encoded back to back; sometimes one byte is corrupted or
    /// the end cut off.
    fn frames(&mut self, u: &mut Unstructured, connection: ConnectionId) -> Result<Bytes> {
        let count = u.int_in_range(1..=3)?;
        let mut wire = BytesMut::new();
        for _ in 0..count {
            let head = self.head(u)?;
            let body = match u.int_in_range(0..=15u8)? {
                0 => None,
                1..=3 => Some(self.ping(u, connection)?),
                4..=10 => Some(self.packet(u)?),
                _ => Some(self.acknowledge(u)?),
            };
            // A frame over the codec's limit is left out.
            let _ = peer_codec().encode(&FrameMessage { head, body }, &mut wire);
        }
        if !wire.is_empty() && u.ratio(1, 16)? {
            let at = u.choose_index(wire.len())?;
            if u.arbitrary()? {
                wire[at] ^= u.int_in_range(1..=255u8)?;
            } else {
                wire.truncate(at);
            }
        }
        Ok(wire.freeze())
    }

    /// Hands `bytes` to `connection`: a stream connection may get them in several chunks.
    fn deliver(&mut self, u: &mut Unstructured, connection: ConnectionId, mut bytes: Bytes) {
        let chunked = self.live.get(&connection).map(|params| params.kind)
            == Some(ConnectionKind::Stream)
            && u.ratio(1, 4).unwrap_or(false);
        if chunked {
            while !bytes.is_empty() {
                let len = u.int_in_range(1..=bytes.len()).unwrap_or(bytes.len());
                let chunk = bytes.split_to(len);
                self.endpoint.handle_input(self.now, connection, chunk);
            }
        } else {
            self.endpoint.handle_input(self.now, connection, bytes);
        }
    }

    /// Lets time pass to `to` (kept within the horizon and never backwards).
    fn advance_to(&mut self, to: Instant) {
        let horizon = start() + MAX_ELAPSED;
        self.now = to.min(horizon).max(self.now);
        self.endpoint.handle_timeout(self.now);
        self.settle();
    }

    /// Calls `handle_timeout` again while `poll_timeout` says a timer is due: every round must
    /// make progress (change a counter), or a runtime would spin on the engine forever.
    fn settle(&mut self) {
        for _ in 0..MAX_SETTLE_ROUNDS {
            self.drain_output();
            if self.endpoint.poll_timeout().is_none_or(|at| at > self.now) {
                return;
            }
            let before = self.endpoint.stats().clone();
            self.endpoint.handle_timeout(self.now);
            self.drain_output();
            let stuck = self
                .endpoint
                .poll_timeout()
                .is_some_and(|at| at <= self.now);
            assert!(
                !stuck || *self.endpoint.stats() != before,
                "poll_timeout stays at {:?} (now {:?}) and handle_timeout changes nothing",
                self.endpoint
                    .poll_timeout()
                    .map(|at| at.saturating_duration_since(start())),
                self.now - start()
            );
        }
        panic!("timers still due after {MAX_SETTLE_ROUNDS} rounds of handle_timeout");
    }

    fn read(&mut self, stream_id: i64, max: usize) {
        for _ in 0..max {
            let Some(message) = self.endpoint.read(PEER, stream_id) else {
                break;
            };
            assert!(
                message.data.len() <= self.max_message_size,
                "read a message of {} bytes, over max_message_size",
                message.data.len()
            );
            let next = self.read_next.entry(stream_id).or_default();
            assert!(
                message.offset >= *next,
                "stream {stream_id}: message at offset {} read after one ending at {next}",
                message.offset
            );
            *next = message.offset + message.data.len() as u64 + 1;
            self.mix(message.offset);
            self.mix(message.data.len() as u64);
            self.mix(u64::from(message.data.first().copied().unwrap_or(0)));
        }
    }

    fn send(&mut self, u: &mut Unstructured) -> Result<()> {
        let stream_id = if u.ratio(1, 32)? {
            -1 - i64::from(u.arbitrary::<u8>()?)
        } else {
            *u.choose(&STREAMS)?
        };
        let data = match u.int_in_range(0..=7u8)? {
            0 => Bytes::from(vec![0x33; *u.choose(&[64 * 1024, 64 * 1024 + 1, 70_000])?]),
            1 => Bytes::from(vec![0x44; u.int_in_range(0..=64 * 1024)?]),
            2 => Bytes::from(vec![0x55; u.int_in_range(0..=4096)?]),
            _ => Bytes::from(vec![0x66; u.int_in_range(0..=600)?]),
        };
        let len = data.len();
        let meta = meta(u)?;
        match self.endpoint.send(PEER, stream_id, data, meta) {
            Ok(offset) => self.mix(offset),
            Err(SendError::WouldBlock { peer }) => {
                assert_eq!(peer, PEER);
                self.blocked.insert(stream_id);
            }
            Err(SendError::MessageTooLarge { size, max }) => {
                assert_eq!((size, max), (len, self.max_message_size));
            }
            Err(SendError::ReservedStream { stream_id: refused }) => {
                assert!(refused < 0 && refused == stream_id);
            }
            Err(error) => self.mix(error.to_string().len() as u64),
        }
        Ok(())
    }

    fn finish(&mut self, u: &mut Unstructured) -> Result<()> {
        let stream_id = *u.choose(&STREAMS)?;
        let reason = close_reason(u)?;
        match self.endpoint.finish(PEER, stream_id, reason) {
            Ok(()) => {
                self.finishing.insert(stream_id);
            }
            Err(error) => {
                assert!(
                    self.finishing.contains(&stream_id),
                    "finish of stream {stream_id} refused: {error}"
                );
            }
        }
        Ok(())
    }

    /// Runs one operation chosen by the input.
    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.int_in_range(0..=15u8)? {
            0 => {
                let (connection, _) = self.pick_connection(u, ConnectionKind::Datagram)?;
                let len = u.int_in_range(0..=256)?;
                let bytes = Bytes::copy_from_slice(u.bytes(len.min(u.len()))?);
                self.endpoint.handle_input(self.now, connection, bytes);
            }
            1 => {
                let (connection, _) = self.pick_connection(u, ConnectionKind::Stream)?;
                let len = u.int_in_range(0..=64)?;
                let bytes = Bytes::copy_from_slice(u.bytes(len.min(u.len()))?);
                self.endpoint.handle_input(self.now, connection, bytes);
            }
            2..=6 => {
                let kind = if u.arbitrary()? {
                    ConnectionKind::Datagram
                } else {
                    ConnectionKind::Stream
                };
                let (connection, _) = self.pick_connection(u, kind)?;
                let wire = self.frames(u, connection)?;
                self.deliver(u, connection, wire);
            }
            7 => {
                let step = match u.int_in_range(0..=3u8)? {
                    0 => Duration::from_micros(u.int_in_range(0..=1000)?),
                    1 => Duration::from_millis(u.int_in_range(0..=100)?),
                    2 => Duration::from_millis(u.int_in_range(0..=5000)?),
                    _ => Duration::from_secs(u.int_in_range(0..=120)?),
                };
                self.advance_to(self.now + step);
            }
            8 => {
                if let Some(at) = self.endpoint.poll_timeout() {
                    self.advance_to(at);
                }
            }
            9 | 10 => {
                let stream_id = self.stream_id(u)?;
                let max = u.int_in_range(1..=8)?;
                self.read(stream_id, max);
            }
            11 | 12 => self.send(u)?,
            13 => self.finish(u)?,
            14 => {
                let kind = if u.arbitrary()? {
                    ConnectionKind::Datagram
                } else {
                    ConnectionKind::Stream
                };
                let (connection, _) = self.pick_connection(u, kind)?;
                if u.arbitrary()? {
                    self.endpoint.connection_lost(self.now, connection);
                } else {
                    let reason = close_reason(u)?;
                    self.endpoint.close_connection(connection, reason);
                }
            }
            _ => {
                if self.live.len() < MAX_CONNECTIONS {
                    let kind = if u.arbitrary()? {
                        ConnectionKind::Datagram
                    } else {
                        ConnectionKind::Stream
                    };
                    self.add_connection(u, kind)?;
                }
            }
        }
        Ok(())
    }

    /// Takes every event and transmit the operation produced, checking each.
    fn drain(&mut self) {
        self.drain_output();
        self.check_state();
    }

    /// Takes every event and transmit, checking each.
    fn drain_output(&mut self) {
        let mut transmits = 0;
        loop {
            let mut progress = false;
            while let Some(event) = self.endpoint.poll_event() {
                progress = true;
                self.check_event(event);
            }
            while let Some(transmit) = self.endpoint.poll_transmit(self.now) {
                progress = true;
                transmits += 1;
                assert!(transmits < MAX_TRANSMITS, "poll_transmit does not run dry");
                self.check_transmit(transmit);
            }
            if !progress {
                break;
            }
        }
    }

    /// Checks the endpoint's state after an operation.
    fn check_state(&mut self) {
        let memory = self.endpoint.memory();
        assert!(
            memory <= self.bound,
            "memory {memory} over the bound {}",
            self.bound
        );
        let reachable = self.endpoint.reachable_peers().any(|peer| peer == PEER);
        assert_eq!(reachable, !self.live.is_empty(), "reachable_peers");
        assert_eq!(reachable, self.reachable, "reachability events");
        let ids: Vec<ConnectionId> = self.live.keys().copied().collect();
        for id in ids {
            let wants = self.endpoint.wants_input(id);
            let rtt = self.endpoint.rtt(id).map_or(0, |rtt| rtt.as_nanos());
            self.mix(u64::from(wants) ^ rtt as u64);
        }
        if let Some(at) = self.endpoint.poll_timeout() {
            self.mix(at.saturating_duration_since(start()).as_nanos() as u64);
        }
    }

    fn check_event(&mut self, event: Event) {
        match event {
            Event::Readable { peer, stream_id } => {
                assert_eq!(peer, PEER);
                self.mix(stream_id as u64);
            }
            Event::Writable { peer, stream_id } => {
                assert_eq!(peer, PEER);
                assert!(
                    self.blocked.remove(&stream_id),
                    "Writable for stream {stream_id}, which was not refused"
                );
            }
            Event::StreamFinished {
                peer,
                stream_id,
                reason,
            } => {
                assert_eq!(peer, PEER);
                assert!(
                    self.peer_finished.insert(stream_id),
                    "stream {stream_id} of the peer finished twice"
                );
                self.mix(reason.code as u64);
            }
            Event::MessagesExpired {
                peer,
                stream_id,
                count,
            } => {
                assert_eq!(peer, PEER);
                assert!(
                    count > 0,
                    "MessagesExpired of no message on stream {stream_id}"
                );
                self.mix(count as u64);
            }
            Event::StreamClosed { peer, stream_id } => {
                assert_eq!(peer, PEER);
                assert!(
                    self.finishing.remove(&stream_id),
                    "StreamClosed for stream {stream_id}, which was not finished"
                );
                self.blocked.remove(&stream_id);
            }
            Event::PeerReachable { peer } => {
                assert_eq!(peer, PEER);
                assert!(!self.reachable, "PeerReachable twice");
                self.reachable = true;
            }
            Event::PeerUnreachable { peer } => {
                assert_eq!(peer, PEER);
                assert!(self.reachable, "PeerUnreachable while unreachable");
                self.reachable = false;
            }
            Event::ConnectionLost {
                connection,
                peer,
                reason,
            } => {
                assert_eq!(peer, PEER);
                assert!(
                    self.live.remove(&connection).is_some(),
                    "ConnectionLost for {connection}, which was not live"
                );
                self.pings.remove(&connection);
                self.mix(reason.code as u64);
            }
            // Connections here are bound by add_connection: no handshake ever runs.
            other => panic!("an event only a handshake can cause: {other:?}"),
        }
    }

    fn check_transmit(&mut self, transmit: Transmit) {
        let Transmit { connection, data } = transmit;
        let params = *self
            .live
            .get(&connection)
            .unwrap_or_else(|| panic!("a transmit on {connection}, which is not live"));
        assert!(!data.is_empty(), "an empty transmit");
        assert!(
            data.len() <= params.mtu,
            "a transmit of {} bytes on a {:?} connection of MTU {}",
            data.len(),
            params.kind,
            params.mtu
        );
        let mut rest = data;
        while !rest.is_empty() {
            let frame = match local_codec().decode_bytes(&mut rest) {
                Ok(Decoded::Frame(frame)) => frame,
                other => panic!("a transmit holds something other than whole frames: {other:?}"),
            };
            let head = frame.message.head.unwrap_or_default();
            assert_eq!(
                (head.source.as_str(), head.destination.as_str()),
                (LOCAL, PEER)
            );
            match frame.message.body {
                Some(Body::Ping(ping)) => {
                    self.pings.insert(connection, ping);
                }
                Some(Body::Packet(packet)) => {
                    self.timepoint = packet.timepoint_microseconds;
                    let content = PacketContent::decode(packet.content)
                        .expect("b sends packets whose content decodes");
                    let units: u64 = content
                        .fragment
                        .iter()
                        .map(|fragment| {
                            fragment.data.len() as u64
                                + u64::from(
                                    fragment.fragment_flag
                                        & AtbusPacketFragmentFlagType::HasMore as i32
                                        == 0,
                                )
                        })
                        .sum();
                    let offset = u64::try_from(packet.stream_offset).expect("b sends offsets >= 0");
                    let end = self.outgoing_end.entry(packet.stream_id).or_default();
                    *end = (*end).max(offset + units);
                }
                Some(Body::Pong(pong)) => self.mix(pong.sequence as u64),
                Some(Body::Acknowledge(ack)) => self.mix(ack.acknowledge.len() as u64),
                None => panic!("b sent a frame without a body"),
            }
        }
    }

    fn mix(&mut self, value: u64) {
        self.digest = (self.digest ^ value).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u) else {
        return;
    };
    harness.drain();
    for _ in 0..MAX_OPS {
        if u.is_empty() || harness.step(&mut u).is_err() {
            break;
        }
        harness.drain();
    }
    black_box(harness.endpoint.stats());
    black_box(harness.digest);
});
