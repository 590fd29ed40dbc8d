//! Counters of what an endpoint did, for operators and tests.

use std::collections::BTreeMap;

use super::auth::AuthFailure;

/// Counters of an [`Endpoint`](super::Endpoint), only ever increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Frames received and accepted.
    pub frames_received: u64,
    /// Frames put into transmits.
    pub frames_sent: u64,
    /// Bytes handed to the runtime to send.
    pub bytes_sent: u64,
    /// Bytes received from the runtime.
    pub bytes_received: u64,
    /// Data bytes put into packets, first sends and resends.
    pub data_bytes_sent: u64,
    /// Pieces resent after being declared lost.
    pub pieces_resent: u64,
    /// Flights declared lost (by acknowledgement, timeout or dead connection).
    pub flights_lost: u64,
    /// Retransmission timeouts that fired.
    pub rto_fired: u64,
    /// Congestion windows of datagram connections cut after a loss (at most once per round
    /// trip and connection).
    pub congestion_events: u64,
    /// Messages queued by the application.
    pub messages_sent: u64,
    /// Messages taken by the application.
    pub messages_received: u64,
    /// Sends refused with WouldBlock.
    pub would_block: u64,
    /// Frames that did not decode; on a stream connection the connection is closed.
    pub invalid_frames: u64,
    /// Frames whose source was not the connection's peer, or whose destination was not us.
    pub misaddressed_frames: u64,
    /// Frames without a body (the 6-byte empty frame, or a body from a later version): ignored
    /// in every phase of a connection (`docs/protocol.md` 2.9).
    pub bodiless_frames: u64,
    /// Packets whose content broke the protocol's rules.
    pub invalid_packets: u64,
    /// Acknowledgements of units never sent.
    pub invalid_acks: u64,
    /// Pieces dropped because the peer's receive budget was full.
    pub dropped_over_budget: u64,
    /// Pieces dropped because they lay beyond the stream's end or window.
    pub dropped_out_of_range: u64,
    /// Units the peer abandoned (RESET_OFFSET) that were never delivered here.
    pub units_skipped: u64,
    /// Messages this endpoint abandoned after `message_timeout`.
    pub messages_expired: u64,
    /// Messages received over `max_message_size`, dropped instead of delivered.
    pub oversized_messages: u64,
    /// Pieces that were already held or delivered.
    pub duplicate_pieces: u64,
    /// Packets for a new stream beyond `max_streams_per_peer`.
    pub dropped_too_many_streams: u64,
    /// Input for a connection the engine does not know.
    pub unknown_connection: u64,
    /// Connections declared dead or reported lost.
    pub connections_lost: u64,
    /// Acknowledgement frames sent.
    pub acks_sent: u64,
    /// Pings sent.
    pub pings_sent: u64,
    /// Handshakes completed, on either side.
    pub handshakes_completed: u64,
    /// Connections refused, by the rule that failed.
    pub auth_failures: BTreeMap<AuthFailure, u64>,
    /// Peers whose handshake showed they had restarted (their streams started over).
    pub peer_restarts: u64,
    /// Frames that came through relays from an earlier instance of their source, or for an
    /// earlier instance of this node: dropped.
    pub stale_instance_frames: u64,
    /// Relays: frames forwarded to another node.
    pub frames_forwarded: u64,
    /// Relays: frames not forwarded, by reason (`no_route`, `queue_full`, `too_large`).
    pub forward_dropped: BTreeMap<&'static str, u64>,
    /// Notices from relays that a destination has no route.
    pub unroutable_notices: u64,
    /// Frames of early data dropped because the hello's nonce could not be remembered (they are
    /// sent again after the handshake).
    pub early_data_dropped: u64,
    /// Peers whose state was dropped after they left (a tombstone keeps where their streams
    /// stood, should they come back).
    pub peers_dropped: u64,
}

impl EngineStats {
    /// Refusals for `failure`.
    pub fn auth_failures(&self, failure: AuthFailure) -> u64 {
        self.auth_failures.get(&failure).copied().unwrap_or(0)
    }
}
