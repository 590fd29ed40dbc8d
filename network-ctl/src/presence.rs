//! Being on the bus: finding the name of the relay a node connected to, and keeping the node's
//! discovery record published there (a record goes with the node's connection to the relay, so
//! it is published again each time the relay becomes reachable).

use std::time::Duration;

use atbus_core::runtime::{Node, NodeError, NodeEvent};
use atbus_discovery::NodeRecord;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

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

/// The name of a relay `node` is connected to (the first by name), waiting up to `timeout`
/// for one. Fails at once, with the reason, if a relay refuses this node's handshake (a wrong
/// bus token), else after `timeout` with `None` as the reason.
pub async fn relay_name(node: &Node, timeout: Duration) -> Result<String, Option<String>> {
    let mut events = node.events();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(relay) = node.relays().into_iter().next() {
            return Ok(relay);
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

/// Publishes `record` at `relay` now, and keeps it published at one relay until the node shuts
/// down: again whenever that relay comes back after a loss, and at another relay the node is
/// connected to when that one is lost. Fails if the first publication does.
pub async fn keep_published(
    node: &Node,
    relay: &str,
    record: NodeRecord,
) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let mut events = node.events();
    node.discovery(relay).register(&record).await?;
    let (node, mut current) = (node.clone(), relay.to_string());
    Ok(tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(NodeEvent::PeerReachable { peer }) if peer == current => {
                    publish(&node, &current, &record).await;
                }
                Ok(NodeEvent::PeerUnreachable { peer }) if peer == current => {
                    // Another relay, or this one once it is back.
                    loop {
                        match relay_name(&node, RELAY_SEARCH).await {
                            Ok(relay) => {
                                current = relay;
                                break;
                            }
                            Err(_) if matches!(events.try_recv(), Err(TryRecvError::Closed)) => {
                                return;
                            }
                            Err(_) => {}
                        }
                    }
                    tracing::info!(relay = %current, "publishing this node's record at its relay");
                    publish(&node, &current, &record).await;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => publish(&node, &current, &record).await,
                Err(RecvError::Closed) => return,
            }
        }
    }))
}

/// How long one search for a relay waits before checking whether the node is still up.
const RELAY_SEARCH: Duration = Duration::from_secs(60);

/// Attempts at publishing a record before giving up until the next relay event.
const PUBLISH_ATTEMPTS: u32 = 20;

async fn publish(node: &Node, relay: &str, record: &NodeRecord) {
    for attempt in 1..=PUBLISH_ATTEMPTS {
        match node.discovery(relay).register(record).await {
            Ok(()) => return,
            Err(NodeError::Shutdown) => return,
            Err(error) => {
                tracing::warn!(%error, attempt, relay, "publishing this node's record failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::error!(
        relay,
        "this node's record could not be published: it counts as gone until its relay reconnects"
    );
}
