//! The endpoint: one node's whole protocol state, driven by bytes and time.
//!
//! The runtime around it tells it about connections (`add_connection`, `connection_lost`), feeds
//! it what arrives (`handle_input`) and the passing of time (`handle_timeout`), and drains what
//! it produces (`poll_transmit`, `poll_event`, `poll_timeout`). The application sends with
//! `send` and `finish` and reads with `read`. Input handling is in `endpoint/input.rs`, output in
//! `endpoint/output.rs`, timers in `endpoint/timers.rs`, peers that left in `departure.rs`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use atbus_proto::protocol::CloseReasonData;
use atbus_proto::{CodecConfig, FrameCodec};
use bytes::Bytes;

use super::auth::state::AuthState;
use super::close::CloseReason;
use super::config::{ConnectionParams, EngineConfig};
use super::congestion::FlightFate;
use super::connection::Connection;
use super::error::{ConnectionError, SendError};
use super::event::Event;
use super::message::{MessageMeta, ReceivedMessage};
use super::peers::Peers;
use super::rtt::RttEstimator;
use super::send::SendStream;
use super::stats::EngineStats;
use super::stream_id::StreamId;
use super::timer::TimerIndex;
use super::transmit::ConnectionId;

mod deadlines;
mod departure;
mod forwarder;
mod handshake;
mod input;
mod mesh;
mod output;
mod provisional;
mod restart;
mod route;
mod timers;
mod wake;

/// Close reasons sent with a stream's end keep at most this many bytes of their message.
pub const MAX_CLOSE_MESSAGE: usize = 48;

/// The smallest MTU a connection may have: room for the headers and some data.
pub const MIN_MTU: usize = 128;

/// One node's protocol engine. See the [module documentation](super).
#[derive(Debug)]
pub struct Endpoint {
    name: String,
    config: EngineConfig,
    codec: FrameCodec,
    /// Origin of the timepoints this endpoint writes.
    epoch: Instant,
    /// The latest time the runtime gave: when a message queued now counts as queued.
    clock: Instant,
    connections: BTreeMap<ConnectionId, Connection>,
    peers: Peers,
    events: VecDeque<Event>,
    /// The connection the next `poll_transmit` looks at first (round robin).
    next_connection: ConnectionId,
    /// The id the last connection added got: ids are handed out in order from 1, never reused.
    last_connection_id: u64,
    stats: EngineStats,
    /// Replay cache, issued identities, tickets, randomness, Unix clock.
    auth: AuthState,
    /// Decodes the first frame of an unauthenticated stream connection, with the handshake's
    /// size limit.
    handshake_codec: FrameCodec,
    /// A relay's forwarding state (queues, the mesh's route tables); `None` on a plain node.
    forwarder: Option<Box<forwarder::Forwarder>>,
    /// The peers that are relays with a connection up (kept in step with `peers`, so finding a
    /// relay does not scan every peer: a relay holds thousands).
    relays: BTreeSet<String>,
    /// The connections that may have something to send; `poll_transmit` looks at these only
    /// (see `endpoint/wake.rs`).
    wake: wake::Wake,
    /// Deadlines (`endpoint/deadlines.rs`); in a cell: `poll_timeout` brings it up to date.
    timers: RefCell<TimerIndex>,
}

