//! A relay process holding many connected nodes (`SCALE_NODES`, default 2000, as the relay
//! issue asks): every node authenticates, a message crosses from the first to the last, and the
//! relay's resident memory is reported (and bounded). `SCALE_PROGRESS=1` prints the count of
//! connected nodes while they connect.
//!
//! `SCALE_NODES=5000 cargo test --release -p atbus-relay --test scale -- --nocapture` shows the
//! figures for more (4 s to connect 5000, 10 KiB of relay memory per node).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

/// `SCALE_NODES`, or 2000.
fn nodes_wanted() -> usize {
    std::env::var("SCALE_NODES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000)
}

/// Kills the relay process however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The resident set of process `pid`, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_holds_many_connected_nodes_and_reports_its_memory() {
    let count = nodes_wanted();
    let limit = support::raise_fd_limit();
    assert!(
        limit >= 2 * count as u64 + 256,
        "the open-file limit ({limit}) is too low for {count} nodes: raise the hard limit"
    );
    let mut relay = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_atbus-relay"))
            .env("ATBUS_RELAY_LISTEN", "tcp://127.0.0.1:0")
            .env("ATBUS_RELAY_ADMIN", "off")
            .env("ATBUS_RELAY_TOKEN", support::TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the relay runs"),
    );
    let mut lines = BufReader::new(relay.0.stdout.take().expect("stdout")).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("listening on ").map(str::to_string))
        .expect("the relay's address");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let idle = rss_kib(relay.0.id());

    let start = Instant::now();
    let nodes = support::crowd(count, &address).await;
    let connect_time = start.elapsed();

    nodes[0]
        .send(&format!("node-{}", count - 1), "from one end to the other")
        .await
        .expect("send");
    let message = tokio::time::timeout(Duration::from_secs(10), nodes[count - 1].recv())
        .await
        .expect("within 10 s")
        .expect("running");
    assert_eq!(message.source, "node-0");

    let held = rss_kib(relay.0.id());
    eprintln!(
        "{count} nodes connected through one relay in {connect_time:?}; relay RSS {} MiB idle, \
         {} MiB holding them ({} KiB per node)",
        idle / 1024,
        held / 1024,
        held.saturating_sub(idle) / count as u64
    );
    assert!(
        held < 1024 * 1024,
        "the relay's RSS ({held} KiB) is over 1 GiB"
    );
    let mut stopping = tokio::task::JoinSet::new();
    for node in nodes {
        stopping.spawn(async move { node.shutdown_within(Duration::from_millis(50)).await });
    }
    while stopping.join_next().await.is_some() {}
}
