//! The sans-IO protocol engine: streams, acknowledgements, fragmentation, retransmission and flow
//! control as a state machine fed with bytes and time, with no sockets, tasks or clock of its own.
//!
//! An [`Endpoint`] is one node's protocol state. The runtime around it registers connections
//! ([`Endpoint::add_connection`]), feeds it what arrives ([`Endpoint::handle_input`]) and the
//! passing of time ([`Endpoint::handle_timeout`]), and drains what it produces
//! ([`Endpoint::poll_transmit`], [`Endpoint::poll_event`], [`Endpoint::poll_timeout`]). The
//! application queues messages with [`Endpoint::send`] and takes them with [`Endpoint::read`].
//! The stream rules it implements are those of `docs/protocol.md` section 5.

pub mod auth;
mod close;
mod config;
pub(crate) mod congestion;
mod connection;
mod endpoint;
mod error;
mod event;
pub mod message;
mod peer;
mod peers;
pub(crate) mod piece;
pub(crate) mod ranges;
pub(crate) mod reassembly;
mod rtt;
pub(crate) mod send;
mod stats;
mod stream_id;
mod timer;
pub mod transmit;
mod wire;

pub use auth::{
    AllowRule, AnonymousPolicy, AuthConfig, AuthFailure, ConnectOptions, Credential, IdentityKind,
    IssuedIdentity, PeerIdentity, Token, TokenError,
};
pub use close::{CloseCode, CloseReason};
pub use config::{ConnectionKind, ConnectionParams, EngineConfig, ForwardOverflow};
pub use endpoint::{Endpoint, MIN_MTU};
pub use error::{ConnectionError, IssueError, SendError};
pub use event::Event;
pub use message::{MessageMeta, ReceivedMessage};
pub use stats::EngineStats;
pub use stream_id::StreamId;
pub use transmit::{ConnectionId, Transmit};
