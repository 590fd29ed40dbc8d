//! The timer index: the next deadline of every connection and every peer, in a heap, so that the
//! next deadline of the whole endpoint is a peek and the timers due at an instant are popped
//! without looking at anything else.
//!
//! Each connection and each peer has at most one *armed* deadline, the earliest of its own timers
//! (a connection: idle, keep-alive ping, handshake deadline, hello resend; a peer: acknowledgement
//! deadline, its streams' loss, retransmission, window-probe, reset and expiry deadlines, and the
//! linger after which a departed peer's state is dropped). Arming a key again does not look for
//! its old heap entry: every entry carries the generation it was armed with, and an entry whose
//! generation is no longer the key's is stale, skipped when it comes to the top (lazy
//! invalidation). The top of the heap is always a live entry, so the peek needs no `&mut`. When
//! stale entries outnumber live ones the heap is rebuilt, so it stays within twice the keys.
//!
//! The index does not know how a deadline is computed: the endpoint notes what changed, and
//! computes and arms the deadlines of what it noted before anyone reads the index
//! (`endpoint/deadlines.rs`).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::peers::PeerId;
use super::transmit::ConnectionId;

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// A connection's timers.
    Connection(ConnectionId),
    /// A peer's timers.
    Peer(PeerId),
}

/// The armed deadlines, and the keys whose deadline may have changed since they were armed.
#[derive(Debug, Default)]
pub(crate) struct TimerIndex {
    /// (deadline, generation, key), earliest first; the top is always live.
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKey)>>,
    /// Each armed key's deadline and the generation of its live heap entry.
    armed: HashMap<TimerKey, (Instant, u64)>,
    /// The generation of the next arming.
    generation: u64,
    /// What the deadlines of the peers reached through relays were last computed against
    /// (the endpoint's fingerprint of its relays).
    pub routes: u64,
}

impl TimerIndex {
    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The deadline armed for `key`.
    pub fn armed(&self, key: TimerKey) -> Option<Instant> {
        self.armed.get(&key).map(|&(at, _)| at)
    }

    /// Keys with an armed deadline.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// Arms `key` for `at`, or disarms it.
    pub fn arm(&mut self, key: TimerKey, at: Option<Instant>) {
        match (self.armed.entry(key), at) {
            (Entry::Occupied(armed), Some(at)) if armed.get().0 == at => return,
            (Entry::Occupied(armed), None) => {
                armed.remove();
            }
            (Entry::Vacant(_), None) => return,
            (entry, Some(at)) => {
                let generation = self.generation;
                self.generation += 1;
                match entry {
                    Entry::Occupied(mut armed) => *armed.get_mut() = (at, generation),
                    Entry::Vacant(vacant) => {
                        vacant.insert((at, generation));
                    }
                }
                self.heap.push(Reverse((at, generation, key)));
            }
        }
        if self.heap.len() > 2 * self.armed.len() + 64 {
            self.rebuild();
        }
        self.drop_stale();
        self.shrink();
    }

    /// Pops a key whose deadline is at or before `now`; it is disarmed.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let &Reverse((at, _, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.armed.remove(&key);
        self.drop_stale();
        self.shrink();
        Some(key)
    }

    /// Pops stale entries off the top.
    fn drop_stale(&mut self) {
        while let Some(&Reverse((at, generation, key))) = self.heap.peek() {
            if self.armed.get(&key) == Some(&(at, generation)) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Gives back the room of a crowd that left (thousands of connections gone).
    fn shrink(&mut self) {
        let room = 4 * self.armed.len().max(64);
        if self.armed.capacity() > room {
            self.armed.shrink_to_fit();
        }
        if self.heap.capacity() > 2 * room {
            self.rebuild();
            self.heap.shrink_to_fit();
        }
    }

    /// The heap again, of the live entries only.
    fn rebuild(&mut self) {
        self.heap = self
            .armed
            .iter()
            .map(|(&key, &(at, generation))| Reverse((at, generation, key)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn connection(id: u64) -> TimerKey {
        TimerKey::Connection(ConnectionId(id))
    }

    #[test]
    fn the_earliest_live_deadline_is_next_and_rearming_supersedes() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut index = TimerIndex::default();
        index.arm(connection(1), Some(at(10)));
        index.arm(connection(2), Some(at(20)));
        assert_eq!(index.next(), Some(at(10)));
        index.arm(connection(1), Some(at(30)));
        assert_eq!(index.next(), Some(at(20)), "the old entry of 1 is stale");
        index.arm(connection(2), None);
        assert_eq!(index.next(), Some(at(30)));
        assert_eq!(index.pop_due(at(29)), None);
        assert_eq!(index.pop_due(at(30)), Some(connection(1)));
        assert_eq!(index.next(), None);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn the_heap_stays_within_twice_the_keys() {
        let t0 = Instant::now();
        let mut index = TimerIndex::default();
        for round in 0..1000u64 {
            for id in 0..10 {
                index.arm(connection(id), Some(t0 + Duration::from_millis(round + id)));
            }
        }
        assert!(index.heap.len() <= 2 * index.len() + 64 + 1);
        assert_eq!(index.next(), Some(t0 + Duration::from_millis(999)));
    }
}
