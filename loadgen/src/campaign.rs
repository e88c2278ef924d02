//! `loadgen campaign [plan]`: everything SCALE.md's headline tables need,
//! measured unattended. A plan (`campaigns/headline.toml`) lists entries
//! (a scenario, optional `--set`s, how many repeats); the campaign runs
//! them in rounds, every entry's first repeat before any second one, in
//! an order shuffled per round, so a slow hour lands on one repeat of
//! many scenarios rather than on every repeat of one. Then each entry's
//! repeats are aggregated as `loadgen run --repeat` would.
//!
//! With `--only-stale`, an entry that already has as many runs as it
//! repeats, fresh by the components' fingerprints, is skipped: a change
//! that did not touch what a scenario runs costs no time.

use crate::repeat::store_aggregate;
use crate::run::{RunOptions, run};
use crate::scenario::{self, Scenario};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a person writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "entry")]
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub scenario: String,
    #[serde(default)]
    pub sets: Vec<String>,
    #[serde(default = "one")]
    pub repeat: u32,
}

fn one() -> u32 {
    1
}

impl Entry {
    /// The runs' label, as `loadgen run --set` names them.
    fn label(&self) -> Option<String> {
        (!self.sets.is_empty()).then(|| self.sets.join(","))
    }

    fn describe(&self) -> String {
        match self.label() {
            Some(l) => format!("{} [{l}]", self.scenario),
            None => self.scenario.clone(),
        }
    }
}

/// What the campaign did (`campaign.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub plan: String,
    pub started_at: String,
    pub wall_s: f64,
    pub entries: Vec<EntryRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EntryRecord {
    pub entry: Entry,
    /// Skipped: enough fresh runs were stored already (their names).
    #[serde(default)]
    pub fresh: Vec<String>,
    pub runs: Vec<String>,
    pub failures: Vec<String>,
    pub aggregate: Option<String>,
}

/// Reads and checks a plan: every scenario loads and every `--set`
/// applies, so a typo fails before the first run, naming the entry.
pub fn load(path: &Path) -> anyhow::Result<(Plan, Vec<Scenario>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let plan: Plan = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(!plan.entries.is_empty(), "{}: no [[entry]]", path.display());
    let mut scenarios = Vec::new();
    for (i, e) in plan.entries.iter().enumerate() {
        let at = || format!("{}: entry {} ({})", path.display(), i + 1, e.describe());
        anyhow::ensure!(e.repeat >= 1, "{}: repeat must be at least 1", at());
        let file = scenario::resolve(&e.scenario);
        let mut s = scenario::load(&file).with_context(at)?;
        for set in &e.sets {
            s.set(&file, set).with_context(at)?;
        }
        // A sweep's key set by the entry is one point of it.
        let overrides = s.overrides.clone();
        s.sweep.retain(|k, _| !overrides.contains_key(k));
        anyhow::ensure!(
            s.sweep.is_empty(),
            "{}: the scenario sweeps {}; list its points as entries with `sets`",
            at(),
            s.sweep.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        scenarios.push(s);
    }
    Ok((plan, scenarios))
}

/// Runs a plan; returns whether every run passed.
pub async fn campaign(
    plan_path: &Path,
    out: &Path,
    only_stale: bool,
    seed: Option<u64>,
) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (plan, scenarios) = load(plan_path)?;
    let fresh = if only_stale {
        fresh_runs(out)?
    } else {
        BTreeMap::new()
    };
    let mut records: Vec<EntryRecord> = plan
        .entries
        .iter()
        .zip(&scenarios)
        .map(|(e, s)| {
            let have = fresh
                .get(&(s.name.clone(), s.overrides.clone()))
                .cloned()
                .unwrap_or_default();
            EntryRecord {
                entry: e.clone(),
                fresh: if have.len() >= e.repeat as usize {
                    have
                } else {
                    Vec::new()
                },
                runs: Vec::new(),
                failures: Vec::new(),
                aggregate: None,
            }
        })
        .collect();
    let todo: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].fresh.is_empty())
        .collect();
    for (i, r) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.fresh.is_empty())
    {
        eprintln!(
            "campaign: {} is fresh ({} runs), skipped",
            plan.entries[i].describe(),
            r.fresh.len()
        );
    }
    let rounds = todo
        .iter()
        .map(|&i| plan.entries[i].repeat)
        .max()
        .unwrap_or(0);
    let total: u32 = todo.iter().map(|&i| plan.entries[i].repeat).sum();
    let mut seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "campaign: {total} runs of {} entries in {rounds} rounds (seed {seed})",
        todo.len()
    );
    let mut outcomes: BTreeMap<usize, Vec<crate::summary::Summary>> = BTreeMap::new();
    let mut done = 0;
    for round in 1..=rounds {
        let mut order: Vec<usize> = todo
            .iter()
            .copied()
            .filter(|&i| plan.entries[i].repeat >= round)
            .collect();
        shuffle(&mut order, &mut seed);
        for i in order {
            let entry = &plan.entries[i];
            done += 1;
            eprintln!(
                "campaign: run {done} of {total} ({:.0} min in): {} round {round}",
                started.elapsed().as_secs_f64() / 60.0,
                entry.describe()
            );
            let label = match (entry.label(), entry.repeat) {
                (l, 1) => l,
                (Some(l), _) => Some(format!("{l}_r{round}")),
                (None, _) => Some(format!("r{round}")),
            };
            let options = RunOptions {
                out_dir: out.to_path_buf(),
                sweep_point: None,
                label,
                progress: false,
            };
            // An unattended campaign goes on past a run that could not
            // finish, and says so at the end.
            match run(&scenarios[i], &options).await {
                Ok(outcome) => {
                    let name = outcome
                        .dir
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    if !outcome.summary.passed {
                        records[i]
                            .failures
                            .push(format!("{name}: verdict or an assert failed"));
                    }
                    records[i].runs.push(name);
                    outcomes.entry(i).or_default().push(outcome.summary);
                }
                Err(e) => {
                    eprintln!("campaign: {} round {round} failed: {e:#}", entry.describe());
                    records[i].failures.push(format!("round {round}: {e:#}"));
                }
            }
        }
    }
    for (i, summaries) in &outcomes {
        if summaries.len() > 1 {
            let refs: Vec<&crate::summary::Summary> = summaries.iter().collect();
            let dir = store_aggregate(
                &scenarios[*i].name,
                plan.entries[*i].label().as_deref(),
                &refs,
                out,
            )?;
            records[*i].aggregate = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let record = Record {
        plan: plan_path.display().to_string(),
        started_at: started_at.clone(),
        wall_s,
        entries: records,
    };
    let dir = out.join(format!("{}-campaign", started_at.replace(':', "")));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("campaign.json"),
        serde_json::to_string_pretty(&record)? + "\n",
    )?;
    let failed: Vec<&String> = record.entries.iter().flat_map(|e| &e.failures).collect();
    println!(
        "campaign: {} runs in {:.1} min ({}); {} failed{}",
        done,
        wall_s / 60.0,
        dir.display(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                ":\n  {}",
                failed
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )
        }
    );
    Ok(failed.is_empty())
}

