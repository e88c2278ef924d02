//! The exactly-once verdict: every 202 counted once, no more, no less.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
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
    /// Presses that reached the topic without their 202 reaching the
    /// client (a service killed after the broker's ack, a deadline that
    /// passed just before it): counted, and allowed to be.
    pub stored_without_202: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// The stream ended on the state PostgreSQL holds.
    pub sse_caught_up: bool,
    pub clean: bool,
}

impl Verdict {
    /// `records_applied` comes from the offsets of the states before and
    /// after the run: a press is counted once when the counter grew by the
    /// number of records applied, and none is lost when every 202 is
    /// among them.
    pub fn judge(
        accepted: u64,
        counter_before: u64,
        counter_after: u64,
        records_applied: u64,
        sse_last_counter: Option<u64>,
        drained: bool,
    ) -> Verdict {
        let counted = counter_after.saturating_sub(counter_before);
        let lost = accepted.saturating_sub(counted);
        let duplicated = counted.saturating_sub(records_applied);
        let stored_without_202 = records_applied.saturating_sub(accepted);
        let sse_caught_up = sse_last_counter == Some(counter_after);
        Verdict {
            accepted,
            counter_before,
            counter_after,
            sse_last_counter,
            drained,
            records_applied,
            stored_without_202,
            lost,
            duplicated,
            sse_caught_up,
            clean: drained && lost == 0 && duplicated == 0 && sse_caught_up,
        }
    }
}

/// Records between two states: how far every partition's applied offset
/// moved (a partition new in `after` starts at offset 0).
pub fn records_between(
    before: &std::collections::BTreeMap<i32, i64>,
    after: &std::collections::BTreeMap<i32, i64>,
) -> u64 {
    after
        .iter()
        .map(|(p, &o)| (o - before.get(p).copied().unwrap_or(-1)).max(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_count_is_clean() {
        let v = Verdict::judge(1000, 50, 1050, 1000, Some(1050), true);
        assert_eq!((v.lost, v.duplicated, v.clean), (0, 0, true));
    }

    #[test]
    fn missing_presses_are_lost() {
        let v = Verdict::judge(1000, 50, 1039, 1000, Some(1039), true);
        assert_eq!((v.lost, v.duplicated, v.clean), (11, 0, false));
    }

    #[test]
    fn extra_counts_are_duplicates() {
        let v = Verdict::judge(1000, 0, 1003, 1000, Some(1003), true);
        assert_eq!((v.lost, v.duplicated, v.clean), (0, 3, false));
    }

    #[test]
    fn presses_stored_without_a_202_are_counted_not_duplicated() {
        // A service killed after the broker's ack: 4 records without a 202.
        let v = Verdict::judge(1000, 0, 1004, 1004, Some(1004), true);
        assert_eq!(
            (v.lost, v.duplicated, v.stored_without_202, v.clean),
            (0, 0, 4, true)
        );
        // The same counter with only 1000 records applied is double counting.
        let v = Verdict::judge(1000, 0, 1004, 1000, Some(1004), true);
        assert_eq!((v.duplicated, v.clean), (4, false));
    }

    #[test]
    fn a_stale_stream_or_an_undrained_run_is_not_clean() {
        assert!(!Verdict::judge(10, 0, 10, 10, Some(9), true).clean);
        assert!(!Verdict::judge(10, 0, 10, 10, None, true).clean);
        assert!(!Verdict::judge(10, 0, 10, 10, Some(10), false).clean);
    }
}
