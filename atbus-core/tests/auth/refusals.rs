//! Refusals: each rule that fails closes the connection with UNAUTHORIZED and a log line naming
//! the rule, leaves nothing of the connection behind, and never answers an unauthenticated peer
//! with more bytes than it sent.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, AuthFailure, ConnectOptions, Credential, MessageMeta};
use atbus_core::sim::{Link, LinkProfile, NodeIndex};
use atbus_proto::protocol::AtbusCloseReason;
use bytes::Bytes;

use crate::support::*;

/// How a refusal came about: the world after it, the server, the refused link, and whether the
/// refused side had authenticated first (then the connection counts as lost, not failed).
struct Refusal {
    world: World,
    server: NodeIndex,
    link: Link,
    established: bool,
}

fn server_world(seed: u64) -> (World, NodeIndex) {
    let mut world = World::new(seed);
    let server = world.add("server", accepting([token(1)]));
    (world, server)
}

fn client_with(world: &mut World, server: NodeIndex, name: &str, options: ConnectOptions) -> Link {
    let client = world.add(name, AuthConfig::default());
    world.connect(client, server, datagram(2), options)
}

fn run(failure: AuthFailure) -> Refusal {
    let (mut world, server) = server_world(40 + failure as u64);
    let good = || ConnectOptions::new("server", Credential::Token(token(1)));
    let mut established = false;
    let link = match failure {
        AuthFailure::BadProof => client_with(
            &mut world,
            server,
            "client",
            ConnectOptions::new("server", Credential::Token(token(2))),
        ),
        AuthFailure::UnknownName => client_with(
            &mut world,
            server,
            "nobody",
            ConnectOptions::new(
                "server",
                Credential::Issued {
                    stream_id: 1,
                    token: token(1),
                },
            ),
        ),
        AuthFailure::ExpiredTimestamp => {
            let client = world.add("client", AuthConfig::default());
            let now = world.net.now();
            world
                .node_mut(client)
                .endpoint
                .set_unix_time(now, UNIX_START + Duration::from_secs(400));
            world.connect(client, server, datagram(2), good())
        }
        AuthFailure::Replay => {
            let first = client_with(&mut world, server, "client", good());
            world.run_for(Duration::from_millis(20));
            let flight = world.node(first.a).sent_on(first.a_connection)[0].clone();
            let attacker = world.add("attacker", AuthConfig::default());
            let link = world.raw_link(attacker, server, datagram(2));
            world.inject(attacker, link.a_connection, flight);
            link
        }
        AuthFailure::Revoked => {
            let now = world.net.now();
            let identity = world
                .node_mut(server)
                .endpoint
                .issue_identity(now, "device", 1, Duration::from_secs(60))
                .expect("issue");
            assert!(
                world
                    .node_mut(server)
                    .endpoint
                    .revoke_identity(now, "device")
            );
            client_with(
                &mut world,
                server,
                "device",
                ConnectOptions::new(
                    "server",
                    Credential::Issued {
                        stream_id: 1,
                        token: identity.token,
                    },
                ),
            )
        }
        AuthFailure::SpoofedSource => {
            established = true;
            let link = client_with(&mut world, server, "client", good());
            world.run_for(Duration::from_millis(20));
            world.inject(
                link.a,
                link.a_connection,
                data_frame(head("someone", "server"), 0, b"spoofed"),
            );
            link
        }
        AuthFailure::Timeout => {
            // Connects and says nothing.
            let attacker = world.add("attacker", AuthConfig::default());
            world.raw_link(attacker, server, LinkProfile::perfect_stream())
        }
        AuthFailure::Oversized => {
            // Announces a frame of 1 MiB: refused on its header, before the body is held.
            let attacker = world.add("attacker", AuthConfig::default());
            let link = world.raw_link(attacker, server, LinkProfile::perfect_stream());
            let mut bytes = vec![0x01, 0x80, 0x80, 0x40];
            bytes.extend_from_slice(&[0u8; 1000]);
            world.inject(attacker, link.a_connection, Bytes::from(bytes));
            link
        }
        AuthFailure::Malformed => {
            let attacker = world.add("attacker", AuthConfig::default());
            let link = world.raw_link(attacker, server, datagram(2));
            world.inject(
                attacker,
                link.a_connection,
                Bytes::from_static(&[0xff; 200]),
            );
            link
        }
        other => unreachable!("no scenario for {other:?}"),
    };
    world.run_for(Duration::from_secs(11));
    Refusal {
        world,
        server,
        link,
        established,
    }
}

