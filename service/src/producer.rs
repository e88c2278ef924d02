//! The press producer: idempotent, `acks=all`, bounded in time, and aware
//! of whether any broker is reachable so a press fails fast when none is.

use crate::error::ApiError;
use button_infra::KafkaProperties;
use button_infra::kafka::Renewable;
use futures::future::BoxFuture;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// Whether librdkafka can currently reach a broker.
#[derive(Debug, Clone)]
pub struct BrokerHealth(Arc<AtomicBool>);

impl BrokerHealth {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct HealthContext {
    up: Arc<AtomicBool>,
    /// Set when every broker went away: the next send starts a new
    /// producer session (see [`PressProducer::send`]).
    lost: Arc<AtomicBool>,
}

impl ClientContext for HealthContext {
    // librdkafka's statistics say, once a second, which brokers are UP.
    fn stats(&self, stats: Statistics) {
        let any_up = stats.brokers.values().any(|b| b.state == "UP");
        if self.up.swap(any_up, Ordering::Relaxed) != any_up {
            tracing::info!(up = any_up, "broker reachability changed");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.up.store(false, Ordering::Relaxed);
            self.lost.store(true, Ordering::Relaxed);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ProducerContext for HealthContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[derive(Clone)]
pub struct PressProducer {
    producer: Arc<Renewable<HealthContext>>,
    lost: Arc<AtomicBool>,
    topic: Arc<str>,
    deadline: Duration,
    health: BrokerHealth,
}

/// Where an accepted press was stored: what its 202 names so that a
/// client can match it to the first state that includes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A position in a log the reducer reads in order: the topic's
    /// partition and offset, or (ingest `direct`) partition 0 and the
    /// `presses` row id. A state covers it once its offsets reach it.
    Log { partition: i32, offset: i64 },
    /// A row of the outbox, not yet in the topic: the relay gives it a
    /// topic position later, which the record's request id finds.
    Outbox { id: i64 },
}

/// Where accepted presses go. The service uses [`PressProducer`]; the
/// handler's benchmark uses [`MemorySink`] so it measures the HTTP path
/// alone.
pub trait PressSink: Send + Sync + 'static {
    /// Stores one record, answering once it is durable (or refused).
    fn send<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Stored, ApiError>>;
    /// Whether a broker is reachable now (readiness).
    fn broker_up(&self) -> bool;
    /// Whether presses go to a broker at all (`/health` reports none
    /// otherwise).
    fn uses_broker(&self) -> bool {
        true
    }
}

impl PressSink for PressProducer {
    fn send<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Stored, ApiError>> {
        Box::pin(timed(PressProducer::send(self, key, payload)))
    }

    fn broker_up(&self) -> bool {
        self.health.is_up()
    }
}

/// Stores a press through `store`, timing it into
/// `service_produce_duration_seconds` by outcome (every sink's figure).
pub(crate) async fn timed(
    store: impl std::future::Future<Output = Result<Stored, ApiError>>,
) -> Result<Stored, ApiError> {
    let started = std::time::Instant::now();
    let stored = store.await;
    metrics::histogram!(
        "service_produce_duration_seconds",
        "outcome" => if stored.is_ok() { "stored" } else { "failed" }
    )
    .record(started.elapsed().as_secs_f64());
    stored
}

/// Keeps records in memory, one partition, offsets from 0: a broker that
/// never fails, for benchmarks of the layers above it.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl MemorySink {
    pub fn len(&self) -> usize {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PressSink for MemorySink {
    fn send<'a>(
        &'a self,
        _key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Stored, ApiError>> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.push(payload.to_vec());
        let offset = records.len() as i64 - 1;
        Box::pin(std::future::ready(Ok(Stored::Log {
            partition: 0,
            offset,
        })))
    }

    fn broker_up(&self) -> bool {
        true
    }
}

impl PressProducer {
    pub fn new(
        brokers: &str,
        topic: &str,
        deadline: Duration,
        extra: &KafkaProperties,
    ) -> Result<Self, KafkaError> {
        let up = Arc::new(AtomicBool::new(true));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "button-service")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", deadline.as_millis().to_string())
            // At 1 ms, librdkafka's broker thread was three fifths of the
            // service's CPU at 14,000 presses/s (perf), and at 5-10 ms it
            // still spun whenever its requests in flight were at the limit;
            // 20 ms batches cost a press at most 20 ms and keep it quiet.
            .set("linger.ms", "20")
            .set("statistics.interval.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000");
        extra.apply(&mut config);
        let lost = Arc::new(AtomicBool::new(false));
        let producer = Renewable::new(
            config,
            HealthContext {
                up: up.clone(),
                lost: lost.clone(),
            },
        )?;
        Ok(PressProducer {
            producer: Arc::new(producer),
            lost,
            topic: topic.into(),
            deadline,
            health: BrokerHealth(up),
        })
    }

    pub fn health(&self) -> BrokerHealth {
        self.health.clone()
    }

    /// Produces one record and waits for the broker's acknowledgement, never
    /// longer than the deadline.
    pub async fn send(&self, key: &str, payload: &[u8]) -> Result<Stored, ApiError> {
        if !self.health.is_up() {
            return Err(ApiError::BrokerUnavailable(
                "no broker is reachable".to_owned(),
            ));
        }
        if self.lost.swap(false, Ordering::AcqRel) {
            self.renew();
        }
        let producer = self.current();
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        // A full local queue is answered at once rather than waited on.
        let send = producer.send(record, Timeout::After(Duration::ZERO));
        match tokio::time::timeout(self.deadline, send).await {
            Err(_) => Err(ApiError::BrokerUnavailable(format!(
                "no acknowledgement within {} ms",
                self.deadline.as_millis()
            ))),
            Ok(Ok(delivery)) => Ok(Stored::Log {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))) => {
                Err(ApiError::QueueFull)
            }
            Ok(Err((error, _))) => {
                // The broker refused the record: a broker that lost our
                // producer session refuses every later one, so the next
                // press starts a new session (at most once a second).
                if matches!(error, KafkaError::MessageProduction(_)) {
                    self.lost.store(true, Ordering::Relaxed);
                }
                Err(ApiError::BrokerUnavailable(error.to_string()))
            }
        }
    }

    fn current(&self) -> FutureProducer<HealthContext> {
        self.producer.current()
    }

    /// Starts a new producer session (a new idempotent producer id) once
    /// the brokers are back after all of them were lost. A broker that
    /// restarted may not know the old id: tansu 0.6.0 fails every later
    /// produce when it does not. What the old session still held has
    /// already been answered 503.
    fn renew(&self) {
        let context = || HealthContext {
            up: self.health.0.clone(),
            lost: self.lost.clone(),
        };
        match self
            .producer
            .renew_at_most_every(Duration::from_secs(1), context)
        {
            // Too soon: try again on a later press.
            Ok(false) => self.lost.store(true, Ordering::Relaxed),
            Ok(true) => {
                metrics::counter!("service_producer_renewals_total").increment(1);
                tracing::info!("brokers are back: started a new producer session");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new producer; keeping the old one")
            }
        }
    }

    /// Fetches the topic's metadata: proves a broker answers and the topic
    /// exists. Blocking; call from a blocking thread.
    pub fn check_topic(&self, timeout: Duration) -> Result<usize, String> {
        use rdkafka::producer::Producer;
        button_infra::kafka::topic_partitions(self.current().client(), &self.topic, timeout)
    }
}
