//! `POST /v1/events/press`: answered 202 only once the press is durable
//! (the broker's ack, or the insert's commit with ingest `outbox` and
//! `direct`), with where it was stored, so a client (and the lab) can
//! match the press to the first state that includes it.

use crate::AppState;
use crate::error::{ApiError, rate_limit_headers};
use crate::guard::idempotency::{Reservation, validate_key};
use crate::guard::pow::Challenge;
use crate::producer::Stored;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use button_domain::PressRecord;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Optional body: `pow`, the solved challenge, when proof of work is on.
/// The client is never named by the body: its pseudonym comes from its
/// address (see [`crate::guard::identity`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PressRequest {
    pub pow: Option<Challenge>,
}

/// The 202's body. `partition` and `offset` name where the press is in
/// the log the reducer reads (ingest `kafka`: the topic; `direct`:
/// partition 0, the `presses` row id); with ingest `outbox` they are absent
/// and `outbox_id` names the outbox row instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PressAccepted {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<i64>,
    pub accepted_at_ms: i64,
}

pub async fn press(
    State(app): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    if app.config.press_extra_work > 0 {
        extra_work(app.config.press_extra_work);
    }
    let address = app
        .guards
        .identity
        .address(connect.map(|Extension(ConnectInfo(a))| a), &headers);
    let client = app.guards.identity.pseudonym(address);
    // Only the country leaves this function; the address does not.
    let country = app.geo.country(address);
    let (rate, answer) = match app.guards.check_rate(&client).await {
        Err(e) => (None, Err(e)),
        Ok(Some(decision)) if !decision.allowed => {
            (Some(decision), Err(ApiError::RateLimited(decision)))
        }
        Ok(rate) => (rate, accept(&app, &client, &country, &headers, body).await),
    };
    let (outcome, status) = match &answer {
        Ok(_) => ("accepted", StatusCode::ACCEPTED),
        Err(e) => ("rejected", e.status()),
    };
    metrics::histogram!("service_press_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("service_press_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut response = match answer {
        Ok(Answer::Fresh(accepted)) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Ok(Answer::Replay(json)) => (
            StatusCode::ACCEPTED,
            [
                (header::CONTENT_TYPE, "application/json"),
                (HeaderName::from_static("idempotent-replayed"), "true"),
            ],
            json,
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    if let Some(decision) = rate.filter(|d| d.allowed) {
        rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}

enum Answer {
    Fresh(PressAccepted),
    /// The first answer given for this Idempotency-Key, verbatim.
    Replay(String),
}

async fn accept(
    app: &AppState,
    client: &str,
    country: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let request = read_body(headers, body, app.config.max_body_bytes).await?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| validate_key(v.as_bytes()).map(str::to_owned))
        .transpose()?;
    let deadline = Duration::from_millis(app.config.produce_timeout_ms);
    let slot = match &idempotency_key {
        None => None,
        Some(key) => match app
            .guards
            .idempotency_reserve(client, key, deadline)
            .await?
        {
            Reservation::Replay(json) => {
                metrics::counter!("service_idempotent_replays_total").increment(1);
                return Ok(Answer::Replay(json));
            }
            Reservation::Reserved(held) => Some(held),
        },
    };
    // With a key, every attempt of this press carries one request id: an
    // attempt whose outcome was unknown (no ack in time, or cut off by the
    // request deadline) may still be stored, and its retry must then be
    // the same record, which the reducer (or `presses`) drops.
    let request_id = match &idempotency_key {
        Some(key) => app.guards.identity.request_id(client, key),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let produced = produce(app, &request_id, client, country, request.pow.as_ref()).await;
    if let Some(held) = slot {
        let json = produced
            .as_ref()
            .ok()
            .and_then(|a| serde_json::to_string(a).ok());
        app.guards.idempotency_done(held, json.as_deref()).await;
    }
    produced.map(Answer::Fresh)
}

async fn produce(
    app: &AppState,
    request_id: &str,
    client: &str,
    country: &str,
    pow: Option<&Challenge>,
) -> Result<PressAccepted, ApiError> {
    app.guards.check_pow(pow, client, now_ms()).await?;
    let accepted_at_ms = now_ms();
    let record = PressRecord::new(request_id.to_owned(), client.to_owned(), accepted_at_ms)
        .with_country(country.to_owned());
    let stored = app.producer.send(request_id, &record.encode()).await?;
    let (partition, offset, outbox_id) = match stored {
        Stored::Log { partition, offset } => (Some(partition), Some(offset), None),
        Stored::Outbox { id } => (None, None, Some(id)),
    };
    Ok(PressAccepted {
        request_id: request_id.to_owned(),
        partition,
        offset,
        outbox_id,
        accepted_at_ms,
    })
}

/// `GET /v1/challenge`: a challenge for this client. With proof of work
/// off, 404 `pow_disabled` tells clients to press without one.
pub async fn challenge(
    State(app): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(pow) = &app.guards.pow else {
        return Err(ApiError::PowDisabled);
    };
    let client = app
        .guards
        .identity
        .of(connect.map(|Extension(ConnectInfo(a))| a), &headers);
    metrics::counter!("service_challenges_issued_total").increment(1);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(pow.issue(&client, now_ms())),
    )
        .into_response())
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<PressRequest, ApiError> {
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && length > limit
    {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(PressRequest::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidBody(e.to_string()),
        _ => ApiError::InvalidJson(e.to_string()),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The deliberate cost of `press_extra_work`: a recurrence the compiler
/// cannot drop, so its cost is the same in every build and run.
fn extra_work(iterations: u64) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
}
