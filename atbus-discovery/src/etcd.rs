//! The etcd registry (feature `etcd`): records as JSON under `<prefix>/nodes/<name>`, each put
//! under a lease kept alive in the background.
//!
//! - **Register**: a transaction puts the record only if the key is absent, so a name held by
//!   another live instance is refused. The lease is kept alive; when it is lost (etcd restarted
//!   without its data, a partition longer than the TTL) the record is put again under a new one.
//!   Closing revokes the lease, so the record vanishes at once; a node that dies leaves it until
//!   the lease expires.
//! - **Watch**: one etcd watch per process and prefix, whatever the number of subscribers
//!   ([`EtcdRegistry::connect`] shares it), feeding the [watch cache](crate::Watch). It resumes
//!   from the last revision seen after an error; after a compaction it re-reads everything and
//!   the cache turns the difference into puts and deletes. Progress requests detect a stuck
//!   watch (no answer within three intervals: it is opened again).
//! - `get` and `list` answer from the cache, which `register` waits for (read your writes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::record::NodeRecord;
use crate::registry::{BoxFuture, Registration, RegistrationState, Registry, RegistryError};
use crate::selector::Selector;
use crate::watch::{Watch, WatchCache};

/// How an [`EtcdRegistry`] connects and behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd's client URLs, `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The keys' prefix, one per cluster: `/atbus/<cluster>`.
    pub prefix: String,
    /// Lease time to live of a registration: how long the record of a dead node stays.
    pub lease_ttl: Duration,
    /// How often the watch asks etcd for progress; no answer within three intervals means it is
    /// stuck.
    pub progress_interval: Duration,
    /// Nodes that may register and unregister others.
    pub delegates: BTreeSet<String>,
}

impl EtcdConfig {
    /// The defaults for `endpoints`: prefix `/atbus/default`, 10 s leases, progress every 5 s.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/atbus/default".into(),
            lease_ttl: Duration::from_secs(10),
            progress_interval: Duration::from_secs(5),
            delegates: BTreeSet::new(),
        }
    }

    fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix.trim_end_matches('/'))
    }
}

/// Counters of the shared watch.
#[derive(Debug, Default)]
pub struct EtcdStats {
    /// Times the watch was opened again after an error or a stuck stream.
    pub watch_restarts: AtomicU64,
    /// Full re-reads after a compaction.
    pub full_reads: AtomicU64,
    /// Times the watch answered no progress request within three intervals.
    pub stuck_watches: AtomicU64,
    /// Records lost (lease gone) and put again.
    pub reregistrations: AtomicU64,
}

/// A registry in etcd. Clones share one connection and one watch.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    config: EtcdConfig,
    cache: Arc<WatchCache>,
    stats: Arc<EtcdStats>,
    watcher: JoinHandle<()>,
    /// Held by [`EtcdRegistry::pause_watch`]: the watch takes it before each step.
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("config", &self.config)
            .field("revision", &self.cache.revision())
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.watcher.abort();
        self.cache.close();
    }
}

/// The registries of this process, by endpoints and prefix: one watch each.
type Live = Mutex<HashMap<(Vec<String>, String), Weak<Shared>>>;

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn backend(error: etcd_client::Error) -> RegistryError {
    RegistryError::Backend(error.to_string())
}

