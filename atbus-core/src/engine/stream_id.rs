//! Stream ids, and the ones the bus keeps for itself (`docs/protocol.md` section 5.2).
//!
//! A stream is one ordered, reliable sequence of messages in each direction between two nodes,
//! named by a signed 64-bit id. Applications use ids from 0 ([`StreamId::DEFAULT`] is where
//! `Node::send` goes); the negative ids belong to the bus, each with one meaning:
//!
//! | id | constant | what travels on it |
//! |---|---|---|
//! | −1 | [`StreamId::CONNECTION`] | the FINISH_CONNECTION that closes a connection, with its reason (it covers no offset) |
//! | −2 | [`StreamId::HANDSHAKE`] | the handshake: hello, accept, confirm (section 8) |
//! | −3 | [`StreamId::ROUTING`] | routing notices from a relay to a sender: no route, frame too large (never acknowledged) |
//! | −4 | [`StreamId::ROUTES`] | route tables between relays (an ordinary reliable stream) |
//!
//! Other negative ids are reserved: the engine refuses to send on them for an application.

use std::fmt;

/// The id of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(i64);

impl StreamId {
    /// The stream applications send on unless they choose another.
    pub const DEFAULT: StreamId = StreamId(0);
    /// −1: closing a connection (FINISH_CONNECTION and its reason).
    pub const CONNECTION: StreamId = StreamId(-1);
    /// −2: the handshake.
    pub const HANDSHAKE: StreamId = StreamId(-2);
    /// −3: routing notices from relays.
    pub const ROUTING: StreamId = StreamId(-3);
    /// −4: route tables between relays.
    pub const ROUTES: StreamId = StreamId(-4);

    /// The stream `id`.
    pub const fn new(id: i64) -> Self {
        StreamId(id)
    }

    /// The id as it goes on the wire.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Whether the bus keeps this id for itself (every negative id).
    pub const fn is_reserved(self) -> bool {
        self.0 < 0
    }

    /// What a reserved id is for, in words; `None` for an application's stream or a reserved
    /// id with no meaning yet.
    pub const fn meaning(self) -> Option<&'static str> {
        match self.0 {
            -1 => Some("closing the connection"),
            -2 => Some("the handshake"),
            -3 => Some("routing notices from relays"),
            -4 => Some("route tables between relays"),
            _ => None,
        }
    }
}

impl From<i64> for StreamId {
    fn from(id: i64) -> Self {
        StreamId(id)
    }
}

impl From<StreamId> for i64 {
    fn from(id: StreamId) -> Self {
        id.0
    }
}

impl PartialEq<i64> for StreamId {
    fn eq(&self, other: &i64) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_ids_are_the_negative_ones_and_the_four_in_use_say_what_they_are_for() {
        for id in [
            StreamId::CONNECTION,
            StreamId::HANDSHAKE,
            StreamId::ROUTING,
            StreamId::ROUTES,
        ] {
            assert!(id.is_reserved());
            assert!(id.meaning().is_some(), "{id}");
        }
        assert_eq!(StreamId::new(-5).meaning(), None);
        assert!(StreamId::new(-5).is_reserved());
        assert!(!StreamId::DEFAULT.is_reserved());
        assert_eq!(i64::from(StreamId::ROUTES), -4);
        assert_eq!(StreamId::from(7), 7);
    }
}
