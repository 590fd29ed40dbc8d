//! The network-manager on the bus: a node that publishes its record (`kind=network-manager`,
//! label `network-ctl=manager`) at its relay, answers requests with the [`Manager`], and follows
//! the agents' records there to know which nodes are connected.

use std::collections::HashSet;
use std::time::Duration;

use atbus_core::runtime::{Message, Node, NodeError, NodeEvent};
use atbus_discovery::{Selector, WatchEvent};
use prost::Message as _;

use crate::error::ControlError;
use crate::manager::{Caller, Manager};
use crate::presence::{self, AGENT_ROLE, MANAGER_ROLE, ROLE_LABEL};
use crate::proto;

/// How long the service waits for its first relay connection.
const RELAY_WAIT: Duration = Duration::from_secs(30);

/// A running network-manager service.
#[derive(Debug)]
pub struct Service {
    node: Node,
    relay: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Serves `manager` on `node` (connected to a relay): publishes the manager's record,
    /// follows the agents' records and answers requests until the node shuts down.
    pub async fn start(node: Node, manager: Manager) -> Result<Self, NodeError> {
        let relay = presence::relay_name(&node, RELAY_WAIT)
            .await
            .map_err(|refusal| {
                NodeError::Config(format!(
                    "{} is not connected to a relay ({}): check the relay addresses and the bus token",
                    node.name(),
                    refusal.unwrap_or_else(|| format!("none answered within {RELAY_WAIT:?}"))
                ))
            })?;
        let mut tasks = vec![
            presence::keep_published(&node, &relay, presence::record(&node, MANAGER_ROLE)).await?,
        ];
        tasks.push(tokio::spawn(follow_agents(
            node.clone(),
            relay.clone(),
            manager.clone(),
        )));
        tasks.push(tokio::spawn(answer(node.clone(), manager)));
        tracing::info!(name = node.name(), %relay, "network-manager serving");
        Ok(Self { node, relay, tasks })
    }

    /// The relay the service published itself at.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// The service's node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Stops serving and shuts the node down.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.node.shutdown().await;
    }
}

/// Answers every request the node receives, each in a task of its own.
async fn answer(node: Node, manager: Manager) {
    while let Some(message) = node.recv().await {
        if message.request_id().is_none() {
            tracing::debug!(source = %message.source, "a message that is not a request: ignored");
            continue;
        }
        let (node, manager) = (node.clone(), manager.clone());
        tokio::spawn(async move {
            let response = respond(&manager, &message).await;
            if let Err(error) = node.reply(&message, response.encode_to_vec()).await {
                tracing::debug!(source = %message.source, %error, "the reply could not be sent");
            }
        });
    }
}

async fn respond(manager: &Manager, message: &Message) -> proto::Response {
    match proto::Request::decode(&message.data[..]) {
        Ok(request) => {
            let caller = Caller {
                name: &message.source,
                admin: manager.is_admin_token(&request.admin_token),
            };
            manager.handle(caller, request).await
        }
        Err(error) => {
            let error = ControlError::BadRequest(format!(
                "the request is not a network-ctl request: {error}"
            ));
            proto::Response {
                body: Some(proto::response::Body::Error(proto::Error {
                    code: error.code().into(),
                    message: error.to_string(),
                })),
            }
        }
    }
}

/// Keeps the manager's view of connected nodes in step with the agents' records at the relay.
async fn follow_agents(node: Node, relay: String, manager: Manager) {
    let selector: Selector = format!("{ROLE_LABEL}={AGENT_ROLE}")
        .parse()
        .expect("a valid selector");
    let mut relay = relay;
    let mut events = node.events();
    loop {
        let watch = node.discovery(&relay).watch(&selector).await;
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(NodeError::Shutdown) => return,
            Err(error) => {
                tracing::warn!(%error, %relay, "watching agents failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                relay = next_relay(&node, relay).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = watch.next() => next,
                () = lost(&mut events, &relay) => {
                    tracing::info!(%relay, "the relay of the agent watch is gone");
                    relay = next_relay(&node, relay).await;
                    break;
                }
            };
            let applied = match next {
                Ok(WatchEvent::Init { records, .. }) => {
                    let names: HashSet<String> = records.into_iter().map(|r| r.name).collect();
                    manager.nodes_present(names).await
                }
                Ok(WatchEvent::Put { record, .. }) => manager.node_seen(&record.name, true).await,
                Ok(WatchEvent::Delete { name, .. }) => manager.node_seen(&name, false).await,
                Err(NodeError::Shutdown) => return,
                Err(error) => {
                    tracing::warn!(%error, %relay, "the agent watch ended; watching again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    relay = next_relay(&node, relay).await;
                    break;
                }
            };
            if let Err(error) = applied {
                tracing::warn!(%error, "recording node liveness failed");
            }
        }
    }
}

/// Returns once `relay` is unreachable (or the node's events end).
async fn lost(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>, relay: &str) {
    loop {
        match events.recv().await {
            Ok(NodeEvent::PeerUnreachable { peer }) if peer == relay => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await
            }
            _ => {}
        }
    }
}

/// The relay to watch at next: one the node is connected to now (the same if it still is), or
/// `relay` again if there is none yet.
async fn next_relay(node: &Node, relay: String) -> String {
    let relays = node.relays();
    if relays.contains(&relay) {
        return relay;
    }
    match presence::relay_name(node, Duration::from_secs(1)).await {
        Ok(other) => {
            tracing::info!(from = %relay, to = %other, "watching agents at another relay");
            other
        }
        Err(_) => relay,
    }
}
