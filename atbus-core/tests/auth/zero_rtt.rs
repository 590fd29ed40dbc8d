//! 0-RTT: data in the first flight delivered once the proof, the timestamp and the nonce check;
//! the same flight replayed is refused and its data never delivered; a full replay cache falls
//! back to 1-RTT without losing the early data.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, AuthFailure, ConnectOptions, Credential, MessageMeta};
use atbus_core::sim::LinkProfile;
use bytes::Bytes;

use crate::support::*;

/// A client that queues `message` for the server, then connects with early data.
fn early_client(
    world: &mut World,
    name: &str,
    message: &'static str,
) -> atbus_core::sim::NodeIndex {
    let client = world.add(name, AuthConfig::default());
    world
        .node_mut(client)
        .endpoint
        .send("server", 3, Bytes::from(message), MessageMeta::default())
        .expect("queued before connecting");
    client
}

#[test]
fn data_in_the_first_flight_is_delivered_once_and_the_replayed_flight_is_refused() {
    for profile in [datagram(10), stream(10)] {
        let mut world = World::new(4);
        let shared = token(9);
        let server = world.add("server", accepting([shared.clone()]));
        let client = early_client(&mut world, "client", "early bird");
        let link = world.connect(
            client,
            server,
            profile.clone(),
            ConnectOptions::new("server", Credential::Token(shared)),
        );
        // The first flight holds the hello and the data.
        let first_flight = world.node(client).sent_on(link.a_connection)[0].clone();
        // Half a round trip: the data is delivered before the client hears the accept.
        world.run_for(Duration::from_millis(10));
        assert_eq!(
            world.node(server).messages_from("client"),
            vec![Bytes::from("early bird")],
            "{profile:?}"
        );
        assert_eq!(
            world.node(server).authenticated(link.b_connection),
            Some(("client".to_string(), true, false))
        );
        world.run_for(Duration::from_millis(100));
        assert_eq!(
            world.node(client).authenticated(link.a_connection),
            Some(("server".to_string(), true, false))
        );

        // An attacker who recorded the first flight plays it again on a new connection.
        let attacker = world.add("attacker", AuthConfig::default());
        let replay = world.raw_link(attacker, server, profile.clone());
        world.inject(attacker, replay.a_connection, first_flight);
        world.run_for(Duration::from_millis(100));
        let server_node = world.node(server);
        assert_eq!(
            server_node
                .handshake_failure(replay.b_connection)
                .map(|f| f.0),
            Some(AuthFailure::Replay)
        );
        assert_eq!(
            server_node.messages_from("client"),
            vec![Bytes::from("early bird")],
            "the replayed data was delivered again"
        );
        assert_eq!(
            server_node
                .endpoint
                .stats()
                .auth_failures(AuthFailure::Replay),
            1
        );
        assert_eq!(server_node.endpoint.connection_count(), 1);
        // The answer to the replay is no larger than the replay.
        assert!(
            server_node
                .bytes_out
                .get(&replay.b_connection)
                .copied()
                .unwrap_or(0)
                <= server_node.bytes_in[&replay.b_connection]
        );
    }
}

#[test]
fn a_full_replay_cache_falls_back_to_one_rtt_and_the_early_data_still_arrives_once() {
    let mut world = World::new(5);
    let shared = token(4);
    let server = world.add(
        "server",
        AuthConfig {
            replay_cache_size: 1,
            ..accepting([shared.clone()])
        },
    );
    let first = early_client(&mut world, "first", "one");
    let second = early_client(&mut world, "second", "two");
    let first_link = world.connect(
        first,
        server,
        datagram(10),
        ConnectOptions::new("server", Credential::Token(shared.clone())),
    );
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.node(server).endpoint.replay_cache_len(), 1);

    // The cache is full: the second hello is accepted, its early data is not.
    let second_link = world.connect(
        second,
        server,
        datagram(10),
        ConnectOptions::new("server", Credential::Token(shared)),
    );
    world.run_for(Duration::from_millis(10));
    assert!(world.node(server).messages_from("second").is_empty());
    world.run_for(Duration::from_millis(500));
    let server_node = world.node(server);
    assert_eq!(
        server_node.authenticated(first_link.b_connection),
        Some(("first".to_string(), true, false))
    );
    assert_eq!(
        server_node.authenticated(second_link.b_connection),
        Some(("second".to_string(), false, false)),
        "authenticated only after the confirm"
    );
    assert!(server_node.endpoint.stats().early_data_dropped >= 1);
    assert_eq!(
        server_node.messages_from("second"),
        vec![Bytes::from("two")]
    );
    assert_eq!(
        world.node(second).authenticated(second_link.a_connection),
        Some(("server".to_string(), false, false))
    );
}

