//! The node record: what a node publishes about itself so that others can find it and
//! choose how to reach it. Stored in etcd as JSON (`etcdctl get` shows it as it is); the same
//! record travels over the bus as the protobuf message `atbus.discovery.node_record`.
//!
//! A record never holds a secret: the tokens a node accepts are published as SHA-256 digests
//! ([`token_digest`]), enough for a peer to tell which token to present, useless to an attacker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, validate_labels, validate_node_name};

/// What a node publishes about itself.
///
/// ```
/// use atbus_discovery::NodeRecord;
///
/// let mut record = NodeRecord::new("echo-1");
/// record.metadata.namespace = "prod".into();
/// record.metadata.labels.insert("app".into(), "echo".into());
/// record.validate().unwrap();
///
/// let json = record.to_json();
/// assert_eq!(NodeRecord::from_json(&json).unwrap(), record);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    /// The node's name, unique on the bus (a DNS subdomain).
    pub name: String,
    /// The atbus version the node runs.
    pub version: String,
    /// The application's own data, opaque to the bus.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub custom_data: String,
    /// SHA-256 digests (lowercase hex) of the tokens the node accepts; never the tokens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub token_digests: Vec<String>,
    /// Where the node runs: same host means unix sockets work, same process means memory.
    pub host: HostInfo,
    /// Namespace, kind, labels and annotations.
    pub metadata: Metadata,
    /// The node's own addresses: `mem://` (for its process), `unix://` (for its host) and its
    /// internal `tcp://`, `udp://`... (for its namespace); see [`path_to`](crate::path::path_to).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Entry points for nodes outside the namespace, tried by priority.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<Gateway>,
    /// The relay through which others should reach this node, if it has a preference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_relay: Option<AdvertiseRelay>,
}

/// The host a node runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostInfo {
    /// Host name or address.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
}

/// Service metadata, as in Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Namespace: `default` when empty.
    pub namespace: String,
    /// The application's API version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The kind of service (`network-manager`, `echo`...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The group of services it belongs to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Labels (Kubernetes rules): what selectors match.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations: free-form key-value notes (keys follow the label-key rules).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An entry point to a node for peers that match it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gateway {
    /// Lower first.
    pub priority: i32,
    /// Addresses, `scheme://host:port`.
    pub addresses: Vec<String>,
    /// Only peers on this host use it (any host when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_host: Option<String>,
    /// Only peers whose labels include all of these use it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// The relay a node would rather be reached through: by name, or any relay whose labels include
/// these.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AdvertiseRelay {
    /// A relay's node name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels a relay must carry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A record that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A name, label or annotation breaks the Kubernetes rules.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A gateway address is not `scheme://host:port`.
    #[error("gateways[{gateway}].addresses: {address:?} is not scheme://host:port")]
    GatewayAddress {
        /// Index of the gateway.
        gateway: usize,
        /// The address as given.
        address: String,
    },
    /// An address of the node's own is not `scheme://...`.
    #[error("addresses[{index}]: {address:?} is not scheme://address")]
    Address {
        /// Index of the address.
        index: usize,
        /// The address as given.
        address: String,
    },
    /// A token digest is not 64 lowercase hex characters (a token in clear, perhaps).
    #[error(
        "token_digests[{index}]: not a SHA-256 digest in hex (put token_digest(token) there, never the token)"
    )]
    TokenDigest {
        /// Index of the digest.
        index: usize,
    },
    /// The JSON does not decode as a record.
    #[error("not a node record: {0}")]
    Json(String),
}

impl NodeRecord {
    /// A record for `name` with this process's host name and pid and atbus's version.
    pub fn new(name: impl Into<String>) -> Self {
        NodeRecord {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: HostInfo::this_process(),
            ..Default::default()
        }
    }

    /// The namespace, `default` when empty.
    pub fn namespace(&self) -> &str {
        match self.metadata.namespace.as_str() {
            "" => "default",
            namespace => namespace,
        }
    }

