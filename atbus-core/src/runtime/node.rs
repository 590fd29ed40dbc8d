//! [`Node`]: a running atbus node. Built with [`Node::builder`], it listens, keeps connections to
//! its peers, and lets the application send, receive, make requests and answer them.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use atbus_proto::protocol::PacketOptions;
use bytes::Bytes;
use tokio::sync::{broadcast, oneshot, watch};

use super::dialer::Dialer;
use super::error::NodeError;
use super::message::{Message, NodeEvent};
use super::metadata::NodeMetadata;
use super::shared::Shared;
use super::traffic::TrafficCounters;
use super::transport::{TransportContext, TransportCounters};
use crate::address::Address;
use crate::engine::{CloseReason, ConnectionId, EngineStats, MessageMeta};

/// The stream `send` and `request` use when none is given.
pub const DEFAULT_STREAM: i64 = 0;

/// What the handles of one node share.
pub(super) struct Inner {
    pub name: String,
    pub metadata: NodeMetadata,
    pub shared: Arc<Shared>,
    pub context: Arc<TransportContext>,
    pub dialer: Dialer,
    pub local: Vec<Address>,
    pub stop: watch::Sender<bool>,
}

/// One of the node's connections, from [`Node::connection_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnectionId,
    /// Where it goes (the address dialed, or the remote end of an accepted one).
    pub remote: String,
    /// The peer, once authenticated.
    pub peer: Option<String>,
    /// Its smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// A datagram connection's congestion window and the units in flight on it.
    pub congestion_window: Option<(u64, u64)>,
}

/// A running node: a cheap handle, cloned freely between tasks.
///
/// ```
/// use atbus_core::engine::Token;
/// use atbus_core::runtime::Node;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let token = Token::new("a shared secret of 32 bytes!!!!!")?;
/// let server = Node::builder()
///     .name("echo")
///     .token(token.clone())
///     .listen("tcp://127.0.0.1:0")
///     .start()
///     .await?;
/// let client = Node::builder()
///     .name("client")
///     .token(token)
///     .peer("echo", [server.local_addresses()[0].to_string()])
///     .start()
///     .await?;
///
/// client.send("echo", "hello").await?;
/// let message = server.recv().await.expect("a message");
/// assert_eq!((message.source.as_str(), &message.data[..]), ("client", &b"hello"[..]));
/// client.shutdown().await;
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

impl Node {
    // `Node::builder` is in `builder.rs`, which makes nodes: this module does not know the builder.

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The peers with a live connection to this node, by name.
    pub fn reachable_peers(&self) -> Vec<String> {
        let state = self.inner.shared.lock();
        state
            .endpoint
            .reachable_peers()
            .map(str::to_string)
            .collect()
    }

    /// The relays this node has a live connection to, by name: discovery
    /// ([`discovery`](Self::discovery)) asks one of them.
    pub fn relays(&self) -> Vec<String> {
        let state = self.inner.shared.lock();
        state
            .endpoint
            .connected_relays()
            .map(str::to_string)
            .collect()
    }

    /// Relays: the nodes other relays offered, as (node, through which relay, hops).
    pub fn relay_routes(&self) -> Vec<(String, String, u32)> {
        self.inner.shared.lock().endpoint.relay_routes()
    }

    /// Relays: bytes of forwarded frames waiting for slow connections.
    pub fn forward_queued_bytes(&self) -> usize {
        self.inner.shared.lock().endpoint.forward_queued_bytes()
    }

    /// The node's namespace, labels and annotations.
    pub fn metadata(&self) -> &NodeMetadata {
        &self.inner.metadata
    }

    /// Keeps `peer` connected from now on, one connection per address (added to any it had).
    /// Fails on an address that does not parse, or one this node cannot dial (a `tls://` or
    /// `quic://` peer without a CA, a node with no token or credential).
    pub fn add_peer<A: AsRef<str>>(
        &self,
        peer: &str,
        addresses: impl IntoIterator<Item = A>,
    ) -> Result<(), NodeError> {
        let addresses = self.dialable(addresses)?;
        self.inner.dialer.dial(peer, &addresses);
        Ok(())
    }

