//! The instruction-count gate: gungraun benches (`benches/ir.rs` in each
//! crate) of both checkouts run under callgrind, and each bench's total
//! instructions (Ir) compared, head over base.
//!
//! Callgrind counts instructions, not time: for the same binary and input
//! the count is the same whatever else the machine does, so the threshold
//! can be a few per cent where the wall-time gate needs 25%. What counts
//! miss (allocation, syscalls, contention, cache misses) is still the
//! criterion gate's job. A regressed bench is reported with the functions
//! whose own instructions grew most, from `callgrind_annotate` of both
//! sides.

use crate::GateError;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ir-gate",
    about = "Compare instruction counts (gungraun benches under callgrind) of two checkouts; exit 1 on a regression"
)]
pub struct IrArgs {
    /// Checkout of the base (usually the parent commit).
    #[arg(long)]
    pub base: PathBuf,
    /// Checkout of the head.
    #[arg(long, default_value = ".")]
    pub head: PathBuf,
    /// Bench targets as `package:bench` (repeatable).
    #[arg(long = "target", required = true, value_parser = parse_target)]
    pub targets: Vec<(String, String)>,
    /// A bench's instructions may grow by this many per cent.
    #[arg(long, default_value_t = 2.0)]
    pub threshold_pct: f64,
    /// Environment for the base's or the head's benches only, `KEY=VALUE`
    /// (repeatable): e.g. a deliberate slowdown on one side.
    #[arg(long, value_parser = parse_env)]
    pub base_env: Vec<(String, String)>,
    #[arg(long, value_parser = parse_env)]
    pub head_env: Vec<(String, String)>,
    /// Target folder for the base's build (the head builds in its usual one).
    #[arg(long, default_value = "target/bench-gate/base-target")]
    pub base_target: PathBuf,
    /// Functions listed for each regressed bench.
    #[arg(long, default_value_t = 8)]
    pub top: usize,
    #[arg(long, default_value = "target/bench-gate/ir")]
    pub out: PathBuf,
}

fn parse_target(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .filter(|(p, b)| !p.is_empty() && !b.is_empty())
        .map(|(p, b)| (p.to_owned(), b.to_owned()))
        .ok_or_else(|| format!("`{s}`: expected package:bench"))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))
}

/// One bench's instructions on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct IrComparison {
    /// `package/bench/group/function.id`, as gungraun lays out its files.
    pub id: String,
    pub base: u64,
    pub head: u64,
    pub regressed: bool,
    /// The functions whose own instructions grew most (regressions only).
    pub grew: Vec<FunctionDelta>,
}

