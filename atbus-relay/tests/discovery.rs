//! Discovery through the relay: nodes register their records with their relay and list or watch
//! by selector there. With an embedded relay (its in-memory registry), and with 200 nodes on two
//! relay processes sharing a real etcd, where etcd counts exactly one watcher per relay.

#[path = "../../atbus-discovery/tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atbus_core::runtime::{Node, NodeError, RelayWatch};
use atbus_discovery::{NodeRecord, WatchEvent};
use atbus_relay::Relay;
use etcd::EtcdServer;

mod support;

use support::{TOKEN, node, token};

fn record(name: &str, app: &str) -> NodeRecord {
    let mut record = NodeRecord::new(name);
    record.metadata.labels.insert("app".into(), app.into());
    record
}

async fn next(watch: &mut RelayWatch, waiting_for: &str) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within 10 s: waiting for {waiting_for}"))
        .expect("the relay answers polls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_list_and_watch_through_an_embedded_relay() {
    let relay = Relay::builder()
        .name("relay")
        .listen("tcp://127.0.0.1:0")
        .token(token())
        .start()
        .await
        .expect("relay");
    let address = relay.local_addresses()[0].to_string();
    let web = node("web-1", &address).await;
    let client = node("client", &address).await;
    web.discovery("relay")
        .register(&record("web-1", "web"))
        .await
        .expect("registered");

    let found = client
        .discovery("relay")
        .list(&"app=web".parse().unwrap())
        .await
        .expect("list");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "web-1");

    let mut webs = client
        .discovery("relay")
        .watch(&"app=web".parse().unwrap())
        .await
        .expect("watch");
    match next(&mut webs, "init").await {
        WatchEvent::Init { records, .. } => assert_eq!(records.len(), 1),
        other => panic!("{other:?}"),
    }
    let web2 = node("web-2", &address).await;
    web2.discovery("relay")
        .register(&record("web-2", "web"))
        .await
        .expect("registered");
    match next(&mut webs, "web-2 put").await {
        WatchEvent::Put { record, .. } => assert_eq!(record.name, "web-2"),
        other => panic!("{other:?}"),
    }
    // web-2 goes away: its record goes with its connection.
    web2.shutdown_within(Duration::from_millis(100)).await;
    match next(&mut webs, "web-2 delete").await {
        WatchEvent::Delete { name, .. } => assert_eq!(name, "web-2"),
        other => panic!("{other:?}"),
    }

    // A node registers only itself.
    let error = client
        .discovery("relay")
        .register(&record("web-1", "web"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NodeError::Discovery { message, .. } if message.contains("only its own")),
        "{error}"
    );
    webs.cancel().await.expect("cancel");
    drop(web);
}

/// A relay binary serving discovery from etcd.
struct RelayProcess {
    child: Child,
    address: String,
}

