//! The etcd backend (feature `etcd`): several network-manager replicas share one etcd cluster,
//! and an address is taken by a compare-and-swap on its key, so two replicas never hand out the
//! same address.
//!
//! # Keys
//!
//! Every key is under the configured prefix `<p>` (default `/network-ctl`). Net and node tokens
//! are written with `%` as `%25` and `/` as `%2F`, so that a key splits back into its parts.
//! Times are milliseconds since the Unix epoch; `state` is 0 (never connected), 1 (connected) or
//! 2 (lost).
//!
//! | Key | Value |
//! |---|---|
//! | `<p>/networks/<net token>` | JSON `{cidr, gateway, server_ip, create_time}` |
//! | `<p>/bootstrap/<digest>` | JSON `{create_time, expire_time, single_use, uses}` (`expire_time` null: never) |
//! | `<p>/bindings/<net token>/<node token>` | JSON `{ip, state, node_name, create_time, update_time, last_seen}` |
//! | `<p>/ips/<net token>/<ip>` | the node token holding the address |
//! | `<p>/authorities/<plane>` | JSON `{cert_pem, key_pem}` (`control` or `data`) |
//!
//! # Registration
//!
//! One etcd transaction compares the bootstrap token key's `mod_revision` (so a single-use token
//! registers one node, and a token swept meanwhile is noticed), the absence of the binding key,
//! the presence of the network key and the absence of the address key (`create_revision` 0);
//! then it puts the binding, the address key and the token with its use counted. When the pool
//! is full, the victim is the not-connected, non-reserved binding with the oldest `update_time`
//! (ties: the oldest `create_time`, then the node token): the transaction compares the victim's
//! binding and address keys' `mod_revision`s, deletes its binding and gives its address to the
//! new node. A failed compare returns what changed (the transaction's else branch reads the
//! keys), and the registration is tried again with it, at most 64 times, then
//! [`ControlError::Conflict`]. Registrations with the same bootstrap token queue in a replica,
//! as each changes its use count: concurrent ones would only make each other fail.
//!
//! # Cache
//!
//! Each replica keeps, per network, an [`IpPool`](crate::pool::IpPool) (so an allocation does
//! not scan the range), the address keys and the bindings with the reclaim candidates in LRU
//! order. It is read at connect and kept in step by the replica's own committed transactions,
//! the keys its failed transactions read, and a watch of the prefix from the revision it read
//! at, which brings the bindings made or deleted by the other replicas. Each key's revision is
//! kept with it, so that what comes late from one of these sources never overwrites something
//! newer from another.
//! When the watch falls behind a compaction (or etcd lost its data), everything is read again.
//!
//! The cache may be behind by the watch's delay (milliseconds): an address the cache thinks free
//! but another replica took makes the compare fail, and the address is then known to be bound.
//! When the pool looks full, etcd's count of address keys is checked: if it is lower, the watch
//! is awaited (at most two seconds) before [`ControlError::PoolExhausted`] is answered. Reads
//! (`binding`, `bindings`, `networks`, bootstrap tokens) go to etcd, so they see every replica's
//! writes; `bindings_of_node` finds its candidates by bus name in the cache and reads them from
//! etcd.
//!
//! # Layout
//!
//! This file holds the configuration, the store with its connection and transactions, and the
//! [`Store`] impl. The rest: `keys` (the key layout), `stored` (the JSON values), `cache` (the
//! per-replica cache), `watch` (the watch that keeps it in step), `networks`, `tokens`,
//! `register` (registration and reclaim), `bindings` (reading, unregistering and updating
//! bindings) and `authority` (the certificate authorities).

mod authority;
mod bindings;
mod cache;
mod keys;
mod networks;
mod register;
mod stored;
mod tokens;
mod watch;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde::Deserialize;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use tokio::task::JoinHandle;

use self::cache::Cache;
use self::keys::Keys;
use self::watch::{Follow, follow};
use super::{NetworkStatus, Store, StoreFuture};
use crate::clock::Millis;
use crate::error::ControlError;
use crate::records::{
    AuthorityPem, Binding, BootstrapToken, Network, NewBinding, NodeUpdate, Plane,
};

