//! Label-based discovery for atbus-rs.
//!
//! This crate holds Kubernetes-style name and label validation ([`validate`]) and label selectors
//! ([`selector`]): `app=web,tier in (front,api),!canary`, with the syntax and semantics of
//! Kubernetes' `labels.Parse`. It will also hold the node record (name, version, host, metadata,
//! labels, gateways, advertised relays), the `Registry` trait with its in-memory and etcd backends,
//! and the shared watch cache that fans one etcd watch out to every subscriber of a process (see
//! `DESIGN.md` section 6).
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

pub mod selector;
pub mod validate;

pub use selector::{
    Found, Operator, Requirement, RequirementError, Selector, SelectorError, SelectorErrorKind,
};
pub use validate::{
    ValidationError, validate_label_key, validate_label_value, validate_labels, validate_node_name,
};
