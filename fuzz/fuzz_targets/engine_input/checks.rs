//! The checks: after every operation the endpoint's transmits and events are drained and each
//! checked (whole frames from "b" to the connection's peer, or through a relay, or forwarded as
//! they came, on live connections within their MTU; events that agree with what happened), then
//! its state (memory bound, reachability, nothing in flight when nothing is unacknowledged); and
//! after time passes, the timers must settle.

use std::sync::OnceLock;

use atbus_core::engine::{ConnectionId, ConnectionKind, Event, Transmit};
use atbus_proto::protocol::{
    AtbusPacketFlagType, AtbusPacketFragmentFlagType, PacketContent, frame_message::Body,
};
use atbus_proto::{Decoded, FrameCodec};
use prost::Message;

use crate::common::{codec_with_limit, start};
use crate::relay::{ROUTING_STREAM, digest};
use crate::world::{Harness, known};
use crate::{LOCAL, MAX_FRAME_LENGTH, MAX_SETTLE_ROUNDS, MAX_TRANSMITS, NAMES};

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
        // The drain emptied the forward queues (but those of blocked transports): what is
        // forwarded later came in later.
        if self.transport_blocked.is_empty() || self.expected_forwards.len() > 100_000 {
            self.expected_forwards.clear();
        }
    }

    /// Takes every event and transmit, checking each.
    pub(crate) fn drain_output(&mut self) {
        self.forwarded_bytes.clear();
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
        for name in NAMES {
            let reachable = self.endpoint.reachable_peers().any(|peer| peer == name);
            let live = self.live.values().any(|link| link.peer == name);
            assert_eq!(reachable, live, "reachable_peers: {name}");
            assert_eq!(
                reachable,
                self.reachable.contains(name),
                "reachability events: {name}"
            );
        }
        // Every flight leaves its connection's books once its units are acknowledged, expired or
        // dropped.
        if self.endpoint.unacknowledged() == 0 {
            for (&id, link) in &self.live {
                if link.params.kind == ConnectionKind::Datagram {
                    let in_flight = self.endpoint.congestion_window(id).map_or(0, |(_, f)| f);
                    assert_eq!(
                        in_flight, 0,
                        "{id} (to {}) has {in_flight} units in flight with nothing unacknowledged",
                        link.peer
                    );
                }
            }
        }
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
                let stream_id = stream_id.get();
                known(&peer);
                self.mix(stream_id as u64);
            }
            Event::Writable { peer, stream_id } => {
                let stream_id = stream_id.get();
                let peer = known(&peer);
                assert!(
                    self.blocked.remove(&(peer, stream_id)),
                    "Writable for stream {stream_id} of {peer}, which was not refused"
                );
            }
            Event::StreamFinished {
                peer,
                stream_id,
                reason,
            } => {
                let stream_id = stream_id.get();
                let peer = known(&peer);
                assert!(
                    self.peer_finished.insert((peer, stream_id)),
                    "stream {stream_id} of {peer} finished twice"
                );
                self.mix(reason.code.to_wire() as u64);
            }
            Event::MessagesExpired {
                peer,
                stream_id,
                count,
            } => {
                known(&peer);
                assert!(
                    count > 0,
                    "MessagesExpired of no message on stream {stream_id}"
                );
                self.mix(count as u64);
            }
            Event::StreamClosed { peer, stream_id } => {
                let stream_id = stream_id.get();
                let peer = known(&peer);
                assert!(
                    self.finishing.remove(&(peer, stream_id)),
                    "StreamClosed for stream {stream_id} of {peer}, which was not finished"
                );
                self.blocked.remove(&(peer, stream_id));
            }
            Event::PeerReachable { peer } => {
                let peer = known(&peer);
                assert!(self.reachable.insert(peer), "PeerReachable twice: {peer}");
            }
            Event::PeerUnreachable { peer } => {
                let peer = known(&peer);
                assert!(
                    self.reachable.remove(peer),
                    "PeerUnreachable while unreachable: {peer}"
                );
            }
            Event::Unroutable {
                peer,
                reason,
                dropped_units,
            } => {
                let peer = known(&peer);
                assert!(self.mode.is_some(), "Unroutable without relays");
                assert!(
                    !self.live.values().any(|link| link.peer == peer),
                    "Unroutable for {peer}, which has a direct connection"
                );
                // What was queued to it is dropped: no Writable or StreamClosed will come.
                self.blocked.retain(|(name, _)| *name != peer);
                self.finishing.retain(|(name, _)| *name != peer);
                self.mix(reason.code.to_wire() as u64 ^ dropped_units);
            }
            Event::Authenticated {
                connection, peer, ..
            } => self.authenticated(connection, &peer),
            Event::ConnectionLost {
                connection,
                peer,
                reason,
            } => {
                let link = self.live.remove(&connection).unwrap_or_else(|| {
                    panic!("ConnectionLost for {connection}, which was not live")
                });
                assert_eq!(peer, link.peer, "ConnectionLost names another peer");
                self.pings.remove(&connection);
                self.transport_blocked.remove(&connection);
                self.mix(reason.code.to_wire() as u64);
            }
            // Connections here are bound by add_connection, or open by a handshake that works.
            other => panic!("an event only a failed handshake can cause: {other:?}"),
        }
    }

    pub(crate) fn check_transmit(&mut self, transmit: Transmit) {
        let Transmit { connection, data } = transmit;
        let link = *self
            .live
            .get(&connection)
            .unwrap_or_else(|| panic!("a transmit on {connection}, which is not live"));
        let params = link.params;
        let closing = |data: &[u8]| {
            let mut rest = bytes::Bytes::copy_from_slice(data);
            std::iter::from_fn(|| match local_codec().decode_bytes(&mut rest) {
                Ok(Decoded::Frame(frame)) => Some(frame.message.body),
                _ => None,
            })
            .any(|body| {
                matches!(body, Some(Body::Packet(packet))
                    if packet.flags & AtbusPacketFlagType::FinishConnection as i32 != 0)
            })
        };
        assert!(
            !self.transport_blocked.contains(&connection) || closing(&data),
            "a transmit on {connection}, whose transport is blocked"
        );
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
            let head = frame.message.head.clone().unwrap_or_default();
            assert_eq!(head.source, LOCAL, "a frame from b not from b");
            // b's own frames are never on the routing stream: there, only its notices (their
            // `forward_for_source` names the destination, which may be empty).
            let routing = matches!(&frame.message.body,
                Some(Body::Packet(packet)) if packet.stream_id == ROUTING_STREAM);
            if !head.forward_for_source.is_empty() || head.forward_for_connection_id != 0 || routing
            {
                // A frame b forwarded, or a routing notice of its own.
                let relay = self.mode.is_some_and(|mode| mode.b_relay);
                assert!(relay, "b, not a relay, stamped a frame: {head:?}");
                let forwarded = self.expected_forwards.contains(&digest(&frame.message));
                let notice = routing && head.forward_for_connection_id == 0;
                assert!(
                    forwarded || notice,
                    "b forwarded a frame it did not get, or changed it: {head:?}"
                );
                assert!(
                    head.destination == link.peer || link.relay,
                    "b forwarded a frame for {:?} to {}, not a relay",
                    head.destination,
                    link.peer
                );
                let total = self.forwarded_bytes.entry(connection).or_default();
                *total += frame.wire_len;
                assert!(
                    *total <= self.forward_limit,
                    "{connection} took {total} bytes of forwarded frames at once (limit {})",
                    self.forward_limit
                );
                continue;
            }
            let peer = if head.destination == link.peer {
                link.peer
            } else {
                // Through a relay: to a peer without a direct connection, with room for the
                // relay's stamps.
                let peer = known(&head.destination);
                assert!(
                    link.relay,
                    "b sent a frame for {peer} to {}, not a relay",
                    link.peer
                );
                // (The engine's view: a connection closed by this very drain is still in `live`
                // until its ConnectionLost is polled.)
                assert!(
                    !self.endpoint.reachable_peers().any(|other| other == peer),
                    "b sent a frame for {peer} through {}, while it has a connection: {:?} \
                     (handshake: {:?})",
                    link.peer,
                    frame.message.body,
                    self.handshaking
                );
                let room = LOCAL.len() + link.peer.len() + 32;
                assert!(
                    frame.wire_len + room <= params.mtu,
                    "a frame of {} bytes for {peer} through {} leaves no room for its stamps \
                     (MTU {})",
                    frame.wire_len,
                    link.peer,
                    params.mtu
                );
                assert!(
                    !matches!(frame.message.body, Some(Body::Ping(_) | Body::Pong(_))),
                    "b pinged {peer} through a relay"
                );
                peer
            };
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
                    let end = self
                        .outgoing_end
                        .entry((peer, packet.stream_id))
                        .or_default();
                    *end = (*end).max(offset + units);
                }
                Some(Body::Pong(pong)) => self.mix(pong.sequence as u64),
                Some(Body::Acknowledge(ack)) => self.mix(ack.acknowledge.len() as u64),
                None => panic!("b sent a frame without a body"),
            }
        }
    }
}
