use clap::Parser;

/// Exit codes: 0 no regression (or recorded), 1 regression, 2 error, 3 the
/// base has no such benchmark (nothing to compare, e.g. the commit that
/// adds it, or a stored baseline recorded before it).
fn main() {
    let args = bench_gate::Args::parse();
    let result = if args.record.is_some() {
        bench_gate::record(&args).map(|()| None)
    } else {
        bench_gate::run(&args).map(Some)
    };
    let code = match result {
        Ok(Some(verdict)) if verdict.regressed() => 1,
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
