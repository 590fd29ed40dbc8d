//! What the engine tells the application.

use atbus_proto::protocol::CloseReasonData;

use super::transmit::ConnectionId;

/// Something that happened, from [`Endpoint::poll_event`](super::Endpoint::poll_event).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A stream has a whole message to take with [`Endpoint::read`](super::Endpoint::read).
    Readable {
        /// The peer that sent it.
        peer: String,
        /// The stream it came on.
        stream_id: i64,
    },
    /// A stream that refused a send with `WouldBlock` has room again.
    Writable {
        /// The peer the stream goes to.
        peer: String,
        /// The stream.
        stream_id: i64,
    },
    /// The peer finished its direction of a stream, after every message before the end was read.
    StreamFinished {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: i64,
        /// The reason it gave.
        reason: CloseReasonData,
    },
    /// Everything this endpoint sent on a stream, and its end, has been acknowledged.
    StreamClosed {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: i64,
    },
    /// Messages queued on a stream were not acknowledged within `message_timeout` and were
    /// abandoned: the peer will never receive them.
    MessagesExpired {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: i64,
        /// How many messages.
        count: usize,
    },
    /// The peer has a live connection again (or for the first time).
    PeerReachable {
        /// The peer.
        peer: String,
    },
    /// The peer's last live connection died; what is queued for it waits for a new one.
    PeerUnreachable {
        /// The peer.
        peer: String,
    },
    /// A connection died: silent past the idle timeout, closed by the peer, or reported lost.
    ConnectionLost {
        /// The connection.
        connection: ConnectionId,
        /// The peer at its other end.
        peer: String,
        /// Why.
        reason: CloseReasonData,
    },
}
