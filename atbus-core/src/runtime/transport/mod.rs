//! The transports that carry frames between nodes, chosen by the address scheme: listening,
//! connecting, and running a connection until it ends. Stream transports (`tcp://`, `unix://`,
//! `tls://` and `quic://` once their handshakes are done) share one connection loop (`stream`);
//! `mem://` hands `Bytes` over in-process (`mem`); `udp://` runs every peer over one socket
//! (`udp`). `tls` and `quic` hold what those two add (TLS over TCP, quinn endpoints); their
//! settings are [`TlsSettings`], their counters [`TransportCounters`].
//!
//! A transport sees nothing of the node but the handles it is given (`runtime/handle.rs`): a
//! connection's task holds its `ConnectionHandle` (deliver bytes, take transmits, report
//! closed), and the UDP hub the `NodeHandle` (register the connections it finds).

mod counters;
pub(crate) mod mem;
pub(crate) mod quic;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;

pub(crate) use counters::Counters;
pub use counters::TransportCounters;

pub use crate::runtime::error::TransportError;

use crate::address::Address;
use crate::engine::ConnectionParams;
use crate::runtime::error::NodeError;
use crate::runtime::handle::{ConnectionHandle, NodeHandle};
use crate::runtime::tls_config::{LoadedTls, TlsError, TlsSettings};

/// How long an accepted connection has to complete its TLS or QUIC handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transports of one node share: its TLS configurations, its quinn endpoints, its UDP
/// sockets and its counters.
pub(crate) struct TransportContext {
    pub tls: Option<LoadedTls>,
    pub quic: quic::QuicEndpoints,
    /// The node's UDP sockets: the listeners', and one opened for dialing if needed.
    udp: Mutex<Vec<Arc<udp::UdpHub>>>,
    pub counters: Arc<Counters>,
}

impl TransportContext {
    /// The context of a node with `tls` settings loaded (or none).
    fn new(mut tls: Option<LoadedTls>) -> Result<Self, TlsError> {
        let quic = quic::QuicEndpoints::new(tls.as_mut())?;
        Ok(Self {
            tls,
            quic,
            udp: Mutex::new(Vec::new()),
            counters: Arc::default(),
        })
    }

    /// Loads the TLS settings, and checks that every `tls://` and `quic://` address has what it
    /// needs: listening, a certificate and key; dialing, a CA.
    pub fn for_node<'a>(
        settings: Option<&TlsSettings>,
        listen: &[Address],
        mut peers: impl Iterator<Item = &'a Address>,
    ) -> Result<Self, NodeError> {
        let secure = |address: &&Address| matches!(address, Address::Tls(_) | Address::Quic(_));
        let listening = listen.iter().find(secure);
        let dialing = peers.find(secure);
        let configs = match settings {
            Some(settings) => Some(settings.load().map_err(TransportError::from)?),
            None => None,
        };
        match &configs {
            None => {
                if let Some(address) = listening.or(dialing) {
                    return Err(NodeError::Config(format!(
                        "{address} needs TLS settings: call .tls(TlsSettings::new()…) on the builder \
                         (YAML: a tls: section with cert, key and ca)"
                    )));
                }
            }
            Some(configs) => {
                if let Some(address) = listening.filter(|_| configs.tls_server.is_none()) {
                    return Err(NodeError::Config(format!(
                        "listening on {address} needs a certificate and its key: \
                         TlsSettings::identity_files(…) (YAML: tls.cert and tls.key)"
                    )));
                }
                if let Some(address) = dialing.filter(|_| configs.tls_client.is_none()) {
                    return Err(NodeError::Config(format!(
                        "dialing {address} needs a CA to verify the server's certificate: \
                         TlsSettings::ca_file(…) (YAML: tls.ca)"
                    )));
                }
            }
        }
        Self::new(configs).map_err(|error| TransportError::from(error).into())
    }

    fn tls(&self, address: &Address) -> Result<&LoadedTls, TransportError> {
        self.tls.as_ref().ok_or_else(|| TransportError::NoTls {
            address: address.to_string(),
        })
    }

    /// Whether this node can dial `address`: a `tls://` or `quic://` peer needs a CA to verify
    /// it (peers added after start are checked here, those of the builder by `for_node`).
    pub fn check_dial(&self, address: &Address) -> Result<(), NodeError> {
        let secure = matches!(address, Address::Tls(_) | Address::Quic(_));
        if secure && self.tls.as_ref().is_none_or(|tls| tls.tls_client.is_none()) {
            return Err(NodeError::Config(format!(
                "dialing {address} needs TLS settings with a CA to verify the server's \
                 certificate: TlsSettings::ca_file(…) on the builder (YAML: tls.ca)"
            )));
        }
        Ok(())
    }
}

