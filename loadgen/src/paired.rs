//! Paired comparison of two builds measured in interleaved runs: each
//! pair is one run of A and one of B close in time, so a machine that
//! drifts over the hour moves both alike and their ratio stays.
//!
//! Per metric, the ratios B/A of the pairs are taken on a log scale (a
//! ratio of 2 and one of 0.5 cancel): the estimate is their geometric
//! mean, the interval a Student-t interval on the mean log ratio (honest
//! with the handful of pairs a lab can afford, where a bootstrap's
//! percentile interval is too narrow), and a two-sided sign test counts
//! how many pairs went each way. A metric differs when its interval
//! excludes 1.

use serde::{Deserialize, Serialize};

/// Which way is better for a metric, for the wording of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One metric's pairs and what they say.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    pub metric: String,
    pub better: Better,
    /// `(a, b)` of every pair where both runs had the metric.
    pub pairs: Vec<(f64, f64)>,
    /// Geometric mean of b/a; none with fewer than two pairs.
    pub ratio: Option<f64>,
    /// The 95% interval of that ratio.
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// Pairs where b was above a, and below.
    pub b_higher: usize,
    pub b_lower: usize,
    /// The two-sided sign test's p-value (ties dropped).
    pub sign_p: f64,
    pub differs: bool,
}

impl Comparison {
    pub fn of(metric: &str, better: Better, pairs: Vec<(f64, f64)>) -> Comparison {
        let pairs: Vec<(f64, f64)> = pairs
            .into_iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite() && *a > 0.0 && *b > 0.0)
            .collect();
        let logs: Vec<f64> = pairs.iter().map(|(a, b)| (b / a).ln()).collect();
        let b_higher = pairs.iter().filter(|(a, b)| b > a).count();
        let b_lower = pairs.iter().filter(|(a, b)| b < a).count();
        let sign_p = sign_test(b_higher, b_lower);
        let (ratio, low, high) = match t_interval(&logs) {
            Some((mean, half)) => (
                Some(mean.exp()),
                Some((mean - half).exp()),
                Some((mean + half).exp()),
            ),
            None => (None, None, None),
        };
        let differs = matches!((low, high), (Some(l), Some(h)) if l > 1.0 || h < 1.0);
        Comparison {
            metric: metric.to_owned(),
            better,
            pairs,
            ratio,
            low,
            high,
            b_higher,
            b_lower,
            sign_p,
            differs,
        }
    }

    /// "B is 1.08–1.19× A (B worse)" or "no difference beyond ±4.2%".
    pub fn verdict(&self) -> String {
        match (self.ratio, self.low, self.high) {
            (Some(_), Some(l), Some(h)) if self.differs => {
                let up = l > 1.0;
                let worse = match self.better {
                    Better::Higher => !up,
                    Better::Lower => up,
                };
                format!(
                    "B is {l:.3}–{h:.3}× A ({})",
                    if worse { "B worse" } else { "B better" }
                )
            }
            (Some(_), Some(l), Some(h)) => {
                let z = (1.0 - l).max(h - 1.0) * 100.0;
                format!("no difference beyond ±{z:.1}%")
            }
            _ => format!("too few pairs ({})", self.pairs.len()),
        }
    }
}

/// The mean and the 95% half-width of `x` (Student's t, n-1 degrees of
/// freedom); none with fewer than two values.
pub fn t_interval(x: &[f64]) -> Option<(f64, f64)> {
    let n = x.len();
    if n < 2 {
        return None;
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((mean, t975(n - 1) * (var / n as f64).sqrt()))
}

/// Student's t quantile at 0.975 for `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => TABLE[d - 1],
        d if d <= 60 => 2.000 + (2.042 - 2.000) * (60 - d) as f64 / 30.0,
        _ => 1.96,
    }
}

/// Two-sided exact sign test: the chance of a split at least this uneven
/// if either way were equally likely.
pub fn sign_test(up: usize, down: usize) -> f64 {
    let n = up + down;
    if n == 0 {
        return 1.0;
    }
    let k = up.min(down);
    // P(X <= k) for X ~ Binomial(n, 1/2), doubled.
    let mut choose = 1.0f64;
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            choose = choose * (n - i + 1) as f64 / i as f64;
        }
        tail += choose;
    }
    (2.0 * tail / 2f64.powi(n as i32)).min(1.0)
}

