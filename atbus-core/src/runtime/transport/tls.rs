//! `tls://`: TLS (rustls, ring provider) over TCP. The listener's TCP connections are handed to a
//! `TlsAcceptor` (client certificates verified when required), dialed ones to a `TlsConnector`
//! that checks the server's certificate against the node's CAs; once the TLS handshake is done
//! the connection runs like any byte stream (`stream::run`), atbus handshake included.

use std::io;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::counters::Counters;
use crate::address::HostPort;
use crate::runtime::tls_config::LoadedTls;

/// A TLS connection over TCP, either side.
pub(crate) type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// The acceptor of a `tls://` listener.
pub(crate) fn acceptor(configs: &LoadedTls) -> Option<TlsAcceptor> {
    configs.tls_server.clone().map(TlsAcceptor::from)
}

/// Completes the server side of the TLS handshake on an accepted TCP connection.
pub(crate) async fn accept(
    acceptor: TlsAcceptor,
    socket: TcpStream,
    counters: &Counters,
) -> io::Result<TlsStream> {
    // Frames are batched by the engine and the writer: no Nagle delay on top.
    socket.set_nodelay(true)?;
    match acceptor.accept(socket).await {
        Ok(stream) => {
            Counters::bump(&counters.tls_handshakes);
            Ok(TlsStream::Server(stream))
        }
        Err(error) => {
            Counters::bump(&counters.tls_handshake_failures);
            Err(error)
        }
    }
}

/// Connects to `target` over TCP and completes the client side of the TLS handshake, checking
/// the server's certificate against the configured name or the host of the address.
pub(crate) async fn connect(
    configs: &LoadedTls,
    target: &HostPort,
    counters: &Counters,
) -> io::Result<TlsStream> {
    let client = configs
        .tls_client
        .clone()
        .ok_or_else(|| io::Error::other("no CA configured to verify the server's certificate"))?;
    let name = server_name(configs, target)?;
    let socket = TcpStream::connect(target.authority()).await?;
    socket.set_nodelay(true)?;
    match TlsConnector::from(client).connect(name, socket).await {
        Ok(stream) => {
            Counters::bump(&counters.tls_handshakes);
            Ok(TlsStream::Client(stream))
        }
        Err(error) => {
            Counters::bump(&counters.tls_handshake_failures);
            Err(error)
        }
    }
}

/// The name the server's certificate must carry: the override, or the address's host (an IP
/// address is matched against the certificate's IP SANs).
pub(crate) fn server_name(
    configs: &LoadedTls,
    target: &HostPort,
) -> io::Result<ServerName<'static>> {
    let name = configs.server_name(&target.host);
    ServerName::try_from(name.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is neither a DNS name nor an IP address"),
        )
    })
}
