use clap::Parser;

/// Exit codes as bench-gate's: 0 no regression, 1 regression, 2 error,
/// 3 the base has none of the benches (nothing to compare).
fn main() {
    let args = bench_gate::ir::IrArgs::parse();
    let code = match bench_gate::ir::run(&args) {
        Ok(verdict) if verdict.regressed() => 1,
        Ok(_) => 0,
        Err(e) if bench_gate::base_lacks_bench(&e) => {
            eprintln!("ir-gate: nothing to compare: {e:#}");
            3
        }
        Err(e) => {
            eprintln!("ir-gate: {e:#}");
            2
        }
    };
    std::process::exit(code)
}
