//! Two network-manager processes on one real etcd, serving at once through one relay: agents
//! registering concurrently never get the same address, whichever replica answers them.
#![cfg(feature = "etcd")]

#[path = "../../atbus-discovery/tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;
mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_etcd_give_32_concurrent_agents_32_distinct_addresses() {
    let etcd = etcd::EtcdServer::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (_relay, address) = relay().await;
    let endpoint = etcd.endpoint();
    let configs: Vec<_> = (1..=2)
        .map(|i| {
            server_config(
                dir.path(),
                &format!("network-manager-{i}"),
                &address,
                Storage::Etcd(&endpoint, "/replicas-test"),
            )
        })
        .collect();
    let mut replicas: Vec<Process> = configs.iter().map(|config| server(config)).collect();

    let created = cli_json(&address, &["token", "create", "--expire", "never"]);
    let bootstrap = created["token"].as_str().unwrap().to_string();
    let agents: Vec<_> = (0..32)
        .map(|i| {
            let config = client_config(
                dir.path(),
                &format!("agent-{i}"),
                &address,
                Some(&bootstrap),
            );
            Command::new(binary())
                .args(["agent", "--once", "--config"])
                .arg(&config)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addresses = HashSet::new();
    for agent in agents {
        let output = agent.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ip = address_of(&stdout);
        assert!(addresses.insert(ip.clone()), "{ip} handed out twice");
        assert_ne!(ip, "10.1.1.1/24", "the server's address");
    }
    assert_eq!(addresses.len(), 32);

    // Both replicas served: the callers spread over them.
    for config in &configs {
        let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
        let served = log.matches("node registered").count();
        assert!(
            served > 0 && served < 32,
            "{}: {served} registrations",
            config.display()
        );
    }
    // etcd holds exactly the 32 addresses and the server's.
    let mut client = etcd.client().await;
    let keys = client
        .get(
            "/replicas-test/ips/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys.count(), 33);

    // With one replica gone, callers reach the other.
    replicas[0].kill();
    let listed = cli_json(&address, &["node", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 33);
}

/// A relay on 127.0.0.1 serving discovery from the etcd at `endpoint`, listening on `port`.
async fn etcd_relay(name: &str, port: u16, endpoint: &str) -> atbus_relay::Relay {
    let mut etcd = atbus_discovery::EtcdConfig::new([endpoint]);
    etcd.prefix = "/failover-test".into();
    atbus_relay::Relay::builder()
        .name(name)
        .listen(format!("tcp://127.0.0.1:{port}"))
        .token(atbus_core::engine::Token::new(BUS_TOKEN).unwrap())
        .etcd(etcd)
        .start()
        .await
        .expect("the relay starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_and_agents_move_to_the_other_relay_when_theirs_goes() {
    let etcd = etcd::EtcdServer::new().await;
    let dir = tempfile::tempdir().unwrap();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (
        format!("tcp://127.0.0.1:{port_a}"),
        format!("tcp://127.0.0.1:{port_b}"),
    );
    // Only relay a is up while the manager and the agent publish themselves: they do it there.
    let relay_a = etcd_relay("relay-a", port_a, &etcd.endpoint()).await;
    let config = server_config_relays(
        dir.path(),
        "network-manager",
        &[&a, &b],
        Storage::Sqlite(&dir.path().join("nc.db")),
    );
    let _server = server(&config);
    let created = cli_json(&a, &["token", "create"]);
    let bootstrap = created["token"].as_str().unwrap();
    let (mut agent_a, _) = agent(&client_config_relays(
        dir.path(),
        "agent-a",
        &[&a, &b],
        Some(bootstrap),
    ));
    let kept: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("agent-a/node.json")).unwrap(),
    )
    .unwrap();
    let node_token = kept["nodeToken"].as_str().unwrap().to_string();
    wait_for_state(
        &a,
        &node_token,
        "connected",
        std::time::Duration::from_secs(30),
    );

    // Relay b comes up; both connect to it too. Then relay a goes.
    let relay_b = etcd_relay("relay-b", port_b, &etcd.endpoint()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let peers: Vec<String> = relay_b
            .connections()
            .into_iter()
            .filter_map(|c| c.peer)
            .collect();
        if ["network-manager", "agent-a"]
            .iter()
            .all(|name| peers.iter().any(|p| p == name))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not both on relay-b: {peers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    relay_a
        .shutdown_within(std::time::Duration::from_millis(200))
        .await;

    // The agent publishes itself at relay b, where the manager now watches: still connected...
    wait_for_state(
        &b,
        &node_token,
        "connected",
        std::time::Duration::from_secs(30),
    );
    // ...and seen going when it goes.
    agent_a.kill();
    wait_for_state(&b, &node_token, "lost", std::time::Duration::from_secs(30));
}
