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

/// A UDP relay between one client and `target` that can be made to drop everything: a path
/// that dies silently, as a partition does.
struct UdpBlackhole {
    address: String,
    dropping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpBlackhole {
    async fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let target: std::net::SocketAddr = target
            .strip_prefix("udp://")
            .expect("a udp address")
            .parse()
            .expect("ip:port");
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        back.connect(target).await.expect("connect");
        let address = format!("udp://{}", front.local_addr().expect("address"));
        let dropping = std::sync::Arc::new(AtomicBool::new(false));
        let drop_flag = dropping.clone();
        let task = tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    Ok((len, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        if !drop_flag.load(Ordering::Relaxed) {
                            let _ = back.send(&up[..len]).await;
                        }
                    }
                    Ok(len) = back.recv(&mut down) => {
                        if let (Some(client), false) = (client, drop_flag.load(Ordering::Relaxed)) {
                            let _ = front.send_to(&down[..len], client).await;
                        }
                    }
                }
            }
        });
        Self {
            address,
            dropping,
            task,
        }
    }

    fn blackhole(&self) {
        self.dropping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpBlackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client with one TCP connection (through a proxy that can cut it) and one UDP connection
/// (through a relay that can silence it) sends `count` messages; `kill` ends one of the two
/// paths a third of the way through. Every message must arrive once, in order.
async fn one_of_tcp_and_udp_dies_mid_transfer(kill_udp: bool) {
    let engine = EngineConfig {
        // A silenced path is found dead in a second, not the default 30.
        keep_alive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let server = Node::builder()
        .name("server")
        .token(token())
        .engine(engine.clone())
        .listen("tcp://127.0.0.1:0")
        .listen("udp://127.0.0.1:0")
        .start()
        .await
        .expect("server");
    let tcp = Proxy::start(server.local_addresses()[0].to_string()).await;
    let udp = UdpBlackhole::start(&server.local_addresses()[1].to_string()).await;
    let client = Node::builder()
        .name("client")
        .token(token())
        .engine(engine)
        // Dead paths are not redialed within the test.
        .reconnect_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .peer("server", [tcp.address.clone(), udp.address.clone()])
        .start()
        .await
        .expect("client");
    // Both connections up before the transfer, so that either may carry it.
    for _ in 0..100 {
        if client.connections().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.connections().len(), 2, "tcp and udp connected");
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
            match kill_udp {
                true => udp.blackhole(),
                false => tcp.cut(),
            }
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
    let stats = client.stats();
    eprintln!("kill_udp={kill_udp}: {stats:?}");
    assert!(stats.connections_lost >= 1, "the path died during the test");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silencing_the_udp_path_of_a_tcp_and_udp_pair_mid_transfer_loses_no_message() {
    one_of_tcp_and_udp_dies_mid_transfer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_tcp_path_of_a_tcp_and_udp_pair_mid_transfer_loses_no_message() {
    one_of_tcp_and_udp_dies_mid_transfer(false).await;
}
