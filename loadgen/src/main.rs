use clap::Parser;
use std::process::ExitCode;

// The generator allocates per press (request, answer, bookkeeping); glibc's
// malloc was a fifth of its profile at its ceiling.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = loadgen::Cli::parse();
    loadgen::init_logs(cli.verbose);
    match loadgen::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
