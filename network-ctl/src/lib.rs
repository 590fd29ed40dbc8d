//! The atbus-rs network control plane.
//!
//! This crate will hold the `network-manager` service and its agent and CLI: bootstrap tokens
//! with an expiry, node registration returning a node token, a stable IP from the network's CIDR
//! and two certificate sets, several networks keyed by a net token, SQLite or etcd storage, all
//! reached as request/reply services over the bus (see `DESIGN.md` section 7). It has no code yet.
