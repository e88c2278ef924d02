//! `/health` checks every dependency; `/health/live` says the process
//! answers; `/health/ready` says it can take presses.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    let broker = app.producer.broker_up();
    let ready = broker && !app.shutdown.is_cancelled();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "status": if ready { "ready" } else { "not_ready" }, "broker": broker })),
    )
}

pub async fn health(State(app): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(1);
    let postgres = matches!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&app.pool)).await,
        Ok(Ok(_))
    );
    let broker = app.producer.broker_up();
    let redis = app.redis_up.load(Ordering::Relaxed);
    let all = postgres && broker && redis;
    let broker_word = if app.producer.uses_broker() {
        if broker { "up" } else { "down" }
    } else {
        "not_used"
    };
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "up" } else { "down" };
    (
        status,
        Json(json!({
            "status": if all { "ok" } else { "degraded" },
            "checks": { "postgres": word(postgres), "redis": word(redis), "broker": broker_word },
            "state_id": app.current.borrow().id,
            // What a load generator must know to press here.
            "guards": {
                "pow_difficulty": app.guards.pow.as_ref().map_or(0, |p| p.difficulty),
                "rate_limit_per_s": app.guards.rate.map_or(0.0, |r| r.per_second),
                "rate_limit_burst": app.guards.rate.map_or(0, |r| r.burst),
            },
            "sse_clients": app.sse_clients.load(Ordering::Relaxed),
        })),
    )
}
