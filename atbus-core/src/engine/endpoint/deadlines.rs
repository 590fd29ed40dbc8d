//! The deadlines of connections and peers, kept in the timer index (`engine/timer.rs`).
//!
//! A connection's deadline is the earliest of its handshake deadline and hello resend, its idle
//! timeout and its next keep-alive ping; a peer's, the earliest of its acknowledgement deadline,
//! its streams' loss, retransmission, window-probe, reset and expiry deadlines (while frames can
//! reach it), and the end of its linger once it left ([`Endpoint::may_depart`]).
//!
//! The index is brought up to date before it is read ([`Endpoint::rearm`]): the deadlines of the
//! connections and peers that changed since are computed again, and nothing else. What changed
//! is noted where it changes: a peer when it is changed at all (`Peers::get_mut` and its kin note
//! it) or woken; a connection when it is woken, put to rest or sends (`Wake` notes it), and its
//! peer with it (a peer's timers depend on its connections' round-trip times and backed-up
//! transports). The peers reached through relays depend on the relays' connections too: when
//! those change (the relays connected, their best connection, whether it is backed up), the
//! deadlines of every peer without a connection of its own are computed again.
//!
//! Debug builds check the index: after each update, every connection's and peer's armed deadline
//! must be what computing it from scratch gives (for endpoints of up to `CHECKED_KEYS`
//! connections and peers; the check looks at every one).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use super::Endpoint;
use crate::engine::connection::Connection;
use crate::engine::peer::Peer;
use crate::engine::peers::PeerId;
use crate::engine::timer::{TimerIndex, TimerKey};

/// Debug builds check the index on endpoints with at most this many connections and peers.
#[cfg(debug_assertions)]
const CHECKED_KEYS: usize = 512;

/// The earliest of `deadlines`.
fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

impl Endpoint {
    /// Connection `state`'s deadline: its handshake's timers, its idle timeout once established,
    /// and its next ping when pings go on it (an address not yet proven gets none, they would not
    /// fit its budget, nor does a connection whose transport is backed up, it would not take them).
    pub(super) fn connection_deadline(&self, state: &Connection) -> Option<Instant> {
        let established = state.is_established();
        let idle = established.then(|| state.last_received + self.config.idle_timeout);
        let ping = match state.transport_blocked {
            true => None,
            false => self.ping_due(state),
        };
        earliest([Self::handshake_timer(state), idle, ping])
    }

    /// The deadline of `peer`'s own timers, named `name`. Nothing can go to a peer without
    /// connections: no timer may keep firing for it.
    pub(super) fn peer_deadline(&self, name: &str, peer: &Peer) -> Option<Instant> {
        if !peer.needs_timers() || !self.can_reach(name) {
            return None;
        }
        let rto = self.rto(name);
        let loss_delay = self.loss_delay(name);
        // Probes and resets wait while the connection they would go on is backed up.
        let blocked = self
            .data_connection(name)
            .and_then(|id| self.connections.get(&id))
            .is_some_and(|connection| connection.transport_blocked);
        let timeout = self.config.message_timeout;
        let streams = peer.send.values().flat_map(|stream| {
            [
                stream.loss_time(loss_delay),
                stream.timeout_at(rto),
                stream.probe_at(rto).filter(|_| !blocked),
                stream.reset_at().filter(|_| !blocked),
                timeout.and_then(|timeout| stream.expiry_at(timeout)),
            ]
        });
        earliest(std::iter::once(peer.ack_deadline).chain(streams))
    }

    /// Brings the timer index up to date: computes again the deadlines of what changed since.
    pub(super) fn rearm(&self) {
        let mut timers = self.timers.borrow_mut();
        let routes = self.routes_fingerprint();
        let routes_changed = timers.routes != routes;
        timers.routes = routes;
        for id in self.wake.take_noted() {
            let state = self.connections.get(&id);
            let at = state.and_then(|state| self.connection_deadline(state));
            timers.arm(TimerKey::Connection(id), at);
            if let Some(peer) = state.and_then(|state| self.peers.id(&state.peer)) {
                self.rearm_peer(&mut timers, peer);
            }
        }
        for peer in self.peers.take_touched() {
            self.rearm_peer(&mut timers, peer);
        }
        if routes_changed {
            let routed: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, peer)| peer.connections.is_empty())
                .filter_map(|(name, _)| self.peers.id(name))
                .collect();
            for peer in routed {
                self.rearm_peer(&mut timers, peer);
            }
        }
    }

    /// Computes and arms the deadline of the peer with id `id`, its linger included.
    fn rearm_peer(&self, timers: &mut TimerIndex, id: PeerId) {
        let Some((name, peer)) = self.peers.by_id(id) else {
            timers.arm(TimerKey::Peer(id), None);
            return;
        };
        let linger = match self.may_depart(name, peer) {
            true => self
                .peers
                .linger(id)
                .or_else(|| Some(self.linger_end(peer))),
            false => None,
        };
        self.peers.set_linger(id, linger);
        let at = earliest([self.peer_deadline(name, peer), linger]);
        timers.arm(TimerKey::Peer(id), at);
    }

    /// What the deadlines of the peers reached through relays depend on: the relays connected,
    /// the connection frames to each go out on, and whether that connection is backed up.
    fn routes_fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        for relay in &self.relays {
            let best = self.best_connection(relay);
            let blocked = best
                .and_then(|id| self.connections.get(&id))
                .is_some_and(|connection| connection.transport_blocked);
            (relay, best, blocked).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Debug builds: panics if a connection's or a peer's armed deadline is not what computing
    /// it again gives (a change that should have been noted was not).
    #[cfg(debug_assertions)]
    pub(super) fn check_timers(&self) {
        if self.connections.len() + self.peers.len() > CHECKED_KEYS {
            return;
        }
        let timers = self.timers.borrow();
        let mut armed = 0;
        for (&id, state) in &self.connections {
            let expected = self.connection_deadline(state);
            let key = TimerKey::Connection(id);
            assert_eq!(
                timers.armed(key),
                expected,
                "connection {id:?}: its deadline changed unnoticed\nits state: {state:?}"
            );
            armed += usize::from(expected.is_some());
        }
        for (name, peer) in &self.peers {
            let Some(id) = self.peers.id(name) else {
                continue;
            };
            let linger = self.peers.linger(id);
            assert_eq!(
                linger.is_some(),
                self.may_depart(name, peer),
                "peer {name}: came to rest or left it unnoticed\nits state: {peer:?}"
            );
            let expected = earliest([self.peer_deadline(name, peer), linger]);
            assert_eq!(
                timers.armed(TimerKey::Peer(id)),
                expected,
                "peer {name}: its deadline changed unnoticed\nits state: {peer:?}"
            );
            armed += usize::from(expected.is_some());
        }
        assert_eq!(
            timers.len(),
            armed,
            "deadlines armed for connections or peers that are gone"
        );
    }
}
