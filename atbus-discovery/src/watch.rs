//! The watch cache: the records of one registry (one etcd prefix) as of a revision, and one
//! broadcast of the changes after it, shared by every subscriber of the process.
//!
//! A subscriber starts from a snapshot taken under the same lock that orders the changes, so
//! there is no gap and no overlap between the two. A subscriber that falls behind the broadcast
//! (it holds [`CHANGE_BACKLOG`] changes) is resynchronised from the cache: it gets the
//! difference between what it knew and the cache, as puts and deletes, so it never misses the
//! latest state of a record nor sees a change twice. It never slows the others down.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::record::NodeRecord;
use crate::selector::Selector;

/// Changes the broadcast holds for the slowest subscriber before it is resynchronised.
pub const CHANGE_BACKLOG: usize = 1024;

/// What a watch reports.
// A put carries the record by value: events are made once and handed over, not copied around.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The matching records at `revision`: always the first event.
    Init {
        /// The registry's revision of the snapshot.
        revision: u64,
        /// The records, by name.
        records: Vec<NodeRecord>,
    },
    /// A record was registered or changed, or now matches the selector.
    Put {
        /// The registry's revision of the change.
        revision: u64,
        /// The record as it is now.
        record: NodeRecord,
    },
    /// A record was withdrawn (or expired), or no longer matches the selector.
    Delete {
        /// The registry's revision of the change.
        revision: u64,
        /// Its name.
        name: String,
    },
}

/// One change to the cache.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Put(u64, Box<NodeRecord>),
    Delete(u64, String),
}

/// The records as of `revision`.
#[derive(Debug, Default)]
struct State {
    revision: u64,
    records: BTreeMap<String, NodeRecord>,
    closed: bool,
}

/// The cache shared by a registry's subscribers.
#[derive(Debug)]
pub(crate) struct WatchCache {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    resyncs: std::sync::atomic::AtomicU64,
}

