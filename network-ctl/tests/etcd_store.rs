//! The etcd backend against a real etcd: two stores on one etcd stand for two replicas of the
//! network manager. Each test starts its own etcd (see the harness in atbus-discovery) and uses
//! its own prefix.
#![cfg(feature = "etcd")]

#[path = "../../atbus-discovery/tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd::EtcdServer;
use etcd_client::GetOptions;
use network_ctl::records::{NewBinding, NodeUpdate};
use network_ctl::store::{EtcdStore, EtcdStoreConfig};
use network_ctl::token::{self, NODE_TOKEN_LEN, RESERVED_NODE_TOKEN};
use network_ctl::{
    AuthorityPem, Binding, BootstrapToken, ControlError, Network, NodeState, Plane, Store,
};

/// The time the tests start at (milliseconds since the epoch).
const NOW: i64 = 1_700_000_000_000;
const NET: &str = "default";

async fn replica(etcd: &EtcdServer, prefix: &str) -> EtcdStore {
    EtcdStore::connect(EtcdStoreConfig {
        endpoints: vec![etcd.endpoint()],
        prefix: prefix.to_string(),
    })
    .await
    .unwrap_or_else(|error| panic!("connect to {}: {error}", etcd.endpoint()))
}

fn network(cidr: &str, gateway: Option<&str>, server_ip: Option<&str>) -> Network {
    Network::new(NET, cidr, gateway, server_ip, NOW).expect("a valid network")
}

/// Stores a bootstrap token made of `secret`; returns its digest.
async fn add_token(
    store: &dyn Store,
    secret: &str,
    single_use: bool,
    expire_time: Option<i64>,
) -> String {
    let digest = token::digest(secret);
    store
        .add_bootstrap_token(BootstrapToken {
            digest: digest.clone(),
            create_time: NOW,
            expire_time,
            single_use,
            uses: 0,
        })
        .await
        .expect("add a bootstrap token");
    digest
}

fn request(digest: &str, name: &str, now: i64) -> NewBinding {
    NewBinding {
        bootstrap_digest: digest.to_string(),
        net_token: NET.to_string(),
        node_token: token::generate(NODE_TOKEN_LEN),
        node_name: name.to_string(),
        now,
    }
}

