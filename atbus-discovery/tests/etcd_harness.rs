//! The etcd test harness works: a real etcd on loopback ports serves puts and gets, its metrics
//! show a watch being opened, it compacts on demand, and a server killed with SIGKILL and started
//! again on the same ports still has its data.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, WatchOptions};
use support::etcd::EtcdServer;

const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

#[tokio::test]
async fn put_get_round_trip() {
    let etcd = EtcdServer::new().await;
    assert!(
        etcd.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        etcd.endpoint()
    );
    let mut client = etcd.client().await;
    client.put("harness/key", "value", None).await.expect("put");
    let response = client.get("harness/key", None).await.expect("get");
    let values: Vec<&[u8]> = response.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, [b"value"]);
}

#[tokio::test]
async fn watcher_metric_counts_an_opened_watch() {
    let etcd = EtcdServer::new().await;
    let before = etcd
        .metric(WATCHERS)
        .expect("etcd exports the watcher gauge");
    let mut client = etcd.client().await;
    let mut watch = client
        .watch("harness/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let created = watch
        .message()
        .await
        .expect("watch response")
        .expect("watch stream open");
    assert!(
        created.created(),
        "the first response of a watch confirms its creation"
    );
    let after = etcd
        .wait_for_metric(WATCHERS, Duration::from_secs(3), |value| {
            value >= before + 1.0
        })
        .await;
    assert_eq!(after, before + 1.0);
    drop(watch);
}

#[tokio::test]
async fn compact_discards_old_revisions() {
    let etcd = EtcdServer::new().await;
    let mut client = etcd.client().await;
    let first = client.put("harness/key", "1", None).await.expect("put");
    let first = first.header().expect("header").revision();
    client.put("harness/key", "2", None).await.expect("put");
    let current = etcd.revision().await;
    assert!(current > first);
    etcd.compact(current).await;
    let old = client
        .get("harness/key", Some(GetOptions::new().with_revision(first)))
        .await;
    let err = old.expect_err("a get at a compacted revision fails");
    assert!(err.to_string().contains("compacted"), "{err}");
}

#[tokio::test]
async fn stopped_server_fails_and_restart_keeps_the_data() {
    let mut etcd = EtcdServer::new().await;
    let endpoint = etcd.endpoint();
    let mut client = etcd.client().await;
    client
        .put("harness/durable", "kept", None)
        .await
        .expect("put");

    etcd.stop();
    assert!(!etcd.is_running());
    assert_eq!(
        etcd.metric(WATCHERS),
        None,
        "no metrics from a stopped etcd"
    );
    let started = Instant::now();
    let get = tokio::time::timeout(Duration::from_secs(1), client.get("harness/durable", None));
    // A get fails or times out; it never succeeds.
    if let Ok(Ok(response)) = get.await {
        panic!("a stopped etcd answered a get: {response:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    etcd.start().await;
    assert!(etcd.is_running());
    assert_eq!(etcd.endpoint(), endpoint, "a restart keeps the ports");
    let mut client = etcd.client().await;
    let response = client
        .get("harness/durable", None)
        .await
        .expect("get after restart");
    let values: Vec<&[u8]> = response.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, [b"kept"]);
}

#[tokio::test]
async fn drop_removes_the_data_dir() {
    let etcd = EtcdServer::new().await;
    let data = etcd.data_dir();
    assert!(
        data.join("member").is_dir(),
        "etcd writes its data in {}",
        data.display()
    );
    assert!(etcd.log_path().is_file());
    let dir = data
        .parent()
        .expect("the data dir is inside the temp dir")
        .to_owned();
    drop(etcd);
    assert!(!dir.exists(), "{} outlives its server", dir.display());
}
