//! The state stream: the current state at once, `Last-Event-ID`, the
//! client cap, ETags, Redis outages, and slow clients.

use button_client::{
    Api, Ledger, SseListener, init_test_logs, press_many, press_until_served, wait_db_covers,
    wait_until,
};
use button_stack::{Component, Stack, StackConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_current_state_honours_last_event_id_and_caps_clients() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        service_env: button_stack::env(&[("BUTTON_SSE_MAX_CLIENTS", "3")]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));

    let mut ledger = Ledger::default();
    let first = press_until_served(&api, &stack.database_url(), &mut ledger).await;

    // A new client gets the current state at once.
    let mut fresh = SseListener::connect(&api, None).await.expect("stream");
    let initial = fresh
        .wait_for(Duration::from_secs(5), |_| true)
        .await
        .expect("an initial frame");
    assert!(
        initial.id >= first.id && initial.counter == 1,
        "{initial:?}"
    );

    // A client that already has it is not sent it again, only what is newer.
    // (Idle-decay ticks make new states too, so "newer" is all we can ask.)
    let mut resumed = SseListener::connect(&api, Some(initial.id))
        .await
        .expect("stream");
    ledger.record(&api.press().await.expect("press"));
    let next = resumed
        .wait_for(Duration::from_secs(30), |_| true)
        .await
        .expect("a frame");
    assert!(
        next.id > initial.id,
        "the state the client has ({}) is not repeated: got {}",
        initial.id,
        next.id
    );
    let newer = resumed
        .wait_for(Duration::from_secs(30), |s| ledger.covered_by(s))
        .await
        .expect("the newer state");
    assert_eq!(newer.counter, 2);

    // Two clients are connected; the cap is three.
    let third = SseListener::connect(&api, None)
        .await
        .expect("third client fits");
    let refused = api
        .http()
        .get(api.url("/v1/states/stream"))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "too_many_clients");
    drop(third);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            api.http()
                .get(api.url("/v1/states/stream"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await,
        "a slot frees when a client leaves"
    );

    // ETag on the current state.
    let response = api
        .http()
        .get(api.url("/v1/states/current"))
        .send()
        .await
        .expect("current");
    let etag = response.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let again = api
        .http()
        .get(api.url("/v1/states/current"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("current");
    assert_eq!(again.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_goes_on_while_redis_is_down_and_clients_catch_up() {
    init_test_logs();
    let mut stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let mut sse = SseListener::connect(&api, None).await.expect("stream");

    stack.kill(Component::Redis).expect("kill redis");
    let mut ledger = Ledger::default();
    for answer in press_many(&api, 50, 8).await {
        ledger.record(&answer.expect("presses do not need Redis"));
    }
    let seen = sse
        .wait_for(Duration::from_secs(60), |s| ledger.covered_by(s))
        .await;
    assert_eq!(
        seen.map(|s| s.counter),
        Some(50),
        "the stream catches up from PostgreSQL"
    );
    let health: serde_json::Value = api
        .http()
        .get(api.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["checks"]["redis"], "down", "{health}");

    stack
        .start_component(Component::Redis)
        .await
        .expect("redis restarts");
    for answer in press_many(&api, 50, 8).await {
        ledger.record(&answer.expect("press"));
    }
    let seen = sse
        .wait_for(Duration::from_secs(60), |s| ledger.covered_by(s))
        .await;
    assert_eq!(seen.map(|s| s.counter), Some(100));
    let db = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(10))
        .await
        .expect("persisted");
    assert_eq!(db.counter, 100);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The service's kernel send buffer per connection in the stalled-client
/// test (Linux doubles it). Bounding it makes what a stalled client can
/// still be sent independent of the kernel's autotuning.
const SEND_BUFFER: usize = 8 * 1024;

/// A client that asks for the stream and then does not read: what it is
/// sent piles up in its receive buffer and the service's send buffer.
/// (Its receive buffer keeps the kernel's default: one smaller than a
/// loopback segment leaves the window shut and a reader waiting on the
/// sender's zero-window probes, which back off to a minute.)
async fn stalled_client(port: u16) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /v1/states/stream HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\n\r\n")
        .await
        .expect("request");
    stream
}

/// What a stalled client got once it read: the state ids in order and the
/// bytes of each frame.
struct Drained {
    frames: Vec<(i64, usize)>,
}

/// Reads frames until one with `id >= until`.
async fn drain_until(stream: &mut tokio::net::TcpStream, until: i64) -> Drained {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream closed");
            bytes.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&bytes);
            let frames: Vec<(i64, usize)> = text
                .split("\n\n")
                .filter(|frame| frame.contains("event: state"))
                .filter_map(|frame| {
                    let id = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("id: ")?.trim().parse::<i64>().ok())?;
                    Some((id, frame.len() + 2))
                })
                .collect();
            if frames.last().is_some_and(|&(id, _)| id >= until) {
                return Drained { frames };
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the stalled client catches up when it reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_skip_states_instead_of_queueing_them() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        // One state per two presses: many states for the stalled clients to miss.
        reducer_env: button_stack::env(&[("BUTTON_BATCH_MAX", "2")]),
        service_env: button_stack::env(&[(
            "BUTTON_TCP_SEND_BUFFER_BYTES",
            &SEND_BUFFER.to_string(),
        )]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let pid = stack.pid(Component::Service(0)).expect("service pid");
    let port = stack.endpoints().service_ports[0];

    let mut ledger = Ledger::default();
    for answer in press_many(&api, 100, 16).await {
        ledger.record(&answer.expect("press"));
    }
    let start = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("persisted");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            api.current().await.is_ok_and(|s| s.id >= start.id)
        })
        .await
    );
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(stalled_client(port).await);
    }
    let before = rss_kib(pid);

    for answer in press_many(&api, 2_000, 16).await {
        ledger.record(&answer.expect("press"));
    }
    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(120))
        .await
        .expect("persisted");
    let produced = (newest.id - start.id) as usize;
    assert!(produced > 500, "many states were produced ({produced})");
    let mut reader = SseListener::connect(&api, None).await.expect("stream");
    reader
        .wait_for(Duration::from_secs(30), |s| s.id >= newest.id)
        .await
        .expect("a reading client is current");
    let after = rss_kib(pid);

    // A stalled client is sent what fits in the socket buffers, then
    // only the newest state: it skips, the service holds nothing for it.
    // A queue would deliver every state.
    let receive_buffer = socket2::SockRef::from(&stalled[0])
        .recv_buffer_size()
        .expect("SO_RCVBUF");
    let drained = drain_until(&mut stalled[0], newest.id).await;
    let ids: Vec<i64> = drained.frames.iter().map(|&(id, _)| id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "states arrive in order, never twice"
    );
    // Every frame but the newest was sent before the client read again,
    // so all of them sat in the buffers: the kernel's two (it doubles
    // SO_SNDBUF) and the few frames hyper queues before it stops polling
    // the stream.
    let buffered: usize = drained.frames[..ids.len() - 1]
        .iter()
        .map(|&(_, n)| n)
        .sum();
    let buffers = receive_buffer + 2 * SEND_BUFFER + 32 * 1024;
    eprintln!(
        "a stalled client received {} of {produced} states: {buffered} bytes before it read, \
         buffers {buffers} bytes",
        ids.len()
    );
    assert!(
        buffered <= buffers,
        "a stalled client was sent {buffered} bytes of old states, more than the {buffers} \
         bytes its buffers hold: they were queued"
    );
    assert!(
        ids.len() < produced,
        "{} of {produced} states: none skipped",
        ids.len()
    );
    let grown = after.saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "service RSS grew by {grown} KiB with 40 stalled clients ({before} → {after} KiB)"
    );
}

