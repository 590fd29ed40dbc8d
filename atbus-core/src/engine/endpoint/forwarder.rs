//! What only a relay holds and does (`docs/protocol.md` section 5.9): frames for other nodes
//! stamped and forwarded, a queue of them per connection, routing notices to their senders (no
//! route; frame too large), and the route tables of the mesh (`mesh.rs`, with the provisional
//! routes of `provisional.rs`).
//!
//! An endpoint whose role is relay (`AuthConfig::relay`) owns a [`Forwarder`]; a plain node has
//! none, so it carries no forwarding state at all and drops frames addressed to other nodes
//! (counted as misaddressed). Node-side routing (which relay a peer is reached through, what a
//! notice means to the sender) is in `route.rs`.

use std::collections::{BTreeMap, VecDeque};

use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusCloseReason, AtbusPacketFlagType, CloseReasonData, FrameMessage, MessageHead, PacketData,
};
use bytes::{Bytes, BytesMut};

use super::Endpoint;
use super::mesh::{MAX_HOPS, Mesh};
use crate::engine::close::CloseReason;
use crate::engine::config::ForwardOverflow;
use crate::engine::stream_id::StreamId;
use crate::engine::transmit::ConnectionId;
use crate::engine::wire::encode_content;

/// A relay's forwarding state.
#[derive(Debug, Default)]
pub(crate) struct Forwarder {
    /// The route tables of the other relays, and what this relay owes them.
    pub(super) mesh: Mesh,
    /// Frames forwarded to each connection, waiting to go out on it.
    queues: BTreeMap<ConnectionId, ForwardQueue>,
}

