//! What a replica knows ([`Cache`]): per network the address pool, the address keys and the
//! bindings with the reclaim candidates in LRU order, each key with the revision it was seen
//! at. Writes, failed transactions' reads and watch events are applied with [`Cache::see`],
//! which never lets something older overwrite something newer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use etcd_client::KeyValue;

use super::keys::{Key, Keys};
use super::stored::{StoredBinding, stored_network};
use crate::cidr::Cidr;
use crate::clock::Millis;
use crate::pool::IpPool;
use crate::records::{Network, NodeState};
use crate::token::RESERVED_NODE_TOKEN;

/// What a replica knows of the networks, bindings and address keys, each key with the revision
/// it was seen at.
#[derive(Debug)]
pub(super) struct Cache {
    keys: Keys,
    /// Every key seen: its revision and whether it exists (false: deleted, a tombstone).
    revisions: HashMap<String, (i64, bool)>,
    /// The tombstones by revision, dropped once the watch is past them.
    tombstones: BTreeSet<(i64, String)>,
    /// A key not in `revisions` is known as it was at this revision: nothing older applies.
    floor: i64,
    /// The newest revision the watch brought (or the one read at).
    pub(super) watched: i64,
    pub(super) nets: HashMap<String, NetCache>,
    /// Bus name → (net token, node token) of the bindings held under it.
    pub(super) by_name: HashMap<String, BTreeSet<(String, String)>>,
}

#[derive(Debug, Default)]
pub(super) struct NetCache {
    network: Option<Network>,
    /// Bound: the addresses with a key and the reserved ones. Present with `network`.
    pool: Option<IpPool>,
    /// Address → (node token holding it, revision of its key).
    pub(super) addresses: HashMap<IpAddr, (String, i64)>,
    bindings: HashMap<String, CachedBinding>,
    /// Reclaim candidates, LRU first: (update_time, create_time, node token) of the bindings
    /// that are not connected and not reserved.
    victims: BTreeSet<(Millis, Millis, String)>,
    /// Addresses taken from the pool by registrations in flight.
    reserved: HashSet<IpAddr>,
}

#[derive(Debug)]
struct CachedBinding {
    ip: IpAddr,
    node_name: String,
    create_time: Millis,
    update_time: Millis,
    revision: i64,
}

/// What a registration can have.
pub(super) enum Choice {
    UnknownNetwork,
    Free {
        ip: IpAddr,
        prefix_len: u8,
    },
    Reclaim {
        victim: Victim,
        prefix_len: u8,
    },
    Full {
        bound: usize,
        cached: usize,
        cidr: Cidr,
    },
}

/// A binding to reclaim, as the cache knows it.
pub(super) struct Victim {
    pub(super) node_token: String,
    pub(super) ip: IpAddr,
    /// Its binding key's revision.
    pub(super) revision: i64,
    /// Its address key's revision, if the cache knows the key as the victim's.
    pub(super) address_revision: Option<i64>,
}

