//! Messages and requests over every stream transport.

use std::time::Duration;

use atbus_core::engine::{AuthFailure, EngineConfig, Token};
use atbus_core::runtime::{Node, NodeError, NodeEvent};
use bytes::Bytes;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order_and_intact_over_tcp_udp_unix_and_mem() {
    for scheme in ["tcp", "udp", "unix", "mem"] {
        let (server, client) = pair(scheme, EngineConfig::default()).await;
        let sizes = [0, 1, 64, 1500, 70_000, 1 << 20];
        for (index, size) in sizes.iter().enumerate() {
            client
                .send("server", payload(index, *size))
                .await
                .expect("send");
        }
        for (index, size) in sizes.iter().enumerate() {
            let message = recv(&server).await;
            assert_eq!(message.source, "client", "{scheme}");
            assert_eq!(message.data.len(), *size, "{scheme}: message {index}");
            assert!(
                message.data == payload(index, *size),
                "{scheme}: message {index} differs"
            );
        }
        // And back.
        server.send("client", "pong").await.expect("send back");
        assert_eq!(recv(&client).await.data, Bytes::from("pong"), "{scheme}");
        client.shutdown().await;
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixteen_mebibyte_message_crosses_tcp_intact() {
    let (server, client) = pair("tcp", EngineConfig::default()).await;
    let big = payload(7, 16 << 20);
    client.send("server", big.clone()).await.expect("send");
    let message = recv(&server).await;
    assert_eq!(message.data.len(), big.len());
    assert!(message.data == big, "the message differs");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_reply() {
    let (server, client) = pair("tcp", EngineConfig::default()).await;
    let responder = server.clone();
    tokio::spawn(async move {
        while let Some(request) = responder.recv().await {
            let mut answer = b"re: ".to_vec();
            answer.extend_from_slice(&request.data);
            responder.reply(&request, answer).await.expect("reply");
        }
    });
    let mut asks = Vec::new();
    for index in 0..50 {
        let client = client.clone();
        asks.push(tokio::spawn(async move {
            let question = format!("question {index}");
            let reply = client
                .request("server", question.clone(), Duration::from_secs(10))
                .await
                .expect("a reply");
            assert_eq!(reply.data, Bytes::from(format!("re: {question}")));
            assert_eq!(reply.source, "server");
        }));
    }
    for ask in asks {
        ask.await.expect("request task");
    }
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_times_out() {
    let (server, client) = pair("mem", EngineConfig::default()).await;
    let error = client
        .request("server", "anyone?", Duration::from_millis(200))
        .await
        .expect_err("no reply");
    assert!(matches!(error, NodeError::Timeout { .. }), "{error}");
    // The request itself arrived; it simply was not answered.
    assert_eq!(recv(&server).await.request_id(), Some(1));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_token_is_refused_and_delivers_nothing() {
    let server = Node::builder()
        .name("server")
        .token(token())
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .expect("server");
    let mut server_events = server.events();
    let client = Node::builder()
        .name("intruder")
        .token(Token::new("not the shared token at all").expect("token"))
        .peer("server", [server.local_addresses()[0].to_string()])
        .start()
        .await
        .expect("client");
    client.try_send("server", "let me in").expect("queued");
    let failure = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(NodeEvent::HandshakeFailed { failure, .. }) = server_events.recv().await {
                return failure;
            }
        }
    })
    .await
    .expect("a refusal");
    assert_eq!(failure, AuthFailure::BadProof);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.recv())
            .await
            .is_err(),
        "nothing is delivered"
    );
    client.shutdown_within(Duration::from_millis(100)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_addresses_and_missing_names_are_clear_errors() {
    let error = Node::builder()
        .name("x")
        .listen("tcp://127.0.0.1")
        .start()
        .await
        .expect_err("no port");
    assert!(error.to_string().contains("no port"), "{error}");
    let error = Node::builder().start().await.expect_err("no name");
    assert!(error.to_string().contains("name"), "{error}");
    let error = Node::builder()
        .name("x")
        .peer("y", ["tcp://127.0.0.1:1"])
        .start()
        .await
        .expect_err("no token");
    assert!(error.to_string().contains("token"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_file_is_removed_on_shutdown_and_a_stale_one_replaced() {
    let path = std::env::temp_dir().join(unique("atbus-stale"));
    // A file left by a process that died: nothing listens on it.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    assert!(path.exists());
    let address = format!("unix://{}", path.display());
    let node = Node::builder()
        .name("server")
        .token(token())
        .listen(address.clone())
        .start()
        .await
        .expect("the stale socket is replaced");
    // A live listener is not stolen.
    let error = Node::builder()
        .name("other")
        .listen(address)
        .start()
        .await
        .expect_err("the socket is live");
    assert!(error.to_string().contains("live listener"), "{error}");
    node.shutdown().await;
    drop(node);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!path.exists(), "the socket file outlived its node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_handle_keeps_its_own_order_and_its_end_reaches_the_peer() {
    let (server, client) = pair("tcp", EngineConfig::default()).await;
    let mut events = server.events();
    let orders = client.stream("server", 5).expect("stream 5");
    let audit = client.stream("server", 6).expect("stream 6");
    for index in 0..20 {
        orders.send(format!("order {index}")).await.expect("send");
        audit.try_send(format!("audit {index}")).expect("room");
    }
    orders.finish("all orders sent").expect("finish");
    let (mut on_5, mut on_6) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let message = recv(&server).await;
        match message.stream_id {
            5 => on_5.push(message.data),
            6 => on_6.push(message.data),
            other => panic!("a message on stream {other}"),
        }
    }
    let expected = |prefix: &str| -> Vec<Bytes> {
        (0..20)
            .map(|i| Bytes::from(format!("{prefix} {i}")))
            .collect()
    };
    assert_eq!(on_5, expected("order"));
    assert_eq!(on_6, expected("audit"));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(NodeEvent::StreamClosed {
                stream_id, reason, ..
            }) = events.recv().await
            {
                return (stream_id, reason);
            }
        }
    })
    .await
    .expect("the end of stream 5");
    assert_eq!(closed, (5, "all orders sent".to_string()));
    assert!(
        client.stream("server", -1).is_err(),
        "negative ids are the bus's"
    );
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_from_yaml_files() {
    let dir = std::env::temp_dir().join(unique("atbus-yaml"));
    std::fs::create_dir_all(&dir).expect("dir");
    let server_file = dir.join("server.yml");
    std::fs::write(
        &server_file,
        "name: server\ntokens: [\"the runtime tests' shared token\"]\nlisten: [\"tcp://127.0.0.1:0\"]\n",
    )
    .expect("write");
    let server = atbus_core::runtime::NodeConfig::from_file(&server_file)
        .expect("server config")
        .builder()
        .expect("builder")
        .start()
        .await
        .expect("server");
    let client_file = dir.join("client.yml");
    std::fs::write(
        &client_file,
        format!(
            "name: client\ntokens: [\"the runtime tests' shared token\"]\npeers:\n  - name: server\n    addresses: [\"{}\"]\n",
            server.local_addresses()[0]
        ),
    )
    .expect("write");
    let client = atbus_core::runtime::NodeConfig::from_file(&client_file)
        .expect("client config")
        .builder()
        .expect("builder")
        .start()
        .await
        .expect("client");
    client.send("server", "from yaml").await.expect("send");
    assert_eq!(&recv(&server).await.data[..], b"from yaml");
    let missing =
        atbus_core::runtime::NodeConfig::from_file(dir.join("nope.yml")).expect_err("no file");
    assert!(missing.to_string().contains("nope.yml"), "{missing}");
    client.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