/// Encoded frames for one connection, in the order they came.
#[derive(Debug, Default)]
struct ForwardQueue {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`.
    bytes: usize,
}

impl ForwardQueue {
    fn pop(&mut self) -> Option<Bytes> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some(frame)
    }
}

impl Endpoint {
    /// The mesh's tables, on a relay.
    pub(super) fn mesh(&self) -> Option<&Mesh> {
        self.forwarder.as_deref().map(|forwarder| &forwarder.mesh)
    }

    /// The mesh's tables, on a relay.
    pub(super) fn mesh_mut(&mut self) -> Option<&mut Mesh> {
        self.forwarder
            .as_deref_mut()
            .map(|forwarder| &mut forwarder.mesh)
    }

    /// Relays: bytes of forwarded frames waiting for their connections.
    pub fn forward_queued_bytes(&self) -> usize {
        self.forwarder.as_deref().map_or(0, |forwarder| {
            forwarder.queues.values().map(|queue| queue.bytes).sum()
        })
    }

    /// Whether frames forwarded to `connection` wait to go out.
    pub(super) fn has_forwarded(&self, connection: ConnectionId) -> bool {
        self.forwarder.as_deref().is_some_and(|forwarder| {
            forwarder
                .queues
                .get(&connection)
                .is_some_and(|queue| !queue.frames.is_empty())
        })
    }

    /// Moves the frames forwarded to `connection` into `out`, in order, while they fit in `mtu`.
    pub(super) fn take_forwarded(
        &mut self,
        connection: ConnectionId,
        out: &mut BytesMut,
        mtu: usize,
    ) {
        let Some(queue) = self
            .forwarder
            .as_deref_mut()
            .and_then(|forwarder| forwarder.queues.get_mut(&connection))
        else {
            return;
        };
        while let Some(frame) = queue.frames.front() {
            if out.len() + frame.len() > mtu {
                break;
            }
            out.extend_from_slice(frame);
            queue.pop();
            self.stats.frames_sent += 1;
        }
    }

    /// Forgets the queue of a connection that is gone.
    pub(super) fn drop_forwarded(&mut self, connection: ConnectionId) {
        if let Some(forwarder) = self.forwarder.as_deref_mut() {
            forwarder.queues.remove(&connection);
        }
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
        let Some(from) = self.connections.get(&connection).map(|c| c.peer.clone()) else {
            return;
        };
        // The way back to the originator, until the tables offer one (a routing notice names
        // the destination it is about there, not its originator).
        let is_notice =
            matches!(&frame.body, Some(Body::Packet(p)) if p.stream_id == StreamId::ROUTING.get());
        if !is_notice {
            self.learn_route_back(&head.forward_for_source, &from);
        }
        // The destination's own connection; else the relay offering it, or the one its frames
        // came through (never back where the frame came from).
        let destination = head.destination.as_str();
        let target = self
            .best_connection(destination)
            .or_else(|| {
                let relay = self
                    .mesh_next_hop(destination, &from)
                    .or_else(|| self.provisional_next_hop(destination, &from))?;
                self.best_connection(relay)
            })
            .filter(|&target| target != connection);
        let Some(target) = target else {
            self.count_forward_drop("no_route");
            let notice = self.unroutable_notice(&head.forward_for_source, &head.destination);
            self.queue_forward(connection, notice);
            // A relay sent it here: its table of this relay is stale.
            self.owe_table(&from);
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
        let Some(mtu) = self.connections.get(&target).map(|state| state.params.mtu) else {
            return true;
        };
        if encoded.len() > mtu {
            self.count_forward_drop("too_large");
            return false;
        }
        let (limit, overflow) = (
            self.config.forward_queue_limit,
            self.config.forward_overflow,
        );
        let Some(forwarder) = self.forwarder.as_deref_mut() else {
            return true;
        };
        let queue = forwarder.queues.entry(target).or_default();
        if queue.bytes + encoded.len() > limit {
            match overflow {
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
                    while queue.bytes + encoded.len() > limit {
                        if queue.pop().is_none() {
                            break;
                        }
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
                    let reason =
                        CloseReason::shutdown("slow consumer: the relay's queue for it is full");
                    self.close_connection(target, reason);
                    return true;
                }
            }
        }
        queue.bytes += encoded.len();
        queue.frames.push_back(encoded.freeze());
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
                stream_id: StreamId::ROUTING.get(),
                ..packet
            })),
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
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use atbus_proto::Decoded;
    use bytes::Bytes;

    use super::*;
    use crate::engine::config::{ConnectionKind, ConnectionParams, EngineConfig};

    pub(in crate::engine::endpoint) const STREAM: ConnectionParams = ConnectionParams {
        kind: ConnectionKind::Stream,
        mtu: 65536,
    };

    /// A relay between relay "up" (connection 1) and node "b" (connection 2), its first pings
    /// sent.
    pub(in crate::engine::endpoint) fn relay_between_up_and_b(now: Instant) -> Endpoint {
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
        frame_through_up(relay, "a", "b", hops)
    }

    /// A window probe from node `originator` to `destination`, forwarded by "up", having passed
    /// `hops` relays.
    pub(in crate::engine::endpoint) fn frame_through_up(
        relay: &Endpoint,
        originator: &str,
        destination: &str,
        hops: u32,
    ) -> Bytes {
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "up".into(),
                destination: destination.into(),
                forward_for_source: originator.into(),
                hop_count: hops,
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData::default())),
        };
        let mut out = BytesMut::new();
        relay.codec.encode(&frame, &mut out).unwrap();
        out.freeze()
    }

    /// The frames the relay sends on `connection` now.
    pub(in crate::engine::endpoint) fn frames_sent_on(
        relay: &mut Endpoint,
        now: Instant,
        connection: ConnectionId,
    ) -> Vec<FrameMessage> {
        let mut frames = Vec::new();
        while let Some(transmit) = relay.poll_transmit(now) {
            if transmit.connection != connection {
                continue;
            }
            let mut data = BytesMut::from(&transmit.data[..]);
            while let Ok(Decoded::Frame(frame)) = relay.codec.decode(&mut data) {
                frames.push(frame.message);
            }
        }
        frames
    }

    /// The heads of the frames the relay sends on `connection` now.
    fn heads_sent_on(
        relay: &mut Endpoint,
        now: Instant,
        connection: ConnectionId,
    ) -> Vec<MessageHead> {
        frames_sent_on(relay, now, connection)
            .into_iter()
            .filter_map(|frame| frame.head)
            .collect()
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

    #[test]
    fn only_a_relay_holds_forwarding_state_and_a_plain_node_drops_frames_for_others() {
        let now = Instant::now();
        let node = Endpoint::new("node", EngineConfig::default(), now);
        assert!(node.forwarder.is_none(), "a plain node has no forwarder");
        let mut config = EngineConfig::default();
        config.auth.relay = true;
        assert!(Endpoint::new("relay", config, now).forwarder.is_some());

        // A frame for "c" on a plain node's connection from "a": dropped, counted, nothing kept.
        let mut node = node;
        let id = node
            .add_connection(now, "a", ConnectionParams::stream())
            .unwrap();
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "a".into(),
                destination: "c".into(),
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData::default())),
        };
        let mut wire = BytesMut::new();
        node.codec.encode(&frame, &mut wire).unwrap();
        node.handle_input(now, id, wire.freeze());
        assert_eq!(node.stats().misaddressed_frames, 1);
        assert_eq!(node.forward_queued_bytes(), 0);
        assert!(node.forwarder.is_none());
    }
}
