//! Configuration: the checked-in `config/default.toml` (embedded in the binary), then an optional
//! file (`--config` or `MOKA_INGEST_CONFIG`), then environment variables. Every value is parsed
//! once, here, into its type (durations, the key ring, the allow list, enums); what cannot be
//! parsed refuses the start, naming the setting, the value and what is allowed.
//!
//! Environment variables: `MOKA_INGEST_<KEY>` for top-level keys and `MOKA_INGEST_<SECTION>__<KEY>`
//! for the others, plus the well-known names in [`WELL_KNOWN_ENV`]; any other `MOKA_INGEST_…` name
//! is refused (see [`env`](mod@env)).
//!
//! Each module gets its own section ([`IngressSettings`], [`WorkerSettings`], …), not the whole.

mod allow;
mod brokers;
pub mod env;
mod keys;

use std::{net::SocketAddr, path::Path, path::PathBuf, time::Duration};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

pub use allow::AllowList;
pub use brokers::BrokerUrls;
pub use keys::{Key, KeyRing};

/// The checked-in defaults, embedded so the binary runs without its source tree.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The secret of the development key in `config/default.toml`; its use is logged as a warning.
pub const DEV_SECRET: &str = "moka-dev-secret-do-not-use-in-production";

/// Most submissions one group message may carry (readers refuse more).
pub const GROUP_MAX_MESSAGES: usize = 10_000;

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
    ("MOKA_INGEST_CONSOLE_LISTEN", "console.listen"),
    ("MOKA_INGEST_CONSOLE_USERS_FILE", "console.users_file"),
];

/// Settings that used to tune something else too, and the setting that now does it alone:
/// `(old, new)`. When an operator set the old one but not the new one, the new one takes the old
/// value (so nothing changes under them) and a deprecation warning says what to set.
const DEPRECATED_FALLBACKS: &[(&str, &str)] = &[
    ("ingress.publish_channels", "worker.publish_channels"),
    ("ingress.confirm_timeout_ms", "worker.confirm_timeout_ms"),
    ("broker.reconnect_min_ms", "retry.db_backoff_min_ms"),
    ("broker.reconnect_max_ms", "retry.db_backoff_max_ms"),
];

/// Everything the service can be told. Each field is documented in `config/default.toml`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RabbitMQ node URLs (one, or the nodes of a cluster); they hold a password, so only their
    /// host and port are ever logged.
    pub amqp_url: BrokerUrls,
    /// PostgreSQL URL; may hold a password, so it is never logged.
    pub database_url: SecretString,
    /// Prefix of every exchange and queue name.
    pub queue_prefix: String,
    /// The access keys (`keys`) with each one's encoding (`key_encodings`).
    pub keys: KeyRing,
    pub log_format: LogFormat,
    pub ingress: IngressSettings,
    pub broker: BrokerSettings,
    pub worker: WorkerSettings,
    pub attachments: AttachmentSettings,
    pub retry: RetrySettings,
    pub limits: LimitSettings,
    pub console: ConsoleSettings,
    /// Deprecated settings in use, one sentence each; logged as warnings once logging is up.
    pub deprecations: Vec<String>,
}

/// The settings as written, before the key ring is built from `keys` and `key_encodings`.
#[derive(Deserialize)]
struct Written {
    amqp_url: BrokerUrls,
    database_url: SecretString,
    queue_prefix: String,
    keys: SecretString,
    key_encodings: String,
    log_format: LogFormat,
    ingress: IngressSettings,
    broker: BrokerSettings,
    worker: WorkerSettings,
    attachments: AttachmentSettings,
    retry: RetrySettings,
    limits: LimitSettings,
    console: ConsoleSettings,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(name: String) -> Result<LogFormat, String> {
        match name.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log_format {other:?} is not allowed: use `text` or `json`")),
        }
    }
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
    /// The delay before each retry (`10s,1m,5m` as written).
    #[serde(deserialize_with = "schedule")]
    pub schedule: Vec<Duration>,
    /// The delay before each retry of a failed download (`retry.download_schedule`).
    #[serde(deserialize_with = "download_schedule")]
    pub download_schedule: Vec<Duration>,
    /// Database write attempts in place before moving a batch to the delay queues.
    pub db_attempts: u32,
    /// First wait between database attempts in place (and while waiting to migrate).
    pub db_backoff_min_ms: u64,
    /// Longest wait between database attempts in place.
    pub db_backoff_max_ms: u64,
}

