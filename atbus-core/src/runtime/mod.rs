//! The tokio runtime around the engine: transports that carry frames, background tasks that keep
//! connections up, and [`Node`], the handle a service uses to send, receive, request and reply.
//!
//! Every task that touches the engine (a connection's reader, the timer, the application) locks
//! the one [`Endpoint`](crate::engine::Endpoint) of the node, feeds it, and moves what it produced
//! to where it goes (`shared`): transmits to the connections' writers, messages to the inbox,
//! replies to the requests waiting for them.

mod builder;
mod config;
mod dialer;
mod discovery;
mod error;
mod message;
mod metadata;
mod node;
mod services;
mod shared;
mod tasks;
mod tls_config;
mod traffic;
pub mod transport;

pub use builder::{NodeBuilder, RelayPreference};
pub use config::{
    Connect, EngineSection, NodeConfig, PeerConfig, ReconnectConfig, TlsConfig, parse_duration,
};
pub use discovery::{RelayDiscovery, RelayWatch};
pub use error::NodeError;
pub use message::{Message, NodeEvent};
pub use metadata::NodeMetadata;
pub use node::{ConnectionInfo, DEFAULT_STREAM, Node, NodeStream};
pub use services::Services;
pub use tls_config::{TlsError, TlsSettings};
pub use traffic::TrafficCounters;
pub use transport::TransportCounters;
