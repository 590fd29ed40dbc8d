//! Nodes reaching each other through a relay (`docs/protocol.md` section 5.9): streams end to end
//! through the relay, replies finding their way back, loss on either hop recovered by the two
//! ends, and an unknown destination reported to the sender as ROUTER_NOT_FOUND.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, ConnectOptions, Credential, Event, MessageMeta, SendError};
use atbus_core::sim::{LinkProfile, NodeIndex};
use atbus_proto::protocol::AtbusCloseReason;
use bytes::Bytes;

use crate::support::*;

/// A relay accepting `token`, and two nodes `a` and `b` connected to it over `profile`.
fn relayed(profile: LinkProfile) -> (World, NodeIndex, NodeIndex, NodeIndex) {
    let (world, relay, a, b, _) = relayed_with_link(profile);
    (world, relay, a, b)
}

/// [`relayed`], with the link of `b` to the relay.
fn relayed_with_link(
    profile: LinkProfile,
) -> (
    World,
    NodeIndex,
    NodeIndex,
    NodeIndex,
    atbus_core::sim::Link,
) {
    let mut world = World::new(5);
    let shared = token(9);
    let relay = world.add(
        "relay",
        AuthConfig {
            relay: true,
            ..accepting([shared.clone()])
        },
    );
    let a = world.add("a", Default::default());
    let b = world.add("b", Default::default());
    let [_, link_b] = [a, b].map(|node| {
        world.connect(
            node,
            relay,
            profile.clone(),
            ConnectOptions::new("relay", Credential::Token(shared.clone())),
        )
    });
    world.run_for(Duration::from_millis(100));
    (world, relay, a, b, link_b)
}

fn message(index: usize) -> Bytes {
    Bytes::from(format!("message {index} ").repeat(1 + index % 300))
}

#[test]
fn two_nodes_talk_through_a_relay_and_replies_find_their_way_back() {
    let (mut world, relay, a, b) = relayed(datagram(5));
    let now = world.net.now();
    for index in 0..200 {
        world
            .node_mut(a)
            .endpoint
            .send("b", 1, message(index), MessageMeta::default())
            .expect("queued for b, through the relay");
    }
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(2));
    let got = world.node(b).messages_from("a");
    assert_eq!(
        got.len(),
        200,
        "b got every message, from a (not from the relay)"
    );
    assert!(got.iter().enumerate().all(|(i, data)| *data == message(i)));
    assert!(
        world.node(relay).received.is_empty(),
        "the relay took none itself"
    );
    assert!(world.node(relay).endpoint.stats().frames_forwarded >= 200);

    // b answers a, which it reaches through the relay too.
    world
        .node_mut(b)
        .endpoint
        .send("a", 1, Bytes::from_static(b"pong"), MessageMeta::default())
        .expect("queued");
    world.net.poll_node(b);
    world.run_for(Duration::from_millis(200));
    assert_eq!(
        world.node(a).messages_from("b"),
        [Bytes::from_static(b"pong")]
    );
    assert_eq!(
        world.node(a).endpoint.unacknowledged(),
        0,
        "b acknowledged everything"
    );
    assert!(world.net.now() - now < Duration::from_secs(3));
}

#[test]
fn loss_on_both_hops_is_recovered_end_to_end() {
    let (mut world, _relay, a, b) = relayed(datagram(5).with_loss(0.05));
    for index in 0..300 {
        world
            .node_mut(a)
            .endpoint
            .send("b", 3, message(index), MessageMeta::default())
            .expect("queued");
    }
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(20));
    let got = world.node(b).messages_from("a");
    assert_eq!(got.len(), 300);
    assert!(got.iter().enumerate().all(|(i, data)| *data == message(i)));
    assert!(
        world.node(a).endpoint.stats().pieces_resent > 0,
        "the loss was real"
    );
    assert_eq!(world.node(a).endpoint.unacknowledged(), 0);
}

#[test]
fn streams_through_a_relay_work_over_stream_transports() {
    let (mut world, _relay, a, b) = relayed(stream(3));
    let big = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
    world
        .node_mut(a)
        .endpoint
        .send("b", 0, big.clone(), MessageMeta::default())
        .expect("queued");
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(5));
    let got = world.node(b).messages_from("a");
    assert_eq!(got.len(), 1, "one message");
    assert!(got[0] == big, "intact");
}