impl RetrySettings {
    /// The first and the longest wait between database attempts.
    pub fn db_backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.db_backoff_min_ms), Duration::from_millis(self.db_backoff_max_ms))
    }
}

fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    parse_schedule(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn download_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    parse_named_schedule("retry.download_schedule", &String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Parses `10s,1m,500ms`; every delay must be positive.
pub fn parse_schedule(spec: &str) -> Result<Vec<Duration>, String> {
    parse_named_schedule("retry.schedule", spec)
}

/// As [`parse_schedule`], naming the setting `name` in its refusals.
fn parse_named_schedule(name: &str, spec: &str) -> Result<Vec<Duration>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(format!("{name} entry {s:?} is not allowed: delays must be positive")),
            Err(e) => Err(format!(
                "{name} entry {s:?} is not a duration ({e}); allowed: comma-separated durations such as 10s,1m,2h"
            )),
        })
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
    /// Most requests published together as one message (a group).
    pub group_max_messages: usize,
    /// Most payload bytes in one group.
    pub group_max_bytes: usize,
    /// Accepted requests the replay cache remembers at most (the oldest are forgotten first).
    pub replay_cache_entries: usize,
}

impl IngressSettings {
    pub fn tonce_window(&self) -> Duration {
        Duration::from_secs(self.tonce_window_secs)
    }
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

impl BrokerSettings {
    /// The first and the longest wait between reconnects to the broker.
    pub fn reconnect_backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.reconnect_min_ms), Duration::from_millis(self.reconnect_max_ms))
    }
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
    /// Confirm-mode channels of the worker's publisher (retries and dead letters).
    pub publish_channels: usize,
    /// Longest wait for the broker's confirm of a retry or dead letter.
    pub confirm_timeout_ms: u64,
}

/// The operator console (`moka-ingest console`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WrittenConsole")]
pub struct ConsoleSettings {
    /// Listen address of the console's pages (and its /healthz, /metrics).
    pub listen: SocketAddr,
    /// The users file (`name:role:argon2id-hash` lines); without one the console does not start.
    pub users_file: Option<PathBuf>,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (set when the console is served over TLS).
    pub secure_cookie: bool,
}

#[derive(Deserialize)]
struct WrittenConsole {
    listen: SocketAddr,
    users_file: String,
    session_ttl_secs: u64,
    secure_cookie: bool,
}

impl TryFrom<WrittenConsole> for ConsoleSettings {
    type Error = String;

    fn try_from(w: WrittenConsole) -> Result<ConsoleSettings, String> {
        if w.session_ttl_secs == 0 {
            return Err("console.session_ttl_secs must be at least 1".into());
        }
        Ok(ConsoleSettings {
            listen: w.listen,
            users_file: (!w.users_file.trim().is_empty()).then(|| PathBuf::from(w.users_file.trim())),
            session_ttl: Duration::from_secs(w.session_ttl_secs),
            secure_cookie: w.secure_cookie,
        })
    }
}

/// Where attachments are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobBackend {
    /// A local directory (`attachments.dir`).
    Local { dir: PathBuf },
    /// An S3-compatible bucket (`attachments.s3_bucket`); credentials, region and endpoint from
    /// the `AWS_*` variables.
    S3 { bucket: String },
}

