//! The atbus-rs relay.
//!
//! This crate will hold the standalone relay: a node of kind `relay` that forwards frames between
//! nodes, namespaces and other relays, with per-destination bounded queues, a hop limit, and an
//! admin HTTP side (health, metrics, discovery watch), as a library and as the `atbus-relay`
//! binary (see `DESIGN.md` section 4). It has no code yet.