    /// Checks the name, namespace, labels, annotation keys, gateway addresses and token digests;
    /// the error names the field.
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_node_name(&self.name)?;
        if !self.metadata.namespace.is_empty() {
            crate::validate::validate_label_value(&self.metadata.namespace)
                .map_err(|error| error.at("metadata.namespace"))?;
        }
        validate_labels(&self.metadata.labels)
            .map_err(|error| prefixed(error, "metadata.labels"))?;
        for key in self.metadata.annotations.keys() {
            crate::validate::validate_label_key(key)
                .map_err(|error| error.at(format!("metadata.annotations[{key:?}]")))?;
        }
        for (index, address) in self.addresses.iter().enumerate() {
            let scheme = address.split_once("://").map(|(scheme, _)| scheme);
            if !scheme
                .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(RecordError::Address {
                    index,
                    address: address.clone(),
                });
            }
        }
        for (gateway, entry) in self.gateways.iter().enumerate() {
            for address in &entry.addresses {
                if !is_address(address) {
                    return Err(RecordError::GatewayAddress {
                        gateway,
                        address: address.clone(),
                    });
                }
            }
            validate_labels(&entry.match_labels)
                .map_err(|error| prefixed(error, &format!("gateways[{gateway}].match_labels")))?;
        }
        for (index, digest) in self.token_digests.iter().enumerate() {
            let hex = digest.len() == 64
                && digest
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
            if !hex {
                return Err(RecordError::TokenDigest { index });
            }
        }
        if let Some(relay) = &self.advertise_relay {
            if let Some(name) = &relay.name {
                validate_node_name(name).map_err(|error| error.at("advertise_relay.name"))?;
            }
            validate_labels(&relay.labels)
                .map_err(|error| prefixed(error, "advertise_relay.labels"))?;
        }
        Ok(())
    }

    /// The record as JSON, as stored in etcd.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serialises")
    }

    /// A record from its JSON.
    pub fn from_json(json: &str) -> Result<Self, RecordError> {
        serde_json::from_str(json).map_err(|error| RecordError::Json(error.to_string()))
    }
}

impl HostInfo {
    /// This process: the host name (from `/proc/sys/kernel/hostname`, or `HOSTNAME`) and pid.
    pub fn this_process() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        HostInfo {
            hostname,
            pid: std::process::id(),
        }
    }
}

/// The SHA-256 digest of `token`, lowercase hex: what a record publishes instead of the token.
///
/// ```
/// let digest = atbus_discovery::token_digest(b"secret");
/// assert_eq!(digest.len(), 64);
/// assert!(!digest.contains("secret"));
/// ```
pub fn token_digest(token: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, token)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `scheme://host:port` with a non-empty scheme and host and a numeric port.
fn is_address(address: &str) -> bool {
    let Some((scheme, rest)) = address.split_once("://") else {
        return false;
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    !scheme.is_empty()
        && scheme.bytes().all(|byte| byte.is_ascii_alphanumeric())
        && !host.is_empty()
        && port.parse::<u16>().is_ok()
}

/// `error` (which names `labels["k"]`) reported under `parent` (`parent["k"]`).
fn prefixed(error: ValidationError, parent: &str) -> ValidationError {
    let field = error
        .field
        .strip_prefix("labels")
        .map(|rest| format!("{parent}{rest}"))
        .unwrap_or_else(|| parent.to_string());
    error.at(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        let mut record = NodeRecord::new("echo-1");
        record.metadata.labels.insert("app".into(), "echo".into());
        record
    }

    #[test]
    fn a_record_round_trips_through_json_and_leaves_empty_fields_out() {
        let record = record();
        let json = record.to_json();
        assert!(!json.contains("gateways"), "{json}");
        assert!(json.contains("\"app\":\"echo\""), "{json}");
        assert_eq!(NodeRecord::from_json(&json).unwrap(), record);
    }

    #[test]
    fn a_bad_label_is_reported_under_metadata_labels() {
        let mut record = record();
        record
            .metadata
            .labels
            .insert("tier".into(), "front end".into());
        let error = record.validate().unwrap_err();
        assert!(
            error.to_string().starts_with("metadata.labels[\"tier\"]"),
            "{error}"
        );
    }

    #[test]
    fn a_gateway_address_must_be_scheme_host_port() {
        let mut record = record();
        record.gateways.push(Gateway {
            addresses: vec!["tcp://10.0.0.1:7800".into(), "10.0.0.1".into()],
            ..Default::default()
        });
        assert_eq!(
            record.validate(),
            Err(RecordError::GatewayAddress {
                gateway: 0,
                address: "10.0.0.1".into()
            })
        );
    }

    #[test]
    fn a_token_in_clear_is_refused_and_its_digest_accepted() {
        let mut record = record();
        record.token_digests.push("my secret token".into());
        assert_eq!(
            record.validate(),
            Err(RecordError::TokenDigest { index: 0 })
        );
        record.token_digests[0] = token_digest(b"my secret token");
        record.validate().unwrap();
    }

    #[test]
    fn an_uppercase_name_is_refused() {
        let error = NodeRecord::new("Echo").validate().unwrap_err();
        assert!(error.to_string().starts_with("name:"), "{error}");
    }
}
