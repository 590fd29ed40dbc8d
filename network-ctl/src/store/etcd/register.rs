//! Registration: a node gets a free address of its network, or the one of the reclaimed
//! binding when the pool is full, in one compare-and-swap transaction tried again with what
//! changed. Registrations with one bootstrap token take turns in a replica ([`Turn`]); an
//! address in flight is held by a [`Reservation`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::cache::{Cache, Choice};
use super::stored::{StoredBinding, StoredToken, decode, encode};
use super::{ATTEMPTS, EtcdStore, Read, lock, lost_races, revision_of};
use crate::error::ControlError;
use crate::records::{Binding, NewBinding, NodeState};

/// How long a registration that finds the pool full waits for the watch to bring the addresses
/// etcd says were freed.
const CATCH_UP: Duration = Duration::from_secs(2);

impl EtcdStore {
    /// Waits for the turn of `digest`: registrations with one bootstrap token take turns in
    /// this replica.
    async fn turn(&self, digest: &str) -> Turn<'_> {
        let mut turn = Turn {
            turns: &self.turns,
            digest: digest.to_string(),
            _guard: None,
        };
        let queue = Arc::clone(lock(&self.turns).entry(digest.to_string()).or_default());
        turn._guard = Some(queue.lock_owned().await);
        turn
    }

    pub(super) async fn register_node(&self, request: NewBinding) -> Result<Binding, ControlError> {
        let NewBinding {
            bootstrap_digest: digest,
            net_token,
            node_token,
            node_name,
            now,
        } = request;
        let _turn = self.turn(&digest).await;
        let token_key = self.keys.bootstrap(&digest);
        let net_key = self.keys.network(&net_token);
        let binding_key = self.keys.binding(&net_token, &node_token);
        let read = self
            .read(
                "read the bootstrap token of a registration",
                vec![
                    TxnOp::get(token_key.as_str(), None),
                    TxnOp::get(net_key.as_str(), None),
                    TxnOp::get(binding_key.as_str(), None),
                ],
            )
            .await?;
        self.see_read(&read, &[(&net_key, 1), (&binding_key, 2)]);
        let mut token = read.first(0).cloned();
        let mut taken = read.first(2).is_some();
        // A free address taken from the pool for this registration, held across attempts.
        let mut reservation: Option<Reservation> = None;
        let mut checked_full = false;
        for _ in 0..ATTEMPTS {
            let Some(token_kv) = &token else {
                return Err(ControlError::UnknownBootstrapToken);
            };
            let stored: StoredToken = decode(&token_key, token_kv.value())?;
            if let Some(refusal) = stored.token(&digest).refusal(now) {
                return Err(refusal);
            }
            if taken {
                return Err(ControlError::Conflict(format!(
                    "node token {node_token:?} is bound in network {net_token:?} already: register with another node token"
                )));
            }
            let (ip, prefix_len, victim) = match &reservation {
                Some(reserved) => (reserved.ip, reserved.prefix_len, None),
                None => {
                    let choice = self.cache().choose(&net_token);
                    match choice {
                        Choice::UnknownNetwork => {
                            return Err(ControlError::UnknownNetwork {
                                net_token: net_token.clone(),
                            });
                        }
                        Choice::Free { ip, prefix_len } => {
                            reservation = Some(Reservation {
                                cache: Arc::clone(&self.cache),
                                net_token: net_token.clone(),
                                ip,
                                prefix_len,
                            });
                            (ip, prefix_len, None)
                        }
                        Choice::Reclaim { victim, prefix_len } => {
                            (victim.ip, prefix_len, Some(victim))
                        }
                        Choice::Full {
                            bound,
                            cached,
                            cidr,
                        } => {
                            if !checked_full && self.wait_for_frees(&net_token, cached).await? {
                                checked_full = true;
                                continue;
                            }
                            return Err(ControlError::PoolExhausted {
                                net_token,
                                cidr: cidr.to_string(),
                                bound: bound as u64,
                            });
                        }
                    }
                }
            };
            let address_key = self.keys.address(&net_token, ip);
            let victim_key = victim
                .as_ref()
                .map(|victim| self.keys.binding(&net_token, &victim.node_token));
            let binding = StoredBinding {
                ip,
                state: NodeState::NeverConnected.as_i64(),
                node_name: node_name.clone(),
                create_time: now,
                update_time: now,
                last_seen: None,
            };
            let binding_value = encode(&binding);
            let token_value = encode(&StoredToken {
                uses: stored.uses.saturating_add(1),
                ..stored
            });
            let mut when = vec![
                Compare::mod_revision(
                    token_key.as_str(),
                    CompareOp::Equal,
                    token_kv.mod_revision(),
                ),
                Compare::create_revision(binding_key.as_str(), CompareOp::Equal, 0),
                Compare::version(net_key.as_str(), CompareOp::Greater, 0),
            ];
            let mut then = vec![
                TxnOp::put(binding_key.as_str(), binding_value.clone(), None),
                TxnOp::put(address_key.as_str(), node_token.as_str(), None),
                TxnOp::put(token_key.as_str(), token_value, None),
            ];
            let mut otherwise = vec![
                TxnOp::get(token_key.as_str(), None),
                TxnOp::get(binding_key.as_str(), None),
                TxnOp::get(net_key.as_str(), None),
                TxnOp::get(address_key.as_str(), None),
            ];
            match (&victim, &victim_key) {
                (Some(victim), Some(victim_key)) => {
                    when.push(Compare::mod_revision(
                        victim_key.as_str(),
                        CompareOp::Equal,
                        victim.revision,
                    ));
                    when.push(match victim.address_revision {
                        Some(revision) => {
                            Compare::mod_revision(address_key.as_str(), CompareOp::Equal, revision)
                        }
                        None => Compare::create_revision(address_key.as_str(), CompareOp::Equal, 0),
                    });
                    then.push(TxnOp::delete(victim_key.as_str(), None));
                    otherwise.push(TxnOp::get(victim_key.as_str(), None));
                }
                _ => when.push(Compare::create_revision(
                    address_key.as_str(),
                    CompareOp::Equal,
                    0,
                )),
            }
            let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
            let response = self.txn("register a node", txn).await?;
            if response.succeeded() {
                let mut writes = vec![
                    (binding_key.as_str(), Some(binding_value.as_slice())),
                    (address_key.as_str(), Some(node_token.as_bytes())),
                ];
                if let Some(victim_key) = &victim_key {
                    writes.push((victim_key.as_str(), None));
                }
                self.see_writes(revision_of(&response), &writes);
                // The address key is in the cache now: the reservation ends, the address stays
                // bound.
                drop(reservation);
                if let Some(victim) = victim {
                    tracing::info!(
                        %net_token,
                        node_token = %victim.node_token,
                        %ip,
                        "reclaimed the least recently used binding of a node that is not connected"
                    );
                }
                return Ok(binding.into_binding(net_token, node_token, prefix_len));
            }
            // Something changed: what it is, into the cache, and try again with it.
            let read = Read::of(&response);
            let mut seen = vec![
                (binding_key.as_str(), 1),
                (net_key.as_str(), 2),
                (address_key.as_str(), 3),
            ];
            if let Some(victim_key) = &victim_key {
                seen.push((victim_key.as_str(), 4));
            }
            self.see_read(&read, &seen);
            token = read.first(0).cloned();
            taken = read.first(1).is_some();
            if read.first(3).is_some() {
                // Another replica took the address: the cache knows now, so the reservation
                // ends with the address bound, and the next attempt takes another.
                reservation = None;
            }
        }
        Err(lost_races(&format!("registering in network {net_token:?}")))
    }

    /// The pool of `net_token` looks full with `cached` address keys known: true if etcd holds
    /// fewer (the watch has not brought some deletions yet), once the watch caught up or after
    /// [`CATCH_UP`].
    async fn wait_for_frees(&self, net_token: &str, cached: usize) -> Result<bool, ControlError> {
        let read = self
            .read(
                "count the bound addresses",
                vec![TxnOp::get(
                    self.keys.addresses_of(net_token),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )],
            )
            .await?;
        let count = usize::try_from(read.count(0)).unwrap_or_default();
        if count >= cached {
            return Ok(false);
        }
        let deadline = Instant::now() + CATCH_UP;
        loop {
            {
                let cache = self.cache();
                let known = cache
                    .nets
                    .get(net_token)
                    .map_or(0, |net| net.addresses.len());
                if known <= count || cache.watched >= read.revision {
                    return Ok(true);
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    net_token,
                    "the etcd watch of this replica is more than {CATCH_UP:?} behind"
                );
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Registrations with one bootstrap token take turns; the queue goes when nobody waits.
struct Turn<'a> {
    turns: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    digest: String,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self._guard = None;
        let mut turns = lock(self.turns);
        if turns
            .get(&self.digest)
            .is_some_and(|queue| Arc::strong_count(queue) == 1)
        {
            turns.remove(&self.digest);
        }
    }
}

/// An address taken from the pool for a registration in flight; given back to the pool when
/// dropped unless its address key is known by then.
struct Reservation {
    cache: Arc<Mutex<Cache>>,
    net_token: String,
    ip: IpAddr,
    prefix_len: u8,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.cache).unreserve(&self.net_token, self.ip);
    }
}
