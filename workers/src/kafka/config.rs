//! Kafka settings from the environment.
//!
//! `FRAMEGATE_KAFKA_BROKERS` switches Kafka on. Any librdkafka property passes through as
//! `FRAMEGATE_KAFKA_PROP_<NAME>`, the name upper-cased with dots as underscores
//! (`FRAMEGATE_KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL`, `..._SASL_MECHANISMS=SCRAM-SHA-512`,
//! `..._SASL_USERNAME`, `..._SASL_PASSWORD`), so a deployment reaches a secured cluster
//! without code changes. Properties the relay's guarantees rest on (idempotence, acks) are
//! set after the pass-through and cannot be weakened by it.
//!
//! Pass-through values may be secrets (`sasl.password`, `ssl.key.password`, ...), so the
//! config's `Debug` shows every property's name but only the values of properties that
//! cannot hold one ([`is_secret_property`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use framegate_domain::redact::REDACTED;

use rdkafka::ClientConfig;

/// Where pass-through properties come from.
pub const PROPERTY_PREFIX: &str = "FRAMEGATE_KAFKA_PROP_";

#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topics are `<prefix>.<aggregate>.events`.
    pub topic_prefix: String,
    /// Partitions of a topic the relay creates.
    pub partitions: i32,
    /// Replication factor of a topic the relay creates.
    pub replication_factor: i32,
    /// `ce_source` of every message.
    pub source: String,
    /// Events the relay reads and publishes per transaction.
    pub batch_size: i64,
    /// The consumer group provider workers share.
    pub worker_group: String,
    /// librdkafka properties passed through as they are.
    pub properties: BTreeMap<String, String>,
    /// The longest wait between attempts while the broker is unreachable.
    pub max_backoff: Duration,
}

/// Whether a librdkafka property can hold a secret: passwords, secrets, private keys and
/// JAAS or OAuth configurations that embed them.
pub fn is_secret_property(name: &str) -> bool {
    [
        "password",
        "secret",
        "key.pem",
        "jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|part| name.contains(part))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(name, value)| {
                let shown = if is_secret_property(name) {
                    REDACTED
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("source", &self.source)
            .field("batch_size", &self.batch_size)
            .field("worker_group", &self.worker_group)
            .field("properties", &properties)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

impl KafkaConfig {
    /// Reads the settings; `None` when `FRAMEGATE_KAFKA_BROKERS` is unset or empty.
    /// `vars` is the whole environment, searched for pass-through properties.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Option<Self>, String> {
        let Some(brokers) = get("FRAMEGATE_KAFKA_BROKERS").filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let number = |name: &str, default: i64, min: i64| -> Result<i64, String> {
            match get(name) {
                None => Ok(default),
                Some(value) => match value.trim().parse::<i64>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(format!("{name} must be an integer of at least {min}")),
                },
            }
        };
        let topic_prefix =
            get("FRAMEGATE_KAFKA_TOPIC_PREFIX").unwrap_or_else(|| "framegate".into());
        if topic_prefix.is_empty()
            || !topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(
                "FRAMEGATE_KAFKA_TOPIC_PREFIX may hold only letters, digits, '.', '_' and '-'"
                    .into(),
            );
        }
        let properties = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let property = name.strip_prefix(PROPERTY_PREFIX)?;
                Some((property.to_ascii_lowercase().replace('_', "."), value))
            })
            .filter(|(property, _)| !property.is_empty())
            .collect();
        Ok(Some(Self {
            worker_group: get("FRAMEGATE_KAFKA_WORKER_GROUP")
                .unwrap_or_else(|| format!("{topic_prefix}.workers")),
            brokers: brokers.trim().to_owned(),
            partitions: i32::try_from(number("FRAMEGATE_KAFKA_PARTITIONS", 6, 1)?)
                .map_err(|_| "FRAMEGATE_KAFKA_PARTITIONS is too large".to_owned())?,
            replication_factor: i32::try_from(number("FRAMEGATE_KAFKA_REPLICATION_FACTOR", 1, 1)?)
                .map_err(|_| "FRAMEGATE_KAFKA_REPLICATION_FACTOR is too large".to_owned())?,
            source: get("FRAMEGATE_KAFKA_SOURCE").unwrap_or_else(|| "urn:framegate".into()),
            batch_size: number("FRAMEGATE_KAFKA_BATCH_SIZE", 500, 1)?,
            max_backoff: Duration::from_millis(
                number("FRAMEGATE_KAFKA_MAX_BACKOFF_MS", 10_000, 10)?.unsigned_abs(),
            ),
            topic_prefix,
            properties,
        }))
    }

    /// The topic of an aggregate type: `Video` → `framegate.video.events`.
    pub fn topic(&self, aggregate_type: &str) -> String {
        format!(
            "{}.{}.events",
            self.topic_prefix,
            snake_case(aggregate_type)
        )
    }

    /// A client configuration with the brokers and every pass-through property.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        config
    }
}

