//! The state a running node shares between its tasks: the engine behind one lock, the queues of
//! bytes each connection's writer drains, the messages waiting for the application, and the
//! requests waiting for replies.
//!
//! Whoever calls into the engine (a connection's reader, the timer, the application sending) then
//! calls [`State::drive`], which moves the engine's transmits to the connections' queues and its
//! events to the application, and returns the wake-ups to deliver once the lock is released.
//!
//! This is the node's core, private to it: the transports reach it only through the handles of
//! `handle` (which they are given), and nothing here knows of a transport.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use atbus_proto::protocol::PacketOptions;
use bytes::Bytes;
use tokio::sync::{Notify, broadcast, oneshot, watch};

use super::error::NodeError;
use super::message::{Message, NodeEvent};
use super::traffic::Traffic;
use crate::engine::{ConnectionId, Endpoint, Event, SendError};

/// Frames queued for one connection, and how to wake its writer.
#[derive(Debug)]
pub(crate) struct Link {
    /// Transmits waiting to be written, in order.
    pub queue: Vec<Bytes>,
    /// Wakes the writer.
    pub notify: Arc<Notify>,
    /// The engine is done with the connection: write what is queued, then close.
    pub closing: bool,
    /// Where it goes, for logs and the node's views.
    pub remote: String,
    /// Its transport's slot in the traffic counters.
    traffic_slot: Option<usize>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// The engine was told the transport is backed up (`queued_bytes` over [`LINK_BACKLOG`]).
    blocked: bool,
}

/// Bytes queued for one connection's writer beyond which the engine is told to hold its
/// transmits for it: a socket that does not drain (a slow or stopped reader) then holds back only
/// what goes to that connection, within the engine's windows and a relay's forward queue.
pub(crate) const LINK_BACKLOG: usize = 1024 * 1024;

/// Everything behind the lock.
pub(crate) struct State {
    pub endpoint: Endpoint,
    pub links: HashMap<ConnectionId, Link>,
    /// Messages for the application.
    pub inbox: VecDeque<Message>,
    /// Bytes of the messages in `inbox`.
    pub inbox_bytes: usize,
    /// Messages are taken from the engine only while `inbox_bytes` is below this: beyond it they
    /// wait in the engine, whose windows then hold the senders back.
    pub inbox_limit: usize,
    /// Streams with messages the engine holds, in the order they became readable.
    readable: VecDeque<(String, i64)>,
    /// Requests awaiting their reply, by request id.
    pub requests: HashMap<u64, (String, oneshot::Sender<Result<Message, NodeError>>)>,
    next_request: u64,
    /// The node is shutting down: no new connections, no new sends.
    pub shutting_down: bool,
    /// The deadline the timer task sleeps until.
    pub armed_timer: Option<Instant>,
    /// Connections and bytes by transport.
    pub traffic: Traffic,
    /// Relay addresses the node dials because peers advertise them (and it prefers those): the
    /// peers behind each. Once a relay there authenticates, frames to them go through it.
    pub advertised_relays: HashMap<String, Vec<String>>,
}

/// Wake-ups to deliver after the lock is released.
#[derive(Default)]
pub(crate) struct Wakeups {
    writers: Vec<Arc<Notify>>,
    inbox: bool,
    writable: bool,
    timer: bool,
    events: Vec<NodeEvent>,
}

