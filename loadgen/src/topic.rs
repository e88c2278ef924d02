//! The press topic read back after a run, by a consumer of the lab's own
//! (not the reducer's data): the evidence the verdict matches every 202
//! against.

use button_domain::PressRecord;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "reading {topic} partition {partition}: reached offset {reached} of {through} in {waited:?}"
    )]
    Incomplete {
        topic: String,
        partition: i32,
        reached: i64,
        through: i64,
        waited: Duration,
    },
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
pub async fn read_range(
    brokers: &str,
    topic: &str,
    from_exclusive: &BTreeMap<i32, i64>,
    through: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Vec<TopicRecord>, TopicError> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let (from, through) = (from_exclusive.clone(), through.clone());
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic, &from, &through, timeout))
        .await
        .map_err(|e| TopicError::Join(e.to_string()))?
}

fn read_blocking(
    brokers: &str,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    through: &BTreeMap<i32, i64>,
    timeout: Duration,
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Assigned partitions, never committed: a group of its own that
        // leaves no trace.
        .set(
            "group.id",
            format!("button-lab-verdict-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // tansu holds every fetch for the full wait, even when data is ready.
        .set("fetch.wait.max.ms", "10")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for &(p, first, _) in &wanted {
        assignment.add_partition_offset(topic, p, Offset::Offset(first))?;
    }
    consumer.assign(&assignment)?;
    let mut next: BTreeMap<i32, i64> = wanted.iter().map(|&(p, first, _)| (p, first)).collect();
    let last: BTreeMap<i32, i64> = wanted.iter().map(|&(p, _, last)| (p, last)).collect();
    let mut records = Vec::new();
    let started = Instant::now();
    while next.iter().any(|(p, &n)| n <= last[p]) {
        if started.elapsed() > timeout {
            let (&partition, &reached) = next
                .iter()
                .find(|(p, n)| **n <= last[p])
                .expect("a partition still to read");
            return Err(TopicError::Incomplete {
                topic: topic.to_owned(),
                partition,
                reached,
                through: last[&partition],
                waited: started.elapsed(),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let (p, offset) = (message.partition(), message.offset());
        let Some(&end) = last.get(&p) else { continue };
        if offset > end || offset < next.get(&p).copied().unwrap_or(0) {
            continue;
        }
        next.insert(p, offset + 1);
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
