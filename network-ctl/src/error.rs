//! What can go wrong in the control plane, each with the wire code the caller sees.

use crate::clock::{Millis, format_time};
use crate::proto::ErrorCode;

/// A refused or failed control-plane operation. Every refusal leaves the stored state as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The call needs a credential the request does not carry.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// No bootstrap token has this value (never created, or swept after it expired).
    #[error("unknown bootstrap token: ask an operator for a new one (network-ctl token create)")]
    UnknownBootstrapToken,
    /// The bootstrap token expired.
    #[error(
        "the bootstrap token expired at {}: ask an operator for a new one (network-ctl token create)",
        format_time(*.expired_at)
    )]
    ExpiredBootstrapToken {
        /// When.
        expired_at: Millis,
    },
    /// A single-use bootstrap token already registered a node.
    #[error("the bootstrap token was single-use and has been used: ask an operator for a new one")]
    BootstrapTokenUsed,
    /// No network has this net token.
    #[error("unknown network {net_token:?}: create it first (network-ctl network create)")]
    UnknownNetwork {
        /// The net token asked for.
        net_token: String,
    },
    /// No node of this token is bound in the network.
    #[error(
        "no node {node_token:?} in network {net_token:?} (never registered, unregistered, or its address was reclaimed while it was away)"
    )]
    UnknownNode {
        /// The node token.
        node_token: String,
        /// The network.
        net_token: String,
    },
    /// Every address is bound to a connected node (or never handed out).
    #[error(
        "network {net_token:?} ({cidr}) has no free address: all {bound} bound addresses belong to connected nodes; unregister a node or create a larger network"
    )]
    PoolExhausted {
        /// The network.
        net_token: String,
        /// Its range.
        cidr: String,
        /// How many addresses are bound.
        bound: u64,
    },
    /// The reserved node token was the target of something it is exempt from.
    #[error("{0}")]
    Reserved(String),
    /// A conflicting state: a network with another range, or a concurrent change.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage failed; nothing was changed and the request may be retried.
    #[error("storage failed: {0}")]
    Storage(String),
}

impl ControlError {
    /// The code this error travels with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::BadRequest(_) => ErrorCode::BadRequest,
            ControlError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ControlError::UnknownBootstrapToken => ErrorCode::UnknownBootstrapToken,
            ControlError::ExpiredBootstrapToken { .. } => ErrorCode::ExpiredBootstrapToken,
            ControlError::BootstrapTokenUsed => ErrorCode::BootstrapTokenUsed,
            ControlError::UnknownNetwork { .. } => ErrorCode::UnknownNetwork,
            ControlError::UnknownNode { .. } => ErrorCode::UnknownNode,
            ControlError::PoolExhausted { .. } => ErrorCode::PoolExhausted,
            ControlError::Reserved(_) => ErrorCode::Reserved,
            ControlError::Conflict(_) => ErrorCode::Conflict,
            ControlError::Storage(_) => ErrorCode::Internal,
        }
    }
}

impl From<rusqlite::Error> for ControlError {
    fn from(error: rusqlite::Error) -> Self {
        ControlError::Storage(error.to_string())
    }
}
