//! A node that restarts behind the relay (same name, new instance) is reached again by a peer
//! that knew its previous instance: the peer's streams to it start over (protocol.md 5.9,
//! *restarts behind a relay*), including when the peer only ever sends to it.

use std::time::Duration;

use atbus_relay::Relay;

mod support;

use support::{node, recv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_behind_the_relay_gets_what_a_one_way_sender_sends_next() {
    let relay = Relay::builder()
        .name("relay")
        .listen("tcp://127.0.0.1:0")
        .token(support::token())
        .start()
        .await
        .expect("relay");
    let address = relay.local_addresses()[0].to_string();
    let sender = node("sender", &address).await;

    let first = node("receiver", &address).await;
    for i in 0..10 {
        sender.send("receiver", format!("first {i}")).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(recv(&first).await.data, format!("first {i}").as_bytes());
    }
    first.shutdown_within(Duration::from_millis(200)).await;

    // A new instance under the same name; the sender never heard from it, and only sends.
    let second = node("receiver", &address).await;
    for i in 0..10 {
        sender
            .send("receiver", format!("second {i}"))
            .await
            .unwrap();
    }
    for i in 0..10 {
        let message = recv(&second).await;
        assert_eq!(message.source, "sender");
        assert_eq!(
            message.data,
            format!("second {i}").as_bytes(),
            "message {i}"
        );
    }
    assert_eq!(
        sender.stats().peer_restarts,
        1,
        "the sender noticed the restart"
    );

    // And the new instance's requests are answered.
    let answering = sender.clone();
    tokio::spawn(async move {
        while let Some(request) = answering.recv().await {
            let _ = answering.reply(&request, "answer").await;
        }
    });
    let reply = second
        .request("sender", "question", Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(&reply.data[..], b"answer");
}