/// Fresh stored runs by (scenario, overrides).
fn fresh_runs(
    experiments: &Path,
) -> anyhow::Result<BTreeMap<(String, BTreeMap<String, String>), Vec<String>>> {
    let mut freshness = crate::lab::Freshness::at_head();
    let mut runs = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(experiments)
        .with_context(|| format!("reading {}", experiments.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file() && p.join("meta.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let read = |f: &str| -> Option<serde_json::Value> {
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).ok()?).ok()
        };
        let (Some(summary), Some(meta)) = (read("summary.json"), read("meta.json")) else {
            continue;
        };
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        freshness.note_canary(&name, &summary, &meta);
        runs.push((name, summary, meta));
    }
    let mut out: BTreeMap<_, Vec<String>> = BTreeMap::new();
    for (name, summary, meta) in runs {
        if freshness.stale_reason(&meta).is_some() || summary["sweep_point"].is_object() {
            continue;
        }
        let scenario = summary["scenario"].as_str().unwrap_or_default().to_owned();
        let overrides: BTreeMap<String, String> =
            serde_json::from_value(summary["overrides"].clone()).unwrap_or_default();
        out.entry((scenario, overrides)).or_default().push(name);
    }
    Ok(out)
}

/// Fisher–Yates with a small deterministic generator.
fn shuffle(v: &mut [usize], seed: &mut u64) {
    for i in (1..v.len()).rev() {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((*seed >> 33) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_plan_loads_and_a_typo_names_its_entry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::env::set_current_dir(&root).unwrap();
        let (plan, scenarios) = load(&root.join("campaigns/headline.toml")).unwrap();
        assert_eq!(plan.entries.len(), scenarios.len());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("plan.toml");
        std::fs::write(
            &bad,
            "[[entry]]\nscenario = \"scenarios/smoke.toml\"\n\n[[entry]]\nscenario = \"scenarios/smoke.toml\"\nsets = [\"reducer.batch_maxx=3\"]\n",
        )
        .unwrap();
        let err = format!("{:#}", load(&bad).unwrap_err());
        assert!(
            err.contains("entry 2") && err.contains("batch_maxx"),
            "{err}"
        );
        std::fs::write(
            &bad,
            "[[entry]]\nscenario = \"scenarios/smoke.toml\"\nrepeats = 3\n",
        )
        .unwrap();
        let err = format!("{:#}", load(&bad).unwrap_err());
        assert!(err.contains("repeats"), "{err}");
    }

    #[test]
    fn every_round_runs_each_entry_once_in_a_shuffled_order() {
        let mut seed = 5;
        let mut a: Vec<usize> = (0..10).collect();
        shuffle(&mut a, &mut seed);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(a, sorted);
    }
}
