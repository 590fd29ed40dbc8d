//! [`Network`]: the nodes, the links between them, the simulated clock and the queue of pending
//! deliveries that moves bytes from one node's `poll_transmit` to another's `handle_input`.
//!
//! Times are kept as offsets from the base instant taken at creation. Pending deliveries sit in
//! a `BTreeMap` keyed by (time, sequence number), so events at the same instant are processed in
//! the order they were scheduled, and nodes are always visited in index order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::link::{DirectionState, LinkKind, LinkProfile, chunk};
use super::stats::{LinkStats, TransferStats};
use super::{Direction, Driver, Link, NodeIndex};
use crate::engine::transmit::{ConnectionId, Transmit};

/// Simulated time does not go past this offset from the start (about 31 years), so that adding
/// it to the base instant cannot overflow whatever delays or timeouts the nodes and profiles ask.
const HORIZON: Duration = Duration::from_secs(1_000_000_000);

/// Index of the a-to-b direction in `LinkState::directions`; b-to-a is 1.
const A_TO_B: usize = 0;

/// The first connection id [`Network::connect`] numbers a node's links with: ids an engine hands
/// out count from 1, so the two never meet at a node that has both.
pub const NETWORK_NUMBERED: u64 = 1 << 32;

/// The default of [`Network::set_instant_step_limit`].
const DEFAULT_INSTANT_STEP_LIMIT: u64 = 100_000;

/// A simulated network of nodes of type `D` (see the [module documentation](super)).
pub struct Network<D> {
    seed: u64,
    base: Instant,
    elapsed: Duration,
    rng: ChaCha8Rng,
    nodes: Vec<NodeSlot<D>>,
    links: Vec<LinkState>,
    /// Pending deliveries by (time, sequence number).
    events: BTreeMap<(Duration, u64), Event>,
    next_seq: u64,
    /// Transmits on connection ids their node does not have.
    unroutable: TransferStats,
    /// Steps taken since simulated time last advanced.
    steps_at_instant: u64,
    instant_step_limit: u64,
    digest: u64,
}

struct NodeSlot<D> {
    driver: D,
    next_connection: u64,
    /// The node's connections: the link and the direction the node sends in.
    connections: BTreeMap<ConnectionId, (usize, usize)>,
}

struct LinkState {
    /// Node and connection id at each end: `[a, b]`.
    ends: [(usize, ConnectionId); 2],
    up: bool,
    /// `[a to b, b to a]`.
    directions: [DirectionState; 2],
}

enum Event {
    /// A datagram reaches the receiving end of `direction`.
    Datagram {
        link: usize,
        direction: usize,
        data: Bytes,
    },
    /// Stream bytes of `direction` have arrived and can be read.
    StreamArrival { link: usize, direction: usize },
}

