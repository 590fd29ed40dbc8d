//! Discovery through the relay: the relay's node answers requests (`atbus_discovery.proto`)
//! from its nodes: register the sender's own record (withdrawn when the sender's last connection
//! goes), list by selector, and watch by selector, polled. Every watch is a subscriber of the
//! relay's registry, so with etcd the relay holds one etcd watcher however many nodes watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atbus_core::runtime::{Message, Node, NodeEvent};
use atbus_discovery::{NodeRecord, Registration, Registry, Selector, Watch, WatchEvent};
use atbus_proto::discovery as pb;
use pb::discovery_request::Op;
use prost::Message as _;
use tokio::sync::Mutex;

/// The longest a poll is held waiting for a change.
const MAX_POLL_WAIT: Duration = Duration::from_secs(25);

/// The most changes one poll returns.
const MAX_POLL_EVENTS: usize = 512;

/// A watch nobody polled for this long is dropped.
const WATCH_IDLE: Duration = Duration::from_secs(120);

/// The relay's discovery service.
pub(crate) struct DiscoveryService {
    node: Node,
    registry: Arc<dyn Registry>,
    /// The registration of each node that registered itself here, by name.
    registrations: std::sync::Mutex<HashMap<String, Registration>>,
    watches: std::sync::Mutex<HashMap<u64, Slot>>,
    next_watch: AtomicU64,
}

/// One node's watch.
struct Slot {
    owner: String,
    watch: Arc<Mutex<Watch>>,
    last_poll: Instant,
}

impl DiscoveryService {
    /// Starts serving the requests that reach `node`.
    pub fn start(node: Node, registry: Arc<dyn Registry>) -> Arc<Self> {
        let service = Arc::new(DiscoveryService {
            node,
            registry,
            registrations: Default::default(),
            watches: Default::default(),
            next_watch: AtomicU64::new(1),
        });
        tokio::spawn(Arc::clone(&service).serve());
        tokio::spawn(Arc::clone(&service).forget_the_gone());
        service
    }

    async fn serve(self: Arc<Self>) {
        while let Some(message) = self.node.recv().await {
            let command = atbus_proto::protocol::AtbusPacketType::Command as i32;
            if message.request_id().is_none() || message.meta.packet_type != command {
                tracing::debug!(source = %message.source, "a message to the relay that is not a discovery command");
                continue;
            }
            let service = Arc::clone(&self);
            tokio::spawn(async move {
                let reply = service.answer(&message).await;
                let _ = service.node.reply(&message, reply.encode_to_vec()).await;
            });
        }
    }

    /// Withdraws the records and watches of nodes whose last connection went; drops watches
    /// nobody polls.
    async fn forget_the_gone(self: Arc<Self>) {
        let mut events = self.node.events();
        let mut sweep = tokio::time::interval(WATCH_IDLE / 4);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(NodeEvent::PeerUnreachable { peer }) => {
                        let registration = self.registrations.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer);
                        if let Some(registration) = registration {
                            registration.close().await;
                        }
                        self.watches.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, slot| slot.owner != peer);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = sweep.tick() => {
                    self.watches.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, slot| slot.last_poll.elapsed() < WATCH_IDLE);
                }
            }
        }
    }

    async fn answer(&self, message: &Message) -> pb::DiscoveryReply {
        let request = match pb::DiscoveryRequest::decode(message.data.clone()) {
            Ok(request) => request,
            Err(error) => return failure(format!("not a discovery request: {error}")),
        };
        let source = message.source.as_str();
        match request.op {
            Some(Op::Register(register)) => self.register(source, register).await,
            Some(Op::Unregister(_)) => {
                let registration = self.lock_registrations().remove(source);
                if let Some(registration) = registration {
                    registration.close().await;
                }
                pb::DiscoveryReply::default()
            }
            Some(Op::List(list)) => match list.selector.parse::<Selector>() {
                Ok(selector) => match self.registry.list(&selector).await {
                    Ok(records) => pb::DiscoveryReply {
                        records: records.iter().map(Into::into).collect(),
                        ..Default::default()
                    },
                    Err(error) => failure(error.to_string()),
                },
                Err(error) => failure(format!("selector: {error}")),
            },
            Some(Op::Watch(watch)) => self.watch(source, &watch.selector).await,
            Some(Op::Poll(poll)) => self.poll(source, poll).await,
            Some(Op::Cancel(cancel)) => {
                let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
                if watches
                    .get(&cancel.watch_id)
                    .is_some_and(|slot| slot.owner == source)
                {
                    watches.remove(&cancel.watch_id);
                }
                pb::DiscoveryReply::default()
            }
            None => failure("an empty discovery request".into()),
        }
    }

    fn lock_registrations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        self.registrations.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn register(&self, source: &str, request: pb::RegisterRequest) -> pb::DiscoveryReply {
        let Some(record) = request.record else {
            return failure("register: no record".into());
        };
        let record = NodeRecord::from(record);
        if record.name != source {
            return failure(format!(
                "register: {source:?} may register only its own record, not {:?}",
                record.name
            ));
        }
        // Registering again replaces the record.
        let previous = self.lock_registrations().remove(source);
        if let Some(previous) = previous {
            previous.close().await;
        }
        match self.registry.register(record).await {
            Ok(registration) => {
                self.lock_registrations()
                    .insert(source.to_string(), registration);
                pb::DiscoveryReply::default()
            }
            Err(error) => failure(error.to_string()),
        }
    }

    async fn watch(&self, source: &str, selector: &str) -> pb::DiscoveryReply {
        let selector = match selector.parse::<Selector>() {
            Ok(selector) => selector,
            Err(error) => return failure(format!("selector: {error}")),
        };
        let mut watch = match self.registry.watch(selector).await {
            Ok(watch) => watch,
            Err(error) => return failure(error.to_string()),
        };
        let Some(WatchEvent::Init { revision, records }) = watch.next().await else {
            return failure("the registry is closed".into());
        };
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        self.watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Slot {
                    owner: source.to_string(),
                    watch: Arc::new(Mutex::new(watch)),
                    last_poll: Instant::now(),
                },
            );
        pb::DiscoveryReply {
            records: records.iter().map(Into::into).collect(),
            watch_id: id,
            revision,
            ..Default::default()
        }
    }

    async fn poll(&self, source: &str, poll: pb::PollRequest) -> pb::DiscoveryReply {
        let watch = {
            let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
            match watches.get_mut(&poll.watch_id) {
                Some(slot) if slot.owner == source => {
                    slot.last_poll = Instant::now();
                    Arc::clone(&slot.watch)
                }
                _ => return failure(format!("no watch {} of {source:?}", poll.watch_id)),
            }
        };
        let wait = Duration::from_millis(poll.wait_milliseconds.into()).min(MAX_POLL_WAIT);
        let mut watch = watch.lock().await;
        let mut events = Vec::new();
        if let Ok(Some(event)) = tokio::time::timeout(wait, watch.next()).await {
            events.extend(event.to_wire());
            // Whatever else is already there goes in the same reply.
            while events.len() < MAX_POLL_EVENTS {
                match tokio::time::timeout(Duration::ZERO, watch.next()).await {
                    Ok(Some(event)) => events.extend(event.to_wire()),
                    _ => break,
                }
            }
        }
        pb::DiscoveryReply {
            events,
            ..Default::default()
        }
    }
}

fn failure(error: String) -> pb::DiscoveryReply {
    pb::DiscoveryReply {
        error,
        ..Default::default()
    }
}
