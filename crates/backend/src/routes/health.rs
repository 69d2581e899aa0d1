//! `GET /health/dependencies`: a diagnostic view of each dependency, for people and
//! dashboards. No probe uses it (seed 004): a Redis outage must not take every replica out
//! of its Service, because the replicas can still answer, with a clear 503. It also shows how
//! long requests have been waiting on Redis over the latency window: the part of their latency
//! that readiness, shedding and the HPA leave out.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::app::AppState;

/// `/health/dependencies`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health/dependencies", get(dependencies))
}

/// A diagnostic view of each dependency; no probe uses it.
#[utoipa::path(
    get,
    path = "/health/dependencies",
    tag = "probes",
    responses(
        (status = 200, description = "`redis_primary` (`up` with `address` and `latency_ms`, or `down` with `address` and `error`), `redis_waits` (the windowed p99 and p99.9 of the time a request waited on Redis, in milliseconds, and how many requests waited, over `window_secs`), `live_updates` (the default book's tail: `following` or `reconnecting`, `last_id`; `other_books`: how many other books have a live tail here), `append_strategy`; with REDIS_CLUSTER_NODES, `redis_cluster` (every node the cluster describes: `address`, `role` (`primary` or `replica`), `reachable`, `serves_guestbook` (the default book's node), `slots` (how many slots it serves))", body = Object),
    )
)]
pub(crate) async fn dependencies(State(app): State<AppState>) -> Json<Value> {
    let address = app.store.primary_address();
    let primary = match app.store.ping().await {
        Ok(rtt) => {
            json!({"status": "up", "address": address, "latency_ms": rtt.as_secs_f64() * 1e3})
        }
        Err(err) => json!({"status": "down", "address": address, "error": err.to_string()}),
    };
    let waits = app.pressure.dependency_waits();
    let mut view = json!({
        "redis_primary": primary,
        "redis_waits": {
            "p99_ms": waits.p99 * 1e3,
            "p999_ms": waits.p999 * 1e3,
            "samples": waits.samples,
            "window_secs": app.pressure.args().latency_window_secs,
        },
        "live_updates": {
            "status": if app.feeds.default_feed().is_following() { "following" } else { "reconnecting" },
            "last_id": app.feeds.default_feed().last_id(),
            "other_books": app.feeds.live_books(),
        },
        "append_strategy": app.store.strategy().as_str(),
    });
    if let Some(nodes) = app.store.cluster_nodes() {
        view["redis_cluster"] = json!(nodes);
    }
    Json(view)
}
