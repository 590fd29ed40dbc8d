//! The deterministic simulated network the sans-IO engine is tested on (`docs/architecture.md`).
//!
//! A [`Network`] owns any number of nodes — anything that implements [`Driver`], the sans-IO
//! shape of the engine — and links between them, each direction with its own [`LinkProfile`]:
//! datagrams or a byte stream, delay, jitter, loss, duplication, reordering, bandwidth, queue
//! limit, MTU. Links can be killed (with or without the nodes noticing) and restored. Time is
//! simulated: [`Network::now`] is a base [`Instant`] taken once at creation plus simulated
//! elapsed time, and the network jumps from one event (a delivery or a node's timeout) to the
//! next. All randomness comes from one RNG seeded by [`Network::new`], and every tie is broken by
//! a sequence number, so the same seed and the same calls give the same run, event for event;
//! a failing test prints its seed and is replayed from it.
//!
//! The engine runs on it as an [`EngineNode`] (`sim/engine.rs`): the one driver of an endpoint
//! on the network, with the application of a test or a bench on top, and the calls that register
//! a link's connections with the endpoints at its ends ([`Network::bind`],
//! [`Network::handshake`], [`Network::accept_link`]). [`BackToBack`] joins two endpoints without
//! a network, for harnesses that drive one by hand (the fuzz targets).
//!
//! Compiled with the `sim` feature of atbus-core only.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use atbus_core::engine::transmit::{ConnectionId, Transmit};
//! use atbus_core::sim::{Driver, LinkProfile, Network};
//! use bytes::Bytes;
//!
//! /// Sends what it is told to, and keeps what it receives.
//! #[derive(Default)]
//! struct Toy { outbox: Vec<Transmit>, inbox: Vec<Bytes> }
//!
//! impl Driver for Toy {
//!     fn handle_input(&mut self, _: Instant, _: ConnectionId, data: Bytes) { self.inbox.push(data) }
//!     fn handle_connection_lost(&mut self, _: Instant, _: ConnectionId) {}
//!     fn handle_timeout(&mut self, _: Instant) {}
//!     fn poll_transmit(&mut self, _: Instant) -> Option<Transmit> { self.outbox.pop() }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! let mut net = Network::new(7);
//! let (a, b) = (net.add_node(Toy::default()), net.add_node(Toy::default()));
//! let link = net.connect(a, b, LinkProfile::perfect_datagram().with_delay(Duration::from_millis(5)));
//! let hello = Transmit { connection: link.a_connection, data: Bytes::from_static(b"hello") };
//! net.node_mut(a).outbox.push(hello);
//! net.poll_node(a);
//! net.run_for(Duration::from_secs(1));
//! assert_eq!(net.node(b).inbox, [Bytes::from_static(b"hello")]);
//! assert_eq!(net.stats(link).a_to_b.delivered, 1);
//! ```

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::transmit::{ConnectionId, Transmit};

mod engine;
mod link;
mod network;
mod stats;

pub use engine::{Application, BackToBack, End, EngineNode, params_of};
pub use link::{LinkKind, LinkProfile};
pub use network::{NETWORK_NUMBERED, Network};
pub use stats::{LinkStats, TransferStats};

/// A node the simulated network drives: the sans-IO interface of the engine (or of a test's toy
/// node). The network calls it with simulated time only.
pub trait Driver {
    /// Bytes that arrived on `connection` (one datagram, or a chunk of a stream connection's bytes in order).
    fn handle_input(&mut self, now: Instant, connection: ConnectionId, data: Bytes);
    /// The connection broke in a way the node notices at once (a reset stream socket).
    fn handle_connection_lost(&mut self, now: Instant, connection: ConnectionId);
    /// The time returned by `poll_timeout` has come.
    fn handle_timeout(&mut self, now: Instant);
    /// Bytes the node wants sent; called until None after every input, timeout or external action.
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;
    /// When the node next wants `handle_timeout`, if ever.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Lets one network drive nodes of different types (`Network<Box<dyn Driver>>`).
impl<T: Driver + ?Sized> Driver for Box<T> {
    fn handle_input(&mut self, now: Instant, connection: ConnectionId, data: Bytes) {
        (**self).handle_input(now, connection, data);
    }

    fn handle_connection_lost(&mut self, now: Instant, connection: ConnectionId) {
        (**self).handle_connection_lost(now, connection);
    }

    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        (**self).poll_transmit(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
}

/// A node of a [`Network`], as returned by [`Network::add_node`]. Nodes are numbered from 0 in
/// the order they were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIndex(usize);

impl NodeIndex {
    /// The node's number: how many nodes were added before it.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for NodeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// A link between two nodes, as returned by [`Network::connect`] and [`Network::link`]: which
/// nodes it joins and the connection id each of them knows it by (unique per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    index: usize,
    /// The first node.
    pub a: NodeIndex,
    /// The connection id of this link at node `a`.
    pub a_connection: ConnectionId,
    /// The second node.
    pub b: NodeIndex,
    /// The connection id of this link at node `b`.
    pub b_connection: ConnectionId,
}

/// Which direction(s) of a link a change applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// What node `a` sends to node `b`.
    AToB,
    /// What node `b` sends to node `a`.
    BToA,
    /// Both directions.
    Both,
}