impl WatchCache {
    pub fn new() -> Arc<Self> {
        Arc::new(WatchCache {
            state: Mutex::new(State::default()),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            resyncs: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The revision the cache is at.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the etcd registry
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// How many times a subscriber fell behind and was resynchronised.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `record` registered or changed at `revision`.
    pub fn put(&self, revision: u64, record: NodeRecord) {
        let mut state = self.lock();
        state.revision = state.revision.max(revision);
        if state.records.get(&record.name) == Some(&record) {
            return;
        }
        state.records.insert(record.name.clone(), record.clone());
        let _ = self
            .changes
            .send(Arc::new(Change::Put(revision, Box::new(record))));
    }

    /// `name` withdrawn at `revision`.
    pub fn delete(&self, revision: u64, name: &str) {
        let mut state = self.lock();
        state.revision = state.revision.max(revision);
        if state.records.remove(name).is_some() {
            let _ = self
                .changes
                .send(Arc::new(Change::Delete(revision, name.to_string())));
        }
    }

    /// The backend progressed to `revision` with no change here.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the etcd registry
    pub fn progress(&self, revision: u64) {
        let mut state = self.lock();
        state.revision = state.revision.max(revision);
    }

    /// A full read at `revision` (after a compaction, say): the differences from the cache go
    /// out as changes.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the etcd registry
    pub fn replace(&self, revision: u64, records: BTreeMap<String, NodeRecord>) {
        let mut state = self.lock();
        let gone: Vec<String> = state
            .records
            .keys()
            .filter(|name| !records.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            state.records.remove(&name);
            let _ = self.changes.send(Arc::new(Change::Delete(revision, name)));
        }
        for (name, record) in records {
            if state.records.get(&name) != Some(&record) {
                state.records.insert(name, record.clone());
                let _ = self
                    .changes
                    .send(Arc::new(Change::Put(revision, Box::new(record))));
            }
        }
        // A full read is the truth, even below the revision held (a store that lost its data).
        state.revision = revision;
    }

    /// No more changes will come: subscribers end.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the etcd registry
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// The record of `name`.
    pub fn get(&self, name: &str) -> Option<NodeRecord> {
        self.lock().records.get(name).cloned()
    }

    /// The records `selector` matches.
    pub fn list(&self, selector: &Selector) -> Vec<NodeRecord> {
        self.lock()
            .records
            .values()
            .filter(|record| selector.matches(&record.metadata.labels))
            .cloned()
            .collect()
    }

    /// A new subscriber for `selector`: a snapshot and the changes after it.
    pub fn subscribe(self: &Arc<Self>, selector: Selector) -> Watch {
        let (revision, snapshot, changes) = self.snapshot();
        let known: BTreeMap<String, NodeRecord> = snapshot
            .into_iter()
            .filter(|(_, record)| selector.matches(&record.metadata.labels))
            .collect();
        let init = WatchEvent::Init {
            revision,
            records: known.values().cloned().collect(),
        };
        Watch {
            cache: Arc::clone(self),
            selector,
            changes,
            known,
            pending: VecDeque::from([init]),
        }
    }

    /// The records and a receiver of the changes after them, taken together.
    fn snapshot(
        &self,
    ) -> (
        u64,
        BTreeMap<String, NodeRecord>,
        broadcast::Receiver<Arc<Change>>,
    ) {
        let state = self.lock();
        (
            state.revision,
            state.records.clone(),
            self.changes.subscribe(),
        )
    }
}

/// A subscription to the records a selector matches: [`WatchEvent::Init`] first, then the
/// changes.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use atbus_discovery::{MemoryRegistry, NodeRecord, Registry, Selector, WatchEvent};
///
/// let registry = MemoryRegistry::new();
/// let mut watch = registry.watch("app=echo".parse().unwrap()).await.unwrap();
/// assert!(matches!(watch.next().await, Some(WatchEvent::Init { .. })));
///
/// let mut record = NodeRecord::new("echo-1");
/// record.metadata.labels.insert("app".into(), "echo".into());
/// let registration = registry.register(record).await.unwrap();
/// assert!(matches!(watch.next().await, Some(WatchEvent::Put { .. })));
///
/// registration.close().await;
/// assert!(matches!(watch.next().await, Some(WatchEvent::Delete { .. })));
/// # });
/// ```
#[derive(Debug)]
pub struct Watch {
    cache: Arc<WatchCache>,
    selector: Selector,
    changes: broadcast::Receiver<Arc<Change>>,
    /// The matching records as this subscriber was told them.
    known: BTreeMap<String, NodeRecord>,
    pending: VecDeque<WatchEvent>,
}

impl Watch {
    /// The next event; `None` once the registry is shut down.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.changes.recv().await {
                Ok(change) => self.take(&change),
                Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
            if self.pending.is_empty() && self.cache.lock().closed {
                return None;
            }
        }
    }

    /// The selector this watch follows.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Turns one change into this subscriber's events.
    fn take(&mut self, change: &Change) {
        match change {
            Change::Put(revision, record) => {
                self.observe(*revision, &record.name, Some(record));
            }
            Change::Delete(revision, name) => self.observe(*revision, name, None),
        }
    }

    /// `name` is now `record` (or gone): tells the subscriber if that changes what it knows.
    fn observe(&mut self, revision: u64, name: &str, record: Option<&NodeRecord>) {
        let matching = record.filter(|record| self.selector.matches(&record.metadata.labels));
        match matching {
            Some(record) if self.known.get(name) != Some(record) => {
                self.known.insert(name.to_string(), record.clone());
                self.pending.push_back(WatchEvent::Put {
                    revision,
                    record: record.clone(),
                });
            }
            Some(_) => {}
            None if self.known.remove(name).is_some() => {
                self.pending.push_back(WatchEvent::Delete {
                    revision,
                    name: name.to_string(),
                });
            }
            None => {}
        }
    }

    /// Fell behind: catches up from the cache.
    fn resync(&mut self) {
        self.cache
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (revision, records, changes) = self.cache.snapshot();
        self.changes = changes;
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|name| !records.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.observe(revision, &name, None);
        }
        for (name, record) in &records {
            self.observe(revision, name, Some(record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, app: &str) -> NodeRecord {
        let mut record = NodeRecord::new(name);
        record.metadata.labels.insert("app".into(), app.into());
        record
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_snapshot_then_only_later_changes() {
        let cache = WatchCache::new();
        cache.put(1, record("a", "web"));
        cache.put(2, record("b", "web"));
        let mut watch = cache.subscribe(Selector::everything());
        cache.delete(3, "a");
        let Some(WatchEvent::Init { revision, records }) = watch.next().await else {
            panic!("no init");
        };
        assert_eq!((revision, records.len()), (2, 2));
        assert_eq!(
            watch.next().await,
            Some(WatchEvent::Delete {
                revision: 3,
                name: "a".into()
            })
        );
    }

    #[tokio::test]
    async fn a_record_leaving_the_selector_is_a_delete_to_that_subscriber() {
        let cache = WatchCache::new();
        let mut watch = cache.subscribe("app=web".parse().unwrap());
        watch.next().await;
        cache.put(1, record("a", "web"));
        cache.put(2, record("a", "db"));
        cache.put(3, record("b", "db"));
        cache.put(4, record("b", "web"));
        let mut events = Vec::new();
        for _ in 0..3 {
            events.push(watch.next().await.unwrap());
        }
        assert!(
            matches!(&events[0], WatchEvent::Put { revision: 1, record } if record.name == "a")
        );
        assert!(matches!(&events[1], WatchEvent::Delete { revision: 2, name } if name == "a"));
        assert!(
            matches!(&events[2], WatchEvent::Put { revision: 4, record } if record.name == "b")
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_resynchronised_and_sees_each_final_state_once() {
        let cache = WatchCache::new();
        let mut slow = cache.subscribe(Selector::everything());
        let mut fast = cache.subscribe(Selector::everything());
        slow.next().await;
        fast.next().await;
        // Far more changes than the backlog: "keep" changes many times, "gone" comes and goes.
        let mut revision = 0;
        for round in 0..CHANGE_BACKLOG {
            revision += 1;
            let mut keep = record("keep", "web");
            keep.custom_data = round.to_string();
            cache.put(revision, keep);
            revision += 1;
            cache.put(revision, record("gone", "web"));
            revision += 1;
            cache.delete(revision, "gone");
            // The fast one keeps up.
            for _ in 0..3 {
                fast.next().await.unwrap();
            }
        }
        let mut seen = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), slow.next()).await
        {
            seen.push(event);
        }
        assert_eq!(cache.resyncs(), 1);
        // After the resync: "keep" in its final state, once; "gone" never (it was not known, and
        // is not there).
        let last = seen.last().expect("events after the resync");
        match last {
            WatchEvent::Put { record, .. } => {
                assert_eq!(record.name, "keep");
                assert_eq!(record.custom_data, (CHANGE_BACKLOG - 1).to_string());
            }
            other => panic!("{other:?}"),
        }
    }
}
