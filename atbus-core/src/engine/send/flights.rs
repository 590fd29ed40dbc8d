//! The pieces of one send stream that are on the wire: each a *flight* with its range, the
//! connection it went out on, when, and a send sequence number that orders flights by send time.
//! A flight leaves the books when acknowledged, declared lost, or forgotten (its connection died,
//! its messages were abandoned, the peer restarted); each departure is kept for the congestion
//! control of its connection until the endpoint takes it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::engine::congestion::{FlightFate, FlightLeft};
use crate::engine::transmit::ConnectionId;

/// A flight counts as lost once a flight sent this many later has been acknowledged.
const PACKET_THRESHOLD: u64 = 3;

/// A piece on the wire, not yet acknowledged nor declared lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flight {
    /// The units it carried.
    pub start: u64,
    /// One past its last unit.
    pub end: u64,
    /// Where it went.
    pub connection: ConnectionId,
    /// When.
    pub sent_at: Instant,
}

/// The flights of one send stream.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    /// Flights by send sequence number.
    by_seq: BTreeMap<u64, Flight>,
    /// The send sequence number of the flight starting at each offset.
    at: BTreeMap<u64, u64>,
    /// The next send sequence number.
    next_seq: u64,
    /// The highest send sequence number acknowledged so far.
    largest_acked: Option<u64>,
    /// Flights that left the books since the endpoint last took them.
    departed: Vec<FlightLeft>,
}

impl Flights {
    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// The flights, oldest first.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Flight> {
        self.by_seq.values()
    }

    /// Records `range` as sent on `connection` at `now` (a flight still out at the same offset is
    /// forgotten: this one replaces it).
    pub fn record(&mut self, range: Range<u64>, connection: ConnectionId, now: Instant) {
        if let Some(&old) = self.at.get(&range.start) {
            self.forget(&[old]);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.at.insert(range.start, seq);
        self.by_seq.insert(
            seq,
            Flight {
                start: range.start,
                end: range.end,
                connection,
                sent_at: now,
            },
        );
    }

    /// Drops the flights lying wholly inside `range`, acknowledged, noting the latest.
    pub fn acknowledge(&mut self, range: Range<u64>) {
        let starts: Vec<(u64, u64)> = self
            .at
            .range(range.clone())
            .map(|(&start, &seq)| (start, seq))
            .collect();
        for (start, seq) in starts {
            if self.by_seq.get(&seq).is_some_and(|f| f.end <= range.end) {
                if let Some(flight) = self.by_seq.remove(&seq) {
                    self.depart(&flight, FlightFate::Acked);
                }
                self.at.remove(&start);
                self.largest_acked = Some(self.largest_acked.map_or(seq, |l| l.max(seq)));
            }
        }
    }

    /// Forgets the flights starting below `offset`.
    pub fn forget_below(&mut self, offset: u64) {
        let below: Vec<u64> = self.at.range(..offset).map(|(_, &seq)| seq).collect();
        self.forget(&below);
    }

    /// Forgets every flight.
    pub fn forget_all(&mut self) {
        let seqs: Vec<u64> = self.by_seq.keys().copied().collect();
        self.forget(&seqs);
    }

    fn forget(&mut self, seqs: &[u64]) {
        for seq in seqs {
            if let Some(flight) = self.by_seq.remove(seq) {
                self.at.remove(&flight.start);
                self.depart(&flight, FlightFate::Forgotten);
            }
        }
    }

    /// The flights a later acknowledged flight has overtaken, among those starting below
    /// `known_until` (only where the peer's reports are exact is "not acknowledged" a sign of
    /// loss).
    fn overtaken(&self, known_until: u64) -> impl Iterator<Item = (u64, &Flight)> {
        let largest = self.largest_acked.unwrap_or(0);
        self.by_seq
            .range(..largest)
            .filter(move |(_, flight)| flight.start < known_until)
            .map(|(&seq, flight)| (seq, flight))
    }

    /// The overtaken flights lost by now: by [`PACKET_THRESHOLD`] sends, or by `loss_delay` of
    /// time.
    pub fn lost_by_overtaking(
        &self,
        known_until: u64,
        now: Instant,
        loss_delay: Duration,
    ) -> Vec<u64> {
        let Some(largest) = self.largest_acked else {
            return Vec::new();
        };
        self.overtaken(known_until)
            .filter(|&(seq, flight)| {
                seq + PACKET_THRESHOLD <= largest || flight.sent_at + loss_delay <= now
            })
            .map(|(seq, _)| seq)
            .collect()
    }

    /// When the oldest overtaken flight will be lost by time; `None` if none is overtaken.
    pub fn loss_time(&self, known_until: u64, loss_delay: Duration) -> Option<Instant> {
        self.overtaken(known_until)
            .next()
            .map(|(_, flight)| flight.sent_at + loss_delay)
    }

    /// The oldest flight, if it has waited `rto` by `now`.
    pub fn timed_out(&self, now: Instant, rto: Duration) -> Vec<u64> {
        self.by_seq
            .iter()
            .take(1)
            .filter(|(_, flight)| flight.sent_at + rto <= now)
            .map(|(&seq, _)| seq)
            .collect()
    }

    /// When the oldest flight's retransmission timeout passes.
    pub fn timeout_at(&self, rto: Duration) -> Option<Instant> {
        self.by_seq
            .first_key_value()
            .map(|(_, flight)| flight.sent_at + rto)
    }

    /// The flights sent on `connection`.
    pub fn on_connection(&self, connection: ConnectionId) -> Vec<u64> {
        self.by_seq
            .iter()
            .filter(|(_, flight)| flight.connection == connection)
            .map(|(&seq, _)| seq)
            .collect()
    }

    /// Takes flights `seqs` off the books as `fate` (lost, or timed out) and returns them.
    pub fn remove_lost(&mut self, seqs: &[u64], fate: FlightFate) -> Vec<Flight> {
        let mut removed = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(flight) = self.by_seq.remove(seq) {
                self.at.remove(&flight.start);
                self.depart(&flight, fate);
                removed.push(flight);
            }
        }
        removed
    }

    fn depart(&mut self, flight: &Flight, fate: FlightFate) {
        self.departed.push(FlightLeft {
            connection: flight.connection,
            units: flight.end - flight.start,
            sent_at: flight.sent_at,
            fate,
        });
    }

    /// Takes the flights that left the books since the last call.
    pub fn take_departed(&mut self) -> std::vec::Drain<'_, FlightLeft> {
        self.departed.drain(..)
    }
}
