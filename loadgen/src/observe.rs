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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Opens `count` listeners spread over the service instances.
pub fn spawn_listeners(
    count: usize,
    transport: Transport,
    service_urls: &[String],
    recorder: &Arc<Recorder>,
    stop: &button_infra::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count.max(1))
        .map(|i| {
            let url = format!(
                "{}{}",
                service_urls[i % service_urls.len()],
                transport.path()
            );
            let tracker = Tracker {
                tracking: i == 0,
                recorder: recorder.clone(),
                last_id: None,
            };
            tokio::spawn(listen(url, transport, tracker, stop.clone()))
        })
        .collect()
}

/// What a listener does with each state it receives, whichever transport
/// brought it.
struct Tracker {
    /// Whether this listener matches states against accepted presses.
    tracking: bool,
    recorder: Arc<Recorder>,
    /// The newest state received, sent as `Last-Event-ID` on reconnect.
    last_id: Option<i64>,
}

impl Tracker {
    /// `first`: the first state of a connection, which is the state at
    /// connect time, not a fresh commit.
    fn on_state(&mut self, json: &str, first: bool) {
        let Ok(snapshot) = serde_json::from_str::<Snapshot>(json) else {
            return;
        };
        self.last_id = Some(snapshot.id);
        if !first && snapshot.committed_at_ms > 0 {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.recorder.on_fanout(Duration::from_millis(
                (now_ms - snapshot.committed_at_ms).max(0) as u64,
            ));
        }
        if self.tracking {
            self.recorder.on_tracked_state(&snapshot);
        }
    }
}

/// One listener; reconnects (with `Last-Event-ID`) if its stream drops.
async fn listen(
    url: String,
    transport: Transport,
    mut tracker: Tracker,
    stop: button_infra::CancellationToken,
) {
    let Ok(client) = reqwest::Client::builder().build() else {
        return;
    };
    while !stop.is_cancelled() {
        let connected = match transport {
            Transport::Sse => sse_session(&client, &url, &mut tracker, &stop).await,
            Transport::Ws => ws_session(&url, &mut tracker, &stop).await,
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
