//! Resumption: a ticket from a 1-RTT handshake lets the next connection go 0-RTT without the
//! long-term token in its proof; a ticket dies with the token it was obtained with.

use std::time::Duration;

use atbus_core::engine::{AuthConfig, AuthFailure, ConnectOptions, Credential, MessageMeta};
use atbus_proto::handshake::{AtbusAuthMode, HandshakeMessage, handshake_message::Body as Hs};
use atbus_proto::protocol::PacketContent;
use atbus_proto::protocol::frame_message::Body;
use bytes::Bytes;
use prost::Message;

use crate::support::*;

/// The auth mode of the hello in a first flight.
fn hello_mode(first_flight: &[u8]) -> AtbusAuthMode {
    let frame = frames_of(first_flight).remove(0);
    let Some(Body::Packet(packet)) = frame.body else {
        panic!("the first frame is a packet");
    };
    let content = PacketContent::decode(packet.content).expect("content");
    let message = HandshakeMessage::decode(content.fragment[0].data.clone()).expect("handshake");
    let Some(Hs::Hello(hello)) = message.body else {
        panic!("the first message is a hello");
    };
    AtbusAuthMode::try_from(hello.mode).expect("a mode")
}

#[test]
fn a_ticket_lets_the_next_connection_go_0rtt_without_the_token() {
    let mut world = World::new(8);
    let shared = token(6);
    let server = world.add("server", accepting([shared.clone()]));
    let client = world.add("client", AuthConfig::default());
    let first = world.connect(
        client,
        server,
        datagram(10),
        ConnectOptions {
            early_data: false,
            ..ConnectOptions::new("server", Credential::Token(shared.clone()))
        },
    );
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        hello_mode(&world.node(client).sent_on(first.a_connection)[0]),
        AtbusAuthMode::Token
    );
    world.net.kill(first, true);
    world.run_for(Duration::from_millis(10));

    world
        .node_mut(client)
        .endpoint
        .send("server", 1, Bytes::from("resumed"), MessageMeta::default())
        .expect("send");
    let second = world.connect(
        client,
        server,
        datagram(10),
        ConnectOptions::new("server", Credential::Token(shared)),
    );
    assert_eq!(
        hello_mode(&world.node(client).sent_on(second.a_connection)[0]),
        AtbusAuthMode::Ticket
    );
    world.run_for(Duration::from_millis(10));
    // Delivered with the first flight: 0-RTT on the ticket.
    assert_eq!(
        world.node(server).messages_from("client"),
        vec![Bytes::from("resumed")]
    );
    assert_eq!(
        world.node(server).authenticated(second.b_connection),
        Some(("client".to_string(), true, true))
    );
    let identity = world
        .node(server)
        .endpoint
        .peer_identity(second.b_connection)
        .expect("identity");
    assert!(identity.resumed);
}

#[test]
fn a_ticket_dies_with_its_token_and_the_client_falls_back_to_the_token() {
    let mut world = World::new(9);
    let (old, new) = (token(1), token(2));
    // Two servers sharing a ticket key stand for one server restarted with a new token list.
    let key = token(0x77);
    let server = world.add(
        "server",
        AuthConfig {
            ticket_key: Some(key.clone()),
            ..accepting([old.clone()])
        },
    );
    let client = world.add("client", AuthConfig::default());
    let first = world.connect(
        client,
        server,
        stream(5),
        ConnectOptions::new("server", Credential::Token(old.clone())),
    );
    world.run_for(Duration::from_millis(50));
    assert!(
        world
            .node(client)
            .authenticated(first.a_connection)
            .is_some()
    );

    let rotated = world.add(
        "server",
        AuthConfig {
            ticket_key: Some(key),
            ..accepting([new.clone()])
        },
    );
    // The client still holds the old token's ticket: it is refused, and forgotten.
    let refused = world.connect(
        client,
        rotated,
        stream(5),
        ConnectOptions::new("server", Credential::Token(old)),
    );
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        world
            .node(rotated)
            .handshake_failure(refused.b_connection)
            .map(|f| f.0),
        Some(AuthFailure::BadTicket)
    );
    assert_eq!(
        world
            .node(client)
            .handshake_failure(refused.a_connection)
            .map(|f| f.0),
        Some(AuthFailure::RefusedByPeer)
    );
    // With the new token the client proves itself again (not resumed). The rotated server is
    // another instance than the one the client knew as "server": it takes the client's early
    // data only after a confirm, once the client has started its streams over.
    let fresh = world.connect(
        client,
        rotated,
        stream(5),
        ConnectOptions::new("server", Credential::Token(new)),
    );
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        world.node(rotated).authenticated(fresh.b_connection),
        Some(("client".to_string(), false, false))
    );
}
