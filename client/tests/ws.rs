//! The state stream over a WebSocket (`/v1/states/ws`): the first state,
//! then newer ones, byte for byte the SSE frames' JSON; the stream caps it
//! shares with SSE; no request deadline; Close answered.

use button_client::{
    Api, Ledger, StateListener, Transport, init_test_logs, press_until_served, wait_until, ws,
};
use button_domain::Snapshot;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every state one transport delivers, by id, as the JSON it came as,
/// until one satisfies `done`.
async fn collect(
    transport: Transport,
    api: &Api,
    done: impl Fn(&Snapshot) -> bool,
) -> BTreeMap<i64, String> {
    let mut frames = BTreeMap::new();
    let mut keep = |text: &str| {
        let snapshot: Snapshot = serde_json::from_str(text).expect("a state");
        frames.insert(snapshot.id, text.to_owned());
        done(&snapshot)
    };
    let read = async {
        match transport {
            Transport::Sse => {
                let response = api
                    .http()
                    .get(api.url(transport.path()))
                    .send()
                    .await
                    .expect("stream");
                let mut events = response.bytes_stream().eventsource();
                while let Some(Ok(event)) = events.next().await {
                    if event.event == "state" && keep(&event.data) {
                        return;
                    }
                }
            }
            Transport::Ws => {
                let mut socket = ws::connect(&api.url(transport.path()), &[])
                    .await
                    .expect("socket");
                while let Some(Ok(text)) = socket.next_text().await {
                    if keep(&text) {
                        socket.close().await.expect("the service answers Close");
                        return;
                    }
                }
            }
        }
        panic!("{transport} stream ended");
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the state arrives");
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_gets_the_current_state_then_newer_ones_as_sse_frames_carry_them() {
    init_test_logs();
    let stack = button_stack::Stack::start(button_stack::StackConfig {
        // Shorter than the wait below: the socket must outlive it. Long
        // enough for the first press on a fresh broker on a busy machine.
        service_env: button_stack::env(&[
            ("BUTTON_REQUEST_TIMEOUT_MS", "2000"),
            ("BUTTON_SSE_KEEPALIVE_MS", "100"),
        ]),
        ..button_stack::StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));

    let mut ledger = Ledger::default();
    let first = press_until_served(&api, &stack.database_url(), &mut ledger).await;

    // The current state at once.
    let mut socket = StateListener::connect_ws(&api, None).await.expect("socket");
    let initial = socket
        .wait_for(Duration::from_secs(5), |_| true)
        .await
        .expect("an initial state");
    assert!(
        initial.id >= first.id && initial.counter == 1,
        "{initial:?}"
    );

    // Past the request deadline (and a few pings later) it is still open
    // and sent the state that counts the next press.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ledger.record(&api.press().await.expect("press"));
    let newer = socket
        .wait_for(Duration::from_secs(30), |s| ledger.covered_by(s))
        .await
        .expect("the state with the second press");
    assert_eq!(newer.counter, 2);
    assert!(newer.id > initial.id);

    // Both transports, side by side: the same bytes for the same state.
    let (sse, ws) = tokio::join!(
        collect(Transport::Sse, &api, |s| s.id >= newer.id),
        collect(Transport::Ws, &api, |s| s.id >= newer.id),
    );
    let common: Vec<i64> = sse
        .keys()
        .filter(|id| ws.contains_key(id))
        .copied()
        .collect();
    assert!(
        !common.is_empty(),
        "no state seen on both: {:?} and {:?}",
        sse.keys(),
        ws.keys()
    );
    for id in common {
        assert_eq!(sse[&id], ws[&id], "state {id}");
    }
    assert_eq!(
        socket.latest_text().map(|t| t.len()),
        Some(ws[&newer.id].len())
    );
}

/// A stream request from `client` (an `X-Forwarded-For` the service trusts).
async fn open_sse(api: &Api, client: &str) -> reqwest::Response {
    api.http()
        .get(api.url("/v1/states/stream"))
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("answer")
}

async fn open_ws(api: &Api, client: &str) -> Result<ws::StateSocket, ws::WsError> {
    ws::connect(&api.url("/v1/states/ws"), &[("x-forwarded-for", client)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_streams_count_against_the_stream_caps_and_others_still_connect() {
    init_test_logs();
    let stack = button_stack::Stack::start(button_stack::StackConfig {
        reducer: false,
        service_env: button_stack::env(&[
            ("BUTTON_TRUST_FORWARDED_FOR", "true"),
            ("BUTTON_SSE_MAX_PER_CLIENT", "3"),
        ]),
        ..button_stack::StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    const A: &str = "198.51.100.7";
    const B: &str = "203.0.113.9";

    // A holds two SSE streams and one socket: its three.
    let mut sse = Vec::new();
    for _ in 0..2 {
        let stream = open_sse(&api, A).await;
        assert_eq!(stream.status(), 200);
        sse.push(stream);
    }
    let mut held = open_ws(&api, A).await.expect("A's third stream");
    assert!(held.next_text().await.is_some_and(|t| t.is_ok()));

    let refused = open_ws(&api, A).await.err().expect("A's fourth is refused");
    match &refused {
        ws::WsError::Refused { status, .. } => assert_eq!(*status, 429, "{refused}"),
        other => panic!("{other}"),
    }
    assert_eq!(
        refused.code().as_deref(),
        Some("too_many_streams"),
        "{refused}"
    );
    assert_eq!(
        open_sse(&api, A).await.status(),
        429,
        "the socket counts on SSE too"
    );

    // Another client is not affected by A's streams.
    let mut other = open_ws(&api, B).await.expect("another client connects");
    assert!(other.next_text().await.is_some_and(|t| t.is_ok()));

    // A closes its socket: the slot comes back.
    held.close().await.expect("Close answered");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            open_ws(&api, A).await.is_ok()
        })
        .await,
        "a slot frees when the client closes a socket"
    );

    // Not a handshake: the JSON error, not a stream.
    let plain = api
        .http()
        .get(api.url("/v1/states/ws"))
        .send()
        .await
        .expect("answer");
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = plain.json().await.expect("json");
    assert_eq!(body["error"], "not_websocket", "{body}");
    drop(sse);
}
