//! Logs set-up, once per process.

use tracing_subscriber::EnvFilter;

/// `RUST_LOG` filters (default `info`); `BUTTON_LOG_FORMAT=json` switches to
/// one JSON object per line.
pub fn init_logs() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    // Colours only on a terminal: logs usually land in files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = if std::env::var("BUTTON_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
