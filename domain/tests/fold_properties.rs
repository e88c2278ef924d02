//! Properties of the fold that must hold for any input.

use button_domain::{PressEvent, Ruleset, State, apply_batch, apply_tick};
use proptest::prelude::*;

fn events() -> impl Strategy<Value = Vec<PressEvent>> {
    // Gaps from 0 ms (a burst) to a minute (idle), over three partitions.
    prop::collection::vec((0i64..60_000, 0i32..3), 0..200).prop_map(|gaps| {
        let mut ts = 1_700_000_000_000i64;
        let mut next = [0i64; 3];
        gaps.into_iter()
            .map(|(gap, partition)| {
                ts += gap;
                let offset = next[partition as usize];
                next[partition as usize] += 1;
                PressEvent {
                    accepted_at_ms: ts,
                    partition,
                    offset,
                }
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn counter_grows_by_the_number_of_presses(events in events()) {
        let rules = Ruleset::default();
        let start = apply_batch(State::default(), &events[..events.len() / 2], &rules);
        let end = apply_batch(start.clone(), &events[events.len() / 2..], &rules);
        prop_assert_eq!(end.counter - start.counter, (events.len() - events.len() / 2) as u64);
    }

    #[test]
    fn any_split_folds_to_the_same_state(events in events(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let rules = Ruleset::default();
        let whole = apply_batch(State::default(), &events, &rules);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        points.push(0);
        points.push(events.len());
        points.sort_unstable();
        let mut split = State::default();
        for w in points.windows(2) {
            split = apply_batch(split, &events[w[0]..w[1]], &rules);
        }
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn entropy_stays_in_unit_interval(events in events(), ticks in prop::collection::vec(0i64..10_000, 0..50)) {
        let rules = Ruleset::default();
        let mut state = State::default();
        for e in &events {
            state = apply_batch(state, std::slice::from_ref(e), &rules);
            prop_assert!((0.0..=1.0).contains(&state.entropy), "entropy {}", state.entropy);
        }
        let mut now = state.last_press_ms.unwrap_or(0);
        for gap in ticks {
            now += gap;
            state = apply_tick(state, now, &rules);
            prop_assert!((0.0..=1.0).contains(&state.entropy), "entropy {}", state.entropy);
        }
    }

    #[test]
    fn ticks_never_change_counter_or_offsets(events in events(), ticks in prop::collection::vec(0i64..10_000, 1..50)) {
        let rules = Ruleset::default();
        let pressed = apply_batch(State::default(), &events, &rules);
        let mut state = pressed.clone();
        let mut now = state.last_press_ms.unwrap_or(0);
        for gap in ticks {
            now += gap;
            state = apply_tick(state, now, &rules);
            prop_assert_eq!(state.counter, pressed.counter);
            prop_assert_eq!(&state.offsets, &pressed.offsets);
            prop_assert!(state.entropy <= pressed.entropy);
        }
    }
}
