//! One link between two nodes: the conditions of each direction ([`LinkProfile`]) and the state
//! that turns a transmit into deliveries under them (the serialization queue of a bandwidth
//! limit, the bytes of a stream still in flight). All randomness comes from the network's seeded
//! RNG, drawn in a fixed order, so a run is reproducible from its seed.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::stats::TransferStats;

/// What a link carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// Each transmit is one datagram that arrives whole or not at all, and may be lost,
    /// duplicated or reordered (UDP).
    Datagram,
    /// The transmits are appended to one byte stream that arrives in order and is never lost or
    /// duplicated, but is read in chunks whose boundaries have nothing to do with the transmits'
    /// (TCP, Unix sockets): several transmits may come in one `handle_input`, one may be split
    /// over several.
    Stream,
}

/// The conditions of one direction of a link. Build one with [`LinkProfile::perfect_datagram`],
/// [`LinkProfile::perfect_stream`] or [`LinkProfile::lossy`] and adjust it with the `with_*`
/// setters.
///
/// Probabilities outside `0.0..=1.0` are clamped (NaN counts as 0). On a
/// [`LinkKind::Stream`] link `loss`, `duplicate`, `reorder`, `queue_limit` and `mtu` are ignored:
/// a stream never drops, duplicates or reorders bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Datagrams or a byte stream.
    pub kind: LinkKind,
    /// One-way propagation delay, added after serialization.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for each transmit. On a stream link an
    /// arrival is never earlier than the one before it, so jitter does not reorder bytes.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice (the copy has its own jitter).
    pub duplicate: f64,
    /// Probability that a datagram is held back by an extra delay drawn uniformly from
    /// `1ns..=2 * max(delay + jitter, 1ms)`, so that datagrams sent after it may arrive first.
    pub reorder: f64,
    /// Serialization rate in bytes per second: a transmit leaves when the previous ones have,
    /// occupying the direction for `len / bandwidth`. `None` (or `Some(0)`) is unlimited.
    pub bandwidth: Option<u64>,
    /// Bytes that may wait for the direction to be free (the transmit being serialized does not
    /// count); a datagram that does not fit is dropped. `None` is unbounded. Only with a
    /// `bandwidth`.
    pub queue_limit: Option<usize>,
    /// Largest datagram the link carries; a larger one is dropped and counted in
    /// `TransferStats::dropped_mtu` (it means the sender ignored its MTU).
    pub mtu: Option<usize>,
}

impl Default for LinkProfile {
    fn default() -> Self {
        Self::perfect_datagram()
    }
}

impl LinkProfile {
    /// A datagram link that delivers everything once, in order, at once, at any rate.
    pub fn perfect_datagram() -> Self {
        Self {
            kind: LinkKind::Datagram,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            bandwidth: None,
            queue_limit: None,
            mtu: None,
        }
    }

    /// A stream link with no delay and no bandwidth limit (its reads are still chunked at
    /// random).
    pub fn perfect_stream() -> Self {
        Self {
            kind: LinkKind::Stream,
            ..Self::perfect_datagram()
        }
    }

    /// A datagram link that loses each datagram with probability `loss`, otherwise perfect.
    pub fn lossy(loss: f64) -> Self {
        Self::perfect_datagram().with_loss(loss)
    }

    /// Sets [`LinkProfile::kind`].
    pub fn with_kind(mut self, kind: LinkKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the one-way [`LinkProfile::delay`].
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets [`LinkProfile::jitter`].
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the [`LinkProfile::loss`] probability.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the [`LinkProfile::duplicate`] probability.
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// Sets the [`LinkProfile::reorder`] probability.
    pub fn with_reorder(mut self, reorder: f64) -> Self {
        self.reorder = reorder;
        self
    }

    /// Sets [`LinkProfile::bandwidth`] in bytes per second.
    pub fn with_bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = Some(bytes_per_second);
        self
    }

    /// Sets [`LinkProfile::queue_limit`] in bytes.
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = Some(bytes);
        self
    }

    /// Sets [`LinkProfile::mtu`] in bytes.
    pub fn with_mtu(mut self, bytes: usize) -> Self {
        self.mtu = Some(bytes);
        self
    }
}

/// One direction of a link: its profile, its counters and what is queued or in flight on it.
#[derive(Debug)]
pub(super) struct DirectionState {
    pub(super) profile: LinkProfile,
    pub(super) stats: TransferStats,
    /// When the transmit being serialized has left (offsets from the network's start).
    busy_until: Duration,
    /// Transmits waiting to be serialized: (start, length), in order.
    waiting: VecDeque<(Duration, usize)>,
    waiting_bytes: usize,
    /// Stream segments not yet handed to the receiver: (arrival, bytes), arrivals non-decreasing.
    in_flight: VecDeque<(Duration, Bytes)>,
    /// The latest stream arrival scheduled, which the next may not precede.
    last_arrival: Duration,
}

impl DirectionState {
    pub(super) fn new(profile: LinkProfile, now: Duration) -> Self {
        Self {
            profile,
            stats: TransferStats::default(),
            busy_until: now,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            in_flight: VecDeque::new(),
            last_arrival: now,
        }
    }

