//! Scenarios for the simulation tests: two nodes running the real engine on the simulated
//! network, each sending generated messages on several streams and checking every message it
//! receives against what the other side generated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_core::engine::{
    AuthConfig, CloseReason, ConnectOptions, Credential, Endpoint, EngineConfig, EngineStats,
    Event, MessageMeta, SendError, Token,
};
use atbus_core::sim::{Application, EngineNode, LinkProfile, Network};
use bytes::Bytes;

/// splitmix64: a tiny deterministic generator for workloads and message bytes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The bytes of message `index` of `stream_id` sent by `sender` in run `seed`.
fn message_bytes(seed: u64, sender: &str, stream_id: i64, index: usize, len: usize) -> Bytes {
    let tag = sender
        .bytes()
        .fold(seed, |acc, b| acc.rotate_left(5) ^ u64::from(b));
    let mut rng = Rng::new(tag ^ (stream_id as u64) << 20 ^ index as u64);
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(len);
    data.into()
}

/// The messages one node sends on one stream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub stream_id: i64,
    pub sizes: Vec<usize>,
}

/// What one node sends.
#[derive(Debug, Clone)]
pub struct Workload {
    pub streams: Vec<Outgoing>,
}

impl Workload {
    /// Random streams of random messages: mostly small, some up to 1 MiB.
    pub fn random(rng: &mut Rng) -> Self {
        let streams = (0..1 + rng.below(3))
            .map(|stream| Outgoing {
                stream_id: stream as i64 * 2 + rng.below(2) as i64,
                sizes: (0..1 + rng.below(24))
                    .map(|_| match rng.below(20) {
                        0 => rng.below(1024 * 1024 + 1) as usize,
                        1..=6 => rng.below(40_000) as usize,
                        7 => 0,
                        _ => rng.below(600) as usize,
                    })
                    .collect(),
            })
            .collect();
        Self { streams }
    }

    pub fn bytes(&self) -> usize {
        self.streams.iter().flat_map(|s| s.sizes.iter()).sum()
    }
}

/// The network conditions of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    Perfect,
    StreamTransport,
    Lossy,
    Harsh,
    KillNotified,
    KillSilent,
}

impl Profile {
    const ALL: [Profile; 6] = [
        Profile::Perfect,
        Profile::StreamTransport,
        Profile::Lossy,
        Profile::Harsh,
        Profile::KillNotified,
        Profile::KillSilent,
    ];
}

/// Everything a seed decides.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub profile: Profile,
    pub a: Workload,
    pub b: Workload,
    /// When the first link dies, for the kill profiles.
    pub kill_after: Duration,
    /// Whether the connections open with the handshake (a connects with a token and early
    /// data, b accepts) instead of being bound by the runtime.
    pub handshake: bool,
}

impl Scenario {
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let profile = Profile::ALL[(seed % Profile::ALL.len() as u64) as usize];
        Self {
            seed,
            profile,
            a: Workload::random(&mut rng),
            b: Workload::random(&mut rng),
            kill_after: Duration::from_millis(5 + rng.below(300)),
            // Every other round of the profiles: each profile runs both ways.
            handshake: (seed / Profile::ALL.len() as u64) % 2 == 1,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "profile {:?}, handshake {}, a sends {} B on {} streams, b sends {} B on {} streams",
            self.profile,
            self.handshake,
            self.a.bytes(),
            self.a.streams.len(),
            self.b.bytes(),
            self.b.streams.len()
        )
    }
}

/// The engine limits of the simulations: small enough that flow control is exercised.
pub fn sim_config() -> EngineConfig {
    EngineConfig {
        auth: AuthConfig {
            tokens: vec![sim_token()],
            ..AuthConfig::default()
        },
        max_message_size: 1024 * 1024,
        stream_send_window: 1024 * 1024,
        peer_send_window: 2 * 1024 * 1024,
        stream_receive_window: 1024 * 1024 + 64 * 1024,
        peer_receive_budget: 3 * 1024 * 1024,
        initial_window: 256 * 1024,
        keep_alive_interval: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(3),
        ..EngineConfig::default()
    }
}

/// The token the simulated nodes share.
pub fn sim_token() -> Token {
    Token::new([0x5e; 32]).expect("32 bytes")
}

/// The Unix time the simulated nodes' clocks show at the start: 2026-01-01.
const UNIX_START: Duration = Duration::from_secs(1_767_225_600);

/// The most memory an endpoint of [`sim_config`] may hold: its send window (or one message over
/// it), plus its receive budget.
pub fn memory_bound(config: &EngineConfig) -> usize {
    config.peer_send_window as usize + config.max_message_size + config.peer_receive_budget
}

/// Progress of one stream this node receives.
#[derive(Debug, Default)]
struct Incoming {
    next: usize,
    finished: bool,
}

/// The application of a node: sends its workload and checks what arrives.
pub struct App {
    name: String,
    peer: String,
    seed: u64,
    workload: Workload,
    /// Next message index per outgoing stream, and whether its finish is queued.
    sent: Vec<(usize, bool)>,
    closed: usize,
    /// What the peer sends, to check against.
    expected: BTreeMap<i64, Vec<usize>>,
    incoming: BTreeMap<i64, Incoming>,
    pub problems: Vec<String>,
    pub max_memory: usize,
}

