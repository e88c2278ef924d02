//! What a run measures while it runs, shared by the stages that write it
//! (the load, the SSE listeners, the faults) and read by those that judge
//! and store it once the load is over.

use crate::measure::Series;
use crate::scenario::Endpoint;
use crate::schedule::Plan;
use button_client::{Accepted, Ledger};
use button_domain::Snapshot;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What a live check's failure codes start with in a run's `errors`.
pub const LIVE_ERROR_PREFIX: &str = "live_";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One phase's counters and latencies.
pub struct PhaseStats {
    /// Presses whose send started, and those that started before the
    /// phase's planned end (the rest were late: the generator fell behind).
    pub sent: AtomicU64,
    pub sent_on_time: AtomicU64,
    pub accepted: AtomicU64,
    /// Live checks answered 200 (a `live` phase): served, never accepted.
    pub served: AtomicU64,
    /// Requests that ended without any answer (transport errors, timeouts):
    /// each may have been stored without its 202 reaching us.
    pub unanswered: AtomicU64,
    /// Each request's latency from its due time: a press's, or in a
    /// `live` phase a live check's.
    pub press: Series,
    pub press_to_sse: Series,
    /// How late each send started against its due time (open model).
    pub schedule_lag: Series,
    /// When the phase's last answer came, µs from the start of the load:
    /// a phase sent late lasts longer than planned.
    pub last_answer_us: AtomicU64,
}

impl PhaseStats {
    fn new() -> PhaseStats {
        PhaseStats {
            sent: AtomicU64::new(0),
            sent_on_time: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            served: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            press: Series::new("press"),
            press_to_sse: Series::new("press_to_sse"),
            schedule_lag: Series::new("schedule_lag"),
            last_answer_us: AtomicU64::new(0),
        }
    }

    /// Seconds from the phase's planned start to its last answer, at least
    /// its planned length: what its throughput is measured over.
    pub fn span_s(&self, plan: &crate::schedule::PhasePlan) -> f64 {
        let last = self.last_answer_us.load(Ordering::Relaxed) as f64 / 1e6;
        (last - plan.start.as_secs_f64()).max(plan.duration().as_secs_f64())
    }
}

/// One accepted press, as its 202 named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPress {
    /// Where the press is in the log the reducer reads; `-1` for a press
    /// accepted into the outbox until [`place`] finds it in the topic.
    pub partition: i32,
    pub offset: i64,
    pub request_id: String,
    /// The outbox row the 202 named (ingest `outbox`).
    pub outbox_id: Option<i64>,
}

/// A press whose 202 named an outbox row rather than a log position: its
/// press-to-SSE latency is known once the topic says where the relay put
/// it.
struct Unplaced {
    request_id: String,
    due: Instant,
    answered: Instant,
    phase: usize,
}

/// Positions in the topic by request id (the first one, when the relay
/// sent a record twice), for presses accepted into the outbox.
pub fn first_positions(records: &[crate::topic::TopicRecord]) -> HashMap<&str, (i32, i64)> {
    let mut at: HashMap<&str, (i32, i64)> = HashMap::with_capacity(records.len());
    for r in records {
        if let Some(id) = &r.request_id {
            let here = (r.partition, r.offset);
            at.entry(id.as_str())
                .and_modify(|p| *p = (*p).min(here))
                .or_insert(here);
        }
    }
    at
}

/// Gives every outbox press its topic position (or leaves it at -1: not
/// in the topic, which the verdict counts as lost).
pub fn place(accepted: &mut [AcceptedPress], positions: &HashMap<&str, (i32, i64)>) {
    for a in accepted.iter_mut().filter(|a| a.outbox_id.is_some()) {
        if let Some(&(p, o)) = positions.get(a.request_id.as_str()) {
            a.partition = p;
            a.offset = o;
        }
    }
}

/// Presses waiting for the first state that covers them.
#[derive(Default)]
struct Tracker {
    pending: BTreeMap<i32, BTreeMap<i64, (Instant, usize)>>,
    covered: BTreeMap<i32, i64>,
}

