//! `quic://` (quinn, TLS 1.3 built in): one QUIC connection per atbus connection, carrying the
//! framed bytes on one bidirectional stream that the dialer opens, so the connection runs like any
//! byte stream (`stream::run`), atbus handshake included.
//!
//! A node has one quinn endpoint per `quic://` listener, and one client endpoint per address
//! family for dialing, reused by every dial so that the rustls session cache lets later
//! connections resume: with a session ticket the dialer sends its first bytes as 0-RTT data
//! (replays of those are caught by the atbus handshake's nonce cache), and falls back to a full
//! handshake when the server refuses them. Listeners answer in 0.5-RTT unless they require client
//! certificates. The endpoints close when the node shuts down.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::counters::Counters;
use super::stream;
use crate::address::HostPort;
use crate::runtime::handle::ConnectionHandle;
use crate::runtime::tls_config::{LoadedTls, TlsError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    Connection, Endpoint, EndpointConfig, RecvStream, SendStream, TransportConfig, VarInt,
    ZeroRttAccepted,
};

/// Bytes a stream may have in flight unacknowledged, each way: on paths with real latency a large
/// message is not held to quinn's default of 1.25 MB per round trip (on loopback the round trip is
/// so short that the defaults do as well: there QUIC is bound by its per-packet CPU work).
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// The same for the whole connection (one stream carries everything).
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Kernel buffers of the endpoints' UDP sockets: a window's burst must not overflow them.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
/// How long a closing connection waits for the peer to acknowledge its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The node's quinn endpoints and the configurations they are made with.
pub(crate) struct QuicEndpoints {
    server: Option<quinn::ServerConfig>,
    client: Option<quinn::ClientConfig>,
    /// Listeners answer before the handshake completes (0.5-RTT) unless clients must present
    /// certificates, which are checked only at the end of it.
    half_rtt: bool,
    listeners: Mutex<Vec<Endpoint>>,
    dialers: Mutex<Vec<Endpoint>>,
}

impl QuicEndpoints {
    /// Endpoints configured from `tls`: listening needs its server configuration, dialing its
    /// client one.
    pub fn new(tls: Option<&mut LoadedTls>) -> Result<Self, TlsError> {
        let mut endpoints = Self {
            server: None,
            client: None,
            half_rtt: false,
            listeners: Mutex::new(Vec::new()),
            dialers: Mutex::new(Vec::new()),
        };
        let Some(tls) = tls else {
            return Ok(endpoints);
        };
        endpoints.half_rtt = !tls.require_client_cert;
        if let Some(config) = tls.quic_server.take() {
            let crypto = QuicServerConfig::try_from(config).map_err(|error| TlsError::Quic {
                side: "server",
                reason: error.to_string(),
            })?;
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            server.transport_config(transport_config());
            endpoints.server = Some(server);
        }
        if let Some(config) = tls.quic_client.take() {
            let crypto = QuicClientConfig::try_from(config).map_err(|error| TlsError::Quic {
                side: "client",
                reason: error.to_string(),
            })?;
            let mut client = quinn::ClientConfig::new(Arc::new(crypto));
            client.transport_config(transport_config());
            endpoints.client = Some(client);
        }
        Ok(endpoints)
    }

    /// A listening endpoint on `local`.
    pub fn bind(&self, local: SocketAddr) -> io::Result<Endpoint> {
        let server = self.server.clone().ok_or_else(|| {
            io::Error::other("listening on quic:// needs a certificate and its key")
        })?;
        let endpoint = Endpoint::new(
            EndpointConfig::default(),
            Some(server),
            udp_socket(local)?,
            Arc::new(quinn::TokioRuntime),
        )?;
        lock(&self.listeners).push(endpoint.clone());
        Ok(endpoint)
    }

    /// The dialing endpoint for the family of `remote`, opened on first use.
    fn dialer(&self, remote: SocketAddr) -> io::Result<Endpoint> {
        let mut dialers = lock(&self.dialers);
        let found = dialers.iter().find(|endpoint| {
            endpoint
                .local_addr()
                .is_ok_and(|local| local.is_ipv6() == remote.is_ipv6())
        });
        if let Some(endpoint) = found {
            return Ok(endpoint.clone());
        }
        let any: SocketAddr = if remote.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = Endpoint::new(
            EndpointConfig::default(),
            None,
            udp_socket(any)?,
            Arc::new(quinn::TokioRuntime),
        )?;
        dialers.push(endpoint.clone());
        Ok(endpoint)
    }

    /// Dials `target`, checking its certificate against `server_name`, and opens the stream
    /// atbus runs on: at once in 0-RTT when a resumed session allows it, else after the handshake.
    pub async fn connect(
        &self,
        target: &HostPort,
        server_name: &str,
        counters: &Arc<Counters>,
    ) -> io::Result<QuicLink> {
        let client = self.client.clone().ok_or_else(|| {
            io::Error::other("no CA configured to verify the server's certificate")
        })?;
        let remote = tokio::net::lookup_host(target.authority())
            .await?
            .next()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let connecting = self
            .dialer(remote)?
            .connect_with(client, remote, server_name)
            .map_err(io::Error::other)?;
        let opened = async {
            let (connection, zero_rtt) = match connecting.into_0rtt() {
                Ok((connection, accepted)) => {
                    Counters::bump(&counters.quic_zero_rtt_attempted);
                    (connection, Some(accepted))
                }
                Err(connecting) => (connecting.await?, None),
            };
            let (send, recv) = connection.open_bi().await?;
            Ok::<_, quinn::ConnectionError>((connection, send, recv, zero_rtt))
        };
        match opened.await {
            Ok((connection, send, recv, zero_rtt)) => {
                if zero_rtt.is_none() {
                    Counters::bump(&counters.quic_handshakes);
                }
                Ok(QuicLink {
                    connection,
                    send,
                    recv,
                    zero_rtt,
                    counters: counters.clone(),
                })
            }
            Err(error) => {
                Counters::bump(&counters.quic_handshake_failures);
                Err(io::Error::other(error))
            }
        }
    }

