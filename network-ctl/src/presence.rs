//! Being on the bus: finding the name of the relay a node connected to, and keeping the node's
//! discovery record published there (a record goes with the node's connection to the relay, so
//! it is published again each time the relay becomes reachable).

use std::time::Duration;

use atbus_core::runtime::{Node, NodeEvent};
use atbus_discovery::NodeRecord;
use tokio::sync::broadcast::error::RecvError;

/// The label every network-ctl node carries, with its role as the value.
pub const ROLE_LABEL: &str = "network-ctl";
/// The role of a network-manager replica (its record's kind is `network-manager` too).
pub const MANAGER_ROLE: &str = "manager";
/// The role of an agent: the manager follows agents' records to know who is connected.
pub const AGENT_ROLE: &str = "agent";
/// The kind of a network-manager's record.
pub const MANAGER_KIND: &str = "network-manager";

/// The record of `node` in `role`.
pub fn record(node: &Node, role: &str) -> NodeRecord {
    let mut record = NodeRecord::new(node.name());
    record
        .metadata
        .labels
        .insert(ROLE_LABEL.into(), role.into());
    if role == MANAGER_ROLE {
        record.metadata.kind = MANAGER_KIND.into();
    }
    record
}

/// The name of the first relay `node` is connected to, waiting up to `timeout` for the
/// connection. Fails at once, with the reason, if the relay refuses this node's handshake (a
/// wrong bus token), else after `timeout` with `None` as the reason.
pub async fn relay_name(node: &Node, timeout: Duration) -> Result<String, Option<String>> {
    let mut events = node.events();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(peer) = node
            .connection_info()
            .into_iter()
            .find_map(|connection| connection.peer)
        {
            return Ok(peer);
        }
        tokio::select! {
            event = events.recv() => {
                if let Ok(NodeEvent::HandshakeFailed { reason, .. }) = event {
                    return Err(Some(reason));
                }
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = tokio::time::sleep_until(deadline) => return Err(None),
        }
    }
}

/// Publishes `record` at `relay` now, and again whenever the relay becomes reachable after a
/// loss, until the node shuts down. Fails if the first publication does.
pub async fn keep_published(
    node: &Node,
    relay: &str,
    record: NodeRecord,
) -> Result<tokio::task::JoinHandle<()>, atbus_core::runtime::NodeError> {
    let mut events = node.events();
    node.discovery(relay).register(&record).await?;
    let (node, relay) = (node.clone(), relay.to_string());
    Ok(tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(NodeEvent::PeerReachable { peer }) if peer == relay => {
                    publish_until_done(&node, &relay, &record).await;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => publish_until_done(&node, &relay, &record).await,
                Err(RecvError::Closed) => return,
            }
        }
    }))
}

async fn publish_until_done(node: &Node, relay: &str, record: &NodeRecord) {
    for attempt in 1.. {
        match node.discovery(relay).register(record).await {
            Ok(()) => return,
            Err(atbus_core::runtime::NodeError::Shutdown) => return,
            Err(error) => {
                tracing::warn!(%error, attempt, relay, "publishing this node's record failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
