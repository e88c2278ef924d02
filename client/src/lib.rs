//! Clients for driving a running stack from tests: presses over HTTP, a
//! state listener over TCP (SSE or WebSocket, [`ws`]), and a ledger of
//! accepted presses that says when a state covers all of them.

pub mod browser;
pub mod ws;

use button_domain::Snapshot;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// A 202 answer. `partition` and `offset` are where the press is in the
/// log the reducer reads; ingest `outbox` answers with `outbox_id` instead
/// (the press reaches the topic later, through the relay).
#[derive(Debug, Clone, Deserialize)]
pub struct Accepted {
    pub request_id: String,
    #[serde(default)]
    pub partition: Option<i32>,
    #[serde(default)]
    pub offset: Option<i64>,
    #[serde(default)]
    pub outbox_id: Option<i64>,
    pub accepted_at_ms: i64,
}

impl Accepted {
    /// `(partition, offset)` when the answer names a log position.
    pub fn position(&self) -> Option<(i32, i64)> {
        Some((self.partition?, self.offset?))
    }
}

/// A non-202 answer: status and the stable `error` code.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub status: u16,
    pub code: String,
}

/// A press answer as received.
#[derive(Debug, Clone)]
pub struct PressAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl PressAnswer {
    pub fn code(&self) -> Option<&str> {
        self.body["error"].as_str()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client with defaults builds");
        Api {
            http,
            base: base.into(),
        }
    }

