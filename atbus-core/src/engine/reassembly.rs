//! The receive side of one stream direction: pieces held by offset, reassembled into whole
//! messages, delivered in order exactly once.
//!
//! Offsets count units (`docs/protocol.md` section 5.3): every data byte is one unit and the end of
//! every message, and of the stream, is one more. Pieces arrive duplicated, cut differently and out
//! of order (retransmission over connections with other MTUs); the reassembler keeps each unit once,
//! trimming what it already holds off every new piece, so held pieces never overlap and memory is
//! bounded by the units held, whatever the sender repeats.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::message::ReceivedMessage;
use super::piece::{Piece, PieceEnd};
use atbus_proto::protocol::CloseReasonData;

/// Bookkeeping per held piece, counted so that many tiny pieces cannot hide from the budget.
const PIECE_OVERHEAD: usize = 64;

/// Memory a held piece takes, as counted against the receive budget.
fn cost(piece: &Piece) -> usize {
    piece.data.len() + PIECE_OVERHEAD
}

/// What became of a piece handed to [`Reassembler::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Some of its units were new and are now held.
    New,
    /// Every unit was already held or delivered.
    Duplicate,
    /// Holding it would go over the receive budget; nothing was kept. The sender will resend it.
    OverBudget,
    /// It lies beyond the stream's end or the receive window; nothing was kept.
    OutOfRange,
}

/// How a stream direction ended, once everything before its end has been taken.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finished {
    /// The reason the sender gave.
    pub reason: CloseReasonData,
}

/// A stream direction whose units were all taken, as [`Reassembler::rest`] keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvRest {
    /// Everything below this offset was taken (or skipped, or is the stream's end).
    pub offset: u64,
    /// Whether the stream ended at `offset`, and the application was told.
    pub finished: bool,
}

/// Reassembles one stream direction.
#[derive(Debug)]
pub(crate) struct Reassembler {
    /// Held pieces by start offset; they never overlap and all lie at or above `delivered`.
    pieces: BTreeMap<u64, Piece>,
    /// Everything below this offset has been taken by the application (or skipped by a reset).
    delivered: u64,
    /// Everything below this offset has been received: the acknowledge offset.
    contiguous: u64,
    /// One past the highest unit received.
    received_max: u64,
    /// Final size of the stream direction, once its end has been seen.
    final_size: Option<u64>,
    /// Bytes held, by [`cost`].
    held: usize,
    /// The most the reassembler may hold.
    budget: usize,
    /// Units beyond `delivered` the sender may use: data further ahead is refused.
    window: u64,
    /// Whether the end of the stream has been reported.
    finished: bool,
}

impl Reassembler {
    /// An empty stream direction that may hold `budget` bytes and accept units up to `window`
    /// past what the application has taken.
    pub fn new(budget: usize, window: u64) -> Self {
        Self {
            pieces: BTreeMap::new(),
            delivered: 0,
            contiguous: 0,
            received_max: 0,
            final_size: None,
            held: 0,
            budget,
            window,
            finished: false,
        }
    }

    /// What is left of the stream direction once the application took everything: the offset
    /// the next unit is expected at, and whether the stream ended there. `None` while anything
    /// is held but the stream's end, or before that end was reported.
    pub fn rest(&self) -> Option<RecvRest> {
        match self.pieces.first_key_value() {
            None => Some(RecvRest {
                offset: self.delivered,
                finished: self.finished,
            }),
            // Only the end of the stream, reported: it stays held for ever.
            Some((_, piece)) if self.finished && self.pieces.len() == 1 => {
                debug_assert!(matches!(piece.end, PieceEnd::Stream(_)));
                Some(RecvRest {
                    offset: piece.end_offset(),
                    finished: true,
                })
            }
            Some(_) => None,
        }
    }

    /// The stream direction again, from what [`rest`](Self::rest) kept of it. A finished one
    /// holds nothing (its end, already reported, is not kept): units up to its end are
    /// duplicates and units beyond it out of range, as before.
    pub fn resume(budget: usize, window: u64, rest: RecvRest) -> Self {
        let mut reassembler = Self::new(budget, window);
        reassembler.delivered = rest.offset;
        reassembler.contiguous = rest.offset;
        reassembler.received_max = rest.offset;
        if rest.finished {
            reassembler.final_size = Some(rest.offset);
            reassembler.finished = true;
        }
        reassembler
    }

    /// Everything below this offset has been taken by the application (or skipped by a reset).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Everything below this offset has been received.
    pub fn acknowledge_offset(&self) -> u64 {
        self.contiguous
    }

    /// One past the highest unit received.
    pub fn received_max_offset(&self) -> u64 {
        self.received_max
    }

    /// Bytes held for this stream direction.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether units below `received_max` are missing: the sender should resend at once.
    #[cfg(test)]
    pub fn has_gap(&self) -> bool {
        self.received_max > self.contiguous
    }

