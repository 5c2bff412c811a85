//! Configuration: the checked-in `config/default.toml` (embedded in the binary), then an optional
//! file (`--config` or `MOKA_INGEST_CONFIG`), then environment variables, then validation.
//!
//! Environment variables: `MOKA_INGEST_<KEY>` for top-level keys and `MOKA_INGEST_<SECTION>__<KEY>`
//! for the others, plus the well-known names in [`WELL_KNOWN_ENV`].

use std::{collections::HashMap, net::SocketAddr, path::Path, time::Duration};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use crate::signing::Encoding;

/// The checked-in defaults, embedded so the binary runs without its source tree.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The secret of the development key in `config/default.toml`; its use is logged as a warning.
pub const DEV_SECRET: &str = "moka-dev-secret-do-not-use-in-production";

/// Shortest secret accepted: an HMAC key shorter than this is guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// Environment variables that operators know by name, and the setting each one sets.
pub const WELL_KNOWN_ENV: &[(&str, &str)] = &[
    ("AMQP_URL", "amqp_url"),
    ("DATABASE_URL", "database_url"),
    ("MOKA_INGEST_LISTEN", "ingress.listen"),
    ("MOKA_INGEST_WORKER_LISTEN", "worker.listen"),
    ("MOKA_INGEST_QUEUE_PREFIX", "queue_prefix"),
    ("MOKA_INGEST_KEYS", "keys"),
    ("MOKA_INGEST_ATTACHMENTS_DIR", "attachments.dir"),
    ("MOKA_INGEST_ATTACHMENTS_ALLOW", "attachments.allow"),
];

/// Everything the service can be told. Each field is documented in `config/default.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// RabbitMQ URL; holds a password, so it is never logged.
    pub amqp_url: SecretString,
    /// PostgreSQL URL; may hold a password, so it is never logged.
    pub database_url: SecretString,
    /// Prefix of every exchange and queue name.
    pub queue_prefix: String,
    /// `access_key:secret` pairs, comma-separated.
    pub keys: SecretString,
    /// `access_key:encoding` pairs (`raw`, `plus`, `form`), comma-separated; unlisted keys sign `raw`.
    pub key_encodings: String,
    /// `text` or `json`.
    pub log_format: String,
    pub ingress: IngressSettings,
    pub broker: BrokerSettings,
    pub worker: WorkerSettings,
    pub attachments: AttachmentSettings,
    pub retry: RetrySettings,
    pub limits: LimitSettings,
}

/// Caps on what one payload may hold, and on the bytes a batch holds (see
/// [`crate::domain::limits`] for what happens beyond each cap).
#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    /// Longest `id`, in bytes; longer is a validation failure.
    pub id_max_bytes: usize,
    /// Most entries in `educationInfo`, and in `experienceInfo`; more is a validation failure.
    pub max_entries: usize,
    /// Most links in `offerAttachmentUrls`; more is a validation failure.
    pub max_links: usize,
    /// Longest URL, in bytes; a longer one is dropped with a warning.
    pub url_max_bytes: usize,
    /// Longest text field, in characters; longer is cut, with a warning.
    pub text_max_chars: usize,
    /// Most warnings stored per candidate, plus one that counts the rest.
    pub max_warnings: usize,
    /// Message bodies a lane collects into one batch, in bytes: the batch stops growing once
    /// their sum reaches this (it always takes at least one message).
    pub batch_max_bytes: usize,
}

impl LimitSettings {
    /// The payload caps, for the domain's parser.
    pub fn payload(&self) -> crate::domain::limits::Limits {
        crate::domain::limits::Limits {
            id_max_bytes: self.id_max_bytes,
            max_entries: self.max_entries,
            max_links: self.max_links,
            url_max_bytes: self.url_max_bytes,
            text_max_chars: self.text_max_chars,
            max_warnings: self.max_warnings,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let l = self;
        let all = [
            ("id_max_bytes", l.id_max_bytes),
            ("max_entries", l.max_entries),
            ("max_links", l.max_links),
            ("url_max_bytes", l.url_max_bytes),
            ("text_max_chars", l.text_max_chars),
            ("max_warnings", l.max_warnings),
            ("batch_max_bytes", l.batch_max_bytes),
        ];
        match all.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("limits.{name} must be at least 1")),
            None => Ok(()),
        }
    }
}