#[test]
fn the_confirm_fallback_cannot_be_replayed_either() {
    // With the cache full nonces are not remembered, so the confirm (over the server's fresh
    // nonce) is what keeps a recording from being played again.
    let mut world = World::new(6);
    let shared = token(4);
    let server = world.add(
        "server",
        AuthConfig {
            replay_cache_size: 0,
            ..accepting([shared.clone()])
        },
    );
    let client = early_client(&mut world, "client", "once");
    let link = world.connect(
        client,
        server,
        stream(5),
        ConnectOptions::new("server", Credential::Token(shared)),
    );
    world.run_for(Duration::from_millis(100));
    assert!(
        world
            .node(server)
            .authenticated(link.b_connection)
            .is_some()
    );
    let recorded: Vec<Bytes> = world.node(client).sent_on(link.a_connection);
    let attacker = world.add("attacker", AuthConfig::default());
    let replay = world.raw_link(attacker, server, LinkProfile::perfect_stream());
    for bytes in recorded {
        world.inject(attacker, replay.a_connection, bytes);
    }
    world.run_for(Duration::from_millis(100));
    let server_node = world.node(server);
    assert_eq!(
        server_node
            .handshake_failure(replay.b_connection)
            .map(|f| f.0),
        Some(AuthFailure::BadProof),
        "the recorded confirm does not match the new nonce"
    );
    assert_eq!(
        server_node.messages_from("client"),
        vec![Bytes::from("once")]
    );
}

#[test]
fn a_hello_outside_the_timestamp_window_is_refused() {
    let mut world = World::new(7);
    let shared = token(5);
    let server = world.add("server", accepting([shared.clone()]));
    let late = early_client(&mut world, "late", "too late");
    let now = world.net.now();
    world
        .node_mut(late)
        .endpoint
        .set_unix_time(now, UNIX_START - Duration::from_secs(301));
    let link = world.connect(
        late,
        server,
        datagram(1),
        ConnectOptions::new("server", Credential::Token(shared.clone())),
    );
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        world
            .node(server)
            .handshake_failure(link.b_connection)
            .map(|f| f.0),
        Some(AuthFailure::ExpiredTimestamp)
    );
    assert!(world.node(server).messages_from("late").is_empty());

    // 299 s off is inside the default window of 300 s.
    let skewed = early_client(&mut world, "skewed", "in time");
    world
        .node_mut(skewed)
        .endpoint
        .set_unix_time(now, UNIX_START + Duration::from_secs(299));
    let link = world.connect(
        skewed,
        server,
        datagram(1),
        ConnectOptions::new("server", Credential::Token(shared)),
    );
    world.run_for(Duration::from_millis(50));
    assert!(
        world
            .node(server)
            .authenticated(link.b_connection)
            .is_some()
    );
    assert_eq!(
        world.node(server).messages_from("skewed"),
        vec![Bytes::from("in time")]
    );
}

#[test]
fn over_a_lossy_link_the_confirm_fallback_recovers_lost_confirms_and_accepts() {
    for seed in 0..40 {
        let mut world = World::new(300 + seed);
        let shared = token(4);
        let server = world.add(
            "server",
            AuthConfig {
                replay_cache_size: 0,
                ..accepting([shared.clone()])
            },
        );
        let client = early_client(&mut world, "client", "through the fallback");
        let profile = datagram(10).with_loss(0.3).with_reorder(0.1);
        let link = world.connect(
            client,
            server,
            profile,
            ConnectOptions::new("server", Credential::Token(shared)),
        );
        world.run_for(Duration::from_secs(9));
        let server_node = world.node(server);
        assert!(
            server_node.authenticated(link.b_connection).is_some(),
            "seed {seed}: the confirm never arrived: server {:?} {:?} client {:?} {:?}",
            server_node.events,
            server_node.endpoint.stats(),
            world.node(client).events,
            world.node(client).endpoint.stats()
        );
        assert_eq!(
            server_node.messages_from("client"),
            vec![Bytes::from("through the fallback")],
            "seed {seed}"
        );
    }
}
