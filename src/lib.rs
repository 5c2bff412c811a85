//! moka-ingest: takes candidates pushed by the Moka ATS into a recruiting CRM.
//!
//! The data's way, one module each:
//!
//! - [`ingress`]: `POST /api/v2/moka_candidates`: verify the signed request, publish the raw
//!   submission to RabbitMQ, answer once the broker confirmed it.
//! - [`broker`]: topology, the message [`broker::envelope`], its [`broker::headers`] on the way
//!   back (retries, dead letters), a supervised confirm-mode publisher.
//! - [`config`]: `config/default.toml`, then a file, then environment variables; parsed once
//!   into types. Layers: imports point down only (`tests/layers.rs`).
//! - [`app`]: the roles the binary runs (`ingress`, `worker`, `all`).
//! - [`ops`], [`telemetry`], [`shutdown`]: health and metrics endpoints, logs, signals.
//! - [`signing`]: the canonical request text and its HMAC, shared by [`ingress`], [`sign`] and
//!   [`config`] (each access key's encoding).
//! - [`sign`]: the signing helper for integrators.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod broker;
pub mod config;
pub mod dlq;
pub mod domain;
pub mod ingress;
pub mod ops;
pub mod shutdown;
pub mod sign;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod worker;
