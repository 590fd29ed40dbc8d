//! The send side of one stream direction: queued messages kept until acknowledged, cut into
//! pieces for whichever connection sends next, and the bookkeeping of what is in flight where.
//!
//! Offsets count units (`docs/protocol.md` section 5.3). Every piece put on the wire is a
//! *flight* (`flights`): its range, the connection it went out on and when, and a send sequence number. A
//! flight leaves the books when the peer acknowledges its range (cumulatively or through a
//! received range), or is declared lost, and its range goes back to be sent again, when a flight
//! sent after it was acknowledged some time ago or three flights later (RFC 9002 section 6.1), when
//! the retransmission timeout passes, or when its connection dies. Retransmission slices the queued
//! `Bytes`: no copy per send.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::congestion::{FlightFate, FlightLeft};
use super::message::MessageMeta;
use super::piece::{Piece, PieceEnd};
use super::ranges::RangeSet;
use super::transmit::ConnectionId;
use atbus_proto::protocol::CloseReasonData;
#[cfg(test)]
use flights::Flight;
use flights::Flights;

/// A queued message, or the end of the stream.
#[derive(Debug)]
struct Queued {
    /// Offset of its first unit.
    start: u64,
    /// Its bytes; empty for the end of the stream.
    data: Bytes,
    /// Type, options and labels, sent with the piece that begins it.
    meta: MessageMeta,
    /// Whether it is a message or the end of the stream.
    end: PieceEnd,
    /// When the application queued it.
    queued_at: Instant,
}

impl Queued {
    /// One past its last unit (the end unit).
    fn end_offset(&self) -> u64 {
        self.start + self.data.len() as u64 + 1
    }
}

/// The peer acknowledged units that were never sent: it is broken or hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("acknowledgement up to offset {acknowledged} but only {sent} units were sent")]
pub(crate) struct AckBeyondSent {
    /// The highest offset the acknowledgement claims.
    pub acknowledged: u64,
    /// One past the highest unit sent.
    pub sent: u64,
}

/// A send stream at rest, as [`SendStream::rest`] keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendRest {
    /// The offset of the next unit: everything below is acknowledged or abandoned.
    pub offset: u64,
    /// The peer accepts units below this offset.
    pub window: u64,
    /// Whether `window` came from the peer.
    pub window_announced: bool,
    /// Units below this offset were abandoned and the peer has not acknowledged it yet.
    pub reset: Option<u64>,
}

/// Sends one stream direction.
#[derive(Debug)]
pub(crate) struct SendStream {
    /// Messages not wholly acknowledged, in order.
    queue: VecDeque<Queued>,
    /// Data bytes in `queue`.
    queued_bytes: usize,
    /// Everything below is acknowledged.
    acked: u64,
    /// The first unit never sent.
    next_new: u64,
    /// One past the last queued unit.
    end: u64,
    /// Whether the end of the stream is queued: nothing more may be pushed.
    finished: bool,
    /// Ranges to send again.
    lost: RangeSet,
    /// Ranges above `acked` the peer reported received.
    received: RangeSet,
    /// Pieces on the wire.
    flights: Flights,
    /// The peer's reports tell exactly what arrived below this offset: the end of the highest
    /// received range it reported. Above it, not being acknowledged says nothing.
    known_until: u64,
    /// The peer accepts units below this offset: no data is sent at or above it.
    window: u64,
    /// Whether `window` came from the peer, rather than the initial assumption.
    window_announced: bool,
    /// Since when new data has waited for the window with nothing in flight.
    blocked_since: Option<Instant>,
    /// Units below this offset were abandoned, and when to announce it next: the peer is told
    /// with RESET_OFFSET until it acknowledges the offset.
    reset: Option<(u64, Instant)>,
}

