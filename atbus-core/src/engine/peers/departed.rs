//! What is kept of a peer that left: its tombstone.
//!
//! # Why anything is kept
//!
//! Stream offsets continue across reconnections of the same instance (`docs/protocol.md` 5.15:
//! only a new instance starts the streams over). A peer that has left and comes back with the
//! same instance still has its streams to us at the offsets they had, and expects ours where they
//! were: if we forgot them, its data at offset N would land on a fresh receiver expecting 0 (held
//! beyond a gap that never fills, or refused outside the window: the stream stalls), and our new
//! data at 0 would be taken as duplicates below what it already took. The peer does not know we
//! forgot, and nothing in the protocol tells it: a signal that made it start its streams over,
//! as a restart does, would have to be added to the handshake, and every implementation taught
//! it. So the engine does not forget what the peer relies on.
//!
//! # What is kept
//!
//! A peer is dropped only *at rest* ([`at_rest`]): no connection, nothing queued to it or in
//! flight, nothing received from it that is not taken, no Writable owed, no relay preference set
//! by the application (and, while it can be reached through a relay, no acknowledgement or
//! abandonment owed to it either). At rest, each stream direction is a few numbers, and
//! those are its tombstone ([`Tombstone`]): its instance (to tell a restart from a return), for
//! each stream we sent on the next offset, the peer's window and an abandonment still to
//! announce, for each stream it sent on the next offset expected, whether it finished, and the
//! window we last announced; and the relay its frames came through and the path's MTU, which
//! decide where frames to it go. A peer created under the name again (it reconnects, a frame
//! comes from it through a relay, the application sends to it) is created from its tombstone, in
//! the state it had: the same instance carries on at the same offsets, a new instance restarts it
//! exactly as if it had never been dropped (section 5.15). A peer with nothing worth keeping (it
//! never exchanged a unit, and no instance is known) leaves no tombstone. Not kept, as they only
//! tune timing: round-trip estimates through relays, the retransmission backoff, the instances
//! it retired (their late frames are dropped for 3 s only, and a peer lingers longer) and a
//! challenging tag. A finished stream from the peer is kept without the end it held (64 bytes of
//! the receive budget): the end was reported, and what comes after it is refused as before.
//!
//! # How long
//!
//! Tombstones are bounded: at most [`CAPACITY`], the oldest dropped first, and none older than
//! [`LIFETIME`]. A peer that comes back after its tombstone went, still holding streams to us,
//! finds them out of step: that is the price of bounded memory, paid only by a peer that stayed
//! away a day, or behind more than 65,536 other departures. (Two atbus-rs endpoints that dropped
//! each other hold tombstones of nearly the same age: they forget within seconds of each other,
//! and a fresh start on both sides agrees again.) Names this endpoint gave anonymous
//! peers leave no tombstone: such a name is never used again (an anonymous peer gets a fresh one
//! on every connection), and anonymous churn must not push other peers' tombstones out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::engine::peer::{Peer, RecvStream};
use crate::engine::reassembly::{Reassembler, RecvRest};
use crate::engine::send::{SendRest, SendStream};

/// At most this many tombstones are kept; beyond it the oldest goes.
pub(crate) const CAPACITY: usize = 65_536;

/// A tombstone older than this goes.
pub(crate) const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Whether `peer` is at rest as far as its own state tells: it may be dropped (the endpoint also
/// waits for its pending acknowledgement while it can still be sent).
pub(crate) fn at_rest(peer: &Peer) -> bool {
    peer.connections.is_empty()
        && peer.unacked_units == 0
        && peer.blocked.is_empty()
        && !peer.announce_instance
        && peer.preferred_relay.is_none()
        && peer.send.values().all(|stream| stream.rest().is_some())
        && peer.recv.values().all(|stream| {
            !stream.readable && stream.carried.is_empty() && stream.reassembler.rest().is_some()
        })
}

/// What is kept of one departed peer. Compact: a relay keeps one per node that left.
#[derive(Debug)]
pub(crate) struct Tombstone {
    /// Its instance, copied (the handshake's bytes may hold a whole frame).
    instance: Option<Box<[u8]>>,
    /// Each stream direction that moved, where it stands.
    streams: Box<[(i64, Kept)]>,
    /// The relay its frames came through, and the path's MTU, if known (rarely).
    route: Option<Box<(Option<String>, Option<usize>)>>,
    /// When the peer was dropped.
    departed_at: Instant,
}

/// One stream direction of a tombstone.
#[derive(Debug, Clone, Copy)]
enum Kept {
    /// Ours: where it stands.
    Send(SendRest),
    /// The peer's: where it stands, and the window offset last announced.
    Recv(RecvRest, u64),
}

/// How the streams of a new peer start: what a tombstone need not keep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    /// The peer's receive budget.
    pub budget: usize,
    /// A stream's receive window.
    pub window: u64,
    /// The send window assumed until the peer announces one.
    pub initial_window: u64,
}

/// The tombstones.
#[derive(Debug)]
pub(crate) struct Departed {
    by_name: HashMap<Arc<str>, (u64, Tombstone)>,
    /// Names by the order they departed in.
    order: BTreeMap<u64, Arc<str>>,
    next: u64,
    limits: StreamLimits,
}

