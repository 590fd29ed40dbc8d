//! Two meshed relays learning each other's nodes (`docs/protocol.md` section 5.9), over many
//! seeds: relay b dials relay a, node x joins a and node y joins b, the three joins in every
//! order with seeded gaps and link delays. As soon as it is connected, x sends y a request (again
//! after a ROUTER_NOT_FOUND or a second without an answer), and y answers every request it gets.
//!
//! What must hold in every run: a reply y sends to a request it received is never lost because
//! relay b had not yet learned the way back to x (y gets no ROUTER_NOT_FOUND for x, and x gets
//! every reply y sent); x has an answer soon after the last join; and the route tables converge
//! (a offers y through b, b offers x through a, one hop each, and no provisional route is left).
//!
//! And once they have converged, idle relays send each other their tables only in the periodic
//! full rounds, rather than echoing each table they get.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, ConnectOptions, Credential, Event, MessageMeta, SendError};
use atbus_core::sim::{Link, LinkProfile, NodeIndex};
use atbus_proto::protocol::frame_message::Body;
use bytes::Bytes;

use crate::support::*;

/// Seeds tried; each picks a join order, the gaps between the joins and the links' delays.
const SEEDS: u64 = 200;

/// x must have its answer this long after the last join at the latest (a request that found no
/// route is retried after the second the sender waits, so this leaves room for one retry).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// A request without an answer for this long is given up and sent again (as `Node::request`
/// with the one-second timeout of the relay's preference test).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The simulation advances in steps this long; the nodes act between steps.
const STEP: Duration = Duration::from_millis(1);

/// The three joins of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Join {
    /// Relay b dials relay a, as a relay.
    Mesh,
    /// Node x connects to relay a.
    X,
    /// Node y connects to relay b.
    Y,
}

/// The six orders of the three joins.
const ORDERS: [[Join; 3]; 6] = [
    [Join::Mesh, Join::X, Join::Y],
    [Join::Mesh, Join::Y, Join::X],
    [Join::X, Join::Mesh, Join::Y],
    [Join::Y, Join::Mesh, Join::X],
    [Join::X, Join::Y, Join::Mesh],
    [Join::Y, Join::X, Join::Mesh],
];

/// What a seed decides.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    order: [Join; 3],
    /// Simulated time before each join.
    gaps: [Duration; 3],
    /// The profiles of the mesh link, x's link and y's link.
    mesh: LinkProfile,
    x: LinkProfile,
    y: LinkProfile,
}

impl Plan {
    fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut below = |bound: u64| splitmix(&mut state) % bound;
        let order = ORDERS[(seed % 6) as usize];
        // Up to 120 ms apart: more than the 50 ms between announcements.
        let gaps = [0, 1, 2].map(|_| Duration::from_millis(below(121)));
        let mut link = || {
            let delay = Duration::from_micros(100 + below(8_000));
            match below(3) {
                0 => stream(0).with_delay(delay),
                1 => datagram(0)
                    .with_delay(delay)
                    .with_jitter(delay / 2)
                    .with_reorder(0.05),
                _ => datagram(0).with_delay(delay),
            }
        };
        Self {
            seed,
            order,
            gaps,
            mesh: link(),
            x: link(),
            y: link(),
        }
    }
}

/// splitmix64, for the plans' choices.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The run of one plan: the world, its four nodes, and x's request in flight.
struct Run {
    world: World,
    a: NodeIndex,
    b: NodeIndex,
    x: NodeIndex,
    y: NodeIndex,
    /// When x sent the request it waits for, and how many ROUTER_NOT_FOUND it had then.
    waiting: Option<(Duration, usize)>,
    /// Requests y answered.
    answered: usize,
}