    /// Completes an incoming connection: its handshake (or, in 0.5-RTT, its start) and the
    /// stream the dialer opens.
    pub async fn accept(
        &self,
        incoming: quinn::Incoming,
        counters: &Arc<Counters>,
    ) -> io::Result<QuicLink> {
        let half_rtt = self.half_rtt;
        let opened = async {
            let connecting = incoming.accept()?;
            let connection = if half_rtt {
                match connecting.into_0rtt() {
                    Ok((connection, _)) => connection,
                    Err(connecting) => connecting.await?,
                }
            } else {
                connecting.await?
            };
            let (send, recv) = connection.accept_bi().await?;
            Ok::<_, quinn::ConnectionError>((connection, send, recv))
        };
        match opened.await {
            Ok((connection, send, recv)) => {
                Counters::bump(&counters.quic_handshakes);
                Ok(QuicLink {
                    connection,
                    send,
                    recv,
                    zero_rtt: None,
                    counters: counters.clone(),
                })
            }
            Err(error) => {
                Counters::bump(&counters.quic_handshake_failures);
                Err(io::Error::other(error))
            }
        }
    }

    /// Lets the connections still closing finish (within `within`, at most [`CLOSE_GRACE`]),
    /// closes every endpoint, and returns once the listeners' ports are free again (within a
    /// second more), so that a node started next on the same address can bind it.
    pub async fn close(&self, within: Duration) {
        let listeners: Vec<Endpoint> = lock(&self.listeners).drain(..).collect();
        let dialers: Vec<Endpoint> = lock(&self.dialers).drain(..).collect();
        let ports: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|endpoint| endpoint.local_addr().ok())
            .collect();
        let endpoints: Vec<Endpoint> = listeners.into_iter().chain(dialers).collect();
        let graceful = tokio::time::Instant::now() + within.min(CLOSE_GRACE);
        for endpoint in &endpoints {
            let _ = tokio::time::timeout_at(graceful, endpoint.wait_idle()).await;
        }
        for endpoint in &endpoints {
            endpoint.close(VarInt::from_u32(0), b"the node shuts down");
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        for endpoint in &endpoints {
            let _ = tokio::time::timeout_at(until, endpoint.wait_idle()).await;
        }
        // The socket goes with the endpoint's driver task, once the last handle is gone.
        drop(endpoints);
        for port in ports {
            while std::net::UdpSocket::bind(port).is_err() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// One QUIC connection and the stream atbus runs on.
pub(crate) struct QuicLink {
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    /// Resolves once a 0-RTT dial learns whether the server took its early data.
    zero_rtt: Option<ZeroRttAccepted>,
    counters: Arc<Counters>,
}

impl QuicLink {
    /// Runs the connection of `handle` until either side ends it, then (in the background)
    /// closes the QUIC connection once the peer has what was written. True when the server refused the 0-RTT
    /// data of a connection that is otherwise fine: the dialer should dial again at once (the
    /// new session resumes).
    pub async fn run(mut self, handle: ConnectionHandle) -> bool {
        let watcher = self.zero_rtt.take().map(|accepted| {
            let (counters, connection) = (self.counters.clone(), self.connection.clone());
            tokio::spawn(async move {
                if accepted.await {
                    Counters::bump(&counters.quic_zero_rtt_accepted);
                    Counters::bump(&counters.quic_handshakes);
                    false
                } else if connection.close_reason().is_none() {
                    tracing::debug!("the server refused the 0-RTT data: dialing again");
                    Counters::bump(&counters.quic_handshakes);
                    true
                } else {
                    Counters::bump(&counters.quic_handshake_failures);
                    false
                }
            })
        });
        stream::run(handle, &mut self.recv, &mut self.send).await;
        // A refusal wakes the stream and resolves the watcher together: it has its answer.
        let refused = match watcher {
            Some(watcher) => tokio::time::timeout(Duration::from_millis(100), watcher)
                .await
                .is_ok_and(|refused| refused.unwrap_or(false)),
            None => false,
        };
        let QuicLink {
            connection,
            mut send,
            ..
        } = self;
        tokio::spawn(async move {
            let _ = send.finish();
            let _ = tokio::time::timeout(CLOSE_GRACE, send.stopped()).await;
            connection.close(VarInt::from_u32(0), b"closed");
        });
        refused
    }
}

/// Flow control sized for large messages; no QUIC keep-alive (the engine pings).
fn transport_config() -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    config
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(4))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(config)
}

/// A UDP socket bound to `local` with large kernel buffers (best effort: the system may cap them).
fn udp_socket(local: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    if local.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&local.into())?;
    Ok(socket.into())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
