//! The Kafka consumer. On every partition assignment it starts each
//! partition right after the last offset stored in PostgreSQL, never where
//! Kafka's committed offsets say: the database is the source of truth.

use button_infra::KafkaProperties;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the rebalance and statistics callbacks share with the main loop.
#[derive(Default)]
pub struct Shared {
    /// Last applied offset per partition, as persisted.
    applied: Mutex<BTreeMap<i32, i64>>,
    /// High watermark per partition, from librdkafka's statistics.
    high_watermarks: Mutex<BTreeMap<i32, i64>>,
    /// Set by a rebalance; the main loop drops the batch in hand.
    reassigned: AtomicBool,
    /// Partitions this member reads now: another member's lag is not
    /// ours to report (a lab sums the reducers' lag).
    assigned: Mutex<BTreeSet<i32>>,
}

impl Shared {
    pub fn set_applied(&self, offsets: &BTreeMap<i32, i64>) {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = offsets.clone();
    }

    fn set_assigned(&self, partitions: impl IntoIterator<Item = i32>) {
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) =
            partitions.into_iter().collect();
    }

    pub fn take_reassigned(&self) -> bool {
        self.reassigned.swap(false, Ordering::AcqRel)
    }

    /// Records between the persisted offsets and the high watermark, for
    /// the partitions this member reads (`None` for the others).
    pub fn lag(&self) -> BTreeMap<i32, Option<i64>> {
        let assigned = self
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let high = self
            .high_watermarks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        high.into_iter()
            .map(|(p, hw)| {
                let lag = (hw - applied.get(&p).map_or(0, |o| o + 1)).max(0);
                (p, assigned.contains(&p).then_some(lag))
            })
            .collect()
    }

    /// Where each partition should start: right after its applied offset.
    pub fn start_offset(&self, partition: i32) -> Offset {
        match self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
        {
            Some(o) => Offset::Offset(o + 1),
            None => Offset::Beginning,
        }
    }
}

pub struct ReducerContext {
    pub shared: Arc<Shared>,
    pub topic: String,
}

impl ClientContext for ReducerContext {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let mut high = self
            .shared
            .high_watermarks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (&partition, p) in &topic.partitions {
            // librdkafka reports the internal UA partition as -1.
            if partition >= 0 && p.hi_offset >= 0 {
                high.insert(partition, p.hi_offset);
            }
        }
    }
}

impl ConsumerContext for ReducerContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut positioned = TopicPartitionList::new();
                for element in tpl.elements() {
                    let offset = self.shared.start_offset(element.partition());
                    if let Err(e) = positioned.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        tracing::error!(error = %e, "cannot position partition");
                    }
                }
                tracing::info!(partitions = ?positioned.to_topic_map(), "assigned; starting from the database's offsets");
                let mut assigned = self
                    .shared
                    .assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                assigned.extend(tpl.elements().iter().map(|e| e.partition()));
                drop(assigned);
                let result = match consumer.rebalance_protocol() {
                    rdkafka::consumer::RebalanceProtocol::Cooperative => {
                        consumer.incremental_assign(&positioned)
                    }
                    _ => consumer.assign(&positioned),
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                let mut assigned = self
                    .shared
                    .assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for e in tpl.elements() {
                    assigned.remove(&e.partition());
                }
                drop(assigned);
                let result = match consumer.rebalance_protocol() {
                    rdkafka::consumer::RebalanceProtocol::Cooperative => {
                        consumer.incremental_unassign(tpl)
                    }
                    _ => consumer.unassign(),
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
        self.shared.reassigned.store(true, Ordering::Release);
    }
}

pub type ReducerConsumer = StreamConsumer<ReducerContext>;

pub fn create(
    brokers: &str,
    group_id: &str,
    group_instance_id: &str,
    topic: &str,
    extra: &KafkaProperties,
    shared: Arc<Shared>,
) -> KafkaResult<ReducerConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("client.id", "button-reducer")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "10")
        .set("reconnect.backoff.max.ms", "1000");
    if !group_instance_id.is_empty() {
        config.set("group.instance.id", group_instance_id);
    }
    extra.apply(&mut config);
    config.create_with_context(ReducerContext {
        shared,
        topic: topic.to_owned(),
    })
}

/// Joins the consumer group; assignments arrive through the rebalance
/// callback above.
pub fn join_group(consumer: &ReducerConsumer, topic: &str) -> KafkaResult<()> {
    consumer.subscribe(&[topic])
}

/// Takes every partition of `topic`, each from the database's offsets.
/// Returns the number of partitions. Blocking (metadata request).
pub fn assign_all(
    consumer: &ReducerConsumer,
    topic: &str,
    shared: &Shared,
    timeout: Duration,
) -> KafkaResult<usize> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, shared.start_offset(p))?;
    }
    tracing::info!(partitions = ?tpl.to_topic_map(), "assigned every partition; starting from the database's offsets");
    consumer.assign(&tpl)?;
    shared.set_assigned(partitions.iter().copied());
    Ok(partitions.len())
}

/// Moves every assigned partition back to the database's offsets (after a
/// conflicting writer or a dropped batch).
pub fn rewind(consumer: &ReducerConsumer, shared: &Shared) -> KafkaResult<()> {
    let assignment = consumer.assignment()?;
    let mut tpl = TopicPartitionList::new();
    for element in assignment.elements() {
        tpl.add_partition_offset(
            element.topic(),
            element.partition(),
            shared.start_offset(element.partition()),
        )?;
    }
    if tpl.count() > 0 {
        consumer.seek_partitions(tpl, Duration::from_secs(5))?;
    }
    Ok(())
}

/// Commits `applied + 1` for the partitions this consumer owns.
pub fn commit(
    consumer: &ReducerConsumer,
    topic: &str,
    applied: &BTreeMap<i32, i64>,
    mode: rdkafka::consumer::CommitMode,
) -> KafkaResult<usize> {
    let assignment = consumer.assignment()?;
    let mut tpl = TopicPartitionList::new();
    for element in assignment.elements() {
        if let Some(o) = applied.get(&element.partition()) {
            tpl.add_partition_offset(topic, element.partition(), Offset::Offset(o + 1))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(0);
    }
    consumer.commit(&tpl, mode)?;
    Ok(tpl.count())
}
