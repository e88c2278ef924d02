use clap::Parser;

/// Exit codes: 0 no regression, 1 regression, 2 error, 3 the base has no
/// such benchmark (nothing to compare, e.g. the commit that adds it).
fn main() {
    let args = bench_gate::Args::parse();
    let code = match bench_gate::run(&args) {
        Ok(verdict) if verdict.regressed() => 1,
        Ok(_) => 0,
        Err(e) if bench_gate::base_lacks_bench(&e) => {
            eprintln!("bench-gate: nothing to compare: {e:#}");
            3
        }
        Err(e) => {
            eprintln!("bench-gate: {e:#}");
            2
        }
    };
    std::process::exit(code)
}
