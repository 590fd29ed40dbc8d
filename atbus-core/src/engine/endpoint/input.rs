//! What the endpoint does with bytes that arrive: frames decoded, checked against the
//! connection's peer, and dispatched to pings, packets and acknowledgements.

use std::time::{Duration, Instant};

use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::{
    AcknowledgeData, AtbusCloseReason, AtbusPacketFlagType, CloseReasonData, FrameMessage,
    PacketData, PingData,
};
use atbus_proto::{DecodeError, Decoded};
use bytes::Bytes;

use super::Endpoint;
use crate::engine::auth::AuthFailure;
use crate::engine::close::CloseReason;
use crate::engine::config::ConnectionKind;
use crate::engine::connection::Phase;
use crate::engine::event::Event;
use crate::engine::peer::RecvStream;
use crate::engine::piece::PieceEnd;
use crate::engine::reassembly::{Inserted, Reassembler};
use crate::engine::rtt::RttEstimator;
use crate::engine::stream_id::StreamId;
use crate::engine::transmit::ConnectionId;
use crate::engine::wire::{decode_packet, has_flag};

/// Memory a held piece is charged beyond its data, as the reassembler counts it.
const PIECE_COST_BOUND: usize = 64;

impl Endpoint {
    /// Takes bytes that arrived on `connection`: a datagram, or the next bytes of a stream.
    pub fn handle_input(&mut self, now: Instant, connection: ConnectionId, data: Bytes) {
        self.tick(now);
        self.take_input(now, connection, data);
        // Whatever arrived may call for an answer on this connection or its peer's others.
        if let Some(peer) = self.connections.get(&connection).map(|c| c.peer.clone()) {
            self.wake.insert(connection);
            self.wake_peer(&peer);
        }
    }

