//! moka-ingest: takes candidates pushed by the Moka ATS into a recruiting CRM.
//!
//! The data's way, one module each:
//!
//! - [`ingress`]: `POST /api/v2/moka_candidates`: verify the signed request, publish the raw
//!   submission to RabbitMQ, answer once the broker confirmed it.
//! - [`broker`]: topology, the message [`broker::envelope`], its [`broker::headers`] on the way
//!   back (retries, dead letters), a supervised confirm-mode publisher.
//! - [`worker`]: consume, validate and normalize ([`domain`]), write in batches ([`store`]), retry
//!   what fails for a moment, dead-letter what cannot succeed; then, off the candidate's path,
//!   download the attachments through a queue of their own.
//! - [`domain`]: pure rules: the payload reader, limits, candidate, dates, degrees, fields.
//! - [`store`]: PostgreSQL (pool, migrations, the batch writer, attachment rows) and blob storage.
//! - [`dlq`]: the dead-letter queue as operators see it, and the `dlq` commands.
//! - [`console`]: the operator console in the browser: the pipeline, dead letters (replay, purge,
//!   park, through [`dlq`]), a candidate's whole story, the audit of operator actions.
//! - [`backoff`]: the one exponential backoff with jitter of every reconnect and retry loop.
//! - [`config`]: `config/default.toml`, then a file, then environment variables; parsed once
//!   into types. Layers: imports point down only (`tests/layers.rs`).
//! - [`app`]: the roles the binary runs (`ingress`, `worker`, `all`).
//! - [`health`], [`telemetry`], [`shutdown`]: the /healthz, /readyz and /metrics endpoints, logs, signals.
//! - [`signing`]: the canonical request text and its HMAC, shared by [`ingress`], [`sign`] and
//!   [`config`] (each access key's encoding).
//! - [`sign`]: the signing helper for integrators.

pub mod app;
pub mod backoff;
pub mod broker;
pub mod config;
pub mod console;
pub mod dlq;
pub mod domain;
pub mod health;
pub mod ingress;
pub mod shutdown;
pub mod sign;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod worker;