impl Tombstone {
    /// The tombstone of `peer`, at rest, dropped at `now`; `None` when nothing of it is worth
    /// keeping (a new peer of that name would be the same).
    pub fn of(peer: &Peer, limits: StreamLimits, now: Instant) -> Option<Self> {
        let fresh = SendStream::new(limits.initial_window).rest();
        let send = peer
            .send
            .iter()
            .filter_map(|(&id, stream)| Some((id, stream.rest()?)))
            .filter(|(_, rest)| Some(*rest) != fresh)
            .map(|(id, rest)| (id, Kept::Send(rest)));
        let recv = peer
            .recv
            .iter()
            .filter_map(|(&id, stream)| Some((id, stream.reassembler.rest()?, stream.advertised)))
            .filter(|&(_, rest, advertised)| rest.offset > 0 || rest.finished || advertised > 0)
            .map(|(id, rest, advertised)| (id, Kept::Recv(rest, advertised)));
        let streams: Box<[_]> = send.chain(recv).collect();
        let route = (peer.via.is_some() || peer.route_mtu.is_some())
            .then(|| Box::new((peer.via.clone(), peer.route_mtu)));
        let empty = peer.instance.is_none() && route.is_none() && streams.is_empty();
        (!empty).then(|| Self {
            instance: peer.instance.as_deref().map(Box::from),
            streams,
            route,
            departed_at: now,
        })
    }

    /// The peer again, as it was when it departed: its streams where they stood (an abandonment
    /// not yet announced is due at once).
    pub fn restore(self, limits: StreamLimits) -> Peer {
        let (via, route_mtu) = self.route.map_or((None, None), |route| *route);
        let mut peer = Peer {
            instance: self.instance.map(Bytes::from),
            via,
            route_mtu,
            ..Peer::default()
        };
        for &(id, kept) in &self.streams {
            match kept {
                Kept::Send(rest) => {
                    peer.send
                        .insert(id, SendStream::resume(rest, self.departed_at));
                }
                Kept::Recv(rest, advertised) => {
                    let reassembler = Reassembler::resume(limits.budget, limits.window, rest);
                    let stream = RecvStream {
                        reassembler,
                        readable: false,
                        advertised,
                        carried: Default::default(),
                    };
                    peer.recv.insert(id, stream);
                }
            }
        }
        peer
    }
}

impl Departed {
    /// No tombstones; peers created from them get streams with `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            by_name: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            limits,
        }
    }

    /// How new streams start.
    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Tombstones kept.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Keeps `tombstone` of `name`, dropped at `now`; forgets the oldest beyond the bounds.
    pub fn insert(&mut self, name: &str, tombstone: Tombstone, now: Instant) {
        let name: Arc<str> = Arc::from(name);
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, Arc::clone(&name));
        if let Some((old, _)) = self.by_name.insert(name, (seq, tombstone)) {
            self.order.remove(&old);
        }
        while let Some(entry) = self.order.first_entry() {
            let expired = self.by_name.get(entry.get()).is_none_or(|(_, tombstone)| {
                now.saturating_duration_since(tombstone.departed_at) >= LIFETIME
            });
            if self.by_name.len() <= CAPACITY && !expired {
                break;
            }
            let name = entry.remove();
            self.by_name.remove(&name);
        }
        if self.by_name.capacity() > 4 * self.by_name.len().max(64) {
            self.by_name.shrink_to_fit();
        }
    }

    /// Takes the tombstone of `name`: the peer is back.
    pub fn take(&mut self, name: &str) -> Option<Tombstone> {
        let (seq, tombstone) = self.by_name.remove(name)?;
        self.order.remove(&seq);
        if self.by_name.capacity() > 4 * self.by_name.len().max(64) {
            self.by_name.shrink_to_fit();
        }
        Some(tombstone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StreamLimits = StreamLimits {
        budget: 1 << 20,
        window: 1 << 16,
        initial_window: 1 << 16,
    };

    fn worth_keeping() -> Peer {
        Peer {
            instance: Some(Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8])),
            ..Peer::default()
        }
    }

    #[test]
    fn a_peer_that_never_exchanged_anything_leaves_no_tombstone() {
        let now = Instant::now();
        let mut peer = Peer::default();
        peer.send_stream(3, LIMITS.initial_window);
        assert!(at_rest(&peer));
        assert!(Tombstone::of(&peer, LIMITS, now).is_none());
    }

    #[test]
    fn the_oldest_tombstones_go_beyond_the_bounds() {
        let t0 = Instant::now();
        let mut departed = Departed::new(LIMITS);
        for index in 0..CAPACITY + 2 {
            let tombstone = Tombstone::of(&worth_keeping(), LIMITS, t0).unwrap();
            departed.insert(&format!("node-{index}"), tombstone, t0);
        }
        assert_eq!(departed.len(), CAPACITY);
        assert!(departed.take("node-0").is_none());
        assert!(departed.take("node-1").is_none());
        assert!(departed.take("node-2").is_some());
        let later = t0 + LIFETIME;
        let tombstone = Tombstone::of(&worth_keeping(), LIMITS, later).unwrap();
        departed.insert("late", tombstone, later);
        assert_eq!(departed.len(), 1, "the others are a day old");
        assert!(departed.take("late").is_some());
    }
}
