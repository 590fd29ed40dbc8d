//! Backpressure: a full send window makes `try_send` return WouldBlock and `send` wait, and a
//! receiver that reads slowly never makes the sender hold more than its window.

use std::time::Duration;

use atbus_core::engine::EngineConfig;
use atbus_core::runtime::NodeError;

use crate::support::*;

fn small_windows() -> EngineConfig {
    EngineConfig {
        stream_send_window: 256 * 1024,
        peer_send_window: 512 * 1024,
        initial_window: 128 * 1024,
        stream_receive_window: 256 * 1024 + 64 * 1024,
        peer_receive_budget: 2 * 1024 * 1024,
        max_message_size: 256 * 1024,
        ..EngineConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_makes_try_send_would_block_and_send_wait() {
    // The server holds 64 KiB for its application, which does not read yet: the engine's
    // windows fill, then the client's.
    let (server, client) = pair_buffered("tcp", small_windows(), 64 * 1024).await;
    let mut queued = 0;
    let blocked = loop {
        match client.try_send("server", payload(queued, 64 * 1024)) {
            Ok(()) => queued += 1,
            Err(error) => break error,
        }
        assert!(queued < 100, "the window never filled");
    };
    assert!(matches!(blocked, NodeError::WouldBlock { .. }), "{blocked}");
    // The async send waits for room, then goes.
    let sender = client.clone();
    let last = tokio::spawn(async move { sender.send("server", payload(999, 64 * 1024)).await });
    for index in 0..queued {
        assert!(recv(&server).await.data == payload(index, 64 * 1024));
    }
    last.await.expect("task").expect("sent once there was room");
    assert!(recv(&server).await.data == payload(999, 64 * 1024));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_grows_the_senders_memory_past_its_window() {
    let config = small_windows();
    let bound = config.peer_send_window as usize + config.max_message_size;
    let buffer = 128 * 1024;
    let receiver_bound = config.peer_receive_budget + buffer + config.max_message_size;
    let (server, client) = pair_buffered("tcp", config, buffer).await;
    let count = 120;
    let sender = client.clone();
    let sending = tokio::spawn(async move {
        for index in 0..count {
            sender
                .send("server", payload(index, 32 * 1024))
                .await
                .expect("send");
        }
    });
    let mut highest = 0;
    let mut highest_receiver = 0;
    for index in 0..count {
        highest = highest.max(client.memory());
        highest_receiver = highest_receiver.max(server.memory());
        if index % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let message = recv(&server).await;
        assert!(message.data == payload(index, 32 * 1024), "message {index}");
    }
    sending.await.expect("sender");
    assert!(highest > 0, "the sender held data at some point");
    assert!(
        highest <= bound,
        "the sender held {highest} bytes, over its window of {bound}"
    );
    assert!(
        highest_receiver <= receiver_bound,
        "the receiver held {highest_receiver} bytes, over {receiver_bound}"
    );
    client.shutdown().await;
    server.shutdown().await;
}
