//! A node's configuration as a YAML file, for services configured by operators rather than code.
//!
//! ```yaml
//! name: orders
//! namespace: shop                # a DNS subdomain (optional; default "default")
//! labels: {app: orders, area.region: eu-west}   # matched by selectors (optional)
//! annotations: {atbus.io/owner: "team blue"}    # free-form values (optional)
//! tokens: ["a shared secret of at least 16 bytes"]   # the first is proved, all are accepted
//! listen: ["tcp://0.0.0.0:7810", "udp://0.0.0.0:7810"]
//! peers:
//!   - name: billing
//!     addresses: ["tcp://billing.internal:7810"]
//!   - name: audit
//!     addresses: ["udp://audit.internal:7810"]
//!     connect: on_demand         # dialed at the first send (default: always, from the start)
//!   - name: stock                # no address: reached through a relay
//!     relay: "tcp://relay-b.internal:7800"   # the relay it advertises (optional)
//! relays: ["tcp://relay.internal:7800"]   # other nodes are reached through these (optional)
//! relay_preference: own          # own (default): through our relays; advertised: through the
//!                                # relay a peer advertises, dialed as well
//! receive_buffer: 8388608        # bytes of messages held for recv (optional)
//! max_message_size: 67108864     # bytes (optional)
//! reconnect: {min: 50ms, max: 5s}  # backoff between dials of a lost connection (optional)
//! engine:                        # the engine's limits and timers (each optional)
//!   keep_alive_interval: 5s      # a connection quiet this long is pinged
//!   idle_timeout: 30s            # a connection silent this long is dead
//!   stream_send_window: 4194304  # units queued and unacknowledged per stream
//!   peer_send_window: 16777216   # the same for all streams to one peer
//!   peer_receive_budget: 83968000  # bytes received from one peer and not yet taken
//!   stream_receive_window: 67174400  # units a stream may send beyond what was taken
//!   max_streams_per_peer: 1024
//!   message_timeout: 30s         # abandon messages unacknowledged this long (default: never)
//!   max_ack_delay: 5ms
//!   min_rto: 20ms
//!   max_rto: 10s
//! tls:                           # for tls:// and quic:// (optional)
//!   cert: /etc/atbus/orders.pem  # this node's certificate chain, PEM, leaf first (to listen)
//!   key: /etc/atbus/orders.key   # its private key, PEM
//!   ca: /etc/atbus/ca.pem        # CA(s) the peers' certificates chain to (to dial); or a list
//!   require_client_cert: false   # listeners refuse clients without a certificate from `ca`
//!   server_name: billing.internal  # checked against servers' certificates instead of the host
//! ```
//!
//! Relative paths in `tls` are relative to the YAML file's folder when it is read with
//! [`NodeConfig::from_file`], to the working directory otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::builder::NodeBuilder;
use super::error::NodeError;
use super::tls_config::TlsSettings;
pub use crate::duration::parse_duration;
use crate::engine::{EngineConfig, Token};

/// The YAML form of a node's configuration. Unknown fields are errors, so a typo is caught.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name.
    pub name: String,
    /// The node's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels, matched by selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Shared tokens: the first is proved when connecting, all are accepted.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Addresses to listen on.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Peers to keep connected.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Relays to keep connected: the nodes without a direct connection are reached through
    /// them.
    #[serde(default)]
    pub relays: Vec<String>,
    /// Through which relay frames to a peer without a direct connection go.
    #[serde(default)]
    pub relay_preference: super::RelayPreference,
    /// Bytes of received messages held for `recv`.
    #[serde(default)]
    pub receive_buffer: Option<usize>,
    /// The largest message, in bytes.
    #[serde(default)]
    pub max_message_size: Option<usize>,
    /// TLS for `tls://` and `quic://` addresses (see [`TlsSettings`] for the keys).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Reconnection backoff.
    #[serde(default)]
    pub reconnect: Option<ReconnectConfig>,
    /// The engine's limits and timers: each key present replaces the default (see
    /// [`EngineConfig`] for the keys).
    #[serde(default)]
    pub engine: EngineConfig,
}

/// The `reconnect` section: delays between dials of a lost connection, doubling from `min` to
/// `max`, with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// The first delay.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub min: Duration,
    /// The largest delay.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max: Duration,
}

/// A peer in a [`NodeConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its name.
    pub name: String,
    /// Where it listens; one connection per address (none: it is reached through a relay).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// When to dial it.
    #[serde(default)]
    pub connect: Connect,
    /// The relay it advertises, used with `relay_preference: advertised`.
    #[serde(default)]
    pub relay: Option<String>,
}

/// When a configured peer is dialed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connect {
    /// From the start, and kept connected.
    #[default]
    Always,
    /// At the first send to it, then kept connected.
    OnDemand,
}

