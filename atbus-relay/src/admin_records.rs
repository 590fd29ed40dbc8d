//! The admin view of discovery: `/v1/records?selector=S` lists the registry's records as JSON,
//! and `/v1/records?watch=1&heartbeat=N&selector=S` follows them as server-sent events in the
//! Lainlet seed's format: `init` (the records, id 1), then `update` (a record registered or
//! changed) and `delete` (a name withdrawn) with increasing ids, `heartbeat` (id 0) every N
//! seconds, and `error` (a bad selector, or the registry closing).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use atbus_discovery::{Registry, Selector, WatchEvent};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::Admin;

#[derive(Deserialize)]
pub(crate) struct RecordsQuery {
    #[serde(default)]
    watch: Option<String>,
    #[serde(default)]
    heartbeat: Option<u64>,
    #[serde(default)]
    selector: Option<String>,
}

pub(crate) async fn records(
    State(admin): State<Admin>,
    Query(query): Query<RecordsQuery>,
) -> Response {
    let selector = match query.selector.as_deref().unwrap_or("").parse::<Selector>() {
        Ok(selector) => selector,
        Err(error) => {
            let body = json!({ "error": format!("selector: {error}") });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let watching = query
        .watch
        .as_deref()
        .is_some_and(|watch| matches!(watch, "1" | "true"));
    if !watching {
        return match admin.registry.list(&selector).await {
            Ok(records) => Json(serde_json::to_value(records).unwrap_or_default()).into_response(),
            Err(error) => {
                let body = json!({ "error": error.to_string() });
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            }
        };
    }
    let heartbeat = Duration::from_secs(query.heartbeat.unwrap_or(30).max(1));
    Sse::new(watch_records(
        Arc::clone(&admin.registry),
        selector,
        heartbeat,
    ))
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(3600)))
    .into_response()
}

fn watch_records(
    registry: Arc<dyn Registry>,
    selector: Selector,
    heartbeat: Duration,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (registry, selector, None, ticker, 0u64);
    stream::unfold(
        state,
        |(registry, selector, watch, mut ticker, mut id)| async move {
            let mut watch = match watch {
                Some(watch) => watch,
                None => match registry.watch(selector.clone()).await {
                    Ok(watch) => watch,
                    Err(error) => {
                        let event = Event::default()
                            .event("error")
                            .id("1")
                            .data(json!({ "error": error.to_string() }).to_string());
                        return Some((Ok(event), (registry, selector, None, ticker, u64::MAX)));
                    }
                },
            };
            if id == u64::MAX {
                return None;
            }
            let event = tokio::select! {
                _ = ticker.tick() => Event::default().event("heartbeat").id("0").data("{}"),
                next = watch.next() => {
                    id += 1;
                    match next {
                        Some(WatchEvent::Init { records, .. }) => Event::default()
                            .event("init")
                            .id(id.to_string())
                            .data(serde_json::to_value(records).unwrap_or(Value::Null).to_string()),
                        Some(WatchEvent::Put { record, revision }) => Event::default()
                            .event("update")
                            .id(id.to_string())
                            .data(json!({ "revision": revision, "record": record }).to_string()),
                        Some(WatchEvent::Delete { name, revision }) => Event::default()
                            .event("delete")
                            .id(id.to_string())
                            .data(json!({ "revision": revision, "name": name }).to_string()),
                        None => Event::default()
                            .event("error")
                            .id(id.to_string())
                            .data(json!({ "error": "the registry closed" }).to_string()),
                    }
                }
            };
            Some((Ok(event), (registry, selector, Some(watch), ticker, id)))
        },
    )
}
