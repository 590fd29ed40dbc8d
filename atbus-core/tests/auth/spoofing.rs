//! No spoofing: after the handshake every frame's source must be the authenticated name, and
//! only an authenticated relay may speak for others through `forward_for_*`.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, AuthFailure, ConnectOptions, Credential};
use atbus_core::sim::{Link, NodeIndex};
use atbus_proto::protocol::{AtbusCloseReason, MessageHead};

use crate::support::*;

/// A server and a client authenticated to it over a stream link (the client a relay or not).
fn connected(seed: u64, relay: bool) -> (World, NodeIndex, NodeIndex, Link) {
    let mut world = World::new(seed);
    let shared = token(8);
    let server = world.add("server", accepting([shared.clone()]));
    let client = world.add("client", AuthConfig::default());
    let link = world.connect(
        client,
        server,
        stream(1),
        ConnectOptions {
            relay,
            ..ConnectOptions::new("server", Credential::Token(shared))
        },
    );
    world.run_for(Duration::from_millis(10));
    assert!(
        world
            .node(server)
            .authenticated(link.b_connection)
            .is_some()
    );
    (world, server, client, link)
}

#[test]
fn a_frame_with_a_spoofed_source_is_refused_as_unauthorized() {
    let (mut world, server, client, link) = connected(30, false);
    world.inject(
        client,
        link.a_connection,
        data_frame(head("admin", "server"), 0, b"I am admin"),
    );
    world.run_for(Duration::from_millis(10));
    assert!(world.node(server).received.is_empty());
    assert_eq!(
        world
            .node(server)
            .endpoint
            .stats()
            .auth_failures(AuthFailure::SpoofedSource),
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
}

#[test]
fn only_an_authenticated_relay_may_set_forward_for() {
    let forwarded = MessageHead {
        forward_for_source: "someone-else".into(),
        forward_for_connection_id: 12,
        hop_count: 1,
        ..head("client", "server")
    };
    // A plain node may not.
    let (mut world, server, client, link) = connected(31, false);
    world.inject(
        client,
        link.a_connection,
        data_frame(forwarded.clone(), 0, b"on behalf of"),
    );
    world.run_for(Duration::from_millis(10));
    assert_eq!(
        world
            .node(server)
            .endpoint
            .stats()
            .auth_failures(AuthFailure::ForwardingNotAllowed),
        1
    );
    assert_eq!(
        world.node(server).lost(link.b_connection),
        Some(AtbusCloseReason::Unauthorized as i32)
    );

    // A relay may: the frame is not refused.
    let (mut world, server, client, link) = connected(32, true);
    assert!(
        world
            .node(server)
            .endpoint
            .peer_identity(link.b_connection)
            .expect("identity")
            .relay
    );
    world.inject(
        client,
        link.a_connection,
        data_frame(forwarded, 0, b"on behalf of"),
    );
    world.run_for(Duration::from_millis(10));
    assert!(world.node(server).endpoint.stats().auth_failures.is_empty());
    assert_eq!(world.node(server).lost(link.b_connection), None);
}

#[test]
fn a_node_takes_forwarded_frames_only_from_a_peer_that_accepted_it_as_a_relay() {
    let forwarded = MessageHead {
        forward_for_source: "far-away".into(),
        forward_for_connection_id: 3,
        hop_count: 1,
        ..head("hub", "client")
    };
    for relay in [true, false] {
        let mut world = World::new(33);
        let shared = token(8);
        let hub = world.add(
            "hub",
            AuthConfig {
                relay,
                ..accepting([shared.clone()])
            },
        );
        let client = world.add("client", AuthConfig::default());
        let link = world.connect(
            client,
            hub,
            stream(1),
            ConnectOptions::new("hub", Credential::Token(shared)),
        );
        world.run_for(Duration::from_millis(10));
        let identity = world
            .node(client)
            .endpoint
            .peer_identity(link.a_connection)
            .expect("identity")
            .clone();
        assert_eq!(identity.relay, relay);
        world.inject(
            hub,
            link.b_connection,
            data_frame(forwarded.clone(), 0, b"relayed"),
        );
        world.run_for(Duration::from_millis(10));
        let refused = world
            .node(client)
            .endpoint
            .stats()
            .auth_failures(AuthFailure::ForwardingNotAllowed);
        assert_eq!(refused, u64::from(!relay), "relay: {relay}");
    }
}
