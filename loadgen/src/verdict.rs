//! The exactly-once verdict, by identity: every 202 is looked up where it
//! says it was stored, not just counted.
//!
//! Counts alone can cancel out: a skipped record and a record stored
//! without its 202 leave the totals equal; so can a press produced twice
//! and one lost. Here each accepted press — (partition, offset, request id)
//! — must be in the topic, read back after the drain by the lab's own
//! consumer, exactly once, with its request id, at or below the offset the
//! reducer applied (with ingest `outbox` a relay may send a press twice:
//! the repeat is allowed when it was not counted); the counter must have
//! grown by the records applied minus the dead letters (undecodable
//! records) minus repeats of a request id the reducer already counted;
//! records stored without any 202 may not
//! outnumber the requests that ended without an answer; and a run that
//! accepted nothing proves nothing.
//!
//! When the topic cannot be read (no broker address, a read that failed or
//! timed out), the counts are still reported but the verdict is not clean:
//! counts that agree are exactly what a masked loss looks like.

use crate::recorder::AcceptedPress;
use crate::topic::TopicRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the verdict is judged from.
pub struct JudgeInput<'a> {
    pub accepted: &'a [AcceptedPress],
    /// The topic's records after `offsets_before` through `offsets_after`;
    /// none when it could not be read (`topic_error` says why).
    pub topic: Option<&'a [TopicRecord]>,
    pub topic_error: Option<String>,
    /// Applied offsets of PostgreSQL's newest state before the load and
    /// after the drain.
    pub offsets_before: &'a BTreeMap<i32, i64>,
    pub offsets_after: &'a BTreeMap<i32, i64>,
    pub counter_before: u64,
    pub counter_after: u64,
    /// Requests that ended with no answer (transport errors, timeouts):
    /// each may have been stored without its 202 reaching the client.
    pub unanswered: u64,
    /// The counter of the last state the tracking SSE client received.
    pub sse_last_counter: Option<u64>,
    /// PostgreSQL's state came to cover every accepted press.
    pub drained: bool,
    /// The log's positions leave gaps (ingest `direct`: a rolled-back
    /// insert uses up a row id): records applied are then the records read
    /// in the applied range, not the distance the offsets moved.
    pub gaps_allowed: bool,
    /// A press may be in the log more than once by design (ingest
    /// `outbox`: a relay killed between the broker's ack and its commit
    /// sends the rows again). A repeat is then no failure as long as it
    /// was not counted; on the Kafka path only a faulty producer repeats.
    pub repeats_expected: bool,
    /// Accepted request ids an earlier, unanswered attempt of the same
    /// press (same `Idempotency-Key`, so same request id) may also have
    /// stored: in the log twice is then no failure, counted twice is.
    pub maybe_twice: &'a HashSet<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Presses answered 202 during the run.
    pub accepted: u64,
    /// PostgreSQL's counter before the load and once the lag was zero.
    pub counter_before: u64,
    pub counter_after: u64,
    /// The counter of the last state the tracking SSE client received.
    pub sse_last_counter: Option<u64>,
    /// Whether PostgreSQL's state came to cover every accepted press.
    pub drained: bool,
    /// Records the reducer applied during the run (offsets advanced).
    pub records_applied: u64,
    /// Whether every 202 was looked up in the topic (false when the topic
    /// could not be read: then the verdict is not clean).
    #[serde(default)]
    pub identity_checked: bool,
    /// Applied records that do not decode: dead letters, never counted.
    #[serde(default)]
    pub dead_letters: u64,
    /// Applied records repeating a request id already applied: the reducer
    /// drops them, so they are not counted.
    #[serde(default)]
    pub repeated_request_ids: u64,
    /// Applied records whose request id no 202 named: presses stored
    /// whose answer never reached the client. Allowed up to `unanswered`.
    pub stored_without_202: u64,
    /// Requests that ended with no answer at all.
    #[serde(default)]
    pub unanswered: u64,
    /// `stored_without_202` is no more than `unanswered`.
    #[serde(default)]
    pub stored_without_202_within_unanswered: bool,
    /// Applied offsets the topic read did not return: a gap in the topic,
    /// or a read that missed records. Either leaves presses unchecked.
    #[serde(default)]
    pub not_in_topic: u64,
    /// 202s missing from what the reducer applied: not in the topic where
    /// the 202 said, another request's record there, or above the applied
    /// offset; at least as many as the counter fell short of the distinct
    /// presses applied.
    pub lost: u64,
    /// Counted more than once: the counter grew past the distinct presses
    /// applied.
    pub duplicated: u64,
    /// Accepted request ids found at more than one offset (a press produced
    /// twice).
    #[serde(default)]
    pub duplicated_in_topic: u64,
    /// The stream ended on the state PostgreSQL holds.
    pub sse_caught_up: bool,
    /// Every check that failed, in plain words; empty when clean.
    #[serde(default)]
    pub reasons: Vec<String>,
    pub clean: bool,
}

