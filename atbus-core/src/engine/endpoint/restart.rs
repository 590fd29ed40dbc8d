//! A peer that restarted: its handshake brings a new instance (or, behind a relay, its frames
//! a new instance tag: protocol.md 5.9), everything it had received is gone, and the streams to
//! it start over from offset 0. What it had not acknowledged is sent
//! again (at least once: a message the old instance took but did not acknowledge arrives twice);
//! what it had sent us and we had whole stays readable; its unfinished messages are dropped.

use std::time::{Duration, Instant};

use atbus_proto::protocol::MessageHead;
use bytes::Bytes;

use super::Endpoint;
use crate::engine::close::{CloseCode, CloseReason};
use crate::engine::event::Event;
use crate::engine::reassembly::Reassembler;
use crate::engine::transmit::ConnectionId;

/// How many earlier instances of a peer are remembered, to drop their late relayed frames.
const RETIRED_INSTANCES: usize = 8;

/// How long after an instance is retired its relayed frames are taken for stragglers (dropped);
/// also how long a new tag must persist against an instance a direct connection vouches for.
pub(crate) const STRAGGLER_WINDOW: Duration = Duration::from_secs(3);

/// Retires `known` in favour of `current`, which is no longer retired.
fn retire(peer: &mut crate::engine::peer::Peer, known: u32, current: u32, now: Instant) {
    peer.retired_instances
        .retain(|&(retired, _)| retired != current && retired != known);
    if peer.retired_instances.len() == RETIRED_INSTANCES {
        peer.retired_instances.remove(0);
    }
    peer.retired_instances.push((known, now));
}

/// The 4-byte tag of an instance that relayed frames carry: its first 4 bytes, little-endian,
/// never 0 (0 means "no tag").
pub(crate) fn instance_tag(instance: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let len = instance.len().min(4);
    bytes[..len].copy_from_slice(&instance[..len]);
    u32::from_le_bytes(bytes).max(1)
}

impl Endpoint {
    /// This endpoint's instance tag.
    pub(super) fn own_instance_tag(&self) -> u32 {
        instance_tag(&self.auth.instance)
    }

    /// Stamps `head`, for a frame to `peer` through a relay, with this endpoint's instance tag
    /// and the tag of the peer's instance last heard from.
    pub(super) fn stamp_instances(&self, head: &mut MessageHead, peer: &str) {
        head.source_instance = self.own_instance_tag();
        head.destination_instance = self
            .peers
            .get(peer)
            .and_then(|peer| peer.instance.as_deref())
            .map_or(0, instance_tag);
    }

    /// Checks the instance tags of a frame `originator` sent through a relay on `connection`:
    /// false (drop it) when it was meant for an earlier instance of this node or comes from an
    /// earlier instance of the originator; a new tag from a known originator restarts it.
    ///
    /// Relays can deliver late: a frame of an instance retired less than [`STRAGGLER_WINDOW`]
    /// ago is dropped, but one that keeps coming after that is the live instance after all (the
    /// tags arrived out of order) and takes over again. A new tag while a direct connection
    /// vouches for the known instance takes over only if its frames still come a
    /// [`STRAGGLER_WINDOW`] after the first.
    pub(super) fn admit_relayed(
        &mut self,
        now: Instant,
        originator: &str,
        (source_instance, destination_instance): (u32, u32),
        connection: ConnectionId,
    ) -> bool {
        if destination_instance != 0 && destination_instance != self.own_instance_tag() {
            self.stats.stale_instance_frames += 1;
            let peer = self.peers.entry(originator.to_string()).or_default();
            if !peer.announce_instance {
                peer.announce_instance = true;
                self.wake_peer(originator);
            }
            return false;
        }
        if source_instance == 0 {
            return true;
        }
        let tag = source_instance;
        // Looked up before it is created: this runs for every relayed frame.
        let peer = self.peers.get_or_insert(originator);
        let known = peer.instance.as_deref().map(instance_tag);
        if known == Some(tag) {
            return true;
        }
        let Some(known) = known else {
            peer.instance = Some(Bytes::copy_from_slice(&tag.to_le_bytes()));
            return true;
        };
        let recently_retired = peer.retired_instances.iter().any(|&(retired, at)| {
            retired == tag && now.saturating_duration_since(at) < STRAGGLER_WINDOW
        });
        let vouched = !peer.connections.is_empty() && {
            let since = match peer.challenger {
                Some((challenger, first)) if challenger == tag => first,
                _ => {
                    peer.challenger = Some((tag, now));
                    now
                }
            };
            now.saturating_duration_since(since) < STRAGGLER_WINDOW
        };
        if recently_retired || vouched {
            self.stats.stale_instance_frames += 1;
            return false;
        }
        peer.challenger = None;
        peer.instance = Some(Bytes::copy_from_slice(&tag.to_le_bytes()));
        retire(peer, known, tag, now);
        self.restart_peer(originator, connection);
        true
    }

