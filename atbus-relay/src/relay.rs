//! [`Relay`]: a running relay, and [`RelayBuilder`], which starts one from code or from a
//! [`RelayConfig`]. Underneath it is an atbus [`Node`] whose engine forwards: nodes authenticate
//! to it with a token, learn from its accept that it is a relay, and reach each other through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use atbus_core::Address;
use atbus_core::engine::{EngineConfig, EngineStats, Token};
use atbus_core::runtime::{ConnectionInfo, Node, NodeError, TlsSettings, TrafficCounters};

use atbus_discovery::{EtcdConfig, EtcdRegistry, MemoryRegistry, Registry};

use crate::admin::{self, Admin};
use crate::config::{ConfigError, RelayConfig};
use crate::discovery::DiscoveryService;

/// Configures and starts a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    name: String,
    listen: Vec<String>,
    peers: Vec<String>,
    admin: Option<String>,
    tokens: Vec<Token>,
    engine: EngineConfig,
    tls: Option<TlsSettings>,
    registry: Option<Arc<dyn Registry>>,
    etcd: Option<EtcdConfig>,
}

impl RelayBuilder {
    /// The relay's node name (default `relay`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// An address to listen on; port 0 picks a free one ([`Relay::local_addresses`]).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.listen.push(address.into());
        self
    }

    /// Another relay to keep connected at `address`: the two exchange route tables and forward
    /// through each other (a mesh or a chain; at most 16 relays between two nodes). Both must
    /// share a token.
    pub fn peer(mut self, address: impl Into<String>) -> Self {
        self.peers.push(address.into());
        self
    }

    /// Serves the admin HTTP side on `address` (`ip:port`; port 0 picks one, see
    /// [`Relay::admin_address`]).
    pub fn admin(mut self, address: impl Into<String>) -> Self {
        self.admin = Some(address.into());
        self
    }

    /// A token nodes may prove; call again to accept several (during a rotation).
    pub fn token(mut self, token: Token) -> Self {
        self.tokens.push(token);
        self
    }

    /// The engine's limits and timers (the relay role is set on top of them).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// Certificates for `tls://` and `quic://` listeners.
    pub fn tls(mut self, settings: TlsSettings) -> Self {
        self.tls = Some(settings);
        self
    }

    /// The registry the relay serves discovery from (its nodes register, list and watch there):
    /// by default an in-memory one of its own.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Serves discovery from etcd: connected at [`start`](Self::start), with one etcd watcher
    /// for all the relay's watching nodes.
    pub fn etcd(mut self, config: EtcdConfig) -> Self {
        self.etcd = Some(config);
        self
    }

    /// A builder holding what `config` says (its TLS files are read at `start`).
    pub fn from_config(config: &RelayConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let mut builder = Relay::builder()
            .name(config.name.clone())
            .engine(config.engine.clone());
        for address in &config.listen {
            builder = builder.listen(address.clone());
        }
        for address in &config.peers {
            builder = builder.peer(address.clone());
        }
        if !config.admin.is_empty() {
            builder = builder.admin(config.admin.clone());
        }
        for token in &config.tokens {
            let token = Token::new(token).map_err(|error| ConfigError::Invalid {
                field: "tokens".into(),
                message: error.to_string(),
            })?;
            builder = builder.token(token);
        }
        if let Some(tls) = &config.tls {
            // `check` above refused settings that cannot be used.
            builder = builder.tls(tls.clone());
        }
        if let Some(etcd) = config.registry.etcd.as_ref() {
            builder = builder.etcd(etcd.config());
        }
        Ok(builder)
    }

    /// Whether a token was given; without one, [`start`](Self::start) refuses, and the binary
    /// makes up a development token first.
    pub fn has_token(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Binds the listeners and starts forwarding.
    pub async fn start(self) -> Result<Relay, NodeError> {
        if self.tokens.is_empty() {
            return Err(NodeError::Config(
                "a relay needs at least one token for the nodes to prove: .token(…) \
                 (YAML: tokens)"
                    .into(),
            ));
        }
        if self.listen.is_empty() {
            return Err(NodeError::Config(
                "a relay needs an address to listen on: .listen(…) (YAML: listen)".into(),
            ));
        }
        let mut engine = self.engine;
        engine.auth.relay = true;
        let mut builder = Node::builder()
            .name(self.name)
            .label("atbus.io/kind", "relay")
            .engine(engine);
        for token in self.tokens {
            builder = builder.token(token);
        }
        for address in self.listen {
            builder = builder.listen(address);
        }
        for address in self.peers {
            builder = builder.relay_peer(address);
        }
        if let Some(tls) = self.tls {
            builder = builder.tls(tls);
        }
        // The admin port is bound first: a relay that cannot serve it does not start.
        let admin_listener =
            match &self.admin {
                Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
                    NodeError::Config(format!("admin address {address}: {error}"))
                })?),
                None => None,
            };
        let registry: Arc<dyn Registry> = match (self.registry, self.etcd) {
            (Some(registry), _) => registry,
            (None, Some(etcd)) => {
                let endpoints = etcd.endpoints.join(",");
                Arc::new(EtcdRegistry::connect(etcd).await.map_err(|error| {
                    NodeError::Config(format!("registry.etcd ({endpoints}): {error}"))
                })?)
            }
            (None, None) => Arc::new(MemoryRegistry::new()),
        };
        let node = builder.start().await?;
        DiscoveryService::start(node.clone(), Arc::clone(&registry));
        let ready = Arc::new(AtomicBool::new(true));
        let (stop, stop_rx) = watch::channel(false);
        let mut admin_address = None;
        if let Some(listener) = admin_listener {
            admin_address = listener.local_addr().ok();
            let admin = Admin {
                node: node.clone(),
                registry: Arc::clone(&registry),
                ready: ready.clone(),
            };
            tokio::spawn(admin::serve(listener, admin, stop_rx));
        }
        Ok(Relay {
            node,
            registry,
            admin_address,
            ready,
            stop: Arc::new(stop),
        })
    }
}

