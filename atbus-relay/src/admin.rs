//! The relay's admin HTTP side: health and readiness for orchestrators, Prometheus metrics, JSON
//! views of the nodes, connections and routes, and a watch of the nodes as server-sent events
//! (`/v1/nodes?watch=1&heartbeat=N`: `init` with the full list and id 1, then `update` and
//! `delete` with increasing ids, and `heartbeat` with id 0 every N seconds, as in the Lainlet seed),
//! and of the discovery records (`/v1/records`, see `admin_records.rs`).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atbus_core::runtime::{Node, NodeEvent};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt as _;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Admin {
    pub node: Node,
    /// The registry discovery is served from (`/v1/records`).
    pub registry: Arc<dyn atbus_discovery::Registry>,
    /// False once the relay shuts down: `/readyz` answers 503.
    pub ready: Arc<AtomicBool>,
}

/// Serves the admin API on `listener` until `stop` turns true.
pub(crate) async fn serve(listener: TcpListener, admin: Admin, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/nodes", get(nodes))
        .route("/v1/connections", get(connections))
        .route("/v1/routes", get(routes))
        .route("/v1/records", get(crate::admin_records::records))
        .with_state(admin);
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "admin HTTP server stopped");
    }
}

async fn readyz(State(admin): State<Admin>) -> Response {
    match admin.ready.load(Ordering::Relaxed) {
        true => "ready\n".into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// The nodes this relay holds (0 hops) and those other relays offered.
fn node_list(node: &Node) -> Vec<Value> {
    let direct: BTreeSet<String> = node
        .connection_info()
        .into_iter()
        .filter_map(|connection| connection.peer)
        .collect();
    let relays: BTreeSet<String> = node
        .relay_routes()
        .into_iter()
        .map(|(_, relay, _)| relay)
        .collect();
    let mut list: Vec<Value> = direct
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "kind": if relays.contains(name) { "relay" } else { "node" },
                "hops": 0,
            })
        })
        .collect();
    for (name, via, hops) in node.relay_routes() {
        if !direct.contains(&name) {
            list.push(json!({ "name": name, "kind": "node", "via": via, "hops": hops }));
        }
    }
    list
}

#[derive(Deserialize)]
struct WatchQuery {
    #[serde(default)]
    watch: Option<String>,
    #[serde(default)]
    heartbeat: Option<u64>,
}

async fn nodes(State(admin): State<Admin>, Query(query): Query<WatchQuery>) -> Response {
    let watching = query
        .watch
        .as_deref()
        .is_some_and(|watch| matches!(watch, "1" | "true"));
    if !watching {
        return Json(node_list(&admin.node)).into_response();
    }
    let heartbeat = Duration::from_secs(query.heartbeat.unwrap_or(30).max(1));
    Sse::new(watch_stream(admin.node, heartbeat))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(3600)))
        .into_response()
}

