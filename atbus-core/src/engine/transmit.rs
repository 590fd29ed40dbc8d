//! What goes between the engine and the I/O around it: connection handles and bytes to send.

use bytes::Bytes;

/// Identifies one connection of an endpoint: a socket, or a peer address on a shared datagram
/// socket. The endpoint hands the ids out ([`add_connection`](super::Endpoint::add_connection),
/// [`accept`](super::Endpoint::accept), [`connect`](super::Endpoint::connect)), from 1 and never
/// twice; the runtime keys its sockets by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Bytes the engine wants sent on a connection: one datagram on a datagram transport, or bytes to
/// append to the stream on a stream transport. Either way they hold one or more whole frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection to send on.
    pub connection: ConnectionId,
    /// Whole encoded frames.
    pub data: Bytes,
}