    /// Notes the instance `peer` proved on `connection`; if it differs from the one known, the
    /// peer restarted: its streams start over and its other connections (to the old instance)
    /// are closed.
    pub(super) fn note_instance(
        &mut self,
        peer_name: &str,
        instance: Bytes,
        connection: ConnectionId,
    ) {
        if instance.is_empty() {
            return;
        }
        let now = self.clock;
        let peer = self.peers.entry(peer_name.to_string()).or_default();
        // Compared by tag: what relayed frames told of the peer may be the tag alone.
        let tag = instance_tag(&instance);
        let known = peer.instance.as_deref().map(instance_tag);
        peer.instance = Some(instance);
        peer.challenger = None;
        if let Some(known) = known.filter(|&known| known != tag) {
            retire(peer, known, tag, now);
            self.restart_peer(peer_name, connection);
        }
    }

    fn restart_peer(&mut self, peer_name: &str, current: ConnectionId) {
        let (budget, window) = (
            self.config.peer_receive_budget,
            self.config.stream_receive_window,
        );
        let initial_window = self.config.initial_window;
        let Some(peer) = self.peers.get_mut(peer_name) else {
            return;
        };
        tracing::info!(peer = peer_name, "peer restarted: its streams start over");
        // Receive side: keep the whole messages, forget the rest.
        let mut held = 0;
        for stream in peer.recv.values_mut() {
            while let Some(message) = stream.reassembler.pop_message() {
                stream.carried.push_back(message);
            }
            held += stream.carried.iter().map(|m| m.data.len()).sum::<usize>();
            stream.reassembler = Reassembler::new(budget, window);
            stream.advertised = 0;
        }
        peer.recv.retain(|_, stream| !stream.carried.is_empty());
        peer.received_held = held;
        peer.ack_pending.clear();
        peer.ack_now = false;
        peer.ack_deadline = None;
        peer.packets_since_ack = 0;
        peer.rto_backoff = 0;
        // Send side: everything unacknowledged again, from offset 0.
        let mut unacked = 0;
        for stream in peer.send.values_mut() {
            unacked += stream.restart(initial_window);
            super::settle(
                &mut self.connections,
                &mut self.stats,
                stream,
                self.clock,
                false,
            );
        }
        peer.unacked_units = unacked;
        let old: Vec<ConnectionId> = peer
            .connections
            .iter()
            .copied()
            .filter(|&id| id != current)
            .collect();
        for id in old {
            self.close_connection(
                id,
                CloseReason::new(CloseCode::PeerReset, "the peer restarted"),
            );
        }
        self.stats.peer_restarts += 1;
        self.events.push_back(Event::PeerRestarted {
            peer: peer_name.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use atbus_proto::Decoded;
    use atbus_proto::protocol::frame_message::Body;
    use atbus_proto::protocol::{FrameMessage, PacketData};
    use bytes::BytesMut;

    use super::*;
    use crate::engine::config::{ConnectionKind, ConnectionParams, EngineConfig};

    const STREAM: ConnectionParams = ConnectionParams {
        kind: ConnectionKind::Stream,
        mtu: 65536,
    };
    const RELAY: ConnectionId = ConnectionId(1);
    const DIRECT: ConnectionId = ConnectionId(2);

    /// Node "b" connected to relay "up" (connection 1), its first transmits sent.
    fn b_behind_up(now: Instant) -> Endpoint {
        let mut b = Endpoint::new("b", EngineConfig::default(), now);
        assert_eq!(b.add_connection(now, "up", STREAM), Ok(RELAY));
        let connection = b.connections.get_mut(&RELAY).unwrap();
        connection.identity.as_mut().unwrap().relay = true;
        b.refresh_relay("up");
        while b.poll_transmit(now).is_some() {}
        b
    }

    /// A window probe from "a" to "b" through "up", with instance tags.
    fn from_a(b: &Endpoint, source_instance: u32, destination_instance: u32) -> Bytes {
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "up".into(),
                destination: "b".into(),
                forward_for_source: "a".into(),
                hop_count: 1,
                source_instance,
                destination_instance,
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData::default())),
        };
        let mut out = BytesMut::new();
        b.codec.encode(&frame, &mut out).unwrap();
        out.freeze()
    }

