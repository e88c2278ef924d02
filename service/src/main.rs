use anyhow::Context;

// Every request allocates (request, headers, answer, the record): glibc's
// malloc and free were a tenth of the service's profile under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    button_infra::telemetry::init_logs();
    let config: button_service::Config =
        button_infra::load().context("loading the service configuration")?;
    let metrics = button_infra::metrics::install(button_service::metrics::METRICS)
        .context("installing the metrics recorder")?;
    let shutdown = button_infra::shutdown::on_signals();
    button_service::run(config, metrics, shutdown).await
}
