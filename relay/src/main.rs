use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    button_infra::telemetry::init_logs();
    let config: button_relay::Config =
        button_infra::load().context("loading the relay configuration")?;
    let metrics = button_infra::metrics::install(button_relay::metrics::METRICS)
        .context("installing the metrics recorder")?;
    let shutdown = button_infra::shutdown::on_signals();
    button_relay::run(config, metrics, shutdown).await
}
