//! `udp://`: the engine's own reliability over UDP. One socket serves every peer: a receive loop
//! routes each datagram by its source address to a connection (a new address is a connection
//! the engine accepts, and must open with a hello), and each connection's writer sends what the
//! engine queued for it. The MTU follows the address family (548 bytes for IPv4, 1232 for IPv6),
//! except towards a loopback address, whose interface carries far larger datagrams.
//!
//! Datagrams waiting in the socket are read in batches and fed to the engine under one lock.
//!
//! The hub holds the node's [`NodeHandle`] (to register the connections it finds and hand over a
//! batch at once); each connection's writer holds that connection's [`ConnectionHandle`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;

use crate::engine::{ConnectionId, ConnectionParams};
use crate::runtime::handle::{ConnectionHandle, NodeHandle};

/// The largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams read from the socket before the engine is driven with them.
const RECEIVE_BATCH: usize = 64;
/// The datagram payload towards a loopback address (Linux's `lo` has an MTU of 64 KiB).
const LOOPBACK_MTU: usize = 16 * 1024;
/// Socket buffers asked for: a burst of a send window's datagrams must not overflow the
/// receiver's buffer (Linux caps the request at `net.core.rmem_max` / `wmem_max`).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// A UDP socket bound to `address`, with large buffers.
pub(crate) fn bind(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: a smaller buffer only means more loss under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// A UDP socket and the connections on it, by remote address.
pub(crate) struct UdpHub {
    pub socket: Arc<UdpSocket>,
    routes: Mutex<HashMap<SocketAddr, ConnectionId>>,
}

/// The engine's parameters for a datagram connection to `remote`.
pub(crate) fn params_for(remote: SocketAddr) -> ConnectionParams {
    if remote.ip().is_loopback() {
        return ConnectionParams::datagram_ipv6().with_mtu(LOOPBACK_MTU);
    }
    match remote {
        SocketAddr::V4(_) => ConnectionParams::datagram_ipv4(),
        SocketAddr::V6(_) => ConnectionParams::datagram_ipv6(),
    }
}

impl UdpHub {
    /// A hub on `socket`; its receive loop runs until the node stops.
    pub fn start(node: NodeHandle, socket: UdpSocket) -> Arc<Self> {
        let hub = Arc::new(Self {
            socket: Arc::new(socket),
            routes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(receive_loop(node, hub.clone()));
        hub
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, ConnectionId>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes datagrams from `remote` to connection `id`.
    pub fn route(&self, remote: SocketAddr, id: ConnectionId) {
        self.routes().insert(remote, id);
    }

    /// The address family of the socket.
    pub fn is_ipv6(&self) -> bool {
        self.socket
            .local_addr()
            .map(|address| address.is_ipv6())
            .unwrap_or(false)
    }

    /// Sends what the engine queues for the connection of `handle` to `remote`, until the engine
    /// is done with it.
    pub async fn run_writer(self: Arc<Self>, handle: ConnectionHandle, remote: SocketAddr) {
        let id = handle.id();
        while let Some(datagrams) = handle.transmits().await {
            for datagram in datagrams {
                // A datagram that cannot be sent is lost; the engine sends it again.
                if let Err(error) = self.socket.send_to(&datagram, remote).await {
                    tracing::debug!(%error, %remote, "udp send failed");
                }
            }
        }
        {
            let mut routes = self.routes();
            if routes.get(&remote) == Some(&id) {
                routes.remove(&remote);
            }
        }
        handle.finish();
    }
}

async fn receive_loop(node: NodeHandle, hub: Arc<UdpHub>) {
    let mut stop = node.stop();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut batch: Vec<(ConnectionId, Bytes)> = Vec::with_capacity(RECEIVE_BATCH);
    loop {
        let mut received = tokio::select! {
            received = hub.socket.recv_from(&mut buffer) => received,
            _ = stop.changed() => return,
        };
        // This datagram, then whatever else is already waiting, up to a batch.
        loop {
            match received {
                Ok((len, remote)) => {
                    let data = Bytes::copy_from_slice(&buffer[..len]);
                    if let Some(id) = route_or_accept(&node, &hub, remote) {
                        batch.push((id, data));
                    }
                }
                // ICMP errors of earlier sends surface here on some systems: keep reading.
                Err(error) if error.kind() != std::io::ErrorKind::WouldBlock => {
                    tracing::debug!(%error, "udp receive failed");
                }
                Err(_) => break,
            }
            if batch.len() >= RECEIVE_BATCH {
                break;
            }
            received = hub.socket.try_recv_from(&mut buffer);
        }
        if batch.is_empty() {
            continue;
        }
        node.deliver_batch(&mut batch);
    }
}

/// The connection datagrams from `remote` belong to. A new address is a connection the engine
/// accepts (its first datagram must hold a hello, or the engine forgets it at once), with a
/// writer task of its own; `None` when the node is shutting down or the engine refuses it.
fn route_or_accept(
    node: &NodeHandle,
    hub: &Arc<UdpHub>,
    remote: SocketAddr,
) -> Option<ConnectionId> {
    if let Some(id) = hub.routes().get(&remote).copied() {
        return Some(id);
    }
    let handle = node
        .accept(format!("udp://{remote}"), params_for(remote))
        .ok()?;
    let id = handle.id();
    hub.route(remote, id);
    tokio::spawn(hub.clone().run_writer(handle, remote));
    Some(id)
}
