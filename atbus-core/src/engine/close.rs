//! Why a stream or a connection closes: the engine's own words for the wire's
//! `close_reason_data` (`docs/protocol.md` 3.8, 4.4). Frames are decoded at the edge; what the
//! engine hands the application ([`Event`](super::Event), [`Endpoint::finish`](super::Endpoint::finish),
//! [`Endpoint::close_connection`](super::Endpoint::close_connection)) speaks these types, not the
//! protobuf ones.

use std::fmt;

use atbus_proto::protocol::{AtbusCloseReason, CloseReasonData};

/// `ATBUS_CLOSE_REASON`: why, as a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 0: no reason given.
    Unknown,
    /// 1: closed on purpose (a shutdown, a finished stream, a slow consumer cut off).
    Shutdown,
    /// 2: the peer restarted, or the transport reported the connection lost.
    PeerReset,
    /// 3: refused by the handshake or the rules of every frame (section 8).
    Unauthorized,
    /// 4: a relay knows no route to the destination.
    RouterNotFound,
    /// A code this version does not know (enums are open, section 4.5).
    Other(i32),
}

impl CloseCode {
    /// The code from the wire.
    pub fn from_wire(code: i32) -> Self {
        match AtbusCloseReason::try_from(code) {
            Ok(AtbusCloseReason::Unknown) => CloseCode::Unknown,
            Ok(AtbusCloseReason::Shutdown) => CloseCode::Shutdown,
            Ok(AtbusCloseReason::PeerReset) => CloseCode::PeerReset,
            Ok(AtbusCloseReason::Unauthorized) => CloseCode::Unauthorized,
            Ok(AtbusCloseReason::RouterNotFound) => CloseCode::RouterNotFound,
            Err(_) => CloseCode::Other(code),
        }
    }

    /// The code as it goes on the wire.
    pub fn to_wire(self) -> i32 {
        match self {
            CloseCode::Unknown => AtbusCloseReason::Unknown as i32,
            CloseCode::Shutdown => AtbusCloseReason::Shutdown as i32,
            CloseCode::PeerReset => AtbusCloseReason::PeerReset as i32,
            CloseCode::Unauthorized => AtbusCloseReason::Unauthorized as i32,
            CloseCode::RouterNotFound => AtbusCloseReason::RouterNotFound as i32,
            CloseCode::Other(code) => code,
        }
    }
}

/// Why a stream or a connection closed: a code, and a text for logs (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The code.
    pub code: CloseCode,
    /// Human-readable detail.
    pub message: String,
}

impl CloseReason {
    /// A reason with `code` and `message`.
    pub fn new(code: CloseCode, message: impl Into<String>) -> Self {
        CloseReason {
            code,
            message: message.into(),
        }
    }

    /// Closed on purpose, with `message`.
    pub fn shutdown(message: impl Into<String>) -> Self {
        CloseReason::new(CloseCode::Shutdown, message)
    }

    /// The reason a frame carried.
    pub(crate) fn from_wire(reason: CloseReasonData) -> Self {
        CloseReason {
            code: CloseCode::from_wire(reason.code),
            message: reason.message,
        }
    }

    /// The reason as it goes in a frame.
    pub(crate) fn to_wire(&self) -> CloseReasonData {
        CloseReasonData {
            code: self.code.to_wire(),
            message: self.message.clone(),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_goes_to_the_wire_and_back_and_unknown_codes_are_kept() {
        for wire in -2..=10 {
            let code = CloseCode::from_wire(wire);
            assert_eq!(code.to_wire(), wire);
            assert_eq!(
                matches!(code, CloseCode::Other(_)),
                !(0..=4).contains(&wire)
            );
        }
        let reason = CloseReason::new(CloseCode::RouterNotFound, "no route");
        assert_eq!(CloseReason::from_wire(reason.to_wire()), reason);
    }
}