#[test]
fn an_unknown_destination_comes_back_as_router_not_found_and_sends_to_it_fail() {
    let (mut world, relay, a, _b) = relayed(datagram(5));
    world
        .node_mut(a)
        .endpoint
        .send(
            "nobody",
            1,
            Bytes::from_static(b"hello?"),
            MessageMeta::default(),
        )
        .expect("queued: a cannot know yet");
    world.net.poll_node(a);
    world.run_for(Duration::from_millis(100));
    let unroutable = world.node(a).events.iter().find_map(|event| match event {
        Event::Unroutable {
            peer,
            reason,
            dropped_units,
        } => Some((peer.clone(), reason.code.to_wire(), *dropped_units)),
        _ => None,
    });
    assert_eq!(
        unroutable,
        Some((
            "nobody".to_string(),
            AtbusCloseReason::RouterNotFound as i32,
            7
        ))
    );
    assert_eq!(
        world.node(relay).endpoint.stats().forward_dropped["no_route"],
        1
    );
    let error = world
        .node_mut(a)
        .endpoint
        .send(
            "nobody",
            1,
            Bytes::from_static(b"again"),
            MessageMeta::default(),
        )
        .unwrap_err();
    assert_eq!(
        error,
        SendError::NoRoute {
            peer: "nobody".into()
        }
    );
    assert_eq!(
        world.node(a).endpoint.unacknowledged(),
        0,
        "nothing held for it"
    );
    // A while later (by the endpoint's clock) a send is tried again.
    world.run_for(Duration::from_secs(2));
    let now = world.net.now();
    world.node_mut(a).endpoint.handle_timeout(now);
    assert!(
        world
            .node_mut(a)
            .endpoint
            .send(
                "nobody",
                1,
                Bytes::from_static(b"third"),
                MessageMeta::default()
            )
            .is_ok()
    );
}

#[test]
fn a_node_that_is_not_a_relay_forwards_nothing() {
    let mut world = World::new(6);
    let shared = token(9);
    let plain = world.add("plain", accepting([shared.clone()]));
    let a = world.add("a", Default::default());
    world.connect(
        a,
        plain,
        datagram(5),
        ConnectOptions::new("plain", Credential::Token(shared)),
    );
    world.run_for(Duration::from_millis(100));
    world
        .node_mut(a)
        .endpoint
        .send("b", 1, Bytes::from_static(b"x"), MessageMeta::default())
        .expect("queued, with nowhere to go");
    world.net.poll_node(a);
    world.run_for(Duration::from_millis(500));
    assert_eq!(world.node(plain).endpoint.stats().frames_forwarded, 0);
    assert_eq!(world.node(a).endpoint.unacknowledged(), 2, "held for b");
}

#[test]
fn frames_too_large_for_the_far_side_teach_the_sender_the_path_mtu() {
    let mut world = World::new(7);
    let shared = token(9);
    let relay = world.add(
        "relay",
        AuthConfig {
            relay: true,
            ..accepting([shared.clone()])
        },
    );
    let a = world.add("a", Default::default());
    let b = world.add("b", Default::default());
    // a is on a stream link (frames up to 64 KiB), b on datagrams of 1232 bytes.
    for (node, profile) in [(a, stream(3)), (b, datagram(3))] {
        world.connect(
            node,
            relay,
            profile,
            ConnectOptions::new("relay", Credential::Token(shared.clone())),
        );
    }
    world.run_for(Duration::from_millis(100));
    let big = Bytes::from(vec![3u8; 200_000]);
    world
        .node_mut(a)
        .endpoint
        .send("b", 1, big.clone(), MessageMeta::default())
        .expect("queued");
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(5));
    let got = world.node(b).messages_from("a");
    assert_eq!(got.len(), 1);
    assert!(got[0] == big, "intact");
    let dropped = world.node(relay).endpoint.stats().forward_dropped["too_large"];
    assert!(
        (1..=5).contains(&dropped),
        "{dropped} frames too large before a learned"
    );
}

/// A chain of `relays` relays (each dialing the previous one as a relay), with node `a` on the
/// first and node `c` on the last.
fn chain(relays: usize) -> (World, NodeIndex, NodeIndex, Vec<NodeIndex>) {
    let mut world = World::new(8);
    let shared = token(9);
    let relay_auth = || AuthConfig {
        relay: true,
        ..accepting([shared.clone()])
    };
    let indices: Vec<NodeIndex> = (0..relays)
        .map(|i| world.add(&format!("relay-{i}"), relay_auth()))
        .collect();
    for (i, pair) in indices.windows(2).enumerate() {
        let options = ConnectOptions {
            relay: true,
            ..ConnectOptions::new(format!("relay-{i}"), Credential::Token(shared.clone()))
        };
        world.connect(pair[1], pair[0], datagram(2), options);
    }
    let a = world.add("a", Default::default());
    let c = world.add("c", Default::default());
    for (node, i) in [(a, 0), (c, relays - 1)] {
        let (relay, name) = (indices[i], format!("relay-{i}"));
        world.connect(
            node,
            relay,
            datagram(2),
            ConnectOptions::new(name, Credential::Token(shared.clone())),
        );
    }
    world.run_for(Duration::from_secs(1));
    (world, a, c, indices)
}

