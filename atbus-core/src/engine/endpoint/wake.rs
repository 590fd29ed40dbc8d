//! Which connections `poll_transmit` looks at. A relay holds thousands of connections and most
//! are idle; looking at each of them after every event made the relay's work per event grow
//! with the number of nodes (2000 nodes connecting took minutes, or never finished).
//!
//! A connection is *woken* when something it may send comes about: input on it or on its peer's
//! other connections, a send or a read on its peer, a timer of its peer, a forwarded frame, a
//! handshake message, a close, a transport unblocked. `poll_transmit` builds for woken
//! connections only and puts a connection back to rest once it has nothing to send. Pings are
//! due by time alone: the timer of a connection that owes one wakes it (`endpoint/timers.rs`).
//!
//! Whatever wakes a connection may have changed its deadlines too: every connection woken or put
//! to rest is *noted* for the timer index, which computes its deadlines again
//! (`endpoint/deadlines.rs`).
//!
//! Debug builds check the rule: when `poll_transmit` finds nothing and no timer is overdue,
//! every resting connection must have nothing to send either (for endpoints of up to
//! `CHECKED_CONNECTIONS`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::ops::RangeBounds;
use std::time::Instant;

use super::Endpoint;
use crate::engine::connection::Connection;
use crate::engine::transmit::ConnectionId;

/// Debug builds check the wake rule on endpoints with at most this many connections (the check
/// looks at every connection).
#[cfg(debug_assertions)]
const CHECKED_CONNECTIONS: usize = 512;

/// The woken connections, and the connections noted for the timer index.
#[derive(Debug, Default)]
pub(super) struct Wake {
    woken: BTreeSet<ConnectionId>,
    /// Connections whose deadlines may have changed since the index last looked.
    noted: RefCell<HashSet<ConnectionId>>,
}

impl Wake {
    /// Wakes `id` (and notes it).
    pub fn insert(&mut self, id: ConnectionId) -> bool {
        self.note(id);
        self.woken.insert(id)
    }

    /// Wakes each of `ids`.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = ConnectionId>) {
        for id in ids {
            self.insert(id);
        }
    }

    /// Puts `id` to rest, or forgets it (and notes it).
    pub fn remove(&mut self, id: &ConnectionId) -> bool {
        self.note(*id);
        self.woken.remove(id)
    }

    /// Whether `id` is woken.
    pub fn contains(&self, id: &ConnectionId) -> bool {
        self.woken.contains(id)
    }

    /// The woken connections in `range`.
    pub fn range(
        &self,
        range: impl RangeBounds<ConnectionId>,
    ) -> impl Iterator<Item = &ConnectionId> {
        self.woken.range(range)
    }

    /// Notes that `id`'s deadlines may have changed.
    pub fn note(&mut self, id: ConnectionId) {
        self.noted.get_mut().insert(id);
    }

    /// Takes the noted connections.
    pub fn take_noted(&self) -> Vec<ConnectionId> {
        let mut noted = self.noted.borrow_mut();
        let taken = noted.drain().collect();
        if noted.capacity() > 1024 {
            noted.shrink_to(64);
        }
        taken
    }
}

impl Endpoint {
    /// Wakes `peer`'s connections, or when it has none, those of the relay its frames go
    /// through.
    pub(super) fn wake_peer(&mut self, peer: &str) {
        self.peers.touch(peer);
        let direct = self
            .peers
            .get(peer)
            .is_some_and(|state| !state.connections.is_empty());
        let owner = match direct {
            true => Some(peer),
            false => self.route_of(peer),
        };
        let Some(connections) = owner
            .and_then(|owner| self.peers.get(owner))
            .map(|state| &state.connections)
        else {
            return;
        };
        self.wake.extend(connections.iter().copied());
    }

    /// When `state` owes its next ping, if pings go on it at all: established, and its address
    /// proven (an unproven one would not have the budget).
    pub(super) fn ping_due(&self, state: &Connection) -> Option<Instant> {
        (state.is_established() && state.validated).then(|| {
            state
                .last_ping
                .map_or(self.epoch, |last| last + self.config.keep_alive_interval)
        })
    }

    /// The woken connections in round-robin order. Each is noted for the timer index: what is
    /// built for it may change its deadlines (a ping, a hello, an address proven).
    pub(super) fn woken(&mut self, _now: Instant) -> Vec<ConnectionId> {
        let woken: Vec<ConnectionId> = self
            .wake
            .range(self.next_connection..)
            .chain(self.wake.range(..self.next_connection))
            .copied()
            .collect();
        for &id in &woken {
            self.wake.note(id);
        }
        woken
    }

    /// Puts connection `id` to rest: it had nothing to send.
    pub(super) fn rest(&mut self, id: ConnectionId) {
        self.wake.remove(&id);
    }

    /// Debug builds: panics if a resting connection had something to send at `now` (an event
    /// that should have woken it did not).
    #[cfg(debug_assertions)]
    pub(super) fn check_resting(&mut self, now: Instant) {
        // A timer overdue (`handle_timeout` not called yet) may have made output due by time
        // alone: that output waits for `handle_timeout`, which wakes what it concerns.
        if self.connections.len() > CHECKED_CONNECTIONS
            || self.poll_timeout().is_some_and(|at| at <= now)
        {
            return;
        }
        let resting: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|&(id, state)| !self.wake.contains(id) && !state.transport_blocked)
            .map(|(&id, _)| id)
            .collect();
        for id in resting {
            if let Some(data) = self.build_transmit(now, id) {
                let mut rest = bytes::BytesMut::from(&data[..]);
                let mut frames = Vec::new();
                while let Ok(atbus_proto::Decoded::Frame(frame)) = self.codec.decode(&mut rest) {
                    frames.push(frame.message);
                }
                panic!(
                    "connection {id:?} was resting with {} bytes to send: an event did not wake \
                     it\nwhat it had: {frames:?}\nits state: {:?}",
                    data.len(),
                    self.connections.get(&id)
                );
            }
        }
    }
}
