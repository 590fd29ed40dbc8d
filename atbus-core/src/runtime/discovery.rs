//! Discovery through a relay, from the node's side: register this node's record with its relay,
//! and list or watch records by label selector there (`atbus_discovery.proto`, in requests of
//! packet type COMMAND). The relay answers
//! from its registry, so etcd carries one watcher per relay rather than one per node.

use std::collections::VecDeque;
use std::time::Duration;

use atbus_discovery::{NodeRecord, Selector, WatchEvent};
use atbus_proto::discovery as pb;
use pb::discovery_request::Op;
use prost::Message as _;

use super::error::NodeError;
use super::node::Node;

/// How long a watch poll may wait at the relay for a change.
const POLL_WAIT: Duration = Duration::from_secs(20);

/// Discovery requests to one relay. See [`Node::discovery`].
#[derive(Debug, Clone)]
pub struct RelayDiscovery {
    node: Node,
    relay: String,
    timeout: Duration,
}

impl Node {
    /// Discovery through the relay named `relay` (one this node is connected to).
    ///
    /// ```no_run
    /// # async fn run(node: atbus_core::runtime::Node) -> Result<(), atbus_core::runtime::NodeError> {
    /// use atbus_discovery::{NodeRecord, WatchEvent};
    ///
    /// let discovery = node.discovery("relay");
    /// let mut record = NodeRecord::new(node.name());
    /// record.metadata.labels.insert("app".into(), "echo".into());
    /// discovery.register(&record).await?;
    ///
    /// let mut echoes = discovery.watch(&"app=echo".parse().unwrap()).await?;
    /// while let Ok(event) = echoes.next().await {
    ///     match event {
    ///         WatchEvent::Init { records, .. } => println!("{} echo services", records.len()),
    ///         WatchEvent::Put { record, .. } => println!("{} is up", record.name),
    ///         WatchEvent::Delete { name, .. } => println!("{name} is gone"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn discovery(&self, relay: &str) -> RelayDiscovery {
        RelayDiscovery {
            node: self.clone(),
            relay: relay.to_string(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RelayDiscovery {
    /// The relay asked.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Publishes `record` (whose name must be this node's) at the relay: it stays while this
    /// node is connected to the relay, and goes when the node's last connection to it does.
    pub async fn register(&self, record: &NodeRecord) -> Result<(), NodeError> {
        let op = Op::Register(pb::RegisterRequest {
            record: Some(record.into()),
        });
        self.ask(op, self.timeout).await.map(drop)
    }

    /// Withdraws this node's record.
    pub async fn unregister(&self) -> Result<(), NodeError> {
        self.ask(Op::Unregister(pb::UnregisterRequest {}), self.timeout)
            .await
            .map(drop)
    }

    /// The records `selector` matches.
    pub async fn list(&self, selector: &Selector) -> Result<Vec<NodeRecord>, NodeError> {
        let op = Op::List(pb::ListRequest {
            selector: selector.to_string(),
        });
        let reply = self.ask(op, self.timeout).await?;
        Ok(reply.records.into_iter().map(NodeRecord::from).collect())
    }

    /// The records `selector` matches now ([`WatchEvent::Init`]), then every change to them.
    pub async fn watch(&self, selector: &Selector) -> Result<RelayWatch, NodeError> {
        let op = Op::Watch(pb::WatchRequest {
            selector: selector.to_string(),
        });
        let reply = self.ask(op, self.timeout).await?;
        let init = WatchEvent::Init {
            revision: reply.revision,
            records: reply.records.into_iter().map(NodeRecord::from).collect(),
        };
        Ok(RelayWatch {
            discovery: self.clone(),
            id: reply.watch_id,
            pending: VecDeque::from([init]),
        })
    }

    /// Sends `op` and returns the relay's reply, or its error.
    async fn ask(&self, op: Op, timeout: Duration) -> Result<pb::DiscoveryReply, NodeError> {
        let request = pb::DiscoveryRequest { op: Some(op) };
        let command = atbus_proto::protocol::AtbusPacketType::Command as i32;
        let reply = self
            .node
            .request_typed(
                &self.relay,
                request.encode_to_vec().into(),
                timeout,
                command,
            )
            .await?;
        let reply =
            pb::DiscoveryReply::decode(reply.data).map_err(|error| NodeError::Discovery {
                relay: self.relay.clone(),
                message: format!("not a discovery reply: {error}"),
            })?;
        if !reply.error.is_empty() {
            return Err(NodeError::Discovery {
                relay: self.relay.clone(),
                message: reply.error,
            });
        }
        Ok(reply)
    }
}

/// A watch held at a relay, polled. Dropping it lets the relay forget it (at the latest two
/// minutes later); [`cancel`](Self::cancel) tells it at once.
#[derive(Debug)]
pub struct RelayWatch {
    discovery: RelayDiscovery,
    id: u64,
    pending: VecDeque<WatchEvent>,
}

impl RelayWatch {
    /// The next event: [`WatchEvent::Init`] first, then each change as the relay reports it.
    pub async fn next(&mut self) -> Result<WatchEvent, NodeError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let op = Op::Poll(pb::PollRequest {
                watch_id: self.id,
                wait_milliseconds: POLL_WAIT.as_millis() as u32,
            });
            let reply = self
                .discovery
                .ask(op, POLL_WAIT + self.discovery.timeout)
                .await?;
            self.pending
                .extend(reply.events.into_iter().filter_map(WatchEvent::from_wire));
        }
    }

    /// Ends the watch at the relay.
    pub async fn cancel(self) -> Result<(), NodeError> {
        let op = Op::Cancel(pb::CancelRequest { watch_id: self.id });
        self.discovery
            .ask(op, self.discovery.timeout)
            .await
            .map(drop)
    }
}