#[test]
fn nodes_on_the_two_ends_of_a_chain_of_three_relays_reach_each_other() {
    let (mut world, a, c, relays) = chain(3);
    for index in 0..100 {
        world
            .node_mut(a)
            .endpoint
            .send("c", 1, message(index), MessageMeta::default())
            .expect("queued");
    }
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(3));
    let got = world.node(c).messages_from("a");
    assert_eq!(got.len(), 100);
    assert!(got.iter().enumerate().all(|(i, data)| *data == message(i)));
    // And back, through the same relays.
    world
        .node_mut(c)
        .endpoint
        .send("a", 1, Bytes::from_static(b"back"), MessageMeta::default())
        .expect("queued");
    world.net.poll_node(c);
    world.run_for(Duration::from_millis(500));
    assert_eq!(
        world.node(a).messages_from("c"),
        [Bytes::from_static(b"back")]
    );
    for relay in relays {
        assert!(world.node(relay).endpoint.stats().frames_forwarded > 0);
    }
}

#[test]
fn a_node_more_than_sixteen_relays_away_is_not_routed_to() {
    let (mut world, a, _c, _relays) = chain(18);
    world
        .node_mut(a)
        .endpoint
        .send(
            "c",
            1,
            Bytes::from_static(b"too far"),
            MessageMeta::default(),
        )
        .expect("queued");
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(1));
    assert!(
        world
            .node(a)
            .events
            .iter()
            .any(|event| matches!(event, Event::Unroutable { peer, .. } if peer == "c")),
        "c is beyond the hop limit: ROUTER_NOT_FOUND"
    );
}

/// A relay whose queue per connection holds 32 KiB, with `policy`, a sender `a` and two
/// consumers, `slow` and `fast`; the relay's connection to `slow` comes last in the result.
fn slow_and_fast(
    policy: atbus_core::engine::ForwardOverflow,
) -> (
    World,
    NodeIndex,
    NodeIndex,
    NodeIndex,
    NodeIndex,
    atbus_core::engine::ConnectionId,
) {
    let mut world = World::new(11);
    let shared = token(9);
    let relay = world.add(
        "relay",
        AuthConfig {
            relay: true,
            ..accepting([shared.clone()])
        },
    );
    world.node_mut(relay).endpoint = atbus_core::engine::Endpoint::new(
        "relay",
        atbus_core::engine::EngineConfig {
            forward_queue_limit: 32 * 1024,
            forward_overflow: policy,
            auth: AuthConfig {
                relay: true,
                ..accepting([shared.clone()])
            },
            ..Default::default()
        },
        world.net.now(),
    );
    let (now, unix) = (world.net.now(), UNIX_START + world.net.elapsed());
    world.node_mut(relay).endpoint.set_unix_time(now, unix);
    let a = world.add("a", Default::default());
    let slow = world.add("slow", Default::default());
    let fast = world.add("fast", Default::default());
    let mut slow_connection = None;
    for node in [a, slow, fast] {
        let link = world.connect(
            node,
            relay,
            datagram(2),
            ConnectOptions::new("relay", Credential::Token(shared.clone())),
        );
        if node == slow {
            slow_connection = Some(link.b_connection);
        }
    }
    world.run_for(Duration::from_millis(200));
    let slow_connection = slow_connection.expect("connected");
    (world, relay, a, slow, fast, slow_connection)
}

#[test]
fn a_slow_consumer_fills_only_its_own_queue_and_every_message_still_arrives() {
    use atbus_core::engine::ForwardOverflow;
    for (policy, reason) in [
        (ForwardOverflow::DropNewest, "queue_full"),
        (ForwardOverflow::DropOldest, "queue_full_oldest"),
    ] {
        let (mut world, relay, a, slow, fast, to_slow) = slow_and_fast(policy);
        // slow's socket stops draining at the relay (as a stopped process's would).
        world
            .node_mut(relay)
            .endpoint
            .set_transport_blocked(to_slow, true);
        for index in 0..200 {
            for to in ["slow", "fast"] {
                world
                    .node_mut(a)
                    .endpoint
                    .send(to, 1, message(index), MessageMeta::default())
                    .expect("queued");
            }
        }
        world.net.poll_node(a);
        let start = world.net.now();
        // The fast consumer has everything long before the slow one.
        while world.node(fast).messages_from("a").len() < 200 {
            world.run_for(Duration::from_millis(10));
            assert!(
                world.net.now() - start < Duration::from_secs(2),
                "{policy:?}: fast held up"
            );
        }
        let fast_done = world.net.now() - start;
        world.run_for(Duration::from_secs(1));
        let stats = world.node(relay).endpoint.stats();
        assert!(
            stats.forward_dropped.get(reason).copied().unwrap_or(0) > 0,
            "{policy:?}: {stats:?}"
        );
        // It drains again: the senders' own retransmission brings what the relay dropped.
        world
            .node_mut(relay)
            .endpoint
            .set_transport_blocked(to_slow, false);
        world.net.poll_node(relay);
        world.run_for(Duration::from_secs(60));
        let got = world.node(slow).messages_from("a");
        assert_eq!(got.len(), 200, "{policy:?}");
        assert!(got.iter().enumerate().all(|(i, data)| *data == message(i)));
        assert!(
            fast_done < Duration::from_millis(500),
            "{policy:?}: {fast_done:?}"
        );
    }
}

