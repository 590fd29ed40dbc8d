//! What the relay's integration tests share: the bus token, a node connected to a relay, and
//! receiving with a deadline.

#![allow(dead_code)]

use std::time::Duration;

use atbus_core::engine::Token;
use atbus_core::runtime::{Message, Node};

/// The token every relay and node of a test shares.
pub const TOKEN: &str = "the relay tests' shared token";

/// [`TOKEN`] as a token.
pub fn token() -> Token {
    Token::new(TOKEN).expect("long enough")
}

/// Node `name`, connected (authenticated) to the relay at `relay`: until then nothing can be
/// routed to it, and a sender would get NoRoute.
pub async fn node(name: &str, relay: &str) -> Node {
    let node = Node::builder()
        .name(name)
        .token(token())
        .relay(relay)
        .start()
        .await
        .expect("node starts");
    for _ in 0..500 {
        if node.connection_info().iter().any(|c| c.peer.is_some()) {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} did not connect to the relay at {relay} within 10 s");
}

/// The next message of `node`, within 10 s.
pub async fn recv(node: &Node) -> Message {
    tokio::time::timeout(Duration::from_secs(10), node.recv())
        .await
        .unwrap_or_else(|_| panic!("{} got no message within 10 s", node.name()))
        .expect("running")
}

/// Raises this process's open-file limit to its hard limit (children inherit it): every node
/// needs a socket here and one in the relay. Returns the limit now.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// `count` nodes named `node-0`… connected (authenticated) to the relay at `address`, within
/// 120 s. With `SCALE_PROGRESS` set, prints how many are in as they come.
pub async fn crowd(count: usize, address: &str) -> Vec<Node> {
    let start = std::time::Instant::now();
    let mut nodes = Vec::with_capacity(count);
    for index in 0..count {
        let node = Node::builder()
            .name(format!("node-{index}"))
            .token(token())
            .relay(address)
            .start()
            .await
            .expect("node");
        nodes.push(node);
    }
    let deadline = start + Duration::from_secs(120);
    loop {
        let connected = nodes
            .iter()
            .filter(|node| node.connection_info().iter().any(|c| c.peer.is_some()))
            .count();
        if connected == count {
            return nodes;
        }
        if std::env::var_os("SCALE_PROGRESS").is_some() {
            eprintln!("{:?}: {connected} connected", start.elapsed());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{connected} of {count} nodes connected after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
