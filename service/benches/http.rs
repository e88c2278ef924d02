//! The service's hot paths: the press handler through the whole axum
//! router (`oneshot`, no socket) with the broker replaced by memory, and a
//! state turned into an SSE frame.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use button_domain::Snapshot;
use button_service::producer::MemorySink;
use button_service::{AppState, Config, app};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use tower::ServiceExt;

fn state(runtime: &tokio::runtime::Runtime) -> AppState {
    let _guard = runtime.enter();
    AppState::detached(Config::default(), Arc::new(MemorySink::default())).expect("state")
}

fn press(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let router = app(state(&runtime));
    let mut group = c.benchmark_group("press_handler");
    group.throughput(Throughput::Elements(1));
    group.bench_function("oneshot", |b| {
        b.iter(|| {
            let request = Request::post("/v1/events/press")
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let response = runtime
                .block_on(router.clone().oneshot(request))
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            black_box(response)
        })
    });
    group.finish();
}

fn sse_frame(c: &mut Criterion) {
    let mut snapshot = Snapshot::genesis(
        "53fa7269e2e28f1b91e020a40d7149e6b791cc08fd8d58e3b25e12000ee8aadd".into(),
    );
    snapshot.id = 123_456;
    snapshot.counter = 9_876_543;
    snapshot.offsets = (0..4).map(|p| (p, 2_000_000 + i64::from(p))).collect();
    let mut group = c.benchmark_group("sse_frame");
    group.throughput(Throughput::Elements(1));
    // Once per state, by the feed: the JSON and the SSE frame around it.
    group.bench_function("encode", |b| {
        b.iter_batched(
            || snapshot.clone(),
            button_service::feed::Published::new,
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, press, sse_frame);
criterion_main!(benches);