impl Verdict {
    pub fn judge(input: &JudgeInput<'_>) -> Verdict {
        let mut reasons = Vec::new();
        let accepted = input.accepted.len() as u64;
        let counted = input.counter_after.saturating_sub(input.counter_before);
        let records_applied = match input.topic {
            Some(topic) if input.gaps_allowed => topic
                .iter()
                .filter(|r| {
                    r.offset
                        > input
                            .offsets_before
                            .get(&r.partition)
                            .copied()
                            .unwrap_or(-1)
                        && input
                            .offsets_after
                            .get(&r.partition)
                            .is_some_and(|&a| r.offset <= a)
                })
                .count() as u64,
            _ => records_between(input.offsets_before, input.offsets_after),
        };
        if accepted == 0 {
            reasons.push("no press was accepted: an empty run proves nothing".to_owned());
        }
        if !input.drained {
            reasons.push("PostgreSQL never covered every accepted press".to_owned());
        }
        let sse_caught_up = input.sse_last_counter == Some(input.counter_after);
        if !sse_caught_up {
            reasons.push(format!(
                "the stream ended on counter {} while PostgreSQL holds {}",
                input
                    .sse_last_counter
                    .map_or("none".to_owned(), |c| c.to_string()),
                input.counter_after
            ));
        }
        let mut v = Verdict {
            accepted,
            counter_before: input.counter_before,
            counter_after: input.counter_after,
            sse_last_counter: input.sse_last_counter,
            drained: input.drained,
            records_applied,
            unanswered: input.unanswered,
            sse_caught_up,
            ..Verdict::default()
        };
        match input.topic {
            Some(topic) => {
                v.identity_checked = true;
                judge_identity(input, topic, counted, &mut v, &mut reasons);
            }
            None => reasons.push(format!(
                "presses not matched by identity: {}",
                input
                    .topic_error
                    .as_deref()
                    .unwrap_or("the topic was not read")
            )),
        }
        v.clean = reasons.is_empty();
        v.reasons = reasons;
        v
    }

    /// One line for the terminal and the report.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "accepted {}, counted {} ({} → {}), records applied {} ({} dead letters, {} repeated request ids), stored without a 202 {} (unanswered requests {}), lost {}, duplicated {}, in the topic twice {}, last SSE frame {}",
            self.accepted,
            self.counter_after.saturating_sub(self.counter_before),
            self.counter_before,
            self.counter_after,
            self.records_applied,
            self.dead_letters,
            self.repeated_request_ids,
            self.stored_without_202,
            self.unanswered,
            self.lost,
            self.duplicated,
            self.duplicated_in_topic,
            self.sse_last_counter
                .map_or("none".to_owned(), |c| c.to_string()),
        );
        text.push_str(if self.identity_checked {
            "; every 202 matched by identity"
        } else {
            "; NOT matched by identity"
        });
        if !self.reasons.is_empty() {
            text.push_str(&format!(" [{}]", self.reasons.join("; ")));
        }
        text
    }
}

