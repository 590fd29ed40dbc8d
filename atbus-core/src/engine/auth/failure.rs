//! Why a handshake or an authenticated connection was refused: one variant per rule, so that the
//! close reason, the log line and the counters all say which rule failed.

use std::fmt;

/// The rule a peer broke, from [`Event::HandshakeFailed`](crate::engine::Event::HandshakeFailed),
/// the log line of the refusal, and [`EngineStats::auth_failures`](crate::engine::EngineStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The handshake did not decode, or a field broke its limits.
    Malformed,
    /// The handshake frame was larger than `max_handshake_size`.
    Oversized,
    /// The hello asked for a protocol version this node does not speak.
    UnsupportedVersion,
    /// The hello named another node as its destination.
    WrongDestination,
    /// No identity was issued for the hello's (name, stream id).
    UnknownName,
    /// The proof did not check with any accepted token.
    BadProof,
    /// The hello's timestamp was outside the accepted window.
    ExpiredTimestamp,
    /// The hello's nonce was seen before: a replayed first flight.
    Replay,
    /// The issued identity was revoked, re-issued or has expired.
    Revoked,
    /// The resumption ticket was not sealed here, was altered, or has expired.
    BadTicket,
    /// The hello asked to be anonymous and this node does not allow anonymous peers.
    AnonymousRefused,
    /// The hello asked for the relay role with a credential that may not relay.
    RelayRefused,
    /// An anonymous peer addressed a destination outside its allow list.
    DestinationNotAllowed,
    /// A frame's source was not the name the peer authenticated as.
    SpoofedSource,
    /// A peer that is not an authenticated relay set `forward_for_*`.
    ForwardingNotAllowed,
    /// A peer with an issued identity sent on a stream other than the one issued to it.
    StreamNotAllowed,
    /// Another frame came before the hello on a stream connection.
    ExpectedHandshake,
    /// The handshake did not complete within `handshake_timeout`.
    Timeout,
    /// Connecting side: the accepting side's proof did not check.
    BadPeerProof,
    /// Connecting side: the accepting side is not the node it meant to reach.
    WrongPeer,
    /// Connecting side: the accepting side refused the handshake (its reason is in the event).
    RefusedByPeer,
    /// The hello's name is held by another instance whose connection is alive: a second node
    /// with the same name, not a restart (`docs/protocol.md` 8.3).
    NameTaken,
}

impl AuthFailure {
    /// Every variant, in order.
    pub const ALL: [AuthFailure; 22] = [
        AuthFailure::Malformed,
        AuthFailure::Oversized,
        AuthFailure::UnsupportedVersion,
        AuthFailure::WrongDestination,
        AuthFailure::UnknownName,
        AuthFailure::BadProof,
        AuthFailure::ExpiredTimestamp,
        AuthFailure::Replay,
        AuthFailure::Revoked,
        AuthFailure::BadTicket,
        AuthFailure::AnonymousRefused,
        AuthFailure::RelayRefused,
        AuthFailure::DestinationNotAllowed,
        AuthFailure::SpoofedSource,
        AuthFailure::ForwardingNotAllowed,
        AuthFailure::StreamNotAllowed,
        AuthFailure::ExpectedHandshake,
        AuthFailure::Timeout,
        AuthFailure::BadPeerProof,
        AuthFailure::WrongPeer,
        AuthFailure::RefusedByPeer,
        AuthFailure::NameTaken,
    ];

    /// A short name for metrics labels and close reasons, e.g. `bad_proof`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "malformed",
            AuthFailure::Oversized => "oversized",
            AuthFailure::UnsupportedVersion => "unsupported_version",
            AuthFailure::WrongDestination => "wrong_destination",
            AuthFailure::UnknownName => "unknown_name",
            AuthFailure::BadProof => "bad_proof",
            AuthFailure::ExpiredTimestamp => "expired_timestamp",
            AuthFailure::Replay => "replay",
            AuthFailure::Revoked => "revoked",
            AuthFailure::BadTicket => "bad_ticket",
            AuthFailure::AnonymousRefused => "anonymous_refused",
            AuthFailure::RelayRefused => "relay_refused",
            AuthFailure::DestinationNotAllowed => "destination_not_allowed",
            AuthFailure::SpoofedSource => "spoofed_source",
            AuthFailure::ForwardingNotAllowed => "forwarding_not_allowed",
            AuthFailure::StreamNotAllowed => "stream_not_allowed",
            AuthFailure::ExpectedHandshake => "expected_handshake",
            AuthFailure::Timeout => "timeout",
            AuthFailure::BadPeerProof => "bad_peer_proof",
            AuthFailure::WrongPeer => "wrong_peer",
            AuthFailure::RefusedByPeer => "refused_by_peer",
            AuthFailure::NameTaken => "name_taken",
        }
    }

    /// The rule, in words, for log lines.
    pub fn rule(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "the handshake did not decode or broke a field limit",
            AuthFailure::Oversized => "the handshake was over max_handshake_size",
            AuthFailure::UnsupportedVersion => "the hello's protocol version is not spoken here",
            AuthFailure::WrongDestination => "the hello was addressed to another node",
            AuthFailure::UnknownName => "no identity was issued for this name and stream id",
            AuthFailure::BadProof => "the proof did not check with any accepted token",
            AuthFailure::ExpiredTimestamp => "the hello's timestamp was outside the window",
            AuthFailure::Replay => "the hello's nonce was seen before (replayed first flight)",
            AuthFailure::Revoked => "the issued identity was revoked or has expired",
            AuthFailure::BadTicket => "the resumption ticket was invalid or expired",
            AuthFailure::AnonymousRefused => "anonymous peers are not allowed here",
            AuthFailure::RelayRefused => "this credential may not act as a relay",
            AuthFailure::DestinationNotAllowed => {
                "the anonymous peer addressed a destination outside its allow list"
            }
            AuthFailure::SpoofedSource => "a frame's source was not the authenticated name",
            AuthFailure::ForwardingNotAllowed => "only an authenticated relay may set forward_for",
            AuthFailure::StreamNotAllowed => "the issued identity used a stream not issued to it",
            AuthFailure::ExpectedHandshake => "the first frame of the connection was not a hello",
            AuthFailure::Timeout => "the handshake did not complete in time",
            AuthFailure::BadPeerProof => "the accepting side's proof did not check",
            AuthFailure::WrongPeer => "the accepting side is not the node asked for",
            AuthFailure::RefusedByPeer => "the accepting side refused the handshake",
            AuthFailure::NameTaken => "the name is held by another live instance",
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.as_str(), self.rule())
    }
}