impl Cache {
    pub(super) fn new(keys: Keys) -> Self {
        Self {
            keys,
            revisions: HashMap::new(),
            tombstones: BTreeSet::new(),
            floor: 0,
            watched: 0,
            nets: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Replaces everything with `kvs`, read at `revision`; keeps the reservations in flight.
    pub(super) fn reset(&mut self, revision: i64, kvs: &[KeyValue]) {
        let reserved: Vec<(String, HashSet<IpAddr>)> = self
            .nets
            .drain()
            .filter(|(_, net)| !net.reserved.is_empty())
            .map(|(net_token, net)| (net_token, net.reserved))
            .collect();
        *self = Cache::new(self.keys.clone());
        for (net_token, reserved) in reserved {
            self.nets.entry(net_token).or_default().reserved = reserved;
        }
        for kv in kvs {
            if let Ok(key) = kv.key_str() {
                self.see(key, Some(kv.value()), kv.mod_revision());
            }
        }
        self.floor = revision;
        self.watched = revision;
    }

    /// `key` holds `value` (`None`: it does not exist) as of `revision`; ignored if the cache
    /// knows the key at that revision or a newer one.
    pub(super) fn see(&mut self, key: &str, value: Option<&[u8]>, revision: i64) {
        let Some(parsed) = self.keys.parse(key) else {
            return;
        };
        if matches!(parsed, Key::Bootstrap(_)) {
            return;
        }
        match self.revisions.get(key) {
            Some(&(known, _)) if revision <= known => return,
            None if revision <= self.floor => return,
            Some(&(known, false)) => {
                self.tombstones.remove(&(known, key.to_string()));
            }
            _ => {}
        }
        self.revisions
            .insert(key.to_string(), (revision, value.is_some()));
        if value.is_none() {
            self.tombstones.insert((revision, key.to_string()));
        }
        match parsed {
            Key::Network(net_token) => self.see_network(key, net_token, value),
            Key::Binding(net_token, node_token) => {
                self.see_binding(net_token, node_token, value, revision);
            }
            Key::Address(net_token, ip) => self.see_address(net_token, ip, value, revision),
            Key::Bootstrap(_) => {}
        }
    }

    fn see_network(&mut self, key: &str, net_token: String, value: Option<&[u8]>) {
        let network = value.and_then(|value| match stored_network(key, &net_token, value) {
            Ok(network) => Some(network),
            Err(error) => {
                tracing::warn!(%error, "ignored by the cache");
                None
            }
        });
        let net = self.nets.entry(net_token).or_default();
        let Some(network) = network else {
            net.network = None;
            net.pool = None;
            return;
        };
        let same = net
            .network
            .as_ref()
            .is_some_and(|known| known.same_shape(&network));
        if !same || net.pool.is_none() {
            let mut pool = network.pool();
            for ip in net.addresses.keys().chain(&net.reserved) {
                pool.mark_bound(*ip);
            }
            net.pool = Some(pool);
        }
        net.network = Some(network);
    }

    fn see_binding(
        &mut self,
        net_token: String,
        node_token: String,
        value: Option<&[u8]>,
        revision: i64,
    ) {
        let stored = value.and_then(|value| {
            serde_json::from_slice::<StoredBinding>(value)
                .map_err(|error| {
                    tracing::warn!(%error, %net_token, %node_token, "a binding the cache cannot read: ignored");
                })
                .ok()
        });
        let net = self.nets.entry(net_token.clone()).or_default();
        if let Some(old) = net.bindings.remove(&node_token) {
            net.victims
                .remove(&(old.update_time, old.create_time, node_token.clone()));
            if let Some(held) = self.by_name.get_mut(&old.node_name) {
                held.remove(&(net_token.clone(), node_token.clone()));
                if held.is_empty() {
                    self.by_name.remove(&old.node_name);
                }
            }
        }
        let Some(stored) = stored else { return };
        let state = NodeState::from_i64(stored.state);
        if state != NodeState::Connected && node_token != RESERVED_NODE_TOKEN {
            net.victims
                .insert((stored.update_time, stored.create_time, node_token.clone()));
        }
        if !stored.node_name.is_empty() {
            self.by_name
                .entry(stored.node_name.clone())
                .or_default()
                .insert((net_token, node_token.clone()));
        }
        net.bindings.insert(
            node_token,
            CachedBinding {
                ip: stored.ip,
                node_name: stored.node_name,
                create_time: stored.create_time,
                update_time: stored.update_time,
                revision,
            },
        );
    }

    fn see_address(&mut self, net_token: String, ip: IpAddr, value: Option<&[u8]>, revision: i64) {
        let net = self.nets.entry(net_token).or_default();
        let reserved = net.reserved.contains(&ip);
        match value {
            Some(holder) => {
                let holder = String::from_utf8_lossy(holder).into_owned();
                let known = net.addresses.insert(ip, (holder, revision)).is_some();
                if !known
                    && !reserved
                    && let Some(pool) = &mut net.pool
                {
                    pool.mark_bound(ip);
                }
            }
            None => {
                if net.addresses.remove(&ip).is_some()
                    && !reserved
                    && let Some(pool) = &mut net.pool
                {
                    pool.release(ip);
                }
            }
        }
    }

    /// Drops the tombstones the watch is past: nothing older than `watched` can come now for
    /// a key the cache does not know.
    pub(super) fn prune(&mut self) {
        while let Some((revision, _)) = self.tombstones.first()
            && *revision <= self.watched
        {
            if let Some((revision, key)) = self.tombstones.pop_first()
                && self.revisions.get(&key) == Some(&(revision, false))
            {
                self.revisions.remove(&key);
            }
        }
        self.floor = self.floor.max(self.watched);
    }

    /// A free address of `net_token` (reserved for the caller), or else the binding to
    /// reclaim.
    pub(super) fn choose(&mut self, net_token: &str) -> Choice {
        let Some(net) = self.nets.get_mut(net_token) else {
            return Choice::UnknownNetwork;
        };
        let (Some(network), Some(pool)) = (&net.network, &mut net.pool) else {
            return Choice::UnknownNetwork;
        };
        let prefix_len = network.cidr.prefix();
        if let Some(ip) = pool.allocate() {
            net.reserved.insert(ip);
            return Choice::Free { ip, prefix_len };
        }
        let victim = net.victims.iter().find_map(|(_, _, node_token)| {
            let binding = net.bindings.get(node_token)?;
            let address_revision = net
                .addresses
                .get(&binding.ip)
                .filter(|(holder, _)| holder == node_token)
                .map(|&(_, revision)| revision);
            Some(Victim {
                node_token: node_token.clone(),
                ip: binding.ip,
                revision: binding.revision,
                address_revision,
            })
        });
        match victim {
            Some(victim) => Choice::Reclaim { victim, prefix_len },
            None => Choice::Full {
                bound: pool.bound(),
                cached: net.addresses.len(),
                cidr: network.cidr,
            },
        }
    }

    /// A registration in flight gives back `ip`: bound if its key is known, else free again.
    pub(super) fn unreserve(&mut self, net_token: &str, ip: IpAddr) {
        let Some(net) = self.nets.get_mut(net_token) else {
            return;
        };
        if net.reserved.remove(&ip)
            && !net.addresses.contains_key(&ip)
            && let Some(pool) = &mut net.pool
        {
            pool.release(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::stored::{StoredNetwork, encode};

    #[test]
    fn the_cache_applies_each_key_only_forwards() {
        let keys = Keys::new("/p");
        let mut cache = Cache::new(keys.clone());
        let network = Network::new("n", "10.0.0.0/29", None, None, 1).unwrap();
        let net_key = keys.network("n");
        cache.see(&net_key, Some(&encode(&StoredNetwork::of(&network))), 2);
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let address_key = keys.address("n", ip);
        cache.see(&address_key, Some(b"a"), 5);
        // A delete older than the put comes late: ignored.
        cache.see(&address_key, None, 4);
        assert!(cache.nets["n"].pool.as_ref().unwrap().is_bound(ip));
        cache.see(&address_key, None, 6);
        assert!(!cache.nets["n"].pool.as_ref().unwrap().is_bound(ip));
        // The put at 5 again (the watch after the own write): ignored, the tombstone is newer.
        cache.see(&address_key, Some(b"a"), 5);
        assert!(!cache.nets["n"].pool.as_ref().unwrap().is_bound(ip));
        cache.watched = 6;
        cache.prune();
        assert!(cache.tombstones.is_empty());
        cache.see(&address_key, Some(b"a"), 5);
        assert!(!cache.nets["n"].pool.as_ref().unwrap().is_bound(ip));
        cache.see(&address_key, Some(b"b"), 7);
        assert!(cache.nets["n"].pool.as_ref().unwrap().is_bound(ip));
    }
}