/// The order of `pairs` pairs: blocks of A B B A or B A A B, chosen by
/// `seed`, so a drift over time falls on both alike.
pub fn interleaved_order(pairs: usize, seed: u64) -> Vec<[Side; 2]> {
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(pairs);
    while out.len() < pairs {
        let first = if rng.next() & 1 == 0 {
            Side::A
        } else {
            Side::B
        };
        let second = first.other();
        out.push([first, second]);
        if out.len() < pairs {
            out.push([second, first]);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// A small deterministic generator: the order is reproducible from the
/// seed stored with the comparison.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value from N(0, 1) (Box–Muller).
    #[cfg(test)]
    fn normal(&mut self) -> f64 {
        let u1 = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic pairs: a machine whose speed drifts by up to ±30% from
    /// pair to pair, each run with its own ±`noise` jitter, and B costing
    /// `effect` times A.
    fn synthetic(rng: &mut SplitMix, pairs: usize, effect: f64, noise: f64) -> Vec<(f64, f64)> {
        (0..pairs)
            .map(|_| {
                let host = 1.0 + 0.3 * (rng.normal() / 3.0).clamp(-1.0, 1.0);
                let a = 100.0 * host * (1.0 + noise * rng.normal());
                let b = 100.0 * effect * host * (1.0 + noise * rng.normal());
                (a, b)
            })
            .collect()
    }

    #[test]
    fn a_against_itself_differs_in_about_one_metric_in_twenty() {
        let mut rng = SplitMix(7);
        let trials = 2000;
        let alarms = (0..trials)
            .filter(|_| {
                Comparison::of("m", Better::Lower, synthetic(&mut rng, 6, 1.0, 0.05)).differs
            })
            .count();
        let rate = alarms as f64 / trials as f64;
        assert!((0.03..=0.07).contains(&rate), "false alarms {rate}");
    }

    #[test]
    fn a_ten_percent_slowdown_is_found_despite_a_drifting_host() {
        let mut rng = SplitMix(11);
        let trials = 500;
        let found: Vec<Comparison> = (0..trials)
            .map(|_| Comparison::of("cpu", Better::Lower, synthetic(&mut rng, 6, 1.10, 0.03)))
            .collect();
        let detected = found.iter().filter(|c| c.differs).count();
        assert!(
            detected as f64 / trials as f64 > 0.9,
            "detected {detected} of {trials}"
        );
        let c = found.iter().find(|c| c.differs).unwrap();
        assert!(
            c.low.unwrap() > 1.0 && c.verdict().contains("B worse"),
            "{}",
            c.verdict()
        );
        // Unpaired, the same runs' drift would hide it: the spread of A
        // alone is wider than the effect.
        let a: Vec<f64> = found[0].pairs.iter().map(|p| p.0).collect();
        let spread =
            a.iter().cloned().fold(f64::MIN, f64::max) / a.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 1.1, "the host drifted by {spread}");
    }

    #[test]
    fn verdicts_name_the_direction_and_the_bound() {
        let same = Comparison::of(
            "p99",
            Better::Lower,
            vec![(10.0, 10.1), (10.0, 9.9), (10.0, 10.05), (10.0, 9.95)],
        );
        assert!(!same.differs);
        assert!(
            same.verdict().starts_with("no difference beyond ±"),
            "{}",
            same.verdict()
        );
        let faster = Comparison::of(
            "accepted/s",
            Better::Higher,
            vec![(100.0, 120.0), (100.0, 121.0), (100.0, 119.0)],
        );
        assert!(
            faster.differs && faster.verdict().contains("B better"),
            "{}",
            faster.verdict()
        );
        let one = Comparison::of("knee", Better::Higher, vec![(1.0, 2.0)]);
        assert_eq!(one.verdict(), "too few pairs (1)");
        // Pairs with a missing or zero value are left out.
        let gaps = Comparison::of(
            "x",
            Better::Lower,
            vec![(0.0, 1.0), (f64::NAN, 1.0), (1.0, 1.0)],
        );
        assert_eq!(gaps.pairs.len(), 1);
    }

    #[test]
    fn the_sign_test_is_exact() {
        assert_eq!(sign_test(0, 0), 1.0);
        // 5 of 5 one way: 2 / 32.
        assert!((sign_test(5, 0) - 0.0625).abs() < 1e-12);
        assert!((sign_test(3, 3) - 1.0).abs() < 1e-12);
        // 9 of 10: 2 * 11 / 1024.
        assert!((sign_test(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
    }

    #[test]
    fn the_t_interval_matches_a_worked_example() {
        // mean 2, sd 1 (values 1, 2, 3), n 3: half-width 4.303 / sqrt(3).
        let (mean, half) = t_interval(&[1.0, 2.0, 3.0]).unwrap();
        assert!((mean - 2.0).abs() < 1e-12);
        assert!((half - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(t_interval(&[1.0]).is_none());
    }

    #[test]
    fn the_order_interleaves_in_balanced_blocks() {
        let order = interleaved_order(6, 42);
        assert_eq!(order.len(), 6);
        for block in order.chunks(2) {
            assert_eq!(block[0][0], block[1][1]);
            assert_eq!(block[0][1], block[1][0]);
        }
        let a_first = order.iter().filter(|p| p[0] == Side::A).count();
        assert_eq!(a_first, 3);
        assert_eq!(
            interleaved_order(6, 42),
            order,
            "reproducible from its seed"
        );
        assert_eq!(interleaved_order(3, 1).len(), 3);
    }
}
