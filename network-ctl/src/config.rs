//! `server.yml` and `client.yml`: what the network-manager and the agent read at start (the
//! example files beside the crate comment every field).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It is not valid YAML of the expected shape.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        error: serde_yaml_ng::Error,
    },
    /// A field has a value that cannot work.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// Joining the bus: shared by both files.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BusConfig {
    /// This node's bus name (unique on the bus).
    pub name: String,
    /// Relay addresses, tried in order.
    pub relays: Vec<String>,
    /// The bus token the relay accepts.
    pub bus_token: String,
}

/// `server.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Joining the bus.
    pub bus: BusConfig,
    /// Operator tokens: the CLI presents one of them.
    #[serde(default)]
    pub admin_tokens: Vec<String>,
    /// The range of the network of net token `default` (the seed's field).
    #[serde(default)]
    pub network_addr: Option<String>,
    /// More networks.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// Where bindings are kept (`storage: {sqlite: {...}}` or `storage: {etcd: {...}}`).
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub storage: StorageConfig,
    /// How often expired bootstrap tokens are deleted, in seconds. Default 60.
    #[serde(default = "default_sweep")]
    pub sweep_interval_seconds: u64,
}

fn default_sweep() -> u64 {
    60
}

/// A network in `server.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    /// What nodes name it by.
    pub net_token: String,
    /// Its range.
    pub cidr: String,
    /// Its gateway (default: the first host address).
    #[serde(default)]
    pub gateway: Option<String>,
    /// The server's address, bound to the reserved node token (default: the gateway).
    #[serde(default)]
    pub server_ip: Option<String>,
}

/// The storage backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StorageConfig {
    /// A SQLite file (one replica).
    Sqlite {
        /// The database file (created if missing).
        path: PathBuf,
    },
    /// etcd (several replicas).
    #[cfg(feature = "etcd")]
    Etcd(crate::store::EtcdStoreConfig),
}

impl ServerConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: ServerConfig = read(path)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if config.bus.relays.is_empty() {
            return Err(invalid(
                "bus.relays is empty: give at least one relay address".into(),
            ));
        }
        if config.network_addr.is_none() && config.networks.is_empty() {
            return Err(invalid(
                "no network: set networkAddr (the default network) or networks".into(),
            ));
        }
        if config.sweep_interval_seconds == 0 {
            return Err(invalid("sweepIntervalSeconds must be at least 1".into()));
        }
        Ok(config)
    }
}

/// `client.yml`: the agent's file (the CLI reads its bus section too).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// Joining the bus.
    pub bus: BusConfig,
    /// Where the node token and certificates are kept.
    pub work_dir: PathBuf,
    /// The bootstrap token: used when the work dir holds no node token (or the manager no
    /// longer knows it).
    #[serde(default)]
    pub bootstrap_token: Option<String>,
    /// The network to join (default: `default`).
    #[serde(default)]
    pub net_token: Option<String>,
}

impl ClientConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: ClientConfig = read(path)?;
        if config.bus.relays.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "bus.relays is empty: give at least one relay address".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_example_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let server =
            ServerConfig::load(&dir.join("server.example.yml")).expect("server.example.yml");
        assert_eq!(server.network_addr.as_deref(), Some("10.1.1.0/24"));
        assert!(matches!(server.storage, StorageConfig::Sqlite { .. }));
        let client =
            ClientConfig::load(&dir.join("client.example.yml")).expect("client.example.yml");
        assert_eq!(client.bus.relays.len(), 1);
    }

    #[test]
    fn a_server_file_without_a_network_or_with_a_typo_is_refused_with_the_reason() {
        let base = "bus: {name: m, relays: [tcp://127.0.0.1:1], busToken: t}\nstorage: {sqlite: {path: /tmp/x.db}}\n";
        let error = ServerConfig::load(file(base).path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("no network"), "{error}");
        let error = ServerConfig::load(file(&format!("{base}netwrkAddr: 10.0.0.0/8\n")).path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `netwrkAddr`"), "{error}");
    }
}