impl Endpoint {
    /// An endpoint for the node `name`, created at `now`.
    pub fn new(name: impl Into<String>, config: EngineConfig, now: Instant) -> Self {
        let max_frame_length = config
            .max_frame_length
            .min(atbus_proto::MAX_FRAME_LENGTH_LIMIT);
        let codec_config = CodecConfig::default()
            .with_max_frame_length(max_frame_length)
            .unwrap_or_default();
        let handshake_config = CodecConfig::default()
            .with_max_frame_length(
                config
                    .auth
                    .max_handshake_size
                    .clamp(MIN_MTU, max_frame_length),
            )
            .unwrap_or_default();
        Self {
            name: name.into(),
            codec: FrameCodec::new(codec_config),
            handshake_codec: FrameCodec::new(handshake_config),
            forwarder: config.auth.relay.then(Box::default),
            relays: BTreeSet::new(),
            wake: Default::default(),
            timers: Default::default(),
            peers: departure::new_peers(&config),
            auth: AuthState::new(&config.auth, now),
            config,
            epoch: now,
            clock: now,
            connections: BTreeMap::new(),
            events: VecDeque::new(),
            next_connection: ConnectionId(0),
            last_connection_id: 0,
            stats: EngineStats::default(),
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits this endpoint runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Counters of what the endpoint did.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Registers a live connection to `peer` whose identity the transport already vouches for
    /// (in-process, or mutual TLS): no handshake. The engine starts using it at once: it pings
    /// it for an RTT sample, and sends on it when it is the peer's best. Connections over an
    /// untrusted network go through [`connect`](Self::connect) and [`accept`](Self::accept)
    /// instead. Returns the id the endpoint gave the connection (its transmits carry it).
    pub fn add_connection(
        &mut self,
        now: Instant,
        peer: &str,
        params: ConnectionParams,
    ) -> Result<ConnectionId, ConnectionError> {
        self.check_new_connection(params)?;
        self.tick(now);
        let rtt = RttEstimator::new(self.config.initial_rtt);
        let mut connection = Connection::new(peer.to_string(), params, rtt, now);
        connection.identity = Some(super::auth::PeerIdentity {
            name: peer.to_string(),
            kind: super::auth::IdentityKind::Transport,
            relay: false,
            resumed: false,
        });
        let id = self.insert_connection(connection);
        self.bind_to_peer(id, peer);
        Ok(id)
    }

    /// Stores a new connection under a fresh id: ids are never reused, so a late input for a
    /// connection that is gone cannot reach a newer one.
    pub(super) fn insert_connection(&mut self, connection: Connection) -> ConnectionId {
        self.last_connection_id += 1;
        let id = ConnectionId(self.last_connection_id);
        self.connections.insert(id, connection);
        id
    }

    /// Puts `connection` among `peer`'s connections, and tells the application if the peer was
    /// unreachable.
    pub(super) fn bind_to_peer(&mut self, id: ConnectionId, peer: &str) {
        let entry = self.peers.entry(peer.to_string()).or_default();
        if !entry.connections.contains(&id) {
            entry.connections.push(id);
        }
        self.refresh_relay(peer);
        self.wake_peer(peer);
        let entry = self.peers.entry(peer.to_string()).or_default();
        if !entry.reachable {
            entry.reachable = true;
            self.events.push_back(Event::PeerReachable {
                peer: peer.to_string(),
            });
        }
        self.routes_changed();
    }

    /// Checks the MTU of a connection about to be added.
    fn check_new_connection(&self, params: ConnectionParams) -> Result<(), ConnectionError> {
        let max = self.codec.config().max_frame_length();
        if params.mtu > max {
            return Err(ConnectionError::MtuTooLarge {
                mtu: params.mtu,
                max,
            });
        }
        if params.mtu < MIN_MTU {
            return Err(ConnectionError::MtuTooSmall {
                mtu: params.mtu,
                min: MIN_MTU,
            });
        }
        Ok(())
    }

    /// The runtime lost `connection` (reset, closed, unreachable): what was in flight on it is
    /// resent on the peer's other connections.
    pub fn connection_lost(&mut self, now: Instant, connection: ConnectionId) {
        self.tick(now);
        let reason = CloseReasonData {
            code: atbus_proto::protocol::AtbusCloseReason::PeerReset as i32,
            message: "the transport reported the connection lost".into(),
        };
        self.drop_connection(now, connection, reason);
    }

    /// Closes `connection` on purpose: the peer gets a FINISH_CONNECTION with `reason` (the next
    /// transmit on it), then the connection is forgotten and what was in flight on it goes over
    /// the peer's other connections. The runtime closes the socket after that transmit.
    pub fn close_connection(&mut self, connection: ConnectionId, reason: CloseReason) {
        if let Some(state) = self.connections.get_mut(&connection) {
            state.closing = Some(reason.to_wire());
            self.wake.insert(connection);
        }
    }

    /// Forgets `connection`, resends its flights elsewhere and tells the application.
    pub(super) fn drop_connection(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        reason: CloseReasonData,
    ) {
        let Some(state) = self.connections.remove(&connection) else {
            return;
        };
        self.stats.connections_lost += 1;
        let established = state.is_established();
        let failure = state.failure;
        let peer_name = state.peer;
        self.drop_forwarded(connection);
        // Its peer's flights on it, and those of the peers reached through it (a relay), go
        // elsewhere.
        self.wake.remove(&connection);
        let mut moved = Vec::new();
        for (name, peer) in self.peers.iter_mut() {
            if peer.ack_connection == Some(connection) {
                // Its acknowledgement may go on another connection now.
                peer.ack_connection = None;
                moved.push(name.clone());
            }
            for stream in peer.send.values_mut() {
                let lost = stream.on_connection_lost(connection);
                self.stats.flights_lost += lost as u64;
                settle(&mut self.connections, &mut self.stats, stream, now, true);
                if lost > 0 {
                    moved.push(name.clone());
                }
            }
        }

        let mut gone = false;
        if let Some(peer) = self.peers.get_mut(&peer_name) {
            peer.connections.retain(|&id| id != connection);
            gone = peer.connections.is_empty();
            self.refresh_relay(&peer_name);
        }
        if let Some(peer) = self.peers.get_mut(&peer_name) {
            if peer.connections.is_empty() && peer.reachable {
                peer.reachable = false;
                self.events.push_back(Event::PeerUnreachable {
                    peer: peer_name.clone(),
                });
            }
        }
        if gone {
            self.forget_relay_routes(&peer_name);
            self.routes_changed();
        }
        // What was in flight on it goes on the peers' other connections, or other relays.
        moved.push(peer_name.clone());
        for name in moved {
            self.wake_peer(&name);
        }
        let reason = CloseReason::from_wire(reason);
        match (established, failure) {
            (false, Some(failure)) => self.events.push_back(Event::HandshakeFailed {
                connection,
                failure,
                reason,
            }),
            _ => self.events.push_back(Event::ConnectionLost {
                connection,
                peer: peer_name,
                reason,
            }),
        }
    }

    /// Queues `data` as one message on `stream_id` to `peer`. The peer need not be connected:
    /// the message waits (within the send windows) until a connection to it is added.
    ///
    /// Returns the offset of the message in the stream.
    pub fn send(
        &mut self,
        peer: &str,
        stream_id: impl Into<StreamId>,
        data: Bytes,
        meta: MessageMeta,
    ) -> Result<u64, SendError> {
        let stream_id = stream_id.into().get();
        if stream_id < 0 {
            return Err(SendError::ReservedStream { stream_id });
        }
        self.queue_message(peer, stream_id, data, meta)
    }

    /// Queues a message on any stream, internal ones included.
    pub(crate) fn queue_message(
        &mut self,
        peer_name: &str,
        stream_id: i64,
        data: Bytes,
        meta: MessageMeta,
    ) -> Result<u64, SendError> {
        if data.len() > self.config.max_message_size {
            return Err(SendError::MessageTooLarge {
                size: data.len(),
                max: self.config.max_message_size,
            });
        }
        let room = MIN_MTU / 2;
        let meta_size = super::wire::fragment_overhead(Some(&meta), None);
        if meta_size > room {
            return Err(SendError::MetadataTooLarge {
                size: meta_size,
                room,
            });
        }
        let units = data.len() as u64 + 1;
        let clock = self.clock;
        let initial_window = self.config.initial_window;
        let peer = self.peers.entry(peer_name.to_string()).or_default();
        match peer.unroutable_until {
            Some(until) if clock < until => {
                return Err(SendError::NoRoute {
                    peer: peer_name.to_string(),
                });
            }
            Some(_) => peer.unroutable_until = None,
            None => {}
        }
        let peer_units = peer.unacked_units;
        let stream_units = peer.send_stream(stream_id, initial_window).unacked_units();
        let over_stream = stream_units > 0 && stream_units + units > self.config.stream_send_window;
        let over_peer = peer_units > 0 && peer_units + units > self.config.peer_send_window;
        if over_stream || over_peer {
            peer.blocked.insert(stream_id);
            self.stats.would_block += 1;
            return Err(SendError::WouldBlock {
                peer: peer_name.to_string(),
            });
        }
        let offset = peer
            .send_stream(stream_id, initial_window)
            .push(data, meta, clock)
            .ok_or_else(|| SendError::StreamFinished {
                peer: peer_name.to_string(),
                stream_id,
            })?;
        // Queued behind a shut window with nothing in flight: arm the window probe.
        peer.send_stream(stream_id, initial_window)
            .note_blocked(clock);
        peer.unacked_units += units;
        self.stats.messages_sent += 1;
        self.wake_peer(peer_name);
        Ok(offset)
    }

    /// Finishes this endpoint's direction of `stream_id`: after the messages already queued, the
    /// peer learns the stream ended, with `reason`. [`Event::StreamClosed`] follows once all of it
    /// is acknowledged.
    pub fn finish(
        &mut self,
        peer_name: &str,
        stream_id: impl Into<StreamId>,
        reason: CloseReason,
    ) -> Result<(), SendError> {
        let stream_id = stream_id.into().get();
        let mut reason = reason.to_wire();
        // The reason travels in one packet of the smallest MTU: keep its text short.
        if reason.message.len() > MAX_CLOSE_MESSAGE {
            let mut cut = MAX_CLOSE_MESSAGE;
            while !reason.message.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.message.truncate(cut);
        }
        let clock = self.clock;
        let initial_window = self.config.initial_window;
        let peer = self.peers.entry(peer_name.to_string()).or_default();
        peer.send_stream(stream_id, initial_window)
            .finish(reason, clock)
            .ok_or_else(|| SendError::StreamFinished {
                peer: peer_name.to_string(),
                stream_id,
            })?;
        peer.unacked_units += 1;
        self.wake_peer(peer_name);
        Ok(())
    }

    /// Takes the next whole message of `stream_id` from `peer`, if one has arrived.
    pub fn read(
        &mut self,
        peer_name: &str,
        stream_id: impl Into<StreamId>,
    ) -> Option<ReceivedMessage> {
        let stream_id = stream_id.into().get();
        let peer = self.peers.get_mut(peer_name)?;
        let stream = peer.recv.get_mut(&stream_id)?;
        if let Some(message) = stream.carried.pop_front() {
            peer.received_held -= message.data.len();
            self.stats.messages_received += 1;
            return Some(message);
        }
        let before = stream.reassembler.held();
        let mut message = stream.reassembler.pop_message();
        // A peer that sends messages over the limit breaks the contract: they are dropped.
        while message
            .as_ref()
            .is_some_and(|m| m.data.len() > self.config.max_message_size)
        {
            self.stats.oversized_messages += 1;
            message = stream.reassembler.pop_message();
        }
        peer.received_held -= before - stream.reassembler.held();
        match &message {
            Some(_) => self.stats.messages_received += 1,
            None => stream.readable = false,
        }
        if let Some(finished) = stream.reassembler.pop_finished() {
            self.events.push_back(Event::StreamFinished {
                peer: peer_name.to_string(),
                stream_id: stream_id.into(),
                reason: CloseReason::from_wire(finished.reason),
            });
        }
        // Tell the peer soon when reading opened its window by a good part, or at all while the
        // peer may be waiting on it.
        let (budget, stream_window) = (
            self.config.peer_receive_budget,
            self.config.stream_receive_window,
        );
        let quarter = stream_window / 4;
        if let Some(peer) = self.peers.get_mut(peer_name) {
            let window = peer.window_offset(stream_id, budget, stream_window);
            if let Some(stream) = peer.recv.get(&stream_id) {
                let peer_may_wait = stream.advertised <= stream.reassembler.received_max_offset();
                if window >= stream.advertised.saturating_add(quarter)
                    || (window > stream.advertised && peer_may_wait)
                {
                    peer.ack_pending.insert(stream_id);
                    peer.ack_now = true;
                    self.wake_peer(peer_name);
                }
            }
        }
        message
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the runtime should read more from `connection`: false while the peer's data
    /// already fills its receive budget (a stream transport then pauses reading; a datagram
    /// transport may read and let the engine drop).
    pub fn wants_input(&self, connection: ConnectionId) -> bool {
        self.connections
            .get(&connection)
            .and_then(|state| self.peers.get(&state.peer))
            .is_none_or(|peer| peer.received_held < self.config.peer_receive_budget)
    }

    /// Bytes the endpoint holds for applications: queued until acknowledged, or received and not
    /// yet read.
    pub fn memory(&self) -> usize {
        self.peers
            .values()
            .map(|peer| {
                peer.received_held
                    + peer
                        .send
                        .values()
                        .map(SendStream::queued_bytes)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Units queued to peers and not yet acknowledged, over every peer and stream: 0 once
    /// everything sent has arrived.
    pub fn unacknowledged(&self) -> u64 {
        self.peers.values().map(|peer| peer.unacked_units).sum()
    }

    /// The runtime tells whether its queue for `connection` is full (the socket does not drain):
    /// while it is, nothing is handed out for that connection; a relay's forwarded frames for it
    /// wait in the engine, within `forward_queue_limit` (then `forward_overflow` applies), and the
    /// engine's own data waits in its windows.
    pub fn set_transport_blocked(&mut self, connection: ConnectionId, blocked: bool) {
        if let Some(state) = self.connections.get_mut(&connection) {
            state.transport_blocked = blocked;
            self.wake.insert(connection);
        }
    }

    /// The congestion window of datagram connection `connection` and the units in flight on it;
    /// `None` for a stream connection (its transport controls congestion) or an unknown one.
    pub fn congestion_window(&self, connection: ConnectionId) -> Option<(u64, u64)> {
        let congestion = self.connections.get(&connection)?.congestion.as_ref()?;
        Some((congestion.window(), congestion.in_flight()))
    }

    /// The names of the relays this endpoint has a live connection to.
    pub fn connected_relays(&self) -> impl Iterator<Item = &str> {
        self.relays.iter().map(String::as_str)
    }

    /// The names of the peers with at least one live connection.
    pub fn reachable_peers(&self) -> impl Iterator<Item = &str> {
        self.peers
            .iter()
            .filter(|(_, peer)| peer.reachable)
            .map(|(name, _)| name.as_str())
    }

    /// The smoothed RTT of `connection`, once it has a sample.
    pub fn rtt(&self, connection: ConnectionId) -> Option<std::time::Duration> {
        self.connections
            .get(&connection)
            .filter(|state| state.rtt.has_sample())
            .map(|state| state.rtt.smoothed())
    }

    /// Signals Writable for the streams of `peer_name` that refused a send and have room now.
    pub(super) fn wake_blocked(&mut self, peer_name: &str) {
        let stream_window = self.config.stream_send_window;
        let peer_window = self.config.peer_send_window;
        let Some(peer) = self.peers.get_mut(peer_name) else {
            return;
        };
        if peer.unacked_units >= peer_window {
            return;
        }
        let freed: Vec<i64> = peer
            .blocked
            .iter()
            .copied()
            .filter(|id| {
                peer.send
                    .get(id)
                    .is_none_or(|stream| stream.unacked_units() < stream_window)
            })
            .collect();
        for stream_id in freed {
            peer.blocked.remove(&stream_id);
            self.events.push_back(Event::Writable {
                peer: peer_name.to_string(),
                stream_id: stream_id.into(),
            });
        }
    }

    /// Notes the time the runtime gave; the clock never goes back.
    fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    /// Microseconds since the epoch, never 0: the timepoint written in packets and pings.
    fn timepoint(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(i64::MAX - 1)
            + 1
    }
}

#[cfg(test)]
mod tests;

/// Hands the flights that left `stream`'s books to the congestion control of the connections
/// they went out on. With `congestion_signal` false, losses are taken as forgotten: flights
/// resent for a reason other than the network's (early data the peer did not take).
pub(super) fn settle(
    connections: &mut BTreeMap<ConnectionId, Connection>,
    stats: &mut EngineStats,
    stream: &mut SendStream,
    now: Instant,
    congestion_signal: bool,
) {
    for mut left in stream.take_departed() {
        let Some(congestion) = connections
            .get_mut(&left.connection)
            .and_then(|connection| connection.congestion.as_mut())
        else {
            continue;
        };
        if !congestion_signal && left.fate == FlightFate::Lost {
            left.fate = FlightFate::Forgotten;
        }
        if congestion.on_left(&left, now) {
            stats.congestion_events += 1;
        }
    }
}