    /// Dials `peer` at `addresses` when the application first sends to it; see
    /// [`NodeBuilder::peer_on_demand`](crate::runtime::NodeBuilder::peer_on_demand).
    pub fn add_peer_on_demand<A: AsRef<str>>(
        &self,
        peer: &str,
        addresses: impl IntoIterator<Item = A>,
    ) -> Result<(), NodeError> {
        let addresses = self.dialable(addresses)?;
        self.inner.dialer.dial_on_demand(peer, addresses);
        Ok(())
    }

    /// The peers added on demand that nothing was sent to yet (they are not dialed).
    pub fn peers_waiting_for_demand(&self) -> Vec<String> {
        self.inner.dialer.waiting_peers()
    }

    fn dialable<A: AsRef<str>>(
        &self,
        addresses: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Address>, NodeError> {
        if !self.inner.dialer.can_dial() {
            return Err(NodeError::Config(
                "connecting to peers needs a token or a credential: call .token(…) on the builder"
                    .into(),
            ));
        }
        let mut parsed = Vec::new();
        for address in addresses {
            let address: Address = address.as_ref().parse()?;
            self.inner.context.check_dial(&address)?;
            parsed.push(address);
        }
        Ok(parsed)
    }

    /// The addresses the node listens on, with the ports the system chose for port 0.
    pub fn local_addresses(&self) -> &[Address] {
        &self.inner.local
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.inner.shared.lock().endpoint.stats().clone()
    }

    /// Connections and bytes by transport (`tcp`, `udp`, …), for those that carried any.
    pub fn traffic(&self) -> std::collections::BTreeMap<&'static str, TrafficCounters> {
        self.inner.shared.lock().traffic.snapshot()
    }

    /// The transports' counters: TLS and QUIC handshakes, QUIC 0-RTT tried and taken.
    pub fn transport_counters(&self) -> TransportCounters {
        self.inner.context.counters.snapshot()
    }

    /// Bytes the node holds for the application: sent and not yet acknowledged, or received and
    /// not yet taken. Bounded by the engine's send windows and receive budget.
    pub fn memory(&self) -> usize {
        let state = self.inner.shared.lock();
        state.endpoint.memory() + state.inbox_bytes
    }

    /// The peers the engine holds state for: those connected, and those that left with
    /// something still to do or only a few seconds ago (then their state is dropped).
    pub fn peer_count(&self) -> usize {
        self.inner.shared.lock().endpoint.peer_count()
    }

    /// The peers that left and whose tombstone the engine keeps (where their streams stood,
    /// should they come back).
    pub fn departed_peers(&self) -> usize {
        self.inner.shared.lock().endpoint.departed_peers()
    }

    /// The node's connections: id, remote address, and the peer once authenticated.
    pub fn connections(&self) -> Vec<(ConnectionId, String, Option<String>)> {
        let state = self.inner.shared.lock();
        let mut connections: Vec<_> = state
            .links
            .iter()
            .map(|(&id, link)| {
                let peer = state.endpoint.peer_identity(id).map(|i| i.name.clone());
                (id, link.remote.clone(), peer)
            })
            .collect();
        connections.sort();
        connections
    }

    /// The node's connections with their round-trip times and, for datagram connections,
    /// congestion windows.
    pub fn connection_info(&self) -> Vec<ConnectionInfo> {
        let state = self.inner.shared.lock();
        let mut connections: Vec<_> = state
            .links
            .iter()
            .map(|(&id, link)| ConnectionInfo {
                id,
                remote: link.remote.clone(),
                peer: state.endpoint.peer_identity(id).map(|i| i.name.clone()),
                rtt: state.endpoint.rtt(id),
                congestion_window: state.endpoint.congestion_window(id),
            })
            .collect();
        connections.sort_by_key(|info| info.id);
        connections
    }

    /// Closes connection `id` (see [`connections`](Self::connections)) on purpose: the peer is
    /// told why, what was in flight on it goes over the peer's other connections, and a dialed
    /// connection is dialed again. False when there is no such connection.
    pub fn close_connection(&self, id: ConnectionId, reason: &str) -> bool {
        self.inner.shared.with(|state| {
            if !state.links.contains_key(&id) {
                return false;
            }
            state
                .endpoint
                .close_connection(id, CloseReason::shutdown(reason));
            true
        })
    }

