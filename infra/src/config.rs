//! Configuration: defaults, then the TOML file named by `BUTTON_CONFIG` (if
//! any), then `BUTTON_<KEY>` environment variables. Only the keys the binary
//! knows are read from the environment, so the service and the reducer can
//! share one environment (`BUTTON_DATABASE_URL` serves both).

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {source}")]
    File {
        path: PathBuf,
        source: Box<figment::Error>,
    },
    #[error("configuration: {0}")]
    Invalid(Box<figment::Error>),
}

pub const ENV_PREFIX: &str = "BUTTON_";
pub const FILE_VAR: &str = "BUTTON_CONFIG";

/// Loads `T` from its defaults, the optional file and the environment.
pub fn load<T>() -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let defaults = T::default();
    let keys = keys_of(&defaults);
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = std::env::var_os(FILE_VAR).map(PathBuf::from) {
        if !path.is_file() {
            return Err(ConfigError::File {
                path,
                source: Box::new(figment::Error::from("file not found".to_owned())),
            });
        }
        // Parse the file alone first so its errors name it.
        Figment::from(Serialized::defaults(T::default()))
            .merge(Toml::file_exact(&path))
            .extract::<T>()
            .map_err(|e| ConfigError::File {
                path: path.clone(),
                source: Box::new(e),
            })?;
        figment = figment.merge(Toml::file_exact(&path));
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    figment
        .merge(Env::prefixed(ENV_PREFIX).only(&key_refs))
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

fn keys_of<T: Serialize>(value: &T) -> Vec<String> {
    match figment::value::Value::serialize(value) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// How a press travels from the service's 202 to the reducer (`ingest` in
/// every binary's configuration; see the README's "Three ways in").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Ingest {
    /// The service produces to the topic; 202 after the broker's ack.
    #[default]
    Kafka,
    /// The service inserts into PostgreSQL's `outbox`; relays produce to
    /// the topic.
    Outbox,
    /// The service inserts into PostgreSQL's `presses`; the reducer reads
    /// the table. No broker.
    Direct,
}

impl Ingest {
    pub const ALL: [Ingest; 3] = [Ingest::Kafka, Ingest::Outbox, Ingest::Direct];

    pub fn as_str(self) -> &'static str {
        match self {
            Ingest::Kafka => "kafka",
            Ingest::Outbox => "outbox",
            Ingest::Direct => "direct",
        }
    }

    /// Whether presses pass through the broker.
    pub fn uses_broker(self) -> bool {
        self != Ingest::Direct
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ingest path `{0}` (kafka, outbox, direct)")]
pub struct UnknownIngest(pub String);

impl std::str::FromStr for Ingest {
    type Err = UnknownIngest;

    fn from_str(s: &str) -> Result<Self, UnknownIngest> {
        Ingest::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| UnknownIngest(s.to_owned()))
    }
}

impl std::fmt::Display for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Defaults both binaries share, so a stack started with none set finds
/// itself.
pub mod defaults {
    pub const DATABASE_URL: &str = "postgres://button@127.0.0.1:5432/button";
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
    pub const REDIS_CHANNEL: &str = "state_updates:v1";
    pub const KAFKA_BROKERS: &str = "127.0.0.1:9092";
    pub const TOPIC: &str = "press_button";
}
