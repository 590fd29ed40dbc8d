//! [`NodeBuilder`]: what a node is (name, namespace, labels, annotations, tokens), where it
//! listens, which peers it keeps connected or dials on demand, and its engine's limits; `start`
//! checks it all, binds the listeners and starts the node's tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::dialer::Dialer;
use super::error::NodeError;
use super::handle::NodeHandle;
use super::metadata::NodeMetadata;
use super::node::{Inner, Node};
use super::shared::Shared;
use super::tasks::{self, Backoff};
use super::tls_config::TlsSettings;
use super::transport::{self, Listener, TransportContext};
use crate::address::Address;
use crate::engine::{Credential, Endpoint, EngineConfig, Token};

/// Configures and starts a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: Option<String>,
    tokens: Vec<Token>,
    credential: Option<Credential>,
    listen: Vec<String>,
    peers: Vec<(String, Vec<String>)>,
    on_demand: Vec<(String, Vec<String>)>,
    relays: Vec<String>,
    relay_peers: Vec<String>,
    relay_preference: RelayPreference,
    advertised_relays: Vec<(String, String)>,
    metadata: NodeMetadata,
    engine: EngineConfig,
    backoff: Backoff,
    receive_buffer: usize,
    tls: Option<TlsSettings>,
}

impl Node {
    /// A builder with no name, no listeners, no peers and the engine's defaults.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }
}

impl NodeBuilder {
    /// A builder with no name, no listeners, no peers and the engine's defaults.
    fn new() -> Self {
        Self {
            name: None,
            tokens: Vec::new(),
            credential: None,
            listen: Vec::new(),
            peers: Vec::new(),
            on_demand: Vec::new(),
            relays: Vec::new(),
            relay_peers: Vec::new(),
            relay_preference: RelayPreference::Own,
            advertised_relays: Vec::new(),
            metadata: NodeMetadata::default(),
            engine: EngineConfig::default(),
            backoff: Backoff {
                min: Duration::from_millis(50),
                max: Duration::from_secs(5),
            },
            receive_buffer: 8 * 1024 * 1024,
            tls: None,
        }
    }

