//! `GET /v1/states/current` and `GET /v1/states/stream` (Server-Sent Events).

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use button_domain::Snapshot;
use futures::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// `GET /v1/countries`: the ten countries with the most presses.
pub async fn countries(State(app): State<AppState>) -> Result<Response, ApiError> {
    let top = button_store::top_countries(&app.pool, 10)
        .await
        .map_err(|e| ApiError::DatabaseUnavailable(e.to_string()))?;
    let countries: Vec<serde_json::Value> = top
        .into_iter()
        .map(|(country, presses)| serde_json::json!({ "country": country, "presses": presses }))
        .collect();
    Ok(axum::Json(serde_json::json!({ "countries": countries })).into_response())
}

/// The newest state, from memory. `ETag` is the state id.
pub async fn current(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = app.current.borrow().clone();
    let etag = format!("\"{}\"", snapshot.id);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(&*snapshot).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Holds one of the capped SSE slots; frees it when the stream is dropped.
pub struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    pub fn acquire(count: &Arc<AtomicUsize>, limit: usize) -> Option<ClientSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        metrics::gauge!("service_sse_clients").increment(1.0);
        Some(ClientSlot(count.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("service_sse_clients").decrement(1.0);
    }
}

/// Sends the current state at once (unless `Last-Event-ID` says the client
/// has it), then every newer state; a slow client skips to the newest.
pub async fn stream(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let limit = app.config.sse_max_clients;
    let slot =
        ClientSlot::acquire(&app.sse_clients, limit).ok_or(ApiError::TooManyClients { limit })?;
    let mut last_sent = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let rx = app.current.clone();
    // An id from the future (another database, say) is not honoured.
    if last_sent.is_some_and(|id| id > rx.borrow().id) {
        last_sent = None;
    }
    let keepalive = Duration::from_millis(app.config.sse_keepalive_ms);
    Ok(Sse::new(states(rx, last_sent, slot, app.shutdown.clone()))
        .keep_alive(KeepAlive::new().interval(keepalive)))
}

fn states(
    rx: crate::feed::Current,
    last_sent: Option<i64>,
    slot: ClientSlot,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (rx, last_sent, slot),
        move |(mut rx, mut last_sent, slot)| {
            let shutdown = shutdown.clone();
            async move {
                loop {
                    let snapshot = rx.borrow_and_update().clone();
                    if last_sent.is_none_or(|id| snapshot.id > id) {
                        last_sent = Some(snapshot.id);
                        return Some((Ok(frame(&snapshot)), (rx, last_sent, slot)));
                    }
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return None },
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        },
    )
}

/// One SSE frame: `event: state`, `id: <state id>`, the state as JSON.
pub fn frame(snapshot: &Snapshot) -> Event {
    let data = serde_json::to_string(snapshot).unwrap_or_else(|_| "{}".to_owned());
    metrics::counter!("service_sse_frames_total").increment(1);
    Event::default()
        .event("state")
        .id(snapshot.id.to_string())
        .data(data)
}
