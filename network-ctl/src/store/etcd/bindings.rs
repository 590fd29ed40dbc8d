//! Bindings once registered: reading one, all or a node's (read from etcd, so they see every
//! replica's writes), unregistering and updating one, each a compare of the binding key's
//! revision.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::keys::Key;
use super::stored::{StoredBinding, decode, encode, stored_network};
use super::{ATTEMPTS, EtcdStore, MAX_TXN_OPS, Read, lost_races, revision_of};
use crate::clock::Millis;
use crate::error::ControlError;
use crate::records::{Binding, Network, NodeState, NodeUpdate};
use crate::token::RESERVED_NODE_TOKEN;

impl EtcdStore {
    fn network_of(
        &self,
        net_token: &str,
        read: &Read,
        index: usize,
    ) -> Result<Network, ControlError> {
        let key = self.keys.network(net_token);
        match read.first(index) {
            Some(kv) => stored_network(&key, net_token, kv.value()),
            None => Err(ControlError::UnknownNetwork {
                net_token: net_token.to_string(),
            }),
        }
    }

    /// The network of `net_token` and, if there is one, the binding stored at `binding_key`
    /// with the revision it was last changed at.
    async fn read_stored(
        &self,
        net_token: &str,
        binding_key: &str,
    ) -> Result<(Network, Option<(StoredBinding, i64)>), ControlError> {
        let read = self
            .read(
                "read a binding",
                vec![
                    TxnOp::get(self.keys.network(net_token), None),
                    TxnOp::get(binding_key, None),
                ],
            )
            .await?;
        let network = self.network_of(net_token, &read, 0)?;
        let stored = read
            .first(1)
            .map(|kv| Ok::<_, ControlError>((decode(binding_key, kv.value())?, kv.mod_revision())))
            .transpose()?;
        Ok((network, stored))
    }

    pub(super) async fn read_binding(
        &self,
        net_token: &str,
        node_token: &str,
    ) -> Result<Option<Binding>, ControlError> {
        let binding_key = self.keys.binding(net_token, node_token);
        let (network, stored) = self.read_stored(net_token, &binding_key).await?;
        Ok(stored.map(|(stored, _)| {
            stored.into_binding(
                net_token.to_string(),
                node_token.to_string(),
                network.cidr.prefix(),
            )
        }))
    }

    pub(super) async fn read_bindings(
        &self,
        net_token: Option<&str>,
    ) -> Result<Vec<Binding>, ControlError> {
        let gets = match net_token {
            Some(net_token) => vec![
                TxnOp::get(self.keys.network(net_token), None),
                TxnOp::get(
                    self.keys.bindings_of(net_token),
                    Some(GetOptions::new().with_prefix()),
                ),
            ],
            None => vec![
                TxnOp::get(self.keys.networks(), Some(GetOptions::new().with_prefix())),
                TxnOp::get(self.keys.bindings(), Some(GetOptions::new().with_prefix())),
            ],
        };
        let read = self.read("list the bindings", gets).await?;
        let mut networks = HashMap::new();
        for kv in read.all(0) {
            let Ok(key) = kv.key_str() else { continue };
            if let Some(Key::Network(net_token)) = self.keys.parse(key) {
                let network = stored_network(key, &net_token, kv.value())?;
                networks.insert(net_token, network);
            }
        }
        if let Some(net_token) = net_token
            && !networks.contains_key(net_token)
        {
            return Err(ControlError::UnknownNetwork {
                net_token: net_token.to_string(),
            });
        }
        let mut bindings = Vec::with_capacity(read.all(1).len());
        for kv in read.all(1) {
            let Ok(key) = kv.key_str() else { continue };
            let Some(Key::Binding(net_token, node_token)) = self.keys.parse(key) else {
                continue;
            };
            let Some(network) = networks.get(&net_token) else {
                tracing::warn!(key, "a binding of a network that does not exist: ignored");
                continue;
            };
            let stored: StoredBinding = decode(key, kv.value())?;
            bindings.push(stored.into_binding(net_token, node_token, network.cidr.prefix()));
        }
        sort_bindings(&mut bindings);
        Ok(bindings)
    }

