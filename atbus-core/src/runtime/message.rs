//! What the application receives: messages with where they came from, and events about peers and
//! connections.
//!
//! A [`NodeEvent`] is the application's view of an engine [`Event`]: made from it by
//! `NodeEvent::from_engine`, the one place that decides which engine events the application
//! sees and in what form (reasons as text, so no wire type reaches the node's API). The events
//! the node acts on itself (a message to read, a window that opened) do not reach it.

use bytes::Bytes;

use crate::engine::{AuthFailure, ConnectionId, Event, MessageMeta, ReceivedMessage};

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
/// [`Node::events`](super::Node::events): the application's view of the engine's [`Event`] of
/// the same name (or the one each variant names).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A connection completed its handshake ([`Event::Authenticated`]).
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
    /// A peer finished its direction of a stream ([`Event::StreamFinished`]).
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

impl NodeEvent {
    /// What the application sees of `event`; `None` for the events the node handles itself
    /// (`Readable`: the inbox takes the message; `Writable`: waiting senders retry;
    /// `StreamClosed`: everything sent on a stream was acknowledged).
    pub(crate) fn from_engine(event: Event) -> Option<Self> {
        Some(match event {
            Event::Readable { .. } | Event::Writable { .. } | Event::StreamClosed { .. } => {
                return None;
            }
            Event::Authenticated {
                connection, peer, ..
            } => NodeEvent::Connected { connection, peer },
            Event::PeerReachable { peer } => NodeEvent::PeerReachable { peer },
            Event::PeerUnreachable { peer } => NodeEvent::PeerUnreachable { peer },
            Event::ConnectionLost {
                connection,
                peer,
                reason,
            } => NodeEvent::ConnectionLost {
                connection,
                peer,
                reason: reason.message,
            },
            Event::HandshakeFailed {
                connection,
                failure,
                reason,
            } => NodeEvent::HandshakeFailed {
                connection,
                failure,
                reason: reason.message,
            },
            Event::StreamFinished {
                peer,
                stream_id,
                reason,
            } => NodeEvent::StreamClosed {
                peer,
                stream_id: stream_id.get(),
                reason: reason.message,
            },
            Event::MessagesExpired {
                peer,
                stream_id,
                count,
            } => NodeEvent::MessagesExpired {
                peer,
                stream_id: stream_id.get(),
                count,
            },
            Event::PeerRestarted { peer } => NodeEvent::PeerRestarted { peer },
            Event::NameAssigned { name } => NodeEvent::NameAssigned { name },
            Event::Unroutable {
                peer,
                reason,
                dropped_units,
            } => NodeEvent::Unroutable {
                peer,
                reason: reason.message,
                dropped_units,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CloseCode, CloseReason, StreamId};

    #[test]
    fn the_application_sees_engine_events_with_their_reasons_as_text() {
        let reason = CloseReason::new(CloseCode::Other(7), "done");
        let finished = Event::StreamFinished {
            peer: "b".into(),
            stream_id: StreamId::new(3),
            reason,
        };
        assert_eq!(
            NodeEvent::from_engine(finished),
            Some(NodeEvent::StreamClosed {
                peer: "b".into(),
                stream_id: 3,
                reason: "done".into(),
            })
        );
        let readable = Event::Readable {
            peer: "b".into(),
            stream_id: StreamId::new(3),
        };
        assert_eq!(NodeEvent::from_engine(readable), None, "the inbox takes it");
    }
}