    /// Peer and connection events, from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Queues `data` to `peer` on the default stream, waiting while the send window is full.
    pub async fn send(&self, peer: &str, data: impl Into<Bytes>) -> Result<(), NodeError> {
        self.send_on(peer, DEFAULT_STREAM, data.into(), MessageMeta::default())
            .await
    }

    /// Queues `data` to `peer` on the default stream, or returns
    /// [`NodeError::WouldBlock`] at once when the send window is full.
    pub fn try_send(&self, peer: &str, data: impl Into<Bytes>) -> Result<(), NodeError> {
        self.try_send_on(peer, DEFAULT_STREAM, data.into(), MessageMeta::default())
    }

    /// Queues a message with its metadata on `stream_id`, waiting while the window is full.
    pub async fn send_on(
        &self,
        peer: &str,
        stream_id: i64,
        data: Bytes,
        meta: MessageMeta,
    ) -> Result<(), NodeError> {
        loop {
            let mut writable = pin!(self.inner.shared.writable.notified());
            writable.as_mut().enable();
            match self.try_send_on(peer, stream_id, data.clone(), meta.clone()) {
                Err(NodeError::WouldBlock { .. }) => writable.await,
                other => return other,
            }
        }
    }

    /// Queues a message with its metadata on `stream_id`, or returns WouldBlock.
    pub fn try_send_on(
        &self,
        peer: &str,
        stream_id: i64,
        data: Bytes,
        meta: MessageMeta,
    ) -> Result<(), NodeError> {
        self.inner.dialer.on_send(peer);
        self.inner.shared.with(|state| {
            if state.shutting_down {
                return Err(NodeError::Shutdown);
            }
            state
                .endpoint
                .send(peer, stream_id, data, meta)
                .map(drop)
                .map_err(NodeError::from)
        })
    }

    /// A handle on stream `stream_id` to `peer`: its own order and flow control, independent of
    /// the other streams.
    pub fn stream(&self, peer: &str, stream_id: i64) -> Result<NodeStream, NodeError> {
        if stream_id < 0 {
            return Err(NodeError::Send(crate::engine::SendError::ReservedStream {
                stream_id,
            }));
        }
        Ok(NodeStream {
            node: self.clone(),
            peer: peer.to_string(),
            stream_id,
        })
    }

