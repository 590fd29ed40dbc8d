//! A peer that leaves is dropped from the endpoint once it has nothing more to do, and its
//! streams still work when it comes back: the same instance carries on at the offsets where it
//! left (its tombstone kept them), a new instance starts them over as after any restart.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, ConnectOptions, Credential, Event, MessageMeta};
use atbus_core::sim::NodeIndex;
use bytes::Bytes;

use crate::support::*;

fn message(from: &str, index: usize) -> Bytes {
    Bytes::from(format!("{from} {index}"))
}

fn send(world: &mut World, from: NodeIndex, to: &str, range: std::ops::Range<usize>) {
    let name = world.node(from).endpoint.name().to_string();
    for index in range {
        world
            .node_mut(from)
            .endpoint
            .send(to, 1, message(&name, index), MessageMeta::default())
            .expect("send");
    }
    world.net.poll_node(from);
}

fn options() -> ConnectOptions {
    ConnectOptions::new("server", Credential::Token(token(1)))
}

/// A server and a client that exchanged 10 messages each way, every one acknowledged, and
/// then lost their link. The client queued 10 more for the server at once: it keeps its state
/// (its streams at the offsets where they stood), while the client's state on the server,
/// which had nothing pending, is dropped.
fn exchanged_then_left() -> (World, NodeIndex, NodeIndex) {
    let mut world = World::new(90);
    let server = world.add("server", accepting([token(1)]));
    let client = world.add("client", AuthConfig::default());
    let link = world.connect(client, server, datagram(5), options());
    world.run_for(Duration::from_millis(100));
    send(&mut world, client, "server", 0..10);
    send(&mut world, server, "client", 0..10);
    world.run_for(Duration::from_millis(500));
    for node in [server, client] {
        assert_eq!(world.node(node).received.len(), 10);
        assert_eq!(world.node(node).endpoint.unacknowledged(), 0);
        assert_eq!(world.node(node).endpoint.peer_count(), 1);
    }
    world.net.kill(link, true);
    send(&mut world, client, "server", 10..20);
    world.run_for(Duration::from_secs(10));
    let endpoint = &world.node(server).endpoint;
    assert_eq!(
        (endpoint.peer_count(), endpoint.departed_peers()),
        (0, 1),
        "the client's state on the server is dropped, its tombstone kept"
    );
    assert_eq!(endpoint.stats().peers_dropped, 1);
    assert_eq!(endpoint.memory(), 0);
    let endpoint = &world.node(client).endpoint;
    assert_eq!(
        (endpoint.peer_count(), endpoint.departed_peers()),
        (1, 0),
        "the client keeps the server's state: it has messages waiting for it"
    );
    (world, server, client)
}

#[test]
fn a_peer_that_left_is_dropped_and_the_same_instance_carries_on_where_it_was() {
    let (mut world, server, client) = exchanged_then_left();
    // The same client (the same instance) comes back: the server takes its state back from the
    // tombstone, and sends more.
    world.connect(client, server, datagram(5), options());
    world.run_for(Duration::from_secs(1));
    send(&mut world, server, "client", 10..20);
    world.run_for(Duration::from_secs(5));

    let all = |from: &str| (0..20).map(|i| message(from, i)).collect::<Vec<_>>();
    assert_eq!(world.node(server).messages_from("client"), all("client"));
    assert_eq!(world.node(client).messages_from("server"), all("server"));
    for node in [server, client] {
        let endpoint = &world.node(node).endpoint;
        assert_eq!(endpoint.unacknowledged(), 0, "{}", endpoint.name());
        assert_eq!(endpoint.stats().peer_restarts, 0, "{}", endpoint.name());
        assert_eq!(endpoint.peer_count(), 1);
        assert_eq!(endpoint.departed_peers(), 0, "the tombstone was taken back");
    }
}

#[test]
fn a_peer_that_left_and_restarted_starts_the_streams_over() {
    let (mut world, server, old_client) = exchanged_then_left();
    // The server queues more for the client while it is away...
    send(&mut world, server, "client", 10..20);
    world.run_for(Duration::from_secs(1));
    // ...and the client comes back as a new process (a new instance), which sends too.
    let client = world.add("client", AuthConfig::default());
    assert_ne!(client, old_client);
    world.connect(client, server, datagram(5), options());
    send(&mut world, client, "server", 0..10);
    world.run_for(Duration::from_secs(5));

    let server_events = &world.node(server).events;
    assert!(server_events.contains(&Event::PeerRestarted {
        peer: "client".into()
    }));
    // The new instance gets what the server queued for it, from offset 0, once and in order;
    // the server gets the new instance's messages after the old one's.
    let range = |from: &str, range: std::ops::Range<usize>| {
        range.map(|i| message(from, i)).collect::<Vec<_>>()
    };
    assert_eq!(
        world.node(client).messages_from("server"),
        range("server", 10..20)
    );
    let heard = world.node(server).messages_from("client");
    assert_eq!(heard.len(), 20, "{heard:?}");
    assert_eq!(heard[..10], range("client", 0..10));
    assert_eq!(heard[10..], range("client", 0..10));
    assert_eq!(world.node(server).endpoint.unacknowledged(), 0);
    assert_eq!(world.node(client).endpoint.unacknowledged(), 0);
}