/// Every key and value under `prefix`, in key order.
async fn snapshot(etcd: &EtcdServer, prefix: &str) -> Vec<(String, String)> {
    let response = etcd
        .client()
        .await
        .get(format!("{prefix}/"), Some(GetOptions::new().with_prefix()))
        .await
        .expect("read etcd");
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn count_keys(etcd: &EtcdServer, prefix: &str) -> i64 {
    etcd.client()
        .await
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count keys")
        .count()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn connected() -> NodeUpdate {
    NodeUpdate {
        state: Some(NodeState::Connected),
        ..NodeUpdate::default()
    }
}

fn lost() -> NodeUpdate {
    NodeUpdate {
        state: Some(NodeState::Lost),
        ..NodeUpdate::default()
    }
}

/// Runs `attempt` until it succeeds (etcd may still be coming back), for at most 10 s.
async fn retry<T, F: Future<Output = Result<T, ControlError>>>(
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(ControlError::Storage(error)) if Instant::now() < deadline => {
                eprintln!("retrying: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_registrations_at_once_on_two_replicas_get_thirty_two_distinct_addresses() {
    let etcd = EtcdServer::new().await;
    let prefix = "/concurrent";
    let a = Arc::new(replica(&etcd, prefix).await);
    let b = Arc::new(replica(&etcd, prefix).await);
    let shape = network("10.20.30.0/24", Some("10.20.30.1"), Some("10.20.30.2"));
    a.ensure_network(shape.clone()).await.unwrap();
    b.ensure_network(shape.clone()).await.unwrap();
    let digest = add_token(&*a, "fleet", false, Some(NOW + 600_000)).await;

    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let request = request(&digest, &format!("node-{i}"), NOW + 1);
            tokio::spawn(async move { store.register(request).await })
        })
        .collect();
    let mut bindings = Vec::new();
    for task in tasks {
        bindings.push(task.await.unwrap().expect("every registration succeeds"));
    }
    eprintln!(
        "32 registrations on two replicas took {:?}",
        started.elapsed()
    );

    let ips: HashSet<IpAddr> = bindings.iter().map(|binding| binding.ip).collect();
    assert_eq!(
        ips.len(),
        32,
        "an address was handed out twice: {bindings:#?}"
    );
    for never in ["10.20.30.0", "10.20.30.1", "10.20.30.2", "10.20.30.255"] {
        assert!(!ips.contains(&ip(never)), "{never} was handed out");
    }
    assert!(
        bindings
            .iter()
            .all(|binding| binding.prefix_len == 24 && binding.state == NodeState::NeverConnected)
    );
    // The 32 addresses and the server's, each with exactly one key.
    assert_eq!(count_keys(&etcd, &format!("{prefix}/ips/{NET}/")).await, 33);
    assert_eq!(
        count_keys(&etcd, &format!("{prefix}/bindings/{NET}/")).await,
        33
    );
    let tokens = b.bootstrap_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        tokens[0].uses, 32,
        "every registration counted its use once"
    );
    for store in [&a, &b] {
        let listed = store.bindings(Some(NET)).await.unwrap();
        assert_eq!(listed.len(), 33);
        let status = store.networks().await.unwrap();
        assert_eq!(status.len(), 1);
        assert_eq!((status[0].capacity, status[0].bound), (252, 33));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_use_token_presented_to_both_replicas_at_once_registers_one_node() {
    let etcd = EtcdServer::new().await;
    let prefix = "/single-use";
    let a = replica(&etcd, prefix).await;
    let b = replica(&etcd, prefix).await;
    a.ensure_network(network("10.9.0.0/24", None, None))
        .await
        .unwrap();
    b.ensure_network(network("10.9.0.0/24", None, None))
        .await
        .unwrap();
    for round in 0..5 {
        let digest = add_token(&a, &format!("once-{round}"), true, None).await;
        let (from_a, from_b) = tokio::join!(
            a.register(request(&digest, "a", NOW)),
            b.register(request(&digest, "b", NOW))
        );
        let (won, lost) = match (from_a, from_b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("round {round}: not exactly one success: {other:?}"),
        };
        assert_eq!(lost, ControlError::BootstrapTokenUsed, "round {round}");
        assert!(a.binding(NET, &won.node_token).await.unwrap().is_some());
        let used = a.bootstrap_tokens().await.unwrap();
        let used = used.iter().find(|token| token.digest == digest).unwrap();
        assert_eq!(used.uses, 1);
    }
    // Five nodes and the server.
    assert_eq!(count_keys(&etcd, &format!("{prefix}/ips/")).await, 6);
}

#[tokio::test]
async fn a_full_pool_reclaims_the_lost_node_changed_longest_ago_and_never_a_connected_one() {
    let etcd = EtcdServer::new().await;
    let prefix = "/reclaim";
    let store = replica(&etcd, prefix).await;
    // A /29: .1 is the gateway and the server, .2 to .6 are for nodes.
    store
        .ensure_network(network("10.0.0.0/29", None, None))
        .await
        .unwrap();
    let digest = add_token(&store, "reclaim", false, None).await;
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(
            store
                .register(request(&digest, &format!("n{i}"), NOW))
                .await
                .unwrap(),
        );
    }
    let held: HashSet<IpAddr> = nodes.iter().map(|node| node.ip).collect();
    assert_eq!(held.len(), 5);
    // n0 and n3 connected; n1, n2 and n4 lost at different times, n2 first.
    for (i, update, at) in [
        (0, connected(), NOW + 1),
        (3, connected(), NOW + 1),
        (1, lost(), NOW + 30),
        (2, lost(), NOW + 10),
        (4, lost(), NOW + 20),
    ] {
        let after = store
            .update_node(NET, &nodes[i].node_token, update, at)
            .await
            .unwrap();
        assert_eq!(after.update_time, at);
    }

    let first = store
        .register(request(&digest, "r1", NOW + 100))
        .await
        .unwrap();
    assert_eq!(
        first.ip, nodes[2].ip,
        "the lost node changed longest ago is reclaimed"
    );
    assert_eq!(
        store.binding(NET, &nodes[2].node_token).await.unwrap(),
        None
    );
    let second = store
        .register(request(&digest, "r2", NOW + 101))
        .await
        .unwrap();
    assert_eq!(second.ip, nodes[4].ip);
    assert_eq!(
        store.binding(NET, &nodes[4].node_token).await.unwrap(),
        None
    );
    // The newcomers are not connected either, but n1 was lost before they registered.
    let third = store
        .register(request(&digest, "r3", NOW + 102))
        .await
        .unwrap();
    assert_eq!(third.ip, nodes[1].ip);

    // Everyone connected: nothing to reclaim, and the refusal changes nothing.
    for node in [&first, &second, &third] {
        store
            .update_node(NET, &node.node_token, connected(), NOW + 200)
            .await
            .unwrap();
    }
    let before = snapshot(&etcd, prefix).await;
    let revision = etcd.revision().await;
    let refused = store
        .register(request(&digest, "r4", NOW + 300))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        ControlError::PoolExhausted {
            net_token: NET.to_string(),
            cidr: "10.0.0.0/29".to_string(),
            bound: 6,
        }
    );
    assert_eq!(snapshot(&etcd, prefix).await, before);
    assert_eq!(etcd.revision().await, revision, "nothing was written");
    let bindings = store.bindings(Some(NET)).await.unwrap();
    assert_eq!(bindings.len(), 6);
    assert!(
        bindings
            .iter()
            .all(|binding| binding.state == NodeState::Connected)
    );
}

#[tokio::test]
async fn refused_registrations_leave_etcd_as_it_was() {
    let etcd = EtcdServer::new().await;
    let prefix = "/refused";
    let store = replica(&etcd, prefix).await;
    store
        .ensure_network(network("10.5.0.0/24", None, None))
        .await
        .unwrap();
    let expiring = add_token(&store, "expiring", false, Some(NOW + 1_000)).await;
    let once = add_token(&store, "once", true, None).await;
    store.register(request(&once, "first", NOW)).await.unwrap();
    let before = snapshot(&etcd, prefix).await;
    let revision = etcd.revision().await;

    assert_eq!(
        store
            .register(request(&expiring, "late", NOW + 1_000))
            .await
            .unwrap_err(),
        ControlError::ExpiredBootstrapToken {
            expired_at: NOW + 1_000
        }
    );
    assert_eq!(
        store
            .register(request(&token::digest("never issued"), "stranger", NOW))
            .await
            .unwrap_err(),
        ControlError::UnknownBootstrapToken
    );
    let mut elsewhere = request(&expiring, "lost", NOW);
    elsewhere.net_token = "nowhere".to_string();
    assert_eq!(
        store.register(elsewhere).await.unwrap_err(),
        ControlError::UnknownNetwork {
            net_token: "nowhere".to_string()
        }
    );
    assert_eq!(
        store
            .register(request(&once, "second", NOW))
            .await
            .unwrap_err(),
        ControlError::BootstrapTokenUsed
    );

    assert_eq!(snapshot(&etcd, prefix).await, before);
    assert_eq!(etcd.revision().await, revision, "nothing was written");
    // Still usable before it expires.
    store
        .register(request(&expiring, "in time", NOW + 999))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_address_freed_through_one_replica_is_handed_out_again_by_the_other() {
    let etcd = EtcdServer::new().await;
    let prefix = "/freed";
    let a = replica(&etcd, prefix).await;
    let b = replica(&etcd, prefix).await;
    a.ensure_network(network("10.0.0.0/29", None, None))
        .await
        .unwrap();
    let digest = add_token(&a, "freed", false, None).await;
    let mut nodes = Vec::new();
    for i in 0..5 {
        let node = a
            .register(request(&digest, &format!("n{i}"), NOW))
            .await
            .unwrap();
        a.update_node(NET, &node.node_token, connected(), NOW + 1)
            .await
            .unwrap();
        nodes.push(node);
    }
    // Full of connected nodes, as A sees it.
    assert!(matches!(
        a.register(request(&digest, "too many", NOW + 2)).await,
        Err(ControlError::PoolExhausted { .. })
    ));

    // B frees one; A hands it out (it has no victim to reclaim: only the watch tells it).
    let freed = b.unregister(NET, &nodes[2].node_token).await.unwrap();
    assert_eq!(freed.ip, nodes[2].ip);
    let newcomer = a
        .register(request(&digest, "newcomer", NOW + 3))
        .await
        .unwrap();
    assert_eq!(newcomer.ip, nodes[2].ip);
    a.update_node(NET, &newcomer.node_token, connected(), NOW + 4)
        .await
        .unwrap();

    // The other way round: A frees one, B (which learnt A's bindings from its watch) hands out
    // exactly that one.
    let freed = a.unregister(NET, &nodes[4].node_token).await.unwrap();
    let other = b
        .register(request(&digest, "other", NOW + 5))
        .await
        .unwrap();
    assert_eq!(other.ip, freed.ip);
    assert_eq!(count_keys(&etcd, &format!("{prefix}/ips/{NET}/")).await, 6);
    let listed = b.bindings(None).await.unwrap();
    let ips: HashSet<IpAddr> = listed.iter().map(|binding| binding.ip).collect();
    assert_eq!((listed.len(), ips.len()), (6, 6));
}

#[tokio::test]
async fn a_new_store_on_the_same_etcd_finds_the_bindings_and_the_reserved_node() {
    let etcd = EtcdServer::new().await;
    let prefix = "/restart";
    let shape = network("10.1.0.0/24", Some("10.1.0.1"), Some("10.1.0.10"));
    let store = replica(&etcd, prefix).await;
    store.ensure_network(shape.clone()).await.unwrap();
    let digest = add_token(&store, "restart", false, None).await;
    let mut registered = Vec::new();
    for i in 0..3 {
        registered.push(
            store
                .register(request(&digest, &format!("n{i}"), NOW))
                .await
                .unwrap(),
        );
    }
    let update = NodeUpdate {
        state: Some(NodeState::Connected),
        node_name: Some("renamed".to_string()),
        last_seen: Some(NOW + 5),
    };
    store
        .update_node(NET, &registered[1].node_token, update, NOW + 5)
        .await
        .unwrap();
    let before = store.bindings(None).await.unwrap();
    drop(store);

    let store = replica(&etcd, prefix).await;
    let later = Network {
        create_time: NOW + 1_000,
        ..shape.clone()
    };
    // Ensured again on start: the stored network comes back as it was.
    assert_eq!(store.ensure_network(later).await.unwrap(), shape);
    assert_eq!(store.bindings(None).await.unwrap(), before);
    let reserved = store
        .binding(NET, RESERVED_NODE_TOKEN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reserved.ip, ip("10.1.0.10"));
    assert_eq!(reserved.state, NodeState::Connected);
    let renamed = store.bindings_of_node("renamed").await.unwrap();
    assert_eq!(renamed.len(), 1);
    assert_eq!(renamed[0].node_token, registered[1].node_token);
    assert_eq!(renamed[0].last_seen, Some(NOW + 5));
    // The new store's pool knows what is bound.
    let newcomer = store
        .register(request(&digest, "n3", NOW + 10))
        .await
        .unwrap();
    assert!(before.iter().all(|binding| binding.ip != newcomer.ip));
}

#[tokio::test]
async fn networks_keep_their_shape_and_the_reserved_node_cannot_go() {
    let etcd = EtcdServer::new().await;
    let prefix = "/shape";
    let a = replica(&etcd, prefix).await;
    let b = replica(&etcd, prefix).await;
    let shape = network("10.2.0.0/24", None, None);
    let (from_a, from_b) = tokio::join!(
        a.ensure_network(shape.clone()),
        b.ensure_network(shape.clone())
    );
    assert_eq!(
        (from_a.unwrap(), from_b.unwrap()),
        (shape.clone(), shape.clone())
    );
    let conflict = b
        .ensure_network(network("10.3.0.0/16", None, None))
        .await
        .unwrap_err();
    let ControlError::Conflict(message) = &conflict else {
        panic!("{conflict:?}");
    };
    assert!(
        message.contains("10.2.0.0/24") && message.contains("10.3.0.0/16"),
        "{message}"
    );

    // The reserved binding removed by hand is put back by the next ensure.
    let mut client = etcd.client().await;
    client
        .delete(
            format!("{prefix}/bindings/{NET}/{RESERVED_NODE_TOKEN}"),
            None,
        )
        .await
        .unwrap();
    client
        .delete(format!("{prefix}/ips/{NET}/10.2.0.1"), None)
        .await
        .unwrap();
    assert_eq!(a.binding(NET, RESERVED_NODE_TOKEN).await.unwrap(), None);
    a.ensure_network(shape.clone()).await.unwrap();
    let reserved = b.binding(NET, RESERVED_NODE_TOKEN).await.unwrap().unwrap();
    assert_eq!(
        (reserved.ip, reserved.state),
        (ip("10.2.0.1"), NodeState::Connected)
    );
    assert_eq!(count_keys(&etcd, &format!("{prefix}/ips/{NET}/")).await, 1);
    // The server's address key alone removed: put back too.
    client
        .delete(format!("{prefix}/ips/{NET}/10.2.0.1"), None)
        .await
        .unwrap();
    b.ensure_network(shape.clone()).await.unwrap();
    assert_eq!(count_keys(&etcd, &format!("{prefix}/ips/{NET}/")).await, 1);

    assert!(matches!(
        a.unregister(NET, RESERVED_NODE_TOKEN).await,
        Err(ControlError::Reserved(message)) if message.contains("cannot be unregistered")
    ));
    assert_eq!(
        a.unregister(NET, "nobody").await.unwrap_err(),
        ControlError::UnknownNode {
            node_token: "nobody".to_string(),
            net_token: NET.to_string()
        }
    );
    assert!(matches!(
        a.unregister("nowhere", "nobody").await,
        Err(ControlError::UnknownNetwork { .. })
    ));
    assert!(matches!(
        a.bindings(Some("nowhere")).await,
        Err(ControlError::UnknownNetwork { .. })
    ));
    let statuses = b.networks().await.unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!((statuses[0].capacity, statuses[0].bound), (253, 1));
}

#[tokio::test]
async fn updates_move_update_time_only_when_state_or_name_change() {
    let etcd = EtcdServer::new().await;
    let store = replica(&etcd, "/update").await;
    store
        .ensure_network(network("10.4.0.0/24", None, None))
        .await
        .unwrap();
    let digest = add_token(&store, "update", false, None).await;
    let node = store.register(request(&digest, "node", NOW)).await.unwrap();
    let seen = NodeUpdate {
        last_seen: Some(NOW + 7),
        ..NodeUpdate::default()
    };
    let after: Binding = store
        .update_node(NET, &node.node_token, seen, NOW + 7)
        .await
        .unwrap();
    assert_eq!((after.update_time, after.last_seen), (NOW, Some(NOW + 7)));
    let same_state = NodeUpdate {
        state: Some(NodeState::NeverConnected),
        node_name: Some("node".to_string()),
        last_seen: None,
    };
    let after = store
        .update_node(NET, &node.node_token, same_state, NOW + 8)
        .await
        .unwrap();
    assert_eq!((after.update_time, after.last_seen), (NOW, Some(NOW + 7)));
    let renamed = NodeUpdate {
        node_name: Some("other".to_string()),
        ..NodeUpdate::default()
    };
    let after = store
        .update_node(NET, &node.node_token, renamed, NOW + 9)
        .await
        .unwrap();
    assert_eq!(
        (after.update_time, after.node_name.as_str()),
        (NOW + 9, "other")
    );
    assert_eq!(
        store.binding(NET, &node.node_token).await.unwrap(),
        Some(after)
    );
    assert_eq!(
        store
            .update_node(NET, "nobody", connected(), NOW)
            .await
            .unwrap_err(),
        ControlError::UnknownNode {
            node_token: "nobody".to_string(),
            net_token: NET.to_string()
        }
    );
}

#[tokio::test]
async fn tokens_are_swept_when_expired_and_the_first_authority_stored_wins() {
    let etcd = EtcdServer::new().await;
    let prefix = "/tokens";
    let a = replica(&etcd, prefix).await;
    let b = replica(&etcd, prefix).await;
    add_token(&a, "soon", false, Some(NOW + 10)).await;
    add_token(&a, "later", true, Some(NOW + 20)).await;
    add_token(&b, "never", false, None).await;
    assert!(matches!(
        b.add_bootstrap_token(BootstrapToken {
            digest: token::digest("soon"),
            create_time: NOW,
            expire_time: None,
            single_use: false,
            uses: 0,
        })
        .await,
        Err(ControlError::Conflict(_))
    ));
    assert_eq!(a.sweep_bootstrap_tokens(NOW + 9).await.unwrap(), 0);
    assert_eq!(b.sweep_bootstrap_tokens(NOW + 10).await.unwrap(), 1);
    let left = a.bootstrap_tokens().await.unwrap();
    let digests: HashSet<String> = left.iter().map(|token| token.digest.clone()).collect();
    assert_eq!(
        digests,
        HashSet::from([token::digest("later"), token::digest("never")])
    );
    assert!(
        left.iter()
            .any(|token| token.single_use && token.expire_time == Some(NOW + 20))
    );
    assert_eq!(a.sweep_bootstrap_tokens(NOW + 1_000_000).await.unwrap(), 1);
    assert_eq!(b.bootstrap_tokens().await.unwrap().len(), 1);

    let pem = |name: &str| AuthorityPem {
        cert_pem: format!("cert {name}"),
        key_pem: format!("key {name}"),
    };
    let (from_a, from_b) = tokio::join!(
        a.ensure_authority(Plane::Control, pem("a")),
        b.ensure_authority(Plane::Control, pem("b"))
    );
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    assert_eq!(
        from_a, from_b,
        "both replicas use the authority stored first"
    );
    assert_eq!(
        b.ensure_authority(Plane::Control, pem("c")).await.unwrap(),
        from_a
    );
    assert_eq!(
        b.ensure_authority(Plane::Data, pem("d")).await.unwrap(),
        pem("d")
    );
}

#[tokio::test]
async fn a_replica_whose_watch_fell_behind_a_compaction_reads_everything_again() {
    let mut etcd = EtcdServer::new().await;
    let prefix = "/compacted";
    let a = replica(&etcd, prefix).await;
    let b = replica(&etcd, prefix).await;
    a.ensure_network(network("10.0.0.0/29", None, None))
        .await
        .unwrap();
    let digest = add_token(&a, "compacted", false, None).await;
    let first = a.register(request(&digest, "first", NOW)).await.unwrap();

    // A's watch is held while etcd restarts; B changes bindings, and the revisions A missed
    // are compacted away.
    let pause = a.pause_watch().await;
    etcd.stop();
    etcd.start().await;
    let mut from_b = Vec::new();
    for i in 0..4 {
        let node = retry(|| b.register(request(&digest, &format!("b{i}"), NOW + 1))).await;
        retry(|| b.update_node(NET, &node.node_token, connected(), NOW + 2)).await;
        from_b.push(node);
    }
    retry(|| b.unregister(NET, &first.node_token)).await;
    etcd.compact(etcd.revision().await).await;
    drop(pause);

    // A learns B's bindings (the name index is the cache's): only a full read brings them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a
        .bindings_of_node("b3")
        .await
        .map_or(true, |found| found.is_empty())
    {
        assert!(Instant::now() < deadline, "A never learnt B's bindings");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the address B freed is the one free address, which A hands out.
    let newcomer = retry(|| a.register(request(&digest, "newcomer", NOW + 3))).await;
    assert_eq!(newcomer.ip, first.ip);
    let ips: HashSet<IpAddr> = from_b
        .iter()
        .map(|node| node.ip)
        .chain([newcomer.ip])
        .collect();
    assert_eq!(ips.len(), 5);
}

#[tokio::test]
async fn an_ipv6_network_hands_out_its_first_host_addresses_across_replicas() {
    let etcd = EtcdServer::new().await;
    let prefix = "/ipv6";
    let a = replica(&etcd, prefix).await;
    let b = replica(&etcd, prefix).await;
    let shape = Network::new(NET, "fd00:1::/64", None, None, NOW).unwrap();
    a.ensure_network(shape.clone()).await.unwrap();
    let digest = add_token(&a, "ipv6", false, None).await;
    let mut got = Vec::new();
    for (i, store) in [&a, &b, &a].into_iter().enumerate() {
        let binding = store
            .register(request(&digest, &format!("v6-{i}"), NOW))
            .await
            .unwrap();
        assert_eq!(binding.prefix_len, 64);
        got.push(binding.ip);
    }
    let got: HashSet<IpAddr> = got.into_iter().collect();
    let expected: HashSet<IpAddr> = ["fd00:1::2", "fd00:1::3", "fd00:1::4"].map(ip).into();
    assert_eq!(got, expected);
    let statuses = b.networks().await.unwrap();
    assert_eq!(statuses[0].capacity, u64::MAX as u128 - 1);
    assert_eq!(statuses[0].bound, 4);
    assert!(snapshot(&etcd, prefix).await.iter().any(|(key, value)| key
        == &format!("{prefix}/ips/{NET}/fd00:1::1")
        && value == RESERVED_NODE_TOKEN));
}
