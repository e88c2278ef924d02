//! The HTTP contract: stable error codes for bad input, and a fast 503
//! while the broker is down.

use button_client::{Api, init_test_logs, wait_until};
use button_stack::{Component, Stack, StackConfig};
use std::time::{Duration, Instant};

async fn call(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut request = api.http().request(method, api.url(path)).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_stable_codes_and_a_dead_broker_a_fast_503() {
    init_test_logs();
    let mut stack = Stack::start(StackConfig {
        reducer: false,
        service_env: button_stack::env(&[("BUTTON_PRODUCE_TIMEOUT_MS", "2000")]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    use reqwest::Method;
    let json = Some("application/json");
    // (name, method, path, content type, body, status, code)
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        Option<&'a str>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "broken JSON",
            Method::POST,
            "/v1/events/press",
            json,
            b"{\"pow\":".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "wrong type",
            Method::POST,
            "/v1/events/press",
            json,
            br#"{"pow":5}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "unknown field",
            Method::POST,
            "/v1/events/press",
            json,
            br#"{"client":"a"}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "incomplete challenge",
            Method::POST,
            "/v1/events/press",
            json,
            br#"{"pow":{"challenge_id":"a"}}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "too large",
            Method::POST,
            "/v1/events/press",
            json,
            vec![b' '; 4096],
            413,
            "payload_too_large",
        ),
        (
            "wrong content type",
            Method::POST,
            "/v1/events/press",
            Some("text/plain"),
            b"press".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "wrong method",
            Method::GET,
            "/v1/events/press",
            None,
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            "wrong method on states",
            Method::DELETE,
            "/v1/states/current",
            None,
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            "unknown path",
            Method::GET,
            "/v1/nothing",
            None,
            vec![],
            404,
            "not_found",
        ),
    ];
    for (name, method, path, ct, body, status, code) in cases {
        let (got_status, got) = call(&api, method, path, ct, body).await;
        assert_eq!(got_status, status, "{name}: {got}");
        assert_eq!(got["error"], code, "{name}: {got}");
        assert!(
            got["message"].is_string(),
            "{name}: a message for people too: {got}"
        );
    }
    // A bare POST and a JSON body with a client are both presses.
    let (status, body) = call(&api, Method::POST, "/v1/events/press", None, vec![]).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["offset"].is_i64() && body["partition"].is_i64() && body["request_id"].is_string(),
        "{body}"
    );
    api.press().await.expect("a press with a client id");

    // The broker goes away: presses are refused within the deadline.
    stack.kill(Component::Broker).expect("kill broker");
    for _ in 0..3 {
        let started = Instant::now();
        let rejected = api.press().await.expect_err("no broker, no 202");
        let took = started.elapsed();
        assert_eq!(
            (rejected.status, rejected.code.as_str()),
            (503, "broker_unavailable")
        );
        assert!(
            took < Duration::from_millis(2_000 + 1_500),
            "answered after {took:?}, past the 2 s deadline"
        );
    }
    let (status, health) = call(&api, Method::GET, "/health", None, vec![]).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["checks"]["broker"], "down", "{health}");

    // And accepted again once it is back.
    stack
        .start_component(Component::Broker)
        .await
        .expect("broker restarts");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            api.press().await.is_ok()
        })
        .await,
        "presses are accepted again after the broker returns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_stuck_on_a_frozen_broker_gets_request_timeout_and_streams_stay_open() {
    init_test_logs();
    // The produce deadline is far past the request deadline: the request
    // deadline is what answers.
    let mut stack = Stack::start(StackConfig {
        reducer: false,
        service_env: button_stack::env(&[
            ("BUTTON_PRODUCE_TIMEOUT_MS", "15000"),
            ("BUTTON_REQUEST_TIMEOUT_MS", "1000"),
            ("BUTTON_SSE_KEEPALIVE_MS", "200"),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    api.press().await.expect("a press before the freeze");
    let mut stream = api
        .http()
        .get(api.url("/v1/states/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);

    // SIGSTOP: connections stay up, so the producer waits for an ack.
    stack.pause(Component::Broker).expect("SIGSTOP broker");
    let started = Instant::now();
    let (status, body) = call(
        &api,
        reqwest::Method::POST,
        "/v1/events/press",
        None,
        vec![],
    )
    .await;
    let took = started.elapsed();
    stack.resume(Component::Broker).expect("SIGCONT broker");
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("request_timeout")),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );

    // The stream, open all along (past the request deadline), still flows.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(2), stream.chunk())
            .await
            .expect("keep-alives within 2 s");
        assert!(
            matches!(chunk, Ok(Some(_))),
            "the stream is not cut: {chunk:?}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || async {
            api.press().await.is_ok()
        })
        .await,
        "presses resume after the broker does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countries_are_served_from_a_copy_refreshed_after_its_period() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        service_env: button_stack::env(&[("BUTTON_COUNTRIES_CACHE_MS", "3000")]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let countries = || async {
        let (status, body) = call(&api, reqwest::Method::GET, "/v1/countries", None, vec![]).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let cached_at = Instant::now();
    let first = countries().await;
    assert_eq!(first["countries"], serde_json::json!([]), "{first}");
    assert_eq!(countries().await, first, "the same answer twice in a row");

    let mut ledger = button_client::Ledger::default();
    ledger.record(&api.press().await.expect("press"));
    button_client::wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("persisted");
    // Counted in PostgreSQL, but the copy is younger than its period.
    let stale = countries().await;
    if cached_at.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(stale, first, "served from the copy within its period");
    }
    assert!(
        wait_until(Duration::from_secs(6), || async {
            countries().await["countries"]
                == serde_json::json!([{"country": "unknown", "presses": 1}])
        })
        .await,
        "the press shows once the period is over"
    );
}
