//! The values under the keys, as JSON: a network, a binding, a bootstrap token and a
//! certificate authority, with [`encode`] and [`decode`] (which names the key a bad value is
//! under).

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::error::ControlError;
use crate::records::{Binding, BootstrapToken, Network, NodeState};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredNetwork {
    cidr: String,
    gateway: IpAddr,
    server_ip: IpAddr,
    create_time: Millis,
}

impl StoredNetwork {
    pub(super) fn of(network: &Network) -> Self {
        Self {
            cidr: network.cidr.to_string(),
            gateway: network.gateway,
            server_ip: network.server_ip,
            create_time: network.create_time,
        }
    }

    fn network(&self, net_token: &str) -> Result<Network, ControlError> {
        Network::new(
            net_token,
            &self.cidr,
            Some(&self.gateway.to_string()),
            Some(&self.server_ip.to_string()),
            self.create_time,
        )
    }
}

pub(super) fn stored_network(
    key: &str,
    net_token: &str,
    value: &[u8],
) -> Result<Network, ControlError> {
    decode::<StoredNetwork>(key, value)?
        .network(net_token)
        .map_err(|error| {
            ControlError::Storage(format!(
                "etcd key {key} holds an invalid network ({error}): repair or delete it"
            ))
        })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredBinding {
    pub(super) ip: IpAddr,
    pub(super) state: i64,
    #[serde(default)]
    pub(super) node_name: String,
    pub(super) create_time: Millis,
    pub(super) update_time: Millis,
    #[serde(default)]
    pub(super) last_seen: Option<Millis>,
}

impl StoredBinding {
    pub(super) fn into_binding(
        self,
        net_token: String,
        node_token: String,
        prefix_len: u8,
    ) -> Binding {
        Binding {
            node_token,
            net_token,
            ip: self.ip,
            prefix_len,
            state: NodeState::from_i64(self.state),
            node_name: self.node_name,
            create_time: self.create_time,
            update_time: self.update_time,
            last_seen: self.last_seen,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredToken {
    pub(super) create_time: Millis,
    #[serde(default)]
    pub(super) expire_time: Option<Millis>,
    #[serde(default)]
    pub(super) single_use: bool,
    #[serde(default)]
    pub(super) uses: u32,
}

impl StoredToken {
    pub(super) fn of(token: &BootstrapToken) -> Self {
        Self {
            create_time: token.create_time,
            expire_time: token.expire_time,
            single_use: token.single_use,
            uses: token.uses,
        }
    }

    pub(super) fn token(&self, digest: &str) -> BootstrapToken {
        BootstrapToken {
            digest: digest.to_string(),
            create_time: self.create_time,
            expire_time: self.expire_time,
            single_use: self.single_use,
            uses: self.uses,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredAuthority {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

pub(super) fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(value).map_err(|error| {
        ControlError::Storage(format!(
            "etcd key {key} does not hold what network-ctl writes there ({error}): repair or delete it"
        ))
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain records always serialize to JSON")
}
