//! The relay's producer: idempotent, `acks=all`, every send bounded by the
//! produce timeout, and a new session once the old one is no good.

use crate::Config;
use button_infra::kafka::Renewable;
use button_store::ingest::{OutboxRow, Sent};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Notes when every broker went away, so the next batch starts a new
/// producer session.
pub struct RelayContext {
    lost: Arc<AtomicBool>,
}

impl ClientContext for RelayContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.lost.store(true, Ordering::Relaxed);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

/// Why one row did not get through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The record itself cannot be stored (too large, invalid): sending it
    /// again changes nothing, so it counts towards `max_attempts`.
    Record(String),
    /// The broker refused it or did not answer in time: the row may get
    /// through later.
    Broker(String),
}

impl SendError {
    pub fn is_record_fault(&self) -> bool {
        matches!(self, SendError::Record(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Record(e) | SendError::Broker(e) => f.write_str(e),
        }
    }
}

/// Codes that say the record, not the broker or the session, is at fault.
fn is_record_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
    )
}

pub struct Producer {
    inner: Renewable<RelayContext>,
    lost: Arc<AtomicBool>,
    topic: String,
    deadline: Duration,
}

impl Producer {
    pub fn new(config: &Config) -> Result<Producer, KafkaError> {
        let deadline = Duration::from_millis(config.produce_timeout_ms);
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("client.id", "button-relay")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", deadline.as_millis().to_string())
            // A claimed batch is handed to librdkafka all at once, so its
            // records are batched without waiting; a long linger would only
            // delay the acknowledgements the transaction waits for.
            .set("linger.ms", "2")
            .set("reconnect.backoff.max.ms", "1000");
        config.producer.apply(&mut client);
        let lost = Arc::new(AtomicBool::new(false));
        let inner = Renewable::new(client, RelayContext { lost: lost.clone() })?;
        Ok(Producer {
            inner,
            lost,
            topic: config.topic.clone(),
            deadline,
        })
    }

    /// Produces every row at once and waits for all the acknowledgements,
    /// none longer than the produce timeout. One outcome per row, in order.
    pub async fn send_all(&self, rows: &[OutboxRow]) -> Vec<Result<Sent, SendError>> {
        if self.lost.swap(false, Ordering::AcqRel) {
            self.renew();
        }
        let producer = self.inner.current();
        // librdkafka times a record out at `message.timeout.ms`; the outer
        // bound only guards against a delivery report that never comes.
        let bound = self.deadline + Duration::from_secs(1);
        let sends = rows.iter().map(|row| {
            let producer = &producer;
            async move {
                let record = FutureRecord::to(&self.topic)
                    .key(row.request_id.as_str())
                    .payload(row.payload.as_slice());
                let send = producer.send(record, Timeout::After(self.deadline));
                match tokio::time::timeout(bound, send).await {
                    Ok(Ok(delivery)) => Ok(Sent {
                        id: row.id,
                        partition: delivery.partition,
                        offset: delivery.offset,
                    }),
                    Ok(Err((error, _))) => Err(self.classify(error)),
                    Err(_) => Err(SendError::Broker(format!(
                        "no acknowledgement within {} ms",
                        bound.as_millis()
                    ))),
                }
            }
        });
        futures::future::join_all(sends).await
    }

    /// Has the next batch start a new session: after a batch in which
    /// nothing got through, the old session may hold records the broker
    /// never answered, and librdkafka's way out of that (bumping the
    /// session's epoch) is one tansu 0.6.0 cannot follow.
    pub fn session_lost(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    fn classify(&self, error: KafkaError) -> SendError {
        match error {
            KafkaError::MessageProduction(code) if is_record_code(code) => {
                SendError::Record(error.to_string())
            }
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                SendError::Broker(error.to_string())
            }
            KafkaError::MessageProduction(_) => {
                // A broker that lost this session refuses every later record
                // of it (tansu 0.6.0 after a restart): start a new one.
                self.lost.store(true, Ordering::Relaxed);
                SendError::Broker(error.to_string())
            }
            other => SendError::Broker(other.to_string()),
        }
    }

    /// Starts a new producer session, at most once a second.
    fn renew(&self) {
        let context = || RelayContext {
            lost: self.lost.clone(),
        };
        match self
            .inner
            .renew_at_most_every(Duration::from_secs(1), context)
        {
            // Too soon: the next send asks again.
            Ok(false) => self.lost.store(true, Ordering::Relaxed),
            Ok(true) => {
                metrics::counter!("relay_producer_renewals_total").increment(1);
                tracing::info!("started a new producer session");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new producer; keeping the old one")
            }
        }
    }

    /// Fetches the topic's metadata: a broker answers and the topic exists.
    /// Blocking; call from a blocking thread.
    pub fn check_topic(&self, timeout: Duration) -> Result<usize, String> {
        button_infra::kafka::topic_partitions(self.inner.current().client(), &self.topic, timeout)
    }

    /// Waits for whatever librdkafka still holds. Blocking.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.current().flush(timeout)
    }
}
