//! The observe stage's clients: state listeners (SSE or WebSocket) that
//! hold the stream open like real clients, time commit-to-client fan-out,
//! and (the first one) match states against accepted presses for
//! press-to-SSE latency. The transport only delivers each state's JSON;
//! what is measured from it is [`Tracker`]'s, the same for both.

use crate::recorder::Recorder;
use button_client::Transport;
use button_domain::Snapshot;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an untracked listener reads of a frame: serde skips the rest
/// without building it, which keeps ten thousand listeners cheap.
#[derive(serde::Deserialize)]
struct Stamp {
    id: i64,
    committed_at_ms: i64,
}

/// Opens `count` listeners spread over the service instances: listener
/// `j` starts on instance `j % N`. Also a task measuring how late the
/// listeners' runtime runs (see [`watch_lateness`]).
pub fn spawn_listeners(
    count: usize,
    transport: Transport,
    service_urls: &[String],
    recorder: &Arc<Recorder>,
    stop: &button_infra::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    // One client for all: each stream still holds its own connection (an
    // HTTP/1.1 response cannot share one), but not its own pool and
    // resolver.
    let client = reqwest::Client::new();
    let urls: Arc<[String]> = service_urls
        .iter()
        .map(|u| format!("{u}{}", transport.path()))
        .collect();
    let mut tasks: Vec<_> = (0..count.max(1))
        .map(|i| {
            let tracker = Tracker {
                tracking: i == 0,
                recorder: recorder.clone(),
                last_id: None,
                ever_connected: false,
            };
            tokio::spawn(listen(
                client.clone(),
                urls.clone(),
                i % urls.len(),
                transport,
                tracker,
                stop.clone(),
            ))
        })
        .collect();
    tasks.push(tokio::spawn(watch_lateness(recorder.clone(), stop.clone())));
    tasks
}

/// Measures how late this runtime wakes a timer: the time a frame waits
/// for its listener to run is in every fan-out figure, and this says how
/// much of it that is.
async fn watch_lateness(recorder: Arc<Recorder>, stop: button_infra::CancellationToken) {
    const PERIOD: Duration = Duration::from_millis(10);
    loop {
        let due = tokio::time::Instant::now() + PERIOD;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        recorder
            .observer_lag
            .record(tokio::time::Instant::now().saturating_duration_since(due));
    }
}

/// What a listener does with each state it receives, whichever transport
/// brought it.
struct Tracker {
    /// Whether this listener matches states against accepted presses.
    tracking: bool,
    recorder: Arc<Recorder>,
    /// The newest state received, sent as `Last-Event-ID` on reconnect.
    last_id: Option<i64>,
    /// Whether any connection of this listener has had a state yet.
    ever_connected: bool,
}

impl Tracker {
    /// `first`: the first state of a connection, which is the state at
    /// connect time, not a fresh commit.
    fn on_state(&mut self, json: &str, first: bool) {
        let stamp = if self.tracking {
            let Ok(snapshot) = serde_json::from_str::<Snapshot>(json) else {
                return;
            };
            self.recorder.on_tracked_state(&snapshot);
            Stamp {
                id: snapshot.id,
                committed_at_ms: snapshot.committed_at_ms,
            }
        } else {
            let Ok(stamp) = serde_json::from_str::<Stamp>(json) else {
                return;
            };
            stamp
        };
        self.last_id = Some(stamp.id);
        if !first && stamp.committed_at_ms > 0 {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.recorder.on_fanout(Duration::from_millis(
                (now_ms - stamp.committed_at_ms).max(0) as u64,
            ));
        }
        if !self.ever_connected {
            self.ever_connected = true;
            self.recorder
                .listeners_connected
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One listener; if its stream drops or cannot be made, reconnects (with
/// `Last-Event-ID`) to the next instance, as a client behind a load
/// balancer would land on one that is still up.
async fn listen(
    client: reqwest::Client,
    urls: Arc<[String]>,
    mut at: usize,
    transport: Transport,
    mut tracker: Tracker,
    stop: button_infra::CancellationToken,
) {
    let mut retrying = false;
    while !stop.is_cancelled() {
        if retrying {
            at = (at + 1) % urls.len();
        }
        retrying = true;
        let url = &urls[at];
        let connected = match transport {
            Transport::Sse => sse_session(&client, url, &mut tracker, &stop).await,
            Transport::Ws => ws_session(url, &mut tracker, &stop).await,
        };
        if !connected {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One SSE connection until it ends or `stop`; false if it did not open.
async fn sse_session(
    client: &reqwest::Client,
    url: &str,
    tracker: &mut Tracker,
    stop: &button_infra::CancellationToken,
) -> bool {
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(id) = tracker.last_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = tokio::select! {
        _ = stop.cancelled() => return true,
        r = request.send() => r,
    };
    let Ok(response) = response.and_then(|r| r.error_for_status()) else {
        return false;
    };
    let mut events = response.bytes_stream().eventsource();
    let mut first = true;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return true,
            e = events.next() => e,
        };
        let Some(Ok(event)) = event else { return true };
        if event.event != "state" {
            continue;
        }
        tracker.on_state(&event.data, first);
        first = false;
    }
}

/// One WebSocket connection until it ends or `stop`; false if it did not
/// open.
async fn ws_session(
    url: &str,
    tracker: &mut Tracker,
    stop: &button_infra::CancellationToken,
) -> bool {
    let last_id = tracker.last_id.map(|id| id.to_string());
    let headers: Vec<(&str, &str)> = last_id
        .as_deref()
        .map(|id| ("last-event-id", id))
        .into_iter()
        .collect();
    let socket = tokio::select! {
        _ = stop.cancelled() => return true,
        s = button_client::ws::connect(url, &headers) => s,
    };
    let Ok(mut socket) = socket else {
        return false;
    };
    let mut first = true;
    loop {
        let text = tokio::select! {
            _ = stop.cancelled() => {
                // A clean Close, but not waiting long on a busy service for its answer.
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
                return true;
            }
            t = socket.next_text() => t,
        };
        let Some(Ok(text)) = text else { return true };
        tracker.on_state(&text, first);
        first = false;
    }
}
