//! The handles a transport holds: the seam between the code that moves bytes over sockets
//! (`transport/`) and the node's core (`shared`, the engine behind its lock).
//!
//! A transport task never sees the node's state. For each connection it runs, it holds a
//! [`ConnectionHandle`]: it hands over what arrived ([`deliver`](ConnectionHandle::deliver)),
//! takes what the engine wants written ([`transmits`](ConnectionHandle::transmits)), reports the
//! connection broken ([`lost`](ConnectionHandle::lost)) and, when its task ends, gives the
//! connection back ([`finish`](ConnectionHandle::finish)). A transport that finds connections on
//! its own (UDP: a datagram from a new address) also holds a [`NodeHandle`], to register them and
//! to hand over many datagrams under one lock.
//!
//! Who holds what: the node's core (`builder`, `node`, `tasks`, `dialer`) holds `Arc<Shared>` and
//! makes the handles; `tasks` registers each connection it accepts or dials with the engine
//! ([`NodeHandle::accept`], [`NodeHandle::connect`]) and passes the handle to the transport's task.
//! A handle is two `Arc`s and an id: cloning it is cheap, and each call is the same lock and
//! the same work as before it existed (no task hop, no channel: the task that reads a socket
//! drives the engine itself).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::shared::Shared;
use crate::engine::{ConnectOptions, ConnectionError, ConnectionId, ConnectionParams};

/// What a transport holds for one connection: deliver bytes, take transmits, report closed.
#[derive(Clone)]
pub(crate) struct ConnectionHandle {
    shared: Arc<Shared>,
    id: ConnectionId,
    /// Wakes the connection's writer when the engine queued something for it.
    notify: Arc<Notify>,
}

impl ConnectionHandle {
    /// The engine's id of the connection (for logs and routing tables).
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Hands `data`, received on the connection, to the engine (which is then driven: its
    /// transmits are queued and its events delivered before this returns).
    pub fn deliver(&self, data: Bytes) {
        self.shared.input(self.id, data);
    }

    /// The frames the engine queued for the connection, once there are some; `None` once the
    /// engine is done with it and everything queued was taken (write nothing more, close).
    pub async fn transmits(&self) -> Option<Vec<Bytes>> {
        loop {
            let (frames, closing) = self.shared.take_queue(self.id);
            if !frames.is_empty() {
                return Some(frames);
            }
            if closing {
                return None;
            }
            self.notify.notified().await;
        }
    }

    /// The transport saw the connection break (end of stream, a failed read or write): the
    /// engine resends what was in flight on it over the peer's other connections.
    pub fn lost(&self) {
        self.shared
            .with(|state| state.endpoint.connection_lost(Instant::now(), self.id));
    }

    /// The transport's task for the connection ends: its queue is forgotten.
    pub fn finish(self) {
        self.shared.lock().remove_link(self.id);
    }
}

/// Why a connection was not registered.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The node is shutting down.
    ShuttingDown,
    /// The engine refused it.
    Engine(ConnectionError),
}

/// What the node's tasks and a transport that finds connections on its own hold of the node:
/// register connections, hand over input of many connections at once, learn that the node stops.
#[derive(Clone)]
pub(crate) struct NodeHandle {
    shared: Arc<Shared>,
}

impl NodeHandle {
    /// A handle on the node behind `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Registers a connection the node accepted from `remote` (the accepting side of the
    /// handshake).
    pub fn accept(
        &self,
        remote: String,
        params: ConnectionParams,
    ) -> Result<ConnectionHandle, Refused> {
        self.register(remote, |endpoint| endpoint.accept(Instant::now(), params))
    }

    /// Registers a connection the node dialed to `remote` (the connecting side of the handshake,
    /// proving what `options` say).
    pub fn connect(
        &self,
        remote: String,
        params: ConnectionParams,
        options: ConnectOptions,
    ) -> Result<ConnectionHandle, Refused> {
        self.register(remote, |endpoint| {
            endpoint.connect(Instant::now(), params, options)
        })
    }

    fn register(
        &self,
        remote: String,
        open: impl FnOnce(&mut crate::engine::Endpoint) -> Result<ConnectionId, ConnectionError>,
    ) -> Result<ConnectionHandle, Refused> {
        let (id, notify) = self.shared.with(|state| {
            if state.shutting_down {
                return Err(Refused::ShuttingDown);
            }
            let id = open(&mut state.endpoint).map_err(Refused::Engine)?;
            Ok((id, state.add_link(id, remote)))
        })?;
        Ok(ConnectionHandle {
            shared: self.shared.clone(),
            id,
            notify,
        })
    }

    /// Hands every `(connection, data)` of `batch` to the engine under one lock, then drives it
    /// once; `batch` is left empty.
    pub fn deliver_batch(&self, batch: &mut Vec<(ConnectionId, Bytes)>) {
        self.shared.with(|state| {
            let now = Instant::now();
            for (id, data) in batch.drain(..) {
                state.input(now, id, data);
            }
        });
    }

    /// Becomes true when the node stops.
    pub fn stop(&self) -> watch::Receiver<bool> {
        self.shared.stop.clone()
    }
}