    /// Counts a datagram of `len` bytes sent at `now` and returns when its copies arrive: none
    /// if it is dropped or lost, two if it is duplicated.
    pub(super) fn send_datagram(
        &mut self,
        now: Duration,
        len: usize,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Duration> {
        self.stats.sent += 1;
        self.stats.sent_bytes += len as u64;
        if self.profile.mtu.is_some_and(|mtu| len > mtu) {
            self.stats.dropped_mtu += 1;
            return Vec::new();
        }
        let Some(departed) = self.serialize(now, len, true) else {
            self.stats.dropped_queue += 1;
            return Vec::new();
        };
        if chance(rng, self.profile.loss) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let propagated = departed.saturating_add(self.profile.delay);
        let mut at = propagated.saturating_add(up_to(rng, self.profile.jitter));
        if chance(rng, self.profile.reorder) {
            self.stats.reordered += 1;
            let window = self
                .profile
                .delay
                .saturating_add(self.profile.jitter)
                .max(Duration::from_millis(1))
                .saturating_mul(2);
            let extra = up_to(rng, window.saturating_sub(Duration::from_nanos(1)));
            at = at.saturating_add(extra + Duration::from_nanos(1));
        }
        let mut arrivals = vec![at];
        if chance(rng, self.profile.duplicate) {
            self.stats.duplicated += 1;
            arrivals.push(propagated.saturating_add(up_to(rng, self.profile.jitter)));
        }
        arrivals
    }

    /// Counts stream bytes sent at `now`, keeps them in flight and returns when they arrive.
    pub(super) fn send_stream(
        &mut self,
        now: Duration,
        data: Bytes,
        rng: &mut ChaCha8Rng,
    ) -> Duration {
        self.stats.sent += 1;
        self.stats.sent_bytes += data.len() as u64;
        let departed = self.serialize(now, data.len(), false).unwrap_or(now);
        let at = departed
            .saturating_add(self.profile.delay)
            .saturating_add(up_to(rng, self.profile.jitter))
            .max(self.last_arrival);
        self.last_arrival = at;
        self.in_flight.push_back((at, data));
        at
    }

    /// The stream bytes that have arrived by `now`, in one piece, if there are any.
    pub(super) fn take_arrived(&mut self, now: Duration) -> Option<Bytes> {
        let mut segments = Vec::new();
        while let Some((at, _)) = self.in_flight.front() {
            if *at > now {
                break;
            }
            if let Some((_, data)) = self.in_flight.pop_front() {
                if !data.is_empty() {
                    segments.push(data);
                }
            }
        }
        match segments.len() {
            0 => None,
            1 => segments.pop(),
            _ => {
                let mut all = BytesMut::with_capacity(segments.iter().map(Bytes::len).sum());
                for segment in segments {
                    all.extend_from_slice(&segment);
                }
                Some(all.freeze())
            }
        }
    }

    /// Forgets what is queued and in flight (the link was killed); returns how many stream
    /// transmits were still in flight.
    pub(super) fn reset(&mut self, now: Duration) -> u64 {
        let dropped = self.in_flight.len() as u64;
        self.in_flight.clear();
        self.waiting.clear();
        self.waiting_bytes = 0;
        self.busy_until = now;
        self.last_arrival = now;
        dropped
    }

    /// When a transmit of `len` bytes handed over at `now` has left the sender, or `None` if
    /// `may_drop` and it does not fit in the queue.
    fn serialize(&mut self, now: Duration, len: usize, may_drop: bool) -> Option<Duration> {
        let Some(bandwidth) = self.profile.bandwidth.filter(|&b| b > 0) else {
            return Some(now);
        };
        while let Some(&(start, queued)) = self.waiting.front() {
            if start > now {
                break;
            }
            self.waiting.pop_front();
            self.waiting_bytes -= queued;
        }
        let start = self.busy_until.max(now);
        if start > now {
            let limit = self.profile.queue_limit.filter(|_| may_drop);
            if limit.is_some_and(|limit| self.waiting_bytes.saturating_add(len) > limit) {
                return None;
            }
            self.waiting.push_back((start, len));
            self.waiting_bytes += len;
        }
        let nanos = (len as u128 * 1_000_000_000).div_ceil(u128::from(bandwidth));
        let serialization = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.busy_until = start.saturating_add(serialization);
        Some(self.busy_until)
    }
}

/// Cuts stream bytes into the chunks one read after another would return: each read takes all
/// that is left with probability 1/2, otherwise a uniformly random shorter prefix.
pub(super) fn chunk(mut data: Bytes, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    while !data.is_empty() {
        let len = if data.len() == 1 || rng.random_bool(0.5) {
            data.len()
        } else {
            rng.random_range(1..data.len())
        };
        chunks.push(data.split_to(len));
    }
    chunks
}

/// True with probability `p` (clamped to `0..=1`, NaN as 0); draws nothing when `p <= 0`.
fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// A duration drawn uniformly from `0..=max`; draws nothing when `max` is zero.
fn up_to(rng: &mut ChaCha8Rng, max: Duration) -> Duration {
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if max == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(rng.random_range(0..=max))
    }
}