/// Attachment downloads and their storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WrittenAttachments")]
pub struct AttachmentSettings {
    /// Download linked files (false: keep the links only).
    pub fetch: bool,
    /// `backend` with `dir` or `s3_bucket`.
    pub backend: BlobBackend,
    /// Hosts, addresses and networks fetched even though they are private (`MOKA_INGEST_ATTACHMENTS_ALLOW`).
    pub allow: AllowList,
    /// Size cap per file, on the bytes actually read.
    pub max_bytes: u64,
    pub connect_timeout_ms: u64,
    /// Longest silence while reading the body.
    pub read_timeout_ms: u64,
    /// Deadline for one file, from connect to last byte.
    pub total_timeout_ms: u64,
    pub max_redirects: usize,
    /// Downloads in flight per worker process.
    pub concurrency: usize,
    /// Downloads in flight per worker process to one host (politeness).
    pub per_host: usize,
}

/// `[attachments]` as written: the backend is a name beside the settings of both backends.
#[derive(Deserialize)]
struct WrittenAttachments {
    fetch: bool,
    backend: String,
    dir: PathBuf,
    s3_bucket: String,
    allow: AllowList,
    max_bytes: u64,
    connect_timeout_ms: u64,
    read_timeout_ms: u64,
    total_timeout_ms: u64,
    max_redirects: usize,
    concurrency: usize,
    per_host: usize,
}

impl TryFrom<WrittenAttachments> for AttachmentSettings {
    type Error = String;

    fn try_from(w: WrittenAttachments) -> Result<AttachmentSettings, String> {
        let backend = match w.backend.as_str() {
            "local" => BlobBackend::Local { dir: w.dir },
            "s3" if w.s3_bucket.is_empty() => {
                return Err("attachments.s3_bucket is required with attachments.backend = \"s3\"".into())
            }
            "s3" => BlobBackend::S3 { bucket: w.s3_bucket },
            other => return Err(format!("attachments.backend {other:?} is not allowed: use `local` or `s3`")),
        };
        for (name, value) in [("concurrency", w.concurrency), ("per_host", w.per_host)] {
            if value == 0 {
                return Err(format!("attachments.{name} must be at least 1"));
            }
        }
        Ok(AttachmentSettings {
            fetch: w.fetch,
            backend,
            allow: w.allow,
            max_bytes: w.max_bytes,
            connect_timeout_ms: w.connect_timeout_ms,
            read_timeout_ms: w.read_timeout_ms,
            total_timeout_ms: w.total_timeout_ms,
            max_redirects: w.max_redirects,
            concurrency: w.concurrency,
            per_host: w.per_host,
        })
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment; refuses an environment
    /// variable with the service's prefix that matches no setting.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        env::check_names(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()))
            .map_err(ConfigError::Invalid)?;
        let mut layers = Figment::new();
        if let Some(path) = file {
            layers = layers.merge(Toml::file_exact(path));
        }
        Self::from_layers(layers.merge(env_provider()))
    }

