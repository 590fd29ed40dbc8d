//! Nodes for the runtime tests, and a TCP proxy that a test can cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atbus_core::engine::{EngineConfig, Token};
use atbus_core::runtime::{Message, Node};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The token every test node shares.
pub fn token() -> Token {
    Token::new("the runtime tests' shared token").expect("long enough")
}

/// A unique name for a `unix://` socket or `mem://` listener of this test process.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A listen address of `scheme` on loopback (a fresh port, socket path or name).
pub fn listen_address(scheme: &str) -> String {
    match scheme {
        "tcp" => "tcp://127.0.0.1:0".into(),
        "udp" => "udp://127.0.0.1:0".into(),
        "tls" => "tls://127.0.0.1:0".into(),
        "quic" => "quic://127.0.0.1:0".into(),
        "unix" => format!(
            "unix://{}",
            std::env::temp_dir().join(unique("atbus-test")).display()
        ),
        "mem" => format!("mem://{}", unique("node")),
        other => panic!("no test address for {other}"),
    }
}

/// A server listening on `scheme` and a client connected to it, with `engine` limits.
pub async fn pair(scheme: &str, engine: EngineConfig) -> (Node, Node) {
    pair_buffered(scheme, engine, 8 * 1024 * 1024).await
}

/// [`pair`] with a server holding at most `receive_buffer` bytes of messages for `recv`.
pub async fn pair_buffered(
    scheme: &str,
    engine: EngineConfig,
    receive_buffer: usize,
) -> (Node, Node) {
    let server = Node::builder()
        .name("server")
        .token(token())
        .receive_buffer(receive_buffer)
        .engine(engine.clone())
        .listen(listen_address(scheme))
        .start()
        .await
        .expect("server starts");
    let client = Node::builder()
        .name("client")
        .token(token())
        .engine(engine)
        .peer("server", [server.local_addresses()[0].to_string()])
        .start()
        .await
        .expect("client starts");
    (server, client)
}

/// The next message within 10 s.
pub async fn recv(node: &Node) -> Message {
    tokio::time::timeout(Duration::from_secs(10), node.recv())
        .await
        .expect("a message within 10 s")
        .expect("the node is running")
}

/// `len` bytes that depend on `index`.
pub fn payload(index: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ index.wrapping_mul(7919)) as u8)
        .collect()
}

/// A TCP proxy on loopback to `target`; `cut` kills every connection through it.
pub struct Proxy {
    pub address: String,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("tcp://{}", listener.local_addr().expect("address"));
        let tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = tasks.clone();
        let target = target.trim_start_matches("tcp://").to_string();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().expect("tasks").push(task);
            }
        });
        Self {
            address,
            tasks,
            accept,
        }
    }

    /// Kills every connection through the proxy, and refuses new ones.
    pub fn cut(&self) {
        self.accept.abort();
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}
