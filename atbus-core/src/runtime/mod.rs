//! The tokio runtime around the engine: transports that carry frames, background tasks that keep
//! connections up, and [`Node`], the handle a service uses to send, receive, request and reply.
//!
//! Every task that touches the engine (a connection's reader, the timer, the application) locks
//! the one [`Endpoint`](crate::engine::Endpoint) of the node, feeds it, and moves what it produced
//! to where it goes (`shared`): transmits to the connections' writers, messages to the inbox,
//! replies to the requests waiting for them.
//!
//! The modules import each other in one direction only (no circles):
//! - `node`, `services`, `discovery`: the application's API, over the core;
//! - `builder`, `config`: make a node (the builder starts the tasks and binds the listeners);
//! - `dialer`, `tasks`: the node's background work (the timer, accept and dial loops);
//! - `transport/*`: sockets and the bytes on them. A transport holds only the handles of `handle`
//!   (a `ConnectionHandle` per connection: deliver bytes, take transmits, report closed; the UDP
//!   hub also a `NodeHandle`, to register the connections it finds);
//! - `handle`: the seam, over `shared`;
//! - `shared`: the core (engine, queues, inbox, requests behind one lock), which knows no
//!   transport; `error`, `message`, `traffic`, `metadata`, `tls_config`: plain types at the bottom.

mod builder;
mod config;
mod dialer;
mod discovery;
mod error;
mod handle;
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
pub use config::{Connect, NodeConfig, PeerConfig, ReconnectConfig, parse_duration};
pub use discovery::{RelayDiscovery, RelayWatch};
pub use error::NodeError;
pub use message::{Message, NodeEvent};
pub use metadata::NodeMetadata;
pub use node::{ConnectionInfo, DEFAULT_STREAM, Node, NodeStream};
pub use services::Services;
pub use tls_config::{TlsError, TlsSettings};
pub use traffic::TrafficCounters;
pub use transport::TransportCounters;
