//! network-ctl as real processes through a real relay: the server on a SQLite file, agents that
//! register once and come back with their node token, and the operators' CLI.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_its_address_across_agent_and_server_restarts_and_its_state_follows_the_bus()
{
    let dir = tempfile::tempdir().unwrap();
    let (_relay, address) = relay().await;
    let config = server_config(
        dir.path(),
        "network-manager",
        &address,
        Storage::Sqlite(&dir.path().join("nc.db")),
    );
    let mut server = server(&config);

    let created = cli_json(&address, &["token", "create", "--expire", "10m"]);
    let bootstrap = created["token"].as_str().unwrap().to_string();
    assert!(created["expireTime"].is_string(), "{created}");

    let agent_config = client_config(dir.path(), "agent-a", &address, Some(&bootstrap));
    let (mut agent_a, line) = agent(&agent_config);
    assert!(line.ends_with("(registered)"), "{line}");
    let ip = address_of(&line);
    assert!(ip.starts_with("10.1.1.") && ip.ends_with("/24"), "{line}");

    // The node token and certificates are kept private in the work dir.
    let work = dir.path().join("agent-a");
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("node.json")).unwrap()).unwrap();
    let node_token = kept["nodeToken"].as_str().unwrap().to_string();
    assert_eq!(node_token.len(), 16);
    for file in [
        "node.json",
        "control-plane/ca.pem",
        "control-plane/cert.pem",
        "control-plane/key.pem",
        "data-plane/ca.pem",
        "data-plane/cert.pem",
        "data-plane/key.pem",
    ] {
        let mode = std::fs::metadata(work.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert_eq!(cli_ok(&address, &["node", "ip", &node_token]).trim(), ip);

    // Connected while the agent runs, lost (with its last-seen time) once it is gone.
    let connected = wait_for_state(&address, &node_token, "connected", Duration::from_secs(30));
    assert_eq!(connected["nodeName"], "agent-a");
    agent_a.kill();
    let lost = wait_for_state(&address, &node_token, "lost", Duration::from_secs(30));
    assert!(lost["lastSeen"].is_string(), "{lost}");

    // The agent comes back with its node token: the same address.
    let again = agent_once(&agent_config);
    let line = String::from_utf8_lossy(&again.stdout);
    assert!(
        line.contains("returned with its node token"),
        "{line} {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(address_of(&line), ip);

    // ...and after the server restarts.
    server.terminate();
    let _server = support::server(&config);
    let again = agent_once(&agent_config);
    let line = String::from_utf8_lossy(&again.stdout);
    assert_eq!(address_of(&line), ip, "{line}");
    assert_eq!(
        cli_ok(&address, &["node", "ip", "reserverd"]).trim(),
        "10.1.1.1/24"
    );
    let listed = cli_json(&address, &["node", "list"]);
    let tokens: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|binding| binding["nodeToken"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["reserverd", node_token.as_str()]);

    // Unregistered, the agent registers afresh with its bootstrap token.
    cli_ok(&address, &["node", "unregister", &node_token]);
    let unknown = cli(&address, true, &["node", "ip", &node_token]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no node"),
        "{unknown:?}"
    );
    let fresh = agent_once(&agent_config);
    let line = String::from_utf8_lossy(&fresh.stdout);
    assert!(
        line.contains("(registered)"),
        "{line} {}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("node.json")).unwrap()).unwrap();
    assert_ne!(kept["nodeToken"], node_token.as_str(), "a fresh node token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_bad_input_and_unauthenticated_callers_and_tokens_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, address) = relay().await;
    let config = server_config(
        dir.path(),
        "network-manager",
        &address,
        Storage::Sqlite(&dir.path().join("nc.db")),
    );
    let _server = server(&config);

    // A peer without the bus token never reaches the manager: the relay refuses it.
    let stranger = std::process::Command::new(binary())
        .args([
            "token",
            "list",
            "--relay",
            &address,
            "--bus-token",
            "not the bus token, though long enough",
        ])
        .env("NETWORK_CTL_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!stranger.status.success());
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("check the addresses and the bus token"),
        "{stranger:?}"
    );
    // An agent with neither a node token nor a bootstrap token says what it needs.
    let empty = agent_once(&client_config(dir.path(), "agent-0", &address, None));
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("no bootstrapToken"),
        "{empty:?}"
    );

    // No operator token: refused, and no token was made.
    let refused = cli(&address, false, &["token", "create"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs an operator token"), "{stderr}");
    assert_eq!(
        cli_json(&address, &["token", "list"]),
        serde_json::json!([])
    );

    // A malformed CIDR: refused, no network made.
    let networks = cli_json(&address, &["network", "list"]);
    let bad = cli(
        &address,
        true,
        &[
            "network",
            "create",
            "--cidr",
            "10.0.0.0/33",
            "--net-token",
            "lab",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("malformed CIDR"),
        "{bad:?}"
    );
    assert_eq!(cli_json(&address, &["network", "list"]), networks);
    let lab = cli_json(
        &address,
        &[
            "network",
            "create",
            "--cidr",
            "10.5.0.0/16",
            "--net-token",
            "lab",
        ],
    );
    assert_eq!(lab[0]["capacity"], 65_533);

    // A single-use token registers one agent; the second is refused.
    let single = cli_json(
        &address,
        &["token", "create", "--single-use", "--expire", "never"],
    );
    let single = single["token"].as_str().unwrap();
    let first = agent_once(&client_config(
        dir.path(),
        "agent-1",
        &address,
        Some(single),
    ));
    assert!(first.status.success(), "{first:?}");
    let second = agent_once(&client_config(
        dir.path(),
        "agent-2",
        &address,
        Some(single),
    ));
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("single-use"),
        "{second:?}"
    );

    // An expired token: refused by the server's clock.
    let short = cli_json(&address, &["token", "create", "--expire", "1s"]);
    std::thread::sleep(Duration::from_millis(1_100));
    let late = agent_once(&client_config(
        dir.path(),
        "agent-3",
        &address,
        Some(short["token"].as_str().unwrap()),
    ));
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("expired at"),
        "{late:?}"
    );
    // Unknown net token.
    let reusable = cli_json(&address, &["token", "create"]);
    let reusable = reusable["token"].as_str().unwrap();
    let mut lost = std::fs::read_to_string(client_config(
        dir.path(),
        "agent-4",
        &address,
        Some(reusable),
    ))
    .unwrap();
    lost.push_str("netToken: nowhere\n");
    std::fs::write(dir.path().join("agent-4.yml"), lost).unwrap();
    let nowhere = agent_once(&dir.path().join("agent-4.yml"));
    assert!(
        String::from_utf8_lossy(&nowhere.stderr).contains("unknown network \"nowhere\""),
        "{nowhere:?}"
    );

    let tokens = cli_json(&address, &["token", "list"]);
    assert_eq!(tokens.as_array().unwrap().len(), 3, "{tokens}");
    assert_eq!(
        cli_json(&address, &["node", "list", "--net", "default"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let table = cli_ok(&address, &["token", "list"]);
    assert!(table.starts_with("ID"), "{table}");
}