fn judge_identity(
    input: &JudgeInput<'_>,
    topic: &[TopicRecord],
    counted: u64,
    v: &mut Verdict,
    reasons: &mut Vec<String>,
) {
    let applied = |p: i32, o: i64| {
        o > input.offsets_before.get(&p).copied().unwrap_or(-1)
            && input.offsets_after.get(&p).is_some_and(|&a| o <= a)
    };
    // Where each request id is in the applied range.
    let mut at: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut by_position: HashMap<(i32, i64), Option<&str>> = HashMap::new();
    for r in topic.iter().filter(|r| applied(r.partition, r.offset)) {
        by_position.insert((r.partition, r.offset), r.request_id.as_deref());
        match &r.request_id {
            Some(id) => at.entry(id).or_default().push((r.partition, r.offset)),
            None => v.dead_letters += 1,
        }
    }
    v.not_in_topic = v.records_applied.saturating_sub(by_position.len() as u64);
    if v.not_in_topic > 0 {
        reasons.push(format!(
            "{} applied offsets were not found in the topic",
            v.not_in_topic
        ));
    }
    v.repeated_request_ids = at.values().map(|p| p.len() as u64 - 1).sum();
    let mut named = HashSet::with_capacity(input.accepted.len());
    let mut unexpected_repeats = 0u64;
    for a in input.accepted {
        named.insert(a.request_id.as_str());
        let here = by_position.get(&(a.partition, a.offset));
        if here != Some(&Some(a.request_id.as_str())) {
            v.lost += 1;
        }
        if at.get(a.request_id.as_str()).is_some_and(|p| p.len() > 1) {
            v.duplicated_in_topic += 1;
            if !input.maybe_twice.contains(&a.request_id) {
                unexpected_repeats += 1;
            }
        }
    }
    v.stored_without_202 = at.keys().filter(|id| !named.contains(*id)).count() as u64;
    let distinct = at.len() as u64;
    v.duplicated = counted.saturating_sub(distinct);
    let short = distinct.saturating_sub(counted);
    if v.lost > 0 {
        reasons.push(format!(
            "{} accepted presses are not where their 202 said, or above the applied offsets",
            v.lost
        ));
    }
    if unexpected_repeats > 0 && !input.repeats_expected {
        reasons.push(format!(
            "{unexpected_repeats} accepted request ids are in the topic more than once"
        ));
    }
    if v.duplicated > 0 {
        reasons.push(format!(
            "the counter grew by {counted}, {} more than the {distinct} distinct presses applied",
            v.duplicated
        ));
    }
    if short > 0 {
        reasons.push(format!(
            "the counter grew by {counted}, {short} fewer than the {distinct} distinct presses applied (records applied {} minus {} dead letters minus {} repeats)",
            v.records_applied, v.dead_letters, v.repeated_request_ids
        ));
        v.lost = v.lost.max(short);
    }
    v.stored_without_202_within_unanswered = v.stored_without_202 <= input.unanswered;
    if !v.stored_without_202_within_unanswered {
        reasons.push(format!(
            "{} presses were stored without a 202, more than the {} requests that got no answer",
            v.stored_without_202, input.unanswered
        ));
    }
}