#[test]
fn a_relay_set_to_disconnect_closes_a_slow_consumer_only() {
    let (mut world, relay, a, slow, fast, to_slow) =
        slow_and_fast(atbus_core::engine::ForwardOverflow::Disconnect);
    world
        .node_mut(relay)
        .endpoint
        .set_transport_blocked(to_slow, true);
    for index in 0..200 {
        for to in ["slow", "fast"] {
            world
                .node_mut(a)
                .endpoint
                .send(to, 1, message(index), MessageMeta::default())
                .expect("queued");
        }
    }
    world.net.poll_node(a);
    world.run_for(Duration::from_secs(2));
    assert_eq!(world.node(fast).messages_from("a").len(), 200);
    assert!(
        world
            .node(slow)
            .events
            .iter()
            .any(|event| matches!(event, Event::ConnectionLost { reason, .. } if reason.message.contains("slow consumer"))),
        "the slow consumer was told why"
    );
    assert_eq!(
        world
            .node(relay)
            .endpoint
            .stats()
            .forward_dropped
            .get("slow_consumer"),
        Some(&1)
    );
}

fn send_range(world: &mut World, from: NodeIndex, to: &str, range: std::ops::Range<usize>) {
    for index in range {
        world
            .node_mut(from)
            .endpoint
            .send(to, 1, message(index), MessageMeta::default())
            .expect("queued");
    }
    world.net.poll_node(from);
}

/// The indices of `got`, which must all be messages of [`message`], in order.
fn indices(got: &[Bytes]) -> Vec<usize> {
    got.iter()
        .map(|data| {
            (0..100)
                .find(|&i| *data == message(i))
                .unwrap_or_else(|| panic!("not a message: {data:?}"))
        })
        .collect()
}

#[test]
fn a_node_restarting_behind_the_relay_gets_streams_from_offset_zero_even_from_a_one_way_sender() {
    let (mut world, relay, a, first_b, link) = relayed_with_link(datagram(5));
    send_range(&mut world, a, "b", 0..5);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.node(first_b).messages_from("a").len(), 5);

    // b dies in the middle of the next burst; a new b (a new instance) connects to the relay.
    // b never sends a anything but acknowledgements: a learns of the restart only because the
    // new b refuses frames meant for its predecessor and says so.
    send_range(&mut world, a, "b", 5..40);
    world.run_for(Duration::from_millis(3));
    world.net.kill(link, false);
    let b = world.add("b", Default::default());
    world.connect_as_restart(
        b,
        relay,
        datagram(5),
        ConnectOptions {
            resume: false,
            ..ConnectOptions::new("relay", Credential::Token(token(9)))
        },
    );
    world.run_for(Duration::from_millis(500));
    send_range(&mut world, a, "b", 40..50);
    world.run_for(Duration::from_secs(5));

    assert!(
        world
            .node(a)
            .events
            .contains(&Event::PeerRestarted { peer: "b".into() }),
        "a noticed b's restart through the relay"
    );
    assert_eq!(world.node(a).endpoint.stats().peer_restarts, 1);
    let got = indices(&world.node(b).messages_from("a"));
    let (&first, &last) = (
        got.first().expect("the new b got data"),
        got.last().unwrap(),
    );
    assert!(
        first >= 5,
        "nothing the old b acknowledged comes again: {got:?}"
    );
    assert_eq!(
        got,
        (first..=last).collect::<Vec<_>>(),
        "in order, no gap, no stale offsets"
    );
    assert_eq!(last, 49);
    assert_eq!(world.node(a).endpoint.unacknowledged(), 0);

    // The new b talks back: a takes it as b's.
    world
        .node_mut(b)
        .endpoint
        .send("a", 1, Bytes::from_static(b"back"), MessageMeta::default())
        .expect("queued");
    world.net.poll_node(b);
    world.run_for(Duration::from_millis(300));
    assert_eq!(
        world.node(a).messages_from("b").last().unwrap(),
        &Bytes::from_static(b"back")
    );
}