/// The node's shared half.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The timer's deadline moved earlier.
    pub timer: Notify,
    /// Messages arrived.
    pub inbox: Notify,
    /// A stream that refused a send has room.
    pub writable: Notify,
    /// Peer and connection events for the application.
    pub events: broadcast::Sender<NodeEvent>,
    /// Becomes true when the node stops.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(endpoint: Endpoint, inbox_limit: usize, stop: watch::Receiver<bool>) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            state: Mutex::new(State {
                endpoint,
                links: HashMap::new(),
                inbox: VecDeque::new(),
                inbox_bytes: 0,
                inbox_limit,
                readable: VecDeque::new(),
                requests: HashMap::new(),
                next_request: 1,
                shutting_down: false,
                armed_timer: None,
                traffic: Traffic::default(),
                advertised_relays: HashMap::new(),
            }),
            timer: Notify::new(),
            inbox: Notify::new(),
            writable: Notify::new(),
            events,
            stop,
        })
    }

    /// Locks the state. A task that panicked while holding it leaves the engine as it was at the
    /// panic, which is still consistent enough to shut down: the poison is ignored.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Runs `f` on the state, drives the engine, and delivers the wake-ups after unlocking.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, wakeups) = {
            let mut state = self.lock();
            let result = f(&mut state);
            let wakeups = state.drive(Instant::now());
            (result, wakeups)
        };
        self.wake(wakeups);
        result
    }

    /// Takes the frames queued for connection `id`, and whether the engine is done with it (a
    /// connection no longer known counts as done).
    pub fn take_queue(&self, id: ConnectionId) -> (Vec<Bytes>, bool) {
        let mut state = self.lock();
        let State { links, traffic, .. } = &mut *state;
        let Some(link) = links.get_mut(&id) else {
            return (Vec::new(), true);
        };
        let queue = std::mem::take(&mut link.queue);
        link.queued_bytes = 0;
        if let Some(counters) = traffic.get_mut(link.traffic_slot) {
            counters.transmits_sent += queue.len() as u64;
            counters.bytes_sent += queue.iter().map(|frame| frame.len() as u64).sum::<u64>();
        }
        let closing = link.closing;
        if std::mem::take(&mut link.blocked) {
            // The writer caught up: what the engine held for the connection may go now.
            state.endpoint.set_transport_blocked(id, false);
            let wakeups = state.drive(Instant::now());
            drop(state);
            self.wake(wakeups);
        }
        (queue, closing)
    }

    /// Feeds `data`, received on connection `id`, to the engine (and drives it).
    pub fn input(&self, id: ConnectionId, data: Bytes) {
        self.with(|state| state.input(Instant::now(), id, data));
    }

    fn wake(&self, wakeups: Wakeups) {
        for writer in wakeups.writers {
            writer.notify_one();
        }
        if wakeups.inbox {
            self.inbox.notify_waiters();
        }
        if wakeups.writable {
            self.writable.notify_waiters();
        }
        if wakeups.timer {
            self.timer.notify_one();
        }
        for event in wakeups.events {
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
    }
}

