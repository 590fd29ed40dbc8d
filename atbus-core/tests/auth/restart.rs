//! A peer that restarts comes back with a new instance in its handshake: the streams to it start
//! over from offset 0, what it had not acknowledged is sent again, and nothing waits forever for
//! offsets the new instance never saw.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, AuthFailure, ConnectOptions, Credential, Event, MessageMeta};
use atbus_core::sim::NodeIndex;
use bytes::Bytes;

use crate::support::*;

fn message(index: usize) -> Bytes {
    Bytes::from(format!("message {index}"))
}

fn send(world: &mut World, from: NodeIndex, to: &str, range: std::ops::Range<usize>) {
    for index in range {
        world
            .node_mut(from)
            .endpoint
            .send(to, 1, message(index), MessageMeta::default())
            .expect("send");
    }
    world.net.poll_node(from);
}

fn options() -> ConnectOptions {
    ConnectOptions::new("server", Credential::Token(token(1)))
}

#[test]
fn a_restarted_server_gets_the_streams_from_offset_zero_and_everything_unacknowledged() {
    let mut world = World::new(70);
    let first = world.add("server", accepting([token(1)]));
    let client = world.add("client", AuthConfig::default());
    let link = world.connect(client, first, datagram(5), options());
    send(&mut world, client, "server", 0..5);
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.node(first).messages_from("client").len(), 5);

    // The server dies in the middle of the next burst, silently.
    send(&mut world, client, "server", 5..40);
    world.run_for(Duration::from_millis(3));
    world.net.kill(link, false);
    send(&mut world, client, "server", 40..50);
    // (A new server has a new ticket key: the client proves its token, not its old ticket.)
    let second = world.add("server", accepting([token(1)]));
    world.connect(
        client,
        second,
        datagram(5),
        ConnectOptions {
            resume: false,
            ..options()
        },
    );
    world.run_for(Duration::from_secs(5));

    assert!(world.node(client).events.contains(&Event::PeerRestarted {
        peer: "server".into()
    }));
    let before = world.node(first).messages_from("client");
    let after = world.node(second).messages_from("client");
    // The new instance gets a tail of the messages, in order, and with the old one's they cover
    // everything: whatever the old one did not acknowledge was sent again.
    let resumed_at = (0..50)
        .find(|&index| after.first() == Some(&message(index)))
        .expect("the new server got messages");
    assert_eq!(after, (resumed_at..50).map(message).collect::<Vec<_>>());
    assert!(
        resumed_at <= before.len(),
        "a gap between the two instances"
    );
    assert_eq!(before, (0..before.len()).map(message).collect::<Vec<_>>());
}

#[test]
fn a_restarted_client_is_heard_from_offset_zero_and_gets_what_was_pending_for_it() {
    let mut world = World::new(71);
    let server = world.add("server", accepting([token(1)]));
    let first = world.add("client", AuthConfig::default());
    let link = world.connect(first, server, stream(5), options());
    send(&mut world, first, "server", 0..3);
    world.run_for(Duration::from_millis(100));
    world.net.kill(link, false);
    // Queued for the client while it is away.
    world
        .node_mut(server)
        .endpoint
        .send(
            "client",
            2,
            Bytes::from("while you were away"),
            MessageMeta::default(),
        )
        .expect("queued");

    let second = world.add("client", AuthConfig::default());
    world.connect_as_restart(second, server, stream(5), options());
    send(&mut world, second, "server", 100..103);
    world.run_for(Duration::from_secs(1));
    let server_node = world.node(server);
    assert!(server_node.events.contains(&Event::PeerRestarted {
        peer: "client".into()
    }));
    let heard: Vec<Bytes> = server_node.messages_from("client");
    assert_eq!(
        heard,
        [0, 1, 2, 100, 101, 102].map(message).to_vec(),
        "the new client's stream starts at offset 0 and is delivered"
    );
    assert_eq!(
        world.node(second).messages_from("server"),
        vec![Bytes::from("while you were away")]
    );
}

#[test]
fn a_second_live_node_claiming_a_taken_name_is_refused_and_the_holder_keeps_its_streams() {
    for profile in [stream(5), datagram(5)] {
        let mut world = World::new(72);
        let server = world.add("server", accepting([token(1)]));
        let holder = world.add("client", AuthConfig::default());
        world.connect(holder, server, profile.clone(), options());
        send(&mut world, holder, "server", 0..3);
        world.run_for(Duration::from_millis(100));

        // A second node named "client" (its own instance), while the first is alive. It tries
        // again 2 s later: the holder answered the server's ping meanwhile, so again no.
        let intruder = world.add("client", AuthConfig::default());
        for _ in 0..2 {
            let claim = world.connect(intruder, server, profile.clone(), options());
            world.run_for(Duration::from_millis(200));
            assert_eq!(
                world
                    .node(server)
                    .handshake_failure(claim.b_connection)
                    .map(|(failure, _)| failure),
                Some(AuthFailure::NameTaken),
                "{profile:?}: the server refuses the claim"
            );
            assert_eq!(
                world.node(intruder).handshake_failure(claim.a_connection),
                Some((AuthFailure::RefusedByPeer, 3)),
                "{profile:?}: the newcomer is told UNAUTHORIZED"
            );
            world.run_for(Duration::from_secs(2));
        }

        send(&mut world, holder, "server", 3..6);
        world.run_for(Duration::from_millis(200));
        let server_node = world.node(server);
        assert!(
            !server_node
                .events
                .iter()
                .any(|event| matches!(event, Event::PeerRestarted { .. })),
            "{profile:?}: the holder was never taken as restarted"
        );
        assert_eq!(
            server_node.messages_from("client"),
            (0..6).map(message).collect::<Vec<_>>(),
            "{profile:?}: the holder's stream went on where it was"
        );
        assert_eq!(
            server_node.endpoint.stats().auth_failures[&AuthFailure::NameTaken],
            2
        );
    }
}
