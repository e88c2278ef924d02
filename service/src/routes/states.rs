//! `GET /v1/states/current` and `GET /v1/states/stream` (Server-Sent Events).

use crate::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use button_domain::Snapshot;
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

/// Sends the current state at once (unless `Last-Event-ID` says the client
/// has it), then every newer state; a slow client skips to the newest.
pub async fn stream(
    State(app): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // The per-client cap first: one client filling it must not take slots
    // of the global cap from everyone else, even for a moment.
    let per_client = match app.config.sse_max_per_client {
        0 => None,
        limit => {
            let client = app
                .guards
                .identity
                .of(connect.map(|Extension(ConnectInfo(a))| a), &headers);
            Some(
                PerClientSlot::acquire(&app.sse_per_client, client, limit)
                    .ok_or(ApiError::TooManyStreams { limit })?,
            )
        }
    };
    let limit = app.config.sse_max_clients;
    let slot = StreamSlots {
        _global: ClientSlot::acquire(&app.sse_clients, limit)
            .ok_or(ApiError::TooManyClients { limit })?,
        _per_client: per_client,
    };
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
    let body = axum::body::Body::from_stream(states(
        rx,
        last_sent,
        slot,
        app.frames.clone(),
        keepalive,
        app.shutdown.clone(),
    ));
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

fn states(
    rx: crate::feed::Current,
    last_sent: Option<i64>,
    slot: StreamSlots,
    frames: Arc<Frames>,
    keepalive: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(
        (rx, last_sent, slot),
        move |(mut rx, mut last_sent, slot)| {
            let shutdown = shutdown.clone();
            let frames = frames.clone();
            async move {
                loop {
                    let snapshot = rx.borrow_and_update().clone();
                    if last_sent.is_none_or(|id| snapshot.id > id) {
                        last_sent = Some(snapshot.id);
                        let frame = frames.of(&snapshot).sse.clone();
                        return Some((Ok(frame), (rx, last_sent, slot)));
                    }
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return None },
                        _ = tokio::time::sleep(keepalive) => {
                            return Some((Ok(Bytes::from_static(KEEPALIVE)), (rx, last_sent, slot)));
                        }
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        },
    )
}

/// A state as every stream sends it, rendered once.
pub struct Rendered {
    pub id: i64,
    /// The whole SSE frame: `event: state`, `id: <state id>`, the JSON.
    pub sse: Bytes,
    /// The state's JSON alone (a view into `sse`, not a copy).
    pub json: Bytes,
}

/// The newest rendered state, shared by every stream: with ten thousand
/// clients, serialising per client was the fan-out's main cost.
#[derive(Default)]
pub struct Frames {
    newest: Mutex<Option<Arc<Rendered>>>,
}

impl Frames {
    /// `snapshot` rendered: by the first stream that needs it, then shared.
    pub fn of(&self, snapshot: &Snapshot) -> Arc<Rendered> {
        frames_sent().increment(1);
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = newest.as_ref().filter(|r| r.id == snapshot.id) {
            return r.clone();
        }
        let rendered = Arc::new(render(snapshot));
        // A stream behind the others (it asked for an older state) must
        // not evict the newest.
        if newest.as_ref().is_none_or(|r| r.id < snapshot.id) {
            *newest = Some(rendered.clone());
        }
        rendered
    }
}

/// `snapshot` as an SSE frame and as JSON, from one serialisation.
pub fn render(snapshot: &Snapshot) -> Rendered {
    let json = serde_json::to_vec(snapshot).unwrap_or_else(|_| b"{}".to_vec());
    let head = format!("event: state\nid: {}\ndata: ", snapshot.id);
    let mut sse = Vec::with_capacity(head.len() + json.len() + 2);
    sse.extend_from_slice(head.as_bytes());
    sse.extend_from_slice(&json);
    sse.extend_from_slice(b"\n\n");
    let sse = Bytes::from(sse);
    let json = sse.slice(head.len()..head.len() + json.len());
    Rendered {
        id: snapshot.id,
        sse,
        json,
    }
}

/// `service_sse_frames_total`, looked up once: the macro's lookup per
/// frame showed at ten thousand clients.
fn frames_sent() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("service_sse_frames_total"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn a_state_is_rendered_once_for_every_stream_and_an_older_one_does_not_evict_it() {
        let frames = Frames::default();
        let mut newer = Snapshot::genesis("rules".to_owned());
        newer.id = 7;
        newer.counter = 42;
        let first = frames.of(&newer);
        assert!(
            Arc::ptr_eq(&first, &frames.of(&newer)),
            "shared, not rendered again"
        );
        let json = serde_json::to_vec(&newer).expect("serialises");
        assert_eq!(first.json.as_ref(), json.as_slice());
        assert_eq!(
            first.sse.as_ref(),
            [b"event: state\nid: 7\ndata: ".as_slice(), &json, b"\n\n"].concat()
        );
        let mut older = newer.clone();
        older.id = 6;
        assert_eq!(frames.of(&older).id, 6);
        assert!(Arc::ptr_eq(&first, &frames.of(&newer)), "the newest stays");
    }

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
