//! When a relay's table goes out: on demand, after a refusal, and in the periodic full round.
//! The relay sits between relay "up" (connection 1) and node "b" (connection 2), its first table
//! to "up" already sent; "up" itself is not simulated, so what the relay sends it is all there
//! is to look at.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::{FrameMessage, PingData};
use atbus_proto::routing::RouteTable;
use bytes::{Bytes, BytesMut};
use prost::Message;

use super::REANNOUNCE_EVERY;
use crate::engine::endpoint::Endpoint;
use crate::engine::endpoint::forwarder::tests::{
    STREAM, frame_through_up, frames_sent_on, relay_between_up_and_b,
};
use crate::engine::stream_id::StreamId;
use crate::engine::transmit::ConnectionId;
use crate::engine::wire::decode_packet;

const UP: ConnectionId = ConnectionId(1);

/// A table as (node, hops) pairs.
type Table = Vec<(String, u32)>;

/// Watches the route tables a relay sends "up": nobody acknowledges them there, so the relay
/// sends them again when they time out; only a table at a new offset of the stream is new.
#[derive(Default)]
struct Watch {
    seen: BTreeSet<u64>,
}

impl Watch {
    /// The new tables the relay sends "up" at `now`.
    fn new_tables(&mut self, relay: &mut Endpoint, now: Instant) -> Vec<Table> {
        let mut tables = Vec::new();
        for frame in frames_sent_on(relay, now, UP) {
            let Some(Body::Packet(packet)) = frame.body else {
                continue;
            };
            if packet.stream_id != StreamId::ROUTES.get() {
                continue;
            }
            for piece in decode_packet(&packet).expect("a packet").pieces {
                if !self.seen.insert(piece.start) {
                    continue; // sent again
                }
                let table = RouteTable::decode(piece.data).expect("a table");
                tables.push(
                    table
                        .routes
                        .into_iter()
                        .map(|route| (route.node, route.hops))
                        .collect(),
                );
            }
        }
        tables
    }
}

/// A ping, as "up" or "b" sends one.
fn ping(relay: &Endpoint) -> Bytes {
    let frame = FrameMessage {
        head: None,
        body: Some(Body::Ping(PingData {
            sequence: 1,
            timepoint_microseconds: 1,
        })),
    };
    let mut out = BytesMut::new();
    relay.codec.encode(&frame, &mut out).expect("encode");
    out.freeze()
}

/// A relay between "up" and "b", and a watch that has seen its first table.
fn relay_and_watch(now: Instant) -> (Endpoint, Watch) {
    let mut watch = Watch::default();
    // The table at offset 0 went out when "up" connected.
    watch.seen.insert(0);
    (relay_between_up_and_b(now), watch)
}

/// The table of a relay whose only node is "b".
fn b() -> Table {
    vec![("b".to_string(), 0)]
}

#[test]
fn a_relay_sends_nothing_more_while_nothing_changes() {
    let now = Instant::now();
    let (mut relay, mut watch) = relay_and_watch(now);
    assert!(
        relay.mesh().unwrap().owed.is_empty(),
        "the first table went out"
    );
    let later = now + REANNOUNCE_EVERY / 2;
    relay.handle_timeout(later);
    assert!(watch.new_tables(&mut relay, later).is_empty());
}

#[test]
fn a_frame_for_a_node_it_cannot_reach_from_a_relay_sends_that_relay_the_table_again() {
    let now = Instant::now();
    let (mut relay, mut watch) = relay_and_watch(now);
    // "up" thinks this relay reaches "gone" (its table of this relay is stale).
    let later = now + Duration::from_secs(1);
    relay.handle_input(later, UP, frame_through_up(&relay, "a", "gone", 1));
    assert_eq!(relay.stats().forward_dropped.get("no_route"), Some(&1));
    assert_eq!(
        watch.new_tables(&mut relay, later),
        [b()],
        "the table again, with the notice"
    );
}

#[test]
fn a_table_the_send_path_refused_goes_out_once_it_can_not_at_the_next_change() {
    let now = Instant::now();
    let (mut relay, mut watch) = relay_and_watch(now);
    // Sends to "up" are refused for a second (a relay reported no route to it before it came).
    relay.peers.get_mut("up").unwrap().unroutable_until = Some(now + Duration::from_secs(1));
    assert_eq!(relay.add_connection(now, "c", STREAM), Ok(ConnectionId(3)));
    let refused = now + Duration::from_millis(100);
    assert!(watch.new_tables(&mut relay, refused).is_empty(), "refused");
    assert!(relay.mesh().unwrap().owed.contains("up"), "still owed");
    let retried = now + Duration::from_millis(1_100);
    relay.handle_timeout(retried);
    let with_c = vec![("b".to_string(), 0), ("c".to_string(), 0)];
    assert_eq!(watch.new_tables(&mut relay, retried), [with_c]);
    assert!(relay.mesh().unwrap().owed.is_empty());
}

#[test]
fn every_relay_gets_the_whole_table_again_each_round_though_nothing_changed() {
    let now = Instant::now();
    let (mut relay, mut watch) = relay_and_watch(now);
    for round in 1..=3 {
        let at = relay
            .announce_at()
            .expect("a relay with a relay peer announces");
        assert_eq!(at, now + REANNOUNCE_EVERY * round, "round {round}");
        // "up" and "b" are alive (their pings keep their connections from the idle timeout).
        for connection in [UP, ConnectionId(2)] {
            relay.handle_input(at, connection, ping(&relay));
        }
        relay.handle_timeout(at);
        assert_eq!(watch.new_tables(&mut relay, at), [b()], "round {round}");
    }
}
