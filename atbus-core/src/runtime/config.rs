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
//! ```

use serde::Deserialize;

use super::error::NodeError;
use super::node::NodeBuilder;
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
        Self::from_yaml(&text)
            .map_err(|error| NodeError::Config(format!("{}: {error}", path.display())))
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
    }
}