/// A running relay.
#[derive(Debug, Clone)]
pub struct Relay {
    node: Node,
    registry: Arc<dyn Registry>,
    admin_address: Option<SocketAddr>,
    ready: Arc<AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
}

impl Relay {
    /// A builder with the name `relay`, no listeners, no token and the engine's defaults.
    pub fn builder() -> RelayBuilder {
        RelayBuilder {
            name: "relay".into(),
            listen: Vec::new(),
            peers: Vec::new(),
            admin: None,
            tokens: Vec::new(),
            engine: EngineConfig::default(),
            tls: None,
            registry: None,
            etcd: None,
        }
    }

    /// The registry the relay serves discovery from.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        self.node.name()
    }

    /// The addresses it listens on, with the ports chosen for port 0.
    pub fn local_addresses(&self) -> &[Address] {
        self.node.local_addresses()
    }

    /// Where the admin HTTP side listens, if it does.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// The engine's counters: frames forwarded, forwards dropped by reason, handshake failures
    /// by rule, bytes.
    pub fn stats(&self) -> EngineStats {
        self.node.stats()
    }

    /// The peers the relay's engine holds state for: the connected nodes and relays, and those
    /// that left only a few seconds ago or with something still to do.
    pub fn peer_count(&self) -> usize {
        self.node.peer_count()
    }

    /// The nodes that left and whose tombstone the relay keeps (where their streams stood,
    /// should they come back).
    pub fn departed_peers(&self) -> usize {
        self.node.departed_peers()
    }

    /// The connected nodes' connections, with RTT.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.node.connection_info()
    }

    /// Traffic per transport.
    pub fn traffic(&self) -> std::collections::BTreeMap<&'static str, TrafficCounters> {
        self.node.traffic()
    }

    /// Stops accepting, lets what is queued go out within `deadline`, and closes every
    /// connection with SHUTDOWN so that nodes move to another relay.
    pub async fn shutdown_within(&self, deadline: Duration) {
        // Not ready any more: load balancers stop sending nodes here while it drains.
        self.ready.store(false, Ordering::Relaxed);
        self.node.shutdown_within(deadline).await;
        let _ = self.stop.send(true);
    }

    /// [`shutdown_within`](Self::shutdown_within) 5 seconds.
    pub async fn shutdown(&self) {
        self.shutdown_within(Duration::from_secs(5)).await;
    }
}
