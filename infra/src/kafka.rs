//! librdkafka properties that pass through verbatim (`linger.ms`,
//! `batch.num.messages`, `compression.type`, ...).
//!
//! In a TOML file they are a table; in the environment one variable holds
//! `key=value` pairs separated by commas:
//! `BUTTON_PRODUCER="linger.ms=5,compression.type=lz4"`.

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    pub fn parse_pairs(text: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(KafkaProperties(map))
    }

    /// Applies the properties over `config`, so they win over the
    /// binary's own defaults.
    pub fn apply(&self, config: &mut ClientConfig) {
        for (k, v) in &self.0 {
            config.set(k, v);
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for KafkaProperties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Bool(bool),
            Int(i64),
            Float(f64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Pairs(String),
            Table(BTreeMap<String, Scalar>),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Pairs(text) => {
                KafkaProperties::parse_pairs(&text).map_err(serde::de::Error::custom)
            }
            Raw::Table(table) => Ok(KafkaProperties(
                table
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Scalar::Bool(b) => b.to_string(),
                            Scalar::Int(i) => i.to_string(),
                            Scalar::Float(f) => f.to_string(),
                            Scalar::Text(s) => s,
                        };
                        (k, v)
                    })
                    .collect(),
            )),
        }
    }
}

/// A producer whose session can be replaced while it is in use: a broker
/// that restarted with records of the old session in flight may refuse
/// every later record of it (tansu 0.6.0 does), and only a new session (a
/// new idempotent producer id) gets through.
pub struct Renewable<C: ClientContext + 'static> {
    config: ClientConfig,
    current: RwLock<FutureProducer<C>>,
    /// When [`Renewable::renew_at_most_every`] last started a session.
    renewed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<C: ClientContext + 'static> Renewable<C> {
    pub fn new(config: ClientConfig, context: C) -> Result<Self, KafkaError> {
        let current = RwLock::new(config.create_with_context(context)?);
        Ok(Renewable {
            config,
            current,
            renewed_at: std::sync::Mutex::new(None),
        })
    }

    /// The session to send with now (a cheap handle).
    pub fn current(&self) -> FutureProducer<C> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts a new session with `context`; sends already under way finish
    /// on the old one. Call from within a Tokio runtime.
    pub fn renew(&self, context: C) -> Result<(), KafkaError> {
        let fresh = self.config.create_with_context(context)?;
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        // Destroying a librdkafka handle can block while it purges.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    /// [`Renewable::renew`], unless a session was started less than
    /// `interval` ago: `Ok(false)` then, and the caller asks again later.
    /// A broker that keeps refusing would otherwise get a new session per
    /// record.
    pub fn renew_at_most_every(
        &self,
        interval: std::time::Duration,
        context: impl FnOnce() -> C,
    ) -> Result<bool, KafkaError> {
        {
            let mut at = self
                .renewed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if at.is_some_and(|t| t.elapsed() < interval) {
                return Ok(false);
            }
            *at = Some(std::time::Instant::now());
        }
        self.renew(context()).map(|()| true)
    }
}

/// How many partitions `topic` has, from a metadata request: proves a
/// broker answers and the topic exists. Blocking; call from a blocking
/// thread.
pub fn topic_partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<usize, String> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic {topic} not in metadata"))?;
    if let Some(err) = found.error() {
        return Err(format!("topic {topic}: {err:?}"));
    }
    Ok(found.partitions().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        props: KafkaProperties,
    }

    #[test]
    fn pairs_and_tables_agree() {
        let from_env =
            KafkaProperties::parse_pairs("linger.ms=5, compression.type=lz4").expect("pairs");
        let from_toml: Holder =
            toml::from_str("[props]\n\"linger.ms\" = 5\n\"compression.type\" = \"lz4\"\n")
                .expect("toml");
        assert_eq!(from_env, from_toml.props);
        assert_eq!(from_env.get("linger.ms"), Some("5"));
    }

    #[test]
    fn a_pair_without_equals_is_named() {
        let err = KafkaProperties::parse_pairs("linger.ms").expect_err("not a pair");
        assert!(err.contains("linger.ms"), "{err}");
    }
}