impl RelayProcess {
    fn start(name: &str, etcd: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_atbus-relay"))
            .env("ATBUS_RELAY_NAME", name)
            .env("ATBUS_RELAY_LISTEN", "tcp://127.0.0.1:0")
            .env("ATBUS_RELAY_ADMIN", "off")
            .env("ATBUS_RELAY_TOKEN", TOKEN)
            .env("ATBUS_RELAY_ETCD", etcd)
            .env_remove("ATBUS_RELAY_CONFIG")
            .env_remove("ATBUS_RELAY_PEERS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the relay binary runs");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let address = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening on ").map(str::to_string))
            .expect("the relay's address");
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        RelayProcess { child, address }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_on_two_relays_watch_through_them_with_one_etcd_watcher_each() {
    const NODES: usize = 200;
    let etcd = EtcdServer::new().await;
    let watchers = "etcd_debugging_mvcc_watcher_total";
    let before = etcd
        .wait_for_metric(watchers, Duration::from_secs(5), |_| true)
        .await;
    let relays = [
        RelayProcess::start("relay-a", &etcd.endpoint()),
        RelayProcess::start("relay-b", &etcd.endpoint()),
    ];
    let mut nodes = Vec::new();
    for index in 0..NODES {
        let (relay, name) = (&relays[index % 2], ["relay-a", "relay-b"][index % 2]);
        let node = node(&format!("node-{index}"), &relay.address).await;
        nodes.push((node, name));
    }
    // Every node registers and watches the others through its own relay.
    let mut watches = Vec::new();
    for (index, (node, relay)) in nodes.iter().enumerate() {
        node.discovery(relay)
            .register(&record(&format!("node-{index}"), "swarm"))
            .await
            .expect("registered");
        let mut watch = node
            .discovery(relay)
            .watch(&"app=swarm".parse().unwrap())
            .await
            .expect("watch");
        assert!(matches!(
            next(&mut watch, "init").await,
            WatchEvent::Init { .. }
        ));
        watches.push(watch);
    }
    // The last node's registration reaches a watcher on the other relay through etcd.
    let late = node("late", &relays[1].address).await;
    late.discovery("relay-b")
        .register(&record("late", "swarm"))
        .await
        .expect("registered");
    let mut first = watches.remove(0); // node-0, on relay-a
    loop {
        match next(&mut first, "late put").await {
            WatchEvent::Put { record, .. } if record.name == "late" => break,
            _ => continue,
        }
    }
    let all = nodes[1]
        .0
        .discovery("relay-b")
        .list(&"app=swarm".parse().unwrap())
        .await
        .expect("list");
    assert_eq!(
        all.len(),
        NODES + 1,
        "every node's record, from both relays"
    );

    let during = etcd
        .wait_for_metric(watchers, Duration::from_secs(5), |v| v >= before + 2.0)
        .await;
    eprintln!("etcd watchers: {before} before the relays, {during} with {NODES} nodes watching");
    assert_eq!(during, before + 2.0, "one etcd watcher per relay process");
    for (node, _) in &nodes {
        node.shutdown_within(Duration::from_millis(50)).await;
    }
}

/// `node` answers every request with its own name.
fn answer_with_name(node: &Node) {
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(request) = node.recv().await {
            let _ = node.reply(&request, node.name().to_string()).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_service_follow_the_policy() {
    use atbus_discovery::policy::Policy;
    use std::collections::BTreeMap;

    let relay = Relay::builder()
        .name("relay")
        .listen("tcp://127.0.0.1:0")
        .token(token())
        .start()
        .await
        .expect("relay");
    let address = relay.local_addresses()[0].to_string();
    let client = node("client", &address).await;
    let own = NodeRecord::new("client");
    // Three instances; only echo-1 runs on the client's host.
    let mut echoes = Vec::new();
    for index in 0..3 {
        let name = format!("echo-{index}");
        let echo = node(&name, &address).await;
        let mut record = record(&name, "echo");
        if index != 1 {
            record.host.hostname = "elsewhere".into();
        }
        echo.discovery("relay")
            .register(&record)
            .await
            .expect("registered");
        answer_with_name(&echo);
        echoes.push(echo);
    }
    let services = client.services("relay", own);
    let selector: atbus_discovery::Selector = "app=echo".parse().unwrap();
    let ask = |policy: Policy| {
        let services = services.clone();
        let selector = selector.clone();
        async move {
            let reply = services
                .request_to(&selector, &policy, "who?", Duration::from_secs(5))
                .await
                .expect("an answer");
            String::from_utf8(reply.data.to_vec()).expect("a name")
        }
    };

    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *answered.entry(ask(Policy::RoundRobin).await).or_default() += 1;
    }
    assert_eq!(
        answered.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{answered:?}"
    );
    for _ in 0..5 {
        assert_eq!(ask(Policy::Closest).await, "echo-1");
        assert_eq!(ask(Policy::Named("echo-2".into())).await, "echo-2");
    }
    let hashed = ask(Policy::hashed("user-42")).await;
    for _ in 0..5 {
        assert_eq!(ask(Policy::hashed("user-42")).await, hashed);
    }
    // No instance of that name: a clear error, nothing sent.
    let error = services
        .send_to(&selector, &Policy::Named("echo-9".into()), "x")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no node matches"), "{error}");

    // An instance that leaves is no longer chosen.
    echoes[1].shutdown_within(Duration::from_millis(100)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while services
        .candidates(&selector)
        .await
        .expect("candidates")
        .len()
        != 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "echo-1 still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        assert_ne!(ask(Policy::RoundRobin).await, "echo-1");
    }
}

/// A GET over plain HTTP/1.1: the status and the body.
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

/// Reads the server-sent events stream until it holds `wanted`; returns all read so far.
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, wanted: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 4096];
    while !seen.contains(wanted) {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} in the watch within 10 s:\n{seen}"))
            .expect("read");
        assert!(read > 0, "the watch ended before {wanted:?}:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_side_lists_and_watches_the_discovery_records() {
    use tokio::io::AsyncWriteExt;
    let relay = Relay::builder()
        .name("relay")
        .listen("tcp://127.0.0.1:0")
        .token(token())
        .admin("127.0.0.1:0")
        .start()
        .await
        .expect("relay");
    let admin = relay.admin_address().expect("admin");
    let address = relay.local_addresses()[0].to_string();
    let web = node("web-1", &address).await;
    web.discovery("relay")
        .register(&record("web-1", "web"))
        .await
        .expect("registered");

    let (status, body) = http_get(admin, "/v1/records?selector=app%3Dweb").await;
    assert_eq!(status, 200, "{body}");
    let records: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(records[0]["name"], "web-1");
    assert_eq!(records[0]["metadata"]["labels"]["app"], "web");
    let (status, body) = http_get(admin, "/v1/records?selector=app%20in").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("selector"), "{body}");

    let mut watch = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    watch
        .write_all(
            b"GET /v1/records?watch=1&heartbeat=1&selector=app%3Dweb HTTP/1.1\r\nHost: admin\r\n\r\n",
        )
        .await
        .expect("write");
    let mut seen = String::new();
    read_until(&mut watch, &mut seen, "event: init").await;
    read_until(&mut watch, &mut seen, "web-1").await;
    let web2 = node("web-2", &address).await;
    web2.discovery("relay")
        .register(&record("web-2", "web"))
        .await
        .expect("registered");
    read_until(&mut watch, &mut seen, "event: update").await;
    read_until(&mut watch, &mut seen, "\"web-2\"").await;
    web2.shutdown_within(Duration::from_millis(100)).await;
    read_until(&mut watch, &mut seen, "event: delete").await;
    read_until(&mut watch, &mut seen, "event: heartbeat").await;
    assert!(seen.contains("id: 1\n"), "{seen}");
    assert!(seen.contains("id: 0\n"), "{seen}");
}