    /// An API over a client the caller tuned (a load generator's pool).
    pub fn with_http(http: reqwest::Client, base: impl Into<String>) -> Api {
        Api {
            http,
            base: base.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn press(&self) -> Result<Accepted, Rejected> {
        self.press_with(None).await
    }

    /// A press, with a solved challenge when the service asks for proof
    /// of work. `Rejected::status` is 0 when no answer came.
    pub async fn press_with(&self, pow: Option<serde_json::Value>) -> Result<Accepted, Rejected> {
        let body = match pow {
            Some(pow) => serde_json::json!({ "pow": pow }).to_string(),
            None => "{}".to_owned(),
        };
        let response = self
            .http
            .post(self.url("/v1/events/press"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Rejected {
                status: 0,
                code: format!("transport: {e}"),
            })?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status == 202 {
            serde_json::from_value(body).map_err(|e| Rejected {
                status,
                code: format!("bad 202 body: {e}"),
            })
        } else {
            Err(Rejected {
                status,
                code: body["error"].as_str().unwrap_or("<no code>").to_owned(),
            })
        }
    }

    /// A press with any body and headers; the whole answer.
    pub async fn press_raw(
        &self,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<PressAnswer> {
        let mut request = self
            .http
            .post(self.url("/v1/events/press"))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or_default();
        Ok(PressAnswer {
            status,
            headers,
            body,
        })
    }

    /// `GET /v1/challenge`, solved: the `pow` a press carries.
    pub async fn solved_challenge(&self) -> anyhow::Result<serde_json::Value> {
        let response = self.http.get(self.url("/v1/challenge")).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /v1/challenge answered {}",
            response.status()
        );
        let mut challenge: serde_json::Value = response.json().await?;
        let id = challenge["challenge_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no challenge_id in {challenge}"))?
            .to_owned();
        let difficulty = challenge["difficulty"].as_u64().unwrap_or(0) as u32;
        let nonce =
            tokio::task::spawn_blocking(move || button_domain::pow::solve(&id, difficulty)).await?;
        challenge["nonce"] = serde_json::Value::String(nonce);
        Ok(challenge)
    }

    pub async fn current(&self) -> anyhow::Result<Snapshot> {
        Ok(self
            .http
            .get(self.url("/v1/states/current"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

/// Presses `n` times with `concurrency` requests in flight; returns every
/// answer.
pub async fn press_many(
    api: &Api,
    n: usize,
    concurrency: usize,
) -> Vec<Result<Accepted, Rejected>> {
    futures::stream::iter(0..n)
        .map(|_| api.press())
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Presses in the background, in rounds of 40, 8 at a time, until
/// stopped; refusals are tallied by status and code, not fatal.
pub struct Presser {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Ledger, BTreeMap<String, usize>)>,
}

impl Presser {
    pub fn start(api: Api) -> Presser {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let task = tokio::spawn(async move {
            let mut ledger = Ledger::default();
            let mut refused = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for answer in press_many(&api, 40, 8).await {
                    match answer {
                        Ok(a) => ledger.record(&a),
                        Err(r) => {
                            let code = if r.status == 0 {
                                "transport".to_owned()
                            } else {
                                format!("{} {}", r.status, r.code)
                            };
                            *refused.entry(code).or_insert(0) += 1;
                        }
                    }
                }
            }
            (ledger, refused)
        });
        Presser { done, task }
    }

    /// Ends after the round under way: the accepted presses and the
    /// refusals by `"<status> <code>"` (`"transport"` when none came).
    pub async fn stop(self) -> (Ledger, BTreeMap<String, usize>) {
        self.done.store(true, Ordering::Relaxed);
        self.task.await.expect("presser")
    }
}

/// Accepted presses: the highest offset per partition.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub accepted: usize,
    pub high: BTreeMap<i32, i64>,
    /// Accepted presses whose answer named no position (ingest `outbox`):
    /// no state can be said to cover them from the answer alone.
    pub unplaced: usize,
}

impl Ledger {
    pub fn record(&mut self, a: &Accepted) {
        self.accepted += 1;
        match a.position() {
            Some((partition, offset)) => {
                let high = self.high.entry(partition).or_insert(offset);
                *high = (*high).max(offset);
            }
            None => self.unplaced += 1,
        }
    }

    /// Whether `snapshot` includes every accepted press whose answer
    /// named a position (see [`Ledger::unplaced`]).
    pub fn covered_by(&self, snapshot: &Snapshot) -> bool {
        self.high.iter().all(|(&p, &o)| snapshot.covers(p, o))
    }
}

/// How a client receives states: `/v1/states/stream` (SSE) or
/// `/v1/states/ws` (WebSocket). Both carry the same JSON per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Sse,
    Ws,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown transport `{0}`: `sse` or `ws`")]
pub struct UnknownTransport(pub String);

impl std::str::FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Transport, UnknownTransport> {
        match s {
            "sse" => Ok(Transport::Sse),
            "ws" => Ok(Transport::Ws),
            other => Err(UnknownTransport(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        })
    }
}

impl Transport {
    /// The route of the state stream on this transport.
    pub fn path(self) -> &'static str {
        match self {
            Transport::Sse => "/v1/states/stream",
            Transport::Ws => "/v1/states/ws",
        }
    }
}

/// A state as a stream delivered it: parsed, and the JSON it came as.
#[derive(Debug, Clone)]
struct Received {
    snapshot: Snapshot,
    text: String,
}

/// A live state stream (SSE or WebSocket) that keeps the newest state it
/// was sent.
pub struct StateListener {
    latest: watch::Receiver<Option<Received>>,
    frames: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// The listener's name from before it had a WebSocket side.
pub type SseListener = StateListener;

impl StateListener {
    /// An SSE listener.
    pub async fn connect(api: &Api, last_event_id: Option<i64>) -> anyhow::Result<StateListener> {
        Self::connect_with(Transport::Sse, api, last_event_id).await
    }

    /// A WebSocket listener.
    pub async fn connect_ws(
        api: &Api,
        last_event_id: Option<i64>,
    ) -> anyhow::Result<StateListener> {
        Self::connect_with(Transport::Ws, api, last_event_id).await
    }

    pub async fn connect_with(
        transport: Transport,
        api: &Api,
        last_event_id: Option<i64>,
    ) -> anyhow::Result<StateListener> {
        let (tx, latest) = watch::channel(None);
        let frames = Arc::new(AtomicUsize::new(0));
        let counter = frames.clone();
        let deliver = move |text: &str| {
            let Ok(snapshot) = serde_json::from_str::<Snapshot>(text) else {
                return None;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let id = snapshot.id;
            tx.send_replace(Some(Received {
                snapshot,
                text: text.to_owned(),
            }));
            Some(id)
        };
        let last_event_id = last_event_id.map(|id| id.to_string());
        let task = match transport {
            Transport::Sse => {
                let client = reqwest::Client::builder().build()?;
                let mut request = client
                    .get(api.url(transport.path()))
                    .header("accept", "text/event-stream");
                if let Some(id) = &last_event_id {
                    request = request.header("last-event-id", id);
                }
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status() == 200,
                    "stream answered {}",
                    response.status()
                );
                tokio::spawn(async move {
                    let mut events = response.bytes_stream().eventsource();
                    while let Some(Ok(event)) = events.next().await {
                        if event.event != "state" {
                            continue;
                        }
                        if let Some(id) = deliver(&event.data) {
                            assert_eq!(event.id, id.to_string(), "SSE id must be the state id");
                        }
                    }
                })
            }
            Transport::Ws => {
                let headers: Vec<(&str, &str)> = last_event_id
                    .as_deref()
                    .map(|id| ("last-event-id", id))
                    .into_iter()
                    .collect();
                let mut socket = ws::connect(&api.url(transport.path()), &headers).await?;
                tokio::spawn(async move {
                    while let Some(Ok(text)) = socket.next_text().await {
                        deliver(&text);
                    }
                })
            }
        };
        Ok(StateListener {
            latest,
            frames,
            task,
        })
    }

    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    pub fn latest(&self) -> Option<Snapshot> {
        self.latest.borrow().as_ref().map(|r| r.snapshot.clone())
    }

    /// The JSON the newest state came as (an SSE frame's `data`, a
    /// WebSocket message's text).
    pub fn latest_text(&self) -> Option<String> {
        self.latest.borrow().as_ref().map(|r| r.text.clone())
    }

    /// Waits until a received state satisfies `pred`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Snapshot) -> bool,
    ) -> Option<Snapshot> {
        let wait = async {
            loop {
                if let Some(r) = self.latest.borrow_and_update().as_ref()
                    && pred(&r.snapshot)
                {
                    return Some(r.snapshot.clone());
                }
                if self.latest.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

impl Drop for StateListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest snapshot in PostgreSQL (the source of truth).
pub async fn latest_in_db(database_url: &str) -> anyhow::Result<Option<Snapshot>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    let latest = button_store::latest_snapshot(&pool).await?;
    pool.close().await;
    Ok(latest)
}

/// Waits until PostgreSQL's newest state covers every press in `ledger`.
pub async fn wait_db_covers(
    database_url: &str,
    ledger: &Ledger,
    timeout: Duration,
) -> Option<Snapshot> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = latest_in_db(database_url).await
            && ledger.covered_by(&s)
        {
            return Some(s);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Presses once into `ledger` and waits until the service serves a state
/// that counts the press: PostgreSQL has it and the service learnt of it
/// (through Redis). That state.
pub async fn press_until_served(api: &Api, database_url: &str, ledger: &mut Ledger) -> Snapshot {
    ledger.record(&api.press().await.expect("press"));
    let persisted = wait_db_covers(database_url, ledger, Duration::from_secs(60))
        .await
        .expect("persisted");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            api.current().await.is_ok_and(|s| s.id >= persisted.id)
        })
        .await,
        "the service serves state {}",
        persisted.id
    );
    persisted
}

/// Logs for tests, shown by the test runner on failure (`RUST_LOG` filters).
pub fn init_test_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