/// Retries of transient failures.
#[derive(Debug, Clone, Deserialize)]
pub struct RetrySettings {
    /// Comma-separated delays (`10s,1m,5m`), one per retry.
    pub schedule: String,
    /// Database write attempts in place before moving a batch to the delay queues.
    pub db_attempts: u32,
}

impl RetrySettings {
    /// The parsed schedule (validated at load).
    pub fn delays(&self) -> Vec<Duration> {
        parse_schedule(&self.schedule).expect("validated at load")
    }
}

/// Parses `10s,1m,500ms`.
pub fn parse_schedule(spec: &str) -> Result<Vec<Duration>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| humantime::parse_duration(s).map_err(|e| format!("retry.schedule entry {s:?}: {e}")))
        .collect()
}

/// The HTTP receiver.
#[derive(Debug, Clone, Deserialize)]
pub struct IngressSettings {
    /// Listen address of the ingress (and its /metrics, /healthz, /readyz).
    pub listen: SocketAddr,
    /// Largest request body; larger gets 413.
    pub body_limit_bytes: usize,
    /// Allowed distance between a request's tonce and the server clock, in seconds.
    pub tonce_window_secs: u64,
    /// Longest wait for a publisher confirm before answering 503.
    pub confirm_timeout_ms: u64,
    /// Number of confirm-mode channels shared by all requests.
    pub publish_channels: usize,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// From a request's first byte (or the connection's start) to the end of its head.
    pub header_timeout_ms: u64,
    /// From the end of the head to the end of the body.
    pub body_timeout_ms: u64,
    /// A keep-alive connection waiting for its next request.
    pub idle_timeout_ms: u64,
}

/// Broker topology and connection behaviour.
#[derive(Debug, Clone, Deserialize)]
pub struct BrokerSettings {
    /// `x-delivery-limit` of the submission queue.
    pub delivery_limit: u32,
    /// First reconnect delay.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_ms: u64,
}

/// The consumer that writes to PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Listen address of the worker's /metrics, /healthz, /readyz.
    pub listen: SocketAddr,
    /// Messages prepared concurrently.
    pub concurrency: usize,
    /// Broker prefetch (unacknowledged deliveries in hand).
    pub prefetch: u16,
    /// Messages per database transaction.
    pub batch_size: usize,
    /// Longest wait for a partial batch.
    pub batch_wait_ms: u64,
    /// PostgreSQL pool size.
    pub pool_size: usize,
    /// Run migrations at start.
    pub migrate_on_start: bool,
    /// Longest a batch may take before its messages are returned to the queue.
    pub batch_timeout_ms: u64,
}

