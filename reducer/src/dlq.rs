//! Poison records go to the dead-letter topic with the reason in headers,
//! and must be stored there before the batch that skips them is persisted.

use button_infra::KafkaProperties;
use button_infra::kafka::Renewable;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use std::sync::Arc;
use std::time::Duration;

/// A record that could not be decoded.
#[derive(Debug, Clone)]
pub struct Poison {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Clone)]
pub struct DeadLetters {
    producer: Arc<Renewable<DefaultClientContext>>,
    source_topic: String,
    topic: String,
}

impl DeadLetters {
    pub fn new(
        brokers: &str,
        source_topic: &str,
        topic: &str,
        extra: &KafkaProperties,
    ) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "button-reducer-dlq")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000");
        extra.apply(&mut config);
        Ok(DeadLetters {
            producer: Arc::new(Renewable::new(config, DefaultClientContext)?),
            source_topic: source_topic.to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// Stores the poison records from `*sent` on, in order, counting each
    /// acknowledged one in `sent`, so a retry does not store a record
    /// twice; fails on the first one the broker does not acknowledge.
    pub async fn send_from(&self, poison: &[Poison], sent: &mut usize) -> Result<(), KafkaError> {
        for p in poison.iter().skip(*sent) {
            let partition = p.partition.to_string();
            let offset = p.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "x-dlq-reason",
                    value: Some(p.reason),
                })
                .insert(Header {
                    key: "x-dlq-detail",
                    value: Some(p.detail.as_str()),
                })
                .insert(Header {
                    key: "x-source-topic",
                    value: Some(self.source_topic.as_str()),
                })
                .insert(Header {
                    key: "x-source-partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "x-source-offset",
                    value: Some(offset.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &p.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &p.payload {
                record = record.payload(v.as_slice());
            }
            if let Err((error, _)) = self
                .producer
                .current()
                .send(record, Timeout::After(Duration::from_secs(1)))
                .await
            {
                if matches!(error, KafkaError::MessageProduction(_)) {
                    self.renew();
                }
                return Err(error);
            }
            *sent += 1;
            metrics::counter!("reducer_dead_letters_total", "reason" => p.reason).increment(1);
            tracing::warn!(partition = p.partition, offset = p.offset, reason = p.reason, detail = %p.detail, "poison record sent to the dead-letter topic");
        }
        Ok(())
    }

    /// Starts a new producer session after a broker refused a record; the
    /// write is retried (after a backoff) with the new one.
    fn renew(&self) {
        match self.producer.renew(DefaultClientContext) {
            Ok(()) => {
                metrics::counter!("reducer_dead_letter_renewals_total").increment(1);
                tracing::info!("the broker refused a dead letter: started a new producer session");
            }
            Err(error) => {
                tracing::error!(%error, "cannot create a new dead-letter producer; keeping the old one")
            }
        }
    }
}
