//! The checks: after every operation the endpoint's transmits and events are drained and each
//! checked (whole frames from "b" to "a" on live connections within their MTU, events that agree
//! with what happened), then its state (memory bound, reachability); and after time passes, the
//! timers must settle.

use std::sync::OnceLock;

use atbus_core::engine::{ConnectionId, Event, Transmit};
use atbus_proto::protocol::{AtbusPacketFragmentFlagType, PacketContent, frame_message::Body};
use atbus_proto::{Decoded, FrameCodec};
use prost::Message;

use crate::common::{codec_with_limit, start};
use crate::world::Harness;
use crate::{LOCAL, MAX_FRAME_LENGTH, MAX_SETTLE_ROUNDS, MAX_TRANSMITS, PEER};

/// The codec b decodes with: what it sends must decode with it.
pub(crate) fn local_codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| codec_with_limit(MAX_FRAME_LENGTH))
}

impl Harness {
    /// Calls `handle_timeout` again while `poll_timeout` says a timer is due: every round must
    /// make progress (change a counter), or a runtime would spin on the engine forever.
    pub(crate) fn settle(&mut self) {
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

    /// Takes every event and transmit the operation produced, checking each.
    pub(crate) fn drain(&mut self) {
        self.drain_output();
        self.check_state();
    }

    /// Takes every event and transmit, checking each.
    pub(crate) fn drain_output(&mut self) {
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
    pub(crate) fn check_state(&mut self) {
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

    pub(crate) fn check_event(&mut self, event: Event) {
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

    pub(crate) fn check_transmit(&mut self, transmit: Transmit) {
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
}
