//! The in-memory registry: the embedded default of a single relay, with no etcd. Records live as
//! long as their [`Registration`]; revisions count every change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use crate::record::NodeRecord;
use crate::registry::{BoxFuture, Registration, RegistrationState, Registry, RegistryError};
use crate::selector::Selector;
use crate::watch::{Watch, WatchCache};

/// A registry in this process's memory.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use atbus_discovery::{MemoryRegistry, NodeRecord, Registry};
///
/// let registry = MemoryRegistry::new();
/// let registration = registry.register(NodeRecord::new("echo-1")).await.unwrap();
/// assert!(registry.get("echo-1").await.unwrap().is_some());
/// registration.close().await;
/// assert!(registry.get("echo-1").await.unwrap().is_none());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cache: Arc<WatchCache>,
    revision: AtomicU64,
    /// Which registration holds each name (the revision it was registered at); also serialises
    /// the check-and-insert of a name.
    owners: Mutex<BTreeMap<String, u64>>,
    delegates: BTreeSet<String>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// An empty registry where nobody may register on another's behalf.
    pub fn new() -> Self {
        Self::with_delegates(std::iter::empty::<String>())
    }

    /// An empty registry where `delegates` may register and unregister other nodes.
    pub fn with_delegates(delegates: impl IntoIterator<Item = impl Into<String>>) -> Self {
        MemoryRegistry {
            inner: Arc::new(Inner {
                cache: WatchCache::new(),
                revision: AtomicU64::new(0),
                owners: Mutex::new(BTreeMap::new()),
                delegates: delegates.into_iter().map(Into::into).collect(),
            }),
        }
    }

    /// How many times a slow watcher was resynchronised from the cache.
    pub fn resyncs(&self) -> u64 {
        self.inner.cache.resyncs()
    }

    fn publish(&self, record: NodeRecord) -> Result<Registration, RegistryError> {
        record.validate()?;
        let name = record.name.clone();
        let owner = {
            let mut owners = self.inner.owners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(holder) = self.inner.cache.get(&name) {
                return Err(RegistryError::NameTaken {
                    name,
                    host: holder.host.hostname,
                    pid: holder.host.pid,
                });
            }
            let revision = self.inner.revision.fetch_add(1, Ordering::SeqCst) + 1;
            owners.insert(name.clone(), revision);
            self.inner.cache.put(revision, record);
            revision
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (state_tx, state) = watch::channel(RegistrationState::Registered);
        let inner = Arc::clone(&self.inner);
        let withdraw_name = name.clone();
        let task = tokio::spawn(async move {
            // Closed or dropped: either way the record goes.
            let _ = stopped.await;
            inner.withdraw(&withdraw_name, Some(owner));
            let _ = state_tx.send(RegistrationState::Closed);
        });
        Ok(Registration::new(name, stop, task, state))
    }

    fn check_delegate(&self, caller: &str) -> Result<(), RegistryError> {
        crate::registry::check_delegate(&self.inner.delegates, caller)
    }
}

impl Inner {
    /// Withdraws `name`, if `owner` (a registration) still holds it, or whoever does when
    /// `None`.
    fn withdraw(&self, name: &str, owner: Option<u64>) -> bool {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        match (owners.get(name), owner) {
            (None, _) => return false,
            (Some(holder), Some(owner)) if *holder != owner => return false,
            _ => {}
        }
        owners.remove(name);
        let revision = self.revision.fetch_add(1, Ordering::SeqCst) + 1;
        self.cache.delete(revision, name);
        true
    }
}

impl Registry for MemoryRegistry {
    fn register(&self, record: NodeRecord) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        Box::pin(async move { self.publish(record) })
    }

    fn register_for(
        &self,
        caller: &str,
        record: NodeRecord,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        let allowed = self.check_delegate(caller);
        Box::pin(async move {
            allowed?;
            self.publish(record)
        })
    }

    fn unregister_for(
        &self,
        caller: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<bool, RegistryError>> {
        let allowed = self.check_delegate(caller);
        let name = name.to_string();
        Box::pin(async move {
            allowed?;
            Ok(self.inner.withdraw(&name, None))
        })
    }

    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<NodeRecord>, RegistryError>> {
        let found = self.inner.cache.get(name);
        Box::pin(async move { Ok(found) })
    }

    fn list(&self, selector: &Selector) -> BoxFuture<'_, Result<Vec<NodeRecord>, RegistryError>> {
        let found = self.inner.cache.list(selector);
        Box::pin(async move { Ok(found) })
    }

    fn watch(&self, selector: Selector) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        let watch = self.inner.cache.subscribe(selector);
        Box::pin(async move { Ok(watch) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::WatchEvent;

    fn record(name: &str, app: &str) -> NodeRecord {
        let mut record = NodeRecord::new(name);
        record.metadata.labels.insert("app".into(), app.into());
        record
    }

    #[tokio::test]
    async fn a_name_held_by_a_live_registration_is_refused_until_it_closes() {
        let registry = MemoryRegistry::new();
        let first = registry.register(record("a", "web")).await.unwrap();
        let refused = registry.register(record("a", "db")).await.unwrap_err();
        assert!(
            matches!(refused, RegistryError::NameTaken { .. }),
            "{refused}"
        );
        first.close().await;
        registry.register(record("a", "db")).await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_registration_withdraws_its_record() {
        let registry = MemoryRegistry::new();
        let mut watch = registry.watch(Selector::everything()).await.unwrap();
        watch.next().await;
        drop(registry.register(record("a", "web")).await.unwrap());
        assert!(matches!(watch.next().await, Some(WatchEvent::Put { .. })));
        assert!(matches!(
            watch.next().await,
            Some(WatchEvent::Delete { .. })
        ));
    }

    #[tokio::test]
    async fn only_delegates_register_for_others() {
        let registry = MemoryRegistry::with_delegates(["api-gateway"]);
        let denied = registry
            .register_for("intruder", record("a", "web"))
            .await
            .unwrap_err();
        assert!(matches!(denied, RegistryError::PermissionDenied { .. }));
        assert!(registry.get("a").await.unwrap().is_none());
        let registration = registry
            .register_for("api-gateway", record("a", "web"))
            .await
            .unwrap();
        assert!(registry.unregister_for("api-gateway", "a").await.unwrap());
        assert!(registry.get("a").await.unwrap().is_none());
        // The name is free again; closing the old registration leaves the new holder alone.
        let _again = registry.register(record("a", "db")).await.unwrap();
        registration.close().await;
        assert!(registry.get("a").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn list_returns_what_the_selector_matches() {
        let registry = MemoryRegistry::new();
        let _a = registry.register(record("a", "web")).await.unwrap();
        let _b = registry.register(record("b", "db")).await.unwrap();
        let found = registry.list(&"app!=db".parse().unwrap()).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "a");
    }

    #[tokio::test]
    async fn an_invalid_record_is_refused_with_the_field_named() {
        let registry = MemoryRegistry::new();
        let error = registry.register(record("a", "not ok")).await.unwrap_err();
        assert!(
            error.to_string().contains("metadata.labels[\"app\"]"),
            "{error}"
        );
    }
}
