//! Instruction counts of the service's hot paths: presses through the
//! whole axum router (`oneshot`, no socket, the broker replaced by
//! memory, as `http.rs` does for wall time), and a state made into its
//! JSON, SSE frame and WebSocket text once for every client.
//!
//! `BUTTON_PRESS_EXTRA_WORK` is passed through to the press handler's
//! config: the deliberate slowdown the gate is demonstrated with.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use button_domain::Snapshot;
use button_service::feed::Published;
use button_service::producer::MemorySink;
use button_service::{AppState, Config, app};
use gungraun::{LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main};
use std::hint::black_box;
use std::sync::Arc;
use tokio::runtime::Runtime;
use tower::ServiceExt;

// The allocator the binary runs with (its main.rs): the counts include
// its work, and glibc's varied by up to 2% between runs of one build.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXTRA_WORK: &str = "BUTTON_PRESS_EXTRA_WORK";

fn press_request() -> Request<Body> {
    Request::post("/v1/events/press")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("request")
}

fn press(runtime: &Runtime, router: &Router) {
    let response = runtime
        .block_on(router.clone().oneshot(press_request()))
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    black_box(response);
}

/// A router on a current-thread runtime (the handler's work is counted on
/// this thread), warmed by a few presses so one-time set-up is not.
fn router(warm: usize) -> (Runtime, Router) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = Config::default();
    if let Ok(n) = std::env::var(EXTRA_WORK) {
        config.press_extra_work = n.parse().expect("BUTTON_PRESS_EXTRA_WORK: a number");
    }
    let state = {
        let _guard = runtime.enter();
        AppState::detached(config, Arc::new(MemorySink::default())).expect("state")
    };
    let router = app(state);
    for _ in 0..warm {
        press(&runtime, &router);
    }
    (runtime, router)
}

// 500 presses, each a request through the router to its 202.
#[library_benchmark]
#[bench::presses_500(args = (16), setup = router)]
fn press_handler(input: (Runtime, Router)) -> (Runtime, Router) {
    let (runtime, router) = input;
    for _ in 0..500 {
        press(&runtime, &router);
    }
    (runtime, router)
}

fn snapshot(partitions: i32) -> Snapshot {
    let mut snapshot = Snapshot::genesis(
        "53fa7269e2e28f1b91e020a40d7149e6b791cc08fd8d58e3b25e12000ee8aadd".into(),
    );
    snapshot.id = 123_456;
    snapshot.counter = 9_876_543;
    snapshot.offsets = (0..partitions)
        .map(|p| (p, 2_000_000 + i64::from(p)))
        .collect();
    snapshot
}

// Once per state: its JSON, the SSE frame around it, and the WebSocket
// text (a view into the same buffer).
#[library_benchmark]
#[bench::partitions_4(args = (4), setup = snapshot)]
fn state_frames(snapshot: Snapshot) -> Published {
    black_box(Published::new(black_box(snapshot)))
}

library_benchmark_group!(name = service, benchmarks = [press_handler, state_frames]);

main!(
    config = LibraryBenchmarkConfig::default().pass_through_env(EXTRA_WORK),
    library_benchmark_groups = service
);
