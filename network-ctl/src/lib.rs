//! The atbus-rs network control plane: the `network-manager` service and
//! its agent and CLI, reaching each other through a relay.
//!
//! - Bootstrap tokens with an expiry, stored hashed, swept every minute, optionally single-use.
//! - Registration: a bootstrap token (and a net token) gets a unique node token, a stable address
//!   of the network and two certificate sets (control plane and data plane, each from its own
//!   CA), in one reply.
//! - Several networks, each keyed by a net token with its own IPv4 or IPv6 range.
//! - When a network is full, the binding of the node that is not connected and changed least
//!   recently is reclaimed; connected nodes are never robbed.
//! - Storage: SQLite (embedded default) or etcd (several replicas; allocation is a
//!   compare-and-swap on the address key).

pub mod agent;
pub mod certs;
pub mod cidr;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod manager;
pub mod pool;
pub mod presence;
pub mod records;
pub mod service;
pub mod store;
pub mod token;

/// The request and reply messages of `proto/network_ctl.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/atbus.network_ctl.rs"));
}

pub use error::ControlError;
pub use records::{AuthorityPem, Binding, BootstrapToken, Network, NodeState, Plane};
#[cfg(feature = "etcd")]
pub use store::{EtcdStore, EtcdStoreConfig};
pub use store::{NetworkStatus, SqliteStore, Store};
