//! A node's configuration as a YAML file, for services configured by operators rather than code.
//!
//! ```yaml
//! name: orders
//! tokens: ["a shared secret of at least 16 bytes"]   # the first is proved, all are accepted
//! listen: ["tcp://0.0.0.0:7810", "udp://0.0.0.0:7810"]
//! peers:
//!   - name: billing
//!     addresses: ["tcp://billing.internal:7810"]
//! receive_buffer: 8388608        # bytes of messages held for recv (optional)
//! max_message_size: 67108864     # bytes (optional)
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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::error::NodeError;
use super::node::NodeBuilder;
use super::tls_config::TlsSettings;
use crate::engine::{EngineConfig, Token};

/// The YAML form of a node's configuration. Unknown fields are errors, so a typo is caught.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name.
    pub name: String,
    /// Shared tokens: the first is proved when connecting, all are accepted.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Addresses to listen on.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Peers to keep connected.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Bytes of received messages held for `recv`.
    #[serde(default)]
    pub receive_buffer: Option<usize>,
    /// The largest message, in bytes.
    #[serde(default)]
    pub max_message_size: Option<usize>,
    /// TLS for `tls://` and `quic://` addresses.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// The `tls` section of a [`NodeConfig`]: PEM files, and the mutual-TLS and name settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM, leaf first); needed to listen, and presented as the
    /// client certificate when dialing.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA files (PEM) the peers' certificates must chain to: one path or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub ca: Vec<PathBuf>,
    /// Listeners refuse clients without a certificate signed by `ca`.
    #[serde(default)]
    pub require_client_cert: bool,
    /// The name servers' certificates are checked against, instead of the dialed host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The settings these fields describe.
    pub fn settings(&self) -> Result<TlsSettings, NodeError> {
        let mut settings = TlsSettings::new().require_client_cert(self.require_client_cert);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => settings = settings.identity_files(cert, key),
            (None, None) => {}
            (Some(_), None) => return Err(NodeError::Config("tls.cert needs tls.key".into())),
            (None, Some(_)) => return Err(NodeError::Config("tls.key needs tls.cert".into())),
        }
        for ca in &self.ca {
            settings = settings.ca_file(ca);
        }
        if let Some(name) = &self.server_name {
            settings = settings.server_name(name.clone());
        }
        Ok(settings)
    }

    /// Makes the relative paths relative to `folder`.
    fn resolve(&mut self, folder: &Path) {
        let paths = self
            .cert
            .iter_mut()
            .chain(&mut self.key)
            .chain(&mut self.ca);
        for path in paths {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
    }
}

/// A path or a list of paths.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(path) => vec![path],
        OneOrMany::Many(paths) => paths,
    })
}

/// A peer in a [`NodeConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its name.
    pub name: String,
    /// Where it listens; one connection per address.
    pub addresses: Vec<String>,
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
            tls.resolve(folder);
        }
        Ok(config)
    }

    /// A builder with this configuration (code may still change it before `start`).
    pub fn builder(&self) -> Result<NodeBuilder, NodeError> {
        let mut builder = super::Node::builder().name(self.name.clone());
        for (index, token) in self.tokens.iter().enumerate() {
            let token = Token::new(token)
                .map_err(|error| NodeError::Config(format!("tokens[{index}]: {error}")))?;
            builder = builder.token(token);
        }
        for address in &self.listen {
            builder = builder.listen(address.clone());
        }
        for peer in &self.peers {
            builder = builder.peer(peer.name.clone(), peer.addresses.clone());
        }
        if let Some(bytes) = self.receive_buffer {
            builder = builder.receive_buffer(bytes);
        }
        if let Some(max) = self.max_message_size {
            let engine = EngineConfig {
                max_message_size: max,
                ..EngineConfig::default()
            };
            builder = builder.engine(engine);
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.settings()?);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_tls_section_takes_one_ca_or_a_list() {
        let one = NodeConfig::from_yaml("name: a\ntls:\n  ca: ca.pem\n").expect("one");
        assert_eq!(one.tls.expect("tls").ca, [PathBuf::from("ca.pem")]);
        let many = NodeConfig::from_yaml(
            "name: a\ntls:\n  ca: [a.pem, b.pem]\n  require_client_cert: true\n",
        )
        .expect("a list");
        let tls = many.tls.expect("tls");
        assert_eq!(tls.ca.len(), 2);
        assert!(tls.require_client_cert);
    }
}
