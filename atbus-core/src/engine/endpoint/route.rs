//! Routes through relays (`docs/protocol.md` section 5.9). A peer with no direct connection is
//! reached through a relay: the one it advertises if this node prefers that and is connected to
//! it, else the one its forwarded frames last came through, else any relay this endpoint is
//! connected to. Streams stay end to end: the relay forwards packets and
//! acknowledgements without taking part in them. An endpoint configured as a relay forwards the
//! frames it is not the destination of, and tells the sender when it knows no route.

use std::time::{Duration, Instant};

use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusCloseReason, AtbusPacketFlagType, CloseReasonData, FrameMessage, MessageHead, PacketData,
};
use bytes::BytesMut;

use super::Endpoint;
use super::mesh::MAX_HOPS;
use crate::engine::config::ForwardOverflow;
use crate::engine::event::Event;
use crate::engine::transmit::ConnectionId;
use crate::engine::wire::encode_content;

/// The bus's stream of routing notices, from a relay to a sender about the destination named in
/// `forward_for_source`: no route (a fragment with the close reason ROUTER_NOT_FOUND, FINISH_STREAM
/// set), or frames too large for the destination's connection (no fragment; `stream_offset` is
/// the largest frame that connection takes).
pub(crate) const ROUTING_STREAM: i64 = -3;

/// After a relay reported no route to a peer, sends to it fail for this long; then a send tries
/// again.
pub(crate) const UNROUTABLE_FOR: Duration = Duration::from_secs(1);

impl Endpoint {
    /// Whether `name` is a relay this endpoint is connected to (its accept said so).
    pub(super) fn is_relay_peer(&self, name: &str) -> bool {
        self.relays.contains(name)
    }

    /// Sends frames for `peer` through the relay named `relay` whenever it is connected (and
    /// `peer` is not): the relay `peer` advertises, for a node that prefers it to its own. `None`
    /// goes back to the default: the relay the peer's frames last came through, else any.
    pub fn set_preferred_relay(&mut self, peer: &str, relay: Option<String>) {
        self.peers
            .entry(peer.to_string())
            .or_default()
            .preferred_relay = relay;
        self.wake_peer(peer);
    }

    /// Brings `name`'s place among the connected relays up to date after its connections
    /// changed.
    pub(super) fn refresh_relay(&mut self, name: &str) {
        let relay = self.peers.get(name).is_some_and(|peer| {
            peer.connections.iter().any(|id| {
                self.connections
                    .get(id)
                    .and_then(|connection| connection.identity.as_ref())
                    .is_some_and(|identity| identity.relay)
            })
        });
        match relay {
            true => self.relays.insert(name.to_string()),
            // The peers it carried go through the other relays now.
            false if self.relays.remove(name) => {
                for other in self.relays.clone() {
                    self.wake_peer(&other);
                }
                true
            }
            false => false,
        };
    }

    /// The relay frames to `peer` go through: its preferred relay, the one its frames came
    /// through, or any; `None` when the peer has a direct connection, or no relay is reachable.
    pub(super) fn route_of(&self, peer: &str) -> Option<&str> {
        let state = self.peers.get(peer);
        if state.is_some_and(|state| !state.connections.is_empty()) {
            return None;
        }
        if let Some(preferred) = state.and_then(|state| state.preferred_relay.as_deref()) {
            if preferred != peer && self.is_relay_peer(preferred) {
                return Some(preferred);
            }
        }
        if let Some(via) = state.and_then(|state| state.via.as_deref()) {
            if self.is_relay_peer(via) {
                return Some(via);
            }
        }
        self.relays
            .iter()
            .find(|name| name.as_str() != peer)
            .map(String::as_str)
    }

    /// The connection frames to `peer` go out on: its best, or its relay's best.
    pub(super) fn data_connection(&self, peer: &str) -> Option<ConnectionId> {
        match self.route_of(peer) {
            Some(relay) => self.best_connection(relay),
            None => self.best_connection(peer),
        }
    }

    /// The peers whose frames go through `relay`.
    pub(super) fn routed_through(&self, relay: &str) -> Vec<String> {
        if !self.is_relay_peer(relay) {
            return Vec::new();
        }
        self.peers
            .keys()
            .filter(|name| name.as_str() != relay && self.route_of(name) == Some(relay))
            .cloned()
            .collect()
    }

