//! The two press sinks that keep presses in PostgreSQL (ingest `outbox`
//! and `direct`; `kafka` is [`crate::producer::PressProducer`]). Either
//! answers once the insert committed: the press is then as durable as the
//! database.

use crate::error::ApiError;
use crate::producer::{PressSink, Stored};
use button_infra::config::Ingest;
use futures::future::BoxFuture;
use sqlx::PgPool;
use std::time::Duration;

/// Inserts presses into `outbox` (for the relay) or `presses` (for the
/// reducer), each within a deadline.
pub struct TableSink {
    pool: PgPool,
    ingest: Ingest,
    deadline: Duration,
}

impl TableSink {
    /// `ingest` is `outbox` or `direct`.
    pub fn new(pool: PgPool, ingest: Ingest, deadline: Duration) -> TableSink {
        debug_assert!(ingest != Ingest::Kafka, "the kafka path uses the producer");
        TableSink {
            pool,
            ingest,
            deadline,
        }
    }

    async fn insert(&self, key: &str, payload: &[u8]) -> Result<Stored, ApiError> {
        let insert = async {
            match self.ingest {
                Ingest::Direct => button_store::ingest::insert_press(&self.pool, key, payload)
                    .await
                    .map(|id| Stored::Log {
                        partition: 0,
                        offset: id,
                    }),
                _ => button_store::ingest::insert_outbox(&self.pool, key, payload)
                    .await
                    .map(|id| Stored::Outbox { id }),
            }
        };
        match tokio::time::timeout(self.deadline, insert).await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(e)) => Err(ApiError::DatabaseUnavailable(e.to_string())),
            // The insert may still commit: like a produce whose ack never
            // came, the press's outcome is unknown to the client.
            Err(_) => Err(ApiError::DatabaseUnavailable(format!(
                "no commit within {} ms",
                self.deadline.as_millis()
            ))),
        }
    }
}

impl PressSink for TableSink {
    fn send<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Stored, ApiError>> {
        Box::pin(crate::producer::timed(self.insert(key, payload)))
    }

    /// No broker to wait for: the pool reconnects by itself, and a press
    /// while PostgreSQL is away is answered 503 `database_unavailable`.
    fn broker_up(&self) -> bool {
        true
    }

    fn uses_broker(&self) -> bool {
        false
    }
}