impl App {
    /// The node `name` running it on the engine.
    pub fn node(
        name: &str,
        peer: &str,
        seed: u64,
        (workload, expected): (Workload, &Workload),
        now: Instant,
    ) -> EngineNode<Self> {
        let mut config = sim_config();
        // Nonces and keys from the seed, and a fixed clock: runs are reproducible.
        let mut rng_seed = [0; 32];
        rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
        rng_seed[8..8 + name.len().min(24)].copy_from_slice(&name.as_bytes()[..name.len().min(24)]);
        config.auth.rng_seed = Some(rng_seed);
        let mut endpoint = Endpoint::new(name, config, now);
        endpoint.set_unix_time(now, UNIX_START);
        let app = Self {
            name: name.into(),
            peer: peer.into(),
            seed,
            sent: vec![(0, false); workload.streams.len()],
            workload,
            closed: 0,
            expected: expected
                .streams
                .iter()
                .map(|s| (s.stream_id, s.sizes.clone()))
                .collect(),
            incoming: BTreeMap::new(),
            problems: Vec::new(),
            max_memory: 0,
        };
        EngineNode::new(endpoint, app)
    }

    /// Every stream it sent is closed and every stream it receives finished, all checked.
    pub fn done(&self) -> bool {
        self.closed == self.workload.streams.len()
            && self.expected.iter().all(|(stream_id, sizes)| {
                self.incoming
                    .get(stream_id)
                    .is_some_and(|s| s.finished && s.next == sizes.len())
            })
    }

    /// Queues what the windows allow, and takes what arrived.
    fn pump_app(&mut self, endpoint: &mut Endpoint) {
        for (index, outgoing) in self.workload.streams.iter().enumerate() {
            let (next, finish_queued) = &mut self.sent[index];
            while *next < outgoing.sizes.len() {
                let data = message_bytes(
                    self.seed,
                    &self.name,
                    outgoing.stream_id,
                    *next,
                    outgoing.sizes[*next],
                );
                match endpoint.send(&self.peer, outgoing.stream_id, data, MessageMeta::default()) {
                    Ok(_) => *next += 1,
                    Err(SendError::WouldBlock { .. }) => break,
                    Err(error) => {
                        self.problems.push(format!("send failed: {error}"));
                        break;
                    }
                }
            }
            if *next == outgoing.sizes.len() && !*finish_queued {
                let reason = CloseReason::shutdown("");
                if let Err(error) = endpoint.finish(&self.peer, outgoing.stream_id, reason) {
                    self.problems.push(format!("finish failed: {error}"));
                }
                *finish_queued = true;
            }
        }
        while let Some(event) = endpoint.poll_event() {
            match event {
                Event::Readable { stream_id, .. } => self.read(endpoint, stream_id.get()),
                Event::StreamFinished { stream_id, .. } => {
                    let stream_id = stream_id.get();
                    let incoming = self.incoming.entry(stream_id).or_default();
                    if incoming.finished {
                        self.problems
                            .push(format!("stream {stream_id} finished twice"));
                    }
                    incoming.finished = true;
                    let expected = self.expected.get(&stream_id).map_or(0, Vec::len);
                    if incoming.next != expected {
                        self.problems.push(format!(
                            "stream {stream_id} finished after {} of {expected} messages",
                            incoming.next
                        ));
                    }
                }
                Event::StreamClosed { .. } => self.closed += 1,
                _ => {}
            }
        }
        self.max_memory = self.max_memory.max(endpoint.memory());
    }

    fn read(&mut self, endpoint: &mut Endpoint, stream_id: i64) {
        while let Some(message) = endpoint.read(&self.peer, stream_id) {
            let incoming = self.incoming.entry(stream_id).or_default();
            let Some(size) = self
                .expected
                .get(&stream_id)
                .and_then(|sizes| sizes.get(incoming.next))
            else {
                self.problems.push(format!(
                    "unexpected message {} on stream {stream_id}",
                    incoming.next
                ));
                return;
            };
            let expected = message_bytes(self.seed, &self.peer, stream_id, incoming.next, *size);
            if message.data != expected {
                self.problems.push(format!(
                    "message {} of stream {stream_id} differs: {} bytes, expected {}",
                    incoming.next,
                    message.data.len(),
                    expected.len()
                ));
            }
            incoming.next += 1;
        }
    }
}

impl Application for App {
    fn pump(&mut self, endpoint: &mut Endpoint) {
        self.pump_app(endpoint);
    }
}

/// How a scenario ended.
pub enum Outcome {
    Done {
        elapsed: Duration,
        wire_bytes: u64,
        /// The engine counters of a and b.
        stats: Box<[EngineStats; 2]>,
        /// Bytes put on each link, both directions, in the order of the links given.
        link_bytes: Vec<u64>,
    },
    Failed(String),
}

