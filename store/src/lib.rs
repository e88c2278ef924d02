//! PostgreSQL access shared by the service and the reducer.
//!
//! - [`connect`] opens a pool and applies `migrations/` (idempotent: sqlx
//!   records what it applied and checks the files did not change).
//! - [`active_ruleset`] loads the rules and verifies their hash.
//! - [`latest_snapshot`], [`snapshot_after`] read the newest state.
//! - [`append_snapshot`] writes one state with its offsets, in the
//!   caller's transaction, refusing to fork the history; it queues the
//!   writers on one lock.
//! - [`ingest`]: the `outbox` and `presses` tables of the other two ingest
//!   paths.

pub mod ingest;

use button_domain::{Ruleset, Snapshot, State};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no active ruleset in `rulesets`")]
    NoActiveRuleset,
    #[error("ruleset {version} does not parse: {reason}")]
    BadRuleset { version: i64, reason: String },
    #[error("ruleset {version} stored hash {stored} but its config hashes to {computed}")]
    RulesetHashMismatch {
        version: i64,
        stored: String,
        computed: String,
    },
    #[error("snapshot {id} has unreadable {field}: {reason}")]
    BadSnapshot {
        id: i64,
        field: &'static str,
        reason: String,
    },
    #[error("another writer appended a snapshot after {parent_id}")]
    Conflict { parent_id: i64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Worth retrying with backoff (the database went away or timed out),
    /// as opposed to a bug or a conflict that needs a reload.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Db(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
            )
        ) || matches!(self, Error::Db(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57")))
    }
}

/// Opens a pool and runs the migrations.
///
/// `idle_in_transaction`: PostgreSQL ends a session of this pool that sits
/// inside a transaction for longer without sending a statement (frozen,
/// or stopped mid-write), rolling it back and releasing its locks, so that
/// a stopped writer cannot hold the others up past it. `None` for a pool
/// whose transactions legitimately wait on something else (the relay's
/// wait on the broker).
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    idle_in_transaction: Option<Duration>,
) -> Result<PgPool> {
    let mut options = PgConnectOptions::from_str(url)?.application_name("button");
    if let Some(idle) = idle_in_transaction {
        options = options.options([(
            "idle_in_transaction_session_timeout",
            format!("{}ms", idle.as_millis()),
        )]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// The active ruleset and its verified hash.
pub async fn active_ruleset(pool: &PgPool) -> Result<(Ruleset, String)> {
    let row = sqlx::query("SELECT version, config, hash FROM rulesets WHERE active")
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NoActiveRuleset)?;
    let version: i64 = row.try_get("version")?;
    let config: serde_json::Value = row.try_get("config")?;
    let stored: String = row.try_get("hash")?;
    let rules: Ruleset = serde_json::from_value(config).map_err(|e| Error::BadRuleset {
        version,
        reason: e.to_string(),
    })?;
    rules.validate().map_err(|e| Error::BadRuleset {
        version,
        reason: e.to_string(),
    })?;
    let computed = rules.hash();
    if computed != stored {
        return Err(Error::RulesetHashMismatch {
            version,
            stored,
            computed,
        });
    }
    Ok((rules, stored))
}

const SNAPSHOT_COLUMNS: &str = "id, counter, phase, entropy, cooldown_ms, reveal_until_ms, last_press_ms, \
     last_tick_ms, rules_hash, offsets, batch_size, first_event_ms, last_event_ms, \
     (extract(epoch FROM committed_at) * 1000)::bigint AS committed_at_ms";

/// The newest snapshot, if any was ever written.
pub async fn latest_snapshot(pool: &PgPool) -> Result<Option<Snapshot>> {
    let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM global_states ORDER BY id DESC LIMIT 1");
    let row = sqlx::query(&sql).fetch_optional(pool).await?;
    row.map(|r| decode_snapshot(&r)).transpose()
}

/// The newest snapshot if it is newer than `id` (from a pool, or inside a
/// writer's transaction after [`append_snapshot`] found its parent taken).
pub async fn snapshot_after<'c>(
    db: impl sqlx::PgExecutor<'c>,
    id: i64,
) -> Result<Option<Snapshot>> {
    let sql = format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM global_states WHERE id > $1 ORDER BY id DESC LIMIT 1"
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(db).await?;
    row.map(|r| decode_snapshot(&r)).transpose()
}

/// Key of the advisory lock every snapshot writer takes with its append
/// and holds until its transaction ends.
pub const WRITER_LOCK: i64 = 0x6275_7474_6f6e; // "button"

/// What a batch contributes besides the folded state.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchInfo {
    pub batch_size: i64,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
}

