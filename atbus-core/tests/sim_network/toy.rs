//! The toy node of the simulated-network tests and helpers to build networks of them and feed
//! them datagrams.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use atbus_core::engine::transmit::{ConnectionId, Transmit};
use atbus_core::sim::{Driver, Link, LinkProfile, Network, NodeIndex};
use bytes::Bytes;

/// A node that sends what it is given, records what it gets and can echo it.
pub struct Toy {
    pub start: Instant,
    pub echo: bool,
    pub outbox: VecDeque<Transmit>,
    /// Transmits to send at given times, in time order.
    pub script: VecDeque<(Instant, Transmit)>,
    /// Timer deadlines, sorted.
    pub timers: Vec<Instant>,
    /// When `handle_timeout` fired for a timer, since the start.
    pub fired: Vec<Duration>,
    pub received: Vec<(Duration, ConnectionId, Bytes)>,
    pub lost: Vec<(Duration, ConnectionId)>,
}

impl Toy {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            echo: false,
            outbox: VecDeque::new(),
            script: VecDeque::new(),
            timers: Vec::new(),
            fired: Vec::new(),
            received: Vec::new(),
            lost: Vec::new(),
        }
    }

    pub fn set_timer(&mut self, at: Instant) {
        self.timers.push(at);
        self.timers.sort();
    }

    /// The sequence numbers of the datagrams received, in arrival order.
    pub fn seqs(&self) -> Vec<u32> {
        self.received.iter().map(|(_, _, data)| seq(data)).collect()
    }
}

impl Driver for Toy {
    fn handle_input(&mut self, now: Instant, connection: ConnectionId, data: Bytes) {
        if self.echo {
            self.outbox.push_back(Transmit {
                connection,
                data: data.clone(),
            });
        }
        self.received.push((now - self.start, connection, data));
    }

    fn handle_connection_lost(&mut self, now: Instant, connection: ConnectionId) {
        self.lost.push((now - self.start, connection));
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.script.front().is_some_and(|(at, _)| *at <= now) {
            let (_, transmit) = self.script.pop_front().unwrap();
            self.outbox.push_back(transmit);
        }
        if self.timers.first().is_some_and(|at| *at <= now) {
            self.timers.retain(|at| *at > now);
            self.fired.push(now - self.start);
        }
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let script = self.script.front().map(|(at, _)| *at);
        let timer = self.timers.first().copied();
        script.into_iter().chain(timer).min()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A datagram of `len` bytes (at least 4) starting with `seq`.
pub fn datagram(connection: ConnectionId, seq: u32, len: usize) -> Transmit {
    let mut data = vec![0u8; len.max(4)];
    data[..4].copy_from_slice(&seq.to_be_bytes());
    Transmit {
        connection,
        data: data.into(),
    }
}

pub fn seq(data: &[u8]) -> u32 {
    u32::from_be_bytes(data[..4].try_into().unwrap())
}

/// A network of two toys joined by one link with `profile`; `b` echoes.
pub fn pair(seed: u64, profile: LinkProfile) -> (Network<Toy>, Link) {
    let mut net = Network::new(seed);
    let a = net.add_node(Toy::new(net.start()));
    let b = net.add_node(Toy::new(net.start()));
    net.node_mut(b).echo = true;
    let link = net.connect(a, b, profile);
    (net, link)
}

/// Queues `count` numbered datagrams of `len` bytes at `node` on `connection` and polls it.
pub fn send_now(
    net: &mut Network<Toy>,
    node: NodeIndex,
    connection: ConnectionId,
    count: u32,
    len: usize,
) {
    for i in 0..count {
        net.node_mut(node)
            .outbox
            .push_back(datagram(connection, i, len));
    }
    net.poll_node(node);
}

/// Schedules `count` numbered datagrams at `node`, one every `every` from now.
pub fn send_paced(
    net: &mut Network<Toy>,
    node: NodeIndex,
    connection: ConnectionId,
    count: u32,
    every: Duration,
) {
    let now = net.now();
    for i in 0..count {
        let at = now + every * i;
        net.node_mut(node)
            .script
            .push_back((at, datagram(connection, i, 100)));
    }
}
