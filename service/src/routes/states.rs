//! `GET /v1/states/current`, `GET /v1/states/stream` (Server-Sent Events)
//! and `GET /v1/states/ws` (the same states over a WebSocket).

use crate::AppState;
use crate::error::ApiError;
use crate::feed::Published;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `GET /v1/countries`: the ten countries with the most presses, from a
/// copy at most `countries_cache_ms` old (one query per period, however
/// many pages poll it).
pub async fn countries(State(app): State<AppState>) -> Result<Response, ApiError> {
    let body = app
        .countries
        .get_or_refresh(|| async {
            let top = button_store::top_countries(&app.pool, 10)
                .await
                .map_err(|e| ApiError::DatabaseUnavailable(e.to_string()))?;
            let countries: Vec<serde_json::Value> = top
                .into_iter()
                .map(|(country, presses)| {
                    serde_json::json!({ "country": country, "presses": presses })
                })
                .collect();
            Ok(Bytes::from(
                serde_json::json!({ "countries": countries }).to_string(),
            ))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A value reloaded at most once per `ttl`. The lock is held across the
/// reload, so requests arriving during one wait for its result rather than
/// each reloading; a failed reload is not kept.
pub struct Cached<T> {
    ttl: Duration,
    slot: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Cached<T> {
    /// A zero `ttl` reloads on every call.
    pub fn new(ttl: Duration) -> Cached<T> {
        Cached {
            ttl,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn get_or_refresh<E, F>(&self, load: impl FnOnce() -> F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let mut slot = self.slot.lock().await;
        if let Some((at, value)) = &*slot
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let value = load().await?;
        *slot = Some((Instant::now(), value.clone()));
        Ok(value)
    }
}

/// The newest state, from memory. `ETag` is the state id.
pub async fn current(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let published = app.current.borrow().clone();
    let etag = format!("\"{}\"", published.id);
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
        // The feed's JSON of this state, not a new serialisation.
        (
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(published.json.clone()),
        )
            .into_response()
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

/// Open streams per client pseudonym. Touched once when a stream opens and
/// once when it closes, never per frame; a client with none has no entry.
pub type StreamsPerClient = Arc<Mutex<HashMap<String, usize>>>;

/// Holds one of a client's capped SSE slots; frees it when the stream is
/// dropped (the client left or the service is shutting down).
pub struct PerClientSlot {
    streams: StreamsPerClient,
    client: String,
}

impl PerClientSlot {
    pub fn acquire(streams: &StreamsPerClient, client: String, limit: usize) -> Option<Self> {
        // A poisoned lock only means a panic elsewhere mid-update of a
        // counter; the counts are still usable.
        let mut map = streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(client.clone()).or_insert(0);
        if *open >= limit {
            if *open == 0 {
                map.remove(&client);
            }
            return None;
        }
        *open += 1;
        Some(PerClientSlot {
            streams: streams.clone(),
            client,
        })
    }
}

impl Drop for PerClientSlot {
    fn drop(&mut self) {
        let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.client) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// Both slots a stream holds for as long as it is open.
struct StreamSlots {
    _global: ClientSlot,
    _per_client: Option<PerClientSlot>,
}

/// The slots a new stream takes, SSE or WebSocket alike: both count
/// against the same global cap and the same per-client cap.
fn stream_slots(
    app: &AppState,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Result<StreamSlots, ApiError> {
    // The per-client cap first: one client filling it must not take slots
    // of the global cap from everyone else, even for a moment.
    let per_client = match app.config.sse_max_per_client {
        0 => None,
        limit => {
            let client = app
                .guards
                .identity
                .of(connect.map(|Extension(ConnectInfo(a))| a), headers);
            Some(
                PerClientSlot::acquire(&app.sse_per_client, client, limit)
                    .ok_or(ApiError::TooManyStreams { limit })?,
            )
        }
    };
    let limit = app.config.sse_max_clients;
    Ok(StreamSlots {
        _global: ClientSlot::acquire(&app.sse_clients, limit)
            .ok_or(ApiError::TooManyClients { limit })?,
        _per_client: per_client,
    })
}

/// The state id the client says it has (`Last-Event-ID`), unless it is
/// from the future (another database, say).
fn last_sent(headers: &HeaderMap, rx: &crate::feed::Current) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&id| id <= rx.borrow().id)
}

/// Sends the current state at once (unless `Last-Event-ID` says the client
/// has it), then every newer state; a slow client skips to the newest.
pub async fn stream(
    State(app): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let slot = stream_slots(&app, connect, &headers)?;
    let rx = app.current.clone();
    let last_sent = last_sent(&headers, &rx);
    let keepalive = Duration::from_millis(app.config.sse_keepalive_ms);
    let body =
        axum::body::Body::from_stream(states(rx, last_sent, slot, keepalive, app.shutdown.clone()));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    ))
}

/// A comment line: keeps idle connections (and proxies) from timing out.
const KEEPALIVE: &[u8] = b":\n\n";

/// The stream's body: each state's frame as the feed rendered it, shared
/// with every other stream (the body is written straight from those bytes,
/// never copied per client), and a comment line after `keepalive` idle.
fn states(
    rx: crate::feed::Current,
    last_sent: Option<i64>,
    slot: StreamSlots,
    keepalive: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(
        (rx, last_sent, slot),
        move |(mut rx, mut last_sent, slot)| {
            let shutdown = shutdown.clone();
            async move {
                let chunk = tokio::select! {
                    next = newer(&mut rx, &mut last_sent) => {
                        frames_sent().increment(1);
                        next?.sse.clone()
                    }
                    _ = tokio::time::sleep(keepalive) => Bytes::from_static(KEEPALIVE),
                    _ = shutdown.cancelled() => return None,
                };
                Some((Ok(chunk), (rx, last_sent, slot)))
            }
        },
    )
}

/// `service_sse_frames_total`, looked up once rather than per frame: with
/// ten thousand clients the lookup is paid ten thousand times a state.
fn frames_sent() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("service_sse_frames_total"))
}

/// The newest state past `last_sent` (waiting for one if need be), which
/// becomes `last_sent`; `None` once the feed is gone. Only the newest is
/// ever looked at, so a client that is slow to take states skips the ones
/// it missed: the latest-value rule of both transports.
async fn newer(
    rx: &mut crate::feed::Current,
    last_sent: &mut Option<i64>,
) -> Option<Arc<Published>> {
    loop {
        let published = rx.borrow_and_update().clone();
        if last_sent.is_none_or(|id| published.id > id) {
            *last_sent = Some(published.id);
            return Some(published);
        }
        rx.changed().await.ok()?;
    }
}

/// `GET /v1/states/ws`: the SSE stream's states over a WebSocket, one
/// text message per state carrying exactly an SSE frame's `data`. Same
/// caps (refused with the same JSON before the upgrade), same first state
/// and `Last-Event-ID`, same skipping to the newest.
pub async fn ws(
    State(app): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| ApiError::NotWebSocket(e.body_text()))?;
    let slot = stream_slots(&app, connect, &headers)?;
    let rx = app.current.clone();
    let last_sent = last_sent(&headers, &rx);
    let keepalive = Duration::from_millis(app.config.sse_keepalive_ms);
    let shutdown = app.shutdown.clone();
    Ok(upgrade
        // A client only ever sends Close and pongs: a small read buffer
        // (the library's default is 128 KiB, allocated per connection)
        // and a small message limit, so an idle socket costs about what
        // an SSE stream does and a client cannot make the service buffer
        // a large message it would ignore.
        .read_buffer_size(WS_INCOMING_LIMIT)
        .max_message_size(WS_INCOMING_LIMIT)
        .max_frame_size(WS_INCOMING_LIMIT)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            send_states(socket, rx, last_sent, keepalive, shutdown).await;
            drop(slot);
        }))
}

