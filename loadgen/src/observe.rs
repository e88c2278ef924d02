//! The observe stage's clients: SSE listeners that hold the stream open
//! like real clients, time commit-to-client fan-out, and (the first one)
//! match states against accepted presses for press-to-SSE latency.

use crate::recorder::Recorder;
use button_domain::Snapshot;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Opens `count` listeners spread over the service instances.
pub fn spawn_listeners(
    count: usize,
    service_urls: &[String],
    recorder: &Arc<Recorder>,
    stop: &button_infra::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count.max(1))
        .map(|i| {
            let url = format!("{}/v1/states/stream", service_urls[i % service_urls.len()]);
            tokio::spawn(listen(url, i == 0, recorder.clone(), stop.clone()))
        })
        .collect()
}

/// One SSE connection; reconnects (with `Last-Event-ID`) if it drops.
async fn listen(
    url: String,
    tracking: bool,
    recorder: Arc<Recorder>,
    stop: button_infra::CancellationToken,
) {
    let Ok(client) = reqwest::Client::builder().build() else {
        return;
    };
    let mut last_id: Option<i64> = None;
    while !stop.is_cancelled() {
        let mut request = client.get(&url).header("accept", "text/event-stream");
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
            let Ok(snapshot) = serde_json::from_str::<Snapshot>(&event.data) else {
                continue;
            };
            last_id = Some(snapshot.id);
            // The first frame is the state at connect time, not a fresh commit.
            if !first && snapshot.committed_at_ms > 0 {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                recorder.on_fanout(Duration::from_millis(
                    (now_ms - snapshot.committed_at_ms).max(0) as u64,
                ));
            }
            first = false;
            if tracking {
                recorder.on_tracked_state(&snapshot);
            }
        }
    }
}