/// `init` (the list, id 1), then `update` / `delete` for nodes that connect or go, and
/// `heartbeat` (id 0) every `heartbeat`.
fn watch_stream(node: Node, heartbeat: Duration) -> impl Stream<Item = Result<Event, Infallible>> {
    let events = node.events();
    let init = Event::default()
        .event("init")
        .id("1")
        .data(Value::Array(node_list(&node)).to_string());
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (events, ticker, 1u64);
    stream::once(async move { Ok(init) }).chain(stream::unfold(
        state,
        |(mut events, mut ticker, mut id)| async move {
            loop {
                let event = tokio::select! {
                    _ = ticker.tick() => Event::default().event("heartbeat").id("0").data("{}"),
                    received = events.recv() => match received {
                        Ok(NodeEvent::Connected { peer, .. }) => {
                            id += 1;
                            Event::default()
                                .event("update")
                                .id(id.to_string())
                                .data(json!({ "name": peer, "hops": 0 }).to_string())
                        }
                        Ok(NodeEvent::PeerUnreachable { peer }) => {
                            id += 1;
                            Event::default()
                                .event("delete")
                                .id(id.to_string())
                                .data(json!({ "name": peer }).to_string())
                        }
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            id += 1;
                            Event::default().event("error").id(id.to_string()).data(
                                json!({ "error": format!("{missed} events missed: reload the list") })
                                    .to_string(),
                            )
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                };
                return Some((Ok(event), (events, ticker, id)));
            }
        },
    ))
}

async fn connections(State(admin): State<Admin>) -> Json<Value> {
    let list: Vec<Value> = admin
        .node
        .connection_info()
        .into_iter()
        .map(|connection| {
            json!({
                "id": connection.id.0,
                "remote": connection.remote,
                "peer": connection.peer,
                "rtt_us": connection.rtt.map(|rtt| rtt.as_micros() as u64),
                "congestion_window": connection.congestion_window.map(|(window, _)| window),
                "in_flight": connection.congestion_window.map(|(_, in_flight)| in_flight),
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn routes(State(admin): State<Admin>) -> Json<Value> {
    let list: Vec<Value> = admin
        .node
        .relay_routes()
        .into_iter()
        .map(|(node, via, hops)| json!({ "node": node, "via": via, "hops": hops }))
        .collect();
    Json(Value::Array(list))
}

/// Upper bounds of the RTT histogram's buckets, in seconds.
const RTT_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

async fn metrics(State(admin): State<Admin>) -> Response {
    let node = &admin.node;
    let stats = node.stats();
    let mut out = String::from(
        "# HELP atbus_relay_up 1 while the relay runs.\n# TYPE atbus_relay_up gauge\natbus_relay_up 1\n",
    );
    let traffic = node.traffic();
    let mut write = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let by_transport = |f: &dyn Fn(&atbus_core::runtime::TrafficCounters) -> u64| {
        traffic
            .iter()
            .map(|(transport, counters)| {
                (format!("{{transport=\"{transport}\"}}"), f(counters) as f64)
            })
            .collect::<Vec<_>>()
    };
    write(
        "atbus_relay_connections",
        "gauge",
        "Open connections, by transport.",
        by_transport(&|c| c.connections_opened - c.connections_closed),
    );
    write(
        "atbus_relay_bytes_received_total",
        "counter",
        "Bytes received, by transport.",
        by_transport(&|c| c.bytes_received),
    );
    write(
        "atbus_relay_bytes_sent_total",
        "counter",
        "Bytes sent, by transport.",
        by_transport(&|c| c.bytes_sent),
    );
    write(
        "atbus_relay_transmits_sent_total",
        "counter",
        "Transmits handed to the transports, by transport.",
        by_transport(&|c| c.transmits_sent),
    );
    write(
        "atbus_relay_frames_received_total",
        "counter",
        "Frames received and accepted.",
        vec![(String::new(), stats.frames_received as f64)],
    );
    write(
        "atbus_relay_frames_sent_total",
        "counter",
        "Frames sent.",
        vec![(String::new(), stats.frames_sent as f64)],
    );
    write(
        "atbus_relay_forwards_total",
        "counter",
        "Frames forwarded to another node or relay.",
        vec![(String::new(), stats.frames_forwarded as f64)],
    );
    write(
        "atbus_relay_forward_drops_total",
        "counter",
        "Frames not forwarded, by reason.",
        stats
            .forward_dropped
            .iter()
            .map(|(reason, count)| (format!("{{reason=\"{reason}\"}}"), *count as f64))
            .collect(),
    );
    write(
        "atbus_relay_forward_queue_bytes",
        "gauge",
        "Bytes of forwarded frames waiting for slow connections.",
        vec![(String::new(), node.forward_queued_bytes() as f64)],
    );
    write(
        "atbus_relay_handshake_failures_total",
        "counter",
        "Connections refused in their handshake, by the rule they broke.",
        stats
            .auth_failures
            .iter()
            .map(|(failure, count)| {
                (
                    format!("{{reason=\"{}\"}}", failure.as_str()),
                    *count as f64,
                )
            })
            .collect(),
    );
    write(
        "atbus_relay_routes",
        "gauge",
        "Nodes other relays offered.",
        vec![(String::new(), node.relay_routes().len() as f64)],
    );
    let rtts: Vec<f64> = node
        .connection_info()
        .into_iter()
        .filter_map(|connection| connection.rtt)
        .map(|rtt| rtt.as_secs_f64())
        .collect();
    let mut buckets: Vec<(String, f64)> = RTT_BUCKETS
        .iter()
        .map(|&le| {
            let count = rtts.iter().filter(|&&rtt| rtt <= le).count();
            (format!("_bucket{{le=\"{le}\"}}"), count as f64)
        })
        .collect();
    buckets.push(("_bucket{le=\"+Inf\"}".into(), rtts.len() as f64));
    buckets.push(("_sum".into(), rtts.iter().sum()));
    buckets.push(("_count".into(), rtts.len() as f64));
    write(
        "atbus_relay_connection_rtt_seconds",
        "histogram",
        "Smoothed round-trip times of the open connections.",
        buckets,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
