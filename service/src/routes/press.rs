//! `POST /v1/events/press`: answered 202 only after the broker stored the
//! record, with where it was stored, so a client (and the lab) can match
//! the press to the first state that includes it.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use button_domain::PressRecord;
use serde::{Deserialize, Serialize};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Optional body. `client` is the caller's pseudonymous id.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PressRequest {
    pub client: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PressAccepted {
    pub request_id: String,
    pub partition: i32,
    pub offset: i64,
    pub accepted_at_ms: i64,
}

const MAX_CLIENT_LEN: usize = 64;

pub async fn press(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let started = Instant::now();
    let answer = accept(&app, &headers, body).await;
    let (outcome, status) = match &answer {
        Ok(_) => ("accepted", StatusCode::ACCEPTED),
        Err(e) => ("rejected", e.status()),
    };
    metrics::histogram!("service_press_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("service_press_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    Ok((StatusCode::ACCEPTED, Json(answer?)))
}

async fn accept(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<PressAccepted, ApiError> {
    let request = read_body(headers, body, app.config.max_body_bytes).await?;
    let client = match request.client {
        Some(c) => validate_client(c)?,
        None => "anonymous".to_owned(),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let accepted_at_ms = now_ms();
    let record = PressRecord::new(request_id.clone(), client, accepted_at_ms);
    let stored = app.producer.send(&request_id, &record.encode()).await?;
    Ok(PressAccepted {
        request_id,
        partition: stored.partition,
        offset: stored.offset,
        accepted_at_ms,
    })
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

fn validate_client(client: String) -> Result<String, ApiError> {
    let ok = !client.is_empty()
        && client.len() <= MAX_CLIENT_LEN
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(client)
    } else {
        Err(ApiError::InvalidBody(format!(
            "`client` must be 1 to {MAX_CLIENT_LEN} characters of A-Z a-z 0-9 - _ . :"
        )))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