/// Records between two states: how far every partition's applied offset
/// moved (a partition new in `after` starts at offset 0).
pub fn records_between(before: &BTreeMap<i32, i64>, after: &BTreeMap<i32, i64>) -> u64 {
    after
        .iter()
        .map(|(p, &o)| (o - before.get(p).copied().unwrap_or(-1)).max(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `n` presses on partition 0 from offset 0, every one
    /// accepted, stored and counted.
    struct Case {
        accepted: Vec<AcceptedPress>,
        topic: Vec<TopicRecord>,
        after: BTreeMap<i32, i64>,
        counter_after: u64,
        unanswered: u64,
        sse: Option<u64>,
        drained: bool,
        maybe_twice: HashSet<String>,
    }

    fn id(i: i64) -> String {
        format!("req-{i}")
    }

    /// Request 4 in the topic a second time, at offset 10, and the
    /// reducer past it.
    fn request_4_again_at_offset_10(c: &mut Case) {
        c.topic.push(TopicRecord {
            partition: 0,
            offset: 10,
            request_id: Some(id(4)),
        });
        c.after = [(0, 10)].into();
    }

    fn clean_case(n: i64) -> Case {
        Case {
            accepted: (0..n)
                .map(|i| AcceptedPress {
                    partition: 0,
                    offset: i,
                    request_id: id(i),
                    outbox_id: None,
                })
                .collect(),
            topic: (0..n)
                .map(|i| TopicRecord {
                    partition: 0,
                    offset: i,
                    request_id: Some(id(i)),
                })
                .collect(),
            after: if n > 0 {
                [(0, n - 1)].into()
            } else {
                BTreeMap::new()
            },
            counter_after: n as u64,
            unanswered: 0,
            sse: Some(n as u64),
            drained: true,
            maybe_twice: HashSet::new(),
        }
    }

    fn input(c: &Case) -> JudgeInput<'_> {
        JudgeInput {
            gaps_allowed: false,
            repeats_expected: false,
            maybe_twice: &c.maybe_twice,
            accepted: &c.accepted,
            topic: Some(&c.topic),
            topic_error: None,
            offsets_before: &EMPTY,
            offsets_after: &c.after,
            counter_before: 0,
            counter_after: c.counter_after,
            unanswered: c.unanswered,
            sse_last_counter: c.sse,
            drained: c.drained,
        }
    }

    static EMPTY: BTreeMap<i32, i64> = BTreeMap::new();

    fn judge(c: &Case) -> Verdict {
        Verdict::judge(&input(c))
    }

    #[test]
    fn every_press_where_its_202_said_is_clean() {
        let v = judge(&clean_case(100));
        assert!(v.clean, "{v:?}");
        assert!(v.identity_checked && v.reasons.is_empty());
        assert_eq!(
            (v.accepted, v.records_applied, v.lost, v.duplicated),
            (100, 100, 0, 0)
        );
    }

    #[test]
    fn a_skipped_record_and_an_unanswered_stored_one_do_not_cancel_out() {
        // Counts match (10 accepted, counter +10, 10 records applied), but
        // the press at offset 3 never made it: another request's record
        // (one whose answer was lost) sits where its 202 said.
        let mut c = clean_case(10);
        c.topic[3].request_id = Some("req-unanswered".into());
        c.unanswered = 1;
        let v = judge(&c);
        assert!(!v.clean, "{v:?}");
        assert_eq!(v.lost, 1);
        assert_eq!(v.stored_without_202, 1);
        assert!(
            v.reasons
                .iter()
                .any(|r| r.contains("not where their 202 said"))
        );
    }

    #[test]
    fn a_press_produced_twice_fails_even_when_counted_once() {
        // Offset 10 repeats request 4; the reducer drops the repeat, so
        // the counter is right; the topic is not.
        let mut c = clean_case(10);
        request_4_again_at_offset_10(&mut c);
        let v = judge(&c);
        assert!(!v.clean, "{v:?}");
        assert_eq!(
            (v.duplicated_in_topic, v.repeated_request_ids, v.duplicated),
            (1, 1, 0)
        );
        // Counted twice as well: also a duplicate count.
        c.counter_after = 11;
        let v = judge(&c);
        assert_eq!(v.duplicated, 1, "{v:?}");
    }

    #[test]
    fn a_press_retried_after_an_unanswered_attempt_may_be_in_the_log_twice() {
        // The unanswered attempt stored request 4 at offset 4; its retry
        // on another instance, same key and so same id, at offset 10.
        let mut c = clean_case(10);
        c.accepted[4].offset = 10;
        request_4_again_at_offset_10(&mut c);
        let v = judge(&c);
        assert!(!v.clean, "not known to be a retry: {v:?}");
        c.maybe_twice.insert(id(4));
        let v = judge(&c);
        assert!(v.clean, "{v:?}");
        assert_eq!((v.duplicated_in_topic, v.lost, v.duplicated), (1, 0, 0));
        // Counted twice is still a duplicate.
        c.counter_after = 11;
        assert_eq!(judge(&c).duplicated, 1);
    }

    #[test]
    fn a_relay_resend_counted_once_is_clean_where_repeats_are_expected() {
        let mut c = clean_case(10);
        request_4_again_at_offset_10(&mut c);
        let outbox = |c: &Case| {
            Verdict::judge(&JudgeInput {
                repeats_expected: true,
                ..input(c)
            })
        };
        let v = outbox(&c);
        assert!(v.clean, "{v:?}");
        assert_eq!(
            (v.duplicated_in_topic, v.repeated_request_ids, v.duplicated),
            (1, 1, 0)
        );
        // Counted twice: a failure on every path.
        c.counter_after = 11;
        let v = outbox(&c);
        assert!(!v.clean && v.duplicated == 1, "{v:?}");
    }

    #[test]
    fn an_empty_run_is_not_clean() {
        let v = judge(&clean_case(0));
        assert!(!v.clean, "{v:?}");
        assert!(v.reasons[0].contains("empty run"));
    }

    #[test]
    fn a_202_above_the_applied_offset_is_lost() {
        let mut c = clean_case(10);
        c.after = [(0, 8)].into();
        c.counter_after = 9;
        c.sse = Some(9);
        let v = judge(&c);
        assert!(!v.clean);
        assert_eq!(v.lost, 1, "{v:?}");
    }

    #[test]
    fn stored_without_a_202_is_allowed_only_up_to_the_unanswered_requests() {
        let mut c = clean_case(10);
        c.accepted.remove(7);
        c.unanswered = 1;
        let v = judge(&c);
        assert!(v.clean, "one unanswered request, one stored press: {v:?}");
        assert!(v.stored_without_202_within_unanswered);
        c.accepted.remove(2);
        let v = judge(&c);
        assert!(!v.clean);
        assert_eq!(v.stored_without_202, 2);
        assert!(!v.stored_without_202_within_unanswered);
    }

    #[test]
    fn applied_offsets_the_read_did_not_return_are_not_clean() {
        // The reducer applied 0..=9 but the read returned no record at
        // offset 9 (a gap, or a read cut short): that press is unchecked.
        let mut c = clean_case(10);
        c.accepted.pop();
        c.topic.pop();
        c.counter_after = 9;
        c.sse = Some(9);
        let v = judge(&c);
        assert!(!v.clean, "{v:?}");
        assert_eq!((v.not_in_topic, v.lost), (1, 0));
    }

    #[test]
    fn a_verdict_reads_back_from_summary_json() {
        let v = judge(&clean_case(3));
        let text = serde_json::to_string(&v).expect("serialises");
        assert_eq!(serde_json::from_str::<Verdict>(&text).expect("parses"), v);
        // A summary stored before the identity fields still reads.
        let old = r#"{"accepted":3,"counter_before":0,"counter_after":3,"sse_last_counter":3,
            "drained":true,"records_applied":3,"stored_without_202":0,"lost":0,
            "duplicated":0,"sse_caught_up":true,"clean":true}"#;
        let old: Verdict = serde_json::from_str(old).expect("an old verdict parses");
        assert!(old.clean && !old.identity_checked);
    }

    #[test]
    fn dead_letters_are_applied_but_not_counted() {
        let mut c = clean_case(10);
        c.topic.push(TopicRecord {
            partition: 0,
            offset: 10,
            request_id: None,
        });
        c.after = [(0, 10)].into();
        let v = judge(&c);
        assert!(v.clean, "{v:?}");
        assert_eq!((v.records_applied, v.dead_letters), (11, 1));
        // Had the dead letter been counted, the counter is one too high.
        c.counter_after = 11;
        c.sse = Some(11);
        assert_eq!(judge(&c).duplicated, 1);
    }

    #[test]
    fn a_counter_short_of_the_presses_applied_is_a_loss() {
        let mut c = clean_case(10);
        c.counter_after = 9;
        c.sse = Some(9);
        let v = judge(&c);
        assert!(!v.clean);
        assert_eq!(v.lost, 1, "{v:?}");
    }

    #[test]
    fn a_stale_stream_is_not_clean() {
        let mut c = clean_case(10);
        c.sse = Some(9);
        let v = judge(&c);
        assert!(!v.clean && !v.sse_caught_up, "{v:?}");
        assert!(v.reasons[0].contains("stream ended on counter 9"), "{v:?}");
        c.sse = None;
        assert!(!judge(&c).clean);
    }

    #[test]
    fn an_undrained_run_is_not_clean() {
        let mut c = clean_case(10);
        c.drained = false;
        let v = judge(&c);
        assert!(!v.clean && !v.drained, "{v:?}");
        assert!(v.reasons[0].contains("never covered"), "{v:?}");
    }

    #[test]
    fn an_unread_topic_is_not_clean_though_every_count_agrees() {
        let c = clean_case(10);
        let v = Verdict::judge(&JudgeInput {
            gaps_allowed: false,
            repeats_expected: false,
            maybe_twice: &c.maybe_twice,
            accepted: &c.accepted,
            topic: None,
            topic_error: Some("no broker address".into()),
            offsets_before: &BTreeMap::new(),
            offsets_after: &c.after,
            counter_before: 0,
            counter_after: 10,
            unanswered: 0,
            sse_last_counter: Some(10),
            drained: true,
        });
        assert!(!v.clean && !v.identity_checked);
        assert_eq!((v.lost, v.duplicated), (0, 0));
        assert!(v.reasons[0].contains("no broker address"), "{v:?}");
    }

    #[test]
    fn records_between_counts_how_far_each_partition_moved() {
        let before = [(0, 9), (1, 4)].into();
        let after = [(0, 19), (1, 4), (2, 2)].into();
        assert_eq!(records_between(&before, &after), 10 + 3);
    }
}
