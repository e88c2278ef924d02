//! The relay's metrics contract (see `button_infra::metrics`). Every series
//! exists from start-up.

use button_infra::metrics::{BATCH_RECORDS, Kind, Label, Metric, STAGE_SECONDS, counter, gauge};

/// Stages of a batch, in order.
pub const STAGES: &[&str] = &["claim", "produce", "mark"];

pub const METRICS: &[Metric] = &[
    counter(
        "relay_rows_sent_total",
        "rows",
        "Outbox rows the broker acknowledged, counted once the transaction marking them sent committed.",
    ),
    counter(
        "relay_send_failures_total",
        "sends",
        "Sends that failed: refused (by librdkafka, or by the broker) or not acknowledged within the produce timeout.",
    ),
    counter(
        "relay_rows_dead_total",
        "rows",
        "Outbox rows marked dead after their last allowed failed send.",
    ),
    counter(
        "relay_rows_pruned_total",
        "rows",
        "Sent outbox rows deleted once older than the retention.",
    ),
    counter(
        "relay_batch_failures_total",
        "batches",
        "Batches rolled back and retried after a pause: PostgreSQL failed, or no row got through and the broker (not a row) was at fault.",
    ),
    counter(
        "relay_producer_renewals_total",
        "sessions",
        "New producer sessions started after every broker was lost or a broker refused a record.",
    ),
    Metric {
        name: "relay_batch_size",
        kind: Kind::Histogram,
        unit: "records",
        labels: &[],
        help: "Rows claimed per transaction.",
        buckets: BATCH_RECORDS,
    },
    Metric {
        name: "relay_stage_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &[Label {
            name: "stage",
            values: STAGES,
        }],
        help: "Time per batch in each stage: claim (BEGIN and the locking read), produce (until the last acknowledgement), mark (recording sends and failures, and COMMIT).",
        buckets: STAGE_SECONDS,
    },
    gauge(
        "relay_outbox_pending",
        "rows",
        "Outbox rows waiting to be sent, read about once a second.",
    ),
    gauge(
        "relay_outbox_overdue",
        "rows",
        "Outbox rows pending for more than a second (the backlog the relays have not kept up with), read about once a second.",
    ),
    gauge(
        "relay_outbox_dead",
        "rows",
        "Outbox rows marked dead (never sent), read about once a second.",
    ),
];