/// The status line of a streaming answer, without reading further.
async fn status_line(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut buf))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_past_the_cap_are_refused_and_leave_nothing_behind() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        service_env: button_stack::env(&[("BUTTON_SSE_MAX_CLIENTS", "2500")]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let pid = stack.pid(Component::Service(0)).expect("service pid");
    let port = stack.endpoints().service_ports[0];
    let before = rss_kib(pid);

    // 3,000 clients open a stream and never read past the status line.
    let mut streams = Vec::new();
    for _ in 0..3_000 {
        streams.push(stalled_client(port).await);
    }
    let mut statuses = std::collections::BTreeMap::new();
    for s in &mut streams {
        *statuses.entry(status_line(s).await).or_insert(0) += 1;
    }
    assert_eq!(statuses.get("HTTP/1.1 200"), Some(&2_500), "{statuses:?}");
    assert_eq!(statuses.get("HTTP/1.1 503"), Some(&500), "{statuses:?}");

    // The service still takes presses and serves a reading client.
    let mut ledger = Ledger::default();
    for answer in press_many(&api, 200, 16).await {
        ledger.record(&answer.expect("presses go on beside 2,500 streams"));
    }
    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("persisted");
    let health: serde_json::Value = api
        .http()
        .get(api.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["sse_clients"], 2_500, "{health}");
    let during = rss_kib(pid);
    let per_stream = during.saturating_sub(before) as f64 / 2_500.0;
    eprintln!(
        "service RSS {before} → {during} KiB with 2,500 open streams: {per_stream:.1} KiB each"
    );
    assert!(
        per_stream < 64.0,
        "{per_stream:.1} KiB per open stream ({before} → {during} KiB)"
    );

    // Every stream closed: the count goes back to zero, a new one is served.
    drop(streams);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            let Ok(r) = api.http().get(api.url("/health")).send().await else {
                return false;
            };
            r.json::<serde_json::Value>()
                .await
                .is_ok_and(|h| h["sse_clients"] == 0)
        })
        .await,
        "closed streams are forgotten"
    );
    let mut reader = SseListener::connect(&api, None).await.expect("stream");
    reader
        .wait_for(Duration::from_secs(30), |s| s.id >= newest.id)
        .await
        .expect("a new client is served the newest state");
}

/// A stream request from `client` (an `X-Forwarded-For` the service trusts);
/// the connection stays open while the answer is held.
async fn open_stream(api: &Api, client: &str) -> reqwest::Response {
    api.http()
        .get(api.url("/v1/states/stream"))
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_streams_and_others_still_connect() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        reducer: false,
        service_env: button_stack::env(&[
            ("BUTTON_TRUST_FORWARDED_FOR", "true"),
            ("BUTTON_SSE_MAX_PER_CLIENT", "3"),
            ("BUTTON_SSE_KEEPALIVE_MS", "200"),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    const A: &str = "198.51.100.7";
    const B: &str = "203.0.113.9";

    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = open_stream(&api, A).await;
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }
    let refused = open_stream(&api, A).await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "too_many_streams", "{body}");

    // Another client is not affected by A's streams.
    let other = open_stream(&api, B).await;
    assert_eq!(other.status(), 200, "another client still connects");

    // A leaves one stream: its slot comes back.
    drop(held.pop());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            open_stream(&api, A).await.status() == 200
        })
        .await,
        "a slot frees when the client closes a stream"
    );
    drop(other);
}
