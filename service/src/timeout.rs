//! A deadline for ordinary requests (`request_timeout_ms`), answered as
//! `503 request_timeout` through [`ApiError`]. Not boxed: the future is
//! tokio's `Timeout` mapped by a plain function, so the only cost per
//! request is the timer entry any deadline needs.

use crate::error::ApiError;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::Map;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Timeout;
use tokio::time::error::Elapsed;

#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer(pub Duration);

impl<S> tower::Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> RequestTimeout<S> {
        RequestTimeout {
            inner,
            deadline: self.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    deadline: Duration,
}

type Answer = Result<Response, Infallible>;

fn answer(result: Result<Answer, Elapsed>) -> Answer {
    result.unwrap_or_else(|_| Ok(ApiError::RequestTimeout.into_response()))
}

impl<S> tower::Service<Request> for RequestTimeout<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Map<Timeout<S::Future>, fn(Result<Answer, Elapsed>) -> Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        tokio::time::timeout(self.deadline, self.inner.call(request))
            .map(answer as fn(Result<Answer, Elapsed>) -> Answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_slow_handler_gets_the_json_error_and_a_fast_one_its_answer() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .route_layer(RequestTimeoutLayer(Duration::from_millis(50)));
        let slow = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(slow.status(), 503);
        let body = axum::body::to_bytes(slow.into_body(), 1024)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "request_timeout");
        let fast = app
            .oneshot(Request::get("/fast").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(fast.status(), 200);
    }
}
