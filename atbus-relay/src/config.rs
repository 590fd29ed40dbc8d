//! The relay's configuration file (YAML), with defaults for every field, so that an empty file
//! (or none) runs a development relay on loopback. `relay.example.yml` shows every field.

use std::path::Path;

use atbus_core::engine::EngineConfig;
use atbus_core::runtime::TlsSettings;
use serde::Deserialize;

/// Where a relay listens when nothing says otherwise: TCP and UDP on loopback port 7800.
pub const DEFAULT_LISTEN: [&str; 2] = ["tcp://127.0.0.1:7800", "udp://127.0.0.1:7800"];

/// Where the admin HTTP side listens when nothing says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7801";

/// A relay's configuration. Unknown fields are errors, so that a typo is caught.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The relay's node name (default `relay`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Addresses to listen on (default [`DEFAULT_LISTEN`]).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// `host:port` of the admin HTTP side (health, metrics, JSON views); empty for none
    /// (default [`DEFAULT_ADMIN`]).
    #[serde(default = "default_admin")]
    pub admin: String,
    /// Other relays to keep connected (a mesh or a chain): they exchange route tables and
    /// forward through each other.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Tokens nodes prove when they connect: the first is this relay's own, all are accepted.
    /// None: a development token is made up at start and printed once.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// TLS for `tls://` and `quic://` listeners (the node's `tls:` keys: see [`TlsSettings`]).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// The engine's limits and timers: each key present replaces the default (the relay role is
    /// set on top of them).
    #[serde(default)]
    pub engine: EngineConfig,
    /// Where the relay's nodes register, list and watch: in memory (default) or etcd.
    #[serde(default)]
    pub registry: RegistrySection,
}

/// The `registry` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// etcd instead of the relay's memory: relays sharing it see each other's nodes.
    #[serde(default)]
    pub etcd: Option<EtcdSection>,
}

/// The `registry.etcd` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// The keys' prefix, one per cluster (default `/atbus/default`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Seconds a dead node's record stays (default 10).
    #[serde(default)]
    pub lease_ttl_seconds: Option<u64>,
}

impl EtcdSection {
    /// The registry's configuration.
    pub fn config(&self) -> atbus_discovery::EtcdConfig {
        let mut config = atbus_discovery::EtcdConfig::new(self.endpoints.iter().cloned());
        if let Some(prefix) = &self.prefix {
            config.prefix = prefix.clone();
        }
        if let Some(seconds) = self.lease_ttl_seconds {
            config.lease_ttl = std::time::Duration::from_secs(seconds.max(1));
        }
        config
    }
}

fn default_name() -> String {
    "relay".to_string()
}

fn default_admin() -> String {
    DEFAULT_ADMIN.to_string()
}

fn default_listen() -> Vec<String> {
    DEFAULT_LISTEN
        .iter()
        .map(|address| address.to_string())
        .collect()
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: default_name(),
            listen: default_listen(),
            admin: default_admin(),
            peers: Vec::new(),
            tokens: Vec::new(),
            tls: None,
            engine: EngineConfig::default(),
            registry: RegistrySection::default(),
        }
    }
}

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse, or a field is unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// serde's message: the line, the column and the field.
        message: String,
    },
    /// A field's value is unusable.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, e.g. `listen[1]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl RelayConfig {
    /// Parses YAML text (`path` names it in errors).
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_string(),
            message: error.to_string(),
        })
    }

    /// Reads and parses the file at `path`; relative TLS paths are relative to its folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::from_yaml(&text, &path.display().to_string())?;
        if let (Some(tls), Some(folder)) = (&mut config.tls, path.parent()) {
            tls.resolve_relative_to(folder);
        }
        Ok(config)
    }

    /// Checks every value that parsing alone does not: names, addresses, tokens, TLS pairs and
    /// engine limits. The error names the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { field, message };
        atbus_discovery::validate::validate_node_name(&self.name)
            .map_err(|error| invalid("name".into(), error.to_string()))?;
        if self.listen.is_empty() {
            return Err(invalid(
                "listen".into(),
                "a relay needs at least one address to listen on".into(),
            ));
        }
        for (index, address) in self.listen.iter().enumerate() {
            address
                .parse::<atbus_core::Address>()
                .map_err(|error| invalid(format!("listen[{index}]"), error.to_string()))?;
        }
        if !self.admin.is_empty() && self.admin.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "admin".into(),
                format!(
                    "{:?} is not ip:port (e.g. 127.0.0.1:7801); empty for none",
                    self.admin
                ),
            ));
        }
        for (index, address) in self.peers.iter().enumerate() {
            address
                .parse::<atbus_core::Address>()
                .map_err(|error| invalid(format!("peers[{index}]"), error.to_string()))?;
        }
        for (index, token) in self.tokens.iter().enumerate() {
            atbus_core::engine::Token::new(token)
                .map_err(|error| invalid(format!("tokens[{index}]"), error.to_string()))?;
        }
        if let Some(tls) = &self.tls {
            tls.check()
                .map_err(|error| invalid("tls".into(), error.to_string()))?;
        }
        self.engine
            .validate()
            .map_err(|message| invalid("engine".into(), message))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_development_defaults() {
        let config = RelayConfig::from_yaml("", "relay.yml").expect("empty is fine");
        assert_eq!(config.name, "relay");
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert!(config.tokens.is_empty());
        assert!(config.check().is_ok());
    }

    #[test]
    fn mistakes_name_their_field() {
        let typo = RelayConfig::from_yaml("listne: []\n", "relay.yml").unwrap_err();
        assert!(typo.to_string().contains("listne"), "{typo}");
        let address = RelayConfig::from_yaml("listen: [\"tcp://127.0.0.1\"]\n", "r.yml")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(address.to_string().starts_with("listen[0]"), "{address}");
        let token = RelayConfig::from_yaml("tokens: [short]\n", "r.yml")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(token.to_string().starts_with("tokens[0]"), "{token}");
        let name = RelayConfig::from_yaml("name: Relay One\n", "r.yml")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(name.to_string().starts_with("name"), "{name}");
        let engine = RelayConfig::from_yaml("engine:\n  peer_receive_budget: 10\n", "r.yml")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(
            engine.to_string().contains("peer_receive_budget"),
            "{engine}"
        );
    }
}