pub struct Recorder {
    pub plan: Plan,
    /// When the load started; phases' offsets count from here.
    pub start: Instant,
    pub phases: Vec<PhaseStats>,
    /// Run-wide figures are presses only: a `live` phase's checks count in
    /// their phase (and in `schedule_lag`, the generator's lateness), and
    /// their failures under `live_` codes, outside `error_count`.
    pub press: Series,
    pub press_to_sse: Series,
    pub fanout: Series,
    /// Lateness of a timer on the listeners' runtime (see `observe`).
    pub observer_lag: Series,
    /// Listeners that have had their first frame.
    pub listeners_connected: AtomicU64,
    pub schedule_lag: Series,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub unanswered: AtomicU64,
    /// Presses sent again to another instance after a connection-level
    /// failure (refused, reset, no answer), each counted once.
    pub retried: AtomicU64,
    /// Request ids of accepted presses that an earlier, unanswered attempt
    /// may also have stored: the log may hold them twice (same id, which
    /// the reducer counts once).
    maybe_twice: Mutex<std::collections::HashSet<String>>,
    errors: Mutex<BTreeMap<String, u64>>,
    ledger: Mutex<Ledger>,
    accepted_presses: Mutex<Vec<AcceptedPress>>,
    tracker: Mutex<Tracker>,
    last_tracked: Mutex<Option<Snapshot>>,
    /// When the tracking SSE client received each state frame.
    frames: Mutex<Vec<Instant>>,
    /// Outbox presses waiting for the topic read (see [`Unplaced`]), and
    /// every tracked frame's offsets to match them against then.
    unplaced: Mutex<Vec<Unplaced>>,
    frame_offsets: Mutex<Vec<(Instant, BTreeMap<i32, i64>)>>,
    /// Per scenario fault: (index, first action started, last action done).
    fault_windows: Mutex<Vec<(usize, Instant, Instant)>>,
    /// Set when the ramp's stop rule ended the load: sending threads start
    /// no further press (those in flight complete).
    stopping: AtomicBool,
    /// The phase whose miss ended the ramp, and the missed steps.
    stop: Mutex<Option<(usize, Vec<crate::summary::StepMiss>)>>,
}

impl Recorder {
    pub fn new(plan: Plan, start: Instant) -> Recorder {
        // Room for every planned press up front: growing the list under its
        // lock copied it whole at 2^18, 2^19 and 2^20 presses and stalled
        // every sending thread for 35, 65 and 105-125 ms (a ramp's
        // schedule lag showed it at exactly those counts).
        let planned_presses: u64 = plan
            .phases
            .iter()
            .filter(|p| p.rate.is_some() && p.endpoint == crate::scenario::Endpoint::Press)
            .map(|p| p.planned())
            .sum();
        Recorder {
            phases: plan.phases.iter().map(|_| PhaseStats::new()).collect(),
            plan,
            start,
            press: Series::new("press"),
            press_to_sse: Series::new("press_to_sse"),
            fanout: Series::new("fanout"),
            observer_lag: Series::new("observer_lag"),
            listeners_connected: AtomicU64::new(0),
            schedule_lag: Series::new("schedule_lag"),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            maybe_twice: Mutex::new(std::collections::HashSet::new()),
            errors: Mutex::new(BTreeMap::new()),
            ledger: Mutex::new(Ledger::default()),
            accepted_presses: Mutex::new(Vec::with_capacity(planned_presses as usize)),
            tracker: Mutex::new(Tracker::default()),
            last_tracked: Mutex::new(None),
            frames: Mutex::new(Vec::new()),
            unplaced: Mutex::new(Vec::new()),
            frame_offsets: Mutex::new(Vec::new()),
            fault_windows: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            stop: Mutex::new(None),
        }
    }