    /// Whether frames can go to `peer` now, directly or through a relay.
    pub(super) fn can_reach(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|state| !state.connections.is_empty())
            || self.route_of(peer).is_some()
    }

    /// Relays: forwards `frame`, which came in on `connection` and is for another node, with the
    /// relay's stamps; or tells its sender there is no route.
    pub(super) fn forward(&mut self, connection: ConnectionId, mut frame: FrameMessage) {
        let Some(mut head) = frame.head.take() else {
            return;
        };
        if head.forward_for_source.is_empty() {
            head.forward_for_source = std::mem::take(&mut head.source);
        }
        if head.hop_count >= MAX_HOPS {
            self.count_forward_drop("hop_limit");
            return;
        }
        head.hop_count += 1;
        head.forward_for_connection_id = connection.0 as i64;
        head.source = self.name.clone();
        // The destination's own connection; else the relay offering it (never back where the
        // frame came from).
        let from = self.connections.get(&connection).map(|c| c.peer.clone());
        let target = self
            .best_connection(&head.destination)
            .or_else(|| {
                let relay = self.mesh_next_hop(&head.destination, from.as_deref()?)?;
                self.best_connection(relay)
            })
            .filter(|&target| target != connection);
        let Some(target) = target else {
            self.count_forward_drop("no_route");
            let notice = self.unroutable_notice(&head.forward_for_source, &head.destination);
            self.queue_forward(connection, notice);
            return;
        };
        let (originator, destination) = (head.forward_for_source.clone(), head.destination.clone());
        frame.head = Some(head);
        let target_mtu = self.connections.get(&target).map_or(0, |c| c.params.mtu);
        if !self.queue_forward(target, frame) && target_mtu > 0 {
            // Too large for the destination's connection (a datagram path narrower than the
            // sender's): the sender learns the size, and cuts its frames to fit.
            let notice = self.path_mtu_notice(&originator, &destination, target_mtu);
            self.queue_forward(connection, notice);
        }
    }

    /// Encodes `frame` into `target`'s queue of forwarded frames, if it fits; returns false when
    /// it is larger than the connection's MTU.
    fn queue_forward(&mut self, target: ConnectionId, frame: FrameMessage) -> bool {
        let mut encoded = BytesMut::new();
        if self.codec.encode(&frame, &mut encoded).is_err() {
            self.count_forward_drop("too_large");
            return true;
        }
        let Some(state) = self.connections.get_mut(&target) else {
            return true;
        };
        if encoded.len() > state.params.mtu {
            self.count_forward_drop("too_large");
            return false;
        }
        let limit = self.config.forward_queue_limit;
        if state.forward_bytes + encoded.len() > limit {
            match self.config.forward_overflow {
                ForwardOverflow::DropNewest => {
                    self.count_forward_drop("queue_full");
                    return true;
                }
                // Larger than the whole queue: it never fits, and emptying the queue for it would
                // leave it over the limit.
                ForwardOverflow::DropOldest if encoded.len() > limit => {
                    self.count_forward_drop("queue_full");
                    return true;
                }
                ForwardOverflow::DropOldest => {
                    let mut dropped = 0;
                    while state.forward_bytes + encoded.len() > limit {
                        let Some(oldest) = state.forward.pop_front() else {
                            break;
                        };
                        state.forward_bytes -= oldest.len();
                        dropped += 1;
                    }
                    *self
                        .stats
                        .forward_dropped
                        .entry("queue_full_oldest")
                        .or_default() += dropped;
                }
                ForwardOverflow::Disconnect => {
                    self.count_forward_drop("slow_consumer");
                    let reason = CloseReasonData {
                        code: AtbusCloseReason::Shutdown as i32,
                        message: "slow consumer: the relay's queue for it is full".into(),
                    };
                    self.close_connection(target, reason);
                    return true;
                }
            }
        }
        state.forward_bytes += encoded.len();
        state.forward.push_back(encoded.freeze());
        self.wake.insert(target);
        self.stats.frames_forwarded += 1;
        true
    }

    /// The notice to `sender` that frames to `destination` must not exceed `mtu` bytes.
    fn path_mtu_notice(&self, sender: &str, destination: &str, mtu: usize) -> FrameMessage {
        let packet = PacketData {
            stream_offset: mtu as i64,
            ..Default::default()
        };
        self.routing_notice(sender, destination, packet)
    }

    /// `packet`, on the routing stream, from this relay to `sender`, about `destination`.
    fn routing_notice(&self, sender: &str, destination: &str, packet: PacketData) -> FrameMessage {
        FrameMessage {
            head: Some(MessageHead {
                source: self.name.clone(),
                destination: sender.to_string(),
                forward_for_source: destination.to_string(),
                hop_count: 1,
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData {
                stream_id: ROUTING_STREAM,
                ..packet
            })),
        }
    }

    /// A relay reported that frames to `peer` must not exceed `mtu` bytes once it stamped them.
    pub(super) fn on_path_mtu(&mut self, peer_name: &str, mtu: usize) {
        let mtu = mtu.max(super::MIN_MTU);
        if let Some(peer) = self.peers.get_mut(peer_name) {
            peer.route_mtu = Some(peer.route_mtu.map_or(mtu, |known| known.min(mtu)));
        }
    }

    fn count_forward_drop(&mut self, reason: &'static str) {
        *self.stats.forward_dropped.entry(reason).or_default() += 1;
    }

    /// The notice to `sender` that `destination` has no route: a packet on the routing stream
    /// naming the destination in `forward_for_source`, its one fragment carrying the reason.
    fn unroutable_notice(&self, sender: &str, destination: &str) -> FrameMessage {
        let fragment = FragmentType {
            close_reason: Some(CloseReasonData {
                code: AtbusCloseReason::RouterNotFound as i32,
                message: format!("relay {} knows no route to {destination}", self.name),
            }),
            ..Default::default()
        };
        let packet = PacketData {
            content: encode_content(vec![fragment]),
            flags: AtbusPacketFlagType::FinishStream as i32,
            ..Default::default()
        };
        self.routing_notice(sender, destination, packet)
    }

    /// A relay reported no route to `peer`: what was queued to it is dropped (the application
    /// is told how much), and sends to it fail for a while.
    pub(super) fn on_unroutable(&mut self, now: Instant, peer_name: &str, reason: CloseReasonData) {
        self.stats.unroutable_notices += 1;
        let Some(peer) = self.peers.get_mut(peer_name) else {
            return;
        };
        if !peer.connections.is_empty() {
            return; // reached directly: the relay's view does not matter
        }
        peer.unroutable_until = Some(now + UNROUTABLE_FOR);
        let dropped_units = peer.unacked_units;
        // Its flights leave the books of the connections they went out on (the relay's), or
        // their units would count as in flight there for ever.
        for stream in peer.send.values_mut() {
            stream.forget_flights();
            super::settle(&mut self.connections, &mut self.stats, stream, now, false);
        }
        peer.send.clear();
        peer.blocked.clear();
        peer.unacked_units = 0;
        self.events.push_back(Event::Unroutable {
            peer: peer_name.to_string(),
            reason,
            dropped_units,
        });
    }
}

