//! The transports that carry frames between nodes, chosen by the address scheme: listening,
//! connecting, and running a connection until it ends. Stream transports (`tcp://`, `unix://`)
//! share one connection loop (`stream`); `mem://` hands `Bytes` over in-process (`mem`); `udp://`
//! runs every peer over one socket (`udp`).

pub(crate) mod mem;
pub(crate) mod stream;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::address::Address;
use crate::engine::{ConnectionId, ConnectionParams};
use crate::runtime::shared::Shared;

/// A connection just opened or accepted, before the engine knows it.
pub(crate) enum Opened {
    Tcp(TcpStream),
    Unix(UnixStream),
    Mem(mem::MemPipe),
    Udp(Arc<udp::UdpHub>, SocketAddr),
}

impl Opened {
    /// What the engine needs to know of it.
    pub fn params(&self) -> ConnectionParams {
        match self {
            Opened::Udp(_, remote) => udp::params_for(*remote),
            _ => ConnectionParams::stream(),
        }
    }

    /// Runs the connection until it ends, in a `connection` span naming it.
    pub async fn run(self, shared: Arc<Shared>, id: ConnectionId, notify: Arc<Notify>) {
        let span = tracing::debug_span!("connection", id = id.0, scheme = self.scheme());
        tracing::Instrument::instrument(self.run_inner(shared, id, notify), span).await;
    }

    fn scheme(&self) -> &'static str {
        match self {
            Opened::Tcp(_) => "tcp",
            Opened::Unix(_) => "unix",
            Opened::Mem(_) => "mem",
            Opened::Udp(..) => "udp",
        }
    }

    async fn run_inner(self, shared: Arc<Shared>, id: ConnectionId, notify: Arc<Notify>) {
        match self {
            Opened::Tcp(socket) => {
                // Frames are batched by the engine and the writer: no Nagle delay on top.
                let _ = socket.set_nodelay(true);
                let (reader, writer) = socket.into_split();
                stream::run(shared, id, notify, reader, writer).await;
            }
            Opened::Unix(socket) => {
                let (reader, writer) = socket.into_split();
                stream::run(shared, id, notify, reader, writer).await;
            }
            Opened::Mem(pipe) => mem::run(shared, id, notify, pipe).await,
            Opened::Udp(hub, remote) => {
                hub.route(remote, id);
                hub.run_writer(shared, id, remote, notify).await;
            }
        }
    }
}

/// Why a transport could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The scheme's transport is not built into this runtime yet.
    #[error(
        "{scheme}:// is not supported by this runtime yet: use tcp://, udp://, unix:// or mem://"
    )]
    Unsupported {
        /// The scheme.
        scheme: &'static str,
    },
    /// Binding or connecting failed.
    #[error("{address}: {source}")]
    Io {
        /// The address.
        address: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

fn io_error(address: &Address) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        address: address.to_string(),
        source,
    }
}

/// A bound listener.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    Mem(mem::MemListener),
}

impl Listener {
    /// Binds `address`. A `unix://` path left by a process that is gone is replaced; one that
    /// a live listener answers on is refused.
    pub async fn bind(address: &Address) -> Result<(Self, Address), TransportError> {
        match address {
            Address::Tcp(hp) => {
                let listener = TcpListener::bind(hp.authority())
                    .await
                    .map_err(io_error(address))?;
                let port = listener.local_addr().map_err(io_error(address))?.port();
                Ok((Listener::Tcp(listener), address.with_port(port)))
            }
            Address::Unix(path) => {
                if path.exists() {
                    if UnixStream::connect(path).await.is_ok() {
                        return Err(TransportError::Io {
                            address: address.to_string(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::AddrInUse,
                                "a live listener already answers on this socket",
                            ),
                        });
                    }
                    // Stale: its listener is gone.
                    std::fs::remove_file(path).map_err(io_error(address))?;
                }
                let listener = UnixListener::bind(path).map_err(io_error(address))?;
                Ok((Listener::Unix(listener, path.clone()), address.clone()))
            }
            Address::Mem(name) => {
                let listener = mem::MemListener::bind(name).map_err(io_error(address))?;
                Ok((Listener::Mem(listener), address.clone()))
            }
            other => Err(TransportError::Unsupported {
                scheme: other.scheme(),
            }),
        }
    }

    /// The next connection, with a description of its remote end.
    pub async fn accept(&mut self) -> std::io::Result<(Opened, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (socket, remote) = listener.accept().await?;
                Ok((Opened::Tcp(socket), format!("tcp://{remote}")))
            }
            Listener::Unix(listener, path) => {
                let (socket, _) = listener.accept().await?;
                Ok((Opened::Unix(socket), format!("unix://{}", path.display())))
            }
            Listener::Mem(listener) => match listener.accept().await {
                Some(pipe) => Ok((Opened::Mem(pipe), "mem://".to_string())),
                None => Err(std::io::ErrorKind::BrokenPipe.into()),
            },
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            // The socket file goes with its listener.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a UDP socket on `address` and starts serving it: the node's UDP hub.
pub(crate) async fn bind_udp(
    shared: &Arc<Shared>,
    address: &Address,
) -> Result<Address, TransportError> {
    let Address::Udp(hp) = address else {
        return Err(TransportError::Unsupported {
            scheme: address.scheme(),
        });
    };
    let local = tokio::net::lookup_host(hp.authority())
        .await
        .map_err(io_error(address))?
        .next()
        .ok_or_else(|| TransportError::Io {
            address: address.to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    let socket = udp::bind(local).map_err(io_error(address))?;
    let port = socket.local_addr().map_err(io_error(address))?.port();
    let hub = udp::UdpHub::start(shared.clone(), socket, shared.stop.clone());
    shared
        .udp
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(hub);
    Ok(address.with_port(port))
}

/// The node's UDP hub for the family of `remote`: a listener's, or one opened now.
async fn udp_hub(shared: &Arc<Shared>, remote: SocketAddr) -> std::io::Result<Arc<udp::UdpHub>> {
    let existing = shared
        .udp
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|hub| hub.is_ipv6() == remote.is_ipv6())
        .cloned();
    if let Some(hub) = existing {
        return Ok(hub);
    }
    let any: SocketAddr = if remote.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = udp::bind(any)?;
    let hub = udp::UdpHub::start(shared.clone(), socket, shared.stop.clone());
    shared
        .udp
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(hub.clone());
    Ok(hub)
}

/// Opens a connection to `address`.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    address: &Address,
) -> Result<Opened, TransportError> {
    match address {
        Address::Udp(hp) => {
            let remote = tokio::net::lookup_host(hp.authority())
                .await
                .map_err(io_error(address))?
                .next()
                .ok_or_else(|| TransportError::Io {
                    address: address.to_string(),
                    source: std::io::ErrorKind::NotFound.into(),
                })?;
            let hub = udp_hub(shared, remote).await.map_err(io_error(address))?;
            Ok(Opened::Udp(hub, remote))
        }
        Address::Tcp(hp) => TcpStream::connect(hp.authority())
            .await
            .map(Opened::Tcp)
            .map_err(io_error(address)),
        Address::Unix(path) => UnixStream::connect(path)
            .await
            .map(Opened::Unix)
            .map_err(io_error(address)),
        Address::Mem(name) => mem::connect(name)
            .map(Opened::Mem)
            .map_err(io_error(address)),
        other => Err(TransportError::Unsupported {
            scheme: other.scheme(),
        }),
    }
}
