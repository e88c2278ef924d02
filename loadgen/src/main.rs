use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = loadgen::Cli::parse();
    loadgen::init_logs(cli.verbose);
    loadgen::run(cli).await
}