    /// Loads from an explicit list of overrides on top of the defaults (tests use this so that
    /// they never depend on, or race over, the process environment).
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut layers = Figment::new();
        for (path, value) in overrides {
            layers = layers.merge((*path, *value));
        }
        Self::from_layers(layers)
    }

    /// `layers` over the defaults: what the operator set is what `layers` contains.
    fn from_layers(layers: Figment) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULT_TOML)).merge(layers.clone());
        let mut deprecations = Vec::new();
        for (old, new) in DEPRECATED_FALLBACKS {
            if layers.contains(old) && !layers.contains(new) {
                let value = figment.find_value(old).map_err(Box::new)?;
                figment = figment.merge((*new, value));
                deprecations.push(format!(
                    "{old} also sets {new} (deprecated): set {new} for what it tunes, and {old} for the ingress alone"
                ));
            }
        }
        // Lossy: environment values arrive as text, so "8" must still fill a number field.
        let w: Written = figment.extract_lossy().map_err(Box::new)?;
        let keys = KeyRing::parse(w.keys.expose_secret(), &w.key_encodings)
            .map_err(|e| ConfigError::Invalid(format!("keys: {e}")))?;
        let settings = Settings {
            amqp_url: w.amqp_url,
            database_url: w.database_url,
            queue_prefix: w.queue_prefix,
            keys,
            log_format: w.log_format,
            ingress: w.ingress,
            broker: w.broker,
            worker: w.worker,
            attachments: w.attachments,
            retry: w.retry,
            limits: w.limits,
            console: w.console,
            deprecations,
        };
        settings.validate().map_err(ConfigError::Invalid)?;
        Ok(settings)
    }

    /// The rules between values (each value's own form is checked as it is parsed).
    fn validate(&self) -> Result<(), String> {
        let p = &self.queue_prefix;
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("queue_prefix {p:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"));
        }
        if self.ingress.publish_channels == 0 || self.worker.publish_channels == 0 {
            return Err("ingress.publish_channels and worker.publish_channels must be at least 1".into());
        }
        let i = &self.ingress;
        if i.max_connections == 0 || i.header_timeout_ms == 0 || i.body_timeout_ms == 0 || i.idle_timeout_ms == 0 {
            return Err(
                "ingress.max_connections, header_timeout_ms, body_timeout_ms and idle_timeout_ms must be at least 1"
                    .into(),
            );
        }
        if i.group_max_messages == 0 || i.group_max_bytes == 0 || i.replay_cache_entries == 0 {
            return Err(
                "ingress.group_max_messages, group_max_bytes and replay_cache_entries must be at least 1".into()
            );
        }
        if i.group_max_messages > GROUP_MAX_MESSAGES {
            return Err(format!("ingress.group_max_messages must be at most {GROUP_MAX_MESSAGES}"));
        }
        if self.broker.delivery_limit == 0 {
            return Err("broker.delivery_limit must be at least 1".into());
        }
        if self.worker.batch_size == 0 || self.worker.concurrency == 0 || self.worker.prefetch == 0 {
            return Err("worker.batch_size, concurrency and prefetch must be at least 1".into());
        }
        if self.worker.pool_size < 2 {
            return Err("worker.pool_size must be at least 2".into());
        }
        if self.retry.db_backoff_min_ms == 0 || self.retry.db_backoff_min_ms > self.retry.db_backoff_max_ms {
            return Err("retry.db_backoff_min_ms must be at least 1 and at most retry.db_backoff_max_ms".into());
        }
        self.limits.validate()
    }
}

