//! What the application receives: messages with where they came from, and events about peers and
//! connections.

use bytes::Bytes;

use crate::engine::{AuthFailure, ConnectionId, MessageMeta, ReceivedMessage};

/// A message received by a [`Node`](super::Node).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The node that sent it.
    pub source: String,
    /// The stream it came on.
    pub stream_id: i64,
    /// Its bytes.
    pub data: Bytes,
    /// Its type, options and labels.
    pub meta: MessageMeta,
}

impl Message {
    pub(crate) fn new(source: String, stream_id: i64, received: ReceivedMessage) -> Self {
        Self {
            source,
            stream_id,
            data: received.data,
            meta: received.meta,
        }
    }

    /// The id of the request this message is, if the sender waits for a reply
    /// ([`Node::reply`](super::Node::reply) answers it).
    pub fn request_id(&self) -> Option<u64> {
        self.meta
            .options
            .as_ref()
            .and_then(|options| u64::try_from(options.request_id).ok())
            .filter(|&id| id != 0)
    }
}

/// Something that happened to a node's peers or connections, from
/// [`Node::events`](super::Node::events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A connection completed its handshake.
    Connected {
        /// The connection.
        connection: ConnectionId,
        /// The peer at its other end.
        peer: String,
    },
    /// A peer has a live connection (again).
    PeerReachable {
        /// The peer.
        peer: String,
    },
    /// A peer's last connection died; messages to it wait (within the send window) for the next.
    PeerUnreachable {
        /// The peer.
        peer: String,
    },
    /// A connection died.
    ConnectionLost {
        /// The connection.
        connection: ConnectionId,
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A connection was refused during its handshake.
    HandshakeFailed {
        /// The connection.
        connection: ConnectionId,
        /// The rule that failed.
        failure: AuthFailure,
        /// The close reason.
        reason: String,
    },
    /// A peer finished its direction of a stream.
    StreamClosed {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: i64,
        /// The reason it gave.
        reason: String,
    },
    /// Messages to a peer were abandoned after `message_timeout`.
    MessagesExpired {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: i64,
        /// How many.
        count: usize,
    },
    /// A peer restarted: the streams to it started over (what it had not acknowledged is sent
    /// again).
    PeerRestarted {
        /// The peer.
        peer: String,
    },
    /// This node, connected anonymously, was given a name.
    NameAssigned {
        /// The name.
        name: String,
    },
    /// A relay knows no route to `peer` (ROUTER_NOT_FOUND): what was queued to it is dropped,
    /// its pending requests fail, and sends to it fail for a moment.
    Unroutable {
        /// The peer.
        peer: String,
        /// The relay's reason.
        reason: String,
        /// Units (about bytes) that were queued to it and are dropped.
        dropped_units: u64,
    },
}
