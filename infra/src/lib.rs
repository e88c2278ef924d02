//! Glue shared by `button-service` and `button-reducer`.
//!
//! - [`config`]: typed configuration from defaults, an optional TOML file
//!   and `BUTTON_*` environment variables, with unknown keys refused.
//! - [`kafka`]: librdkafka properties passed through verbatim.
//! - [`telemetry`]: `tracing` logs.
//! - [`metrics`]: the metrics contract and the Prometheus recorder built from it.
//! - [`shutdown`]: one token cancelled by SIGTERM or Ctrl-C.

pub mod config;
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, load};
pub use kafka::KafkaProperties;
pub use tokio_util::sync::CancellationToken;