impl Run {
    fn new(plan: &Plan) -> Self {
        let mut world = World::new(plan.seed);
        let relay_auth = || AuthConfig {
            relay: true,
            ..accepting([token(9)])
        };
        let a = world.add("a", relay_auth());
        let b = world.add("b", relay_auth());
        let x = world.add("x", Default::default());
        let y = world.add("y", Default::default());
        Self {
            world,
            a,
            b,
            x,
            y,
            waiting: None,
            answered: 0,
        }
    }

    /// Makes `join`'s connection; returns its link.
    fn join(&mut self, join: Join, plan: &Plan) -> Link {
        let options = |relay: &str| ConnectOptions::new(relay, Credential::Token(token(9)));
        let (client, server, profile, options) = match join {
            Join::Mesh => (
                self.b,
                self.a,
                &plan.mesh,
                ConnectOptions {
                    relay: true,
                    ..options("a")
                },
            ),
            Join::X => (self.x, self.a, &plan.x, options("a")),
            Join::Y => (self.y, self.b, &plan.y, options("b")),
        };
        self.world.connect(client, server, profile.clone(), options)
    }

    /// Lets `duration` pass, the nodes acting after every step.
    fn run_for(&mut self, duration: Duration) {
        let end = self.world.net.elapsed() + duration;
        while self.world.net.elapsed() < end {
            self.world.run_for(STEP);
            self.act();
        }
    }

    /// y answers every request it has not answered; x sends a request when it has none in
    /// flight (it is connected, its last one found no route or went unanswered too long).
    fn act(&mut self) {
        let requests = self.world.node(self.y).messages_from("x").len();
        while self.answered < requests {
            let pong = Bytes::from(format!("pong {}", self.answered));
            // A send refused for no route is a lost reply too: the checks count them.
            let _ = self
                .world
                .node_mut(self.y)
                .endpoint
                .send("x", 1, pong, MessageMeta::default());
            self.answered += 1;
        }
        self.world.net.poll_node(self.y);

        let now = self.world.net.elapsed();
        let not_found = self.router_not_found(self.x, "y");
        let answered = !self.world.node(self.x).messages_from("y").is_empty();
        let connected = (self.world.node(self.x).events.iter())
            .any(|event| matches!(event, Event::Authenticated { .. }));
        let due = match self.waiting {
            _ if answered || !connected => false,
            None => true,
            Some((sent, seen)) => not_found > seen || now - sent >= REQUEST_TIMEOUT,
        };
        if due {
            let sent = self.world.node_mut(self.x).endpoint.send(
                "y",
                1,
                Bytes::from_static(b"ping"),
                MessageMeta::default(),
            );
            match sent {
                Ok(_) => self.waiting = Some((now, not_found)),
                // Refused for a second after a ROUTER_NOT_FOUND: tried again next step.
                Err(SendError::NoRoute { .. }) => {}
                Err(error) => panic!("seed {}: x's request: {error}", self.world.net.seed()),
            }
            self.world.net.poll_node(self.x);
        }
    }

    /// How many ROUTER_NOT_FOUND notices `node` got about `peer`.
    fn router_not_found(&self, node: NodeIndex, peer: &str) -> usize {
        self.world
            .node(node)
            .events
            .iter()
            .filter(|event| matches!(event, Event::Unroutable { peer: p, .. } if p == peer))
            .count()
    }

    /// Whether a offers y through b and b offers x through a, one hop each.
    fn converged(&self) -> bool {
        let route = |relay: NodeIndex, node: &str, via: &str| {
            self.world.node(relay).endpoint.relay_routes().contains(&(
                node.to_string(),
                via.to_string(),
                1,
            ))
        };
        let provisional = |relay: NodeIndex| self.world.node(relay).endpoint.provisional_routes();
        route(self.a, "y", "b")
            && route(self.b, "x", "a")
            && provisional(self.a) + provisional(self.b) == 0
    }

    /// Whether the run is done: x has its answer and the routes converged.
    fn done(&self) -> bool {
        !self.world.node(self.x).messages_from("y").is_empty() && self.converged()
    }
}

