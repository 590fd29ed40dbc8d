//! A peer that restarted: its handshake brings a new instance (or, behind a relay, its frames
//! a new instance tag: protocol.md 5.9), everything it had received is gone, and the streams to
//! it start over from offset 0. What it had not acknowledged is sent
//! again (at least once: a message the old instance took but did not acknowledge arrives twice);
//! what it had sent us and we had whole stays readable; its unfinished messages are dropped.

use atbus_proto::protocol::{AtbusCloseReason, CloseReasonData, MessageHead};
use bytes::Bytes;

use super::Endpoint;
use crate::engine::event::Event;
use crate::engine::reassembly::Reassembler;
use crate::engine::transmit::ConnectionId;

/// How many earlier instances of a peer are remembered, to drop their late relayed frames.
const RETIRED_INSTANCES: usize = 8;

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
    pub(super) fn admit_relayed(
        &mut self,
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
        let peer = self.peers.entry(originator.to_string()).or_default();
        if peer.retired_instances.contains(&tag) {
            self.stats.stale_instance_frames += 1;
            return false;
        }
        let known = peer.instance.as_deref().map(instance_tag);
        if known == Some(tag) {
            return true;
        }
        peer.instance = Some(Bytes::copy_from_slice(&tag.to_le_bytes()));
        if let Some(known) = known {
            if peer.retired_instances.len() == RETIRED_INSTANCES {
                peer.retired_instances.remove(0);
            }
            peer.retired_instances.push(known);
            self.restart_peer(originator, connection);
        }
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
        let peer = self.peers.entry(peer_name.to_string()).or_default();
        // Compared by tag: what relayed frames told of the peer may be the tag alone.
        let known = peer.instance.as_deref().map(instance_tag);
        let restarted = known.is_some_and(|known| known != instance_tag(&instance));
        peer.instance = Some(instance);
        if let Some(known) = known.filter(|_| restarted) {
            if peer.retired_instances.len() == RETIRED_INSTANCES {
                peer.retired_instances.remove(0);
            }
            peer.retired_instances.push(known);
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
                CloseReasonData {
                    code: AtbusCloseReason::PeerReset as i32,
                    message: "the peer restarted".into(),
                },
            );
        }
        self.stats.peer_restarts += 1;
        self.events.push_back(Event::PeerRestarted {
            peer: peer_name.to_string(),
        });
    }
}
