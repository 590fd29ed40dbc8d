//! The replay cache: the nonces of hellos accepted within the timestamp window, so that a
//! recorded first flight played again is refused. It is bounded: when full it refuses to take
//! more (the handshake then needs a confirm, which no recording can supply) instead of forgetting
//! nonces that are still inside the window. A hello it could not remember may be played again
//! until its timestamp leaves the window, even once there is room: so until the last such hello
//! expires (the watermark), every hello needs a confirm.

use std::collections::{BTreeSet, HashMap};

/// What happened when a nonce was offered to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// New: it is now remembered until its expiry.
    Fresh,
    /// Seen before and still inside the window: a replay.
    Replayed,
    /// New, but it cannot be told from the replay of a hello the cache had no room for (the
    /// cache is full, or was within the window): the handshake needs a confirm.
    Full,
}

/// Nonces with the Unix time (milliseconds) after which they need no remembering.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    expiry: HashMap<Vec<u8>, i64>,
    by_expiry: BTreeSet<(i64, Vec<u8>)>,
    /// Until this Unix time (ms) a hello the cache had no room for may still be replayed.
    unremembered_until: i64,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            expiry: HashMap::new(),
            by_expiry: BTreeSet::new(),
            unremembered_until: i64::MIN,
        }
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// Forgets the nonces whose expiry is before `now_ms`.
    fn purge(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.by_expiry.first() {
            if *at >= now_ms {
                break;
            }
            if let Some((_, nonce)) = self.by_expiry.pop_first() {
                self.expiry.remove(&nonce);
            }
        }
    }

    /// Whether `nonce` was seen, remembering it until `expires_ms` if not.
    pub fn remember(&mut self, nonce: &[u8], now_ms: i64, expires_ms: i64) -> Remembered {
        self.purge(now_ms);
        if self.expiry.contains_key(nonce) {
            return Remembered::Replayed;
        }
        if self.expiry.len() >= self.capacity {
            self.unremembered_until = self.unremembered_until.max(expires_ms);
            return Remembered::Full;
        }
        self.expiry.insert(nonce.to_vec(), expires_ms);
        self.by_expiry.insert((expires_ms, nonce.to_vec()));
        if now_ms <= self.unremembered_until {
            // Remembered now, but an unremembered hello could be this one's recording.
            return Remembered::Full;
        }
        Remembered::Fresh
    }

    /// Whether `nonce` is remembered (and not yet expired at `now_ms`).
    #[cfg(test)]
    pub fn contains(&mut self, nonce: &[u8], now_ms: i64) -> bool {
        self.purge(now_ms);
        self.expiry.contains_key(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_fresh_once_then_replayed_until_it_expires() {
        let mut cache = ReplayCache::new(8);
        assert_eq!(cache.remember(b"n1", 1_000, 2_000), Remembered::Fresh);
        assert_eq!(cache.remember(b"n1", 1_500, 2_500), Remembered::Replayed);
        assert_eq!(cache.remember(b"n1", 2_000, 3_000), Remembered::Replayed);
        // Past its expiry the timestamp check refuses it anyway: it may be forgotten.
        assert_eq!(cache.remember(b"n1", 2_001, 3_001), Remembered::Fresh);
    }

    #[test]
    fn a_full_cache_refuses_new_nonces_rather_than_forget_live_ones() {
        let mut cache = ReplayCache::new(2);
        assert_eq!(cache.remember(b"a", 0, 100), Remembered::Fresh);
        assert_eq!(cache.remember(b"b", 0, 200), Remembered::Fresh);
        assert_eq!(cache.remember(b"c", 50, 300), Remembered::Full);
        assert_eq!(cache.remember(b"a", 60, 300), Remembered::Replayed);
        assert_eq!(cache.len(), 2);
        // Once "a" expires there is room again, but "c" (refused at 50, valid until 300) could
        // be played again until 300: hellos need a confirm until then.
        assert_eq!(cache.remember(b"d", 101, 400), Remembered::Full);
        assert_eq!(cache.remember(b"d", 102, 400), Remembered::Replayed);
        assert!(cache.contains(b"d", 150));
        // Past the watermark a nonce is fresh again.
        assert_eq!(cache.remember(b"e", 301, 500), Remembered::Fresh);
    }
}
