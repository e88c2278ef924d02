//! A state as stored in `global_states` and sent to clients.

use crate::rules::Phase;
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The wire and storage form of a state: the [`State`] plus where it came
/// from. `id` 0 is the genesis state, before any snapshot exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: i64,
    pub counter: u64,
    pub phase: Phase,
    pub entropy: f64,
    pub cooldown_ms: i64,
    pub reveal_until_ms: i64,
    pub last_press_ms: Option<i64>,
    pub last_tick_ms: Option<i64>,
    pub rules_hash: String,
    /// Last applied offset per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Records folded into this snapshot (0 for a tick).
    pub batch_size: i64,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    pub committed_at_ms: i64,
}

impl Snapshot {
    pub fn genesis(rules_hash: String) -> Self {
        Snapshot::from_state(0, &State::default(), rules_hash, 0, None, None, 0)
    }

    pub fn from_state(
        id: i64,
        state: &State,
        rules_hash: String,
        batch_size: i64,
        first_event_ms: Option<i64>,
        last_event_ms: Option<i64>,
        committed_at_ms: i64,
    ) -> Self {
        Snapshot {
            id,
            counter: state.counter,
            phase: state.phase,
            entropy: state.entropy,
            cooldown_ms: state.cooldown_ms,
            reveal_until_ms: state.reveal_until_ms,
            last_press_ms: state.last_press_ms,
            last_tick_ms: state.last_tick_ms,
            rules_hash,
            offsets: state.offsets.clone(),
            batch_size,
            first_event_ms,
            last_event_ms,
            committed_at_ms,
        }
    }

    pub fn state(&self) -> State {
        State {
            counter: self.counter,
            phase: self.phase,
            entropy: self.entropy,
            cooldown_ms: self.cooldown_ms,
            reveal_until_ms: self.reveal_until_ms,
            last_press_ms: self.last_press_ms,
            last_tick_ms: self.last_tick_ms,
            offsets: self.offsets.clone(),
        }
    }

    /// Whether the record at (partition, offset) is folded into this state.
    pub fn covers(&self, partition: i32, offset: i64) -> bool {
        self.offsets
            .get(&partition)
            .is_some_and(|&applied| applied >= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_partition_keys() {
        let mut state = State::default();
        state.skip_record(2, 9);
        let snap = Snapshot::from_state(7, &state, "h".into(), 1, Some(1), Some(2), 3);
        let json = serde_json::to_string(&snap).expect("serialise");
        assert!(json.contains(r#""offsets":{"2":9}"#), "{json}");
        let back: Snapshot = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, snap);
        assert!(back.covers(2, 9) && !back.covers(2, 10) && !back.covers(0, 0));
    }
}