    fn counts(b: &Endpoint) -> (u64, u64) {
        (b.stats.peer_restarts, b.stats.stale_instance_frames)
    }

    #[test]
    fn tags_out_of_order_cost_a_pause_then_the_live_instance_takes_over_for_good() {
        let t0 = Instant::now();
        let mut b = b_behind_up(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // b hears of a's live instance (200) first, then a late frame of its old one (100).
        b.handle_input(at(0), RELAY, from_a(&b, 200, 0));
        assert_eq!(counts(&b), (0, 0));
        b.handle_input(at(10), RELAY, from_a(&b, 100, 0));
        assert_eq!(
            counts(&b),
            (1, 0),
            "taken for a restart: nothing tells them apart yet"
        );
        // The live instance's frames are stragglers for a while...
        b.handle_input(at(20), RELAY, from_a(&b, 200, 0));
        assert_eq!(counts(&b), (1, 1));
        // ...and then take over, after which the dead instance's late frames are dropped.
        b.handle_input(at(3_100), RELAY, from_a(&b, 200, 0));
        assert_eq!(counts(&b), (2, 1));
        b.handle_input(at(3_200), RELAY, from_a(&b, 100, 0));
        assert_eq!(counts(&b), (2, 2));
        b.handle_input(at(3_300), RELAY, from_a(&b, 200, 0));
        assert_eq!(counts(&b), (2, 2), "the live instance stays");
    }

    #[test]
    fn a_direct_connection_vouches_for_its_instance_against_a_passing_relayed_tag() {
        let t0 = Instant::now();
        let mut b = b_behind_up(t0);
        assert_eq!(b.add_connection(t0, "a", STREAM), Ok(DIRECT));
        b.note_instance("a", Bytes::from_static(&[7, 0, 0, 0, 1, 2, 3, 4]), DIRECT);
        while b.poll_transmit(t0).is_some() {}
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        b.handle_input(at(10), RELAY, from_a(&b, 7, 0));
        assert_eq!(counts(&b), (0, 0), "the handshake's instance, by its tag");
        b.handle_input(at(20), RELAY, from_a(&b, 9, 0));
        assert_eq!(
            counts(&b),
            (0, 1),
            "a stray tag does not restart a vouched peer"
        );
        assert!(b.connections.contains_key(&DIRECT));
        // A tag that persists is a restart the direct connection has not noticed yet.
        b.handle_input(at(3_100), RELAY, from_a(&b, 9, 0));
        assert_eq!(counts(&b), (1, 1));
        assert!(
            b.connections
                .get(&DIRECT)
                .is_none_or(|c| c.closing.is_some()),
            "the connection to the old instance is closed"
        );
    }

    #[test]
    fn a_frame_for_an_earlier_instance_is_answered_with_this_instances_tag() {
        let t0 = Instant::now();
        let mut b = b_behind_up(t0);
        let own = b.own_instance_tag();
        b.handle_input(t0, RELAY, from_a(&b, 200, own.wrapping_add(1).max(1)));
        assert_eq!(counts(&b), (0, 1));
        let mut announced = Vec::new();
        while let Some(transmit) = b.poll_transmit(t0) {
            let mut data = BytesMut::from(&transmit.data[..]);
            while let Ok(Decoded::Frame(frame)) = b.codec.decode(&mut data) {
                if let (Some(head), Some(Body::Acknowledge(_))) =
                    (frame.message.head, frame.message.body)
                {
                    announced.push((transmit.connection, head));
                }
            }
        }
        assert_eq!(
            announced.len(),
            1,
            "one acknowledgement to a: {announced:?}"
        );
        let (connection, head) = &announced[0];
        assert_eq!(*connection, RELAY);
        assert_eq!(
            (head.destination.as_str(), head.source_instance),
            ("a", own)
        );
        // Said once: nothing more is due.
        assert!(b.poll_transmit(t0).is_none());
    }
}
