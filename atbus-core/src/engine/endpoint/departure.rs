//! Peers that left. A peer without connections that has nothing more to do (it is *at rest*:
//! nothing queued to it or in flight, nothing of it unread, no timer, no relay preference set)
//! lingers [`LINGER`], in case it comes straight back, and is then dropped from `peers` and from
//! the timer index; a small tombstone keeps where its streams stood, so that the same instance
//! carries on where it was when it comes back (the design, and why, in `peers/departed.rs`).
//!
//! The linger is a timer of the peer (`endpoint/deadlines.rs`): it starts when the peer is found
//! at rest, stops when anything makes it busy again, and when it fires on a peer still at rest,
//! the peer goes.

use std::time::{Duration, Instant};

use super::Endpoint;
use super::handshake::ANONYMOUS_PREFIX;
use crate::engine::config::EngineConfig;
use crate::engine::peer::Peer;
use crate::engine::peers::{Departed, Peers, StreamLimits, Tombstone, at_rest};
use crate::engine::timer::TimerKey;

/// A departed peer is dropped once it has been at rest this long.
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// The peers of an endpoint configured with `config`: none yet.
pub(super) fn new_peers(config: &EngineConfig) -> Peers {
    Peers::new(Departed::new(StreamLimits {
        budget: config.peer_receive_budget,
        window: config.stream_receive_window,
        initial_window: config.initial_window,
    }))
}

impl Endpoint {
    /// The peers this endpoint holds state for: connected ones, and those that left with
    /// something still to do (or left less than a few seconds ago).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The peers that left and whose tombstone is kept: where their streams stood, should they
    /// come back.
    pub fn departed_peers(&self) -> usize {
        self.peers.departed().len()
    }

    /// Whether `peer`, named `name`, may be dropped once its linger is over: it is at rest, and
    /// nothing it is owed (our acknowledgement, an abandonment to announce) could still go out.
    /// Owed to a peer that cannot be reached, an abandonment waits in the tombstone.
    pub(super) fn may_depart(&self, name: &str, peer: &Peer) -> bool {
        let owed = !peer.ack_pending.is_empty() || peer.send.values().any(|s| s.is_active());
        at_rest(peer) && (!owed || !self.can_reach(name))
    }

    /// When `peer`, found at rest now, is dropped: after [`LINGER`], and not while sends to it
    /// fail for want of a route (that would be forgotten).
    pub(super) fn linger_end(&self, peer: &Peer) -> Instant {
        let end = self.clock + LINGER;
        peer.unroutable_until.map_or(end, |until| until.max(end))
    }

    /// Drops `name` at `now` if its linger is over and it is still at rest.
    pub(super) fn depart_if_due(&mut self, now: Instant, name: &str) {
        let Some(id) = self.peers.id(name) else {
            return;
        };
        let due = self.peers.linger(id).is_some_and(|at| at <= now);
        let Some(peer) = self.peers.get(name) else {
            return;
        };
        if !due || !self.may_depart(name, peer) {
            return;
        }
        // A name given to an anonymous peer is never used again.
        let tombstone = match name.starts_with(ANONYMOUS_PREFIX) {
            true => None,
            false => Tombstone::of(peer, self.peers.departed().limits(), now),
        };
        self.peers.remove(name, tombstone, now);
        self.timers.get_mut().arm(TimerKey::Peer(id), None);
        self.stats.peers_dropped += 1;
        tracing::debug!(peer = name, "dropped the state of a peer that left");
    }
}