    /// The next message, waiting for one; `None` once the node has shut down.
    pub async fn recv(&self) -> Option<Message> {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let mut arrived = pin!(self.inner.shared.inbox.notified());
            arrived.as_mut().enable();
            // Taking a message makes room: the engine's next messages move up.
            let message = self.inner.shared.with(|state| {
                let message = state.inbox.pop_front()?;
                state.inbox_bytes -= message.data.len();
                Some(message)
            });
            if let Some(message) = message {
                return Some(message);
            }
            if *stop.borrow() {
                return None;
            }
            tokio::select! {
                () = arrived => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sends `data` to `peer` as a request and waits up to `timeout` for the reply, which the
    /// peer sends with [`Node::reply`]. Replies are matched by a request id carried in the
    /// packet, so concurrent requests never get each other's replies.
    pub async fn request(
        &self,
        peer: &str,
        data: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, NodeError> {
        self.request_typed(peer, data.into(), timeout, 0).await
    }

    /// [`request`](Self::request) with the packet type `packet_type` (the bus's own requests,
    /// such as discovery, are COMMAND packets).
    pub(crate) async fn request_typed(
        &self,
        peer: &str,
        data: Bytes,
        timeout: Duration,
        packet_type: i32,
    ) -> Result<Message, NodeError> {
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut state = self.inner.shared.lock();
            let id = state.next_request_id();
            state.requests.insert(id, (peer.to_string(), sender));
            id
        };
        let meta = MessageMeta {
            packet_type,
            options: Some(PacketOptions {
                request_id: id as i64,
                ..Default::default()
            }),
            ..Default::default()
        };
        let forget = || {
            self.inner.shared.lock().requests.remove(&id);
        };
        let sent =
            tokio::time::timeout(timeout, self.send_on(peer, DEFAULT_STREAM, data, meta)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                forget();
                return Err(error);
            }
            Err(_) => {
                forget();
                return Err(NodeError::Timeout {
                    peer: peer.to_string(),
                    after: timeout,
                });
            }
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(NodeError::Shutdown),
            Err(_) => {
                forget();
                Err(NodeError::Timeout {
                    peer: peer.to_string(),
                    after: timeout,
                })
            }
        }
    }

    /// Answers `request` (a message with a [`request_id`](Message::request_id)) with `data`, of
    /// the request's packet type.
    pub async fn reply(&self, request: &Message, data: impl Into<Bytes>) -> Result<(), NodeError> {
        let Some(id) = request.request_id() else {
            return Err(NodeError::Config(format!(
                "the message from {} on stream {} is not a request: send to it instead",
                request.source, request.stream_id
            )));
        };
        let meta = MessageMeta {
            packet_type: request.meta.packet_type,
            options: Some(PacketOptions {
                reply_to: id as i64,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.send_on(&request.source, request.stream_id, data.into(), meta)
            .await
    }

    /// Shuts the node down within 5 seconds: see [`shutdown_within`](Self::shutdown_within).
    pub async fn shutdown(&self) {
        self.shutdown_within(Duration::from_secs(5)).await;
    }

    /// Stops accepting connections and sends, waits until everything sent is acknowledged (or
    /// `deadline` passes), then closes every connection with SHUTDOWN.
    pub async fn shutdown_within(&self, deadline: Duration) {
        let shared = &self.inner.shared;
        let until = tokio::time::Instant::now() + deadline;
        shared.with(|state| state.shutting_down = true);
        // Flush: wait for the acknowledgements of what is in flight.
        while shared.lock().endpoint.unacknowledged() > 0 && tokio::time::Instant::now() < until {
            let writable = shared.writable.notified();
            let _ = tokio::time::timeout(Duration::from_millis(10), writable).await;
        }
        let _ = self.inner.stop.send(true);
        shared.with(|state| {
            let ids: Vec<_> = state.links.keys().copied().collect();
            for id in ids {
                state
                    .endpoint
                    .close_connection(id, CloseReason::shutdown("the node shuts down"));
            }
        });
        // The writers send the close frames and end their connections.
        while !shared.lock().links.is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // QUIC connections close once their last bytes are acknowledged; then the endpoints.
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        self.inner
            .context
            .quic
            .close(left.max(Duration::from_millis(100)))
            .await;
        shared.inbox.notify_waiters();
    }
}

/// One stream to one peer, from [`Node::stream`]: messages on it arrive in order, and a full
/// window on it makes [`send`](Self::send) wait without holding up the node's other streams.
#[derive(Debug, Clone)]
pub struct NodeStream {
    node: Node,
    peer: String,
    stream_id: i64,
}

impl NodeStream {
    /// The peer.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The stream's id.
    pub fn id(&self) -> i64 {
        self.stream_id
    }

    /// Queues `data`, waiting while the stream's or the peer's window is full.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), NodeError> {
        self.node
            .send_on(
                &self.peer,
                self.stream_id,
                data.into(),
                MessageMeta::default(),
            )
            .await
    }

    /// Queues `data`, or returns [`NodeError::WouldBlock`] at once when a window is full.
    pub fn try_send(&self, data: impl Into<Bytes>) -> Result<(), NodeError> {
        self.node.try_send_on(
            &self.peer,
            self.stream_id,
            data.into(),
            MessageMeta::default(),
        )
    }

    /// Ends this direction of the stream after what is queued; the peer gets
    /// [`NodeEvent::StreamClosed`] with `reason` once it has read everything before it.
    pub fn finish(&self, reason: &str) -> Result<(), NodeError> {
        self.node.inner.shared.with(|state| {
            state
                .endpoint
                .finish(&self.peer, self.stream_id, CloseReason::shutdown(reason))
                .map_err(NodeError::from)
        })
    }
}
