//! The watch of the prefix: [`follow`] brings every change, the other replicas' included, into
//! the cache; it resumes after an error, and reads everything again when it fell behind a
//! compaction or etcd lost its data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType, KvClient, WatchClient, WatchOptions};
use tokio::sync::RwLock;
use tokio::time::Instant;

use super::cache::Cache;
use super::keys::Keys;
use super::{load, lock};

/// How often the watch asks etcd for progress; no answer within three intervals means it is
/// stuck, and it is opened again.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// What the watch works with.
pub(super) struct Follow {
    pub(super) kv: KvClient,
    pub(super) watch: WatchClient,
    pub(super) keys: Keys,
    pub(super) cache: Arc<Mutex<Cache>>,
    pub(super) gate: Arc<RwLock<()>>,
}

/// Follows the prefix from revision `next` into the cache, for ever: resumes after an error,
/// reads everything again after a compaction or when etcd lost its data.
pub(super) async fn follow(follow: Follow, mut next: i64) {
    let Follow {
        mut kv,
        mut watch,
        keys,
        cache,
        gate,
    } = follow;
    let mut backoff = Duration::from_millis(100);
    let mut reload = false;
    loop {
        let opened = {
            let _step = gate.read().await;
            if !reload && let Ok(current) = kv.get(keys.root.as_str(), None).await {
                let revision = current.header().map_or(0, |header| header.revision());
                if revision + 1 < next {
                    tracing::warn!(
                        revision,
                        expected = next - 1,
                        "etcd's revisions went back (its data was lost): reading everything again"
                    );
                    reload = true;
                }
            }
            if reload {
                match load(&mut kv, &keys).await {
                    Ok((revision, kvs)) => {
                        lock(&cache).reset(revision, &kvs);
                        next = revision + 1;
                        reload = false;
                    }
                    Err(error) => tracing::warn!(%error, "reading etcd again failed; retrying"),
                }
            }
            if reload {
                None
            } else {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(next)
                    .with_progress_notify();
                Some(watch.watch(keys.root.as_str(), Some(options)).await)
            }
        };
        match opened {
            Some(Ok(mut stream)) => {
                backoff = Duration::from_millis(100);
                let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
                let mut heard = Instant::now();
                loop {
                    tokio::select! {
                        message = stream.message() => {
                            let _step = gate.read().await;
                            let response = match message {
                                Ok(Some(response)) => response,
                                Ok(None) => break,
                                Err(error) => {
                                    tracing::warn!(%error, "etcd watch failed; resuming");
                                    break;
                                }
                            };
                            heard = Instant::now();
                            if response.canceled() {
                                if response.compact_revision() > 0 {
                                    tracing::warn!(
                                        compacted = response.compact_revision(),
                                        "etcd compacted the revisions the watch needs: reading everything again"
                                    );
                                    reload = true;
                                } else {
                                    tracing::warn!(reason = response.cancel_reason(), "etcd canceled the watch; resuming");
                                }
                                break;
                            }
                            let mut cache = lock(&cache);
                            for event in response.events() {
                                let Some(kv) = event.kv() else { continue };
                                let Ok(key) = kv.key_str() else { continue };
                                let revision = kv.mod_revision();
                                match event.event_type() {
                                    EventType::Put => cache.see(key, Some(kv.value()), revision),
                                    EventType::Delete => cache.see(key, None, revision),
                                }
                                cache.watched = cache.watched.max(revision);
                                next = next.max(revision + 1);
                            }
                            cache.prune();
                        }
                        _ = ticker.tick() => {
                            if heard.elapsed() > PROGRESS_INTERVAL * 3 {
                                tracing::warn!("etcd watch answered nothing for three intervals; opening it again");
                                break;
                            }
                            if stream.request_progress().await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "etcd watch could not start"),
            None => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
