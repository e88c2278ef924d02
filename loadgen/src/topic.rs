//! The press topic read back after a run, by a consumer of the lab's own
//! (not the reducer's data): the evidence the verdict matches every 202
//! against.

use button_domain::PressRecord;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "reading {topic} partition {partition}: reached offset {reached} of {through} in {waited:?}{}",
        last_error.as_ref().map_or(String::new(), |e| format!(" (last error: {e})"))
    )]
    Incomplete {
        topic: String,
        partition: i32,
        /// The next offset that was still to be read.
        reached: i64,
        through: i64,
        /// How long the read went without a new record.
        waited: Duration,
        /// The last transient error the client reported, if any: often
        /// why the read stalled (broker down, connection refused).
        last_error: Option<String>,
    },
    #[error("{topic} has no partitions (or does not exist)")]
    NoPartitions { topic: String },
    #[error("the topic reader stopped: {0}")]
    Join(String),
}

/// One record as the topic holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    /// None: the record does not decode (a dead letter for the reducer).
    pub request_id: Option<String>,
}

/// Every record of `topic` after `from_exclusive` (per partition; a
/// partition absent there starts at offset 0) through `through`
/// (inclusive), in partition and offset order.
///
/// A long range takes as long as it takes; the read fails, rather than
/// waits, once `stall` passes without a new record while some partition
/// has not reached its `through` offset, and fails at once when a range is
/// no longer held (deleted records are an error, not a silent skip).
pub async fn read_range(
    brokers: &str,
    topic: &str,
    from_exclusive: &BTreeMap<i32, i64>,
    through: &BTreeMap<i32, i64>,
    stall: Duration,
) -> Result<Vec<TopicRecord>, TopicError> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let (from, through) = (from_exclusive.clone(), through.clone());
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic, &from, &through, stall))
        .await
        .map_err(|e| TopicError::Join(e.to_string()))?
}

/// Every partition's high watermark: the offset the next record written
/// there will get (so the last stored record is at one less).
pub async fn high_watermarks(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, TopicError> {
    let watermarks = Watermarks::open(brokers, topic, timeout).await?;
    let partitions = watermarks.partitions.clone();
    watermarks.read(&partitions, timeout).await
}

/// One reader of a topic's high watermarks, kept for repeated reads (the
/// sampler's, once a second while a partition has no reader).
#[derive(Clone)]
pub struct Watermarks {
    consumer: std::sync::Arc<BaseConsumer>,
    topic: String,
    /// The topic's partitions, as its metadata listed them at the open.
    pub partitions: Vec<i32>,
}

impl Watermarks {
    pub async fn open(brokers: &str, topic: &str, timeout: Duration) -> Result<Self, TopicError> {
        let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&brokers)?;
            let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(TopicError::NoPartitions { topic });
            }
            Ok(Watermarks {
                consumer: std::sync::Arc::new(consumer),
                topic,
                partitions,
            })
        })
        .await
        .map_err(|e| TopicError::Join(e.to_string()))?
    }

    /// The high watermark of each of `partitions`.
    pub async fn read(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, i64>, TopicError> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let partitions = partitions.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut high = BTreeMap::new();
            for p in partitions {
                let (_, h) = consumer.fetch_watermarks(&topic, p, timeout)?;
                high.insert(p, h);
            }
            Ok(high)
        })
        .await
        .map_err(|e| TopicError::Join(e.to_string()))?
    }
}

/// A consumer that is assigned partitions and never commits: a group of
/// its own per call, which leaves no trace and never joins the reducer's.
fn reader(brokers: &str) -> Result<BaseConsumer, KafkaError> {
    static READERS: AtomicU64 = AtomicU64::new(0);
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!(
                "button-lab-verdict-{}-{}",
                std::process::id(),
                READERS.fetch_add(1, Ordering::Relaxed)
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Records no longer held must fail the read, not be jumped over.
        .set("auto.offset.reset", "error")
        // tansu holds every fetch for the full wait, even when data is
        // ready, and answers one stored batch per partition: a fetch that
        // waits caps the read at a few batches per 10 ms. Here the records
        // are all there, so fetches go back to back.
        .set("fetch.wait.max.ms", "0")
        .set("enable.partition.eof", "false")
        .create()
}

/// Errors after which waiting longer cannot help.
fn permanent(e: &KafkaError) -> bool {
    match e {
        KafkaError::MessageConsumptionFatal(_) => true,
        KafkaError::MessageConsumption(code) => matches!(
            code,
            RDKafkaErrorCode::AutoOffsetReset
                | RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::Fatal
        ),
        _ => false,
    }
}

fn read_blocking(
    brokers: &str,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    through: &BTreeMap<i32, i64>,
    stall: Duration,
) -> Result<Vec<TopicRecord>, TopicError> {
    // (partition, first offset, last offset) still to read.
    let wanted: Vec<(i32, i64, i64)> = through
        .iter()
        .map(|(&p, &last)| (p, from.get(&p).map_or(0, |&o| o + 1), last))
        .filter(|&(_, first, last)| first <= last)
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let consumer = reader(brokers)?;
    let mut assignment = TopicPartitionList::new();
    for &(p, first, _) in &wanted {
        assignment.add_partition_offset(topic, p, Offset::Offset(first))?;
    }
    consumer.assign(&assignment)?;
    let mut next: BTreeMap<i32, i64> = wanted.iter().map(|&(p, first, _)| (p, first)).collect();
    let last: BTreeMap<i32, i64> = wanted.iter().map(|&(p, _, last)| (p, last)).collect();
    let mut records = Vec::new();
    let mut last_error = None;
    let mut progress = Instant::now();
    while next.iter().any(|(p, &n)| n <= last[p]) {
        if progress.elapsed() > stall {
            let (&partition, &reached) = next
                .iter()
                .find(|(p, n)| **n <= last[p])
                .expect("a partition still to read");
            return Err(TopicError::Incomplete {
                topic: topic.to_owned(),
                partition,
                reached,
                through: last[&partition],
                waited: progress.elapsed(),
                last_error,
            });
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) if permanent(&e) => return Err(e.into()),
            // Transient (a broker restarting, a connection refused): keep
            // trying until the timeout, which then names it.
            Some(Err(e)) => {
                last_error = Some(e.to_string());
                continue;
            }
        };
        let (p, offset) = (message.partition(), message.offset());
        let Some(&end) = last.get(&p) else { continue };
        if offset > end || offset < next.get(&p).copied().unwrap_or(0) {
            continue;
        }
        next.insert(p, offset + 1);
        progress = Instant::now();
        records.push(TopicRecord {
            partition: p,
            offset,
            request_id: PressRecord::decode(message.payload())
                .ok()
                .map(|r| r.request_id),
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_range_needs_no_broker() {
        let from = [(0, 9), (1, 4)].into();
        let through = [(0, 9), (1, 3)].into();
        let read = read_range("127.0.0.1:1", "t", &from, &through, Duration::ZERO).await;
        assert_eq!(read.expect("nothing to read"), Vec::new());
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_within_the_timeout() {
        // Port 1 refuses connections: the read must give up, not hang.
        let started = Instant::now();
        let err = read_range(
            "127.0.0.1:1",
            "t",
            &BTreeMap::new(),
            &[(0, 5)].into(),
            Duration::from_millis(800),
        )
        .await
        .expect_err("nothing can be read");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(
            matches!(
                err,
                TopicError::Incomplete {
                    partition: 0,
                    reached: 0,
                    through: 5,
                    ..
                }
            ),
            "{err}"
        );
    }
}
