//! The first stage of a run: when every press is due. An open-model phase
//! plans `rate × duration` presses at even intervals; a closed-model phase
//! plans users, and its presses are due when each user is ready.

use crate::scenario::{Endpoint, Scenario};
use std::time::Duration;

/// One load step, as offsets from the start of the load.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    pub name: String,
    pub start: Duration,
    pub end: Duration,
    pub rate: Option<f64>,
    pub users: Option<usize>,
    pub ramp_s: u64,
    pub warmup: bool,
    /// Presses, or live checks (which are planned and sent, never pressed).
    pub endpoint: Endpoint,
}

impl PhasePlan {
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Presses an open-model phase plans; none for a closed one.
    pub fn planned(&self) -> u64 {
        self.rate
            .map_or(0, |r| (r * self.duration().as_secs_f64()).round() as u64)
    }

    /// When the `i`th press of an open-model phase is due.
    pub fn due(&self, i: u64) -> Duration {
        let rate = self.rate.unwrap_or(1.0);
        self.start + Duration::from_secs_f64(i as f64 / rate)
    }

    /// Presses due at or before `elapsed` (open model).
    pub fn planned_by(&self, elapsed: Duration) -> u64 {
        let Some(rate) = self.rate else { return 0 };
        if elapsed < self.start {
            return 0;
        }
        let since = (elapsed - self.start).as_secs_f64();
        ((since * rate).floor() as u64 + 1).min(self.planned())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub phases: Vec<PhasePlan>,
}

impl Plan {
    /// One measured phase of presses at `rate` for `duration` (benches).
    pub fn steady(rate: f64, duration: Duration) -> Plan {
        Plan {
            phases: vec![PhasePlan {
                name: "steady".into(),
                start: Duration::ZERO,
                end: duration,
                rate: Some(rate),
                users: None,
                ramp_s: 0,
                warmup: false,
                endpoint: Endpoint::Press,
            }],
        }
    }

    pub fn of(scenario: &Scenario) -> Plan {
        let mut offset = Duration::ZERO;
        let phases = scenario
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let start = offset;
                offset += Duration::from_secs(p.duration_s);
                PhasePlan {
                    name: if p.name.is_empty() {
                        format!("phase-{i}")
                    } else {
                        p.name.clone()
                    },
                    start,
                    end: offset,
                    rate: p.rate,
                    users: p.users,
                    ramp_s: p.ramp_s,
                    warmup: p.warmup,
                    endpoint: p.endpoint,
                }
            })
            .collect();
        Plan { phases }
    }

    pub fn duration(&self) -> Duration {
        self.phases.last().map_or(Duration::ZERO, |p| p.end)
    }

    /// Open-model presses due at or before `elapsed` (live checks are not
    /// presses).
    pub fn planned_by(&self, elapsed: Duration) -> u64 {
        self.phases
            .iter()
            .filter(|p| p.endpoint == Endpoint::Press)
            .map(|p| p.planned_by(elapsed))
            .sum()
    }

    /// The phase whose planned time holds `elapsed` (the last one after).
    pub fn phase_at(&self, elapsed: Duration) -> usize {
        self.phases
            .iter()
            .position(|p| elapsed < p.end)
            .unwrap_or(self.phases.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(start: u64, end: u64, rate: f64) -> PhasePlan {
        PhasePlan {
            name: "p".into(),
            start: Duration::from_secs(start),
            end: Duration::from_secs(end),
            rate: Some(rate),
            users: None,
            ramp_s: 0,
            warmup: false,
            endpoint: Endpoint::Press,
        }
    }

    #[test]
    fn an_open_phase_plans_rate_times_duration_evenly() {
        let p = open(10, 20, 250.0);
        assert_eq!(p.planned(), 2500);
        assert_eq!(p.due(0), Duration::from_secs(10));
        assert_eq!(p.due(250), Duration::from_secs(11));
        assert!(p.due(p.planned() - 1) < p.end);
        assert_eq!(p.planned_by(Duration::from_secs(9)), 0);
        assert_eq!(p.planned_by(Duration::from_secs(10)), 1);
        assert_eq!(p.planned_by(Duration::from_millis(11_000)), 251);
        assert_eq!(p.planned_by(Duration::from_secs(60)), 2500);
    }

    #[test]
    fn a_plan_sums_its_phases() {
        let plan = Plan {
            phases: vec![open(0, 5, 100.0), open(5, 10, 300.0)],
        };
        assert_eq!(plan.duration(), Duration::from_secs(10));
        assert_eq!(plan.planned_by(Duration::from_secs(100)), 500 + 1500);
        assert_eq!(plan.phase_at(Duration::from_millis(4999)), 0);
        assert_eq!(plan.phase_at(Duration::from_secs(5)), 1);
        assert_eq!(plan.phase_at(Duration::from_secs(50)), 1);
    }

    #[test]
    fn live_checks_are_planned_but_are_not_presses() {
        let mut live = open(5, 10, 300.0);
        live.endpoint = Endpoint::Live;
        assert_eq!(live.planned(), 1500);
        let plan = Plan {
            phases: vec![open(0, 5, 100.0), live],
        };
        assert_eq!(plan.planned_by(Duration::from_secs(100)), 500);
    }
}
