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