#[cfg(test)]
mod tests {
    use atbus_proto::Decoded;
    use bytes::Bytes;

    use super::*;
    use crate::engine::config::{ConnectionKind, ConnectionParams, EngineConfig};

    const STREAM: ConnectionParams = ConnectionParams {
        kind: ConnectionKind::Stream,
        mtu: 65536,
    };

    /// A relay between relay "up" (connection 1) and node "b" (connection 2), its first pings
    /// sent.
    fn relay_between_up_and_b(now: Instant) -> Endpoint {
        let mut config = EngineConfig::default();
        config.auth.relay = true;
        let mut relay = Endpoint::new("relay", config, now);
        assert_eq!(relay.add_connection(now, "up", STREAM), Ok(ConnectionId(1)));
        assert_eq!(relay.add_connection(now, "b", STREAM), Ok(ConnectionId(2)));
        // "up" said it is a relay in its handshake.
        let identity = relay.connections.get_mut(&ConnectionId(1)).unwrap();
        identity.identity.as_mut().unwrap().relay = true;
        relay.refresh_relay("up");
        while relay.poll_transmit(now).is_some() {}
        relay
    }

    /// A window probe from node "a" to "b", forwarded by "up", having passed `hops` relays.
    fn probe_through_up(relay: &Endpoint, hops: u32) -> Bytes {
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "up".into(),
                destination: "b".into(),
                forward_for_source: "a".into(),
                hop_count: hops,
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData::default())),
        };
        let mut out = BytesMut::new();
        relay.codec.encode(&frame, &mut out).unwrap();
        out.freeze()
    }

    /// The heads of the frames the relay sends on `connection` now.
    fn heads_sent_on(
        relay: &mut Endpoint,
        now: Instant,
        connection: ConnectionId,
    ) -> Vec<MessageHead> {
        let mut heads = Vec::new();
        while let Some(transmit) = relay.poll_transmit(now) {
            if transmit.connection != connection {
                continue;
            }
            let mut data = BytesMut::from(&transmit.data[..]);
            while let Ok(Decoded::Frame(frame)) = relay.codec.decode(&mut data) {
                heads.extend(frame.message.head);
            }
        }
        heads
    }

    #[test]
    fn a_relay_counts_itself_in_the_hop_count_of_what_it_forwards() {
        let now = Instant::now();
        let mut relay = relay_between_up_and_b(now);
        relay.handle_input(now, ConnectionId(1), probe_through_up(&relay, 3));
        let heads = heads_sent_on(&mut relay, now, ConnectionId(2));
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert_eq!(heads[0].hop_count, 4);
        assert_eq!(heads[0].source, "relay");
        assert_eq!(heads[0].forward_for_source, "a");
    }

    #[test]
    fn a_frame_past_the_hop_limit_is_dropped_and_counted() {
        let now = Instant::now();
        let mut relay = relay_between_up_and_b(now);
        relay.handle_input(now, ConnectionId(1), probe_through_up(&relay, MAX_HOPS - 1));
        assert_eq!(heads_sent_on(&mut relay, now, ConnectionId(2)).len(), 1);
        relay.handle_input(now, ConnectionId(1), probe_through_up(&relay, MAX_HOPS));
        assert!(heads_sent_on(&mut relay, now, ConnectionId(2)).is_empty());
        assert_eq!(relay.stats().forward_dropped.get("hop_limit"), Some(&1));
    }
}