#[test]
fn every_refusal_closes_with_unauthorized_logs_its_rule_and_leaves_no_state() {
    for failure in [
        AuthFailure::BadProof,
        AuthFailure::UnknownName,
        AuthFailure::ExpiredTimestamp,
        AuthFailure::Replay,
        AuthFailure::Revoked,
        AuthFailure::SpoofedSource,
        AuthFailure::Timeout,
        AuthFailure::Oversized,
        AuthFailure::Malformed,
    ] {
        let (refusal, logs) = with_logs(|| run(failure));
        let Refusal {
            world,
            server,
            link,
            established,
        } = refusal;
        let node = world.node(server);
        assert_eq!(
            node.endpoint.stats().auth_failures(failure),
            1,
            "{failure:?}"
        );
        let code = if established {
            node.lost(link.b_connection)
        } else {
            node.handshake_failure(link.b_connection).map(|(f, code)| {
                assert_eq!(f, failure);
                code
            })
        };
        assert_eq!(
            code,
            Some(AtbusCloseReason::Unauthorized as i32),
            "{failure:?}"
        );
        assert!(
            logs.contains(&format!("rule=\"{}\"", failure.as_str())),
            "{failure:?}: no log line names the rule:\n{logs}"
        );
        // Nothing of the refused connection is left.
        assert_eq!(node.endpoint.pending_handshakes(), 0, "{failure:?}");
        assert!(
            node.endpoint.peer_identity(link.b_connection).is_none(),
            "{failure:?}"
        );
        let expected_connections = usize::from(failure == AuthFailure::Replay);
        assert_eq!(
            node.endpoint.connection_count(),
            expected_connections,
            "{failure:?}"
        );
        // No amplification: before authentication, never more bytes out than in.
        if !established {
            let sent = node.bytes_out.get(&link.b_connection).copied().unwrap_or(0);
            let received = node.bytes_in.get(&link.b_connection).copied().unwrap_or(0);
            assert!(
                sent <= received,
                "{failure:?}: answered {sent} bytes to {received}"
            );
        }
    }
}