    /// Decodes what arrived on `connection` and handles each frame.
    fn take_input(&mut self, now: Instant, connection: ConnectionId, data: Bytes) {
        let Some(state) = self.connections.get_mut(&connection) else {
            self.stats.unknown_connection += 1;
            return;
        };
        self.stats.bytes_received += data.len() as u64;
        if !state.is_established() {
            state.unauthenticated_received += data.len();
        }
        state.received_total += data.len();
        match state.params.kind {
            ConnectionKind::Datagram => {
                let mut datagram = data;
                while !datagram.is_empty() {
                    match self.codec.decode_bytes(&mut datagram) {
                        Ok(Decoded::Frame(frame)) => {
                            self.handle_frame(now, connection, frame.message, frame.wire_len)
                        }
                        // A truncated or corrupt frame spoils the rest of the datagram.
                        Ok(Decoded::Incomplete { .. }) | Err(_) => {
                            self.stats.invalid_frames += 1;
                            // Garbage instead of a hello: forget the connection.
                            if self
                                .connections
                                .get(&connection)
                                .is_some_and(|state| matches!(state.phase, Phase::AwaitingHello))
                            {
                                self.refuse(connection, AuthFailure::Malformed);
                            }
                            break;
                        }
                    }
                }
            }
            ConnectionKind::Stream => {
                state.read_buffer.extend_from_slice(&data);
                loop {
                    let Some(state) = self.connections.get_mut(&connection) else {
                        return;
                    };
                    if state.closing.is_some() {
                        return; // refused: nothing more is read
                    }
                    // Until the hello is in, frames are held to the handshake's size limit.
                    let awaiting_hello = matches!(state.phase, Phase::AwaitingHello);
                    let codec = if awaiting_hello {
                        &self.handshake_codec
                    } else {
                        &self.codec
                    };
                    match codec.decode(&mut state.read_buffer) {
                        Ok(Decoded::Frame(frame)) => {
                            self.handle_frame(now, connection, frame.message, frame.wire_len)
                        }
                        Ok(Decoded::Incomplete { .. }) => break,
                        Err(error) if awaiting_hello => {
                            self.stats.invalid_frames += 1;
                            state.read_buffer.clear();
                            let failure = match error {
                                DecodeError::FrameTooLong { .. } => AuthFailure::Oversized,
                                _ => AuthFailure::Malformed,
                            };
                            self.refuse(connection, failure);
                            return;
                        }
                        Err(error) => {
                            // A stream cannot be resynchronised after a bad frame.
                            self.stats.invalid_frames += 1;
                            let reason = CloseReasonData {
                                code: AtbusCloseReason::Unknown as i32,
                                message: format!("undecodable frame: {error}"),
                            };
                            self.drop_connection(now, connection, reason);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        frame: FrameMessage,
        wire_len: usize,
    ) {
        let Some(state) = self.connections.get(&connection) else {
            return;
        };
        if state.closing.is_some() {
            return;
        }
        // A frame without a body carries nothing this version understands: ignored, whoever
        // sent it and whatever the connection's phase (it neither counts as a hello nor breaks
        // a rule of 8.7).
        if frame.body.is_none() {
            self.stats.bodiless_frames += 1;
            return;
        }
        let is_handshake = matches!(&frame.body,
            Some(Body::Packet(packet)) if packet.stream_id == StreamId::HANDSHAKE.get());
        if is_handshake || !state.is_established() {
            if let Some(state) = self.connections.get_mut(&connection) {
                state.last_received = now;
            }
            self.handle_handshake_frame(now, connection, frame, wire_len);
            return;
        }
        let head = frame.head.unwrap_or_default();
        let is_ping = matches!(frame.body, Some(Body::Ping(_) | Body::Pong(_)));
        // Pings may come without a head; everything else must come from the peer's authenticated
        // name, and be for us.
        if !(is_ping && head.source.is_empty()) {
            if !self.authorize(now, connection, &head, frame.body.as_ref()) {
                return;
            }
            // A frame from the authenticated peer after our accept, for us or to forward: the
            // address it came from is its own.
            if let Some(state) = self.connections.get_mut(&connection) {
                if state.unvalidated_sent > 0 {
                    state.validated = true;
                }
            }
            if head.destination != self.name {
                let routable = matches!(frame.body, Some(Body::Packet(_) | Body::Acknowledge(_)));
                if self.forwarder.is_some() && routable {
                    if let Some(state) = self.connections.get_mut(&connection) {
                        state.last_received = now;
                    }
                    self.forward(
                        connection,
                        FrameMessage {
                            head: Some(head),
                            body: frame.body,
                        },
                    );
                } else {
                    self.stats.misaddressed_frames += 1;
                }
                return;
            }
        }
        // A frame a relay forwarded belongs to the node it names (`authorize` let only relays
        // set the name).
        let tags = (head.source_instance, head.destination_instance);
        let originator = (!head.forward_for_source.is_empty()).then_some(head.forward_for_source);
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        // The accepting side sends nothing but handshakes until it has our confirm.
        state.confirm_frame = None;
        // A frame from the authenticated peer after our accept: its address is its own.
        if state.unvalidated_sent > 0 {
            state.validated = true;
        }
        state.last_received = now;
        self.stats.frames_received += 1;
        if let Some(originator) = &originator {
            let data = matches!(frame.body, Some(Body::Packet(_) | Body::Acknowledge(_)));
            if data && !self.admit_relayed(now, originator, tags, connection) {
                return;
            }
        }
        match frame.body {
            Some(Body::Ping(ping)) => {
                if let Some(state) = self.connections.get_mut(&connection) {
                    state.owe_pong(ping);
                }
            }
            Some(Body::Pong(pong)) => self.handle_pong(now, connection, pong),
            Some(Body::Packet(packet)) => self.handle_packet(now, connection, originator, packet),
            Some(Body::Acknowledge(ack)) => self.handle_ack(now, connection, originator, ack),
            None => {}
        }
    }

    fn handle_pong(&mut self, now: Instant, connection: ConnectionId, pong: PingData) {
        let now_us = self.timepoint(now);
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        // Our timepoints are positive and never ahead of now: anything else is stale or forged.
        if pong.sequence != state.ping_sequence
            || !(1..=now_us).contains(&pong.timepoint_microseconds)
        {
            return;
        }
        let sample = Duration::from_micros((now_us - pong.timepoint_microseconds) as u64);
        state.rtt.update(sample, Duration::ZERO);
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        originator: Option<String>,
        packet: PacketData,
    ) {
        if packet.stream_id == StreamId::ROUTING.get() {
            let reason = decode_packet(&packet)
                .ok()
                .and_then(|decoded| decoded.pieces.into_iter().next())
                .and_then(|piece| match piece.end {
                    PieceEnd::Stream(reason) => Some(reason),
                    _ => None,
                });
            match (originator, reason) {
                (Some(peer), Some(reason)) => {
                    self.on_unroutable(now, &peer, reason);
                    self.wake_peer(&peer);
                }
                (Some(peer), None) if packet.stream_offset > 0 => {
                    self.on_path_mtu(&peer, packet.stream_offset as usize);
                    self.wake_peer(&peer);
                }
                _ => self.stats.invalid_packets += 1,
            }
            return;
        }
        let decoded = match decode_packet(&packet) {
            Ok(decoded) => decoded,
            Err(_) => {
                self.stats.invalid_packets += 1;
                return;
            }
        };
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        let peer_name = match originator {
            Some(originator) => {
                let via = state.peer.clone();
                let peer = self.peers.entry(originator.clone()).or_default();
                peer.via = Some(via);
                peer.route_latest_packet = Some((packet.timepoint_microseconds, now));
                originator
            }
            None => {
                state.latest_packet = Some((packet.timepoint_microseconds, now));
                state.peer.clone()
            }
        };
        self.wake_peer(&peer_name);
        let routed = peer_name != self.connections[&connection].peer;
        let routes = packet.stream_id == StreamId::ROUTES.get();
        let budget = self.config.peer_receive_budget;
        let window = self.config.stream_receive_window;
        let max_streams = self.config.max_streams_per_peer;
        let Some(peer) = self.peers.get_mut(&peer_name) else {
            return;
        };
        let reset = has_flag(packet.flags, AtbusPacketFlagType::ResetOffset);
        // A packet without pieces is a window probe: the peer wants our acknowledgement.
        let probe = decoded.pieces.is_empty() && decoded.connection_close.is_none();
        if !decoded.pieces.is_empty() || reset || probe {
            if !peer.recv.contains_key(&packet.stream_id) && peer.recv.len() >= max_streams {
                self.stats.dropped_too_many_streams += 1;
                return;
            }
            peer.recv
                .entry(packet.stream_id)
                .or_insert_with(|| RecvStream {
                    reassembler: Reassembler::new(budget, window),
                    readable: false,
                    advertised: 0,
                    carried: Default::default(),
                });
            if reset {
                if let Some(stream) = peer.recv.get_mut(&packet.stream_id) {
                    let held = stream.reassembler.held();
                    // Offsets are checked non-negative by decode_packet.
                    self.stats.units_skipped +=
                        stream.reassembler.reset_to(packet.stream_offset as u64);
                    peer.received_held -= held - stream.reassembler.held();
                }
            }
            let peer_window = peer.window_offset(packet.stream_id, budget, window);
            let Some(stream) = peer.recv.get_mut(&packet.stream_id) else {
                return;
            };
            let held_before = stream.reassembler.held();
            let advertised = stream.advertised;
            let mut duplicate = false;
            // Data beyond the window (what we announced, or may announce now) is refused, so
            // that what is held never keeps the next message from fitting.
            let limit = peer_window.max(advertised);
            let mut new_gap = false;
            for piece in decoded.pieces {
                new_gap |= piece.start > stream.reassembler.received_max_offset();
                if piece.end_offset() > limit {
                    self.stats.dropped_out_of_range += 1;
                    continue;
                }
                let charge = piece.data.len() + PIECE_COST_BOUND;
                let held_now = peer.received_held + stream.reassembler.held() - held_before;
                if held_now + charge > budget {
                    self.stats.dropped_over_budget += 1;
                    continue;
                }
                match stream.reassembler.insert(piece) {
                    Inserted::New => {}
                    Inserted::Duplicate => {
                        self.stats.duplicate_pieces += 1;
                        duplicate = true;
                    }
                    Inserted::OverBudget => self.stats.dropped_over_budget += 1,
                    Inserted::OutOfRange => self.stats.dropped_out_of_range += 1,
                }
            }
            peer.received_held = peer.received_held + stream.reassembler.held() - held_before;
            // A new gap asks for a resend at once; a duplicate means our acknowledgement was
            // lost; a probe wants our window.
            if new_gap || duplicate || probe {
                peer.ack_now = true;
            }
            // Route tables between relays are the engine's own: never Readable.
            if !stream.readable && stream.reassembler.has_message() && !routes {
                stream.readable = true;
                self.events.push_back(Event::Readable {
                    peer: peer_name.clone(),
                    stream_id: packet.stream_id.into(),
                });
            }
            if let Some(finished) = stream.reassembler.pop_finished() {
                self.events.push_back(Event::StreamFinished {
                    peer: peer_name.clone(),
                    stream_id: packet.stream_id.into(),
                    reason: CloseReason::from_wire(finished.reason),
                });
            }
            peer.ack_pending.insert(packet.stream_id);
            peer.packets_since_ack += 1;
            peer.ack_connection = Some(connection);
            if peer.packets_since_ack >= self.config.ack_every_packets {
                peer.ack_now = true;
            }
            if peer.ack_deadline.is_none() {
                peer.ack_deadline = Some(now + self.config.max_ack_delay);
            }
        }
        if routes {
            self.take_route_tables(&peer_name);
        }
        // Only the connection's own peer may close it (a relayed frame cannot).
        if let (Some(reason), false) = (decoded.connection_close, routed) {
            self.drop_connection(now, connection, reason);
        }
    }

    fn handle_ack(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        originator: Option<String>,
        ack: AcknowledgeData,
    ) {
        let now_us = self.timepoint(now);
        let initial_rtt = self.config.initial_rtt;
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        let sample =
            (ack.timepoint_microseconds > 0 && ack.timepoint_microseconds <= now_us).then(|| {
                let elapsed = Duration::from_micros((now_us - ack.timepoint_microseconds) as u64);
                let delay = Duration::from_micros(ack.ack_delay_microseconds.max(0) as u64);
                (elapsed, delay.min(elapsed))
            });
        // Through a relay, the sample is of the whole path, kept with the peer.
        let (peer_name, loss_delay) = match originator {
            Some(originator) => {
                let via = state.peer.clone();
                let peer = self.peers.entry(originator.clone()).or_default();
                peer.via = Some(via);
                let rtt = peer
                    .route_rtt
                    .get_or_insert_with(|| RttEstimator::new(initial_rtt));
                if let Some((elapsed, delay)) = sample {
                    rtt.update(elapsed, delay);
                }
                (originator, rtt.loss_delay())
            }
            None => {
                if let Some((elapsed, delay)) = sample {
                    state.rtt.update(elapsed, delay);
                }
                (state.peer.clone(), state.rtt.loss_delay())
            }
        };
        self.wake_peer(&peer_name);
        let Some(peer) = self.peers.get_mut(&peer_name) else {
            return;
        };
        for entry in ack.acknowledge {
            let Some(stream) = peer.send.get_mut(&entry.stream_id) else {
                continue;
            };
            let (Ok(acknowledged), Ok(_)) = (
                u64::try_from(entry.acknowledge_offset),
                u64::try_from(entry.received_max_offset),
            ) else {
                self.stats.invalid_acks += 1;
                continue;
            };
            let ranges: Vec<_> = entry
                .received_ranges
                .iter()
                .filter_map(|range| {
                    let start = u64::try_from(range.start).ok()?;
                    let end = u64::try_from(range.end).ok()?;
                    (start < end).then_some(start..end)
                })
                .collect();
            if let Ok(window) = u64::try_from(entry.window_offset) {
                stream.update_window(window);
            }
            match stream.on_ack(acknowledged, &ranges) {
                Ok(newly) => {
                    if newly > 0 {
                        peer.unacked_units -= newly;
                        peer.rto_backoff = 0;
                    }
                }
                Err(_) => {
                    self.stats.invalid_acks += 1;
                    super::settle(&mut self.connections, &mut self.stats, stream, now, true);
                    continue;
                }
            }
            self.stats.flights_lost += stream.detect_lost(now, loss_delay) as u64;
            super::settle(&mut self.connections, &mut self.stats, stream, now, true);
            // Emptied of flights while the window is shut: arm the window probe.
            stream.note_blocked(now);
            if stream.is_finished_and_acked() {
                peer.send.remove(&entry.stream_id);
                peer.blocked.remove(&entry.stream_id);
                self.events.push_back(Event::StreamClosed {
                    peer: peer_name.clone(),
                    stream_id: entry.stream_id.into(),
                });
            }
        }
        self.wake_blocked(&peer_name);
    }
}