impl EtcdRegistry {
    /// Connects to etcd and reads the records; the registry of this process for the same
    /// endpoints and prefix is shared instead if one is live.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), atbus_discovery::RegistryError> {
    /// use atbus_discovery::{EtcdConfig, EtcdRegistry, NodeRecord, Registry};
    ///
    /// let registry = EtcdRegistry::connect(EtcdConfig::new(["http://127.0.0.1:2379"])).await?;
    /// let registration = registry.register(NodeRecord::new("echo-1")).await?;
    /// // ... serve ...
    /// registration.close().await; // revokes the lease: the record is gone at once
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: EtcdConfig) -> Result<Self, RegistryError> {
        let key = (config.endpoints.clone(), config.prefix.clone());
        if let Some(shared) = live()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .and_then(Weak::upgrade)
            // Its watch ran on a runtime that has ended: start afresh.
            .filter(|shared| !shared.watcher.is_finished())
        {
            return Ok(EtcdRegistry { shared });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let mut client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(backend)?;
        let cache = WatchCache::new();
        let revision = read_all(&mut client, &config, &cache).await?;
        let stats = Arc::new(EtcdStats::default());
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let watcher = tokio::spawn(follow(
            Follow {
                client: client.clone(),
                config: config.clone(),
                cache: Arc::clone(&cache),
                stats: Arc::clone(&stats),
                gate: Arc::clone(&gate),
            },
            revision + 1,
        ));
        let shared = Arc::new(Shared {
            client,
            config,
            cache,
            stats,
            watcher,
            gate,
        });
        live()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::downgrade(&shared));
        Ok(EtcdRegistry { shared })
    }

    /// Counters of the shared watch and of the registrations.
    pub fn stats(&self) -> &EtcdStats {
        &self.shared.stats
    }

    /// The revision the cache is at.
    pub fn revision(&self) -> u64 {
        self.shared.cache.revision()
    }

    /// Holds the shared watch still (it neither reads nor reopens) until the guard is dropped:
    /// for tests that make it fall behind a compaction.
    #[doc(hidden)]
    pub async fn pause_watch(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.shared.gate).write_owned().await
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.shared.config.nodes_prefix())
    }

    fn check_delegate(&self, caller: &str) -> Result<(), RegistryError> {
        crate::registry::check_delegate(&self.shared.config.delegates, caller)
    }

    /// Waits (at most 2 s) until the cache has seen `revision`: what this process wrote is then
    /// what `get`, `list` and the watches show.
    async fn caught_up(&self, revision: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.shared.cache.revision() < revision && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn publish(&self, record: NodeRecord) -> Result<Registration, RegistryError> {
        record.validate()?;
        let mut client = self.shared.client.clone();
        let key = self.key(&record.name);
        let value = record.to_json();
        let ttl = self.shared.config.lease_ttl.as_secs().max(1) as i64;
        let (lease, revision) = put_new(&mut client, &key, &value, ttl).await?;
        // Read your writes: the cache has the record before `register` returns.
        self.caught_up(revision).await;
        let (stop, stopped) = oneshot::channel();
        let (state_tx, state) = watch::channel(RegistrationState::Registered);
        let keeper = Keeper {
            client,
            key,
            value,
            ttl,
            lease,
            state: state_tx,
            stats: Arc::clone(&self.shared.stats),
        };
        let task = tokio::spawn(keeper.run(stopped));
        Ok(Registration::new(record.name, stop, task, state))
    }
}

/// Puts `value` at `key` under a new lease if the key is absent; returns the lease and the
/// revision of the put.
async fn put_new(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl: i64,
) -> Result<(i64, u64), RegistryError> {
    let lease = client.lease_grant(ttl, None).await.map_err(backend)?.id();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let response = client.txn(txn).await.map_err(backend)?;
    if response.succeeded() {
        let revision = response.header().map_or(0, |h| h.revision()) as u64;
        return Ok((lease, revision));
    }
    let _ = client.lease_revoke(lease).await;
    let holder = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        })
        .and_then(|kv| NodeRecord::from_json(kv.value_str().ok()?).ok())
        .unwrap_or_default();
    Err(RegistryError::NameTaken {
        name: key.rsplit('/').next().unwrap_or(key).to_string(),
        host: holder.host.hostname,
        pid: holder.host.pid,
    })
}

/// Keeps one registration's lease alive; puts the record again when the lease is lost;
/// revokes it when the registration closes or is dropped.
struct Keeper {
    client: Client,
    key: String,
    value: String,
    ttl: i64,
    lease: i64,
    state: watch::Sender<RegistrationState>,
    stats: Arc<EtcdStats>,
}

