//! Sending to a service rather than a node: `send_to(selector, policy, bytes)` picks one of the
//! nodes the selector matches, as the relay's registry reports them, by round robin, closeness,
//! consistent hash or name, and sends to it.
//!
//! Each selector used is watched once through the relay (a [`RelayWatch`]) and its candidates kept
//! up to date in the background; the first send on a selector waits for the watch's snapshot.
//! The chosen node is dialed on demand where its record says is closest
//! ([`path_to`]: memory, unix socket, internal address, matching gateway); until that connection
//! is up, and when there is none, frames go through the relay (`atbus_discovery::path_to`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atbus_discovery::path::{Path, path_to};
use atbus_discovery::policy::{Chooser, Locality, Policy};
use atbus_discovery::{NodeRecord, Selector, WatchEvent};
use bytes::Bytes;
use tokio::sync::watch;

use super::discovery::{RelayDiscovery, RelayWatch};
use super::error::NodeError;
use super::message::Message;
use super::node::Node;

/// Routes messages to services through one relay's discovery. See [`Node::services`].
#[derive(Debug, Clone)]
pub struct Services {
    node: Node,
    discovery: RelayDiscovery,
    me: Locality,
    /// This node's record: its namespace, host and labels decide the path to a target.
    own: NodeRecord,
    targets: Arc<Mutex<HashMap<String, Target>>>,
}

/// What is known of one selector's candidates.
#[derive(Debug)]
struct Target {
    records: watch::Receiver<Option<BTreeMap<String, NodeRecord>>>,
    chooser: Chooser,
}

impl Node {
    /// Sends to services found through the relay named `relay`. `own` is this node's record (its
    /// namespace, host and area labels decide what [`Policy::Closest`] prefers).
    ///
    /// ```no_run
    /// # async fn run(node: atbus_core::runtime::Node) -> Result<(), atbus_core::runtime::NodeError> {
    /// use atbus_discovery::NodeRecord;
    /// use atbus_discovery::policy::Policy;
    ///
    /// let services = node.services("relay", NodeRecord::new(node.name()));
    /// let echo = "app=echo".parse().unwrap();
    /// let chosen = services.send_to(&echo, &Policy::RoundRobin, "hello").await?;
    /// let reply = services
    ///     .request_to(&echo, &Policy::hashed("user-42"), "ping", std::time::Duration::from_secs(5))
    ///     .await?;
    /// println!("{chosen} got hello; {} answered", reply.source);
    /// # Ok(()) }
    /// ```
    pub fn services(&self, relay: &str, own: NodeRecord) -> Services {
        Services {
            node: self.clone(),
            discovery: self.discovery(relay),
            me: Locality::of(&own),
            own,
            targets: Default::default(),
        }
    }
}

impl Services {
    /// Sends `data` to one node `selector` matches, chosen by `policy`; returns its name.
    pub async fn send_to(
        &self,
        selector: &Selector,
        policy: &Policy,
        data: impl Into<Bytes>,
    ) -> Result<String, NodeError> {
        let target = self.choose(selector, policy).await?;
        self.node.send(&target, data).await?;
        Ok(target)
    }

    /// Sends `data` as a request to one node `selector` matches, chosen by `policy`, and waits
    /// up to `timeout` for its reply.
    pub async fn request_to(
        &self,
        selector: &Selector,
        policy: &Policy,
        data: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, NodeError> {
        let target = self.choose(selector, policy).await?;
        self.node.request(&target, data, timeout).await
    }

    /// The nodes `selector` matches now, as the relay reported them.
    pub async fn candidates(&self, selector: &Selector) -> Result<Vec<NodeRecord>, NodeError> {
        let mut records = self.follow(selector).await?;
        let snapshot = records
            .wait_for(Option::is_some)
            .await
            .map_err(|_| self.gone())?
            .clone()
            .unwrap_or_default();
        Ok(snapshot.into_values().collect())
    }

    /// One candidate's name, dialed at its gateway if one matches this node.
    async fn choose(&self, selector: &Selector, policy: &Policy) -> Result<String, NodeError> {
        let candidates = self.candidates(selector).await?;
        let chosen = {
            let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            let target = targets
                .get_mut(&selector.to_string())
                .ok_or_else(|| self.gone())?;
            target
                .chooser
                .choose(policy, &self.me, &candidates)
                .cloned()
        };
        let Some(chosen) = chosen else {
            return Err(NodeError::Discovery {
                relay: self.discovery.relay().to_string(),
                message: format!("no node matches {selector:?} for {policy:?}"),
            });
        };
        if let Some(addresses) = self.direct_path(&chosen) {
            // Dialed at the first send; until it is up, frames go through the relay.
            let _ = self.node.add_peer_on_demand(&chosen.name, addresses);
        }
        Ok(chosen.name)
    }

    /// Where to dial `record` directly, if its record offers a way closer than the relay and
    /// this node is not connected to it already.
    fn direct_path(&self, record: &NodeRecord) -> Option<Vec<String>> {
        if self.node.reachable_peers().contains(&record.name) {
            return None;
        }
        match path_to(&self.own, record) {
            Path::Direct(addresses) => Some(addresses),
            Path::Relay => None,
        }
    }

    /// The receiver of `selector`'s candidates, starting the watch the first time.
    async fn follow(
        &self,
        selector: &Selector,
    ) -> Result<watch::Receiver<Option<BTreeMap<String, NodeRecord>>>, NodeError> {
        let key = selector.to_string();
        if let Some(target) = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if target.records.has_changed().is_ok() {
                return Ok(target.records.clone());
            }
        }
        let relay_watch = self.discovery.watch(selector).await?;
        let (sender, records) = watch::channel(None);
        tokio::spawn(keep_up(relay_watch, sender));
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let target = targets.entry(key).or_insert_with(|| Target {
            records: records.clone(),
            chooser: Chooser::new(),
        });
        // A watch that ended (the relay went) is replaced; the turn order stays.
        target.records = records.clone();
        Ok(records)
    }

    fn gone(&self) -> NodeError {
        NodeError::Discovery {
            relay: self.discovery.relay().to_string(),
            message: "the watch through the relay ended".into(),
        }
    }
}

/// Applies a relay watch's events to the candidates, until the watch fails (the relay went) or
/// nobody holds the receiver.
async fn keep_up(
    mut relay_watch: RelayWatch,
    sender: watch::Sender<Option<BTreeMap<String, NodeRecord>>>,
) {
    loop {
        let event = match relay_watch.next().await {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "a service watch through the relay ended");
                return;
            }
        };
        sender.send_modify(|records| {
            let records = records.get_or_insert_with(BTreeMap::new);
            match event {
                WatchEvent::Init { records: all, .. } => {
                    *records = all
                        .into_iter()
                        .map(|record| (record.name.clone(), record))
                        .collect();
                }
                WatchEvent::Put { record, .. } => {
                    records.insert(record.name.clone(), record);
                }
                WatchEvent::Delete { name, .. } => {
                    records.remove(&name);
                }
            }
        });
        if sender.is_closed() {
            let _ = relay_watch.cancel().await;
            return;
        }
    }
}
