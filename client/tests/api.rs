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