impl NodeConfig {
    /// Parses YAML text; the error names the line, column and field at fault.
    pub fn from_yaml(text: &str) -> Result<Self, NodeError> {
        serde_yaml_ng::from_str(text).map_err(|error| NodeError::Config(error.to_string()))
    }

    /// Reads and parses the YAML file at `path`.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, NodeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| NodeError::Config(format!("{}: {error}", path.display())))?;
        let mut config = Self::from_yaml(&text)
            .map_err(|error| NodeError::Config(format!("{}: {error}", path.display())))?;
        if let (Some(tls), Some(folder)) = (&mut config.tls, path.parent()) {
            tls.resolve_relative_to(folder);
        }
        Ok(config)
    }

    /// A builder with this configuration (code may still change it before `start`).
    pub fn builder(&self) -> Result<NodeBuilder, NodeError> {
        let mut builder = super::Node::builder().name(self.name.clone());
        if let Some(namespace) = &self.namespace {
            builder = builder.namespace(namespace.clone());
        }
        for (key, value) in &self.labels {
            builder = builder.label(key.clone(), value.clone());
        }
        for (key, value) in &self.annotations {
            builder = builder.annotation(key.clone(), value.clone());
        }
        for (index, token) in self.tokens.iter().enumerate() {
            let token = Token::new(token)
                .map_err(|error| NodeError::Config(format!("tokens[{index}]: {error}")))?;
            builder = builder.token(token);
        }
        for address in &self.listen {
            builder = builder.listen(address.clone());
        }
        for peer in self.peers.iter().filter(|peer| !peer.addresses.is_empty()) {
            builder = match peer.connect {
                Connect::Always => builder.peer(peer.name.clone(), peer.addresses.clone()),
                Connect::OnDemand => {
                    builder.peer_on_demand(peer.name.clone(), peer.addresses.clone())
                }
            };
        }
        for relay in &self.relays {
            builder = builder.relay(relay.clone());
        }
        builder = builder.relay_preference(self.relay_preference);
        for peer in &self.peers {
            if let Some(relay) = &peer.relay {
                builder = builder.peer_relay(peer.name.clone(), relay.clone());
            }
        }
        if let Some(reconnect) = &self.reconnect {
            builder = builder.reconnect_backoff(reconnect.min, reconnect.max);
        }
        if let Some(bytes) = self.receive_buffer {
            builder = builder.receive_buffer(bytes);
        }
        let mut engine = self.engine.clone();
        if let Some(max) = self.max_message_size {
            engine.max_message_size = max;
        }
        engine
            .validate()
            .map_err(|error| NodeError::Config(format!("engine: {error}")))?;
        builder = builder.engine(engine);
        if let Some(tls) = &self.tls {
            tls.check()
                .map_err(|error| NodeError::Config(error.to_string()))?;
            builder = builder.tls(tls.clone());
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ForwardOverflow;

    #[test]
    fn a_full_file_parses_into_a_builder() {
        let config = NodeConfig::from_yaml(
            "name: orders\n\
             tokens: [\"a shared secret of at least 16 bytes\"]\n\
             listen: [\"tcp://127.0.0.1:0\"]\n\
             peers:\n  - name: billing\n    addresses: [\"tcp://127.0.0.1:1\"]\n\
             receive_buffer: 1024\n",
        )
        .expect("valid");
        assert_eq!(config.name, "orders");
        assert_eq!(config.peers[0].addresses, ["tcp://127.0.0.1:1"]);
        assert!(config.builder().is_ok());
    }

    #[test]
    fn a_peer_may_name_the_relay_it_advertises() {
        let config = NodeConfig::from_yaml(
            "name: orders\n\
             tokens: [\"a shared secret of at least 16 bytes\"]\n\
             relays: [\"tcp://127.0.0.1:1\"]\n\
             relay_preference: advertised\n\
             peers:\n  - name: stock\n    relay: \"tcp://127.0.0.1:2\"\n",
        )
        .expect("valid");
        assert_eq!(
            config.relay_preference,
            super::super::RelayPreference::Advertised
        );
        assert_eq!(config.peers[0].relay.as_deref(), Some("tcp://127.0.0.1:2"));
        assert!(config.peers[0].addresses.is_empty());
        assert!(config.builder().is_ok());
        let wrong = NodeConfig::from_yaml("name: a\nrelay_preference: theirs\n").unwrap_err();
        assert!(wrong.to_string().contains("theirs"), "{wrong}");
    }

    #[test]
    fn mistakes_name_the_field() {
        let typo = NodeConfig::from_yaml("name: a\nlisten_on: []\n").expect_err("unknown field");
        assert!(typo.to_string().contains("listen_on"), "{typo}");
        let missing = NodeConfig::from_yaml("listen: []\n").expect_err("no name");
        assert!(missing.to_string().contains("name"), "{missing}");
        let short = NodeConfig::from_yaml("name: a\ntokens: [short]\n")
            .expect("parses")
            .builder()
            .expect_err("a short token");
        assert!(short.to_string().contains("tokens[0]"), "{short}");
        let half = NodeConfig::from_yaml("name: a\ntls:\n  cert: a.pem\n")
            .expect("parses")
            .builder()
            .expect_err("a cert without its key");
        assert!(half.to_string().contains("tls.key"), "{half}");
        let typo = NodeConfig::from_yaml("name: a\ntls:\n  certificate: a.pem\n")
            .expect_err("unknown field");
        assert!(typo.to_string().contains("certificate"), "{typo}");
    }

    #[test]
    fn metadata_peers_on_demand_reconnect_and_engine_limits_parse() {
        let config = NodeConfig::from_yaml(
            "name: orders\n\
             namespace: shop\n\
             labels: {app: orders, area.region: eu-west}\n\
             annotations: {atbus.io/owner: team blue}\n\
             peers:\n  - name: audit\n    addresses: [\"udp://127.0.0.1:1\"]\n    connect: on_demand\n\
             reconnect: {min: 100ms, max: 2}\n\
             engine:\n  keep_alive_interval: 250ms\n  idle_timeout: 2m\n  message_timeout: 1.5s\n  \
             stream_send_window: 1048576\n",
        )
        .expect("valid");
        assert_eq!(config.namespace.as_deref(), Some("shop"));
        assert_eq!(config.labels["area.region"], "eu-west");
        assert_eq!(config.peers[0].connect, Connect::OnDemand);
        let reconnect = config.reconnect.as_ref().expect("reconnect");
        assert_eq!(
            (reconnect.min, reconnect.max),
            (Duration::from_millis(100), Duration::from_secs(2))
        );
        let engine = &config.engine;
        assert_eq!(engine.keep_alive_interval, Duration::from_millis(250));
        assert_eq!(engine.idle_timeout, Duration::from_secs(120));
        assert_eq!(engine.message_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(engine.stream_send_window, 1 << 20);
        assert_eq!(
            engine.peer_send_window,
            EngineConfig::default().peer_send_window
        );
        assert!(config.builder().is_ok());
    }

    #[test]
    fn bad_durations_and_limits_that_do_not_fit_are_named() {
        let unit = NodeConfig::from_yaml("name: a\nengine:\n  idle_timeout: 5 parsecs\n")
            .expect_err("a bad unit");
        assert!(unit.to_string().contains("parsecs"), "{unit}");
        let connect = NodeConfig::from_yaml(
            "name: a\npeers:\n  - name: b\n    addresses: []\n    connect: sometimes\n",
        )
        .expect_err("a bad connect");
        assert!(connect.to_string().contains("sometimes"), "{connect}");
        let budget = NodeConfig::from_yaml("name: a\nengine:\n  peer_receive_budget: 1024\n")
            .expect("parses")
            .builder()
            .expect_err("a budget below the largest message");
        assert!(
            budget.to_string().contains("peer_receive_budget"),
            "{budget}"
        );
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn the_engine_section_is_the_engine_config_with_the_same_keys() {
        let config = NodeConfig::from_yaml(
            "name: a\nengine:\n  forward_overflow: drop_oldest\n  max_rto: 3\n",
        )
        .expect("valid");
        let defaults = EngineConfig::default();
        assert_eq!(config.engine.max_rto, Duration::from_secs(3));
        assert_eq!(config.engine.forward_overflow, ForwardOverflow::DropOldest);
        // What YAML does not set keeps the engine's defaults, the code-only fields included.
        assert_eq!(config.engine.max_message_size, defaults.max_message_size);
        assert_eq!(config.engine.initial_rtt, defaults.initial_rtt);
        assert_eq!(config.engine.min_rto, defaults.min_rto);
        for code_only in ["initial_rtt: 1s", "max_message_size: 1024", "auth: {}"] {
            let error = NodeConfig::from_yaml(&format!("name: a\nengine:\n  {code_only}\n"))
                .expect_err("not a key of the engine section");
            let key = code_only.split(':').next().unwrap_or_default();
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn the_tls_section_takes_one_ca_or_a_list() {
        let one = NodeConfig::from_yaml("name: a\ntls:\n  ca: ca.pem\n").expect("one");
        let ca: Vec<&std::path::Path> = one.tls.as_ref().expect("tls").ca_files().collect();
        assert_eq!(ca, [std::path::PathBuf::from("ca.pem")]);
        let many = NodeConfig::from_yaml(
            "name: a\ntls:\n  ca: [a.pem, b.pem]\n  require_client_cert: true\n",
        )
        .expect("a list");
        let tls = many.tls.expect("tls");
        assert_eq!(tls.ca_files().count(), 2);
        assert!(tls.client_cert_required());
    }
}
