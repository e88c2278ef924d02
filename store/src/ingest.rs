//! The `outbox` and `presses` tables (`migrations/0004_ingest.sql`): how a
//! press reaches the reducer when the ingest path is `outbox` or `direct`.

use crate::Result;
use sqlx::{PgPool, Postgres, Row, Transaction};

/// Channels the insert triggers notify (the tables' names).
pub const OUTBOX_CHANNEL: &str = "outbox";
pub const PRESSES_CHANNEL: &str = "presses";

/// `direct`: stores a press and returns its row id. A request id stored
/// before returns the first row's id, so a retried insert is idempotent.
pub async fn insert_press(pool: &PgPool, request_id: &str, payload: &[u8]) -> Result<i64> {
    insert_once(
        pool,
        [
            "INSERT INTO presses (request_id, payload) VALUES ($1, $2)
             ON CONFLICT (request_id) DO NOTHING RETURNING id",
            "SELECT id FROM presses WHERE request_id = $1",
        ],
        request_id,
        payload,
    )
    .await
}

/// Inserts a row unless its request id is there, and returns the row's id
/// either way: `[insert … ON CONFLICT DO NOTHING RETURNING id, select id]`.
async fn insert_once(
    pool: &PgPool,
    [insert, select]: [&'static str; 2],
    request_id: &str,
    payload: &[u8],
) -> Result<i64> {
    let inserted: Option<i64> = sqlx::query_scalar(insert)
        .bind(request_id)
        .bind(payload)
        .fetch_optional(pool)
        .await?;
    match inserted {
        Some(id) => Ok(id),
        None => Ok(sqlx::query_scalar(select)
            .bind(request_id)
            .fetch_one(pool)
            .await?),
    }
}

/// One row of `presses`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredPress {
    pub id: i64,
    pub payload: Vec<u8>,
}

/// `direct`: up to `limit` presses after `after`, in id order, such that
/// no press with an id at or below the last one returned can commit later.
///
/// Ids come from a sequence and transactions commit out of order: the row
/// with id 8 can commit a moment after the one with id 9, and a reader
/// that saw 9 and moved past it would never fold 8. So the read first
/// takes a SHARE lock on the table, which waits for every insert in flight
/// (and holds new ones back for as long as the read lasts). Every id handed
/// out before that point is then committed or rolled back, and every id
/// handed out after it is larger than any this read can return.
pub async fn read_presses(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<StoredPress>> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE presses IN SHARE MODE")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query_as("SELECT id, payload FROM presses WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Every press with `after < id <= through`, in id order, read without
/// the barrier: for a reader that already knows those ids are settled
/// (the lab, after the reducer applied through `through`).
pub async fn presses_between(pool: &PgPool, after: i64, through: i64) -> Result<Vec<StoredPress>> {
    Ok(
        sqlx::query_as("SELECT id, payload FROM presses WHERE id > $1 AND id <= $2 ORDER BY id")
            .bind(after)
            .bind(through)
            .fetch_all(pool)
            .await?,
    )
}

/// `outbox`: stores a press for the relay and returns its row id; a
/// request id already there (a keyed retry) returns the first row's id.
pub async fn insert_outbox(pool: &PgPool, request_id: &str, payload: &[u8]) -> Result<i64> {
    insert_once(
        pool,
        [
            "INSERT INTO outbox (request_id, payload) VALUES ($1, $2)
             ON CONFLICT (request_id) DO NOTHING RETURNING id",
            "SELECT id FROM outbox WHERE request_id = $1",
        ],
        request_id,
        payload,
    )
    .await
}

/// A pending outbox row, claimed by one relay until its transaction ends.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub request_id: String,
    pub payload: Vec<u8>,
    /// Failed sends so far.
    pub attempts: i32,
}

/// Locks up to `limit` pending rows that are due, oldest first, skipping
/// rows another relay holds. The locks last until `tx` ends: a relay that
/// dies leaves them pending for the next claim.
pub async fn claim_outbox(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    Ok(sqlx::query_as(
        "SELECT id, request_id, payload, attempts FROM outbox
         WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// Where the broker stored an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
}

/// Marks claimed rows sent, with where the broker stored each.
pub async fn mark_sent(tx: &mut Transaction<'_, Postgres>, sent: &[Sent]) -> Result<u64> {
    if sent.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = sent.iter().map(|s| s.id).collect();
    let partitions: Vec<i32> = sent.iter().map(|s| s.partition).collect();
    let offsets: Vec<i64> = sent.iter().map(|s| s.offset).collect();
    let done = sqlx::query(
        "UPDATE outbox o SET state = 'sent', sent_at = clock_timestamp(),
             sent_partition = s.part, sent_offset = s.pos
         FROM UNNEST($1::bigint[], $2::integer[], $3::bigint[]) AS s(id, part, pos)
         WHERE o.id = s.id",
    )
    .bind(ids)
    .bind(partitions)
    .bind(offsets)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Records a failed send: the row waits `retry_in_ms`, or becomes `dead`
/// (never sent, kept with its error) when `dead` is set.
pub async fn mark_failed(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    error: &str,
    retry_in_ms: i64,
    dead: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
             state = CASE WHEN $4 THEN 'dead' ELSE state END,
             next_attempt_at = clock_timestamp() + make_interval(secs => $3::double precision / 1000)
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(retry_in_ms)
    .bind(dead)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes up to `limit` rows sent more than `older_than_ms` ago; returns
/// how many went.
pub async fn prune_sent(pool: &PgPool, older_than_ms: i64, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE id IN (
             SELECT id FROM outbox
             WHERE state = 'sent'
               AND sent_at < clock_timestamp() - make_interval(secs => $1::double precision / 1000)
             ORDER BY sent_at LIMIT $2)",
    )
    .bind(older_than_ms)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Pending rows inserted more than `older_than_ms` ago: the backlog the
/// relays have not kept up with (a row normally waits a few ms).
pub async fn outbox_overdue(pool: &PgPool, older_than_ms: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM outbox
         WHERE state = 'pending'
           AND created_at < clock_timestamp() - make_interval(secs => $1::double precision / 1000)",
    )
    .bind(older_than_ms)
    .fetch_one(pool)
    .await?)
}

/// Rows per state: `(pending, sent, dead)`.
pub async fn outbox_counts(pool: &PgPool) -> Result<(i64, i64, i64)> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'sent') AS sent,
                count(*) FILTER (WHERE state = 'dead') AS dead
         FROM outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok((
        row.try_get("pending")?,
        row.try_get("sent")?,
        row.try_get("dead")?,
    ))
}
