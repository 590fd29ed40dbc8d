//! Who the node dials and how: the credential it proves, the reconnection backoff, and the peers
//! whose connections start only when the application first sends to them (connect on demand).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::handle::NodeHandle;
use super::tasks::{self, Backoff};
use super::transport::TransportContext;
use crate::address::Address;
use crate::engine::{ConnectOptions, Credential};

/// Starts the dial loops of a node's peers.
pub(crate) struct Dialer {
    node: NodeHandle,
    context: Arc<TransportContext>,
    /// What the node proves when it connects; `None` for a node that only listens.
    credential: Option<Credential>,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
    /// Peers dialed on demand and not dialed yet, with their addresses.
    waiting: Mutex<HashMap<String, Vec<Address>>>,
}

impl Dialer {
    /// A dialer for the node of `node`.
    pub fn new(
        node: NodeHandle,
        context: Arc<TransportContext>,
        credential: Option<Credential>,
        backoff: Backoff,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            node,
            context,
            credential,
            backoff,
            stop,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the node can dial at all (it has something to prove).
    pub fn can_dial(&self) -> bool {
        self.credential.is_some()
    }

    /// Keeps one connection to `peer` at each of `addresses` from now on.
    pub fn dial(&self, peer: &str, addresses: &[Address]) {
        let Some(credential) = &self.credential else {
            return;
        };
        let options = ConnectOptions::new(peer.to_string(), credential.clone());
        self.dial_with(options, addresses);
    }

    /// Keeps a connection to the relay at each of `addresses`, whatever its name: nodes this
    /// node has no direct connection to are reached through it.
    pub fn dial_relay(&self, addresses: &[Address]) {
        let Some(credential) = &self.credential else {
            return;
        };
        self.dial_with(ConnectOptions::to_anyone(credential.clone()), addresses);
    }

    /// Relays: keeps a connection to another relay at each of `addresses`, introducing this node
    /// as a relay, to exchange route tables and forward through each other.
    pub fn dial_relay_peer(&self, addresses: &[Address]) {
        let Some(credential) = &self.credential else {
            return;
        };
        let options = ConnectOptions {
            relay: true,
            ..ConnectOptions::to_anyone(credential.clone())
        };
        self.dial_with(options, addresses);
    }

    fn dial_with(&self, options: ConnectOptions, addresses: &[Address]) {
        for address in addresses {
            let options = options.clone();
            tokio::spawn(tasks::dial_loop(
                self.node.clone(),
                self.context.clone(),
                address.clone(),
                options,
                self.backoff,
                self.stop.clone(),
            ));
        }
    }

    /// Remembers `peer` at `addresses`, to be dialed when the application first sends to it.
    pub fn dial_on_demand(&self, peer: &str, addresses: Vec<Address>) {
        self.waiting()
            .entry(peer.to_string())
            .or_default()
            .extend(addresses);
    }

    /// The application sends to `peer`: if it waits to be dialed, dial it now.
    pub fn on_send(&self, peer: &str) {
        // The common case (nothing waits) costs one uncontended lock.
        let addresses = {
            let mut waiting = self.waiting();
            if waiting.is_empty() {
                return;
            }
            waiting.remove(peer)
        };
        if let Some(addresses) = addresses {
            tracing::debug!(peer, "first send: dialing on demand");
            self.dial(peer, &addresses);
        }
    }

    /// Peers that wait to be dialed.
    pub fn waiting_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.waiting().keys().cloned().collect();
        peers.sort();
        peers
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Address>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}