/// How many times a change that lost a race is tried again before [`ControlError::Conflict`].
const ATTEMPTS: usize = 64;
/// How long one etcd request (and the connection) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Operations per transaction in batched reads (etcd allows 128 by default).
const MAX_TXN_OPS: usize = 100;
/// The largest response read from etcd (the client's default, 4 MiB, holds the bindings of a
/// few thousand nodes; a full /16 takes about 15 MiB).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// How the etcd backend connects and where it keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdStoreConfig {
    /// etcd's client URLs, such as `http://127.0.0.1:2379`. Every replica of the network
    /// manager lists the same cluster.
    pub endpoints: Vec<String>,
    /// The prefix of every key (default `/network-ctl`). Replicas that share their networks use
    /// the same prefix; two prefixes in one etcd are two separate control planes.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "/network-ctl".to_string()
}

impl EtcdStoreConfig {
    /// The configuration for `endpoints`, with the default prefix `/network-ctl`.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: default_prefix(),
        }
    }
}

/// Storage in etcd, for several replicas of the network manager: an address is taken by a
/// transaction that compares its key's absence, so two replicas never hand out the same one.
///
/// The keys, under the prefix `<p>` (tokens with `%` and `/` escaped as `%25` and `%2F`):
/// `<p>/networks/<net token>`, `<p>/bootstrap/<digest>`, `<p>/bindings/<net token>/<node
/// token>` (JSON), `<p>/ips/<net token>/<ip>` (the node token holding the address) and
/// `<p>/authorities/<plane>` (JSON). Each replica caches the address pools, kept in step by a
/// watch of the prefix. Dropping the store stops its watch.
pub struct EtcdStore {
    kv: KvClient,
    /// The connection the KV and watch clients share.
    _client: Client,
    keys: Keys,
    /// The endpoints as error messages name them.
    endpoints: String,
    cache: Arc<Mutex<Cache>>,
    /// One queue per bootstrap token digest: registrations with one token take turns.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Taken for reading by the watch at each step; see [`EtcdStore::pause_watch`].
    gate: Arc<RwLock<()>>,
    watcher: JoinHandle<()>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.root)
            .field("watched_revision", &lock(&self.cache).watched)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EtcdStore {
    /// Connects to etcd, reads the networks and bindings under the prefix into the cache and
    /// starts watching the prefix. Fails if etcd does not answer within five seconds.
    pub async fn connect(config: EtcdStoreConfig) -> Result<Self, ControlError> {
        if config.endpoints.is_empty() {
            return Err(ControlError::BadRequest(
                "the etcd store needs at least one endpoint, such as http://127.0.0.1:2379"
                    .to_string(),
            ));
        }
        let endpoints = format!("{:?}", config.endpoints);
        let unreachable = |error: etcd_client::Error| {
            ControlError::Storage(format!(
                "etcd at {endpoints} unreachable: {error}: check the endpoints and that etcd runs there"
            ))
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(unreachable)?;
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let watch = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let keys = Keys::new(&config.prefix);
        let (revision, kvs) = load(&mut kv, &keys).await.map_err(unreachable)?;
        let mut cache = Cache::new(keys.clone());
        cache.reset(revision, &kvs);
        let cache = Arc::new(Mutex::new(cache));
        let gate = Arc::new(RwLock::new(()));
        let watcher = tokio::spawn(follow(
            Follow {
                kv: kv.clone(),
                watch,
                keys: keys.clone(),
                cache: Arc::clone(&cache),
                gate: Arc::clone(&gate),
            },
            revision + 1,
        ));
        Ok(Self {
            kv,
            _client: client,
            keys,
            endpoints,
            cache,
            turns: Mutex::new(HashMap::new()),
            gate,
            watcher,
        })
    }

    /// Holds the watch still (it neither reads nor reopens) until the guard is dropped: for
    /// tests that make it fall behind a compaction.
    #[doc(hidden)]
    pub async fn pause_watch(&self) -> OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.gate).write_owned().await
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    fn failed(&self, what: &str, error: etcd_client::Error) -> ControlError {
        ControlError::Storage(format!(
            "etcd at {} failed to {what}: {error}; nothing was changed: check that etcd is up and reachable, then retry",
            self.endpoints
        ))
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, ControlError> {
        self.kv
            .clone()
            .txn(txn)
            .await
            .map_err(|error| self.failed(what, error))
    }

    /// Runs `gets` (get operations) in one read-only transaction: one snapshot.
    async fn read(&self, what: &str, gets: Vec<TxnOp>) -> Result<Read, ControlError> {
        Ok(Read::of(&self.txn(what, Txn::new().and_then(gets)).await?))
    }

    /// The keys `pairs` name (each with the index of its get in `read`), as `read` saw them,
    /// into the cache.
    fn see_read(&self, read: &Read, pairs: &[(&str, usize)]) {
        let mut cache = self.cache();
        for &(key, index) in pairs {
            match read.first(index) {
                Some(kv) => cache.see(key, Some(kv.value()), kv.mod_revision()),
                None => cache.see(key, None, read.revision),
            }
        }
    }

    /// What a committed transaction at `revision` wrote (`None`: deleted) into the cache.
    fn see_writes(&self, revision: i64, writes: &[(&str, Option<&[u8]>)]) {
        let mut cache = self.cache();
        for &(key, value) in writes {
            cache.see(key, value, revision);
        }
    }
}

impl Store for EtcdStore {
    fn ensure_network(&self, network: Network) -> StoreFuture<'_, Network> {
        Box::pin(self.ensure(network))
    }

    fn networks(&self) -> StoreFuture<'_, Vec<NetworkStatus>> {
        Box::pin(self.statuses())
    }

    fn add_bootstrap_token(&self, token: BootstrapToken) -> StoreFuture<'_, ()> {
        Box::pin(self.add_token(token))
    }

    fn bootstrap_tokens(&self) -> StoreFuture<'_, Vec<BootstrapToken>> {
        Box::pin(async move {
            Ok(self
                .tokens()
                .await?
                .into_iter()
                .map(|(token, ..)| token)
                .collect())
        })
    }

    fn sweep_bootstrap_tokens(&self, now: Millis) -> StoreFuture<'_, usize> {
        Box::pin(self.sweep(now))
    }

    fn register(&self, request: NewBinding) -> StoreFuture<'_, Binding> {
        Box::pin(self.register_node(request))
    }

    fn binding<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
    ) -> StoreFuture<'a, Option<Binding>> {
        Box::pin(self.read_binding(net_token, node_token))
    }

    fn bindings<'a>(&'a self, net_token: Option<&'a str>) -> StoreFuture<'a, Vec<Binding>> {
        Box::pin(self.read_bindings(net_token))
    }

    fn bindings_of_node<'a>(&'a self, node_name: &'a str) -> StoreFuture<'a, Vec<Binding>> {
        Box::pin(self.read_bindings_of_node(node_name))
    }

    fn unregister<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
    ) -> StoreFuture<'a, Binding> {
        Box::pin(self.unregister_node(net_token, node_token))
    }

    fn update_node<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
        update: NodeUpdate,
        now: Millis,
    ) -> StoreFuture<'a, Binding> {
        Box::pin(self.update(net_token, node_token, update, now))
    }

    fn ensure_authority(
        &self,
        plane: Plane,
        candidate: AuthorityPem,
    ) -> StoreFuture<'_, AuthorityPem> {
        Box::pin(self.authority(plane, candidate))
    }
}

