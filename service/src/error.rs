//! The one mapping from failures to HTTP answers: a status and a JSON body
//! `{"error": "<stable code>", "message": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body is invalid: {0}")]
    InvalidBody(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("no such route")]
    NotFound,
    #[error("the broker is unavailable: {0}")]
    BrokerUnavailable(String),
    #[error("the producer queue is full")]
    QueueFull,
    #[error("too many stream clients (limit {limit})")]
    TooManyClients { limit: usize },
    #[error("this client already holds {limit} streams")]
    TooManyStreams { limit: usize },
    #[error("not a WebSocket handshake: {0}")]
    NotWebSocket(String),
    #[error("no answer within the request deadline")]
    RequestTimeout,
    #[error("shutting down")]
    ShuttingDown,
    #[error("proof of work is off: press without a challenge")]
    PowDisabled,
    #[error("this press needs a solved challenge (GET /v1/challenge) in `pow`")]
    PowRequired,
    #[error("proof of work refused: {0}")]
    PowInvalid(&'static str),
    #[error("the challenge expired; get a new one")]
    PowExpired,
    #[error("the challenge was already used")]
    PowReplayed,
    #[error("too many presses; retry in {} ms", .0.retry_after.as_millis())]
    RateLimited(crate::guard::ratelimit::Decision),
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("a press with this Idempotency-Key is still in flight")]
    IdempotencyInProgress,
    #[error("{0} cannot be checked now (Redis unreachable)")]
    GuardUnavailable(&'static str),
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::PowRequired
            | ApiError::PowInvalid(_)
            | ApiError::PowExpired
            | ApiError::PowReplayed
            | ApiError::InvalidIdempotencyKey
            | ApiError::NotWebSocket(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited(_) | ApiError::TooManyStreams { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::IdempotencyInProgress => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound | ApiError::PowDisabled => StatusCode::NOT_FOUND,
            ApiError::BrokerUnavailable(_)
            | ApiError::QueueFull
            | ApiError::TooManyClients { .. }
            | ApiError::ShuttingDown
            | ApiError::RequestTimeout
            | ApiError::GuardUnavailable(_)
            | ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NotFound => "not_found",
            ApiError::BrokerUnavailable(_) => "broker_unavailable",
            ApiError::QueueFull => "queue_full",
            ApiError::TooManyClients { .. } => "too_many_clients",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::NotWebSocket(_) => "not_websocket",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::PowDisabled => "pow_disabled",
            ApiError::PowRequired => "pow_required",
            ApiError::PowInvalid(_) => "pow_invalid",
            ApiError::PowExpired => "pow_expired",
            ApiError::PowReplayed => "pow_replayed",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::IdempotencyInProgress => "idempotency_in_progress",
            ApiError::GuardUnavailable("pow") => "pow_unavailable",
            ApiError::GuardUnavailable("rate_limit") => "rate_limit_unavailable",
            ApiError::GuardUnavailable(_) => "idempotency_unavailable",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, code = self.code(), "request failed");
        }
        metrics::counter!("service_http_errors_total", "code" => self.code()).increment(1);
        let mut response = (
            status,
            Json(json!({ "error": self.code(), "message": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::RateLimited(decision) = &self {
            rate_limit_headers(response.headers_mut(), decision);
        }
        response
    }
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds until the full burst
/// is back), and `Retry-After` when refused; whole seconds, rounded up.
pub fn rate_limit_headers(
    headers: &mut axum::http::HeaderMap,
    decision: &crate::guard::ratelimit::Decision,
) {
    let secs = |d: std::time::Duration| d.as_millis().div_ceil(1000).to_string();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("ratelimit-limit", decision.limit.to_string());
    set("ratelimit-remaining", decision.remaining.to_string());
    set("ratelimit-reset", secs(decision.reset));
    if !decision.allowed {
        set(
            "retry-after",
            secs(decision.retry_after).max("1".to_owned()),
        );
    }
}