fn env_provider() -> Figment {
    let well_known = Env::raw().filter_map(|key| {
        WELL_KNOWN_ENV.iter().find(|(name, _)| key.as_str().eq_ignore_ascii_case(name)).map(|(_, path)| (*path).into())
    });
    Figment::new().merge(Env::prefixed(env::PREFIX).split("__").lowercase(true)).merge(well_known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Encoding;

    fn refusal(overrides: &[(&str, &str)]) -> String {
        Settings::with_overrides(overrides).unwrap_err().to_string()
    }

    #[test]
    fn default_config_loads_and_uses_the_dev_key() {
        let s = Settings::with_overrides(&[]).expect("default config is valid");
        assert_eq!(s.queue_prefix, "moka");
        assert_eq!(s.keys.dev_keys(), ["moka-dev".to_string()]);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.attachments.backend, BlobBackend::Local { dir: "./data/attachments".into() });
        assert_eq!(s.retry.schedule[..2], [Duration::from_secs(10), Duration::from_secs(60)]);
        assert!(s.deprecations.is_empty());
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
        assert!(refusal(&[("keys", "")]).contains("no access key"));
        assert!(refusal(&[("queue_prefix", "a b")]).contains("queue_prefix"));
    }

    #[test]
    fn the_key_ring_is_built_once_from_keys_and_key_encodings() {
        let s = Settings::with_overrides(&[("keys", "ak:0123456789abcdef"), ("key_encodings", "ak:plus")]).unwrap();
        assert_eq!(s.keys.key("ak").unwrap().encoding, Encoding::Plus);
        let err = refusal(&[("keys", "ak:0123456789abcdef"), ("key_encodings", "ak:hex")]);
        assert!(err.contains("\"hex\"") && err.contains("raw, plus or form"), "{err}");
    }

    #[test]
    fn each_bad_value_is_refused_naming_the_setting_the_value_and_what_is_allowed() {
        let err = refusal(&[("retry.schedule", "10s,soon")]);
        assert!(err.contains("retry.schedule") && err.contains("\"soon\"") && err.contains("10s,1m,2h"), "{err}");
        let err = refusal(&[("retry.schedule", "10s,0s")]);
        assert!(err.contains("retry.schedule") && err.contains("positive"), "{err}");
        let err = refusal(&[("log_format", "xml")]);
        assert!(err.contains("log_format \"xml\"") && err.contains("`text` or `json`"), "{err}");
        let err = refusal(&[("attachments.backend", "ftp")]);
        assert!(err.contains("attachments.backend \"ftp\"") && err.contains("`local` or `s3`"), "{err}");
        let err = refusal(&[("attachments.backend", "s3")]);
        assert!(err.contains("attachments.s3_bucket is required"), "{err}");
        let err = refusal(&[("attachments.allow", "10.0.0.0/8, bad host!")]);
        assert!(err.contains("attachments.allow entry \"bad host!\"") && err.contains("CIDR"), "{err}");
    }

    #[test]
    fn values_are_typed_once_loaded() {
        let s = Settings::with_overrides(&[
            ("retry.schedule", "500ms, 2s"),
            ("log_format", "json"),
            ("attachments.backend", "s3"),
            ("attachments.s3_bucket", "files"),
            ("attachments.allow", "127.0.0.1, files.internal"),
        ])
        .unwrap();
        assert_eq!(s.retry.schedule, [Duration::from_millis(500), Duration::from_secs(2)]);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.attachments.backend, BlobBackend::S3 { bucket: "files".into() });
        assert!(s.attachments.allow.allows_host("files.internal"));
        assert!(s.attachments.allow.allows_ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn each_section_has_its_own_settings_and_the_old_names_still_work_with_a_warning() {
        let s = Settings::with_overrides(&[
            ("ingress.publish_channels", "6"),
            ("broker.reconnect_min_ms", "50"),
            ("broker.reconnect_max_ms", "300"),
        ])
        .unwrap();
        assert_eq!((s.ingress.publish_channels, s.worker.publish_channels), (6, 6));
        assert_eq!(s.retry.db_backoff(), (Duration::from_millis(50), Duration::from_millis(300)));
        assert_eq!(s.deprecations.len(), 3, "{:?}", s.deprecations);
        assert!(s.deprecations[0].contains("ingress.publish_channels also sets worker.publish_channels"));

        let s = Settings::with_overrides(&[
            ("ingress.publish_channels", "6"),
            ("worker.publish_channels", "3"),
            ("worker.confirm_timeout_ms", "900"),
            ("retry.db_backoff_min_ms", "10"),
        ])
        .unwrap();
        assert_eq!((s.ingress.publish_channels, s.worker.publish_channels), (6, 3));
        assert_eq!((s.ingress.confirm_timeout_ms, s.worker.confirm_timeout_ms), (5000, 900));
        assert_eq!(s.retry.db_backoff(), (Duration::from_millis(10), Duration::from_secs(10)));
        assert_eq!(s.broker.reconnect_backoff(), (Duration::from_millis(200), Duration::from_secs(10)));
        assert!(s.deprecations.is_empty(), "{:?}", s.deprecations);
    }

    #[test]
    fn a_zero_limit_is_refused() {
        let s = Settings::with_overrides(&[]).unwrap();
        assert_eq!(s.limits.batch_max_bytes, 4 * 1024 * 1024);
        let err = Settings::with_overrides(&[("limits.max_entries", "0")]).unwrap_err();
        assert!(err.to_string().contains("limits.max_entries must be at least 1"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_a_refusal() {
        let err = refusal(&[("keys", "ak:tooshortsecret")]);
        assert!(!err.contains("tooshortsecret"), "{err}");
        let s = Settings::with_overrides(&[]).unwrap();
        assert!(!format!("{s:?}").contains(DEV_SECRET));
    }
}