impl Keeper {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                lost = self.keep_alive() => {
                    tracing::warn!(key = %self.key, reason = %lost, "registration lost; putting it again");
                    let _ = self.state.send(RegistrationState::Lost);
                    if !self.register_again(&mut stopped).await {
                        return;
                    }
                }
            }
        }
        let _ = self.client.lease_revoke(self.lease).await;
        let _ = self.state.send(RegistrationState::Closed);
    }

    /// Keeps the lease alive until it is lost; returns why.
    async fn keep_alive(&mut self) -> String {
        let (mut keeper, mut responses) = match self.client.lease_keep_alive(self.lease).await {
            Ok(pair) => pair,
            Err(error) => return error.to_string(),
        };
        let period = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(100));
        loop {
            if let Err(error) = keeper.keep_alive().await {
                return error.to_string();
            }
            match tokio::time::timeout(period, responses.message()).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return "the lease expired".into(),
                Ok(Ok(None)) => return "the keep-alive stream ended".into(),
                Ok(Err(error)) => return error.to_string(),
                Err(_) => return "no keep-alive answer".into(),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Puts the record again under a new lease, retrying while etcd is unreachable. False when
    /// the registration is over (closed, or the name was taken meanwhile).
    async fn register_again(&mut self, stopped: &mut oneshot::Receiver<()>) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            // Still ours under the old lease (the stream broke, the lease lives)? Keep it.
            let ours = self
                .client
                .get(self.key.as_str(), None)
                .await
                .map(|got| got.kvs().first().map(|kv| kv.lease()));
            match ours {
                Ok(Some(lease)) if lease == self.lease => {
                    let _ = self.state.send(RegistrationState::Registered);
                    return true;
                }
                Ok(_) => {
                    let _ = self.client.lease_revoke(self.lease).await;
                    match put_new(&mut self.client, &self.key, &self.value, self.ttl).await {
                        Ok((lease, _)) => {
                            self.lease = lease;
                            self.stats.reregistrations.fetch_add(1, Ordering::Relaxed);
                            let _ = self.state.send(RegistrationState::Registered);
                            return true;
                        }
                        Err(RegistryError::NameTaken { host, pid, .. }) => {
                            let _ = self.state.send(RegistrationState::Refused(format!(
                                "the name was taken meanwhile by {host} pid {pid}"
                            )));
                            return false;
                        }
                        Err(error) => tracing::debug!(%error, "registering again"),
                    }
                }
                Err(error) => tracing::debug!(%error, "registering again"),
            }
            tokio::select! {
                _ = &mut *stopped => {
                    let _ = self.state.send(RegistrationState::Closed);
                    return false;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Reads every record into the cache (as a difference); returns the revision read at.
async fn read_all(
    client: &mut Client,
    config: &EtcdConfig,
    cache: &WatchCache,
) -> Result<u64, RegistryError> {
    let prefix = config.nodes_prefix();
    let response = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(backend)?;
    let revision = response.header().map_or(0, |h| h.revision()) as u64;
    let mut records = BTreeMap::new();
    for kv in response.kvs() {
        if let Some(record) = decode(kv.value()) {
            records.insert(record.name.clone(), record);
        }
    }
    cache.replace(revision, records);
    Ok(revision)
}

fn decode(value: &[u8]) -> Option<NodeRecord> {
    let text = std::str::from_utf8(value).ok()?;
    match NodeRecord::from_json(text) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::warn!(%error, "a key under the nodes prefix does not hold a record");
            None
        }
    }
}

/// What the shared watch works with.
struct Follow {
    client: Client,
    config: EtcdConfig,
    cache: Arc<WatchCache>,
    stats: Arc<EtcdStats>,
    gate: Arc<tokio::sync::RwLock<()>>,
}

/// The shared watch: follows the prefix from `next` into the cache, for ever.
async fn follow(follow: Follow, mut next: u64) {
    let Follow {
        mut client,
        config,
        cache,
        stats,
        gate,
    } = follow;
    let prefix = config.nodes_prefix();
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = {
            let _step = gate.read().await;
            // etcd restarted without its data (a new cluster): its revisions start again below
            // ours, and a watch from ours would wait for revisions that mean something else.
            // Read everything again instead.
            if let Ok(current) = client
                .get(prefix.as_str(), Some(GetOptions::new().with_count_only()))
                .await
            {
                let revision = current.header().map_or(0, |h| h.revision()) as u64;
                if revision + 1 < next {
                    tracing::warn!(
                        revision,
                        expected = next - 1,
                        "etcd's revisions went back (its data was lost): reading everything again"
                    );
                    stats.full_reads.fetch_add(1, Ordering::Relaxed);
                    if let Ok(read) = read_all(&mut client, &config, &cache).await {
                        next = read + 1;
                    }
                }
            }
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next as i64)
                .with_progress_notify();
            client.watch(prefix.as_str(), Some(options)).await
        };
        match opened {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                let mut ticker = tokio::time::interval(config.progress_interval);
                let mut last_heard = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        message = stream.message() => {
                            let _step = gate.read().await;
                            let response = match message {
                                Ok(Some(response)) => response,
                                Ok(None) => break,
                                Err(error) => {
                                    tracing::warn!(%error, "etcd watch failed; resuming");
                                    break;
                                }
                            };
                            last_heard = tokio::time::Instant::now();
                            if response.canceled() {
                                if response.compact_revision() > 0 {
                                    // The revisions we missed are gone: read everything again.
                                    stats.full_reads.fetch_add(1, Ordering::Relaxed);
                                    match read_all(&mut client, &config, &cache).await {
                                        Ok(revision) => next = revision + 1,
                                        Err(error) => tracing::warn!(%error, "etcd re-read failed"),
                                    }
                                }
                                break;
                            }
                            let events = response.events();
                            for event in events {
                                let Some(kv) = event.kv() else { continue };
                                let revision = kv.mod_revision() as u64;
                                let name = kv.key_str().unwrap_or_default().strip_prefix(&prefix).unwrap_or_default();
                                match event.event_type() {
                                    EventType::Put => {
                                        if let Some(record) = decode(kv.value()) {
                                            cache.put(revision, record);
                                        }
                                    }
                                    EventType::Delete => cache.delete(revision, name),
                                }
                                next = next.max(revision + 1);
                            }
                            if events.is_empty() && !response.created() {
                                // A progress notification: nothing before this revision is left.
                                if let Some(header) = response.header() {
                                    let revision = header.revision() as u64;
                                    cache.progress(revision);
                                    next = next.max(revision + 1);
                                }
                            }
                        }
                        _ = ticker.tick() => {
                            if last_heard.elapsed() > config.progress_interval * 3 {
                                stats.stuck_watches.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!("etcd watch answered nothing for three intervals; opening it again");
                                break;
                            }
                            if stream.request_progress().await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "etcd watch could not start"),
        }
        stats.watch_restarts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, record: NodeRecord) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        Box::pin(self.publish(record))
    }

    fn register_for(
        &self,
        caller: &str,
        record: NodeRecord,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        let allowed = self.check_delegate(caller);
        Box::pin(async move {
            allowed?;
            self.publish(record).await
        })
    }

    fn unregister_for(
        &self,
        caller: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<bool, RegistryError>> {
        let allowed = self.check_delegate(caller);
        let key = self.key(name);
        Box::pin(async move {
            allowed?;
            let mut client = self.shared.client.clone();
            let deleted = client.delete(key, None).await.map_err(backend)?;
            let revision = deleted.header().map_or(0, |h| h.revision()) as u64;
            self.caught_up(revision).await;
            Ok(deleted.deleted() > 0)
        })
    }

    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<NodeRecord>, RegistryError>> {
        let found = self.shared.cache.get(name);
        Box::pin(async move { Ok(found) })
    }

    fn list(&self, selector: &Selector) -> BoxFuture<'_, Result<Vec<NodeRecord>, RegistryError>> {
        let found = self.shared.cache.list(selector);
        Box::pin(async move { Ok(found) })
    }

    fn watch(&self, selector: Selector) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        let watch = self.shared.cache.subscribe(selector);
        Box::pin(async move { Ok(watch) })
    }
}
