//! Label-based discovery for atbus-rs.
//!
//! This crate holds Kubernetes-style name and label validation ([`validate`]), label selectors
//! ([`selector`]: `app=web,tier in (front,api),!canary`, with the syntax and semantics of
//! Kubernetes' `labels.Parse`), the node record ([`NodeRecord`]: name, version, host, metadata,
//! labels, gateways, advertised relay), the [`Registry`] trait with its in-memory
//! ([`MemoryRegistry`]) and etcd (`EtcdRegistry`, feature `etcd`) backends, and the watch cache
//! that fans one etcd watch out to every subscriber of a process ([`Watch`]).
//!
//! ```
//! use std::collections::BTreeMap;
//! use atbus_discovery::{validate_labels, Selector};
//!
//! let labels = BTreeMap::from([
//!     ("app".to_owned(), "web".to_owned()),
//!     ("atbus.io/zone".to_owned(), "eu-west".to_owned()),
//! ]);
//! validate_labels(&labels).unwrap();
//!
//! let selector: Selector = "app=web, atbus.io/zone in (eu-west, eu-north), !canary"
//!     .parse()
//!     .unwrap();
//! assert!(selector.matches(&labels));
//! ```

#[cfg(feature = "etcd")]
mod etcd;
mod memory;
pub mod path;
pub mod policy;
pub mod record;
mod registry;
pub mod selector;
pub mod validate;
mod watch;
mod wire;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdRegistry, EtcdStats};
pub use memory::MemoryRegistry;
pub use policy::{Area, Chooser, Locality, Policy, Proximity, Tier};
pub use record::{
    AdvertiseRelay, Gateway, HostInfo, Metadata, NodeRecord, RecordError, token_digest,
};
pub use registry::{BoxFuture, Registration, RegistrationState, Registry, RegistryError};
pub use watch::{CHANGE_BACKLOG, Watch, WatchEvent};

pub use selector::{
    Found, Operator, Requirement, RequirementError, Selector, SelectorError, SelectorErrorKind,
};
pub use validate::{
    ValidationError, validate_label_key, validate_label_value, validate_labels, validate_node_name,
};
