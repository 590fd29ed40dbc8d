//! Routes through relays (`docs/protocol.md` section 5.9). A peer with no direct connection is
//! reached through a relay: the one it advertises if this node prefers that and is connected to
//! it, else the one its forwarded frames last came through, else any relay this endpoint is
//! connected to. Streams stay end to end: the relay forwards packets and
//! acknowledgements without taking part in them. What a relay itself does with the frames it is
//! not the destination of is in `forwarder.rs`; here is what its notices mean to the sender.

use std::time::{Duration, Instant};

use atbus_proto::protocol::CloseReasonData;

use super::Endpoint;
use crate::engine::close::CloseReason;
use crate::engine::event::Event;
use crate::engine::transmit::ConnectionId;

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

    /// A relay reported that frames to `peer` must not exceed `mtu` bytes once it stamped them.
    pub(super) fn on_path_mtu(&mut self, peer_name: &str, mtu: usize) {
        let mtu = mtu.max(super::MIN_MTU);
        if let Some(peer) = self.peers.get_mut(peer_name) {
            peer.route_mtu = Some(peer.route_mtu.map_or(mtu, |known| known.min(mtu)));
        }
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
            reason: CloseReason::from_wire(reason),
            dropped_units,
        });
    }
}
