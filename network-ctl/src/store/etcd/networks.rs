//! Networks: creating one (with its reserved binding holding the server's address, put back if
//! missing) and listing them with their bound address counts.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::keys::Key;
use super::stored::{StoredBinding, StoredNetwork, encode, stored_network};
use super::{ATTEMPTS, EtcdStore, MAX_TXN_OPS, Read, lost_races, revision_of};
use crate::error::ControlError;
use crate::records::{Network, NodeState};
use crate::store::NetworkStatus;
use crate::token::RESERVED_NODE_TOKEN;

impl EtcdStore {
    pub(super) async fn ensure(&self, network: Network) -> Result<Network, ControlError> {
        let net_token = network.net_token.as_str();
        let net_key = self.keys.network(net_token);
        let reserved_key = self.keys.binding(net_token, RESERVED_NODE_TOKEN);
        let server_key = self.keys.address(net_token, network.server_ip);
        let net_value = encode(&StoredNetwork::of(&network));
        let reserved_value = encode(&StoredBinding {
            ip: network.server_ip,
            state: NodeState::Connected.as_i64(),
            node_name: String::new(),
            create_time: network.create_time,
            update_time: network.create_time,
            last_seen: None,
        });
        for _ in 0..ATTEMPTS {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    net_key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([
                    TxnOp::put(net_key.as_str(), net_value.clone(), None),
                    TxnOp::put(reserved_key.as_str(), reserved_value.clone(), None),
                    TxnOp::put(server_key.as_str(), RESERVED_NODE_TOKEN, None),
                ])
                .or_else([
                    TxnOp::get(net_key.as_str(), None),
                    TxnOp::get(reserved_key.as_str(), None),
                    TxnOp::get(server_key.as_str(), None),
                ]);
            let response = self.txn("create a network", txn).await?;
            if response.succeeded() {
                self.see_writes(
                    revision_of(&response),
                    &[
                        (&net_key, Some(&net_value)),
                        (&reserved_key, Some(&reserved_value)),
                        (&server_key, Some(RESERVED_NODE_TOKEN.as_bytes())),
                    ],
                );
                tracing::info!(net_token, cidr = %network.cidr, "network created");
                return Ok(network);
            }
            let read = Read::of(&response);
            self.see_read(
                &read,
                &[(&net_key, 0), (&reserved_key, 1), (&server_key, 2)],
            );
            let Some(net_kv) = read.first(0) else {
                // Deleted between the compare and the read: create it again.
                continue;
            };
            let stored = stored_network(&net_key, net_token, net_kv.value())?;
            if !stored.same_shape(&network) {
                return Err(ControlError::Conflict(format!(
                    "network {:?} exists as {} (gateway {}, server {}), not {} (gateway {}, server {})",
                    net_token,
                    stored.cidr,
                    stored.gateway,
                    stored.server_ip,
                    network.cidr,
                    network.gateway,
                    network.server_ip
                )));
            }
            let reserved_missing = read.first(1).is_none();
            let server_missing = read.first(2).is_none();
            if !reserved_missing && !server_missing {
                return Ok(stored);
            }
            // The reserved binding or its address key is missing: put it back.
            let mut when = vec![Compare::mod_revision(
                net_key.as_str(),
                CompareOp::Equal,
                net_kv.mod_revision(),
            )];
            let mut then = Vec::new();
            let mut writes: Vec<(&str, Option<&[u8]>)> = Vec::new();
            if reserved_missing {
                when.push(Compare::create_revision(
                    reserved_key.as_str(),
                    CompareOp::Equal,
                    0,
                ));
                then.push(TxnOp::put(
                    reserved_key.as_str(),
                    reserved_value.clone(),
                    None,
                ));
                writes.push((&reserved_key, Some(&reserved_value)));
            }
            if server_missing {
                when.push(Compare::create_revision(
                    server_key.as_str(),
                    CompareOp::Equal,
                    0,
                ));
                then.push(TxnOp::put(server_key.as_str(), RESERVED_NODE_TOKEN, None));
                writes.push((&server_key, Some(RESERVED_NODE_TOKEN.as_bytes())));
            }
            let txn = Txn::new().when(when).and_then(then);
            let response = self.txn("put the reserved binding back", txn).await?;
            if response.succeeded() {
                self.see_writes(revision_of(&response), &writes);
                tracing::info!(net_token, "the reserved binding was missing: put back");
                return Ok(stored);
            }
        }
        Err(lost_races(&format!("ensuring network {net_token:?}")))
    }

    pub(super) async fn statuses(&self) -> Result<Vec<NetworkStatus>, ControlError> {
        let read = self
            .read(
                "list the networks",
                vec![TxnOp::get(
                    self.keys.networks(),
                    Some(GetOptions::new().with_prefix()),
                )],
            )
            .await?;
        let mut networks = Vec::new();
        for kv in read.all(0) {
            let Ok(key) = kv.key_str() else { continue };
            let Some(Key::Network(net_token)) = self.keys.parse(key) else {
                continue;
            };
            networks.push(stored_network(key, &net_token, kv.value())?);
            self.cache().see(key, Some(kv.value()), kv.mod_revision());
        }
        networks.sort_by(|a, b| a.net_token.cmp(&b.net_token));
        let mut statuses = Vec::with_capacity(networks.len());
        for chunk in networks.chunks(MAX_TXN_OPS) {
            let counts = chunk
                .iter()
                .map(|network| {
                    TxnOp::get(
                        self.keys.addresses_of(&network.net_token),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                })
                .collect::<Vec<_>>();
            let read = self.read("count the bound addresses", counts).await?;
            for (index, network) in chunk.iter().enumerate() {
                statuses.push(NetworkStatus {
                    capacity: network.pool().capacity(),
                    bound: usize::try_from(read.count(index)).unwrap_or_default(),
                    network: network.clone(),
                });
            }
        }
        Ok(statuses)
    }
}
