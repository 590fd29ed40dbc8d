//! The etcd registry against a real etcd (started by the test on loopback ports it picked, in its
//! own data directory): register, get, list and watch; a duplicate name; lease expiry after the
//! node dies; a lost lease re-registered; etcd killed and restarted with the watch resuming
//! without a missed or repeated event; a compaction forcing a full re-read; one etcd watcher
//! however many subscribers.

mod support;

use std::time::Duration;

use atbus_discovery::{
    EtcdConfig, EtcdRegistry, NodeRecord, RegistrationState, Registry, RegistryError, Selector,
    Watch, WatchEvent,
};
use etcd_client::GetOptions;
use support::etcd::EtcdServer;

const PREFIX: &str = "/atbus/test";

fn config(etcd: &EtcdServer) -> EtcdConfig {
    let mut config = EtcdConfig::new([etcd.endpoint()]);
    config.prefix = PREFIX.into();
    config.lease_ttl = Duration::from_secs(2);
    config.progress_interval = Duration::from_millis(500);
    config
}

fn record(name: &str, app: &str) -> NodeRecord {
    let mut record = NodeRecord::new(name);
    record.metadata.labels.insert("app".into(), app.into());
    record
}

/// The next event within `within`, or a panic saying what the test waited for.
async fn next(watch: &mut Watch, within: Duration, waiting_for: &str) -> WatchEvent {
    tokio::time::timeout(within, watch.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {within:?}: waiting for {waiting_for}"))
        .expect("the watch ended")
}

/// No event for `quiet`.
async fn assert_quiet(watch: &mut Watch, quiet: Duration) {
    if let Ok(event) = tokio::time::timeout(quiet, watch.next()).await {
        panic!("an unexpected watch event: {event:?}");
    }
}

#[tokio::test]
async fn register_get_list_and_watch_through_etcd() {
    let etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut webs = registry.watch("app=web".parse().unwrap()).await.unwrap();
    assert!(matches!(
        next(&mut webs, Duration::from_secs(1), "init").await,
        WatchEvent::Init { records, .. } if records.is_empty()
    ));

    let a = registry.register(record("web-1", "web")).await.unwrap();
    let _b = registry.register(record("db-1", "db")).await.unwrap();
    assert_eq!(
        registry
            .get("web-1")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .labels["app"],
        "web"
    );
    let dbs = registry.list(&"app=db".parse().unwrap()).await.unwrap();
    assert_eq!(dbs.len(), 1);
    assert_eq!(dbs[0].name, "db-1");

    // The record is readable JSON in etcd.
    let mut client = etcd.client().await;
    let stored = client
        .get(format!("{PREFIX}/nodes/web-1"), None)
        .await
        .unwrap();
    let json = stored.kvs()[0].value_str().unwrap().to_string();
    assert!(json.contains("\"app\":\"web\""), "{json}");

    match next(&mut webs, Duration::from_secs(2), "web-1 put").await {
        WatchEvent::Put { record, .. } => assert_eq!(record.name, "web-1"),
        other => panic!("{other:?}"),
    }
    a.close().await;
    match next(&mut webs, Duration::from_secs(2), "web-1 delete").await {
        WatchEvent::Delete { name, .. } => assert_eq!(name, "web-1"),
        other => panic!("{other:?}"),
    }
    // Closing revoked the lease: the key is gone at once, not after the TTL.
    let gone = client
        .get(format!("{PREFIX}/nodes/web-1"), None)
        .await
        .unwrap();
    assert!(gone.kvs().is_empty());
    assert_quiet(&mut webs, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_name_held_by_a_live_instance_is_refused() {
    let etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let _first = registry.register(record("echo-1", "echo")).await.unwrap();
    let error = registry
        .register(record("echo-1", "other"))
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::NameTaken { .. }), "{error}");
    assert_eq!(
        registry
            .get("echo-1")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .labels["app"],
        "echo"
    );
}

#[tokio::test]
async fn the_record_of_a_dead_node_expires_with_its_lease() {
    let etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut all = registry.watch(Selector::everything()).await.unwrap();
    next(&mut all, Duration::from_secs(1), "init").await;

    // The node runs on its own runtime; ending that runtime kills it without a goodbye.
    let endpoint = config(&etcd);
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let registry = EtcdRegistry::connect(endpoint).await.unwrap();
            std::mem::forget(registry.register(record("doomed", "web")).await.unwrap());
        });
    })
    .await
    .unwrap();

    match next(&mut all, Duration::from_secs(2), "doomed put").await {
        WatchEvent::Put { record, .. } => assert_eq!(record.name, "doomed"),
        other => panic!("{other:?}"),
    }
    let started = std::time::Instant::now();
    match next(&mut all, Duration::from_secs(6), "doomed delete").await {
        WatchEvent::Delete { name, .. } => assert_eq!(name, "doomed"),
        other => panic!("{other:?}"),
    }
    // Not at once (nobody revoked it): when the 2 s lease ran out.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(registry.get("doomed").await.unwrap().is_none());
}