/// A connection just opened or accepted, before the engine knows it.
pub(crate) enum Opened {
    Tcp(TcpStream),
    Unix(UnixStream),
    Mem(mem::MemPipe),
    Udp(Arc<udp::UdpHub>, SocketAddr),
    Tls(Box<tls::TlsStream>),
    Quic(Box<quic::QuicLink>),
}

impl Opened {
    /// What the engine needs to know of it.
    pub fn params(&self) -> ConnectionParams {
        match self {
            Opened::Udp(_, remote) => udp::params_for(*remote),
            _ => ConnectionParams::stream(),
        }
    }

    /// Runs the connection of `handle` until it ends, in a `connection` span naming it. True
    /// when it should be dialed again at once (a QUIC server refused 0-RTT data), without the
    /// backoff.
    pub async fn run(self, handle: ConnectionHandle) -> bool {
        let span = tracing::debug_span!("connection", id = handle.id().0, scheme = self.scheme());
        tracing::Instrument::instrument(self.run_inner(handle), span).await
    }

    fn scheme(&self) -> &'static str {
        match self {
            Opened::Tcp(_) => "tcp",
            Opened::Unix(_) => "unix",
            Opened::Mem(_) => "mem",
            Opened::Udp(..) => "udp",
            Opened::Tls(_) => "tls",
            Opened::Quic(_) => "quic",
        }
    }

    async fn run_inner(self, handle: ConnectionHandle) -> bool {
        match self {
            Opened::Tcp(socket) => {
                // Frames are batched by the engine and the writer: no Nagle delay on top.
                let _ = socket.set_nodelay(true);
                let (reader, writer) = socket.into_split();
                stream::run(handle, reader, writer).await;
            }
            Opened::Unix(socket) => {
                let (reader, writer) = socket.into_split();
                stream::run(handle, reader, writer).await;
            }
            Opened::Mem(pipe) => mem::run(handle, pipe).await,
            Opened::Udp(hub, remote) => {
                hub.route(remote, handle.id());
                hub.run_writer(handle, remote).await;
            }
            Opened::Tls(stream) => {
                let (reader, writer) = tokio::io::split(*stream);
                stream::run(handle, reader, writer).await;
            }
            Opened::Quic(link) => return link.run(handle).await,
        }
        false
    }
}

fn io_error(address: &Address) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        address: address.to_string(),
        source,
    }
}

fn handshake_error(address: &Address) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Handshake {
        address: address.to_string(),
        source,
    }
}

/// A bound listener.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    Mem(mem::MemListener),
    Tls(TcpListener, TlsAcceptor),
    Quic(quinn::Endpoint),
}

/// A connection a listener took, with what is left of its opening (a TLS or QUIC handshake) to
/// be done in its own task.
pub(crate) enum Accepted {
    Ready(Opened),
    Tls(TcpStream, TlsAcceptor),
    Quic(Box<quinn::Incoming>),
}

