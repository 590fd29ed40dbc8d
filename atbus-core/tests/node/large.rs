//! The largest message the engine allows by default (64 MiB) crosses every plain transport
//! intact, in both directions. (`tls://` and `quic://`: `secure.rs`.)

use std::time::Duration;

use atbus_core::engine::EngineConfig;
use atbus_core::runtime::{Message, Node};

use crate::support::*;

/// The default `max_message_size`.
const SIXTY_FOUR_MIB: usize = 64 << 20;

/// The next message within `seconds`.
async fn recv_within(node: &Node, seconds: u64) -> Message {
    tokio::time::timeout(Duration::from_secs(seconds), node.recv())
        .await
        .unwrap_or_else(|_| panic!("a message within {seconds} s"))
        .expect("the node is running")
}

/// Sends one 64 MiB message from the client to the server over `scheme`, and another back.
async fn crosses_intact(scheme: &str) {
    let config = EngineConfig::default();
    assert_eq!(config.max_message_size, SIXTY_FOUR_MIB);
    let (server, client) = pair_buffered(scheme, config, SIXTY_FOUR_MIB + 1024).await;
    let outbound = payload(64, SIXTY_FOUR_MIB);
    client
        .send("server", outbound.clone())
        .await
        .expect("send 64 MiB");
    let message = recv_within(&server, 120).await;
    assert_eq!(message.data.len(), outbound.len(), "{scheme}");
    assert!(message.data == outbound, "{scheme}: the message differs");
    drop(message);

    let inbound = payload(46, SIXTY_FOUR_MIB);
    server
        .send("client", inbound.clone())
        .await
        .expect("send 64 MiB back");
    let message = recv_within(&client, 120).await;
    assert!(message.data == inbound, "{scheme}: the reply differs");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_crosses_tcp_intact() {
    crosses_intact("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_crosses_udp_intact() {
    crosses_intact("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_crosses_unix_intact() {
    crosses_intact("unix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_crosses_mem_intact() {
    crosses_intact("mem").await;
}
