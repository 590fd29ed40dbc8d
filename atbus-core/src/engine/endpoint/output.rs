//! What the endpoint sends: for one connection at a time, a transmit of whole frames up to its
//! MTU: pongs owed, a ping when due, the peer's acknowledgement when due, then stream data if the
//! connection is the peer's best.

use std::time::{Duration, Instant};

use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AcknowledgeData, AtbusPacketFlagType, CloseReasonData, FrameMessage, MessageHead, OffsetRange,
    PacketData, PingData, StreamAcknowledge,
};
use bytes::{Bytes, BytesMut};
use prost::Message;
use prost::encoding::encoded_len_varint;

use super::Endpoint;
use crate::engine::connection::Phase;
use crate::engine::piece::PieceEnd;
use crate::engine::send::SendStream;
use crate::engine::transmit::{ConnectionId, Transmit};
use crate::engine::wire::{encode_content, fragment_of, fragment_overhead};

/// Room kept for the growth of length varints when a frame is filled to its MTU.
const VARINT_SLACK: usize = 6;

impl Endpoint {
    /// The next transmit, if any connection has something to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.tick(now);
        self.announce_routes(now);
        for id in self.woken(now) {
            if let Some(reason) = self.connections.get(&id).and_then(|c| c.closing.clone()) {
                let data = self.build_close(id, reason.clone());
                self.drop_connection(now, id, reason);
                if let Some(data) = data {
                    self.stats.bytes_sent += data.len() as u64;
                    return Some(Transmit {
                        connection: id,
                        data,
                    });
                }
                continue;
            }
            let Some(state) = self.connections.get(&id) else {
                self.wake.remove(&id);
                continue;
            };
            // A connection whose transport is backed up stays woken, and waits.
            if state.transport_blocked {
                continue;
            }
            if self.may_have_output(now, id) {
                if let Some(data) = self.build_transmit(now, id) {
                    self.next_connection = ConnectionId(id.0.wrapping_add(1));
                    self.stats.bytes_sent += data.len() as u64;
                    return Some(Transmit {
                        connection: id,
                        data,
                    });
                }
            }
            self.rest(id);
        }
        #[cfg(debug_assertions)]
        self.check_resting(now);
        None
    }

    /// Whether connection `id` may have something to send: a cheap, conservative test that
    /// spares the full build for the idle connections (a relay holds thousands, and every event
    /// polls them all). False only when nothing can be due: no handshake, forwarded frame, pong,
    /// confirm or ping, and a peer with nothing to acknowledge and no stream to send on (and not a
    /// relay, whose connection may carry other peers' frames).
    fn may_have_output(&self, now: Instant, id: ConnectionId) -> bool {
        let Some(state) = self.connections.get(&id) else {
            return false;
        };
        if !state.is_established()
            || !state.outbox.is_empty()
            || !state.forward.is_empty()
            || !state.pongs_owed.is_empty()
            || state.confirm_frame.is_some()
            || self.ping_due(state).is_some_and(|at| at <= now)
            || state
                .identity
                .as_ref()
                .is_some_and(|identity| identity.relay)
        {
            return true;
        }
        self.peers.get(&state.peer).is_some_and(|peer| {
            !peer.ack_pending.is_empty()
                || peer.announce_instance
                || peer.send.values().any(SendStream::is_active)
        })
    }

    /// The peer's connection for data: the live one with the lowest RTT, measured ones first.
    pub(super) fn best_connection(&self, peer: &str) -> Option<ConnectionId> {
        let peer = self.peers.get(peer)?;
        peer.connections.iter().copied().min_by_key(|id| {
            let rtt = &self.connections[id].rtt;
            (!rtt.has_sample(), rtt.smoothed(), *id)
        })
    }

    fn head(&self, peer: &str) -> Option<MessageHead> {
        Some(MessageHead {
            source: self.name.clone(),
            destination: peer.to_string(),
            ..Default::default()
        })
    }

    /// The head of stream data and acknowledgements to `peer` on connection `id`: through a
    /// relay, stamped with the instance tags (protocol.md 5.9).
    fn data_head(&self, id: ConnectionId, peer: &str) -> Option<MessageHead> {
        let mut head = self.head(peer)?;
        let relayed = self
            .connections
            .get(&id)
            .is_some_and(|connection| connection.peer != peer);
        if relayed {
            self.stamp_instances(&mut head, peer);
        }
        Some(head)
    }

    /// Appends `frame` to `out` if it fits within `mtu`.
    fn push_frame(&mut self, out: &mut BytesMut, frame: &FrameMessage, mtu: usize) -> bool {
        if out.len() + self.codec.encoded_len(frame) > mtu {
            return false;
        }
        match self.codec.encode(frame, out) {
            Ok(_) => {
                self.stats.frames_sent += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// The FINISH_CONNECTION of a connection being closed: a packet on the bus's own stream -1
    /// whose one fragment carries the reason (it covers no stream offset).
    ///
    /// A connection refused in its handshake gets one only if what it sent decoded as a
    /// handshake, and never more bytes than it sent (the reason's text is cut to fit).
    fn build_close(&mut self, id: ConnectionId, mut reason: CloseReasonData) -> Option<Bytes> {
        let state = self.connections.get(&id)?;
        let (mut mtu, peer) = (state.params.mtu, state.peer.clone());
        if !state.is_established() {
            if !state.answerable {
                return None;
            }
            mtu = mtu.min(state.unauthenticated_received);
        }
        if !state.validated {
            // What went before (an accept) counts against the same budget.
            mtu = mtu.min(state.received_total.saturating_sub(state.unvalidated_sent));
        }
        loop {
            let fragment = FragmentType {
                close_reason: Some(reason.clone()),
                ..Default::default()
            };
            let frame = FrameMessage {
                head: self.head(&peer),
                body: Some(Body::Packet(PacketData {
                    stream_id: -1,
                    content: encode_content(vec![fragment]),
                    flags: AtbusPacketFlagType::FinishConnection as i32,
                    ..Default::default()
                })),
            };
            let mut out = BytesMut::new();
            if self.push_frame(&mut out, &frame, mtu) {
                return Some(out.freeze());
            }
            if reason.message.is_empty() {
                return None;
            }
            let mut cut = reason.message.len() / 2;
            while !reason.message.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.message.truncate(cut);
        }
    }

    /// The next transmit of connection `id`. Until an accepted datagram connection proves its
    /// address (a frame from the peer after our accept), everything sent on it together is never
    /// more than what it sent: no amplification towards a spoofed address.
    pub(super) fn build_transmit(&mut self, now: Instant, id: ConnectionId) -> Option<Bytes> {
        let state = self.connections.get(&id)?;
        let budget = match state.validated {
            true => usize::MAX,
            false => state.received_total.saturating_sub(state.unvalidated_sent),
        };
        let mtu = state.params.mtu.min(budget);
        let out = self.fill_transmit(now, id, mtu)?;
        if let Some(state) = self.connections.get_mut(&id) {
            if !state.validated {
                state.unvalidated_sent += out.len();
                if state.validate_after_accept && state.outbox.is_empty() {
                    state.validated = true;
                }
            }
        }
        Some(out)
    }

    fn fill_transmit(&mut self, now: Instant, id: ConnectionId, mtu: usize) -> Option<Bytes> {
        let state = self.connections.get_mut(&id)?;
        let peer_name = state.peer.clone();
        let mut out = BytesMut::new();

        // Handshake frames go first, as many as fit.
        let mut taken = 0;
        for frame in &state.outbox {
            if out.len() + frame.len() > mtu {
                break;
            }
            out.extend_from_slice(frame);
            taken += 1;
        }
        state.outbox.drain(..taken);
        let confirm = state.confirm_frame.clone();
        let early_data = match &state.phase {
            Phase::Established => None,
            Phase::Connecting(handshake) => Some(handshake.early_data),
            _ => Some(false),
        };
        if taken > 0 {
            self.stats.frames_sent += taken as u64;
            self.hello_sent(now, id);
        }
        // Until the peer shows it took our confirm, the confirm rides along with whatever else
        // goes out (it may have been lost); it is not worth a transmit of its own.
        let mut riding = 0;
        if let (None, Some(confirm)) = (early_data, confirm) {
            if out.len() + confirm.len() <= mtu {
                out.extend_from_slice(&confirm);
                riding = confirm.len();
            }
        }
        if let Some(early_data) = early_data {
            // In the handshake: nothing but what may go with the hello.
            let rto = self.rto(&peer_name);
            let sends_data = early_data
                && self.best_connection(&peer_name) == Some(id)
                && self.congestion_open(id)
                && self
                    .peers
                    .get(&peer_name)
                    .is_some_and(|peer| peer.send.values().any(|stream| stream.has_pending()));
            if sends_data {
                self.push_data(now, id, &peer_name, &mut out, mtu, rto, true);
            }
            return (!out.is_empty()).then(|| out.freeze());
        }

        // Frames a relay forwards for other nodes, in the order they came.
        let state = self.connections.get_mut(&id)?;
        while let Some(frame) = state.forward.front() {
            if out.len() + frame.len() > mtu {
                break;
            }
            out.extend_from_slice(frame);
            state.forward_bytes -= frame.len();
            state.forward.pop_front();
            self.stats.frames_sent += 1;
        }

        // Pongs owed, and a ping when due.
        let pongs = std::mem::take(&mut self.connections.get_mut(&id)?.pongs_owed);
        for pong in pongs {
            let frame = FrameMessage {
                head: self.head(&peer_name),
                body: Some(Body::Pong(pong)),
            };
            self.push_frame(&mut out, &frame, mtu);
        }
        let ping_due = self
            .ping_due(&self.connections[&id])
            .is_some_and(|at| at <= now);
        if ping_due {
            let timepoint = self.timepoint(now);
            let state = self.connections.get_mut(&id)?;
            state.ping_sequence += 1;
            let frame = FrameMessage {
                head: self.head(&peer_name),
                body: Some(Body::Ping(PingData {
                    sequence: self.connections[&id].ping_sequence,
                    timepoint_microseconds: timepoint,
                })),
            };
            if self.push_frame(&mut out, &frame, mtu) {
                self.connections.get_mut(&id)?.last_ping = Some(now);
                self.stats.pings_sent += 1;
            }
        }

        // New data waits for the congestion window; window probes and reset announcements are
        // a few bytes and go regardless (a probe waiting on data in flight elsewhere would
        // leave its timer due and idle).
        let open = self.congestion_open(id);
        // The peer's acknowledgement and data; then, when the peer is a relay, those of the
        // peers reached through it.
        let mut targets = vec![peer_name.clone()];
        targets.extend(self.routed_through(&peer_name));
        for target in targets {
            // A relay stamps what it forwards: frames for a peer behind it leave room for that.
            let limit = match target == peer_name {
                true => mtu,
                false => {
                    let path = self.peers.get(&target).and_then(|peer| peer.route_mtu);
                    path.map_or(mtu, |path| path.min(mtu))
                        .saturating_sub(relay_stamp_room(&self.name, &peer_name))
                }
            };
            if out.len() + 64 > limit {
                continue;
            }
            self.push_for(now, id, &target, &mut out, limit, open);
        }
        if out.len() <= riding {
            return None;
        }
        if riding > 0 {
            self.stats.frames_sent += 1;
        }
        Some(out.freeze())
    }

    /// Appends `target`'s acknowledgement (when due, or riding along with data) and its data,
    /// if connection `id` carries them.
    fn push_for(
        &mut self,
        now: Instant,
        id: ConnectionId,
        target: &str,
        out: &mut BytesMut,
        mtu: usize,
        open: bool,
    ) {
        let rto = self.rto(target);
        let data_here = self.data_connection(target) == Some(id);
        // After a retransmission timeout, one transmit of data goes even into a full window:
        // otherwise a window full of lost flights would wait for one timeout per flight.
        let probe = data_here && self.peers.get(target).is_some_and(|peer| peer.probe_owed);
        let open = open || probe;
        let sends_data = data_here
            && self.peers.get(target).is_some_and(|peer| {
                peer.send.values().any(|stream| {
                    (open && stream.has_pending())
                        || stream.probe_at(rto).is_some_and(|at| at <= now)
                        || stream.reset_due(now).is_some()
                })
            });
        if let Some(peer) = self.peers.get(target) {
            let ack_here = peer.ack_connection.is_none_or(|conn| conn == id);
            let due = peer.ack_now || peer.ack_deadline.is_some_and(|at| at <= now);
            let acks = !peer.ack_pending.is_empty() && (due || sends_data);
            if ack_here && (acks || peer.announce_instance) {
                self.push_ack(now, id, target, out, mtu);
            }
        }
        if sends_data {
            self.push_data(now, id, target, out, mtu, rto, open);
        }
        if probe && let Some(peer) = self.peers.get_mut(target) {
            peer.probe_owed = false;
        }
    }

    fn push_ack(
        &mut self,
        now: Instant,
        id: ConnectionId,
        peer_name: &str,
        out: &mut BytesMut,
        mtu: usize,
    ) {
        // Through a relay, the echo is of the peer's latest relayed packet.
        let latest = match self.connections.get(&id) {
            Some(connection) if connection.peer == peer_name => connection.latest_packet,
            _ => self
                .peers
                .get(peer_name)
                .and_then(|peer| peer.route_latest_packet),
        };
        let (echo, delay) = match latest {
            Some((timepoint, received_at)) => (
                timepoint,
                i64::try_from(now.saturating_duration_since(received_at).as_micros())
                    .unwrap_or(i64::MAX),
            ),
            None => (0, 0),
        };
        let max_ranges = self.config.max_ack_ranges;
        let budget = self.config.peer_receive_budget;
        let stream_window = self.config.stream_receive_window;
        let mut windows = Vec::new();
        let head = self.data_head(id, peer_name);
        let Some(peer) = self.peers.get_mut(peer_name) else {
            return;
        };
        let mut ack = AcknowledgeData {
            acknowledge: Vec::new(),
            timepoint_microseconds: echo,
            ack_delay_microseconds: delay,
        };
        let mut included = Vec::new();
        for &stream_id in &peer.ack_pending {
            let Some(stream) = peer.recv.get(&stream_id) else {
                included.push(stream_id);
                continue;
            };
            let reassembler = &stream.reassembler;
            let window_offset = peer.window_offset(stream_id, budget, stream_window);
            windows.push((stream_id, window_offset));
            let entry = StreamAcknowledge {
                stream_id,
                window_offset: window_offset as i64,
                acknowledge_offset: reassembler.acknowledge_offset() as i64,
                received_max_offset: reassembler.received_max_offset() as i64,
                received_ranges: reassembler
                    .received_ranges(max_ranges)
                    .into_iter()
                    .map(|range| OffsetRange {
                        start: range.start as i64,
                        end: range.end as i64,
                    })
                    .collect(),
            };
            ack.acknowledge.push(entry);
            // Report fewer ranges rather than no acknowledgement when the MTU is tight.
            let fits = loop {
                let frame = FrameMessage {
                    head: head.clone(),
                    body: Some(Body::Acknowledge(ack.clone())),
                };
                if out.len() + self.codec.encoded_len(&frame) <= mtu {
                    break true;
                }
                let Some(last) = ack.acknowledge.last_mut() else {
                    break false;
                };
                if last.received_ranges.pop().is_none() {
                    ack.acknowledge.pop();
                    break false;
                }
            };
            if !fits {
                if ack.acknowledge.is_empty() && out.is_empty() {
                    // Not even one entry fits an empty transmit: give up on this
                    // acknowledgement (the peer's resends ask for it again) rather than keep a
                    // timer due forever.
                    included.push(stream_id);
                    continue;
                }
                break;
            }
            included.push(stream_id);
        }
        for stream_id in &included {
            peer.ack_pending.remove(stream_id);
        }
        for (stream_id, window) in windows {
            if let Some(stream) = peer.recv.get_mut(&stream_id) {
                if included.contains(&stream_id) {
                    stream.advertised = stream.advertised.max(window);
                }
            }
        }
        if peer.ack_pending.is_empty() {
            peer.ack_now = false;
            peer.ack_deadline = None;
            peer.packets_since_ack = 0;
        }
        // An announcement needs the tags, so it goes through a relay and stays due until it is
        // out; on a direct connection the handshake told the peer this instance already.
        let tagged = head.as_ref().is_some_and(|head| head.source_instance != 0);
        if !tagged {
            peer.announce_instance = false;
        }
        let announce = peer.announce_instance;
        if ack.acknowledge.is_empty() && !announce {
            return;
        }
        let frame = FrameMessage {
            head,
            body: Some(Body::Acknowledge(ack)),
        };
        if self.push_frame(out, &frame, mtu) {
            self.stats.acks_sent += 1;
            if announce && let Some(peer) = self.peers.get_mut(peer_name) {
                peer.announce_instance = false;
            }
        }
    }

    /// Whether connection `id`'s congestion window lets new data out (always, on a stream
    /// transport).
    fn congestion_open(&self, id: ConnectionId) -> bool {
        self.connections
            .get(&id)
            .and_then(|connection| connection.congestion.as_ref())
            .is_none_or(|congestion| congestion.can_send())
    }

    /// Appends the streams' packets to `out`: due reset announcements and window probes, and
    /// data (lost ranges, then new units) when `data` allows.
    #[allow(clippy::too_many_arguments)]
    fn push_data(
        &mut self,
        now: Instant,
        id: ConnectionId,
        peer_name: &str,
        out: &mut BytesMut,
        mtu: usize,
        rto: Duration,
        data: bool,
    ) {
        let head = self.data_head(id, peer_name);
        let timepoint = self.timepoint(now);
        let Some(peer) = self.peers.get_mut(peer_name) else {
            return;
        };
        let stream_ids: Vec<i64> = peer
            .send
            .range(peer.next_stream..)
            .chain(peer.send.range(..peer.next_stream))
            .filter(|(_, stream)| {
                (data && stream.has_pending())
                    || stream.probe_at(rto).is_some_and(|at| at <= now)
                    || stream.reset_due(now).is_some()
            })
            .map(|(&stream_id, _)| stream_id)
            .collect();
        let mut frames = Vec::new();
        let mut used = out.len();
        let mut sent_units = 0;
        for stream_id in stream_ids {
            let Some(stream) = peer.send.get_mut(&stream_id) else {
                continue;
            };
            if let Some(offset) = stream.reset_due(now) {
                // Abandoned units: the peer skips to `offset`. Repeated until acknowledged.
                let reset = packet_frame(
                    &head,
                    (stream_id, offset),
                    AtbusPacketFlagType::ResetOffset as i32,
                    Bytes::new(),
                    timepoint,
                );
                let len = self.codec.encoded_len(&reset);
                if used + len <= mtu {
                    used += len;
                    frames.push(reset);
                    stream.reset_sent(now, rto);
                }
            }
            while let Some((start, _, _)) = stream.peek_next().filter(|_| data) {
                let empty = packet_frame(
                    &head,
                    (stream_id, start),
                    AtbusPacketFlagType::FinishStream as i32,
                    Bytes::new(),
                    timepoint,
                );
                let base = self.codec.encoded_len(&empty) + 1 + VARINT_SLACK;
                let Some(room) = mtu.checked_sub(used + base) else {
                    break;
                };
                let mut fragments = Vec::new();
                let mut content_len = 0;
                let mut next = start;
                let mut finish = false;
                while let Some((piece_start, meta, close)) = stream.peek_next() {
                    if piece_start != next {
                        break; // not contiguous: it goes in the next packet
                    }
                    let overhead = fragment_overhead(meta, close);
                    let Some(max_data) = room.checked_sub(content_len + overhead) else {
                        break;
                    };
                    let resend = piece_start < stream.next_new();
                    let Some(piece) = stream.take_piece(max_data, id, now) else {
                        break;
                    };
                    self.stats.data_bytes_sent += piece.data.len() as u64;
                    sent_units += piece.end_offset() - piece.start;
                    if resend {
                        self.stats.pieces_resent += 1;
                    }
                    next = piece.end_offset();
                    finish |= matches!(piece.end, PieceEnd::Stream(_));
                    let fragment = fragment_of(piece);
                    let len = fragment.encoded_len();
                    content_len += 1 + encoded_len_varint(len as u64) + len;
                    fragments.push(fragment);
                }
                if fragments.is_empty() {
                    break;
                }
                let mut flags = 0;
                if finish {
                    flags |= AtbusPacketFlagType::FinishStream as i32;
                }
                if stream.reset_offset() == Some(start) {
                    flags |= AtbusPacketFlagType::ResetOffset as i32;
                }
                let frame = packet_frame(
                    &head,
                    (stream_id, start),
                    flags,
                    encode_content(fragments),
                    timepoint,
                );
                used += self.codec.encoded_len(&frame);
                debug_assert!(used <= mtu, "packet over the MTU: {used} > {mtu}");
                frames.push(frame);
            }
            stream.note_blocked(now);
            if stream.probe_at(rto).is_some_and(|at| at <= now) {
                // Blocked on the peer's window with nothing in flight: an empty packet makes
                // the peer acknowledge with its current window.
                let probe = packet_frame(
                    &head,
                    (stream_id, stream.next_new()),
                    0,
                    Bytes::new(),
                    timepoint,
                );
                let len = self.codec.encoded_len(&probe);
                if used + len <= mtu {
                    used += len;
                    frames.push(probe);
                    stream.probed(now);
                }
            }
            peer.next_stream = stream_id.wrapping_add(1);
            if mtu.saturating_sub(used) < 64 {
                break;
            }
        }
        if let Some(congestion) = self
            .connections
            .get_mut(&id)
            .and_then(|connection| connection.congestion.as_mut())
        {
            congestion.on_sent(sent_units);
        }
        for frame in &frames {
            self.push_frame(out, frame, usize::MAX);
        }
    }
}

/// The bytes a relay named `relay` may add to a frame from `source` when it forwards it: its
/// name as the source, the originator's as `forward_for_source`, a connection id, and the growth
/// of the length varints.
fn relay_stamp_room(source: &str, relay: &str) -> usize {
    relay.len() + source.len() + 32
}

/// A packet frame of `stream_id` at `offset`.
fn packet_frame(
    head: &Option<MessageHead>,
    (stream_id, offset): (i64, u64),
    flags: i32,
    content: Bytes,
    timepoint: i64,
) -> FrameMessage {
    FrameMessage {
        head: head.clone(),
        body: Some(Body::Packet(PacketData {
            stream_id,
            stream_offset: offset as i64,
            content,
            flags,
            padding_size: 0,
            timepoint_microseconds: timepoint,
        })),
    }
}
