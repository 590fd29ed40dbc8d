//! Registration with the network-manager: what one node's registration costs, next to a bus
//! round trip of the same size through the same relay, measured in the same run.
//!
//! Everything runs in this process on loopback TCP: an embedded relay, the network-manager
//! service (`network_ctl::service::Service`) on a SQLite file in WAL mode with a /8 network (so
//! no iteration runs out of addresses), an echo node, and a client node. Three benchmarks:
//!
//! - `registration/echo` (the baseline): a request through the relay to the echo node, answered
//!   with as many bytes as a registration's reply (the binding and two certificate sets);
//! - `registration/bus`: `Client::register` through the relay (decoding, the SQLite transaction,
//!   two fresh keys and certificates, the reply);
//! - `registration/manager`: `Manager::register` in process, without the bus.
//!
//! `cargo bench -p atbus-benches --bench registration` prints criterion's figures, then each as
//! registrations per second and as a multiple of the echo round trip.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use atbus_benches::report::nanoseconds;
use atbus_core::engine::Token;
use atbus_core::runtime::Node;
use atbus_relay::Relay;
use criterion::Criterion;
use network_ctl::client::{Client, ClientOptions, REQUEST_TIMEOUT};
use network_ctl::clock::SystemClock;
use network_ctl::manager::Manager;
use network_ctl::service::Service;
use network_ctl::{Network, SqliteStore};
use tokio::runtime::Runtime;

const BUS_TOKEN: &str = "the registration bench's bus token";
const GROUP: &str = "registration";
const IDS: [&str; 3] = ["echo", "bus", "manager"];

struct Setup {
    _dir: tempfile::TempDir,
    _relay: Relay,
    _service: Service,
    _echo: Node,
    manager: Manager,
    client: Client,
    bootstrap: String,
    reply_len: usize,
}

async fn node(name: &str, relay: &str) -> Node {
    let node = Node::builder()
        .name(name)
        .token(Token::new(BUS_TOKEN).unwrap())
        .relay(relay)
        .start()
        .await
        .expect("node starts");
    network_ctl::presence::relay_name(&node, Duration::from_secs(10))
        .await
        .expect("connected to the relay");
    node
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::builder()
        .name("relay")
        .listen("tcp://127.0.0.1:0")
        .token(Token::new(BUS_TOKEN).unwrap())
        .start()
        .await
        .expect("relay");
    let address = relay.local_addresses()[0].to_string();
    let store = SqliteStore::open(dir.path().join("bench.db")).unwrap();
    let network = Network::new("default", "10.0.0.0/8", None, None, 0).unwrap();
    let manager = Manager::start(Arc::new(store), Arc::new(SystemClock), &[], vec![network])
        .await
        .unwrap();
    let service = Service::start(node("network-manager", &address).await, manager.clone())
        .await
        .unwrap();
    let client = Client::connect(ClientOptions {
        name: "bench-client".into(),
        relays: vec![address.clone()],
        bus_token: BUS_TOKEN.into(),
        admin_token: None,
    })
    .await
    .unwrap();
    let (bootstrap, _) = manager.create_token(None, false).await.unwrap();
    // The size of a registration's reply, for the echo to answer with.
    let registered = client.register(&bootstrap, "").await.unwrap();
    let reply_len = prost::Message::encoded_len(&network_ctl::proto::Response {
        body: Some(network_ctl::proto::response::Body::Registered(registered)),
    });
    let echo = node("echo", &address).await;
    let answering = echo.clone();
    tokio::spawn(async move {
        let reply = vec![7u8; reply_len];
        while let Some(message) = answering.recv().await {
            let _ = answering.reply(&message, reply.clone()).await;
        }
    });
    Setup {
        _dir: dir,
        _relay: relay,
        _service: service,
        _echo: echo,
        manager,
        client,
        bootstrap,
        reply_len,
    }
}

fn bench_registration(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let setup = runtime.block_on(setup());
    let request = vec![1u8; 64];
    let mut group = c.benchmark_group(GROUP);
    group.bench_function(IDS[0], |b| {
        b.iter(|| {
            runtime
                .block_on(
                    setup
                        .client
                        .node()
                        .request("echo", request.clone(), REQUEST_TIMEOUT),
                )
                .unwrap()
        })
    });
    group.bench_function(IDS[1], |b| {
        b.iter(|| {
            runtime
                .block_on(setup.client.register(&setup.bootstrap, ""))
                .unwrap()
        })
    });
    group.bench_function(IDS[2], |b| {
        b.iter(|| {
            runtime
                .block_on(setup.manager.register(&setup.bootstrap, "", "bench-node"))
                .unwrap()
        })
    });
    group.finish();
    println!("(a registration's reply is {} bytes)", setup.reply_len);
}

fn print_summary(directory: &Path, start: SystemTime) {
    let Some(times) = IDS
        .iter()
        .map(|id| nanoseconds(directory, GROUP, id, start))
        .collect::<Option<Vec<f64>>>()
    else {
        return;
    };
    println!();
    println!("benchmark      per second    µs each    ×echo");
    for (id, ns) in IDS.iter().zip(&times) {
        println!(
            "{id:<12} {:>12.0} {:>10.1} {:>8.2}",
            1e9 / ns,
            ns / 1e3,
            ns / times[0]
        );
    }
}

fn main() {
    atbus_benches::report::run(Duration::from_secs(3), bench_registration, print_summary);
}
