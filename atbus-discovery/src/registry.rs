//! The `Registry` trait: register a node (itself, or another on its behalf), find nodes by name
//! or selector, and watch them. Two backends implement it: [`MemoryRegistry`](crate::MemoryRegistry)
//! (one process, the embedded default) and, with feature `etcd`,
//! [`EtcdRegistry`](crate::EtcdRegistry).
//!
//! Names are unique on the whole bus, whatever the namespace: a node's name is its address.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::record::{NodeRecord, RecordError};
use crate::selector::Selector;
use crate::watch::Watch;

/// A boxed future, so that registries can be used as `Arc<dyn Registry>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where nodes are registered and found.
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Publishes `record` as this process's own node. The record stays while the returned
    /// [`Registration`] lives; [`Registration::close`] (or dropping it) withdraws it.
    ///
    /// Fails with [`RegistryError::NameTaken`] when another live instance holds the name.
    fn register(&self, record: NodeRecord) -> BoxFuture<'_, Result<Registration, RegistryError>>;

    /// Publishes `record` on behalf of another node (API-controlled discovery): `caller` must be
    /// one of the registry's delegates.
    fn register_for(
        &self,
        caller: &str,
        record: NodeRecord,
    ) -> BoxFuture<'_, Result<Registration, RegistryError>>;

    /// Withdraws the record of `name` on behalf of its node: `caller` must be a delegate. Returns
    /// whether there was one.
    fn unregister_for(
        &self,
        caller: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<bool, RegistryError>>;

    /// The record of `name`, if registered.
    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<NodeRecord>, RegistryError>>;

    /// The records whose labels `selector` matches, by name.
    fn list(&self, selector: &Selector) -> BoxFuture<'_, Result<Vec<NodeRecord>, RegistryError>>;

    /// The records `selector` matches now, then every change to them, with no gap between the
    /// two.
    fn watch(&self, selector: Selector) -> BoxFuture<'_, Result<Watch, RegistryError>>;
}

/// What went wrong in a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The record breaks a rule.
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] RecordError),
    /// Another live instance holds the name: choose another, or stop the other instance.
    #[error("the name {name:?} is held by another live instance (on host {host:?}, pid {pid})")]
    NameTaken {
        /// The name.
        name: String,
        /// Where the holder runs.
        host: String,
        /// Its pid.
        pid: u32,
    },
    /// The caller may not register or unregister other nodes.
    #[error(
        "{caller:?} may not register or unregister other nodes: add it to the registry's delegates"
    )]
    PermissionDenied {
        /// Who asked.
        caller: String,
    },
    /// The backend failed (etcd unreachable, say).
    #[error("registry backend: {0}")]
    Backend(String),
    /// The registry was shut down.
    #[error("the registry is closed")]
    Closed,
}

/// Refuses `caller` unless it is one of `delegates` (who may register and unregister others).
pub(crate) fn check_delegate(
    delegates: &std::collections::BTreeSet<String>,
    caller: &str,
) -> Result<(), RegistryError> {
    match delegates.contains(caller) {
        true => Ok(()),
        false => Err(RegistryError::PermissionDenied {
            caller: caller.to_string(),
        }),
    }
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// The record is published.
    Registered,
    /// The record was lost (a lease expired, the backend is unreachable) and is being
    /// published again.
    Lost,
    /// Publishing again failed for good: another instance took the name meanwhile.
    Refused(String),
    /// Withdrawn.
    Closed,
}

/// A published record. Withdrawn by [`close`](Self::close), or when dropped (at once for the
/// in-memory registry; etcd revokes the lease in the background).
#[derive(Debug)]
pub struct Registration {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    state: watch::Receiver<RegistrationState>,
}

impl Registration {
    /// A registration kept by `task`, which withdraws the record when `stop` fires or is
    /// dropped, and reports in `state`.
    pub(crate) fn new(
        name: String,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
        state: watch::Receiver<RegistrationState>,
    ) -> Self {
        Registration {
            name,
            stop: Some(stop),
            task: Some(task),
            state,
        }
    }

    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the registration stands now.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// Waits until the state changes, and returns the new one.
    pub async fn changed(&mut self) -> RegistrationState {
        let _ = self.state.changed().await;
        self.state()
    }

    /// Withdraws the record and waits until it is gone from the registry.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
