//! Anonymous peers: refused unless the listener allows them; then named by the accepting side
//! (`anon-…`, unique) and limited to the destinations of the allow list.

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_core::engine::{
    AllowRule, AnonymousPolicy, AuthConfig, AuthFailure, ConnectOptions, Credential, Event,
    IdentityKind, MessageMeta,
};
use atbus_discovery::Selector;
use atbus_proto::protocol::AtbusCloseReason;
use bytes::Bytes;

use crate::support::*;

fn anonymous_server(world: &mut World, allow: Vec<AllowRule>) -> atbus_core::sim::NodeIndex {
    world.add(
        "gateway",
        AuthConfig {
            anonymous: Some(AnonymousPolicy { allow }),
            labels: BTreeMap::from([("tier".to_string(), "public".to_string())]),
            ..AuthConfig::default()
        },
    )
}

#[test]
fn anonymous_peers_are_refused_unless_the_listener_allows_them() {
    let mut world = World::new(10);
    let server = world.add("server", accepting([token(1)]));
    let client = world.add("", AuthConfig::default());
    let link = world.connect(
        client,
        server,
        datagram(1),
        ConnectOptions::to_anyone(Credential::Anonymous),
    );
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        world.node(server).handshake_failure(link.b_connection),
        Some((
            AuthFailure::AnonymousRefused,
            AtbusCloseReason::Unauthorized as i32
        ))
    );
    assert_eq!(world.node(server).endpoint.connection_count(), 0);
}

#[test]
fn anonymous_peers_get_unique_chosen_names_and_reach_what_the_allow_list_allows() {
    for rule in [
        AllowRule::Name("gateway".into()),
        AllowRule::Selector(Selector::parse("tier=public").expect("selector")),
    ] {
        let mut world = World::new(11);
        let server = anonymous_server(&mut world, vec![rule.clone()]);
        let mut names = Vec::new();
        for _ in 0..2 {
            let client = world.add("", AuthConfig::default());
            let link = world.connect(
                client,
                server,
                stream(1),
                ConnectOptions::to_anyone(Credential::Anonymous),
            );
            world.run_for(Duration::from_millis(20));
            let name = world.node(client).endpoint.name().to_string();
            assert!(name.starts_with("anon-"), "{name}");
            assert!(
                world
                    .node(client)
                    .events
                    .contains(&Event::NameAssigned { name: name.clone() })
            );
            let identity = world
                .node(server)
                .endpoint
                .peer_identity(link.b_connection)
                .expect("identity");
            assert_eq!(identity.name, name);
            assert_eq!(identity.kind, IdentityKind::Anonymous);
            // A name it did not choose is not its own to register in discovery.
            assert!(!identity.kind.may_register());
            world
                .node_mut(client)
                .endpoint
                .send("gateway", 1, Bytes::from("hello"), MessageMeta::default())
                .expect("send");
            world.net.poll_node(client);
            world.run_for(Duration::from_millis(20));
            assert_eq!(
                world.node(server).messages_from(&name),
                vec![Bytes::from("hello")],
                "{rule:?}"
            );
            names.push(name);
        }
        assert_ne!(names[0], names[1]);
    }
}

#[test]
fn an_anonymous_peer_addressing_a_destination_outside_its_allow_list_is_refused() {
    let mut world = World::new(12);
    let server = anonymous_server(&mut world, vec![AllowRule::Name("gateway".into())]);
    let client = world.add("", AuthConfig::default());
    let link = world.connect(
        client,
        server,
        stream(1),
        ConnectOptions::to_anyone(Credential::Anonymous),
    );
    world.run_for(Duration::from_millis(20));
    let name = world.node(client).endpoint.name().to_string();
    // A frame for another node, through the gateway.
    world.inject(
        client,
        link.a_connection,
        data_frame(head(&name, "billing"), 0, b"let me in"),
    );
    world.run_for(Duration::from_millis(20));
    assert_eq!(
        world
            .node(server)
            .endpoint
            .stats()
            .auth_failures(AuthFailure::DestinationNotAllowed),
        1
    );
    assert_eq!(
        world.node(server).lost(link.b_connection),
        Some(AtbusCloseReason::Unauthorized as i32)
    );
    assert_eq!(
        world.node(client).lost(link.a_connection),
        Some(AtbusCloseReason::Unauthorized as i32)
    );

    // A selector that the gateway's own labels do not match keeps anonymous peers off it too.
    let mut world = World::new(13);
    let server = anonymous_server(
        &mut world,
        vec![AllowRule::Selector(
            Selector::parse("tier=internal").expect("selector"),
        )],
    );
    let client = world.add("", AuthConfig::default());
    let link = world.connect(
        client,
        server,
        stream(1),
        ConnectOptions::to_anyone(Credential::Anonymous),
    );
    world.run_for(Duration::from_millis(20));
    world
        .node_mut(client)
        .endpoint
        .send("gateway", 1, Bytes::from("hello"), MessageMeta::default())
        .expect("send");
    world.net.poll_node(client);
    world.run_for(Duration::from_millis(20));
    assert!(world.node(server).received.is_empty());
    assert_eq!(
        world.node(server).lost(link.b_connection),
        Some(AtbusCloseReason::Unauthorized as i32)
    );
}

#[test]
fn an_anonymous_hello_cannot_choose_its_own_name() {
    let mut world = World::new(14);
    let server = anonymous_server(&mut world, vec![AllowRule::Name("gateway".into())]);
    // A genuine anonymous hello, recorded.
    let client = world.add("", AuthConfig::default());
    let now = world.net.now();
    let at_client = world
        .node_mut(client)
        .endpoint
        .connect(
            now,
            params_of(&stream(1)),
            ConnectOptions::to_anyone(Credential::Anonymous),
        )
        .expect("connect");
    world.accepted_link(client, at_client, server, stream(1));
    let hello = world
        .node_mut(client)
        .endpoint
        .poll_transmit(now)
        .expect("the hello")
        .data;
    // The same hello claiming the name "billing".
    let claimed = rewrite_hello(&hello, |hello, head| {
        hello.source = "billing".into();
        head.source = "billing".into();
    });
    let attacker = world.add("attacker", AuthConfig::default());
    let link = world.raw_link(attacker, server, stream(1));
    world.inject(attacker, link.a_connection, claimed);
    world.run_for(Duration::from_millis(20));
    assert_eq!(
        world
            .node(server)
            .handshake_failure(link.b_connection)
            .map(|f| f.0),
        Some(AuthFailure::Malformed)
    );
    assert!(
        !world
            .node(server)
            .endpoint
            .reachable_peers()
            .any(|p| p == "billing")
    );
}