impl IrComparison {
    pub fn ratio(&self) -> f64 {
        self.head as f64 / self.base.max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDelta {
    pub function: String,
    pub base: u64,
    pub head: u64,
}

#[derive(Debug, Default)]
pub struct IrVerdict {
    pub compared: Vec<IrComparison>,
    /// Targets the base has no bench for.
    pub skipped: Vec<String>,
}

impl IrVerdict {
    pub fn regressed(&self) -> bool {
        self.compared.iter().any(|c| c.regressed)
    }
}

pub fn run(args: &IrArgs) -> anyhow::Result<IrVerdict> {
    let mut verdict = IrVerdict::default();
    let head_target = crate::head_target(&args.head);
    let (base_home, head_home) = (args.out.join("base"), args.out.join("head"));
    for dir in [&base_home, &head_home] {
        // Stale outputs of an earlier run would be compared as this one's.
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
    }
    for (package, bench) in &args.targets {
        let base_exe = match crate::build(&args.base, &args.base_target, "base", package, bench) {
            Ok(exe) => exe,
            Err(e) if crate::base_lacks_bench(&e) => {
                eprintln!("ir-gate: skipped {package}:{bench}: {e:#}");
                verdict.skipped.push(format!("{package}:{bench}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let head_exe = crate::build(&args.head, &head_target, "head", package, bench)?;
        run_bench(&base_exe, &args.base, &base_home, &args.base_env)?;
        run_bench(&head_exe, &args.head, &head_home, &args.head_env)?;
    }
    let base = totals(&base_home)?;
    let head = totals(&head_home)?;
    for (id, &(head_ir, ref head_file)) in &head {
        let Some(&(base_ir, ref base_file)) = base.get(id) else {
            eprintln!("ir-gate: {id} is new in the head: nothing to compare it with");
            continue;
        };
        let regressed = head_ir as f64 > base_ir as f64 * (1.0 + args.threshold_pct / 100.0);
        let grew = if regressed {
            grown_functions(&annotate(base_file)?, &annotate(head_file)?, args.top)
        } else {
            Vec::new()
        };
        verdict.compared.push(IrComparison {
            id: id.clone(),
            base: base_ir,
            head: head_ir,
            regressed,
            grew,
        });
    }
    if verdict.compared.is_empty() {
        return Err(GateError::NoBench {
            side: "base",
            bench: args
                .targets
                .iter()
                .map(|(p, b)| format!("{p}:{b}"))
                .collect::<Vec<_>>()
                .join(", "),
            package: "any".into(),
        }
        .into());
    }
    let report = render(&verdict, args.threshold_pct);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("ir.md"), &report)?;
    std::fs::write(
        args.out.join("compared.txt"),
        verdict
            .compared
            .iter()
            .map(|c| format!("{}\n", c.id))
            .collect::<String>(),
    )?;
    print!("{report}");
    Ok(verdict)
}

/// Runs a gungraun bench executable (it starts gungraun-runner, which runs
/// it again under callgrind) with its outputs under `home`.
fn run_bench(exe: &Path, dir: &Path, home: &Path, env: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)?;
    let log_path = home.join(format!(
        "{}.log",
        exe.file_name().unwrap_or_default().to_string_lossy()
    ));
    let log = std::fs::File::create(&log_path)?;
    let status = Command::new(exe)
        .current_dir(dir)
        .arg("--bench")
        .arg(format!("--home={}", std::path::absolute(home)?.display()))
        // Instructions only: the cache simulation would triple the time
        // and its estimates are not what the gate compares.
        .arg("--callgrind-args=--cache-sim=no")
        .arg("--nosummary")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see {}",
            exe.display(),
            log_path.display()
        );
    }
    Ok(())
}

/// Every bench's total instructions under `home`, with its callgrind file:
/// the `summary:` (or `totals:`) line of each `callgrind.*.out`, summed
/// over the bench's files (one per thread or process).
pub fn totals(home: &Path) -> anyhow::Result<BTreeMap<String, (u64, PathBuf)>> {
    let mut out: BTreeMap<String, (u64, PathBuf)> = BTreeMap::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            // `.out.old` and `.out.base@…` are earlier runs.
            if !(name.starts_with("callgrind.") && name.ends_with(".out")) {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let total =
                total_of(&text).with_context(|| format!("{}: no summary line", path.display()))?;
            let id = dir
                .strip_prefix(home)
                .unwrap_or(&dir)
                .to_string_lossy()
                .into_owned();
            let slot = out.entry(id).or_insert((0, path.clone()));
            slot.0 += total;
            // The largest file is the one worth annotating.
            if total * 2 > slot.0 {
                slot.1 = path;
            }
        }
    }
    Ok(out)
}

/// The first event's total in a callgrind output.
pub fn total_of(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// `callgrind_annotate`'s per-function instructions (self cost).
fn annotate(file: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let output = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--inclusive=no"])
        .arg(file)
        .output()
        .context("running callgrind_annotate (valgrind's)")?;
    if !output.status.success() {
        bail!(
            "callgrind_annotate {} failed: {}",
            file.display(),
            output.status
        );
    }
    Ok(parse_annotate(&String::from_utf8_lossy(&output.stdout)))
}

/// Lines like `1,234,567 (12.34%)  file:function [object]` or
/// `1,234,567  file:function`: function to instructions.
pub fn parse_annotate(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if count.is_empty() || !count.chars().all(|c| c.is_ascii_digit() || c == ',') {
            continue;
        }
        let Ok(n) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('(')
            && let Some((_, after)) = rest.split_once(')')
        {
            rest = after.trim_start();
        }
        // The totals line says PROGRAM TOTALS; the object in brackets is noise.
        if rest.is_empty() || rest.starts_with("PROGRAM TOTALS") {
            continue;
        }
        let function = rest
            .rsplit_once(" [")
            .map_or(rest, |(f, _)| f)
            .trim()
            .to_owned();
        *out.entry(function).or_default() += n;
    }
    out
}

/// The `top` functions whose instructions grew most from base to head.
pub fn grown_functions(
    base: &BTreeMap<String, u64>,
    head: &BTreeMap<String, u64>,
    top: usize,
) -> Vec<FunctionDelta> {
    let mut deltas: Vec<FunctionDelta> = head
        .iter()
        .map(|(f, &h)| FunctionDelta {
            function: f.clone(),
            base: base.get(f).copied().unwrap_or(0),
            head: h,
        })
        .filter(|d| d.head > d.base)
        .collect();
    deltas.sort_by_key(|d| std::cmp::Reverse(d.head - d.base));
    deltas.truncate(top);
    deltas
}

pub fn render(verdict: &IrVerdict, threshold_pct: f64) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| bench | base Ir | head Ir | head/base | verdict (threshold +{threshold_pct}%) |\n|---|---|---|---|---|"
    );
    for c in &verdict.compared {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} | {} |",
            c.id,
            c.base,
            c.head,
            c.ratio(),
            if c.regressed { "REGRESSED" } else { "ok" }
        );
    }
    for c in verdict.compared.iter().filter(|c| c.regressed) {
        let _ = writeln!(
            md,
            "\n{}: +{} instructions; the functions that grew most (self cost):\n",
            c.id,
            c.head as i128 - c.base as i128
        );
        let _ = writeln!(
            md,
            "| function | base Ir | head Ir | grew by |\n|---|---|---|---|"
        );
        for f in &c.grew {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                f.function,
                f.base,
                f.head,
                f.head - f.base
            );
        }
    }
    for s in &verdict.skipped {
        let _ = writeln!(md, "\n{s}: skipped, the base has no such bench");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callgrind_files_summary_is_its_total() {
        let text = "version: 1\ncmd: bench\nevents: Ir\nfn=(1) main\n3 10\nsummary: 123456\n";
        assert_eq!(total_of(text), Some(123_456));
        assert_eq!(total_of("totals: 77 3\n"), Some(77));
        assert_eq!(total_of("events: Ir\n"), None);
    }

    #[test]
    fn totals_sum_a_benchs_files_and_skip_older_runs() {
        let home = tempfile::tempdir().unwrap();
        let bench = home.path().join("pkg/ir/group/f.id");
        std::fs::create_dir_all(&bench).unwrap();
        std::fs::write(bench.join("callgrind.f.id.out"), "summary: 1000\n").unwrap();
        std::fs::write(bench.join("callgrind.f.id.t2.out"), "summary: 10\n").unwrap();
        std::fs::write(bench.join("callgrind.f.id.out.old"), "summary: 5\n").unwrap();
        std::fs::write(bench.join("callgrind.f.id.out.base@x"), "summary: 5\n").unwrap();
        let totals = totals(home.path()).unwrap();
        let (ir, file) = &totals["pkg/ir/group/f.id"];
        assert_eq!(*ir, 1010);
        assert_eq!(file, &bench.join("callgrind.f.id.out"));
    }

    #[test]
    fn annotate_output_is_read_per_function() {
        let text = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                 file:function
--------------------------------------------------------------------------------
600,000 (60.00%)  ???:button_service::routes::press::extra_work [/t/ir-1]
  3,100 ( 0.31%)  ???:core::fmt::write [/t/ir-1]
     12           ???:<T as alloc::string::ToString>::to_string
";
        let f = parse_annotate(text);
        assert_eq!(f["???:button_service::routes::press::extra_work"], 600_000);
        assert_eq!(f["???:core::fmt::write"], 3_100);
        assert_eq!(f["???:<T as alloc::string::ToString>::to_string"], 12);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn the_functions_that_grew_most_come_first() {
        let base: BTreeMap<String, u64> = [("a".into(), 100), ("b".into(), 50)].into();
        let head: BTreeMap<String, u64> =
            [("a".into(), 110), ("b".into(), 40), ("c".into(), 500)].into();
        let grew = grown_functions(&base, &head, 5);
        assert_eq!(
            grew.iter().map(|d| d.function.as_str()).collect::<Vec<_>>(),
            ["c", "a"]
        );
        assert_eq!(grew[0].base, 0);
    }

    #[test]
    fn the_report_names_the_regression_and_what_grew() {
        let verdict = IrVerdict {
            compared: vec![
                IrComparison {
                    id: "svc/ir/service/press_handler.presses_100".into(),
                    base: 1_000_000,
                    head: 1_050_000,
                    regressed: true,
                    grew: vec![FunctionDelta {
                        function: "extra_work".into(),
                        base: 0,
                        head: 50_000,
                    }],
                },
                IrComparison {
                    id: "dom/ir/domain/fold.batch_1000".into(),
                    base: 500,
                    head: 500,
                    regressed: false,
                    grew: vec![],
                },
            ],
            skipped: vec!["loadgen:ir".into()],
        };
        assert!(verdict.regressed());
        let md = render(&verdict, 2.0);
        assert!(md.contains(
            "| svc/ir/service/press_handler.presses_100 | 1000000 | 1050000 | 1.0500 | REGRESSED |"
        ));
        assert!(md.contains("| `extra_work` | 0 | 50000 | 50000 |"));
        assert!(md.contains("| dom/ir/domain/fold.batch_1000 | 500 | 500 | 1.0000 | ok |"));
        assert!(md.contains("loadgen:ir: skipped"));
    }

    #[test]
    fn targets_and_env_are_checked_for_shape() {
        assert_eq!(
            parse_target("button-service:ir").unwrap(),
            ("button-service".into(), "ir".into())
        );
        assert!(parse_target("button-service").is_err());
        assert_eq!(parse_env("A=1").unwrap(), ("A".into(), "1".into()));
        assert!(parse_env("=1").is_err());
    }
}