    pub(super) async fn read_bindings_of_node(
        &self,
        node_name: &str,
    ) -> Result<Vec<Binding>, ControlError> {
        if node_name.is_empty() {
            // Nameless bindings are not indexed: look at all of them.
            let mut bindings = self.read_bindings(None).await?;
            bindings.retain(|binding| binding.node_name.is_empty());
            return Ok(bindings);
        }
        let candidates: Vec<(String, String)> = self
            .cache()
            .by_name
            .get(node_name)
            .map(|held| held.iter().cloned().collect())
            .unwrap_or_default();
        let mut bindings = Vec::new();
        for chunk in candidates.chunks(MAX_TXN_OPS / 2) {
            let gets = chunk
                .iter()
                .flat_map(|(net_token, node_token)| {
                    [
                        TxnOp::get(self.keys.network(net_token), None),
                        TxnOp::get(self.keys.binding(net_token, node_token), None),
                    ]
                })
                .collect::<Vec<_>>();
            let read = self.read("read the bindings of a node", gets).await?;
            for (index, (net_token, node_token)) in chunk.iter().enumerate() {
                let (Some(net_kv), Some(binding_kv)) =
                    (read.first(2 * index), read.first(2 * index + 1))
                else {
                    continue;
                };
                let network =
                    stored_network(&self.keys.network(net_token), net_token, net_kv.value())?;
                let stored: StoredBinding = decode(
                    &self.keys.binding(net_token, node_token),
                    binding_kv.value(),
                )?;
                if stored.node_name == node_name {
                    bindings.push(stored.into_binding(
                        net_token.clone(),
                        node_token.clone(),
                        network.cidr.prefix(),
                    ));
                }
            }
        }
        sort_bindings(&mut bindings);
        Ok(bindings)
    }

    pub(super) async fn unregister_node(
        &self,
        net_token: &str,
        node_token: &str,
    ) -> Result<Binding, ControlError> {
        if node_token == RESERVED_NODE_TOKEN {
            return Err(ControlError::Reserved(format!(
                "the reserved node token {RESERVED_NODE_TOKEN:?} holds the server's address and cannot be unregistered"
            )));
        }
        let binding_key = self.keys.binding(net_token, node_token);
        for _ in 0..ATTEMPTS {
            let (network, stored) = self.read_stored(net_token, &binding_key).await?;
            let Some((stored, revision)) = stored else {
                return Err(ControlError::UnknownNode {
                    node_token: node_token.to_string(),
                    net_token: net_token.to_string(),
                });
            };
            let address_key = self.keys.address(net_token, stored.ip);
            // The address key goes with the binding if it is this node's (it always is, unless
            // someone edited etcd by hand).
            let free_address = Txn::new()
                .when([Compare::value(
                    address_key.as_str(),
                    CompareOp::Equal,
                    node_token,
                )])
                .and_then([TxnOp::delete(address_key.as_str(), None)]);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    binding_key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([
                    TxnOp::delete(binding_key.as_str(), None),
                    TxnOp::txn(free_address),
                ]);
            let response = self.txn("unregister a node", txn).await?;
            if !response.succeeded() {
                continue;
            }
            let freed = response.op_responses().into_iter().any(|op| match op {
                TxnOpResponse::Txn(inner) => inner.succeeded(),
                _ => false,
            });
            let mut writes = vec![(binding_key.as_str(), None)];
            if freed {
                writes.push((address_key.as_str(), None));
            }
            self.see_writes(revision_of(&response), &writes);
            return Ok(stored.into_binding(
                net_token.to_string(),
                node_token.to_string(),
                network.cidr.prefix(),
            ));
        }
        Err(lost_races(&format!(
            "unregistering {node_token:?} from {net_token:?}"
        )))
    }

    pub(super) async fn update(
        &self,
        net_token: &str,
        node_token: &str,
        update: NodeUpdate,
        now: Millis,
    ) -> Result<Binding, ControlError> {
        let binding_key = self.keys.binding(net_token, node_token);
        for _ in 0..ATTEMPTS {
            let (network, stored) = self.read_stored(net_token, &binding_key).await?;
            let Some((old, revision)) = stored else {
                return Err(ControlError::UnknownNode {
                    node_token: node_token.to_string(),
                    net_token: net_token.to_string(),
                });
            };
            let mut new = old.clone();
            if let Some(state) = update.state {
                new.state = state.as_i64();
            }
            if let Some(name) = &update.node_name {
                new.node_name.clone_from(name);
            }
            if NodeState::from_i64(new.state) != NodeState::from_i64(old.state)
                || new.node_name != old.node_name
            {
                new.update_time = now;
            }
            if update.last_seen.is_some() {
                new.last_seen = update.last_seen;
            }
            let prefix_len = network.cidr.prefix();
            if new == old {
                return Ok(new.into_binding(
                    net_token.to_string(),
                    node_token.to_string(),
                    prefix_len,
                ));
            }
            let value = encode(&new);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    binding_key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put(binding_key.as_str(), value.clone(), None)]);
            let response = self.txn("update a binding", txn).await?;
            if response.succeeded() {
                self.see_writes(revision_of(&response), &[(&binding_key, Some(&value))]);
                return Ok(new.into_binding(
                    net_token.to_string(),
                    node_token.to_string(),
                    prefix_len,
                ));
            }
        }
        Err(lost_races(&format!(
            "updating {node_token:?} in {net_token:?}"
        )))
    }
}

fn sort_bindings(bindings: &mut [Binding]) {
    bindings.sort_by(|a, b| (&a.net_token, a.ip).cmp(&(&b.net_token, b.ip)));
}
