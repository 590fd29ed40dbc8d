//! Where bindings live: the [`Store`] trait and its backends, SQLite ([`SqliteStore`], the
//! embedded default) and etcd (`EtcdStore`, feature `etcd`, for several replicas).
//!
//! Every method that changes state does it atomically: a refused or failed call changes nothing,
//! and no address is ever bound twice. A backend keeps an [`IpPool`](crate::pool::IpPool) per
//! network in step with its rows, so an allocation does not scan the range.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::clock::Millis;
use crate::error::ControlError;
use crate::records::{
    AuthorityPem, Binding, BootstrapToken, Network, NewBinding, NodeUpdate, Plane,
};

#[cfg(feature = "etcd")]
mod etcd;
mod schema;
mod sqlite;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdStore, EtcdStoreConfig};
pub use sqlite::SqliteStore;

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlError>> + Send + 'a>>;

/// A network with its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// The network.
    pub network: Network,
    /// Addresses that can be handed out.
    pub capacity: u128,
    /// Addresses bound now (the server's included).
    pub bound: usize,
}

/// The storage of the control plane.
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates `network` and binds the reserved node token to its server address; when a
    /// network of this net token exists with the same range, gateway and server address, it is
    /// returned as it is (so configured networks are ensured on every start, and the reserved
    /// binding is put back if missing); with another shape, [`ControlError::Conflict`].
    fn ensure_network(&self, network: Network) -> StoreFuture<'_, Network>;

    /// Every network, by net token.
    fn networks(&self) -> StoreFuture<'_, Vec<NetworkStatus>>;

    /// Stores a new bootstrap token.
    fn add_bootstrap_token(&self, token: BootstrapToken) -> StoreFuture<'_, ()>;

    /// Every stored bootstrap token, oldest first.
    fn bootstrap_tokens(&self) -> StoreFuture<'_, Vec<BootstrapToken>>;

    /// Deletes the bootstrap tokens expired at `now`; returns how many.
    fn sweep_bootstrap_tokens(&self, now: Millis) -> StoreFuture<'_, usize>;

    /// Registers a node in one transaction: checks the bootstrap token (known, not expired at
    /// `now`, not a used single-use token) and counts the use, binds a free address of the
    /// network, or else reclaims the binding of the not-connected, non-reserved node with the
    /// oldest `update_time` (ties: the oldest binding), and stores the binding as never
    /// connected. Fails with [`ControlError::PoolExhausted`] when every address belongs to a
    /// connected node.
    fn register(&self, request: NewBinding) -> StoreFuture<'_, Binding>;

    /// The binding of `node_token` in the network `net_token`.
    fn binding<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
    ) -> StoreFuture<'a, Option<Binding>>;

    /// Every binding of one network (or of all, with `None`), by network then address.
    fn bindings<'a>(&'a self, net_token: Option<&'a str>) -> StoreFuture<'a, Vec<Binding>>;

    /// The bindings held by the node whose bus name is `node_name` (one per network it joined).
    fn bindings_of_node<'a>(&'a self, node_name: &'a str) -> StoreFuture<'a, Vec<Binding>> {
        Box::pin(async move {
            let mut bindings = self.bindings(None).await?;
            bindings.retain(|binding| binding.node_name == node_name);
            Ok(bindings)
        })
    }

    /// Deletes the binding of `node_token` and frees its address; returns what it was. The
    /// reserved node token is refused with [`ControlError::Reserved`].
    fn unregister<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
    ) -> StoreFuture<'a, Binding>;

    /// Changes a binding's state, bus name or last-seen time at `now` (a change of state or
    /// name moves its `update_time` to `now`); returns the binding after.
    fn update_node<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
        update: NodeUpdate,
        now: Millis,
    ) -> StoreFuture<'a, Binding>;

    /// The certificate authority of `plane`: the stored one, or `candidate` stored now if there
    /// is none (the first replica to store one wins; the others get the winner's).
    fn ensure_authority(
        &self,
        plane: Plane,
        candidate: AuthorityPem,
    ) -> StoreFuture<'_, AuthorityPem>;
}