/// Runs `plan`; returns what went wrong, if anything.
fn check(plan: &Plan) -> Option<String> {
    let mut run = Run::new(plan);
    for (join, gap) in plan.order.iter().zip(plan.gaps) {
        run.run_for(gap);
        run.join(*join, plan);
    }
    let joined = run.world.net.elapsed();
    while !run.done() && run.world.net.elapsed() - joined < ANSWER_WITHIN {
        run.run_for(Duration::from_millis(10));
    }
    // Replies still on their way arrive.
    run.run_for(Duration::from_millis(200));

    let mut problems = Vec::new();
    let lost = run.router_not_found(run.y, "x");
    if lost > 0 {
        problems.push(format!(
            "y's reply to a request it received was lost: {lost} ROUTER_NOT_FOUND for x"
        ));
    }
    let replies = run.world.node(run.x).messages_from("y").len();
    if replies < run.answered {
        problems.push(format!("x got {replies} of y's {} replies", run.answered));
    }
    if replies == 0 {
        problems.push(format!(
            "x had no answer {ANSWER_WITHIN:?} after the last join"
        ));
    }
    if !run.converged() {
        let routes = |relay| run.world.node(relay).endpoint.relay_routes();
        let provisional = |relay| run.world.node(relay).endpoint.provisional_routes();
        problems.push(format!(
            "routes did not converge: a {:?} and {} provisional, b {:?} and {}",
            routes(run.a),
            provisional(run.a),
            routes(run.b),
            provisional(run.b)
        ));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "seed {} ({:?}, gaps {:?}): {}",
            plan.seed,
            plan.order,
            plan.gaps,
            problems.join("; ")
        )
    })
}

#[test]
fn across_two_meshed_relays_every_reply_comes_back_and_routes_converge_in_any_join_order() {
    let failures: Vec<String> = (0..SEEDS)
        .filter_map(|seed| check(&Plan::new(seed)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The route tables `relay` sent on `connection` (each once, however often it was resent).
fn tables_sent(
    world: &World,
    relay: NodeIndex,
    connection: atbus_core::engine::ConnectionId,
) -> usize {
    let mut offsets = std::collections::BTreeSet::new();
    for data in world.node(relay).sent_on(connection) {
        for frame in frames_of(&data) {
            if let Some(Body::Packet(packet)) = frame.body
                && packet.stream_id == -4
                && !packet.content.is_empty()
            {
                offsets.insert(packet.stream_offset);
            }
        }
    }
    offsets.len()
}

#[test]
fn idle_meshed_relays_send_their_tables_only_in_the_periodic_rounds() {
    let plan = Plan {
        seed: 1,
        order: ORDERS[0],
        gaps: [Duration::ZERO; 3],
        mesh: datagram(5),
        x: datagram(2),
        y: datagram(2),
    };
    let mut run = Run::new(&plan);
    let mesh = run.join(Join::Mesh, &plan);
    run.join(Join::X, &plan);
    run.join(Join::Y, &plan);
    run.run_for(Duration::from_secs(1));
    assert!(run.converged());
    // b dialed a: b is the link's first end.
    let sent = |run: &Run| {
        (
            tables_sent(&run.world, run.a, mesh.b_connection),
            tables_sent(&run.world, run.b, mesh.a_connection),
        )
    };
    let before = sent(&run);
    run.world.run_for(Duration::from_secs(60));
    let after = sent(&run);
    let minute = (after.0 - before.0, after.1 - before.1);
    // A full round every 10 to 30 s: 2 to 6 tables a minute each way. Echoing each table back
    // (as relays did before) sends one every 50 ms: 1200 a minute.
    assert!(
        (2..=6).contains(&minute.0) && (2..=6).contains(&minute.1),
        "tables in an idle minute, a to b and b to a: {minute:?}"
    );
    assert!(run.converged(), "the rounds change nothing");
}