/// Attachment downloads and their storage.
#[derive(Debug, Clone, Deserialize)]
pub struct AttachmentSettings {
    /// Download linked files (false: keep the links only).
    pub fetch: bool,
    /// `local` or `s3`.
    pub backend: String,
    /// Local backend root (`MOKA_INGEST_ATTACHMENTS_DIR`).
    pub dir: std::path::PathBuf,
    /// S3 backend bucket; credentials, region and endpoint from the `AWS_*` variables.
    pub s3_bucket: String,
    /// Hosts, addresses and networks fetched even though they are private (`MOKA_INGEST_ATTACHMENTS_ALLOW`).
    pub allow: String,
    /// Size cap per file, on the bytes actually read.
    pub max_bytes: u64,
    pub connect_timeout_ms: u64,
    /// Longest silence while reading the body.
    pub read_timeout_ms: u64,
    /// Deadline for one file, from connect to last byte.
    pub total_timeout_ms: u64,
    pub max_redirects: usize,
    /// Downloads at once per batch.
    pub concurrency: usize,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(env_provider()))
    }

    /// Loads from an explicit list of overrides on top of the defaults (tests use this so that
    /// they never depend on, or race over, the process environment).
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULT_TOML));
        for (path, value) in overrides {
            figment = figment.merge((*path, *value));
        }
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        // Lossy: environment values arrive as text, so "8" must still fill a number field.
        let settings: Settings = figment.extract_lossy().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        KeyRing::parse(self.keys.expose_secret(), &self.key_encodings).map_err(ConfigError::Invalid)?;
        let p = &self.queue_prefix;
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return invalid(format!("queue_prefix {p:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"));
        }
        if self.ingress.publish_channels == 0 {
            return invalid("ingress.publish_channels must be at least 1".into());
        }
        let i = &self.ingress;
        if i.max_connections == 0 || i.header_timeout_ms == 0 || i.body_timeout_ms == 0 || i.idle_timeout_ms == 0 {
            return invalid(
                "ingress.max_connections, header_timeout_ms, body_timeout_ms and idle_timeout_ms must be at least 1"
                    .into(),
            );
        }
        if self.broker.delivery_limit == 0 {
            return invalid("broker.delivery_limit must be at least 1".into());
        }
        if self.worker.batch_size == 0 || self.worker.concurrency == 0 || self.worker.prefetch == 0 {
            return invalid("worker.batch_size, concurrency and prefetch must be at least 1".into());
        }
        crate::worker::attachments::guard::AllowList::parse(&self.attachments.allow).map_err(ConfigError::Invalid)?;
        if !matches!(self.attachments.backend.as_str(), "local" | "s3") {
            return invalid(format!("attachments.backend {:?} must be `local` or `s3`", self.attachments.backend));
        }
        if self.attachments.backend == "s3" && self.attachments.s3_bucket.is_empty() {
            return invalid("attachments.s3_bucket is required with the s3 backend".into());
        }
        if parse_schedule(&self.retry.schedule).map_err(ConfigError::Invalid)?.iter().any(|d| d.is_zero()) {
            return invalid("retry.schedule delays must be positive".into());
        }
        if self.worker.pool_size < 2 {
            return invalid("worker.pool_size must be at least 2".into());
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The parsed access keys (validated at load, so this cannot fail afterwards).
    pub fn key_ring(&self) -> KeyRing {
        KeyRing::parse(self.keys.expose_secret(), &self.key_encodings).expect("validated at load")
    }

    pub fn tonce_window(&self) -> Duration {
        Duration::from_secs(self.ingress.tonce_window_secs)
    }
}

fn env_provider() -> Figment {
    let well_known = Env::raw().filter_map(|key| {
        WELL_KNOWN_ENV.iter().find(|(name, _)| key.as_str().eq_ignore_ascii_case(name)).map(|(_, path)| (*path).into())
    });
    Figment::new().merge(Env::prefixed("MOKA_INGEST_").split("__").lowercase(true)).merge(well_known)
}

/// One access key: its HMAC state per secret (pre-keyed, so each request only clones it) and the
/// one encoding its client signs with.
#[derive(Clone)]
pub struct Key {
    pub macs: Vec<Hmac<Sha256>>,
    pub encoding: Encoding,
}

/// The access keys.
#[derive(Clone)]
pub struct KeyRing {
    keys: HashMap<String, Key>,
    /// Access keys that still use the development secret.
    dev_keys: Vec<String>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, only which access keys exist.
        f.debug_struct("KeyRing").field("access_keys", &self.keys.keys()).finish()
    }
}

