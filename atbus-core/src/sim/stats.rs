//! Counters of what a link did with the transmits handed to it: how many were sent, delivered,
//! lost at random, duplicated, held back for reordering, or dropped (queue limit, MTU, a killed
//! link, an unknown connection). Kept per direction of every link and summed for the network.

use std::ops::{Add, AddAssign};

/// What one direction of a link (or, summed, the whole network) did with the transmits handed to
/// it. `sent` counts every transmit a node returned; each ends up delivered (once, or more with
/// duplication), lost at random or dropped for one of the reasons below.
///
/// On a stream link, `delivered` counts `handle_input` calls (chunks), which need not match
/// `sent`: the bytes are what is conserved there (`delivered_bytes == sent_bytes` when nothing
/// was dropped because the link was killed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TransferStats {
    /// Transmits the sending node returned from `poll_transmit` for this direction.
    pub sent: u64,
    /// Bytes of those transmits, whatever became of them.
    pub sent_bytes: u64,
    /// `handle_input` calls made on the receiving node: datagrams (duplicates included) or
    /// stream chunks.
    pub delivered: u64,
    /// Bytes handed to the receiving node.
    pub delivered_bytes: u64,
    /// Datagrams lost at random (`LinkProfile::loss`).
    pub lost: u64,
    /// Extra copies of datagrams made at random (`LinkProfile::duplicate`).
    pub duplicated: u64,
    /// Datagrams given an extra delay at random so that later ones may overtake them
    /// (`LinkProfile::reorder`). Whether one was actually overtaken depends on the traffic.
    pub reordered: u64,
    /// Datagrams dropped because the serialization queue was full (`LinkProfile::queue_limit`).
    pub dropped_queue: u64,
    /// Datagrams dropped because they were larger than `LinkProfile::mtu`: a bug in the sender.
    pub dropped_mtu: u64,
    /// Transmits sent while the link was killed, or still in flight when it was killed.
    pub dropped_down: u64,
    /// Transmits on a connection id the sending node does not have (only in
    /// `Network::total_stats`, since no link can be blamed): a bug in the sender.
    pub dropped_unroutable: u64,
}

impl TransferStats {
    /// Transmits that did not arrive for any reason: lost at random plus every kind of drop.
    pub fn not_delivered(&self) -> u64 {
        self.lost
            + self.dropped_queue
            + self.dropped_mtu
            + self.dropped_down
            + self.dropped_unroutable
    }
}

impl AddAssign for TransferStats {
    fn add_assign(&mut self, other: Self) {
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
        self.delivered += other.delivered;
        self.delivered_bytes += other.delivered_bytes;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.dropped_queue += other.dropped_queue;
        self.dropped_mtu += other.dropped_mtu;
        self.dropped_down += other.dropped_down;
        self.dropped_unroutable += other.dropped_unroutable;
    }
}

impl Add for TransferStats {
    type Output = Self;

    fn add(mut self, other: Self) -> Self {
        self += other;
        self
    }
}

/// The counters of both directions of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LinkStats {
    /// What node `a` sent to node `b`.
    pub a_to_b: TransferStats,
    /// What node `b` sent to node `a`.
    pub b_to_a: TransferStats,
}

impl LinkStats {
    /// Both directions added together.
    pub fn total(&self) -> TransferStats {
        self.a_to_b + self.b_to_a
    }
}
