//! The observe stage's clients: SSE listeners that hold the stream open
//! like real clients, time commit-to-client fan-out, and (the first one)
//! match states against accepted presses for press-to-SSE latency.

use crate::recorder::Recorder;
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
/// `j` starts on instance `j % N`.
pub fn spawn_listeners(
    count: usize,
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
        .map(|u| format!("{u}/v1/states/stream"))
        .collect();
    let mut tasks: Vec<_> = (0..count.max(1))
        .map(|i| {
            tokio::spawn(listen(
                client.clone(),
                urls.clone(),
                i % urls.len(),
                i == 0,
                recorder.clone(),
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

/// One SSE connection; if it drops or cannot be made, reconnects (with
/// `Last-Event-ID`) to the next instance, as a client behind a load
/// balancer would land on one that is still up.
async fn listen(
    client: reqwest::Client,
    urls: Arc<[String]>,
    mut at: usize,
    tracking: bool,
    recorder: Arc<Recorder>,
    stop: button_infra::CancellationToken,
) {
    let mut last_id: Option<i64> = None;
    let mut ever_connected = false;
    let mut retrying = false;
    while !stop.is_cancelled() {
        if retrying {
            at = (at + 1) % urls.len();
        }
        retrying = true;
        let url = &urls[at];
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = tokio::select! {
            _ = stop.cancelled() => return,
            r = request.send() => r,
        };
        let Ok(response) = response.and_then(|r| r.error_for_status()) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut events = response.bytes_stream().eventsource();
        let mut first = true;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => e,
            };
            let Some(Ok(event)) = event else { break };
            if event.event != "state" {
                continue;
            }
            let stamp = if tracking {
                let Ok(snapshot) = serde_json::from_str::<Snapshot>(&event.data) else {
                    continue;
                };
                recorder.on_tracked_state(&snapshot);
                Stamp {
                    id: snapshot.id,
                    committed_at_ms: snapshot.committed_at_ms,
                }
            } else {
                let Ok(stamp) = serde_json::from_str::<Stamp>(&event.data) else {
                    continue;
                };
                stamp
            };
            last_id = Some(stamp.id);
            // The first frame is the state at connect time, not a fresh commit.
            if !first && stamp.committed_at_ms > 0 {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                recorder.on_fanout(Duration::from_millis(
                    (now_ms - stamp.committed_at_ms).max(0) as u64,
                ));
            }
            if first && !ever_connected {
                ever_connected = true;
                recorder.listeners_connected.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
        }
    }
}
