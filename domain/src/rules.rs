//! The ruleset: every constant of the game, explicit and hashable.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The four moods of the button, ordered by entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Calm,
    Warm,
    Hot,
    Chaos,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Calm => "CALM",
            Phase::Warm => "WARM",
            Phase::Hot => "HOT",
            Phase::Chaos => "CHAOS",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = RulesetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CALM" => Ok(Phase::Calm),
            "WARM" => Ok(Phase::Warm),
            "HOT" => Ok(Phase::Hot),
            "CHAOS" => Ok(Phase::Chaos),
            other => Err(RulesetError::UnknownPhase(other.to_owned())),
        }
    }
}

/// One value per phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerPhase<T> {
    pub calm: T,
    pub warm: T,
    pub hot: T,
    pub chaos: T,
}

impl<T: Copy> PerPhase<T> {
    pub fn get(&self, phase: Phase) -> T {
        match phase {
            Phase::Calm => self.calm,
            Phase::Warm => self.warm,
            Phase::Hot => self.hot,
            Phase::Chaos => self.chaos,
        }
    }
}

/// Lower entropy bounds of the phases above CALM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub warm: f64,
    pub hot: f64,
    pub chaos: f64,
}

/// Every constant of the game. Stored as JSON in `rulesets`, identified by
/// [`Ruleset::hash`], and recorded in every snapshot it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ruleset {
    /// Weight of the newest press in the entropy moving average.
    pub entropy_alpha: f64,
    /// Press rate (presses/s) at which intensity saturates at 1.0.
    pub max_rate_for_entropy: f64,
    pub thresholds: Thresholds,
    /// Cooldown base per phase; scaled by `0.5 + 0.5 * entropy`.
    pub cooldown_base_ms: PerPhase<i64>,
    /// How far a press pushes the reveal window, per phase.
    pub reveal_ms: PerPhase<i64>,
    /// Spacing of idle-decay ticks once the cooldown has passed.
    pub tick_interval_ms: i64,
    /// Entropy below this decays straight to zero, so idle decay ends.
    pub entropy_floor: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesetError {
    #[error("ruleset field `{field}` is out of range: {reason}")]
    OutOfRange {
        field: &'static str,
        reason: &'static str,
    },
    #[error("unknown phase `{0}`")]
    UnknownPhase(String),
}

impl Default for Ruleset {
    /// The seed game.
    fn default() -> Self {
        Ruleset {
            entropy_alpha: 0.1,
            max_rate_for_entropy: 10.0,
            thresholds: Thresholds {
                warm: 0.25,
                hot: 0.5,
                chaos: 0.75,
            },
            cooldown_base_ms: PerPhase {
                calm: 1000,
                warm: 2000,
                hot: 5000,
                chaos: 5000,
            },
            reveal_ms: PerPhase {
                calm: 5000,
                warm: 10000,
                hot: 30000,
                chaos: 30000,
            },
            tick_interval_ms: 1000,
            entropy_floor: 0.001,
        }
    }
}

impl Ruleset {
    pub const DEFAULT_NAME: &'static str = "seed";

    pub fn validate(&self) -> Result<(), RulesetError> {
        let range = |ok: bool, field, reason| {
            if ok {
                Ok(())
            } else {
                Err(RulesetError::OutOfRange { field, reason })
            }
        };
        range(
            self.entropy_alpha > 0.0 && self.entropy_alpha <= 1.0,
            "entropy_alpha",
            "must be in (0, 1]",
        )?;
        range(
            self.max_rate_for_entropy.is_finite() && self.max_rate_for_entropy > 0.0,
            "max_rate_for_entropy",
            "must be a positive number",
        )?;
        let t = self.thresholds;
        range(
            0.0 < t.warm && t.warm < t.hot && t.hot < t.chaos && t.chaos <= 1.0,
            "thresholds",
            "must satisfy 0 < warm < hot < chaos <= 1",
        )?;
        let non_negative =
            |p: PerPhase<i64>| p.calm >= 0 && p.warm >= 0 && p.hot >= 0 && p.chaos >= 0;
        range(
            non_negative(self.cooldown_base_ms),
            "cooldown_base_ms",
            "must be >= 0",
        )?;
        range(non_negative(self.reveal_ms), "reveal_ms", "must be >= 0")?;
        range(self.tick_interval_ms > 0, "tick_interval_ms", "must be > 0")?;
        range(
            (0.0..1.0).contains(&self.entropy_floor),
            "entropy_floor",
            "must be in [0, 1)",
        )?;
        Ok(())
    }

    pub fn phase_for(&self, entropy: f64) -> Phase {
        let t = self.thresholds;
        if entropy >= t.chaos {
            Phase::Chaos
        } else if entropy >= t.hot {
            Phase::Hot
        } else if entropy >= t.warm {
            Phase::Warm
        } else {
            Phase::Calm
        }
    }

    pub fn cooldown_ms(&self, phase: Phase, entropy: f64) -> i64 {
        (self.cooldown_base_ms.get(phase) as f64 * (0.5 + 0.5 * entropy)).round() as i64
    }

    /// Canonical JSON: object keys sorted, no whitespace. The hash is taken
    /// over these bytes, so it does not depend on how a map orders its keys.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a ruleset always serialises");
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    /// Lower-case hex SHA-256 of [`Ruleset::canonical_json`].
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Ruleset::default().validate(), Ok(()));
    }

    #[test]
    fn thresholds_split_phases() {
        let r = Ruleset::default();
        assert_eq!(r.phase_for(0.0), Phase::Calm);
        assert_eq!(r.phase_for(0.2499), Phase::Calm);
        assert_eq!(r.phase_for(0.25), Phase::Warm);
        assert_eq!(r.phase_for(0.5), Phase::Hot);
        assert_eq!(r.phase_for(0.75), Phase::Chaos);
        assert_eq!(r.phase_for(1.0), Phase::Chaos);
    }

    #[test]
    fn canonical_json_sorts_keys_and_round_trips() {
        let r = Ruleset::default();
        let json = r.canonical_json();
        assert!(json.starts_with("{\"cooldown_base_ms\":{\"calm\":1000,\"chaos\":5000"));
        let back: Ruleset = serde_json::from_str(&json).expect("canonical JSON parses");
        assert_eq!(back, r);
        assert_eq!(back.hash(), r.hash());
    }

    #[test]
    fn hash_changes_with_any_constant() {
        let mut r = Ruleset::default();
        let before = r.hash();
        r.reveal_ms.hot += 1;
        assert_ne!(before, r.hash());
    }

    #[test]
    fn invalid_rulesets_name_the_field() {
        let mut r = Ruleset::default();
        r.thresholds.hot = 0.9;
        assert!(matches!(
            r.validate(),
            Err(RulesetError::OutOfRange {
                field: "thresholds",
                ..
            })
        ));
        let r = Ruleset {
            entropy_alpha: 0.0,
            ..Ruleset::default()
        };
        assert!(matches!(
            r.validate(),
            Err(RulesetError::OutOfRange {
                field: "entropy_alpha",
                ..
            })
        ));
    }
}