/// The most a WebSocket client's message may be, and the read buffer.
const WS_INCOMING_LIMIT: usize = 4 * 1024;

async fn send_states(
    mut socket: WebSocket,
    mut rx: crate::feed::Current,
    mut last_sent: Option<i64>,
    keepalive: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A send that waits on a slow client's socket holds no state: the
        // next one looked at after it is the newest, as on SSE.
        let message = tokio::select! {
            next = newer(&mut rx, &mut last_sent) => match next {
                Some(published) => {
                    frames_sent().increment(1);
                    Message::Text(published.json.clone())
                }
                None => return,
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
            incoming = socket.recv() => match incoming {
                // The library queues the answering Close; the next read
                // flushes it and then ends.
                Some(Ok(Message::Close(_))) => {
                    while let Some(Ok(_)) = socket.recv().await {}
                    return;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            },
            _ = shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: Utf8Bytes::from_static("shutting down"),
                    })))
                    .await;
                return;
            }
        };
        if socket.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn a_cached_value_is_loaded_once_per_ttl_even_by_concurrent_callers() {
        let cache = Arc::new(Cached::<u32>::new(Duration::from_millis(200)));
        let loads = Arc::new(AtomicU32::new(0));
        let get = |cache: Arc<Cached<u32>>, loads: Arc<AtomicU32>| async move {
            cache
                .get_or_refresh(|| async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, ()>(loads.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await
                .expect("loads")
        };
        let first = futures::future::join_all(
            (0..16).map(|_| tokio::spawn(get(cache.clone(), loads.clone()))),
        )
        .await;
        assert!(first.into_iter().all(|v| v.expect("task") == 1));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for 16 callers");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            get(cache.clone(), loads.clone()).await,
            2,
            "reloaded past the ttl"
        );

        // A failed load is not kept, and ttl 0 always loads.
        let failing = Cached::<u32>::new(Duration::from_secs(60));
        assert_eq!(
            failing.get_or_refresh(|| async { Err("down") }).await,
            Err("down")
        );
        assert_eq!(
            failing.get_or_refresh(|| async { Ok::<_, &str>(7) }).await,
            Ok(7)
        );
        let uncached = Cached::<u32>::new(Duration::ZERO);
        assert_eq!(
            uncached.get_or_refresh(|| async { Ok::<_, ()>(1) }).await,
            Ok(1)
        );
        assert_eq!(
            uncached.get_or_refresh(|| async { Ok::<_, ()>(2) }).await,
            Ok(2)
        );
    }
}