/// The links of a profile, the first one killed after `kill_after` in the kill profiles.
fn links_of(profile: Profile) -> Vec<LinkProfile> {
    let datagram = LinkProfile::perfect_datagram()
        .with_delay(Duration::from_millis(10))
        .with_bandwidth(20_000_000)
        .with_mtu(1232);
    let stream = LinkProfile::perfect_stream()
        .with_delay(Duration::from_millis(3))
        .with_jitter(Duration::from_millis(2))
        .with_bandwidth(50_000_000);
    match profile {
        Profile::Perfect => vec![datagram],
        Profile::StreamTransport => vec![stream],
        Profile::Lossy => vec![
            datagram
                .with_loss(0.05)
                .with_duplicate(0.02)
                .with_reorder(0.05)
                .with_jitter(Duration::from_millis(3)),
        ],
        Profile::Harsh => vec![
            datagram
                .with_loss(0.2)
                .with_duplicate(0.05)
                .with_reorder(0.1)
                .with_jitter(Duration::from_millis(5)),
        ],
        Profile::KillNotified => vec![stream, datagram.with_loss(0.01)],
        Profile::KillSilent => vec![
            datagram.clone().with_delay(Duration::from_millis(2)),
            datagram
                .with_delay(Duration::from_millis(20))
                .with_loss(0.02),
        ],
    }
}

/// A link that dies during a run.
pub struct Kill {
    /// Which of the links.
    pub link: usize,
    /// How long after the start.
    pub after: Duration,
    /// Whether the nodes are told (a reset socket) or only see silence (a dead path).
    pub notify: bool,
}

/// Runs one scenario to the end, or to its time limit.
pub fn run_scenario(scenario: &Scenario) -> Outcome {
    let kill = matches!(
        scenario.profile,
        Profile::KillNotified | Profile::KillSilent
    )
    .then(|| Kill {
        link: 0,
        after: scenario.kill_after,
        notify: scenario.profile == Profile::KillNotified,
    });
    run(
        scenario.seed,
        (&scenario.a, &scenario.b),
        &links_of(scenario.profile),
        kill,
        scenario.handshake,
    )
}

/// Runs nodes "a" and "b" sending their workloads over `links` until both are done, or 600 s of
/// simulated time have passed, and checks everything they received.
pub fn run(
    seed: u64,
    (a_sends, b_sends): (&Workload, &Workload),
    links: &[LinkProfile],
    kill: Option<Kill>,
    handshake: bool,
) -> Outcome {
    let mut net = Network::new(seed);
    let now = net.now();
    let a = net.add_node(App::node("a", "b", seed, (a_sends.clone(), b_sends), now));
    let b = net.add_node(App::node("b", "a", seed, (b_sends.clone(), a_sends), now));
    let mut made = Vec::new();
    for profile in links {
        let added = if handshake {
            let options = ConnectOptions::new("b", Credential::Token(sim_token()));
            net.handshake(a, b, profile.clone(), options)
        } else {
            net.bind(a, b, profile.clone())
        };
        made.push(added.unwrap_or_else(|error| panic!("{error}")));
    }
    for node in [a, b] {
        net.node_mut(node).pump();
        net.poll_node(node);
    }
    let limit = net.now() + Duration::from_secs(600);
    let both_done =
        |net: &mut Network<EngineNode<App>>| !(net.node(a).done() && net.node(b).done());
    if let Some(kill) = kill {
        let kill_at = net.now() + kill.after;
        net.run_while(both_done, kill_at);
        net.kill(made[kill.link], kill.notify);
    }
    let finished = net.run_while(both_done, limit);
    let bound = memory_bound(&sim_config());
    let mut problems: Vec<String> = Vec::new();
    for (node, name) in [(a, "a"), (b, "b")] {
        let app = net.node(node);
        problems.extend(app.problems.iter().map(|p| format!("{name}: {p}")));
        if app.max_memory > bound {
            problems.push(format!(
                "{name}: memory reached {} bytes, over the bound of {bound}",
                app.max_memory
            ));
        }
        if !app.done() {
            problems.push(format!(
                "{name}: not done after {:?} (closed {} of {} streams, received {:?}, stats {:?})",
                net.elapsed(),
                app.closed,
                app.workload.streams.len(),
                app.incoming
                    .iter()
                    .map(|(id, s)| (*id, s.next, s.finished))
                    .collect::<Vec<_>>(),
                app.endpoint.stats()
            ));
        }
    }
    if !finished && problems.is_empty() {
        problems.push(format!("stalled at {:?}", net.elapsed()));
    }
    if problems.is_empty() {
        Outcome::Done {
            elapsed: net.elapsed(),
            wire_bytes: net.total_stats().sent_bytes,
            stats: Box::new([
                net.node(a).endpoint.stats().clone(),
                net.node(b).endpoint.stats().clone(),
            ]),
            link_bytes: made
                .iter()
                .map(|&link| net.stats(link).total().sent_bytes)
                .collect(),
        }
    } else {
        Outcome::Failed(problems.join("; "))
    }
}
