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

const TOKEN: &str = "the relay tests' shared token";

fn token() -> Token {
    Token::new(TOKEN).expect("long enough")
}

/// Node `name`, connected (authenticated) to the relay at `relay`: until then nothing can be
/// routed to it, and a sender would get NoRoute.
async fn node(name: &str, relay: &str) -> Node {
    let node = Node::builder()
        .name(name)
        .token(token())
        .relay(relay)
        .start()
        .await
        .expect("node starts");
    for _ in 0..250 {
        if node.connection_info().iter().any(|c| c.peer.is_some()) {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} did not connect to the relay at {relay} within 5 s");
}

async fn recv(node: &Node) -> Message {
    tokio::time::timeout(Duration::from_secs(10), node.recv())
        .await
        .expect("a message within 10 s")
        .expect("running")
}

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
    stderr: BufReader<std::process::ChildStderr>,
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
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let expected = listen.split(',').count();
        let addresses: Vec<String> = stdout
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("listening on ").map(str::to_string))
            .take(expected)
            .collect();
        assert_eq!(addresses.len(), expected, "the relay printed its addresses");
        Self {
            child,
            addresses,
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
    let mut relay = RelayProcess::start("tcp://127.0.0.1:0", None);
    let mut printed = None;
    let mut warning = String::new();
    for _ in 0..10 {
        let mut line = String::new();
        if relay.stderr.read_line(&mut line).expect("stderr") == 0 {
            break;
        }
        warning.push_str(&line);
        if let Some(token) = line.trim().strip_prefix("ATBUS_TOKEN=") {
            printed = Some(token.to_string());
            break;
        }
    }
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
    let both = |name: &'static str| {
        Node::builder()
            .name(name)
            .token(token())
            .relay(&first.addresses[0])
            .relay(&second.addresses[0])
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
    // Each side of the comparison is the better of two runs: the machine is shared.
    let alone = timed_transfer(&producer, &reading, 4000)
        .await
        .min(timed_transfer(&producer, &reading, 4000).await);

    // The stopped consumer never reads: the producer's sends to it fill its windows and then
    // wait, and nothing more goes its way.
    let sender = producer.clone();
    let blocked = tokio::spawn(async move {
        loop {
            if sender
                .send("stopped", Bytes::from(vec![6u8; 8192]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut filled = false;
    for _ in 0..500 {
        if producer
            .try_send("stopped", Bytes::from(vec![6u8; 8192]))
            .is_err()
        {
            filled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        filled,
        "the stopped consumer's window filled: producer memory {}, stopped memory {}, {:?}",
        producer.memory(),
        stopped.memory(),
        stopped.stats()
    );
    let beside = timed_transfer(&producer, &reading, 4000).await;
    let again = timed_transfer(&producer, &reading, 4000).await;
    let with_stopped = beside.min(again);
    eprintln!("alone {alone:?}, beside a stopped consumer {beside:?} and {again:?}");
    assert!(
        with_stopped.as_secs_f64() <= alone.as_secs_f64() * 1.10 + 0.02,
        "alone {alone:?}, beside a stopped consumer {with_stopped:?}"
    );
    blocked.abort();
    for node in [&producer, &stopped, &reading] {
        node.shutdown_within(Duration::from_millis(200)).await;
    }
}
