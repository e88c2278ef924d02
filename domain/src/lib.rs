//! The Button's pure core.
//!
//! - [`rules`]: the versioned [`Ruleset`] (phases, thresholds, cooldowns) and
//!   its content hash.
//! - [`state`]: [`State`], [`PressEvent`], [`Tick`] and the fold
//!   ([`apply_batch`], [`apply_tick`]).
//! - [`record`]: the versioned record on the `press_button` topic and its
//!   decoder, which names why a poison record was rejected.
//! - [`snapshot`]: the persisted and published form of a state.
//!
//! The promise: no I/O and no clock. Time only enters through the events'
//! timestamps and the `now_ms` a caller hands to [`apply_tick`], so folding
//! the same inputs always gives the same state, bit for bit.

pub mod pow;
pub mod record;
pub mod rules;
pub mod snapshot;
pub mod state;

pub use record::{DecodeError, MAX_RECORD_BYTES, PressRecord, RECORD_VERSION};
pub use rules::{PerPhase, Phase, Ruleset, RulesetError, Thresholds};
pub use snapshot::Snapshot;
pub use state::{PressEvent, State, Tick, apply_batch, apply_tick};
