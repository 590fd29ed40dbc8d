//! Peers known from the start, added later, or dialed only when first needed; what a node says
//! about itself and its connections.

use std::time::Duration;

use atbus_core::engine::EngineConfig;
use atbus_core::runtime::{Node, NodeError};

use crate::support::*;

async fn server(scheme: &str) -> Node {
    Node::builder()
        .name("server")
        .token(token())
        .listen(listen_address(scheme))
        .start()
        .await
        .expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_demand_is_dialed_at_the_first_send_and_gets_the_message() {
    let server = server("tcp").await;
    let client = Node::builder()
        .name("client")
        .token(token())
        .peer_on_demand("server", [server.local_addresses()[0].to_string()])
        .start()
        .await
        .expect("client");
    // Nothing is dialed before the application needs the peer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        client.connections().is_empty(),
        "{:?}",
        client.connections()
    );
    assert_eq!(client.peers_waiting_for_demand(), ["server"]);

    client.send("server", "first").await.expect("send");
    assert_eq!(&recv(&server).await.data[..], b"first");
    assert_eq!(client.connections().len(), 1);
    assert!(client.peers_waiting_for_demand().is_empty());
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_to_a_running_node_is_connected_and_bad_peers_are_refused() {
    let server = server("udp").await;
    let client = Node::builder()
        .name("client")
        .token(token())
        .start()
        .await
        .expect("client");
    client
        .add_peer("server", [server.local_addresses()[0].to_string()])
        .expect("add");
    client.send("server", "hello").await.expect("send");
    assert_eq!(&recv(&server).await.data[..], b"hello");

    let unparsable = client.add_peer("other", ["udp://nowhere"]).unwrap_err();
    assert!(matches!(unparsable, NodeError::Address(_)), "{unparsable}");
    let untrusted = client
        .add_peer_on_demand("other", ["tls://127.0.0.1:1"])
        .unwrap_err();
    assert!(untrusted.to_string().contains("CA"), "{untrusted}");

    let listener_only = Node::builder()
        .name("quiet")
        .start()
        .await
        .expect("a node with no token");
    let no_token = listener_only
        .add_peer("server", ["tcp://127.0.0.1:1"])
        .unwrap_err();
    assert!(no_token.to_string().contains("token"), "{no_token}");
    listener_only.shutdown().await;
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reports_its_metadata_its_connections_round_trip_times_and_its_traffic() {
    let server = server("udp").await;
    let client = Node::builder()
        .name("client")
        .namespace("shop")
        .label("app", "orders")
        .annotation("atbus.io/owner", "team blue")
        .token(token())
        .engine(EngineConfig {
            keep_alive_interval: Duration::from_millis(50),
            ..EngineConfig::default()
        })
        .peer("server", [server.local_addresses()[0].to_string()])
        .start()
        .await
        .expect("client");
    assert_eq!(client.metadata().namespace, "shop");
    assert_eq!(client.metadata().labels["app"], "orders");
    assert_eq!(client.metadata().annotations["atbus.io/owner"], "team blue");
    assert_eq!(server.metadata().namespace, "default");

    client.send("server", "x").await.expect("send");
    recv(&server).await;
    let mut info = client.connection_info();
    for _ in 0..50 {
        if info.first().is_some_and(|c| c.rtt.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        info = client.connection_info();
    }
    let connection = &info[0];
    assert_eq!(connection.peer.as_deref(), Some("server"));
    let rtt = connection
        .rtt
        .expect("measured by pings and acknowledgements");
    assert!(rtt < Duration::from_secs(1), "{rtt:?} on loopback");
    let (window, _) = connection.congestion_window.expect("udp has one");
    assert!(window > 0);
    let traffic = client.traffic();
    let udp = traffic["udp"];
    assert_eq!((udp.connections_opened, udp.connections_closed), (1, 0));
    assert!(udp.bytes_sent > 1 && udp.bytes_received > 0, "{udp:?}");
    assert!(udp.transmits_sent >= 1, "{udp:?}");
    assert_eq!(traffic.len(), 1, "{traffic:?}");

    let bad = Node::builder()
        .name("bad")
        .label("tier", "front end")
        .start()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("labels[\"tier\"]"), "{bad}");
    client.shutdown().await;
    server.shutdown().await;
}
