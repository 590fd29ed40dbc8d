//! The state the engine keeps per peer: its streams in both directions, what to acknowledge, its
//! connections, and the totals that bound its memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::message::ReceivedMessage;
use super::reassembly::Reassembler;
use super::rtt::RttEstimator;
use super::send::SendStream;
use super::transmit::ConnectionId;

/// The receive side of one stream, with what the application has been told.
#[derive(Debug)]
pub(crate) struct RecvStream {
    /// Reassembly of the peer's direction.
    pub reassembler: Reassembler,
    /// A Readable event is out and the application has not emptied the stream since.
    pub readable: bool,
    /// The window offset last announced to the peer.
    pub advertised: u64,
    /// Whole messages that arrived before the peer restarted, not yet taken: read first.
    pub carried: VecDeque<ReceivedMessage>,
}

/// One peer.
#[derive(Debug, Default)]
pub(crate) struct Peer {
    /// Its connections, live ones only, in the order they came.
    pub connections: Vec<ConnectionId>,
    /// Our direction of each stream.
    pub send: BTreeMap<i64, SendStream>,
    /// Its direction of each stream.
    pub recv: BTreeMap<i64, RecvStream>,
    /// Streams that refused a send and await a Writable event.
    pub blocked: BTreeSet<i64>,
    /// Units queued to the peer and not acknowledged, over all streams.
    pub unacked_units: u64,
    /// Bytes received from the peer and not taken, over all streams.
    pub received_held: usize,
    /// Streams whose receive state changed since the last acknowledgement.
    pub ack_pending: BTreeSet<i64>,
    /// When the pending acknowledgement must go out at the latest.
    pub ack_deadline: Option<Instant>,
    /// The pending acknowledgement must go out now (a gap, a duplicate, enough packets).
    pub ack_now: bool,
    /// Packets received since the last acknowledgement.
    pub packets_since_ack: u32,
    /// The connection the latest packet came on: acknowledgements go back on it.
    pub ack_connection: Option<ConnectionId>,
    /// Retransmission timeouts in a row without progress: the timeout doubles with each.
    pub rto_backoff: u32,
    /// The stream the next data transmit starts with (round robin).
    pub next_stream: i64,
    /// Whether PeerReachable was the last reachability event.
    pub reachable: bool,
    /// The peer's instance, as its last handshake gave it (or, through relays, its 4-byte tag):
    /// a new one means it restarted.
    pub instance: Option<Bytes>,
    /// Tags of the peer's earlier instances, with when they were retired: frames relayed from
    /// them are dropped as stragglers for a while (protocol.md 5.9).
    pub retired_instances: Vec<(u32, Instant)>,
    /// A tag relayed frames brought while a direct connection vouched for another instance, and
    /// when it was first seen: it takes over only if it persists.
    pub challenger: Option<(u32, Instant)>,
    /// The peer sent through a relay to an earlier instance of this node: the next transmit to
    /// it carries an acknowledgement, empty if need be, stamped with this instance's tag, so it
    /// learns of the restart and starts its streams over.
    pub announce_instance: bool,
    /// A retransmission timeout fired: the next transmit on the data connection may carry one
    /// transmit's worth of data even when the congestion window is full (a probe, as QUIC's
    /// PTO), so that its acknowledgement can declare the rest of what is in flight lost.
    pub probe_owed: bool,
    /// The relay the peer's forwarded frames last came through: without a direct connection,
    /// frames to the peer go there first.
    pub via: Option<String>,
    /// Round-trip time through relays (end to end), once measured.
    pub route_rtt: Option<RttEstimator>,
    /// The timepoint and arrival time of the latest packet that came through a relay, to echo in
    /// the next acknowledgement sent back through one.
    pub route_latest_packet: Option<(i64, Instant)>,
    /// The largest frame the relays on the way to the peer said they can pass on.
    pub route_mtu: Option<usize>,
    /// A relay said it knows no route to the peer: sends fail until this passes.
    pub unroutable_until: Option<Instant>,
    /// The relay the peer advertises, when this node prefers it to its own: frames to the peer
    /// go there while it is connected.
    pub preferred_relay: Option<String>,
    /// When a hello of another instance claimed the peer's name and this endpoint pinged the
    /// peer to learn whether it is still alive (see `endpoint/handshake/claim.rs`).
    pub name_probe: Option<Instant>,
}

impl Peer {
    /// Whether any timer may be running for this peer: an acknowledgement falling due, a stream
    /// with something unacknowledged or an abandonment to announce, or a sender waiting to be
    /// told it may write. Most of a relay's peers are idle most of the time, and the timers
    /// skip them without looking further.
    pub fn needs_timers(&self) -> bool {
        self.ack_deadline.is_some()
            || !self.blocked.is_empty()
            || self.send.values().any(SendStream::is_active)
    }

    /// Our direction of `stream_id`, created if new with `window` as the peer's assumed window.
    pub fn send_stream(&mut self, stream_id: i64, window: u64) -> &mut SendStream {
        self.send
            .entry(stream_id)
            .or_insert_with(|| SendStream::new(window))
    }

    /// The window to announce for `stream_id`: what the application has taken, plus
    /// `stream_window` or four fifths of what is left of `budget` besides the other streams' data,
    /// whichever is less. The fifth kept back pays for the bookkeeping of the pieces, so that data
    /// inside the window always fits the budget and the gap at the front can always be filled.
    /// 0 for a stream that does not exist.
    pub fn window_offset(&self, stream_id: i64, budget: usize, stream_window: u64) -> u64 {
        let Some(stream) = self.recv.get(&stream_id) else {
            return 0;
        };
        let others = self.received_held - stream.reassembler.held();
        let left = budget.saturating_sub(others) as u64 / 5 * 4;
        stream.reassembler.delivered() + left.min(stream_window)
    }
}