    /// The ranges received above the acknowledge offset, lowest first, merged, at most `limit`.
    pub fn received_ranges(&self, limit: usize) -> Vec<Range<u64>> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for piece in self.pieces.range(self.contiguous..).map(|(_, piece)| piece) {
            let full = ranges.len() == limit;
            match ranges.last_mut() {
                Some(last) if last.end == piece.start => last.end = piece.end_offset(),
                _ if full => break,
                _ => ranges.push(piece.start..piece.end_offset()),
            }
        }
        ranges
    }

    /// Takes in a piece, keeping only the units not already held or delivered.
    pub fn insert(&mut self, piece: Piece) -> Inserted {
        let (start, end) = (piece.start, piece.end_offset());
        if end <= self.delivered || end <= start {
            return Inserted::Duplicate;
        }
        if let Some(final_size) = self.final_size {
            if end > final_size {
                return Inserted::OutOfRange;
            }
        }
        if end > self.delivered.saturating_add(self.window) {
            return Inserted::OutOfRange;
        }
        if let PieceEnd::Stream(_) = piece.end {
            if self.final_size.is_some_and(|size| size != end) || end < self.received_max {
                // A second, different end, or an end below data already seen: not a valid sender.
                return Inserted::OutOfRange;
            }
        }

        // The parts of [max(start, delivered), end) that no held piece covers.
        let mut gaps = Vec::new();
        let mut cursor = start.max(self.delivered);
        let first_key = self
            .pieces
            .range(..=cursor)
            .next_back()
            .map_or(cursor, |(&key, _)| key);
        for held in self.pieces.range(first_key..end).map(|(_, held)| held) {
            if held.end_offset() <= cursor {
                continue;
            }
            if held.start > cursor {
                gaps.push((cursor, held.start.min(end)));
            }
            cursor = cursor.max(held.end_offset());
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            gaps.push((cursor, end));
        }
        if gaps.is_empty() {
            return Inserted::Duplicate;
        }
        let new_pieces: Vec<Piece> = gaps
            .iter()
            .map(|&(from, to)| piece.slice(from, to))
            .collect();
        let needed: usize = new_pieces.iter().map(cost).sum();
        if self.held + needed > self.budget {
            return Inserted::OverBudget;
        }
        if let PieceEnd::Stream(_) = piece.end {
            self.final_size = Some(end);
        }
        self.held += needed;
        self.received_max = self.received_max.max(end);
        for new in new_pieces {
            self.pieces.insert(new.start, new);
        }
        self.advance_contiguous();
        Inserted::New
    }

    /// Moves the acknowledge offset over the pieces now contiguous with it.
    fn advance_contiguous(&mut self) {
        while let Some(piece) = self.pieces.get(&self.contiguous) {
            self.contiguous = piece.end_offset();
        }
    }

    /// Whether the next whole message has arrived.
    pub fn has_message(&self) -> bool {
        let mut offset = self.delivered;
        while let Some(piece) = self.pieces.get(&offset) {
            match piece.end {
                PieceEnd::None => offset = piece.end_offset(),
                PieceEnd::Message => return true,
                PieceEnd::Stream(_) => return false,
            }
        }
        false
    }

    /// Takes the next whole message, if it has arrived.
    pub fn pop_message(&mut self) -> Option<ReceivedMessage> {
        // Find the contiguous pieces from `delivered` up to a message end.
        let mut units_end = self.delivered;
        let mut count = 0;
        let mut total = 0;
        loop {
            let piece = self.pieces.get(&units_end)?;
            count += 1;
            total += piece.data.len();
            units_end = piece.end_offset();
            match piece.end {
                PieceEnd::None => continue,
                PieceEnd::Message => break,
                // The stream's end is not a message: see `pop_finished`.
                PieceEnd::Stream(_) => return None,
            }
        }
        let start = self.delivered;
        let mut meta = None;
        let mut data = Bytes::new();
        let mut joined = (count > 1).then(|| BytesMut::with_capacity(total));
        while self.delivered < units_end {
            let Some(piece) = self.pieces.remove(&self.delivered) else {
                debug_assert!(false, "contiguous pieces were just found");
                break;
            };
            self.held -= cost(&piece);
            self.delivered = piece.end_offset();
            if piece.start == start {
                meta = piece.meta;
            }
            match joined.as_mut() {
                Some(buf) => buf.extend_from_slice(&piece.data),
                None => data = piece.data,
            }
        }
        if let Some(buf) = joined {
            data = buf.freeze();
        }
        Some(ReceivedMessage {
            offset: start,
            data,
            meta: meta.unwrap_or_default(),
        })
    }

    /// Reports the end of the stream direction once, after every message before it was taken.
    pub fn pop_finished(&mut self) -> Option<Finished> {
        if self.finished {
            return None;
        }
        let piece = self.pieces.get(&self.delivered)?;
        let PieceEnd::Stream(reason) = &piece.end else {
            return None;
        };
        let reason = reason.clone();
        self.finished = true;
        Some(Finished { reason })
    }

    /// Applies a RESET_OFFSET at `offset`: units below it will never come; what is held below it
    /// and not yet taken is dropped. Returns how many units were skipped.
    pub fn reset_to(&mut self, offset: u64) -> u64 {
        if offset <= self.delivered {
            return 0;
        }
        let skipped = offset - self.delivered;
        let kept = self.pieces.split_off(&offset);
        for piece in std::mem::replace(&mut self.pieces, kept).into_values() {
            self.held -= cost(&piece);
            if piece.end_offset() > offset {
                // A piece straddling the reset point keeps its units at and above it.
                let rest = piece.slice(offset, piece.end_offset());
                self.held += cost(&rest);
                self.pieces.insert(rest.start, rest);
            }
        }
        self.delivered = offset;
        self.contiguous = self.contiguous.max(offset);
        self.received_max = self.received_max.max(offset);
        self.advance_contiguous();
        skipped
    }
}

#[cfg(test)]
mod tests;