impl State {
    /// The queue of connection `id`, which the engine just handed out.
    pub fn add_link(&mut self, id: ConnectionId, remote: String) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let traffic_slot = Traffic::slot(&remote);
        if let Some(counters) = self.traffic.get_mut(traffic_slot) {
            counters.connections_opened += 1;
        }
        self.links.insert(
            id,
            Link {
                queue: Vec::new(),
                notify: notify.clone(),
                closing: false,
                remote,
                traffic_slot,
                queued_bytes: 0,
                blocked: false,
            },
        );
        notify
    }

    /// Forgets connection `id`'s queue: the transport is done with it.
    pub fn remove_link(&mut self, id: ConnectionId) {
        if let Some(link) = self.links.remove(&id) {
            if let Some(counters) = self.traffic.get_mut(link.traffic_slot) {
                counters.connections_closed += 1;
            }
        }
        // A crowd of connections gone: give back their room.
        if self.links.capacity() > 4 * self.links.len().max(64) {
            self.links.shrink_to_fit();
        }
    }

    /// Feeds `data`, received on connection `id`, to the engine.
    pub fn input(&mut self, now: Instant, id: ConnectionId, data: Bytes) {
        let slot = self.links.get(&id).and_then(|link| link.traffic_slot);
        if let Some(counters) = self.traffic.get_mut(slot) {
            counters.bytes_received += data.len() as u64;
        }
        self.endpoint.handle_input(now, id, data);
    }

    /// A fresh request id.
    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Moves the engine's transmits to the connections' queues and its events to the application.
    pub fn drive(&mut self, now: Instant) -> Wakeups {
        let mut wakeups = Wakeups::default();
        while let Some(transmit) = self.endpoint.poll_transmit(now) {
            self.queue_transmit(transmit, &mut wakeups);
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.on_event(event, &mut wakeups);
        }
        self.fill_inbox(&mut wakeups);
        // Reading may have opened windows: their acknowledgements go out now.
        while let Some(transmit) = self.endpoint.poll_transmit(now) {
            self.queue_transmit(transmit, &mut wakeups);
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.on_event(event, &mut wakeups);
        }
        let timeout = self.endpoint.poll_timeout();
        if timeout != self.armed_timer
            && timeout.is_some_and(|at| self.armed_timer.is_none_or(|armed| at < armed))
        {
            wakeups.timer = true;
        }
        wakeups
    }

    /// Puts `transmit` in its connection's queue; past [`LINK_BACKLOG`], tells the engine to
    /// hold the connection's transmits until the writer catches up.
    fn queue_transmit(&mut self, transmit: crate::engine::Transmit, wakeups: &mut Wakeups) {
        let Some(link) = self.links.get_mut(&transmit.connection) else {
            return;
        };
        if link.queue.is_empty() {
            wakeups.writers.push(link.notify.clone());
        }
        link.queued_bytes += transmit.data.len();
        link.queue.push(transmit.data);
        if link.queued_bytes > LINK_BACKLOG && !link.blocked {
            link.blocked = true;
            self.endpoint
                .set_transport_blocked(transmit.connection, true);
        }
    }

    /// Does what `event` asks of the node (a message to take, a connection to close, requests to
    /// fail), then hands the application its view of it.
    fn on_event(&mut self, event: Event, wakeups: &mut Wakeups) {
        if let Event::Readable { peer, stream_id } = event {
            let stream_id = stream_id.get();
            // Queued once; the application sees the messages, not the event.
            if !self
                .readable
                .iter()
                .any(|(p, s)| *s == stream_id && *p == peer)
            {
                self.readable.push_back((peer, stream_id));
            }
            return;
        }
        match &event {
            Event::Writable { .. } => wakeups.writable = true,
            Event::ConnectionLost { connection, .. }
            | Event::HandshakeFailed { connection, .. } => {
                self.close_link(*connection, wakeups);
            }
            Event::Authenticated {
                connection, peer, ..
            } => {
                // A relay some peers advertise: they are reached through it from now on.
                let advertising = self
                    .links
                    .get(connection)
                    .and_then(|link| self.advertised_relays.get(&link.remote));
                for target in advertising.into_iter().flatten() {
                    self.endpoint
                        .set_preferred_relay(target, Some(peer.clone()));
                }
            }
            Event::Unroutable { peer, .. } => {
                // Its requests will get no reply.
                let failed: Vec<u64> = self
                    .requests
                    .iter()
                    .filter(|(_, (to, _))| to == peer)
                    .map(|(&id, _)| id)
                    .collect();
                for id in failed {
                    if let Some((_, waiter)) = self.requests.remove(&id) {
                        let _ = waiter.send(Err(NodeError::Send(SendError::NoRoute {
                            peer: peer.clone(),
                        })));
                    }
                }
                // Senders waiting on its window fail fast now.
                wakeups.writable = true;
            }
            _ => {}
        }
        wakeups.events.extend(NodeEvent::from_engine(event));
    }

    /// Takes messages from the engine into the inbox (replies to their requests) while the inbox
    /// has room.
    fn fill_inbox(&mut self, wakeups: &mut Wakeups) {
        while self.inbox_bytes < self.inbox_limit {
            let Some((peer, stream_id)) = self.readable.front().cloned() else {
                return;
            };
            let Some(received) = self.endpoint.read(&peer, stream_id) else {
                self.readable.pop_front();
                continue;
            };
            let options = received.meta.options.clone().unwrap_or_default();
            let message = Message::new(peer.clone(), stream_id, received);
            if let Some(reply_to) = reply_to(&options) {
                match self.requests.get(&reply_to) {
                    Some((from, _)) if *from == peer => {
                        if let Some((_, waiter)) = self.requests.remove(&reply_to) {
                            let _ = waiter.send(Ok(message));
                        }
                    }
                    // A reply nobody waits for (timed out, or forged): dropped.
                    _ => tracing::debug!(peer = %peer, reply_to, "reply to no pending request"),
                }
                continue;
            }
            self.inbox_bytes += message.data.len();
            self.inbox.push_back(message);
            wakeups.inbox = true;
        }
    }

    fn close_link(&mut self, connection: ConnectionId, wakeups: &mut Wakeups) {
        if let Some(link) = self.links.get_mut(&connection) {
            link.closing = true;
            wakeups.writers.push(link.notify.clone());
        }
    }
}

/// The request a message replies to, if it is a reply.
fn reply_to(options: &PacketOptions) -> Option<u64> {
    u64::try_from(options.reply_to).ok().filter(|&id| id != 0)
}
