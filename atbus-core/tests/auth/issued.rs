//! Identities issued to clients on untrusted networks: `(name, stream_id, token)` checked as a
//! triple, the client held to its stream, and refused once revoked or expired.

use std::time::Duration;

use atbus_core::engine::{
    AuthConfig, AuthFailure, ConnectOptions, Credential, IdentityKind, IssuedIdentity, MessageMeta,
};
use atbus_core::sim::NodeIndex;
use atbus_proto::protocol::AtbusCloseReason;
use bytes::Bytes;

use crate::support::*;

/// A server that issued `device-7` on stream 7 for an hour, and the identity.
fn server_with_identity(world: &mut World) -> (NodeIndex, IssuedIdentity) {
    let server = world.add("server", AuthConfig::default());
    let now = world.net.now();
    let identity = world
        .node_mut(server)
        .endpoint
        .issue_identity(now, "device-7", 7, Duration::from_secs(3600))
        .expect("issue");
    (server, identity)
}

fn issued(identity: &IssuedIdentity, stream_id: i64) -> ConnectOptions {
    ConnectOptions::new(
        "server",
        Credential::Issued {
            stream_id,
            token: identity.token.clone(),
        },
    )
}

#[test]
fn a_client_with_an_issued_identity_is_accepted_then_refused_after_revocation() {
    let mut world = World::new(20);
    let (server, identity) = server_with_identity(&mut world);
    assert_eq!(
        (identity.name.as_str(), identity.stream_id),
        ("device-7", 7)
    );
    let client = world.add("device-7", AuthConfig::default());
    let link = world.connect(client, server, datagram(5), issued(&identity, 7));
    world.run_for(Duration::from_millis(30));
    assert_eq!(
        world
            .node(server)
            .authenticated(link.b_connection)
            .map(|a| a.0),
        Some("device-7".to_string())
    );
    assert!(matches!(
        world
            .node(server)
            .endpoint
            .peer_identity(link.b_connection)
            .map(|i| &i.kind),
        Some(IdentityKind::Issued { stream_id: 7, .. })
    ));
    world
        .node_mut(client)
        .endpoint
        .send("server", 7, Bytes::from("reading"), MessageMeta::default())
        .expect("send");
    world.net.poll_node(client);
    world.run_for(Duration::from_millis(30));
    assert_eq!(
        world.node(server).messages_from("device-7"),
        vec![Bytes::from("reading")]
    );

    // Revoked: the connection is refused at once, frames still arriving are not taken.
    let now = world.net.now();
    assert!(
        world
            .node_mut(server)
            .endpoint
            .revoke_identity(now, "device-7")
    );
    world.net.poll_node(server);
    world.inject(
        client,
        link.a_connection,
        data_frame(head("device-7", "server"), 7, b"after revocation"),
    );
    world.run_for(Duration::from_millis(30));
    assert_eq!(
        world.node(server).lost(link.b_connection),
        Some(AtbusCloseReason::Unauthorized as i32)
    );
    assert_eq!(
        world.node(client).lost(link.a_connection),
        Some(AtbusCloseReason::Unauthorized as i32)
    );
    assert_eq!(world.node(server).messages_from("device-7").len(), 1);

    // And its handshakes from now on, ticket or not.
    for resume in [true, false] {
        let again = world.connect(
            client,
            server,
            datagram(5),
            ConnectOptions {
                resume,
                ..issued(&identity, 7)
            },
        );
        world.run_for(Duration::from_millis(30));
        assert_eq!(
            world
                .node(server)
                .handshake_failure(again.b_connection)
                .map(|f| f.0),
            Some(AuthFailure::Revoked),
            "resume: {resume}"
        );
    }
}

#[test]
fn an_issued_identity_is_checked_as_the_exact_triple() {
    let mut world = World::new(21);
    let (server, identity) = server_with_identity(&mut world);
    // Wrong stream id, wrong name, wrong token.
    let cases = [
        ("device-7", issued(&identity, 8), AuthFailure::UnknownName),
        ("device-8", issued(&identity, 7), AuthFailure::UnknownName),
        (
            "device-7",
            ConnectOptions::new(
                "server",
                Credential::Issued {
                    stream_id: 7,
                    token: token(3),
                },
            ),
            AuthFailure::BadProof,
        ),
    ];
    for (name, options, failure) in cases {
        let client = world.add(name, AuthConfig::default());
        let link = world.connect(client, server, stream(1), options);
        world.run_for(Duration::from_millis(10));
        assert_eq!(
            world
                .node(server)
                .handshake_failure(link.b_connection)
                .map(|f| f.0),
            Some(failure),
            "{name}"
        );
    }
    assert_eq!(world.node(server).endpoint.connection_count(), 0);
}

#[test]
fn an_issued_identity_may_send_only_on_its_stream_and_not_after_it_expires() {
    let mut world = World::new(22);
    let server = world.add("server", AuthConfig::default());
    let now = world.net.now();
    let identity = world
        .node_mut(server)
        .endpoint
        .issue_identity(now, "sensor", 3, Duration::from_secs(60))
        .expect("issue");
    let client = world.add("sensor", AuthConfig::default());
    let first = world.connect(client, server, stream(1), issued_as(&identity));
    world.run_for(Duration::from_millis(10));
    assert!(
        world
            .node(server)
            .authenticated(first.b_connection)
            .is_some()
    );
    world
        .node_mut(client)
        .endpoint
        .send(
            "server",
            4,
            Bytes::from("elsewhere"),
            MessageMeta::default(),
        )
        .expect("send");
    world.net.poll_node(client);
    world.run_for(Duration::from_millis(10));
    assert_eq!(
        world
            .node(server)
            .endpoint
            .stats()
            .auth_failures(AuthFailure::StreamNotAllowed),
        1
    );
    assert!(world.node(server).received.is_empty());

    // Expiry takes effect on the next frame (a fresh client: the first still holds the message
    // for stream 4).
    let client = world.add("sensor", AuthConfig::default());
    let link = world.connect(client, server, stream(1), issued_as(&identity));
    world.run_for(Duration::from_millis(10));
    assert!(
        world
            .node(server)
            .authenticated(link.b_connection)
            .is_some()
    );
    world.run_for(Duration::from_secs(61));
    world.inject(
        client,
        link.a_connection,
        data_frame(head("sensor", "server"), 3, b"late"),
    );
    world.run_for(Duration::from_millis(10));
    assert_eq!(
        world
            .node(server)
            .endpoint
            .stats()
            .auth_failures(AuthFailure::Revoked),
        1
    );
    assert!(world.node(server).received.is_empty());
}

fn issued_as(identity: &IssuedIdentity) -> ConnectOptions {
    ConnectOptions {
        resume: false,
        ..ConnectOptions::new(
            "server",
            Credential::Issued {
                stream_id: identity.stream_id,
                token: identity.token.clone(),
            },
        )
    }
}
