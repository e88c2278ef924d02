//! The reducer's metrics contract (see `button_infra::metrics`). Label
//! values listed here exist from start-up; partitions appear on assignment.

use button_infra::metrics::{BATCH_RECORDS, Kind, Label, Metric, STAGE_SECONDS, counter, gauge};

/// Stages of a batch, in order.
pub const STAGES: &[&str] = &["collect", "decode", "apply", "db", "publish", "commit"];

/// Why a record went to the dead-letter topic (`DecodeError::code`, or a
/// request id seen lately).
pub const DEAD_LETTER_REASONS: &[&str] = &[
    "empty_payload",
    "too_large",
    "malformed_json",
    "unknown_version",
    "unknown_kind",
    "invalid_field",
    "duplicate_request_id",
];

const PARTITION: Label = Label {
    name: "partition",
    values: &[],
};

pub const METRICS: &[Metric] = &[
    counter(
        "reducer_records_total",
        "records",
        "Records read from the press topic (ingest `direct`: rows of `presses`) that were not applied before.",
    ),
    counter(
        "reducer_records_skipped_total",
        "records",
        "Records dropped because PostgreSQL already has their offset (redelivery after a crash, or another group member applied them first).",
    ),
    counter(
        "reducer_offset_gaps_total",
        "gaps",
        "Records whose offset was not the next one expected (compaction, transactions).",
    ),
    counter(
        "reducer_events_applied_total",
        "presses",
        "Presses folded into a persisted state.",
    ),
    Metric {
        name: "reducer_dead_letters_total",
        kind: Kind::Counter,
        unit: "records",
        labels: &[Label {
            name: "reason",
            values: DEAD_LETTER_REASONS,
        }],
        help: "Poison records sent to the dead-letter topic (ingest `direct`: skipped and logged), by reason.",
        buckets: &[],
    },
    counter(
        "reducer_dead_letter_renewals_total",
        "sessions",
        "New dead-letter producer sessions started after a broker refused a record.",
    ),
    counter(
        "reducer_ticks_total",
        "ticks",
        "Idle decay ticks persisted.",
    ),
    Metric {
        name: "reducer_batch_size",
        kind: Kind::Histogram,
        unit: "records",
        labels: &[],
        help: "Records per persisted batch.",
        buckets: BATCH_RECORDS,
    },
    Metric {
        name: "reducer_stage_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &[Label {
            name: "stage",
            values: STAGES,
        }],
        help: "Time per batch in each stage: collect (waiting for records), decode, apply (the fold), db (the transaction), publish (to Redis), commit (offsets to Kafka; not in `direct`).",
        buckets: STAGE_SECONDS,
    },
    gauge(
        "reducer_state_id",
        "id",
        "Id of the newest persisted state.",
    ),
    gauge(
        "reducer_state_presses",
        "presses",
        "The counter of the newest persisted state (presses counted so far).",
    ),
    Metric {
        name: "reducer_applied_offset",
        kind: Kind::Gauge,
        unit: "offset",
        labels: &[PARTITION],
        help: "Offset of the last record applied and persisted, per partition.",
        buckets: &[],
    },
    Metric {
        name: "reducer_consumer_lag",
        kind: Kind::Gauge,
        unit: "records",
        labels: &[PARTITION],
        help: "Records on the topic past the last applied offset, per partition (ingest `direct`: the newest id in `presses` past the last applied one, partition 0).",
        buckets: &[],
    },
    Metric {
        name: "reducer_partition_held",
        kind: Kind::Gauge,
        unit: "0/1",
        labels: &[PARTITION],
        help: "1 for each partition of the topic this member reads now, 0 for the others (ingest `kafka` and `outbox`): a partition no member holds has lag that no member reports.",
        buckets: &[],
    },
    counter(
        "reducer_conflicts_total",
        "batches",
        "Appends that found their parent taken by another writer: folded again onto the newest snapshot (under the writers' lock), or dropped and reloaded when that missed too.",
    ),
    counter(
        "reducer_db_retries_total",
        "attempts",
        "Failed PostgreSQL writes that were retried (or ended the process).",
    ),
    counter(
        "reducer_kafka_commits_total",
        "commits",
        "Offset commits sent to Kafka.",
    ),
    counter(
        "reducer_kafka_commit_failures_total",
        "commits",
        "Offset commits Kafka refused (PostgreSQL still has the offsets).",
    ),
    counter(
        "reducer_publishes_total",
        "states",
        "States published to Redis.",
    ),
    counter(
        "reducer_publish_failures_total",
        "states",
        "States that could not be published to Redis (best effort; clients catch up).",
    ),
];
