//! The relay end to end on loopback: nodes reaching each other through an embedded relay and
//! through the `atbus-relay` binary in its own process, requests and replies, an unknown
//! destination, the development token, `check-config`, and a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atbus_core::engine::{SendError, Token};
use atbus_core::runtime::{Message, Node, NodeError};
use atbus_relay::Relay;
use bytes::Bytes;

mod support;

use support::{TOKEN, node, recv, token};

/// `echo` answers every request with its bytes reversed.
fn serve_reversed(echo: Node) {
    tokio::spawn(async move {
        while let Some(request) = echo.recv().await {
            let mut reply = request.data.to_vec();
            reply.reverse();
            let _ = echo.reply(&request, reply).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_reach_each_other_through_an_embedded_relay() {
    let relay = Relay::builder()
        .listen("tcp://127.0.0.1:0")
        .listen("udp://127.0.0.1:0")
        .token(token())
        .start()
        .await
        .expect("relay");
    let tcp = relay.local_addresses()[0].to_string();
    let udp = relay.local_addresses()[1].to_string();
    // One node on each transport: the relay joins them.
    let alice = node("alice", &tcp).await;
    let bob = node("bob", &udp).await;
    for index in 0..500u32 {
        alice
            .send("bob", Bytes::from(index.to_le_bytes().repeat(100)))
            .await
            .expect("send");
    }
    for index in 0..500u32 {
        let message = recv(&bob).await;
        assert_eq!(message.source, "alice");
        assert!(
            message.data == index.to_le_bytes().repeat(100),
            "message {index} lost, repeated or out of order"
        );
    }
    serve_reversed(bob.clone());
    let reply = alice
        .request("bob", "stressed", Duration::from_secs(5))
        .await
        .expect("a reply through the relay");
    assert_eq!(&reply.data[..], b"desserts");
    let stats = relay.stats();
    assert!(stats.frames_forwarded > 0, "{stats:?}");
    // alice's first frames were cut for tcp (64 KiB) and too large for bob's udp connection
    // (16 KiB on loopback): the relay told alice the size, and the rest fit.
    let too_large = stats.forward_dropped.get("too_large").copied().unwrap_or(0);
    assert!(too_large <= 10, "{stats:?}");
    assert_eq!(
        stats.forward_dropped.len(),
        usize::from(too_large > 0),
        "{stats:?}"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_node_the_relay_does_not_know_fails_with_no_route() {
    let relay = Relay::builder()
        .listen("tcp://127.0.0.1:0")
        .token(token())
        .start()
        .await
        .expect("relay");
    let alice = node("alice", &relay.local_addresses()[0].to_string()).await;
    let error = alice
        .request("nobody", "hello?", Duration::from_secs(5))
        .await
        .expect_err("nobody answers");
    assert!(
        matches!(&error, NodeError::Send(SendError::NoRoute { peer }) if peer == "nobody"),
        "{error}"
    );
    assert!(error.to_string().contains("no route to nobody"), "{error}");
    assert_eq!(relay.stats().forward_dropped.get("no_route"), Some(&1));
    alice.shutdown().await;
    relay.shutdown().await;
}

/// The relay binary in its own process, listening where `listen` says.
struct RelayProcess {
    child: Child,
    addresses: Vec<String>,
    /// Its admin HTTP address.
    admin: Option<std::net::SocketAddr>,
    /// What the relay wrote to stderr so far, line by line (a thread drains the pipe, so that
    /// a chatty relay never blocks on it).
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProcess {
    fn start(listen: &str, token: Option<&str>) -> Self {
        Self::start_named("relay", listen, token)
    }

    fn start_named(name: &str, listen: &str, token: Option<&str>) -> Self {
        Self::start_with(name, listen, token, &[])
    }

    fn start_with(name: &str, listen: &str, token: Option<&str>, peers: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atbus-relay"));
        command
            .env("ATBUS_RELAY_NAME", name)
            .env("ATBUS_RELAY_PEERS", peers.join(","))
            .env("ATBUS_RELAY_ADMIN", "127.0.0.1:0")
            .env("ATBUS_RELAY_LISTEN", listen)
            .env_remove("ATBUS_RELAY_TOKEN")
            .env_remove("ATBUS_RELAY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("ATBUS_RELAY_TOKEN", token);
        }
        let mut child = command.spawn().expect("the relay binary runs");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let pipe = BufReader::new(child.stderr.take().expect("stderr"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
        // Its addresses, then the admin line; stdout is then drained by a thread (a closed pipe
        // would make the relay's next print fail).
        let expected = listen.split(',').count();
        let mut lines = stdout.lines();
        let mut addresses = Vec::new();
        let mut admin = None;
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix("listening on ") {
                addresses.push(address.to_string());
            } else if let Some(address) = line.strip_prefix("admin on http://") {
                admin = address.parse().ok();
            }
            if addresses.len() == expected && admin.is_some() {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        assert_eq!(addresses.len(), expected, "the relay printed its addresses");
        Self {
            child,
            addresses,
            admin,
            stderr,
        }
    }

    /// SIGKILL: the process vanishes without a word.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the exit status within 10 s.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the relay did not stop within 10 s of SIGTERM");
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_through_the_relay_binary_which_stops_gracefully_on_sigterm() {
    let relay = RelayProcess::start("tcp://127.0.0.1:0,udp://127.0.0.1:0", Some(TOKEN));
    let alice = node("alice", &relay.addresses[0]).await;
    let bob = node("bob", &relay.addresses[1]).await;
    serve_reversed(bob.clone());
    let reply = alice
        .request("bob", "live", Duration::from_secs(10))
        .await
        .expect("a reply through the relay process");
    assert_eq!(&reply.data[..], b"evil");
    let admin = relay.admin.expect("the binary serves its admin side");
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let mut events = alice.events();
    let status = relay.terminate();
    assert!(status.success(), "{status}");
    // The relay told alice it was going (SHUTDOWN) rather than vanishing.
    let lost = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(atbus_core::runtime::NodeEvent::ConnectionLost { reason, .. }) => break reason,
                Ok(_) => continue,
                Err(error) => panic!("events: {error}"),
            }
        }
    })
    .await
    .expect("alice saw the relay go");
    assert!(lost.contains("shuts down"), "{lost}");
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_binary_makes_up_a_development_token_and_prints_it_once() {
    let relay = RelayProcess::start("tcp://127.0.0.1:0", None);
    let mut printed = None;
    let mut warning = String::new();
    for _ in 0..100 {
        let lines = relay.stderr.lock().expect("lines").clone();
        warning = lines.join("\n");
        printed = lines
            .iter()
            .find_map(|line| line.trim().strip_prefix("ATBUS_TOKEN=").map(str::to_string));
        if printed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        warning.matches("ATBUS_TOKEN=").count(),
        1,
        "printed once:\n{warning}"
    );
    assert!(warning.contains("WARNING"), "{warning}");
    let printed = printed.expect("the token is printed");
    assert_eq!(printed.len(), 64, "32 random bytes in hex");
    // A node proving that token gets through; one with another token does not.
    let good = Node::builder()
        .name("good")
        .token(Token::new(&printed).expect("token"))
        .relay(&relay.addresses[0])
        .start()
        .await
        .expect("node");
    let mut connected = false;
    for _ in 0..100 {
        if good
            .connection_info()
            .iter()
            .any(|c| c.peer.as_deref() == Some("relay"))
        {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connected, "the development token is accepted");
    good.shutdown().await;
}

#[test]
fn check_config_accepts_the_example_and_names_the_bad_field_of_a_broken_file() {
    let binary = env!("CARGO_BIN_EXE_atbus-relay");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.yml");
    let ok = Command::new(binary)
        .args(["check-config", example])
        .output()
        .expect("runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = std::env::temp_dir().join(format!("atbus-relay-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let broken = dir.join("relay.yml");
    std::fs::write(
        &broken,
        "listen:\n  - tcp://127.0.0.1:7800\n  - udp://127.0.0.1\n",
    )
    .expect("write");
    let bad = Command::new(binary)
        .args(["check-config"])
        .arg(&broken)
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("listen[1]"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_explains_every_option() {
    let help = Command::new(env!("CARGO_BIN_EXE_atbus-relay"))
        .arg("--help")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--config",
        "--listen",
        "--name",
        "--token",
        "--drain-seconds",
        "ATBUS_RELAY_LISTEN",
        "check-config",
    ] {
        assert!(text.contains(option), "--help lacks {option}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_relay_mid_stream_moves_both_nodes_to_the_other_and_loses_nothing() {
    let first = RelayProcess::start_named("relay-1", "tcp://127.0.0.1:0", Some(TOKEN));
    let second = RelayProcess::start_named("relay-2", "tcp://127.0.0.1:0", Some(TOKEN));
    // Small windows: the sender cannot run far ahead of what bob has read, so data is in flight
    // through relay-1 when it dies (with the default 64 MiB, all 3 MB could be delivered first).
    let engine = atbus_core::engine::EngineConfig {
        max_message_size: 16 * 1024,
        stream_receive_window: 64 * 1024,
        initial_window: 64 * 1024,
        ..Default::default()
    };
    let both = |name: &'static str| {
        Node::builder()
            .name(name)
            .token(token())
            .relay(&first.addresses[0])
            .relay(&second.addresses[0])
            .engine(engine.clone())
            .receive_buffer(64 * 1024)
            .start()
    };
    let alice = both("alice").await.expect("alice");
    let bob = both("bob").await.expect("bob");
    for node in [&alice, &bob] {
        for _ in 0..250 {
            if node
                .connection_info()
                .iter()
                .filter(|c| c.peer.is_some())
                .count()
                == 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            node.connection_info()
                .iter()
                .filter(|c| c.peer.is_some())
                .count(),
            2,
            "{} is connected to both relays",
            node.name()
        );
    }
    let count = 3000u32;
    let sender = alice.clone();
    let sending = tokio::spawn(async move {
        for index in 0..count {
            sender
                .send("bob", Bytes::from(index.to_le_bytes().repeat(256)))
                .await
                .expect("send");
        }
    });
    let mut first = Some(first);
    for index in 0..count {
        if index == count / 3 {
            // Both nodes route through relay-1 (the first by name): it dies without a word.
            first.take().expect("once").kill9();
        }
        let message = tokio::time::timeout(Duration::from_secs(20), bob.recv())
            .await
            .unwrap_or_else(|_| panic!("message {index} within 20 s"))
            .expect("running");
        assert_eq!(message.source, "alice");
        assert!(
            message.data == index.to_le_bytes().repeat(256),
            "message {index} lost, repeated or out of order"
        );
    }
    sending.await.expect("sender");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bob.recv())
            .await
            .is_err(),
        "a message arrived twice"
    );
    assert!(
        alice.stats().pieces_resent > 0,
        "data was in flight through relay-1"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    drop(second);
}

/// A request, tried again while the relays are still learning the route (NoRoute).
async fn request_when_routed(from: &Node, to: &str, data: &'static str) -> Message {
    for _ in 0..50 {
        match from.request(to, data, Duration::from_secs(5)).await {
            Ok(reply) => return reply,
            Err(NodeError::Send(SendError::NoRoute { .. })) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{} to {to}: {error}", from.name()),
        }
    }
    panic!("no route from {} to {to} within 5 s", from.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_across_a_chain_of_three_relay_processes_reach_each_other() {
    let first = RelayProcess::start_named("relay-1", "tcp://127.0.0.1:0", Some(TOKEN));
    let second = RelayProcess::start_with(
        "relay-2",
        "udp://127.0.0.1:0",
        Some(TOKEN),
        &[&first.addresses[0]],
    );
    let third = RelayProcess::start_with(
        "relay-3",
        "tcp://127.0.0.1:0",
        Some(TOKEN),
        &[&second.addresses[0]],
    );
    let a = node("a", &first.addresses[0]).await;
    let b = node("b", &second.addresses[0]).await;
    let c = node("c", &third.addresses[0]).await;
    let d = node("d", &third.addresses[0]).await;
    for server in [&a, &b, &c, &d] {
        serve_reversed(server.clone());
    }
    // Every pair, both ways: through one, two or three relays.
    let nodes = [&a, &b, &c, &d];
    for from in nodes {
        for to in nodes {
            if from.name() == to.name() {
                continue;
            }
            let reply = request_when_routed(from, to.name(), "abc").await;
            assert_eq!(reply.source, to.name());
            assert_eq!(&reply.data[..], b"cba", "{} to {}", from.name(), to.name());
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
    drop((first, second, third));
}

/// Sends `count` messages of 8 KiB from `producer` to `consumer` and returns how long until the
/// consumer had them all.
async fn timed_transfer(producer: &Node, consumer: &Node, count: usize) -> Duration {
    let start = std::time::Instant::now();
    let sender = producer.clone();
    let to = consumer.name().to_string();
    let sending = tokio::spawn(async move {
        for _ in 0..count {
            sender
                .send(&to, Bytes::from(vec![5u8; 8192]))
                .await
                .expect("send");
        }
    });
    for _ in 0..count {
        recv(consumer).await;
    }
    sending.await.expect("sender");
    start.elapsed()
}

/// Reads what `consumer` was sent until nothing more comes for 300 ms.
async fn drain(consumer: &Node) {
    while tokio::time::timeout(Duration::from_millis(300), consumer.recv())
        .await
        .is_ok()
    {}
}

/// Waits until `producer` can queue nothing more to `consumer`: its windows are full.
async fn until_full(producer: &Node, consumer: &Node) {
    for _ in 0..500 {
        if producer
            .try_send(consumer.name(), Bytes::from(vec![6u8; 8192]))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the stopped consumer's window did not fill: producer memory {}, stopped memory {}, {:?}",
        producer.memory(),
        consumer.memory(),
        consumer.stats()
    );
}

/// How much slower a transfer to the reading consumer may be beside the stopped one. A stopped
/// consumer that still took its share of the producer's path (its connection to the relay, the
/// relay's attention) would leave the reading one half of it: twice the time, or a stall. The
/// two sides are measured in interleaved rounds, best of each, so that a change in the machine's
/// load (other tests, other builds on a shared 2-core machine) weighs on both sides alike; what
/// is left of it stays well below this factor.
const SLOWDOWN_ACCEPTED: f64 = 1.5;

/// And an absolute allowance: the scheduler's and timers' jitter on a transfer of half a second.
const JITTER_ACCEPTED: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_does_not_slow_another_consumer() {
    let relay = RelayProcess::start("tcp://127.0.0.1:0", Some(TOKEN));
    let producer = node("producer", &relay.addresses[0]).await;
    // Small windows, so that the stopped consumer fills them within the test's time (by default
    // it would take some 70 MiB before holding the producer back).
    let stopped = Node::builder()
        .name("stopped")
        .token(token())
        .relay(&relay.addresses[0])
        .receive_buffer(1 << 20)
        .engine(atbus_core::engine::EngineConfig {
            max_message_size: 1 << 20,
            stream_receive_window: 2 << 20,
            peer_receive_budget: 3 << 20,
            ..Default::default()
        })
        .start()
        .await
        .expect("stopped consumer");
    for _ in 0..250 {
        if stopped.connection_info().iter().any(|c| c.peer.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reading = node("reading", &relay.addresses[0]).await;
    // Warm up the path (RTT samples, windows).
    timed_transfer(&producer, &reading, 500).await;

    // While `fill` is on, the producer keeps sending to the stopped consumer: whenever its
    // windows have room, they fill again.
    let (fill, filling) = tokio::sync::watch::channel(false);
    let sender = producer.clone();
    let blocked = tokio::spawn(async move {
        let mut filling = filling;
        while filling.wait_for(|&on| on).await.is_ok() {
            if sender
                .send("stopped", Bytes::from(vec![6u8; 8192]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let (mut alone, mut beside) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        // Alone: the other consumer has read everything it was sent, and is sent nothing.
        fill.send_replace(false);
        drain(&stopped).await;
        alone = alone.min(timed_transfer(&producer, &reading, 4000).await);
        // Beside a stopped consumer: it reads nothing, its windows are full, and the producer
        // has more for it waiting.
        fill.send_replace(true);
        until_full(&producer, &stopped).await;
        beside = beside.min(timed_transfer(&producer, &reading, 4000).await);
    }
    eprintln!("alone {alone:?}, beside a stopped consumer {beside:?}");
    assert!(
        beside <= alone.mul_f64(SLOWDOWN_ACCEPTED) + JITTER_ACCEPTED,
        "alone {alone:?}, beside a stopped consumer {beside:?}"
    );
    blocked.abort();
    for node in [&producer, &stopped, &reading] {
        node.shutdown_within(Duration::from_millis(200)).await;
    }
}

/// A plain HTTP/1.1 GET on loopback: the status code and the body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_endpoint_returns_what_it_promises() {
    let relay = Relay::builder()
        .listen("tcp://127.0.0.1:0")
        .token(token())
        .admin("127.0.0.1:0")
        .start()
        .await
        .expect("relay");
    let admin = relay.admin_address().expect("admin address");
    let address = relay.local_addresses()[0].to_string();

    // The watch, opened before any node: init (empty, id 1), then an update as alice connects,
    // heartbeats (id 0) every second, and a delete when she goes.
    let mut watch = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    {
        use tokio::io::AsyncWriteExt;
        watch
            .write_all(b"GET /v1/nodes?watch=1&heartbeat=1 HTTP/1.1\r\nHost: admin\r\n\r\n")
            .await
            .expect("write");
    }
    let alice = node("alice", &address).await;
    let bob = node("bob", &address).await;
    serve_reversed(bob.clone());
    let reply = alice
        .request("bob", "ping", Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(&reply.data[..], b"gnip");

    let (status, body) = http_get(admin, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200);

    let (status, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "atbus_relay_up 1",
        "atbus_relay_connections{transport=\"tcp\"} 2",
        "atbus_relay_bytes_received_total{transport=\"tcp\"}",
        "atbus_relay_bytes_sent_total{transport=\"tcp\"}",
        "atbus_relay_forwards_total",
        "atbus_relay_forward_queue_bytes",
        "atbus_relay_connection_rtt_seconds_bucket{le=\"+Inf\"} 2",
        "# TYPE atbus_relay_handshake_failures_total counter",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }
    let forwards: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("atbus_relay_forwards_total "))
        .and_then(|value| value.parse().ok())
        .expect("a forwards sample");
    assert!(forwards >= 2.0, "{forwards}");

    let (status, nodes) = http_get(admin, "/v1/nodes").await;
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&nodes).expect("JSON");
    let names: Vec<&str> = nodes
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|node| node["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    let (status, connections) = http_get(admin, "/v1/connections").await;
    assert_eq!(status, 200);
    let connections: serde_json::Value = serde_json::from_str(&connections).expect("JSON");
    assert_eq!(connections.as_array().expect("a list").len(), 2);
    assert!(
        connections[0]["remote"]
            .as_str()
            .expect("remote")
            .starts_with("tcp://")
    );

    let (status, routes) = http_get(admin, "/v1/routes").await;
    assert_eq!((status, routes.as_str()), (200, "[]"), "no other relay");

    alice.shutdown().await;
    // Read the watch until alice's delete arrives.
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while !(seen.contains("event: delete") && seen.contains("event: heartbeat")) {
            let read = watch.read(&mut buffer).await.expect("read");
            assert!(read > 0, "the watch closed early:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch did not show alice go:\n{seen}"));
    assert!(seen.contains("text/event-stream"), "{seen}");
    let init = seen.find("event: init").expect("init first");
    let update = seen.find("event: update").expect("an update");
    let delete = seen.find("event: delete").expect("a delete");
    assert!(init < update && update < delete, "{seen}");
    assert!(seen[init..].contains("id: 1"), "{seen}");
    assert!(seen.contains("\"name\":\"alice\""), "{seen}");
    let heartbeat = seen.find("event: heartbeat").expect("a heartbeat");
    assert!(seen[heartbeat..].contains("id: 0"), "{seen}");

    bob.shutdown().await;
    relay.shutdown().await;
}