impl Accepted {
    /// Completes the opening within [`HANDSHAKE_TIMEOUT`].
    pub async fn open(self, context: &TransportContext) -> std::io::Result<Opened> {
        let opening = async {
            match self {
                Accepted::Ready(opened) => Ok(opened),
                Accepted::Tls(socket, acceptor) => tls::accept(acceptor, socket, &context.counters)
                    .await
                    .map(|stream| Opened::Tls(Box::new(stream))),
                Accepted::Quic(incoming) => context
                    .quic
                    .accept(*incoming, &context.counters)
                    .await
                    .map(|link| Opened::Quic(Box::new(link))),
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, opening)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }
}
impl Listener {
    /// Binds `address`. A `unix://` path left by a process that is gone is replaced; one that
    /// a live listener answers on is refused.
    pub async fn bind(
        address: &Address,
        context: &TransportContext,
    ) -> Result<(Self, Address), TransportError> {
        match address {
            Address::Tls(hp) => {
                let acceptor = tls::acceptor(context.tls(address)?).ok_or_else(|| {
                    io_error(address)(std::io::Error::other(
                        "listening on tls:// needs a certificate and its key",
                    ))
                })?;
                let listener = TcpListener::bind(hp.authority())
                    .await
                    .map_err(io_error(address))?;
                let port = listener.local_addr().map_err(io_error(address))?.port();
                Ok((Listener::Tls(listener, acceptor), address.with_port(port)))
            }
            Address::Quic(hp) => {
                context.tls(address)?;
                let local = resolve(address, hp).await?;
                let endpoint = context.quic.bind(local).map_err(io_error(address))?;
                let port = endpoint.local_addr().map_err(io_error(address))?.port();
                Ok((Listener::Quic(endpoint), address.with_port(port)))
            }
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
    pub async fn accept(&mut self) -> std::io::Result<(Accepted, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (socket, remote) = listener.accept().await?;
                Ok((
                    Accepted::Ready(Opened::Tcp(socket)),
                    format!("tcp://{remote}"),
                ))
            }
            Listener::Unix(listener, path) => {
                let (socket, _) = listener.accept().await?;
                let opened = Opened::Unix(socket);
                Ok((
                    Accepted::Ready(opened),
                    format!("unix://{}", path.display()),
                ))
            }
            Listener::Mem(listener) => match listener.accept().await {
                Some(pipe) => Ok((Accepted::Ready(Opened::Mem(pipe)), "mem://".to_string())),
                None => Err(std::io::ErrorKind::BrokenPipe.into()),
            },
            Listener::Tls(listener, acceptor) => {
                let (socket, remote) = listener.accept().await?;
                Ok((
                    Accepted::Tls(socket, acceptor.clone()),
                    format!("tls://{remote}"),
                ))
            }
            Listener::Quic(endpoint) => match endpoint.accept().await {
                Some(incoming) => {
                    let remote = format!("quic://{}", incoming.remote_address());
                    Ok((Accepted::Quic(Box::new(incoming)), remote))
                }
                // The endpoint was closed.
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
    node: &NodeHandle,
    context: &TransportContext,
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
    let hub = udp::UdpHub::start(node.clone(), socket);
    context.udp_hubs().push(hub);
    Ok(address.with_port(port))
}

impl TransportContext {
    fn udp_hubs(&self) -> std::sync::MutexGuard<'_, Vec<Arc<udp::UdpHub>>> {
        self.udp.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's UDP hub for the family of `remote`: a listener's, or one opened now.
async fn udp_hub(
    node: &NodeHandle,
    context: &TransportContext,
    remote: SocketAddr,
) -> std::io::Result<Arc<udp::UdpHub>> {
    let existing = context
        .udp_hubs()
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
    let hub = udp::UdpHub::start(node.clone(), socket);
    context.udp_hubs().push(hub.clone());
    Ok(hub)
}

/// The first socket address `hp` resolves to.
async fn resolve(
    address: &Address,
    hp: &crate::address::HostPort,
) -> Result<SocketAddr, TransportError> {
    tokio::net::lookup_host(hp.authority())
        .await
        .map_err(io_error(address))?
        .next()
        .ok_or_else(|| TransportError::Io {
            address: address.to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        })
}

/// Opens a connection to `address`; for `tls://` and `quic://`, handshake included.
pub(crate) async fn connect(
    node: &NodeHandle,
    context: &TransportContext,
    address: &Address,
) -> Result<Opened, TransportError> {
    match address {
        Address::Tls(hp) => {
            let configs = context.tls(address)?;
            let stream = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                tls::connect(configs, hp, &context.counters),
            )
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            match stream {
                Ok(stream) => Ok(Opened::Tls(Box::new(stream))),
                // Not even a TCP connection: the peer is down, not refused.
                Err(error)
                    if error
                        .get_ref()
                        .is_none_or(|inner| !inner.is::<rustls::Error>()) =>
                {
                    Err(io_error(address)(error))
                }
                Err(error) => Err(handshake_error(address)(error)),
            }
        }
        Address::Quic(hp) => {
            let configs = context.tls(address)?;
            let name = configs.server_name(&hp.host);
            tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                context.quic.connect(hp, name, &context.counters),
            )
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            .map(|link| Opened::Quic(Box::new(link)))
            .map_err(|error| {
                // No answer at all: the peer is down, not refused.
                let silent = error.kind() == std::io::ErrorKind::TimedOut
                    || error
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<quinn::ConnectionError>())
                        .is_some_and(|inner| *inner == quinn::ConnectionError::TimedOut);
                if silent {
                    io_error(address)(error)
                } else {
                    handshake_error(address)(error)
                }
            })
        }
        Address::Udp(hp) => {
            let remote = tokio::net::lookup_host(hp.authority())
                .await
                .map_err(io_error(address))?
                .next()
                .ok_or_else(|| TransportError::Io {
                    address: address.to_string(),
                    source: std::io::ErrorKind::NotFound.into(),
                })?;
            let hub = udp_hub(node, context, remote)
                .await
                .map_err(io_error(address))?;
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
    }
}