impl KeyRing {
    /// Parses `ak:secret,ak:secret` and the encodings `ak:form,…`. Refuses an empty list, secrets
    /// shorter than 16 bytes, and an encoding for an unknown key or of an unknown name.
    pub fn parse(spec: &str, encodings: &str) -> Result<KeyRing, String> {
        let mut keys: HashMap<String, Key> = HashMap::new();
        let mut dev_keys = Vec::new();
        for (i, pair) in spec.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let Some((ak, secret)) = pair.split_once(':') else {
                return Err(format!("key #{} must be written access_key:secret (no ':' found)", i + 1));
            };
            let ak = ak.trim();
            if ak.is_empty() {
                return Err(format!("key #{} has an empty access key", i + 1));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "the secret of access key {ak:?} is {} bytes; at least {MIN_SECRET_LEN} are required",
                    secret.len()
                ));
            }
            if secret == DEV_SECRET {
                dev_keys.push(ak.to_string());
            }
            let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
            keys.entry(ak.to_string())
                .or_insert_with(|| Key { macs: Vec::new(), encoding: Encoding::default() })
                .macs
                .push(mac);
        }
        if keys.is_empty() {
            return Err("no access key is configured (set MOKA_INGEST_KEYS=access_key:secret)".into());
        }
        for pair in encodings.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (ak, name) = pair
                .split_once(':')
                .ok_or_else(|| format!("key_encodings entry {pair:?} must be written access_key:encoding"))?;
            let encoding = Encoding::from_name(name.trim()).ok_or_else(|| {
                format!("key_encodings: encoding {:?} of access key {ak:?} must be raw, plus or form", name.trim())
            })?;
            keys.get_mut(ak.trim())
                .ok_or_else(|| format!("key_encodings names access key {ak:?}, which is not in `keys`"))?
                .encoding = encoding;
        }
        Ok(KeyRing { keys, dev_keys })
    }

    /// An access key's secrets (two during a rotation) and encoding, or `None` if unknown.
    pub fn key(&self, access_key: &str) -> Option<&Key> {
        self.keys.get(access_key)
    }

    /// Access keys still configured with the development secret.
    pub fn dev_keys(&self) -> &[String] {
        &self.dev_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_loads_and_uses_the_dev_key() {
        let s = Settings::with_overrides(&[]).expect("default config is valid");
        assert_eq!(s.queue_prefix, "moka");
        assert_eq!(s.key_ring().dev_keys(), ["moka-dev".to_string()]);
    }

    #[test]
    fn key_ring_rejects_short_secret_and_empty_list() {
        let err = KeyRing::parse("ak:short", "").unwrap_err();
        assert!(err.contains("at least 16"), "{err}");
        assert!(!err.contains("short\""), "secret must not be echoed: {err}");
        assert!(KeyRing::parse(" , ", "").unwrap_err().contains("no access key"));
        assert!(KeyRing::parse("novalue", "").unwrap_err().contains("access_key:secret"));
    }

    #[test]
    fn key_ring_keeps_both_secrets_of_a_rotation() {
        let ring = KeyRing::parse("ak:0123456789abcdef,ak:fedcba9876543210,bk:0123456789abcdefX", "").unwrap();
        assert_eq!(ring.key("ak").unwrap().macs.len(), 2);
        assert_eq!(ring.key("bk").unwrap().macs.len(), 1);
        assert!(ring.key("ck").is_none());
    }

    #[test]
    fn each_key_has_one_encoding_raw_unless_declared() {
        let ring = KeyRing::parse("ak:0123456789abcdef,bk:0123456789abcdef", "bk:form").unwrap();
        assert_eq!(ring.key("ak").unwrap().encoding, Encoding::Raw);
        assert_eq!(ring.key("bk").unwrap().encoding, Encoding::Form);
        let err = KeyRing::parse("ak:0123456789abcdef", "ak:base64").unwrap_err();
        assert!(err.contains("raw, plus or form"), "{err}");
        let err = KeyRing::parse("ak:0123456789abcdef", "zk:form").unwrap_err();
        assert!(err.contains("not in `keys`"), "{err}");
    }

    #[test]
    fn overrides_are_validated() {
        let err = Settings::with_overrides(&[("keys", "")]).unwrap_err();
        assert!(err.to_string().contains("no access key"), "{err}");
        let err = Settings::with_overrides(&[("queue_prefix", "a b")]).unwrap_err();
        assert!(err.to_string().contains("queue_prefix"), "{err}");
    }

    #[test]
    fn the_default_limits_are_the_domains_and_a_zero_limit_is_refused() {
        let s = Settings::with_overrides(&[]).unwrap();
        assert_eq!(s.limits.payload(), crate::domain::limits::Limits::default());
        assert_eq!(s.limits.batch_max_bytes, 4 * 1024 * 1024);
        let err = Settings::with_overrides(&[("limits.max_entries", "0")]).unwrap_err();
        assert!(err.to_string().contains("limits.max_entries must be at least 1"), "{err}");
    }
}
