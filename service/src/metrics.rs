//! The service's metrics contract (see `button_infra::metrics`). Label
//! values listed here exist from start-up.

use button_infra::metrics::{Kind, Label, Metric, REQUEST_SECONDS};

/// Every status `POST /v1/events/press` answers with.
pub const PRESS_STATUSES: &[&str] = &["202", "400", "409", "413", "415", "429", "503"];

/// Every stable error code (`ApiError::code`).
pub const ERROR_CODES: &[&str] = &[
    "invalid_json",
    "invalid_body",
    "payload_too_large",
    "unsupported_media_type",
    "method_not_allowed",
    "not_found",
    "broker_unavailable",
    "queue_full",
    "too_many_clients",
    "too_many_streams",
    "not_websocket",
    "request_timeout",
    "shutting_down",
    "pow_disabled",
    "pow_required",
    "pow_invalid",
    "pow_expired",
    "pow_replayed",
    "pow_unavailable",
    "rate_limited",
    "rate_limit_unavailable",
    "invalid_idempotency_key",
    "idempotency_in_progress",
    "idempotency_unavailable",
    "database_unavailable",
];

pub const METRICS: &[Metric] = &[
    Metric {
        name: "service_press_requests_total",
        kind: Kind::Counter,
        unit: "requests",
        labels: &[Label {
            name: "status",
            values: PRESS_STATUSES,
        }],
        help: "Press requests answered, by HTTP status.",
        buckets: &[],
    },
    Metric {
        name: "service_press_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &[Label {
            name: "outcome",
            values: &["accepted", "rejected"],
        }],
        help: "Time from a press request to its answer.",
        buckets: REQUEST_SECONDS,
    },
    Metric {
        name: "service_produce_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &[Label {
            name: "outcome",
            values: &["stored", "failed"],
        }],
        help: "Time from handing a record to the producer to the broker's acknowledgement.",
        buckets: REQUEST_SECONDS,
    },
    Metric {
        name: "service_http_errors_total",
        kind: Kind::Counter,
        unit: "responses",
        labels: &[Label {
            name: "code",
            values: ERROR_CODES,
        }],
        help: "Error answers on any route, by stable error code.",
        buckets: &[],
    },
    Metric {
        name: "service_sse_clients",
        kind: Kind::Gauge,
        unit: "clients",
        labels: &[],
        help: "Open state streams (SSE and WebSocket).",
        buckets: &[],
    },
    Metric {
        name: "service_sse_frames_total",
        kind: Kind::Counter,
        unit: "frames",
        labels: &[],
        help: "State frames written to stream clients (SSE frames and WebSocket messages).",
        buckets: &[],
    },
    Metric {
        name: "service_state_updates_total",
        kind: Kind::Counter,
        unit: "states",
        labels: &[Label {
            name: "source",
            values: &["redis", "postgres"],
        }],
        help: "Newer states received, from Redis or from polling PostgreSQL while Redis is down.",
        buckets: &[],
    },
    Metric {
        name: "service_state_age_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &[],
        help: "Age of each newer state's oldest press (from its acceptance, `first_event_ms`) when the state reaches this instance's stream clients: press to push, end to end. Ticks are not observed.",
        buckets: REQUEST_SECONDS,
    },
    Metric {
        name: "service_redis_up",
        kind: Kind::Gauge,
        unit: "boolean",
        labels: &[],
        help: "1 while the state subscription to Redis is live.",
        buckets: &[],
    },
    Metric {
        name: "service_challenges_issued_total",
        kind: Kind::Counter,
        unit: "challenges",
        labels: &[],
        help: "Proof-of-work challenges handed out by GET /v1/challenge.",
        buckets: &[],
    },
    Metric {
        name: "service_idempotent_replays_total",
        kind: Kind::Counter,
        unit: "requests",
        labels: &[],
        help: "Presses answered with the first answer given for their Idempotency-Key (nothing produced).",
        buckets: &[],
    },
    Metric {
        name: "service_guard_unavailable_total",
        kind: Kind::Counter,
        unit: "checks",
        labels: &[Label {
            name: "guard",
            values: &["pow", "rate_limit", "idempotency"],
        }],
        help: "Guard checks that could not reach Redis: rate limits let the press through (unless `rate_limit_redis_down` is `closed`), proof of work and idempotency answer 503.",
        buckets: &[],
    },
    Metric {
        name: "service_producer_renewals_total",
        kind: Kind::Counter,
        unit: "sessions",
        labels: &[],
        help: "New producer sessions started after every broker was lost or a broker refused a record.",
        buckets: &[],
    },
];
