//! What the engine tells the application.

use super::auth::AuthFailure;
use super::close::CloseReason;
use super::stream_id::StreamId;
use super::transmit::ConnectionId;

/// Something that happened, from [`Endpoint::poll_event`](super::Endpoint::poll_event).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A stream has a whole message to take with [`Endpoint::read`](super::Endpoint::read).
    Readable {
        /// The peer that sent it.
        peer: String,
        /// The stream it came on.
        stream_id: StreamId,
    },
    /// A stream that refused a send with `WouldBlock` has room again.
    Writable {
        /// The peer the stream goes to.
        peer: String,
        /// The stream.
        stream_id: StreamId,
    },
    /// The peer finished its direction of a stream, after every message before the end was read.
    StreamFinished {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: StreamId,
        /// The reason it gave.
        reason: CloseReason,
    },
    /// A relay knows no route to `peer`: what was queued to it is dropped, and sends to it fail
    /// with [`SendError::NoRoute`](super::SendError::NoRoute) for a while.
    Unroutable {
        /// The peer.
        peer: String,
        /// The relay's reason (code ROUTER_NOT_FOUND).
        reason: CloseReason,
        /// Units that were queued to it and not acknowledged, now dropped.
        dropped_units: u64,
    },
    /// Everything this endpoint sent on a stream, and its end, has been acknowledged.
    StreamClosed {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: StreamId,
    },
    /// Messages queued on a stream were not acknowledged within `message_timeout` and were
    /// abandoned: the peer will never receive them.
    MessagesExpired {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: StreamId,
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
        reason: CloseReason,
    },
    /// A connection's handshake completed: the peer proved who it is (and, on the connecting
    /// side, so did the accepting side).
    Authenticated {
        /// The connection.
        connection: ConnectionId,
        /// The peer's name.
        peer: String,
        /// Whether the data sent with the hello was delivered (on the connecting side: taken by
        /// the peer; what was not is being sent again).
        early_data_accepted: bool,
        /// Whether a resumption ticket stood in for the long-term credential.
        resumed: bool,
    },
    /// A connection was refused during its handshake, and forgotten: the runtime closes it.
    HandshakeFailed {
        /// The connection.
        connection: ConnectionId,
        /// The rule that failed.
        failure: AuthFailure,
        /// The close reason sent, or received from the accepting side.
        reason: CloseReason,
    },
    /// The peer restarted (its handshake brought a new instance): the streams to it started over
    /// from offset 0, what it had not acknowledged is being sent again (so a message it took
    /// just before dying may arrive twice), and its unfinished messages to us were dropped.
    PeerRestarted {
        /// The peer.
        peer: String,
    },
    /// This endpoint, connecting anonymously, was given its name by the accepting side.
    NameAssigned {
        /// The name: the endpoint goes by it from now on.
        name: String,
    },
}
