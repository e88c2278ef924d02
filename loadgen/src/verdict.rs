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
    pub lost: u64,
    pub duplicated: u64,
    /// The stream ended on the state PostgreSQL holds.
    pub sse_caught_up: bool,
    pub clean: bool,
}

impl Verdict {
    pub fn judge(
        accepted: u64,
        counter_before: u64,
        counter_after: u64,
        sse_last_counter: Option<u64>,
        drained: bool,
    ) -> Verdict {
        let counted = counter_after.saturating_sub(counter_before);
        let lost = accepted.saturating_sub(counted);
        let duplicated = counted.saturating_sub(accepted);
        let sse_caught_up = sse_last_counter == Some(counter_after);
        Verdict {
            accepted,
            counter_before,
            counter_after,
            sse_last_counter,
            drained,
            lost,
            duplicated,
            sse_caught_up,
            clean: drained && lost == 0 && duplicated == 0 && sse_caught_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_count_is_clean() {
        let v = Verdict::judge(1000, 50, 1050, Some(1050), true);
        assert_eq!((v.lost, v.duplicated, v.clean), (0, 0, true));
    }

    #[test]
    fn missing_presses_are_lost() {
        let v = Verdict::judge(1000, 50, 1039, Some(1039), true);
        assert_eq!((v.lost, v.duplicated, v.clean), (11, 0, false));
    }

    #[test]
    fn extra_counts_are_duplicates() {
        let v = Verdict::judge(1000, 0, 1003, Some(1003), true);
        assert_eq!((v.lost, v.duplicated, v.clean), (0, 3, false));
    }

    #[test]
    fn a_stale_stream_or_an_undrained_run_is_not_clean() {
        assert!(!Verdict::judge(10, 0, 10, Some(9), true).clean);
        assert!(!Verdict::judge(10, 0, 10, None, true).clean);
        assert!(!Verdict::judge(10, 0, 10, Some(10), false).clean);
    }
}