impl<D: Driver> Network<D> {
    /// An empty network whose randomness comes from `seed`. Its clock starts at the real
    /// `Instant::now()` and is only ever advanced by simulation from then on.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            base: Instant::now(),
            elapsed: Duration::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            links: Vec::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            unroutable: TransferStats::default(),
            steps_at_instant: 0,
            instant_step_limit: DEFAULT_INSTANT_STEP_LIMIT,
            digest: FNV_OFFSET,
        }
    }

    /// The seed the network was created with (print it when a test fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulated current time.
    pub fn now(&self) -> Instant {
        self.base.checked_add(self.elapsed).unwrap_or(self.base)
    }

    /// The instant the simulated clock started at.
    pub fn start(&self) -> Instant {
        self.base
    }

    /// Simulated time since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Adds a node; it is driven from the next [`Network::step`] on.
    pub fn add_node(&mut self, driver: D) -> NodeIndex {
        self.nodes.push(NodeSlot {
            driver,
            next_connection: NETWORK_NUMBERED,
            connections: BTreeMap::new(),
        });
        NodeIndex(self.nodes.len() - 1)
    }

    /// How many nodes were added.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node `node`.
    ///
    /// # Panics
    /// If `node` was not returned by this network's [`Network::add_node`].
    pub fn node(&self, node: NodeIndex) -> &D {
        &self.nodes[node.0].driver
    }

    /// The node `node`, to act on it from outside (send something, change its state). Call
    /// [`Network::poll_node`] afterwards, or let the next step do it, so its transmits are taken.
    ///
    /// # Panics
    /// If `node` was not returned by this network's [`Network::add_node`].
    pub fn node_mut(&mut self, node: NodeIndex) -> &mut D {
        &mut self.nodes[node.0].driver
    }

    /// Joins `a` and `b` with a link whose two directions both follow `profile`, and numbers it
    /// at each node: for nodes that do not number their connections themselves (toy nodes, an
    /// attacker's raw end). The network's numbers start at [`NETWORK_NUMBERED`], far above the
    /// ids an engine hands out. The link is up at once.
    ///
    /// # Panics
    /// If `a` or `b` was not returned by this network's [`Network::add_node`].
    pub fn connect(&mut self, a: NodeIndex, b: NodeIndex, profile: LinkProfile) -> Link {
        assert!(
            a.0 < self.nodes.len() && b.0 < self.nodes.len(),
            "connect: unknown node"
        );
        let a_connection = self.number_connection(a);
        let b_connection = self.number_connection(b);
        self.link(a, a_connection, b, b_connection, profile)
    }

    /// A fresh id for a connection of `node`, numbered by the network (see
    /// [`Network::connect`]): for the end of a [`Network::link`] that no engine numbers.
    ///
    /// # Panics
    /// If `node` was not returned by this network's [`Network::add_node`].
    pub fn number_connection(&mut self, node: NodeIndex) -> ConnectionId {
        let slot = &mut self.nodes[node.0];
        let id = ConnectionId(slot.next_connection);
        slot.next_connection += 1;
        id
    }

    /// Joins `a` and `b` with a link whose two directions both follow `profile`, known at `a` as
    /// `a_connection` and at `b` as `b_connection`: the ids the nodes gave it (an engine hands
    /// out its connection ids). The link is up at once.
    ///
    /// # Panics
    /// If `a` or `b` was not returned by this network's [`Network::add_node`], or a node already
    /// has a link under the id given.
    pub fn link(
        &mut self,
        a: NodeIndex,
        a_connection: ConnectionId,
        b: NodeIndex,
        b_connection: ConnectionId,
        profile: LinkProfile,
    ) -> Link {
        assert!(
            a.0 < self.nodes.len() && b.0 < self.nodes.len(),
            "link: unknown node"
        );
        let index = self.links.len();
        self.add_connection(a.0, a_connection, index, A_TO_B);
        self.add_connection(b.0, b_connection, index, 1 - A_TO_B);
        self.links.push(LinkState {
            ends: [(a.0, a_connection), (b.0, b_connection)],
            up: true,
            directions: [
                DirectionState::new(profile.clone(), self.elapsed),
                DirectionState::new(profile, self.elapsed),
            ],
        });
        Link {
            index,
            a,
            a_connection,
            b,
            b_connection,
        }
    }

    /// Breaks `link` in both directions: data in flight or queued on it is lost and whatever the
    /// nodes send on it is dropped until [`Network::restore`]. With `notify`, both nodes get
    /// `handle_connection_lost` now (a reset socket; `a` first); without, they only see silence
    /// (a dead UDP path).
    ///
    /// # Panics
    /// If `link` was not returned by this network's [`Network::connect`] or [`Network::link`].
    pub fn kill(&mut self, link: Link, notify: bool) {
        let index = link.index;
        let state = &mut self.links[index];
        state.up = false;
        for direction in &mut state.directions {
            direction.stats.dropped_down += direction.reset(self.elapsed);
        }
        let links = &mut self.links;
        self.events.retain(|_, event| match event {
            Event::Datagram {
                link, direction, ..
            } if *link == index => {
                links[index].directions[*direction].stats.dropped_down += 1;
                false
            }
            Event::StreamArrival { link, .. } => *link != index,
            Event::Datagram { .. } => true,
        });
        if notify {
            for (node, connection) in self.links[index].ends {
                self.mix_event(3, node, connection, &[]);
                let now = self.now();
                self.nodes[node]
                    .driver
                    .handle_connection_lost(now, connection);
                self.drain(node);
            }
        }
    }

    /// Makes a killed `link` deliver again, with the same connection ids; it carries what is
    /// sent from now on. Restoring a link that is up does nothing.
    ///
    /// # Panics
    /// If `link` was not returned by this network's [`Network::connect`] or [`Network::link`].
    pub fn restore(&mut self, link: Link) {
        self.links[link.index].up = true;
    }

    /// Whether `link` is up (not killed).
    ///
    /// # Panics
    /// If `link` was not returned by this network's [`Network::connect`] or [`Network::link`].
    pub fn is_up(&self, link: Link) -> bool {
        self.links[link.index].up
    }

    /// Changes the conditions of one or both directions of `link` for what is sent from now on;
    /// what is already in flight arrives as it was scheduled.
    ///
    /// # Panics
    /// If `link` was not returned by this network's [`Network::connect`] or [`Network::link`].
    pub fn set_profile(&mut self, link: Link, direction: Direction, profile: LinkProfile) {
        let directions = &mut self.links[link.index].directions;
        match direction {
            Direction::AToB => directions[0].profile = profile,
            Direction::BToA => directions[1].profile = profile,
            Direction::Both => {
                directions[0].profile = profile.clone();
                directions[1].profile = profile;
            }
        }
    }

    /// The counters of both directions of `link`.
    ///
    /// # Panics
    /// If `link` was not returned by this network's [`Network::connect`] or [`Network::link`].
    pub fn stats(&self, link: Link) -> LinkStats {
        let [a_to_b, b_to_a] = &self.links[link.index].directions;
        LinkStats {
            a_to_b: a_to_b.stats,
            b_to_a: b_to_a.stats,
        }
    }

    /// The counters of every link added together, plus the transmits on connection ids their
    /// node does not have (`dropped_unroutable`).
    pub fn total_stats(&self) -> TransferStats {
        let mut total = self.unroutable;
        for link in &self.links {
            for direction in &link.directions {
                total += direction.stats;
            }
        }
        total
    }

    /// A hash of everything that happened to the nodes so far: every delivery (time, node,
    /// connection, bytes), timeout and connection loss, in order. Two runs did the same thing
    /// if and only if (barring collisions) their digests are equal.
    pub fn trace_digest(&self) -> u64 {
        self.digest
    }

    /// How many steps may be taken at one simulated instant before the `run_*` methods give up
    /// (nodes answering each other forever over zero-delay links, or a node whose timeout stays
    /// in the past, would otherwise never let time advance). Default 100 000.
    pub fn set_instant_step_limit(&mut self, limit: u64) {
        self.instant_step_limit = limit;
    }

    /// Takes the transmits `node` wants to send now (after the test acted on it through
    /// [`Network::node_mut`]) and puts them on their links.
    ///
    /// # Panics
    /// If `node` was not returned by this network's [`Network::add_node`].
    pub fn poll_node(&mut self, node: NodeIndex) {
        assert!(node.0 < self.nodes.len(), "poll_node: unknown node");
        self.drain(node.0);
    }

    /// When the next event is due: the earliest pending delivery or node timeout (a timeout in
    /// the past counts as now). `None` if nothing is pending at all.
    pub fn next_event_time(&self) -> Option<Instant> {
        self.next_event()
            .map(|at| self.base.checked_add(at).unwrap_or(self.base))
    }

    /// Polls every node for transmits, advances the clock to the next event and processes what
    /// is due then: the deliveries scheduled before this step, in the order they were scheduled,
    /// then the timeouts of the nodes that are due, in node order. Every node is polled for
    /// transmits after each call made on it. Returns false, without advancing, when nothing is
    /// pending at all.
    pub fn step(&mut self) -> bool {
        self.poll_all();
        let Some(at) = self.next_event() else {
            return false;
        };
        if at > self.elapsed {
            self.elapsed = at;
            self.steps_at_instant = 0;
        } else {
            self.steps_at_instant += 1;
        }
        let scheduled_before = self.next_seq;
        while let Some(entry) = self.events.first_entry() {
            let (due, seq) = *entry.key();
            if due > self.elapsed || seq >= scheduled_before {
                break;
            }
            let event = entry.remove();
            self.process(event);
        }
        for node in 0..self.nodes.len() {
            let due = self.nodes[node].driver.poll_timeout();
            if due.is_some_and(|due| self.offset(due) <= self.elapsed) {
                self.mix_event(2, node, ConnectionId(0), &[]);
                let now = self.now();
                self.nodes[node].driver.handle_timeout(now);
                self.drain(node);
            }
        }
        true
    }

    /// Processes every event due up to `deadline`, then sets the clock to `deadline` (if it is
    /// later than now). Returns false if it stopped early because simulated time stopped
    /// advancing (see [`Network::set_instant_step_limit`]).
    pub fn run_until(&mut self, deadline: Instant) -> bool {
        let deadline = self.offset(deadline);
        self.poll_all();
        while self.next_event().is_some_and(|at| at <= deadline) {
            if self.stalled() {
                return false;
            }
            self.step();
        }
        self.elapsed = self.elapsed.max(deadline);
        true
    }

    /// [`Network::run_until`] `duration` from now.
    pub fn run_for(&mut self, duration: Duration) -> bool {
        let deadline = self.now().checked_add(duration).unwrap_or(self.now());
        self.run_until(deadline)
    }

    /// Steps while `condition` holds and the next event is due by `limit`. Returns true if the
    /// condition became false, false if it still holds at `limit` (the clock is then at `limit`),
    /// when nothing is pending any more, or when simulated time stopped advancing (see
    /// [`Network::set_instant_step_limit`]): a stall or livelock.
    pub fn run_while(
        &mut self,
        mut condition: impl FnMut(&mut Self) -> bool,
        limit: Instant,
    ) -> bool {
        let limit = self.offset(limit);
        self.poll_all();
        loop {
            if !condition(self) {
                return true;
            }
            if self.stalled() {
                return false;
            }
            if self.next_event().is_none_or(|at| at > limit) {
                self.elapsed = self.elapsed.max(limit);
                return !condition(self);
            }
            self.step();
        }
    }

    fn add_connection(&mut self, node: usize, id: ConnectionId, link: usize, direction: usize) {
        let connections = &mut self.nodes[node].connections;
        assert!(
            !connections.contains_key(&id),
            "node#{node} already has a link as {id}"
        );
        connections.insert(id, (link, direction));
    }

    /// `instant` as an offset from the start, clamped to `0..=HORIZON`.
    fn offset(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.base).min(HORIZON)
    }

    fn next_event(&self) -> Option<Duration> {
        let delivery = self.events.first_key_value().map(|(&(at, _), _)| at);
        let timeout = self
            .nodes
            .iter()
            .filter_map(|slot| slot.driver.poll_timeout())
            .map(|at| self.offset(at))
            .min();
        let next = match (delivery, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|at| at.max(self.elapsed))
    }

    fn stalled(&self) -> bool {
        self.steps_at_instant >= self.instant_step_limit
    }

    fn poll_all(&mut self) {
        for node in 0..self.nodes.len() {
            self.drain(node);
        }
    }

    /// Takes every transmit `node` wants to send now and puts each on its link.
    fn drain(&mut self, node: usize) {
        let now = self.now();
        let mut transmits = Vec::new();
        while let Some(transmit) = self.nodes[node].driver.poll_transmit(now) {
            transmits.push(transmit);
        }
        for transmit in transmits {
            self.send(node, transmit);
        }
    }

    fn send(&mut self, node: usize, transmit: Transmit) {
        let len = transmit.data.len() as u64;
        let Some(&(link, direction)) = self.nodes[node].connections.get(&transmit.connection)
        else {
            self.unroutable.sent += 1;
            self.unroutable.sent_bytes += len;
            self.unroutable.dropped_unroutable += 1;
            return;
        };
        let state = &mut self.links[link];
        let sender = &mut state.directions[direction];
        if !state.up {
            sender.stats.sent += 1;
            sender.stats.sent_bytes += len;
            sender.stats.dropped_down += 1;
            return;
        }
        let now = self.elapsed;
        match sender.profile.kind {
            LinkKind::Datagram => {
                let arrivals = sender.send_datagram(now, transmit.data.len(), &mut self.rng);
                for at in arrivals {
                    let data = transmit.data.clone();
                    let event = Event::Datagram {
                        link,
                        direction,
                        data,
                    };
                    self.schedule(at, event);
                }
            }
            LinkKind::Stream => {
                let at = sender.send_stream(now, transmit.data, &mut self.rng);
                self.schedule(at, Event::StreamArrival { link, direction });
            }
        }
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.events.insert((at.min(HORIZON), self.next_seq), event);
        self.next_seq += 1;
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Datagram {
                link,
                direction,
                data,
            } => self.deliver(link, direction, data),
            Event::StreamArrival { link, direction } => {
                let state = &mut self.links[link];
                let arrived = state.directions[direction].take_arrived(self.elapsed);
                if let Some(data) = arrived.filter(|_| state.up) {
                    for piece in chunk(data, &mut self.rng) {
                        self.deliver(link, direction, piece);
                    }
                }
            }
        }
    }

    /// Hands `data` to the receiving end of `direction` of `link`, then takes its transmits.
    fn deliver(&mut self, link: usize, direction: usize, data: Bytes) {
        let state = &mut self.links[link];
        if !state.up {
            state.directions[direction].stats.dropped_down += 1;
            return;
        }
        let stats = &mut state.directions[direction].stats;
        stats.delivered += 1;
        stats.delivered_bytes += data.len() as u64;
        let (node, connection) = state.ends[1 - direction];
        self.mix_event(1, node, connection, &data);
        let now = self.now();
        self.nodes[node].driver.handle_input(now, connection, data);
        self.drain(node);
    }

    /// Folds one event into the trace digest.
    fn mix_event(&mut self, kind: u8, node: usize, connection: ConnectionId, data: &[u8]) {
        let header = [
            u64::from(kind),
            u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX),
            node as u64,
            connection.0,
            data.len() as u64,
        ];
        for word in header {
            self.digest = fnv(self.digest, &word.to_le_bytes());
        }
        self.digest = fnv(self.digest, data);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: a fixed, portable hash (std's hashers are not guaranteed stable).
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