fn lost_races(what: &str) -> ControlError {
    ControlError::Conflict(format!(
        "{what} lost {ATTEMPTS} races in a row with other changes to the same keys: retry"
    ))
}

fn revision_of(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |header| header.revision())
}

/// The answers of the get operations of a transaction.
struct Read {
    /// The revision the transaction saw.
    revision: i64,
    /// Per get, in order: its key-value pairs, and the count it asked for.
    gets: Vec<(Vec<KeyValue>, i64)>,
}

impl Read {
    fn of(response: &TxnResponse) -> Self {
        Self {
            revision: revision_of(response),
            gets: response
                .op_responses()
                .into_iter()
                .filter_map(|op| match op {
                    TxnOpResponse::Get(get) => Some((get.kvs().to_vec(), get.count())),
                    _ => None,
                })
                .collect(),
        }
    }

    fn all(&self, index: usize) -> &[KeyValue] {
        self.gets.get(index).map_or(&[], |(kvs, _)| kvs.as_slice())
    }

    fn first(&self, index: usize) -> Option<&KeyValue> {
        self.all(index).first()
    }

    fn count(&self, index: usize) -> i64 {
        self.gets.get(index).map_or(0, |&(_, count)| count)
    }
}

/// Reads every key under the prefix; returns the revision read at.
async fn load(kv: &mut KvClient, keys: &Keys) -> Result<(i64, Vec<KeyValue>), etcd_client::Error> {
    let mut response = kv
        .get(keys.root.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = response.header().map_or(0, |header| header.revision());
    Ok((revision, response.take_kvs()))
}
