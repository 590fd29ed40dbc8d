//! Errors of the node API, and the transports' [`TransportError`]: it is defined here, below the
//! transports, so that the node's error holds it without this module importing them (the
//! transports re-export it as `runtime::transport::TransportError`).

use std::time::Duration;

use crate::address::AddressError;
use crate::engine::{ConnectionError, SendError, TokenError};
use crate::runtime::tls_config::TlsError;

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

/// Why a transport could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The scheme's transport cannot be used this way (e.g. a `udp://` address given where a
    /// listener of another kind is bound).
    #[error("{scheme}:// cannot be used here")]
    Unsupported {
        /// The scheme.
        scheme: &'static str,
    },
    /// Binding or connecting failed.
    #[error("{address}: {source}")]
    Io {
        /// The address.
        address: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS or QUIC handshake failed (certificate refused, no common protocol, timeout, ...).
    #[error("{address}: handshake failed: {source}")]
    Handshake {
        /// The address.
        address: String,
        /// What went wrong, from rustls or quinn.
        #[source]
        source: std::io::Error,
    },
    /// A `tls://` or `quic://` address on a node without TLS settings.
    #[error("{address} needs TLS settings: call NodeBuilder::tls(…) (YAML: a tls: section)")]
    NoTls {
        /// The address.
        address: String,
    },
    /// The TLS settings could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}
