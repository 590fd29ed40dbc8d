//! Errors of the node API.

use std::time::Duration;

use crate::address::AddressError;
use crate::engine::{ConnectionError, SendError, TokenError};
use crate::runtime::transport::TransportError;

/// What went wrong with a [`Node`](super::Node) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The send window to the peer is full: wait (the async `send` does) or try again later.
    #[error("the send window to {peer} is full: use the async send, or retry after it drains")]
    WouldBlock {
        /// The peer.
        peer: String,
    },
    /// The engine refused the message (too large, reserved stream, finished stream, ...).
    #[error(transparent)]
    Send(SendError),
    /// No reply came in time.
    #[error("no reply from {peer} within {after:?}")]
    Timeout {
        /// The peer asked.
        peer: String,
        /// The time waited.
        after: Duration,
    },
    /// The node is shutting down or shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// A listen or peer address did not parse.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A transport could not listen or connect.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A connection could not be registered with the engine.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A token is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The configuration is inconsistent.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The relay refused a discovery request, or answered something else than discovery.
    #[error("discovery through relay {relay:?}: {message}")]
    Discovery {
        /// The relay asked.
        relay: String,
        /// What it said.
        message: String,
    },
}

impl From<SendError> for NodeError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::WouldBlock { peer } => NodeError::WouldBlock { peer },
            other => NodeError::Send(other),
        }
    }
}
