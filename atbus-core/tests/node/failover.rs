//! Connections that die: the engine resends over the peer's other connection, the runtime
//! reconnects to a restarted peer, and shutdown delivers what was sent before it.

use std::time::Duration;

use atbus_core::engine::EngineConfig;
use atbus_core::runtime::Node;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_one_of_two_connections_mid_transfer_loses_no_message() {
    let server = Node::builder()
        .name("server")
        .token(token())
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .expect("server");
    let target = server.local_addresses()[0].to_string();
    let (first, second) = (
        Proxy::start(target.clone()).await,
        Proxy::start(target).await,
    );
    let client = Node::builder()
        .name("client")
        .token(token())
        .peer("server", [first.address.clone(), second.address.clone()])
        .start()
        .await
        .expect("client");
    let count = 3000;
    let sender = client.clone();
    let sending = tokio::spawn(async move {
        for index in 0..count {
            sender
                .send("server", payload(index, 4096))
                .await
                .expect("send");
        }
    });
    for index in 0..count {
        if index == count / 3 {
            first.cut();
        }
        let message = recv(&server).await;
        assert!(
            message.data == payload(index, 4096),
            "message {index} lost or out of order"
        );
    }
    sending.await.expect("sender");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), server.recv())
            .await
            .is_err(),
        "a message arrived twice"
    );
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected_and_gets_what_was_queued_meanwhile() {
    let first = Node::builder()
        .name("server")
        .token(token())
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .expect("server");
    let address = first.local_addresses()[0].to_string();
    let client = Node::builder()
        .name("client")
        .token(token())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .peer("server", [address.clone()])
        .start()
        .await
        .expect("client");
    client.send("server", "before").await.expect("send");
    assert_eq!(&recv(&first).await.data[..], b"before");
    first.shutdown().await;
    drop(first);

    // Queued while the peer is away.
    client.send("server", "meanwhile").await.expect("queued");
    let second = Node::builder()
        .name("server")
        .token(token())
        .listen(address)
        .start()
        .await
        .expect("the server comes back on the same port");
    // The new server starts from empty stream state: what the old one acknowledged is not sent
    // again, what was queued arrives.
    let message = recv(&second).await;
    assert_eq!(&message.data[..], b"meanwhile");
    client.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_everything_sent_before_it() {
    let (server, client) = pair("unix", EngineConfig::default()).await;
    for index in 0..500 {
        client
            .send("server", payload(index, 1000))
            .await
            .expect("send");
    }
    client.shutdown().await;
    for index in 0..500 {
        assert!(
            recv(&server).await.data == payload(index, 1000),
            "message {index}"
        );
    }
    server.shutdown().await;
    assert!(
        server.recv().await.is_none(),
        "a shut-down node yields no messages"
    );
}