    /// The ramp stops after phase `phase`: no press starts from now on.
    pub fn stop_after(&self, phase: usize, missed: Vec<crate::summary::StepMiss>) {
        *lock(&self.stop) = Some((phase, missed));
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether the stop rule ended the load: sends must not start.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The phase whose miss ended the ramp, with the missed steps.
    pub fn stopped(&self) -> Option<(usize, Vec<crate::summary::StepMiss>)> {
        lock(&self.stop).clone()
    }

    /// What step `phase` measured so far, to judge it at its planned end.
    pub fn step_so_far(&self, phase: usize) -> crate::summary::StepSoFar {
        let stats = &self.phases[phase];
        crate::summary::StepSoFar {
            planned: self.plan.phases[phase].planned(),
            sent_on_time: stats.sent_on_time.load(Ordering::Relaxed),
            answered: stats.press.total().len(),
            accepted: stats.accepted.load(Ordering::Relaxed),
            schedule_lag_p99_ms: crate::measure::Percentiles::of(&stats.schedule_lag.total())
                .p99_ms,
            press_to_sse: crate::measure::Percentiles::of(&stats.press_to_sse.total()),
        }
    }

    /// A press went to another instance after a connection-level failure.
    pub fn retried_elsewhere(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// An accepted press whose earlier attempt got no answer: that attempt
    /// may have stored it too, under the same request id.
    pub fn maybe_stored_twice(&self, request_id: &str) {
        lock(&self.maybe_twice).insert(request_id.to_owned());
    }

    /// Request ids that may be in the log twice (see [`Self::maybe_stored_twice`]).
    pub fn maybe_twice(&self) -> std::collections::HashSet<String> {
        lock(&self.maybe_twice).clone()
    }

    /// Whether phase `phase` sends presses (rather than live checks).
    fn presses(&self, phase: usize) -> bool {
        self.plan.phases[phase].endpoint == Endpoint::Press
    }

    /// A send starts now for a press due at `due` in phase `phase`.
    pub fn sending(&self, phase: usize, due: Instant, now: Instant) {
        let stats = &self.phases[phase];
        if self.presses(phase) {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if now < self.start + self.plan.phases[phase].end {
            stats.sent_on_time.fetch_add(1, Ordering::Relaxed);
        }
        let lag = now.saturating_duration_since(due);
        self.schedule_lag.record(lag);
        stats.schedule_lag.record(lag);
    }

    /// The answer (or its absence) came: latency counts from the due time.
    pub fn answered(&self, phase: usize, due: Instant) {
        let latency = due.elapsed();
        if self.presses(phase) {
            self.press.record(latency);
        }
        let stats = &self.phases[phase];
        stats.press.record(latency);
        let at = self.start.elapsed().as_micros() as u64;
        stats.last_answer_us.fetch_max(at, Ordering::Relaxed);
    }

    pub fn accept(&self, a: &Accepted, due: Instant, phase: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.phases[phase].accepted.fetch_add(1, Ordering::Relaxed);
        lock(&self.ledger).record(a);
        let Some((partition, offset)) = a.position() else {
            lock(&self.accepted_presses).push(AcceptedPress {
                partition: -1,
                offset: -1,
                request_id: a.request_id.clone(),
                outbox_id: a.outbox_id,
            });
            lock(&self.unplaced).push(Unplaced {
                request_id: a.request_id.clone(),
                due,
                answered: Instant::now(),
                phase,
            });
            return;
        };
        lock(&self.accepted_presses).push(AcceptedPress {
            partition,
            offset,
            request_id: a.request_id.clone(),
            outbox_id: None,
        });
        let mut t = lock(&self.tracker);
        if t.covered.get(&partition).is_some_and(|&o| o >= offset) {
            // The state arrived before the answer did.
            drop(t);
            self.seen(due, phase, Instant::now());
        } else {
            t.pending
                .entry(partition)
                .or_default()
                .insert(offset, (due, phase));
        }
    }

    /// Press-to-SSE latencies of the outbox presses, once the topic says
    /// where each is: from its due time to the first tracked frame whose
    /// offsets cover that position (or its answer, if that came later).
    /// Presses not in the topic get none. Returns how many were placed.
    pub fn place_unplaced(&self, positions: &HashMap<&str, (i32, i64)>) -> usize {
        let unplaced = std::mem::take(&mut *lock(&self.unplaced));
        let frames = lock(&self.frame_offsets);
        let mut placed = 0;
        for u in unplaced {
            let Some(&(p, o)) = positions.get(u.request_id.as_str()) else {
                continue;
            };
            // States only move forward, so the covering frames are a suffix.
            let first =
                frames.partition_point(|(_, offsets)| offsets.get(&p).is_none_or(|&a| a < o));
            let Some((at, _)) = frames.get(first) else {
                continue;
            };
            let seen = (*at).max(u.answered);
            let latency = seen.saturating_duration_since(u.due);
            let since_start = seen.saturating_duration_since(self.start);
            self.press_to_sse.record_at(latency, since_start);
            self.phases[u.phase]
                .press_to_sse
                .record_at(latency, since_start);
            placed += 1;
        }
        placed
    }

    /// A live check of phase `phase` answered 200. It is no press: the
    /// ledger and the verdict never see it.
    pub fn served(&self, phase: usize) {
        self.phases[phase].served.fetch_add(1, Ordering::Relaxed);
    }

    /// `code` is what the failure is counted under; `unanswered` when no
    /// answer came at all (the press may still have been stored). A live
    /// check's failure counts as `live_<code>`, and never as a request
    /// that may have stored a press.
    pub fn error(&self, phase: usize, code: &str, unanswered: bool) {
        let presses = self.presses(phase);
        if unanswered {
            if presses {
                self.unanswered.fetch_add(1, Ordering::Relaxed);
            }
            self.phases[phase]
                .unanswered
                .fetch_add(1, Ordering::Relaxed);
        }
        let code = if presses {
            Cow::Borrowed(code)
        } else {
            Cow::Owned(format!("{LIVE_ERROR_PREFIX}{code}"))
        };
        let mut errors = lock(&self.errors);
        match errors.get_mut(code.as_ref()) {
            Some(n) => *n += 1,
            None => {
                errors.insert(code.into_owned(), 1);
            }
        }
    }

    fn seen(&self, due: Instant, phase: usize, now: Instant) {
        let latency = now.saturating_duration_since(due);
        self.press_to_sse.record(latency);
        self.phases[phase].press_to_sse.record(latency);
    }

    /// A state reached the tracking client: every press it covers is seen.
    pub fn on_tracked_state(&self, s: &Snapshot) {
        let now = Instant::now();
        lock(&self.frames).push(now);
        if !lock(&self.unplaced).is_empty() {
            lock(&self.frame_offsets).push((now, s.offsets.clone()));
        }
        let mut seen = Vec::new();
        {
            let mut t = lock(&self.tracker);
            for (&p, &o) in &s.offsets {
                let covered = t.covered.entry(p).or_insert(o);
                *covered = (*covered).max(o);
                if let Some(pending) = t.pending.get_mut(&p) {
                    let rest = pending.split_off(&(o + 1));
                    seen.extend(std::mem::replace(pending, rest).into_values());
                }
            }
        }
        for (due, phase) in seen {
            self.seen(due, phase, now);
        }
        *lock(&self.last_tracked) = Some(s.clone());
    }

    pub fn on_fanout(&self, latency: Duration) {
        self.fanout.record(latency);
    }

    pub fn fault_done(&self, index: usize, started: Instant, done: Instant) {
        lock(&self.fault_windows).push((index, started, done));
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    /// Failed presses (live checks' failures left out).
    pub fn error_count(&self) -> u64 {
        lock(&self.errors)
            .iter()
            .filter(|(code, _)| !code.starts_with(LIVE_ERROR_PREFIX))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn ledger(&self) -> Ledger {
        lock(&self.ledger).clone()
    }

    pub fn accepted_presses(&self) -> Vec<AcceptedPress> {
        lock(&self.accepted_presses).clone()
    }

    pub fn last_tracked(&self) -> Option<Snapshot> {
        lock(&self.last_tracked).clone()
    }

    pub fn frames(&self) -> Vec<Instant> {
        lock(&self.frames).clone()
    }

    pub fn fault_windows(&self) -> Vec<(usize, Instant, Instant)> {
        lock(&self.fault_windows).clone()
    }

    /// Every series the run stores as interval logs.
    pub fn series(&self) -> [&Series; 4] {
        [
            &self.press,
            &self.press_to_sse,
            &self.fanout,
            &self.schedule_lag,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::PhasePlan;

    fn phase(start: u64, endpoint: Endpoint) -> PhasePlan {
        PhasePlan {
            name: format!("{endpoint:?}"),
            start: Duration::from_secs(start),
            end: Duration::from_secs(start + 1),
            rate: Some(10.0),
            users: None,
            ramp_s: 0,
            warmup: false,
            endpoint,
        }
    }

    #[test]
    fn the_list_of_accepted_presses_never_grows_mid_run() {
        let plan = Plan {
            phases: vec![phase(0, Endpoint::Live), phase(1, Endpoint::Press)],
        };
        let r = Recorder::new(plan, Instant::now());
        // Room for the press phase's 10 presses; the live checks are none.
        let capacity = lock(&r.accepted_presses).capacity();
        assert!((10..20).contains(&capacity), "{capacity}");
    }

    #[test]
    fn outbox_presses_are_placed_by_request_id_after_the_run() {
        let plan = Plan {
            phases: vec![phase(0, Endpoint::Press)],
        };
        let start = Instant::now();
        let r = Recorder::new(plan, start);
        let outbox = |id: &str, row: i64| Accepted {
            request_id: id.to_owned(),
            partition: None,
            offset: None,
            outbox_id: Some(row),
            accepted_at_ms: 0,
        };
        r.accept(&outbox("a", 1), start, 0);
        r.accept(&outbox("b", 2), start, 0);
        r.accept(&outbox("lost", 3), start, 0);
        let state = |offsets: &[(i32, i64)]| Snapshot {
            offsets: offsets.iter().copied().collect(),
            ..Snapshot::genesis(String::new())
        };
        r.on_tracked_state(&state(&[(0, 4)]));
        std::thread::sleep(Duration::from_millis(20));
        r.on_tracked_state(&state(&[(0, 4), (1, 9)]));
        // "b" was sent twice by a relay that died before its commit: the
        // first position counts.
        let topic = [(0, 4, "a"), (1, 9, "b"), (1, 12, "b")].map(|(partition, offset, id)| {
            crate::topic::TopicRecord {
                partition,
                offset,
                request_id: Some(id.to_owned()),
            }
        });
        let positions = first_positions(&topic);
        assert_eq!(positions["b"], (1, 9));
        let mut accepted = r.accepted_presses();
        assert!(accepted.iter().all(|a| a.partition == -1));
        place(&mut accepted, &positions);
        let at: Vec<(i32, i64)> = accepted.iter().map(|a| (a.partition, a.offset)).collect();
        assert_eq!(at, [(0, 4), (1, 9), (-1, -1)]);
        assert_eq!(r.place_unplaced(&positions), 2);
        let seen = r.press_to_sse.total();
        assert_eq!(seen.len(), 2);
        // "b" waited for the second frame, "a" did not.
        assert!(
            seen.max() >= 20_000 && seen.min() < 20_000,
            "{} {}",
            seen.min(),
            seen.max()
        );
        assert_eq!(r.ledger().unplaced, 3);
    }

    #[test]
    fn a_live_check_counts_in_its_phase_and_never_as_a_press() {
        let plan = Plan {
            phases: vec![phase(0, Endpoint::Live), phase(1, Endpoint::Press)],
        };
        let start = Instant::now();
        let r = Recorder::new(plan, start);
        for _ in 0..3 {
            r.sending(0, start, start);
            r.answered(0, start);
        }
        r.served(0);
        r.served(0);
        r.error(0, "transport", true);
        let live = &r.phases[0];
        assert_eq!(live.sent.load(Ordering::Relaxed), 3);
        assert_eq!(live.served.load(Ordering::Relaxed), 2);
        assert_eq!(live.unanswered.load(Ordering::Relaxed), 1);
        assert_eq!(live.press.total().len(), 3);
        // Nothing a press's figure or the verdict reads moved.
        assert_eq!(r.sent.load(Ordering::Relaxed), 0);
        assert_eq!(r.unanswered.load(Ordering::Relaxed), 0);
        assert_eq!(r.press.total().len(), 0);
        assert_eq!(r.error_count(), 0);
        assert!(r.ledger().accepted == 0 && r.accepted_presses().is_empty());
        assert_eq!(r.errors(), BTreeMap::from([("live_transport".into(), 1)]));

        r.sending(1, start, start);
        r.answered(1, start);
        r.error(1, "transport", true);
        assert_eq!(r.sent.load(Ordering::Relaxed), 1);
        assert_eq!(r.unanswered.load(Ordering::Relaxed), 1);
        assert_eq!(r.error_count(), 1);
    }
}