/// `CreditAccount` → `credit_account`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<KafkaConfig>, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        KafkaConfig::from_lookup(|name| map.get(name).cloned(), map.clone())
    }

    #[test]
    fn kafka_is_off_without_brokers() {
        assert_eq!(config(&[]), Ok(None));
        assert_eq!(config(&[("FRAMEGATE_KAFKA_BROKERS", " ")]), Ok(None));
    }

    #[test]
    fn topics_are_named_after_the_aggregate_in_snake_case() {
        let config = config(&[
            ("FRAMEGATE_KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("FRAMEGATE_KAFKA_TOPIC_PREFIX", "acme.prod"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(
            config.topic("CreditAccount"),
            "acme.prod.credit_account.events"
        );
        assert_eq!(config.topic("Video"), "acme.prod.video.events");
        assert_eq!(config.worker_group, "acme.prod.workers");
    }

    #[test]
    fn librdkafka_properties_pass_through_from_prefixed_variables() {
        let config = config(&[
            ("FRAMEGATE_KAFKA_BROKERS", "k1:9092"),
            ("FRAMEGATE_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL"),
            ("FRAMEGATE_KAFKA_PROP_SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("FRAMEGATE_KAFKA_PARTITIONS", "12"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(config.properties["security.protocol"], "SASL_SSL");
        assert_eq!(config.properties["sasl.mechanisms"], "SCRAM-SHA-512");
        assert_eq!(config.partitions, 12);
        let client = config.client();
        assert_eq!(client.get("bootstrap.servers"), Some("k1:9092"));
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn debug_output_shows_property_names_but_never_secret_values() {
        let config = config(&[
            ("FRAMEGATE_KAFKA_BROKERS", "k1:9092"),
            ("FRAMEGATE_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL"),
            ("FRAMEGATE_KAFKA_PROP_SASL_USERNAME", "relay-user"),
            ("FRAMEGATE_KAFKA_PROP_SASL_PASSWORD", "Zq8Lm3Xv7Kb2Np9Rt4Wy"),
            (
                "FRAMEGATE_KAFKA_PROP_SSL_KEY_PASSWORD",
                "Hd6Fg1Sa5Je0Uq7Ip3Oc",
            ),
        ])
        .expect("valid")
        .expect("on");
        let shown = format!("{config:?}");
        for secret in ["Zq8Lm3Xv7Kb2Np9Rt4Wy", "Hd6Fg1Sa5Je0Uq7Ip3Oc"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("\"sasl.password\": \"[redacted]\""),
            "{shown}"
        );
        assert!(
            shown.contains("SASL_SSL") && shown.contains("relay-user"),
            "{shown}"
        );
        assert_eq!(
            config.client().get("sasl.password"),
            Some("Zq8Lm3Xv7Kb2Np9Rt4Wy")
        );
    }

    #[test]
    fn bad_numbers_and_prefixes_are_refused_with_the_variable_named() {
        let error = config(&[
            ("FRAMEGATE_KAFKA_BROKERS", "k1:9092"),
            ("FRAMEGATE_KAFKA_PARTITIONS", "0"),
        ])
        .expect_err("refused");
        assert!(error.contains("FRAMEGATE_KAFKA_PARTITIONS"), "{error}");
        let error = config(&[
            ("FRAMEGATE_KAFKA_BROKERS", "k1:9092"),
            ("FRAMEGATE_KAFKA_TOPIC_PREFIX", "a b"),
        ])
        .expect_err("refused");
        assert!(error.contains("FRAMEGATE_KAFKA_TOPIC_PREFIX"), "{error}");
    }
}