#[test]
fn the_refused_client_learns_the_rule_from_the_close_reason() {
    let Refusal { world, link, .. } = run(AuthFailure::BadProof);
    let client = world.node(link.a);
    let reason = client
        .events
        .iter()
        .find_map(|event| match event {
            atbus_core::engine::Event::HandshakeFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("the client saw the refusal");
    assert_eq!(reason.code.to_wire(), AtbusCloseReason::Unauthorized as i32);
    assert_eq!(reason.message, "unauthorized: bad_proof");
}

#[test]
fn a_node_that_may_not_relay_is_refused_the_relay_role() {
    let mut world = World::new(60);
    let server = world.add(
        "server",
        AuthConfig {
            allow_relays: false,
            ..accepting([token(1)])
        },
    );
    let link = client_with(
        &mut world,
        server,
        "client",
        ConnectOptions {
            relay: true,
            ..ConnectOptions::new("server", Credential::Token(token(1)))
        },
    );
    world.run_for(Duration::from_millis(20));
    assert_eq!(
        world
            .node(server)
            .handshake_failure(link.b_connection)
            .map(|f| f.0),
        Some(AuthFailure::RelayRefused)
    );
}

#[test]
fn many_unauthenticated_connections_cost_bounded_memory_and_vanish_after_the_timeout() {
    let (mut world, server) = server_world(61);
    let attacker = world.add("attacker", AuthConfig::default());
    for _ in 0..200 {
        let link = world.raw_link(attacker, server, LinkProfile::perfect_stream());
        // Half a hello's worth of bytes that never complete a frame.
        world.inject(
            attacker,
            link.a_connection,
            Bytes::from(vec![0x01, 0x90, 0x0f]),
        );
    }
    world.run_for(Duration::from_millis(10));
    assert_eq!(world.node(server).endpoint.pending_handshakes(), 200);
    assert_eq!(world.node(server).endpoint.memory(), 0);
    world.run_for(Duration::from_secs(11));
    let node = world.node(server);
    assert_eq!(node.endpoint.connection_count(), 0);
    assert_eq!(
        node.endpoint.stats().auth_failures(AuthFailure::Timeout),
        200
    );
    assert!(node.bytes_out.is_empty(), "nothing is sent to silent peers");
    // The server still works.
    let _ = MessageMeta::default();
}

#[test]
fn a_hello_that_needed_a_confirm_cannot_be_replayed_once_the_cache_has_room_again() {
    // Found by the handshake fuzzer: a hello the full cache could not remember was accepted
    // without a confirm when replayed after the cache emptied, inside its timestamp window.
    let mut world = World::new(62);
    let server = world.add(
        "server",
        AuthConfig {
            replay_cache_size: 1,
            timestamp_window: Duration::from_secs(10),
            ..accepting([token(1)])
        },
    );
    let first = world.add("first", AuthConfig::default());
    world.connect(
        first,
        server,
        datagram(1),
        ConnectOptions::new("server", Credential::Token(token(1))),
    );
    world.run_for(Duration::from_secs(5));
    let second = world.add("second", AuthConfig::default());
    let recorded = world.connect(
        second,
        server,
        datagram(1),
        ConnectOptions::new("server", Credential::Token(token(1))),
    );
    world.run_for(Duration::from_millis(100));
    assert!(
        world
            .node(server)
            .authenticated(recorded.b_connection)
            .is_some()
    );
    let flight = world.node(second).sent_on(recorded.a_connection)[0].clone();

    // The first hello's nonce has expired: the cache has room. The recording is still inside
    // its window.
    world.run_for(Duration::from_secs(6));
    let attacker = world.add("attacker", AuthConfig::default());
    let replay = world.raw_link(attacker, server, datagram(1));
    world.inject(attacker, replay.a_connection, flight);
    world.run_for(Duration::from_secs(11));
    let server_node = world.node(server);
    assert_eq!(server_node.authenticated(replay.b_connection), None);
    assert_eq!(
        server_node
            .handshake_failure(replay.b_connection)
            .map(|f| f.0),
        Some(AuthFailure::Timeout),
        "it waited for a confirm that never came"
    );
}

#[test]
fn an_unproven_datagram_address_never_gets_more_bytes_than_it_sent() {
    // Found by the handshake fuzzer: the accept went out with a ping, and early data or
    // repeated hellos drew the accept again and again.
    let mut world = World::new(63);
    let server = world.add(
        "gateway",
        AuthConfig {
            anonymous: Some(atbus_core::engine::AnonymousPolicy {
                allow: vec![atbus_core::engine::AllowRule::Name("gateway".into())],
            }),
            replay_cache_size: 0,
            ..accepting([token(1)])
        },
    );
    // An anonymous client whose address is spoofed: it never hears the answers.
    let spoofed = world.add("", AuthConfig::default());
    let link = world.connect(
        spoofed,
        server,
        datagram(1),
        ConnectOptions::to_anyone(Credential::Anonymous),
    );
    let hello = world.node(spoofed).sent_on(link.a_connection)[0].clone();
    world.net.kill(link, false);
    let attacker = world.add("attacker", AuthConfig::default());
    // Once, and twenty times: the second budget is larger, not the answer per byte.
    let once = world.raw_link(attacker, server, datagram(1));
    world.inject(attacker, once.a_connection, hello.clone());
    let repeated = world.raw_link(attacker, server, datagram(1));
    for _ in 0..20 {
        world.inject(attacker, repeated.a_connection, hello.clone());
    }
    // (A timer that could not send its ping would stall the simulation here.)
    world.run_for(Duration::from_secs(9));
    let node = world.node(server);
    for target in [once, repeated] {
        let sent = node
            .bytes_out
            .get(&target.b_connection)
            .copied()
            .unwrap_or(0);
        let received = node.bytes_in[&target.b_connection];
        assert!(sent > 0, "the hello was answered");
        assert!(sent <= received, "answered {sent} bytes to {received}");
    }
}