/// Adds a batch's presses per country inside `tx` (the snapshot's
/// transaction, so they count exactly once).
pub async fn add_country_counts(
    tx: &mut Transaction<'_, Postgres>,
    counts: &std::collections::BTreeMap<String, u64>,
) -> Result<(), Error> {
    if counts.is_empty() {
        return Ok(());
    }
    // One statement per batch, whatever the number of countries in it.
    let (countries, presses): (Vec<&str>, Vec<i64>) =
        counts.iter().map(|(c, n)| (c.as_str(), *n as i64)).unzip();
    sqlx::query(
        "INSERT INTO country_counts (country, presses)
         SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (country) DO UPDATE SET presses = country_counts.presses + EXCLUDED.presses",
    )
    .bind(countries)
    .bind(presses)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `n` countries with the most presses, most first.
pub async fn top_countries(pool: &PgPool, n: i64) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT country, presses FROM country_counts ORDER BY presses DESC, country LIMIT $1",
    )
    .bind(n)
    .fetch_all(pool)
    .await?)
}

/// Appends `state` as the child of `parent_id` inside `tx`. Fails with
/// [`Error::Conflict`] when another snapshot already has that parent.
///
/// The statement first takes the writers' lock ([`WRITER_LOCK`], held
/// until `tx` ends), so writers queue rather than race: one that finds
/// its parent taken still holds the lock, reads the newest snapshot
/// ([`snapshot_after`]) and appends onto it with no writer in between.
/// With one writer the parent is never taken and the append is the only
/// statement before the commit. An advisory lock rather than `FOR UPDATE`
/// because before the first snapshot there is no row to lock.
pub async fn append_snapshot(
    tx: &mut Transaction<'_, Postgres>,
    parent_id: i64,
    state: &State,
    rules_hash: &str,
    batch: BatchInfo,
) -> Result<Snapshot> {
    let offsets = offsets_json(&state.offsets);
    let row = sqlx::query(
        "WITH writers AS (SELECT pg_advisory_xact_lock($14)) \
         INSERT INTO global_states (parent_id, counter, phase, entropy, cooldown_ms, reveal_until_ms, \
         last_press_ms, last_tick_ms, rules_hash, offsets, batch_size, first_event_ms, last_event_ms) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM writers \
         ON CONFLICT (parent_id) DO NOTHING \
         RETURNING id, (extract(epoch FROM committed_at) * 1000)::bigint AS committed_at_ms",
    )
    .bind(parent_id)
    .bind(i64::try_from(state.counter).unwrap_or(i64::MAX))
    .bind(state.phase.as_str())
    .bind(state.entropy)
    .bind(state.cooldown_ms)
    .bind(state.reveal_until_ms)
    .bind(state.last_press_ms)
    .bind(state.last_tick_ms)
    .bind(rules_hash)
    .bind(offsets)
    .bind(batch.batch_size)
    .bind(batch.first_event_ms)
    .bind(batch.last_event_ms)
    .bind(WRITER_LOCK)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::Conflict { parent_id })?;
    Ok(Snapshot::from_state(
        row.try_get("id")?,
        state,
        rules_hash.to_owned(),
        batch.batch_size,
        batch.first_event_ms,
        batch.last_event_ms,
        row.try_get("committed_at_ms")?,
    ))
}

fn offsets_json(offsets: &BTreeMap<i32, i64>) -> serde_json::Value {
    serde_json::Value::Object(
        offsets
            .iter()
            .map(|(p, o)| (p.to_string(), (*o).into()))
            .collect(),
    )
}

fn decode_snapshot(row: &PgRow) -> Result<Snapshot> {
    let id: i64 = row.try_get("id")?;
    let bad = |field, reason: String| Error::BadSnapshot { id, field, reason };
    let phase: String = row.try_get("phase")?;
    let offsets: serde_json::Value = row.try_get("offsets")?;
    let offsets: BTreeMap<i32, i64> =
        serde_json::from_value(offsets).map_err(|e| bad("offsets", e.to_string()))?;
    let counter: i64 = row.try_get("counter")?;
    Ok(Snapshot {
        id,
        counter: u64::try_from(counter).map_err(|e| bad("counter", e.to_string()))?,
        phase: phase
            .parse()
            .map_err(|e: button_domain::RulesetError| bad("phase", e.to_string()))?,
        entropy: row.try_get("entropy")?,
        cooldown_ms: row.try_get("cooldown_ms")?,
        reveal_until_ms: row.try_get("reveal_until_ms")?,
        last_press_ms: row.try_get("last_press_ms")?,
        last_tick_ms: row.try_get("last_tick_ms")?,
        rules_hash: row.try_get("rules_hash")?,
        offsets,
        batch_size: row.try_get("batch_size")?,
        first_event_ms: row.try_get("first_event_ms")?,
        last_event_ms: row.try_get("last_event_ms")?,
        committed_at_ms: row.try_get("committed_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed row in the first migration must carry the hash the domain
    /// computes, or the reducer refuses to start.
    #[test]
    fn seed_migration_matches_the_default_ruleset() {
        let sql = include_str!("../../migrations/0001_rulesets.sql");
        let rules = Ruleset::default();
        assert!(
            sql.contains(&format!("'{}'", rules.canonical_json())),
            "seed config differs from Ruleset::default()"
        );
        assert!(
            sql.contains(&format!("'{}'", rules.hash())),
            "seed hash differs from Ruleset::default().hash()"
        );
    }
}