    /// The node's name, unique on the bus.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The node's namespace (a DNS subdomain; default `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.metadata.namespace = namespace.into();
        self
    }

    /// A label: a key (an optional DNS-subdomain prefix and `/`, then at most 63 characters) and a
    /// value, by the Kubernetes rules. Selectors match on labels; an anonymous peer's allow list
    /// matches this node's labels too.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.labels.insert(key.into(), value.into());
        self
    }

    /// An annotation: a key by the label rules and any value, for tools rather than selectors.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.annotations.insert(key.into(), value.into());
        self
    }

    /// A token shared with the peers: accepted from connecting peers, and proved when
    /// connecting (unless [`credential`](Self::credential) says otherwise). Call it again to
    /// accept several tokens during a rotation; the first one is proved.
    pub fn token(mut self, token: Token) -> Self {
        self.tokens.push(token);
        self
    }

    /// What this node proves when it connects, when that is not its first token (an identity
    /// issued to it, or anonymity).
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// An address to listen on, e.g. `tcp://127.0.0.1:7800` (port 0 picks a free port; see
    /// [`Node::local_addresses`]).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.listen.push(address.into());
        self
    }

    /// A peer to keep connected, at each of `addresses` (one connection per address; the
    /// engine spreads streams over them and survives the loss of any).
    pub fn peer<A: Into<String>>(
        mut self,
        name: impl Into<String>,
        addresses: impl IntoIterator<Item = A>,
    ) -> Self {
        self.peers
            .push((name.into(), addresses.into_iter().map(Into::into).collect()));
        self
    }

    /// A peer dialed at each of `addresses` only when the application first sends to it (or
    /// makes a request, or opens a stream to it); from then on kept connected like
    /// [`peer`](Self::peer). Messages sent meanwhile wait in the engine.
    pub fn peer_on_demand<A: Into<String>>(
        mut self,
        name: impl Into<String>,
        addresses: impl IntoIterator<Item = A>,
    ) -> Self {
        self.on_demand
            .push((name.into(), addresses.into_iter().map(Into::into).collect()));
        self
    }

    /// A relay to keep connected at `address`: nodes this one has no direct connection to are
    /// reached through it (streams stay end to end; the relay only forwards). Call it again for
    /// more relays, or more addresses of one.
    pub fn relay(mut self, address: impl Into<String>) -> Self {
        self.relays.push(address.into());
        self
    }

    /// Whether frames to a peer this node has no direct connection to go through this node's
    /// own relays ([`RelayPreference::Own`], the default) or through the relay the peer
    /// advertises ([`RelayPreference::Advertised`]: one hop less across a mesh, one more
    /// connection here). See [`peer_relay`](Self::peer_relay).
    pub fn relay_preference(mut self, preference: RelayPreference) -> Self {
        self.relay_preference = preference;
        self
    }

    /// `peer` advertises the relay at `address` (from its discovery record, or configured):
    /// with [`RelayPreference::Advertised`] this node keeps a connection to that relay too and
    /// sends to `peer` through it while it is up (through its own relays otherwise).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), atbus_core::runtime::NodeError> {
    /// use atbus_core::engine::Token;
    /// use atbus_core::runtime::{Node, RelayPreference};
    ///
    /// let node = Node::builder()
    ///     .name("client")
    ///     .token(Token::new("a shared secret").unwrap())
    ///     .relay("tcp://relay-a.internal:7800")
    ///     .relay_preference(RelayPreference::Advertised)
    ///     .peer_relay("billing", "tcp://relay-b.internal:7800")
    ///     .start()
    ///     .await?;
    /// node.send("billing", "through relay-b, not relay-a then relay-b").await?;
    /// # Ok(()) }
    /// ```
    pub fn peer_relay(mut self, peer: impl Into<String>, address: impl Into<String>) -> Self {
        self.advertised_relays.push((peer.into(), address.into()));
        self
    }

    /// For a relay (an engine with `auth.relay` set): another relay to keep connected at
    /// `address`, as a relay: the two exchange route tables and forward through each other, so
    /// that a node on one reaches nodes on the other (or further, up to 16 relays).
    pub fn relay_peer(mut self, address: impl Into<String>) -> Self {
        self.relay_peers.push(address.into());
        self
    }

    /// The engine's limits and timers (windows, timeouts, authentication rules).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// Bytes of received messages held for [`Node::recv`] (default 8 MiB). Beyond it messages
    /// wait in the engine, and once its windows fill the senders wait: a slow reader slows its
    /// senders instead of growing memory.
    pub fn receive_buffer(mut self, bytes: usize) -> Self {
        self.receive_buffer = bytes.max(1);
        self
    }

    /// Reconnection delays: from `min`, doubling up to `max`, with jitter. Default 50 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            min,
            max: max.max(min),
        };
        self
    }

    /// TLS settings for `tls://` and `quic://` listeners and peers: this node's certificate and
    /// key, the CAs its peers' certificates must chain to, and whether clients need certificates.
    /// The atbus token handshake still runs over every connection.
    pub fn tls(mut self, settings: TlsSettings) -> Self {
        self.tls = Some(settings);
        self
    }

    /// Binds the listeners, starts connecting to the peers, and returns the running node.
    pub async fn start(self) -> Result<Node, NodeError> {
        let name = self
            .name
            .ok_or_else(|| NodeError::Config("a node needs a name: call .name(…)".into()))?;
        let credential = match (self.credential, self.tokens.first()) {
            (Some(credential), _) => Some(credential),
            (None, Some(token)) => Some(Credential::Token(token.clone())),
            (None, None) => None,
        };
        if credential.is_none()
            && !(self.peers.is_empty()
                && self.on_demand.is_empty()
                && self.relays.is_empty()
                && self.relay_peers.is_empty())
        {
            return Err(NodeError::Config(
                "connecting to peers needs a token or a credential: call .token(…)".into(),
            ));
        }
        let listen = parse_addresses(&self.listen)?;
        let peers = parse_peers(&self.peers)?;
        let on_demand = parse_peers(&self.on_demand)?;
        let relays = parse_addresses(&self.relays)?;
        let relay_peers = parse_addresses(&self.relay_peers)?;
        let mut advertised: HashMap<String, Vec<String>> = HashMap::new();
        for (peer, address) in &self.advertised_relays {
            let address = address.parse::<Address>()?;
            advertised
                .entry(address.to_string())
                .or_default()
                .push(peer.clone());
        }
        if self.relay_preference == RelayPreference::Own {
            advertised.clear();
        }
        let advertised_addresses: Vec<Address> = advertised
            .keys()
            .filter(|address| !relays.iter().any(|relay| relay.to_string() == **address))
            .map(|address| address.parse::<Address>())
            .collect::<Result<_, _>>()?;
        self.metadata.validate()?;
        self.engine.validate().map_err(NodeError::Config)?;
        let context = Arc::new(TransportContext::for_node(
            self.tls.as_ref(),
            &listen,
            peers
                .iter()
                .chain(&on_demand)
                .flat_map(|(_, addresses)| addresses)
                .chain(&relays)
                .chain(&relay_peers)
                .chain(&advertised_addresses),
        )?);
        let mut engine = self.engine;
        engine.auth.tokens.extend(self.tokens.iter().cloned());
        for (key, value) in &self.metadata.labels {
            engine
                .auth
                .labels
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        let endpoint = Endpoint::new(name.clone(), engine, Instant::now());
        let (stop, stop_rx) = watch::channel(false);
        let shared = Shared::new(endpoint, self.receive_buffer, stop_rx.clone());
        shared.with(|state| state.advertised_relays = advertised);
        let node = NodeHandle::new(shared.clone());

        let mut listeners = Vec::new();
        let mut local = Vec::new();
        for address in &listen {
            if let Address::Udp(_) = address {
                let bound = transport::bind_udp(&node, &context, address).await?;
                tracing::info!(node = %name, address = %bound, "listening");
                local.push(bound);
                continue;
            }
            let (listener, bound) = Listener::bind(address, &context).await?;
            tracing::info!(node = %name, address = %bound, "listening");
            listeners.push(listener);
            local.push(bound);
        }
        for listener in listeners {
            tokio::spawn(tasks::accept_loop(
                node.clone(),
                context.clone(),
                listener,
                stop_rx.clone(),
            ));
        }
        tokio::spawn(tasks::timer_loop(shared.clone(), stop_rx.clone()));
        let dialer = Dialer::new(
            node,
            context.clone(),
            credential,
            self.backoff,
            stop_rx.clone(),
        );
        for (peer, addresses) in &peers {
            dialer.dial(peer, addresses);
        }
        for (peer, addresses) in on_demand {
            dialer.dial_on_demand(&peer, addresses);
        }
        dialer.dial_relay(&relays);
        dialer.dial_relay(&advertised_addresses);
        dialer.dial_relay_peer(&relay_peers);
        Ok(Node {
            inner: Arc::new(Inner {
                name,
                metadata: self.metadata,
                shared,
                context,
                dialer,
                local,
                stop,
            }),
        })
    }
}

/// Which relay carries frames to a peer the node has no direct connection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayPreference {
    /// The node's own relays (which forward across the mesh to the peer's).
    #[default]
    Own,
    /// The relay the peer advertises ([`NodeBuilder::peer_relay`]), dialed as well, while it is
    /// up.
    Advertised,
}

/// Addresses, parsed.
fn parse_addresses(addresses: &[String]) -> Result<Vec<Address>, NodeError> {
    Ok(addresses
        .iter()
        .map(|address| address.parse::<Address>())
        .collect::<Result<_, _>>()?)
}

/// Peers and their addresses, parsed.
fn parse_peers(peers: &[(String, Vec<String>)]) -> Result<Vec<(String, Vec<Address>)>, NodeError> {
    peers
        .iter()
        .map(|(peer, addresses)| Ok((peer.clone(), parse_addresses(addresses)?)))
        .collect()
}