impl SendStream {
    /// An empty stream direction whose peer accepts units below `window` until it says otherwise.
    pub fn new(window: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            queued_bytes: 0,
            acked: 0,
            next_new: 0,
            end: 0,
            finished: false,
            lost: RangeSet::default(),
            received: RangeSet::default(),
            flights: Flights::default(),
            known_until: 0,
            window,
            window_announced: false,
            blocked_since: None,
            reset: None,
        }
    }

    /// Queues a message; returns the offset of its first unit, or `None` once the stream is
    /// finished.
    pub fn push(&mut self, data: Bytes, meta: MessageMeta, now: Instant) -> Option<u64> {
        self.enqueue(data, meta, PieceEnd::Message, now)
    }

    /// Queues the end of the stream; returns its offset, or `None` if it was queued before.
    pub fn finish(&mut self, reason: CloseReasonData, now: Instant) -> Option<u64> {
        let offset = self.enqueue(
            Bytes::new(),
            MessageMeta::default(),
            PieceEnd::Stream(reason),
            now,
        )?;
        self.finished = true;
        Some(offset)
    }

    fn enqueue(
        &mut self,
        data: Bytes,
        meta: MessageMeta,
        end: PieceEnd,
        queued_at: Instant,
    ) -> Option<u64> {
        if self.finished {
            return None;
        }
        let start = self.end;
        let queued = Queued {
            start,
            data,
            meta,
            end,
            queued_at,
        };
        self.end = queued.end_offset();
        self.queued_bytes += queued.data.len();
        self.queue.push_back(queued);
        Some(start)
    }

    /// Starts the stream over for a peer that restarted (and lost everything it had received):
    /// the messages not wholly acknowledged are queued again from offset 0, in order, with
    /// their metadata, and the stream's end if it was queued. Returns the units now queued.
    pub fn restart(&mut self, window: u64) -> u64 {
        let queue = std::mem::take(&mut self.queue);
        let finished = self.finished;
        self.flights.forget_all();
        let flights = std::mem::take(&mut self.flights);
        *self = SendStream::new(window);
        self.flights = flights;
        for queued in queue {
            self.enqueue(queued.data, queued.meta, queued.end, queued.queued_at);
        }
        self.finished = finished;
        self.unacked_units()
    }

    /// What is left of the stream once everything queued is acknowledged and nothing is on the
    /// wire: where its next unit goes, the peer's window, and an abandonment still to announce.
    /// `None` while anything is queued, in flight or lost, or once the stream is finished.
    pub fn rest(&self) -> Option<SendRest> {
        let idle = self.queue.is_empty()
            && self.acked == self.end
            && self.next_new == self.end
            && self.flights.is_empty()
            && self.lost.is_empty()
            && !self.finished;
        idle.then(|| SendRest {
            offset: self.end,
            window: self.window,
            window_announced: self.window_announced,
            reset: self.reset.map(|(offset, _)| offset),
        })
    }

    /// The stream again, from what [`rest`](Self::rest) kept of it; an abandonment is announced
    /// again from `now`.
    pub fn resume(rest: SendRest, now: Instant) -> Self {
        let mut stream = SendStream::new(rest.window);
        stream.window_announced = rest.window_announced;
        stream.acked = rest.offset;
        stream.next_new = rest.offset;
        stream.end = rest.offset;
        stream.known_until = rest.offset;
        stream.reset = rest.reset.map(|offset| (offset, now));
        stream
    }

    /// Units queued and not yet acknowledged: what counts against the send window.
    pub fn unacked_units(&self) -> u64 {
        self.end - self.acked
    }

    /// Data bytes held until acknowledged.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Everything below this offset is acknowledged.
    #[cfg(test)]
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether every queued unit is acknowledged, including the end of the stream if queued.
    pub fn is_idle(&self) -> bool {
        self.acked == self.end
    }

    /// Whether a timer may be running for this stream: something unacknowledged, or an
    /// abandonment to announce. A stream without either needs no attention until the next send.
    pub fn is_active(&self) -> bool {
        !self.is_idle() || self.reset.is_some()
    }

    /// Whether the end of the stream is queued and acknowledged.
    pub fn is_finished_and_acked(&self) -> bool {
        self.finished && self.is_idle()
    }

    /// Whether anything may be sent now: lost ranges or new units, inside the peer's window.
    pub fn has_pending(&self) -> bool {
        self.lost
            .first()
            .is_some_and(|range| range.start < self.window)
            || self.next_new < self.end.min(self.window)
    }

    /// Whether new units wait for the peer's window with nothing in flight to bring an update:
    /// the sender then probes (an empty packet) so the peer answers with its window.
    pub fn window_blocked(&self) -> bool {
        self.flights.is_empty() && !self.has_pending() && self.next_new < self.end
            || self.flights.is_empty() && !self.lost.is_empty() && !self.has_pending()
    }

    /// When a window probe is due: `interval` after the stream became blocked.
    pub fn probe_at(&self, interval: Duration) -> Option<Instant> {
        self.blocked_since.map(|since| since + interval)
    }

    /// Notes the stream's window state at `now`: starts or clears the blocked time.
    pub fn note_blocked(&mut self, now: Instant) {
        if !self.window_blocked() {
            self.blocked_since = None;
        } else if self.blocked_since.is_none() {
            self.blocked_since = Some(now);
        }
    }

    /// Restarts the probe interval after a probe went out at `now`.
    pub fn probed(&mut self, now: Instant) {
        self.blocked_since = Some(now);
    }

    /// Takes the peer's window: units below `offset` are accepted. The first announcement
    /// replaces the initial assumption, smaller or not; later ones only ever grow it. Returns
    /// whether it grew.
    pub fn update_window(&mut self, offset: u64) -> bool {
        if !self.window_announced {
            self.window_announced = true;
            let grew = offset > self.window;
            self.window = offset;
            return grew;
        }
        if offset > self.window {
            self.window = offset;
            self.blocked_since = None;
            return true;
        }
        false
    }

    /// The first unit never sent.
    pub fn next_new(&self) -> u64 {
        self.next_new
    }

    /// Where the next piece starts, the metadata it carries if it begins a message, and the
    /// close reason it carries if it is the end of the stream.
    #[allow(clippy::type_complexity)]
    pub fn peek_next(&self) -> Option<(u64, Option<&MessageMeta>, Option<&CloseReasonData>)> {
        let from = match self.lost.first() {
            Some(range) if range.start < self.window => range.start,
            _ if self.next_new < self.end.min(self.window) => self.next_new,
            _ => return None,
        };
        let queued = &self.queue[self.queue_index(from)?];
        let close = match &queued.end {
            PieceEnd::Stream(reason) => Some(reason),
            _ => None,
        };
        Some((from, (queued.start == from).then_some(&queued.meta), close))
    }

    /// Pieces currently in flight.
    #[cfg(test)]
    pub fn flights(&self) -> impl Iterator<Item = &Flight> {
        self.flights.iter()
    }

    /// Cuts the next piece to send, of at most `max_data` data bytes, and records it as in flight
    /// on `connection` from `now`. Lost ranges go first, then new units. A piece never spans two
    /// messages, carries the message's metadata when it begins one, and takes the end unit when
    /// its data reaches the end of its message.
    pub fn take_piece(
        &mut self,
        max_data: usize,
        connection: ConnectionId,
        now: Instant,
    ) -> Option<Piece> {
        let (from, limit) = match self.lost.first() {
            Some(range) if range.start < self.window => (range.start, range.end.min(self.window)),
            _ if self.next_new < self.end.min(self.window) => (self.next_new, self.window),
            _ => return None,
        };
        let index = self.queue_index(from)?;
        let queued = &self.queue[index];
        let data_end = queued.start + queued.data.len() as u64;
        let mut piece_data_end = data_end.min(limit).min(from + max_data as u64);
        if piece_data_end == data_end && data_end >= self.window && from >= self.next_new {
            // The end unit would fall outside the peer's window: stop one byte short.
            piece_data_end = data_end.min(self.window).saturating_sub(1).max(from);
        }
        if from < data_end && piece_data_end <= from {
            return None; // no room for a single byte
        }
        let data = if from < data_end {
            queued
                .data
                .slice((from - queued.start) as usize..(piece_data_end - queued.start) as usize)
        } else {
            Bytes::new()
        };
        let piece = Piece {
            start: from,
            end: if from + data.len() as u64 == data_end {
                queued.end.clone()
            } else {
                PieceEnd::None
            },
            meta: (from == queued.start).then(|| queued.meta.clone()),
            data,
        };
        let range = piece.start..piece.end_offset();
        self.lost.remove(range.clone());
        self.next_new = self.next_new.max(range.end);
        self.flights.record(range, connection, now);
        Some(piece)
    }

    /// The index in `queue` of the item holding `offset`.
    fn queue_index(&self, offset: u64) -> Option<usize> {
        let index = self
            .queue
            .partition_point(|queued| queued.end_offset() <= offset);
        (index < self.queue.len() && self.queue[index].start <= offset).then_some(index)
    }

    /// Takes an acknowledgement: everything below `acknowledged` and the `received` ranges above
    /// it have arrived. Returns how many units it newly acknowledged cumulatively.
    pub fn on_ack(
        &mut self,
        acknowledged: u64,
        received: &[Range<u64>],
    ) -> Result<u64, AckBeyondSent> {
        let claimed = received
            .iter()
            .map(|range| range.end)
            .fold(acknowledged, u64::max);
        if claimed > self.next_new {
            return Err(AckBeyondSent {
                acknowledged: claimed,
                sent: self.next_new,
            });
        }
        if self.reset.is_some_and(|(offset, _)| acknowledged >= offset) {
            self.reset = None;
        }
        let newly = acknowledged.saturating_sub(self.acked);
        if newly > 0 {
            self.acked = acknowledged;
            while self
                .queue
                .front()
                .is_some_and(|queued| queued.end_offset() <= self.acked)
            {
                if let Some(queued) = self.queue.pop_front() {
                    self.queued_bytes -= queued.data.len();
                }
            }
            self.lost.remove_below(self.acked);
            self.received.remove_below(self.acked);
            self.flights.acknowledge(0..self.acked);
        }
        let reported = received
            .iter()
            .map(|range| range.end)
            .max()
            .unwrap_or(acknowledged);
        self.known_until = self.known_until.max(reported).max(self.acked);
        for range in received {
            let range = range.start.max(self.acked)..range.end;
            if range.is_empty() {
                continue;
            }
            self.received.insert(range.clone());
            self.lost.remove(range.clone());
            self.flights.acknowledge(range);
        }
        Ok(newly)
    }

    /// Abandons the messages queued at or before `now - timeout` and not yet acknowledged, with
    /// every message before them: their units will never be sent again, and the peer learns it
    /// from a RESET_OFFSET. The end of the stream is never abandoned. Returns how many messages
    /// and units were abandoned.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Option<(usize, u64)> {
        let count = self
            .queue
            .iter()
            .take_while(|queued| {
                queued.end == PieceEnd::Message && queued.queued_at + timeout <= now
            })
            .count();
        if count == 0 {
            return None;
        }
        let offset = self.queue[count - 1].end_offset();
        let units = offset - self.acked;
        for queued in self.queue.drain(..count) {
            self.queued_bytes -= queued.data.len();
        }
        self.acked = offset;
        self.next_new = self.next_new.max(offset);
        self.lost.remove_below(offset);
        self.received.remove_below(offset);
        self.flights.forget_below(offset);
        self.reset = Some((offset, now));
        Some((count, units))
    }

    /// When the oldest queued message expires after `timeout`.
    pub fn expiry_at(&self, timeout: Duration) -> Option<Instant> {
        self.queue
            .front()
            .filter(|queued| queued.end == PieceEnd::Message)
            .map(|queued| queued.queued_at + timeout)
    }

    /// The offset to announce with RESET_OFFSET, when it is due at `now`.
    pub fn reset_due(&self, now: Instant) -> Option<u64> {
        self.reset
            .filter(|&(_, next)| next <= now)
            .map(|(offset, _)| offset)
    }

    /// The offset of an abandonment the peer has not acknowledged yet: every packet starting
    /// there carries RESET_OFFSET.
    pub fn reset_offset(&self) -> Option<u64> {
        self.reset.map(|(offset, _)| offset)
    }

    /// When the pending RESET_OFFSET is due.
    pub fn reset_at(&self) -> Option<Instant> {
        self.reset.map(|(_, next)| next)
    }

    /// Notes that a RESET_OFFSET went out at `now`; it goes again after `interval` unless
    /// acknowledged.
    pub fn reset_sent(&mut self, now: Instant, interval: Duration) {
        if let Some((_, next)) = self.reset.as_mut() {
            *next = now + interval;
        }
    }

    /// Declares lost the flights that a later acknowledged flight has overtaken, among those the
    /// peer's reports cover: by three sends, or by `loss_delay` of time. Returns how many.
    pub fn detect_lost(&mut self, now: Instant, loss_delay: Duration) -> usize {
        let lost = self
            .flights
            .lost_by_overtaking(self.known_until, now, loss_delay);
        self.declare_lost(&lost, FlightFate::Lost)
    }

    /// When the oldest overtaken flight, not yet lost, will be by time; `None` if none is.
    pub fn loss_time(&self, loss_delay: Duration) -> Option<Instant> {
        self.flights.loss_time(self.known_until, loss_delay)
    }

    /// When the oldest flight has waited `rto`, declares it lost, so that it goes out again as a
    /// probe: its acknowledgement shows what else is missing (RFC 9002's probe timeout, rather
    /// than resending everything in flight, much of which may have arrived). Returns how many
    /// flights were declared lost (0 or 1).
    pub fn on_timeout(&mut self, now: Instant, rto: Duration) -> usize {
        let expired = self.flights.timed_out(now, rto);
        self.declare_lost(&expired, FlightFate::TimedOut)
    }

    /// When the oldest flight's retransmission timeout passes.
    pub fn timeout_at(&self, rto: Duration) -> Option<Instant> {
        self.flights.timeout_at(rto)
    }

    /// Forgets every flight (the stream is being dropped): they leave the books without news of
    /// their delivery, for the connections' congestion control to take out of flight.
    pub fn forget_flights(&mut self) {
        self.flights.forget_all();
    }

    /// Declares lost every flight sent on `connection`, which died. Returns how many.
    pub fn on_connection_lost(&mut self, connection: ConnectionId) -> usize {
        let on_it = self.flights.on_connection(connection);
        self.declare_lost(&on_it, FlightFate::Lost)
    }

    fn declare_lost(&mut self, seqs: &[u64], fate: FlightFate) -> usize {
        for flight in self.flights.remove_lost(seqs, fate) {
            let range = flight.start.max(self.acked)..flight.end;
            self.lost.insert(range.clone());
            for received in self.received.overlapping(range) {
                self.lost.remove(received);
            }
        }
        seqs.len()
    }

    /// Takes the flights that left the books since the last call, for the congestion control
    /// of the connections they went out on.
    pub fn take_departed(&mut self) -> std::vec::Drain<'_, FlightLeft> {
        self.flights.take_departed()
    }
}

mod flights;

#[cfg(test)]
mod tests;
