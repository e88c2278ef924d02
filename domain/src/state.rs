//! The global state and the fold over presses and ticks.

use crate::rules::{Phase, Ruleset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The one global state. `offsets` holds, per partition, the offset of the
/// last record folded into it (presses and skipped poison records alike):
/// the reducer resumes from `offset + 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub counter: u64,
    pub phase: Phase,
    pub entropy: f64,
    pub cooldown_ms: i64,
    pub reveal_until_ms: i64,
    pub last_press_ms: Option<i64>,
    pub last_tick_ms: Option<i64>,
    pub offsets: BTreeMap<i32, i64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            counter: 0,
            phase: Phase::Calm,
            entropy: 0.0,
            cooldown_ms: 0,
            reveal_until_ms: 0,
            last_press_ms: None,
            last_tick_ms: None,
            offsets: BTreeMap::new(),
        }
    }
}

/// One accepted press, as the reducer read it from the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressEvent {
    /// When the service accepted it (its clock, ms since the epoch).
    pub accepted_at_ms: i64,
    pub partition: i32,
    pub offset: i64,
}

/// Idle decay, at a time the caller supplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub now_ms: i64,
}

impl State {
    /// Marks a record as consumed without counting it (a poison record sent
    /// to the dead-letter topic): the offset moves, nothing else does.
    pub fn skip_record(&mut self, partition: i32, offset: i64) {
        let entry = self.offsets.entry(partition).or_insert(offset);
        *entry = (*entry).max(offset);
    }

    /// Whether a tick at `now_ms` would change anything.
    pub fn tick_due(&self, now_ms: i64, rules: &Ruleset) -> bool {
        if self.entropy <= 0.0 {
            return false;
        }
        let Some(last_press) = self.last_press_ms else {
            return false;
        };
        if now_ms < last_press.saturating_add(self.cooldown_ms) {
            return false;
        }
        match self.last_tick_ms {
            Some(last_tick) if last_tick >= last_press => {
                now_ms >= last_tick.saturating_add(rules.tick_interval_ms)
            }
            _ => true,
        }
    }

    fn press(&mut self, event: &PressEvent, rules: &Ruleset) {
        let intensity = match self.last_press_ms {
            None => 1.0,
            Some(last) => {
                let dt_s = (event.accepted_at_ms - last).max(1) as f64 / 1000.0;
                (1.0 / dt_s).min(rules.max_rate_for_entropy) / rules.max_rate_for_entropy
            }
        };
        self.set_entropy(
            (1.0 - rules.entropy_alpha) * self.entropy + rules.entropy_alpha * intensity,
            rules,
        );
        let reveal = event
            .accepted_at_ms
            .saturating_add(rules.reveal_ms.get(self.phase));
        self.reveal_until_ms = self.reveal_until_ms.max(reveal);
        // Presses from several partitions interleave; time never runs back.
        self.last_press_ms = Some(
            self.last_press_ms
                .map_or(event.accepted_at_ms, |l| l.max(event.accepted_at_ms)),
        );
        self.counter += 1;
        self.skip_record(event.partition, event.offset);
    }

    fn set_entropy(&mut self, entropy: f64, rules: &Ruleset) {
        self.entropy = if entropy.is_nan() {
            0.0
        } else {
            entropy.clamp(0.0, 1.0)
        };
        self.phase = rules.phase_for(self.entropy);
        self.cooldown_ms = rules.cooldown_ms(self.phase, self.entropy);
    }
}

/// Folds presses, in order, into the state.
pub fn apply_batch(mut state: State, events: &[PressEvent], rules: &Ruleset) -> State {
    for event in events {
        state.press(event, rules);
    }
    state
}

/// One step of idle decay, as a press of intensity 0 would do to entropy,
/// phase and cooldown. Returns the state unchanged when no tick is due
/// (see [`State::tick_due`]). Never touches the counter or the offsets.
pub fn apply_tick(mut state: State, now_ms: i64, rules: &Ruleset) -> State {
    if !state.tick_due(now_ms, rules) {
        return state;
    }
    let mut entropy = (1.0 - rules.entropy_alpha) * state.entropy;
    if entropy < rules.entropy_floor {
        entropy = 0.0;
    }
    state.set_entropy(entropy, rules);
    state.last_tick_ms = Some(now_ms);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(ms: i64, offset: i64) -> PressEvent {
        PressEvent {
            accepted_at_ms: ms,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn first_press_has_full_intensity() {
        let rules = Ruleset::default();
        let s = apply_batch(State::default(), &[press(10_000, 0)], &rules);
        assert_eq!(s.counter, 1);
        assert!((s.entropy - 0.1).abs() < 1e-12);
        assert_eq!(s.phase, Phase::Calm);
        // CALM base 1000 * (0.5 + 0.05)
        assert_eq!(s.cooldown_ms, 550);
        assert_eq!(s.reveal_until_ms, 15_000);
        assert_eq!(s.offsets.get(&0), Some(&0));
    }

    #[test]
    fn fast_presses_heat_up_and_slow_ones_do_not() {
        let rules = Ruleset::default();
        let fast: Vec<_> = (0..40).map(|i| press(1_000 + i * 50, i)).collect();
        let hot = apply_batch(State::default(), &fast, &rules);
        assert_eq!(hot.phase, Phase::Chaos, "20 presses/s saturate intensity");
        let slow: Vec<_> = (0..40).map(|i| press(1_000 + i * 10_000, i)).collect();
        let calm = apply_batch(State::default(), &slow, &rules);
        assert_eq!(calm.phase, Phase::Calm);
        assert!(calm.entropy < 0.1);
    }

    #[test]
    fn same_timestamp_counts_as_one_millisecond() {
        let rules = Ruleset::default();
        let s = apply_batch(State::default(), &[press(5, 0), press(5, 1)], &rules);
        // second press: dt = 1 ms, intensity saturates at 1.0
        assert!((s.entropy - (0.9 * 0.1 + 0.1)).abs() < 1e-12);
    }

    #[test]
    fn ticks_wait_for_the_cooldown_then_decay_to_zero() {
        let rules = Ruleset::default();
        let s = apply_batch(State::default(), &[press(0, 0)], &rules);
        assert_eq!(
            apply_tick(s.clone(), s.cooldown_ms - 1, &rules),
            s,
            "not idle yet"
        );
        let t1 = apply_tick(s.clone(), s.cooldown_ms, &rules);
        assert!(t1.entropy < s.entropy);
        assert_eq!(t1.last_tick_ms, Some(s.cooldown_ms));
        assert_eq!(
            apply_tick(t1.clone(), s.cooldown_ms + 999, &rules),
            t1,
            "one tick per interval"
        );
        let mut state = t1;
        let mut now = s.cooldown_ms;
        for _ in 0..200 {
            now += rules.tick_interval_ms;
            state = apply_tick(state, now, &rules);
        }
        assert_eq!(state.entropy, 0.0);
        assert!(
            !state.tick_due(now + 1_000_000, &rules),
            "decay ends at zero"
        );
        assert_eq!(state.counter, 1);
    }

    #[test]
    fn skipped_records_move_offsets_only() {
        let mut s = State::default();
        s.skip_record(3, 41);
        assert_eq!(s.counter, 0);
        assert_eq!(s.offsets.get(&3), Some(&41));
        s.skip_record(3, 7);
        assert_eq!(s.offsets.get(&3), Some(&41), "offsets never go back");
    }
}
