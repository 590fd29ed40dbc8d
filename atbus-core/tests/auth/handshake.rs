//! 1-RTT: both sides authenticated after one round trip, several tokens accepted at once, and
//! the token never on the wire nor in the logs.

use std::time::Duration;

use atbus_core::engine::{AuthFailure, ConnectOptions, Credential, IdentityKind, MessageMeta};
use atbus_proto::protocol::AtbusCloseReason;
use bytes::Bytes;

use crate::support::*;

#[test]
fn one_round_trip_authenticates_both_sides_and_messages_flow() {
    let mut world = World::new(1);
    let shared = token(7);
    let server = world.add("server", accepting([shared.clone()]));
    let client = world.add("client", Default::default());
    let options = ConnectOptions {
        early_data: false,
        ..ConnectOptions::new("server", Credential::Token(shared.clone()))
    };
    let start = world.net.now();
    let link = world.connect(client, server, datagram(10), options);

    // One round trip is 20 ms: both ends are authenticated by then.
    world.run_for(Duration::from_millis(20));
    assert_eq!(
        world.node(client).authenticated(link.a_connection),
        Some(("server".to_string(), false, false))
    );
    assert_eq!(
        world.node(server).authenticated(link.b_connection),
        Some(("client".to_string(), false, false))
    );
    assert!(world.net.now() - start <= Duration::from_millis(20));
    let identity = world
        .node(server)
        .endpoint
        .peer_identity(link.b_connection)
        .expect("the server knows who connected")
        .clone();
    assert_eq!(identity.name, "client");
    assert_eq!(identity.kind, IdentityKind::Token);
    assert!(!identity.relay);

    for (from, to, text) in [(client, "server", "ping"), (server, "client", "pong")] {
        world
            .node_mut(from)
            .endpoint
            .send(to, 1, Bytes::from(text), MessageMeta::default())
            .expect("send");
        world.net.poll_node(from);
    }
    world.run_for(Duration::from_millis(100));
    assert_eq!(
        world.node(server).messages_from("client"),
        vec![Bytes::from("ping")]
    );
    assert_eq!(
        world.node(client).messages_from("server"),
        vec![Bytes::from("pong")]
    );
}

#[test]
fn two_tokens_are_accepted_at_once_for_rotation_and_a_third_is_refused() {
    let mut world = World::new(2);
    let (old, new, other) = (token(1), token(2), token(3));
    let server = world.add("server", accepting([old.clone(), new.clone()]));
    let mut links = Vec::new();
    for (name, credential) in [("on-old", old), ("on-new", new), ("on-other", other)] {
        let client = world.add(name, Default::default());
        let link = world.connect(
            client,
            server,
            stream(5),
            ConnectOptions::new("server", Credential::Token(credential)),
        );
        links.push(link);
    }
    world.run_for(Duration::from_millis(50));
    let server_node = world.node(server);
    assert!(server_node.authenticated(links[0].b_connection).is_some());
    assert!(server_node.authenticated(links[1].b_connection).is_some());
    assert_eq!(
        server_node.handshake_failure(links[2].b_connection),
        Some((AuthFailure::BadProof, AtbusCloseReason::Unauthorized as i32))
    );
    // The refused client hears why, and the server keeps nothing of it.
    let refused = world.node(links[2].a);
    assert_eq!(
        refused
            .handshake_failure(links[2].a_connection)
            .map(|f| f.0),
        Some(AuthFailure::RefusedByPeer)
    );
    assert_eq!(world.node(server).endpoint.connection_count(), 2);
    assert_eq!(world.node(server).endpoint.pending_handshakes(), 0);
}

#[test]
fn the_token_is_never_on_the_wire_nor_in_the_logs() {
    let shared = token(0x5a);
    let bad = token(0x5b);
    let ((world, nodes), logs) = with_logs(|| {
        let mut world = World::new(3);
        let server = world.add("server", accepting([shared.clone()]));
        let good = world.add("good", Default::default());
        let wrong = world.add("wrong", Default::default());
        world.connect(
            good,
            server,
            datagram(1),
            ConnectOptions::new("server", Credential::Token(shared.clone())),
        );
        world.connect(
            wrong,
            server,
            datagram(1),
            ConnectOptions::new("server", Credential::Token(bad.clone())),
        );
        world.run_for(Duration::from_millis(50));
        (world, [server, good, wrong])
    });
    let secrets = [shared.expose().to_vec(), bad.expose().to_vec()];
    let hex_secrets = [shared.reveal_hex(), bad.reveal_hex()];
    for index in nodes {
        let node = world.node(index);
        for transmit in &node.sent {
            for secret in &secrets {
                assert!(
                    !transmit
                        .data
                        .windows(secret.len())
                        .any(|w| w == secret.as_slice()),
                    "a token went on the wire"
                );
            }
        }
    }
    assert!(logs.contains("bad_proof"), "the refusal is logged: {logs}");
    for secret in &hex_secrets {
        assert!(!logs.contains(secret.as_str()), "a token was logged");
    }
    assert!(!format!("{shared:?}").contains(&shared.reveal_hex()));
}

#[test]
fn the_handshake_completes_over_a_lossy_link_and_early_data_arrives_exactly_once() {
    use atbus_core::sim::LinkProfile;
    for seed in 0..40 {
        let mut world = World::new(100 + seed);
        let shared = token(7);
        let server = world.add("server", accepting([shared.clone()]));
        let client = world.add("client", Default::default());
        let expected: Vec<Bytes> = (0..20)
            .map(|i| Bytes::from(format!("message {i} of seed {seed}")))
            .collect();
        for message in &expected {
            world
                .node_mut(client)
                .endpoint
                .send("server", 1, message.clone(), MessageMeta::default())
                .expect("send");
        }
        let profile = LinkProfile::perfect_datagram()
            .with_delay(Duration::from_millis(10))
            .with_jitter(Duration::from_millis(5))
            .with_loss(0.3)
            .with_duplicate(0.1)
            .with_reorder(0.2);
        let link = world.connect(
            client,
            server,
            profile,
            ConnectOptions::new("server", Credential::Token(shared)),
        );
        world.run_for(Duration::from_secs(20));
        let (client_node, server_node) = (world.node(client), world.node(server));
        assert!(
            client_node.authenticated(link.a_connection).is_some(),
            "seed {seed}: the client is not authenticated"
        );
        assert!(
            server_node.authenticated(link.b_connection).is_some(),
            "seed {seed}: the server is not authenticated"
        );
        assert!(
            server_node.endpoint.stats().auth_failures.is_empty(),
            "seed {seed}"
        );
        assert_eq!(server_node.messages_from("client"), expected, "seed {seed}");
    }
}