#[tokio::test]
async fn a_lost_lease_is_replaced_and_the_record_put_again() {
    let etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut registration = registry.register(record("echo-1", "echo")).await.unwrap();

    // Someone revokes the lease (as if etcd had lost it).
    let mut client = etcd.client().await;
    let key = format!("{PREFIX}/nodes/echo-1");
    let lease = client.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    client.lease_revoke(lease).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let current = client.get(key.as_str(), None).await.unwrap();
        if let Some(kv) = current.kvs().first() {
            assert_ne!(kv.lease(), lease, "the record came back under a new lease");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while registration.state() != RegistrationState::Registered {
        tokio::time::timeout(Duration::from_secs(2), registration.changed())
            .await
            .expect("registered again");
    }
    assert!(
        registry
            .stats()
            .reregistrations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test]
async fn after_etcd_restarts_the_watch_resumes_without_a_missed_or_repeated_event() {
    let mut etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut all = registry.watch(Selector::everything()).await.unwrap();
    next(&mut all, Duration::from_secs(1), "init").await;
    let mut node = registry.register(record("node-a", "web")).await.unwrap();
    assert!(matches!(
        next(&mut all, Duration::from_secs(2), "node-a put").await,
        WatchEvent::Put { .. }
    ));

    // etcd dies and comes back; while the watch is held, another client changes records.
    let pause = registry.pause_watch().await;
    etcd.stop();
    etcd.start().await;
    let mut client = etcd.client().await;
    for (name, app) in [("x", "db"), ("y", "db")] {
        client
            .put(
                format!("{PREFIX}/nodes/{name}"),
                record(name, app).to_json(),
                None,
            )
            .await
            .unwrap();
    }
    client
        .delete(format!("{PREFIX}/nodes/x"), None)
        .await
        .unwrap();
    drop(pause);

    let mut seen = Vec::new();
    for what in ["x put", "y put", "x delete"] {
        seen.push(next(&mut all, Duration::from_secs(10), what).await);
    }
    let names: Vec<String> = seen
        .iter()
        .map(|event| match event {
            WatchEvent::Put { record, .. } => format!("put {}", record.name),
            WatchEvent::Delete { name, .. } => format!("delete {name}"),
            WatchEvent::Init { .. } => "init".into(),
        })
        .collect();
    assert_eq!(names, ["put x", "put y", "delete x"]);
    let revisions: Vec<u64> = seen
        .iter()
        .map(|event| match event {
            WatchEvent::Put { revision, .. } | WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Init { revision, .. } => *revision,
        })
        .collect();
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "{revisions:?}"
    );
    // node-a's record survived (its lease was restored and kept alive): no repeat of its put.
    assert_quiet(&mut all, Duration::from_millis(1500)).await;
    assert!(registry.get("node-a").await.unwrap().is_some());
    assert_eq!(node.state(), RegistrationState::Registered);
    let _ = &mut node;
}

#[tokio::test]
async fn a_watch_behind_a_compaction_reads_everything_again_and_reports_the_difference() {
    let mut etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut all = registry.watch(Selector::everything()).await.unwrap();
    next(&mut all, Duration::from_secs(1), "init").await;
    let mut client = etcd.client().await;
    for name in ["keep", "drop", "change"] {
        client
            .put(
                format!("{PREFIX}/nodes/{name}"),
                record(name, "v1").to_json(),
                None,
            )
            .await
            .unwrap();
    }
    for _ in 0..3 {
        next(&mut all, Duration::from_secs(2), "the first puts").await;
    }

    // The watch falls behind (etcd restarts while it is held) and the revisions it missed are
    // compacted away.
    let pause = registry.pause_watch().await;
    etcd.stop();
    etcd.start().await;
    let mut client = etcd.client().await;
    client
        .delete(format!("{PREFIX}/nodes/drop"), None)
        .await
        .unwrap();
    client
        .put(
            format!("{PREFIX}/nodes/change"),
            record("change", "v2").to_json(),
            None,
        )
        .await
        .unwrap();
    client
        .put(
            format!("{PREFIX}/nodes/new"),
            record("new", "v1").to_json(),
            None,
        )
        .await
        .unwrap();
    // Changed back and forth: the re-read sees only where it ended.
    client
        .delete(format!("{PREFIX}/nodes/new"), None)
        .await
        .unwrap();
    client
        .put(
            format!("{PREFIX}/nodes/new"),
            record("new", "v1").to_json(),
            None,
        )
        .await
        .unwrap();
    etcd.compact(etcd.revision().await).await;
    drop(pause);

    let mut changes = Vec::new();
    for what in ["drop delete", "change put", "new put"] {
        changes.push(match next(&mut all, Duration::from_secs(10), what).await {
            WatchEvent::Put { record, .. } => {
                format!("put {} {}", record.name, record.metadata.labels["app"])
            }
            WatchEvent::Delete { name, .. } => format!("delete {name}"),
            other => panic!("{other:?}"),
        });
    }
    changes.sort();
    assert_eq!(changes, ["delete drop", "put change v2", "put new v1"]);
    assert_quiet(&mut all, Duration::from_millis(500)).await;
    assert!(
        registry
            .stats()
            .full_reads
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let stored = client
        .get(
            format!("{PREFIX}/nodes/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 3);
}

#[tokio::test]
async fn many_subscribers_in_a_process_share_one_etcd_watcher() {
    let etcd = EtcdServer::new().await;
    let before = etcd
        .wait_for_metric(
            "etcd_debugging_mvcc_watcher_total",
            Duration::from_secs(5),
            |_| true,
        )
        .await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    // A second connect in the same process shares the first.
    let again = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut watches = Vec::new();
    for index in 0..50 {
        let which = if index % 2 == 0 { &registry } else { &again };
        watches.push(which.watch(Selector::everything()).await.unwrap());
    }
    let _node = registry.register(record("shared", "web")).await.unwrap();
    for watch in &mut watches {
        next(watch, Duration::from_secs(1), "init").await;
        next(watch, Duration::from_secs(2), "shared put").await;
    }
    let during = etcd
        .wait_for_metric(
            "etcd_debugging_mvcc_watcher_total",
            Duration::from_secs(5),
            |v| v >= before + 1.0,
        )
        .await;
    assert_eq!(during, before + 1.0, "one etcd watcher for 50 subscribers");
}

#[tokio::test]
async fn after_etcd_loses_its_data_nodes_register_again_and_the_watch_catches_up() {
    let mut etcd = EtcdServer::new().await;
    let registry = EtcdRegistry::connect(config(&etcd)).await.unwrap();
    let mut all = registry.watch(Selector::everything()).await.unwrap();
    next(&mut all, Duration::from_secs(1), "init").await;
    let mut node = registry.register(record("node-a", "web")).await.unwrap();
    let mut client = etcd.client().await;
    // Revisions well above what the new store will reach soon.
    for round in 0..20 {
        client
            .put(
                format!("{PREFIX}/nodes/busy"),
                record("busy", &format!("v{round}")).to_json(),
                None,
            )
            .await
            .unwrap();
    }
    client
        .delete(format!("{PREFIX}/nodes/busy"), None)
        .await
        .unwrap();
    loop {
        let event = next(&mut all, Duration::from_secs(2), "the busy changes").await;
        if matches!(&event, WatchEvent::Delete { name, .. } if name == "busy") {
            break;
        }
    }

    // etcd comes back empty (a new cluster on the same address).
    let pause = registry.pause_watch().await;
    etcd.stop();
    std::fs::remove_dir_all(etcd.data_dir()).unwrap();
    etcd.start().await;
    let mut client = etcd.client().await;
    client
        .put(
            format!("{PREFIX}/nodes/x"),
            record("x", "db").to_json(),
            None,
        )
        .await
        .unwrap();
    drop(pause);

    // The node's record comes back under a new lease, and the watch reports x.
    let mut seen_x = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !seen_x || registry.get("node-a").await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "x seen: {seen_x}; node-a listed: {}",
            registry.get("node-a").await.unwrap().is_some()
        );
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), all.next()).await
        {
            if matches!(&event, WatchEvent::Put { record, .. } if record.name == "x") {
                seen_x = true;
            }
        }
    }
    let stored = client
        .get(format!("{PREFIX}/nodes/node-a"), None)
        .await
        .unwrap();
    assert_eq!(
        stored.kvs().len(),
        1,
        "node-a registered again in the new store"
    );
    while node.state() != RegistrationState::Registered {
        tokio::time::timeout(Duration::from_secs(5), node.changed())
            .await
            .expect("registered again");
    }
    assert!(
        registry
            .stats()
            .full_reads
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}
