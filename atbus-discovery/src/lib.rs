//! Label-based discovery for atbus-rs.
//!
//! This crate will hold the node record (name, version, host, metadata, labels, gateways,
//! advertised relays), Kubernetes-style name and label validation and selectors, the `Registry`
//! trait with its in-memory and etcd backends, and the shared watch cache that fans one etcd watch
//! out to every subscriber of a process (see `DESIGN.md` section 6). It has no code yet.
