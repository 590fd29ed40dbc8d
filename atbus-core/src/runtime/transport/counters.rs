//! Counters of the transports, kept by a node and read with
//! [`Node::transport_counters`](crate::runtime::Node::transport_counters): TLS and QUIC
//! handshakes, and how often QUIC's 0-RTT was tried and taken. Room for per-transport frames and
//! bytes later.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a node's transport counters, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportCounters {
    /// TLS handshakes over TCP that completed, dialed or accepted.
    pub tls_handshakes: u64,
    /// TLS handshakes over TCP that failed (certificate refused, no common protocol, ...).
    pub tls_handshake_failures: u64,
    /// QUIC connections whose handshake completed (or, accepted, whose stream arrived), dialed
    /// or accepted.
    pub quic_handshakes: u64,
    /// QUIC connections that failed before carrying a stream.
    pub quic_handshake_failures: u64,
    /// QUIC connections this node dialed with 0-RTT (a resumable session allowed it).
    pub quic_zero_rtt_attempted: u64,
    /// Of those, the ones whose 0-RTT data the server accepted.
    pub quic_zero_rtt_accepted: u64,
}

/// The live counters, updated by the transports.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub quic_handshakes: AtomicU64,
    pub quic_handshake_failures: AtomicU64,
    pub quic_zero_rtt_attempted: AtomicU64,
    pub quic_zero_rtt_accepted: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Their values now.
    pub fn snapshot(&self) -> TransportCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportCounters {
            tls_handshakes: get(&self.tls_handshakes),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            quic_handshakes: get(&self.quic_handshakes),
            quic_handshake_failures: get(&self.quic_handshake_failures),
            quic_zero_rtt_attempted: get(&self.quic_zero_rtt_attempted),
            quic_zero_rtt_accepted: get(&self.quic_zero_rtt_accepted),
        }
    }
}
