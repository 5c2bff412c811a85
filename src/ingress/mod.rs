//! The signed HTTP ingress: `POST /api/v2/moka_candidates` verifies the request and hands the raw
//! submission to RabbitMQ, answering success only once the broker confirmed it.
//!
//! It stays minimal on purpose: parameters ([`params`]), signature ([`crate::signing`]), tonce
//! window, replay cache ([`replay`]), a shallow payload check (a JSON object with a string `id`),
//! publish, grouped with the requests that arrive meanwhile ([`group`]). Everything deeper is the
//! worker's job. Connections are served by [`serve`], which
//! bounds how many there are and how long each may wait.
//!
//! Nothing costly happens before the signature is verified: parsing the parameters is linear in
//! the body (and their number capped), the HMAC is linear, and the payload is parsed only after.

pub mod catalog;
pub mod error;
pub mod group;
pub mod openapi;
pub mod params;
pub mod replay;
pub mod serve;
pub use crate::signing as signature;

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, request::Parts, HeaderValue},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    backoff::Backoff,
    broker::{
        envelope::Meta,
        publisher::{Publisher, PublisherOptions},
        topology::Topology,
    },
    config::{IngressSettings, KeyRing, Settings},
    health,
};
use error::Rejection;
use params::Params;
use replay::{Claim, ReplayCache};

/// Response header set to `true` when the request repeated one already accepted (not enqueued again).
pub const REPLAY_HEADER: &str = "x-moka-replay";
/// Response header carrying the envelope's message id of an accepted request.
pub const MESSAGE_ID_HEADER: &str = "x-moka-message-id";
/// Request id: taken from the request when it has a sane one, otherwise generated.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A tonce above this is taken to be in milliseconds (as seconds it would be past the year 5000).
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// What the handler needs, shared by all requests.
pub struct Ingress {
    keys: KeyRing,
    replay: ReplayCache,
    publisher: Arc<Publisher>,
    grouper: Arc<group::Grouper>,
    window_secs: i64,
    body_limit: usize,
    body_timeout: Duration,
    /// Metric handles resolved once: the hot path should not hash label sets per request.
    accepted: metrics::Counter,
    replayed: metrics::Counter,
    publish_seconds: metrics::Histogram,
}

/// The success answer, written once.
const OK_BODY: &str = r#"{"error_code":0,"error_message":"ok"}"#;

/// A request that was answered "ok".
enum Accepted {
    Enqueued { message_id: Uuid, moka_id: String },
    Replayed,
}

impl Ingress {
    /// The handler's state, from the `ingress.*` section and the key ring.
    pub fn new(
        settings: &IngressSettings,
        keys: KeyRing,
        publisher: Arc<Publisher>,
        grouper: Arc<group::Grouper>,
    ) -> Arc<Ingress> {
        Arc::new(Ingress {
            keys,
            replay: ReplayCache::new(settings.replay_cache_entries),
            publisher,
            grouper,
            window_secs: i64::try_from(settings.tonce_window_secs).unwrap_or(i64::MAX),
            body_limit: settings.body_limit_bytes,
            body_timeout: Duration::from_millis(settings.body_timeout_ms),
            accepted: metrics::counter!("moka_ingress_requests_total", "outcome" => "accepted"),
            replayed: metrics::counter!("moka_ingress_requests_total", "outcome" => "replayed"),
            publish_seconds: metrics::histogram!("moka_ingress_publish_seconds"),
        })
    }

    /// The routes: the submission endpoint plus /healthz, /readyz, /metrics; anything else is
    /// answered in the same JSON shape (404, 405).
    pub fn router(self: &Arc<Self>) -> Router {
        let publisher = self.publisher.clone();
        let ready: health::Readiness =
            Arc::new(move || if publisher.is_ready() { Ok(()) } else { Err("broker not connected".into()) });
        Router::new()
            .route(signature::PATH, post(submit).fallback(|| async { refuse(Rejection::MethodNotAllowed) }))
            .with_state(self.clone())
            .route("/openapi.json", get(openapi::serve))
            .merge(health::router(ready))
            // After the merge, so that /healthz, /readyz, /metrics refuse in JSON too.
            .method_not_allowed_fallback(|| async { refuse(Rejection::MethodNotAllowed) })
            .fallback(|| async { refuse(Rejection::NotFound) })
    }

    /// Reads the body: at most `body_limit` bytes of it, within `body_timeout`.
    async fn read_body(&self, body: Body) -> Result<Bytes, Rejection> {
        let read = Limited::new(body, self.body_limit).collect();
        match tokio::time::timeout(self.body_timeout, read).await {
            Err(_) => Err(Rejection::BodyTimeout(self.body_timeout.as_millis() as u64)),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Rejection::TooLarge(self.body_limit)),
            Ok(Err(e)) => Err(Rejection::Malformed(format!("the request body could not be read: {e}"))),
        }
    }

    async fn accept(&self, parts: &Parts, body: Body) -> Result<Accepted, Rejection> {
        let body = self.read_body(body).await?;
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let params = Params::parse(parts.uri.query(), content_type, &body)?;
        let payload = params.required("payload")?;
        let access_key = params.required("access_key")?;
        let tonce = params.required("tonce")?;
        let signature = params.required("signature")?;

        let key = self.keys.key(access_key).ok_or(Rejection::UnknownKey)?;
        let sig = signature::decode_signature(signature)
            .ok_or_else(|| Rejection::BadSignature("it must be 64 hexadecimal digits".into()))?;
        let pairs = params.pairs();
        if !signature::verify(&key.macs, &pairs, &sig, key.encoding) {
            let declared = key.encoding.name();
            return Err(Rejection::BadSignature(
                match signature::other_encoding_matching(&key.macs, &pairs, &sig, key.encoding) {
                    // Tells an operator moving a key to one encoding what its client really uses.
                    Some(used) => format!(
                        "it was made with the `{}` encoding, but access key {access_key:?} is declared `{declared}` (key_encodings)",
                        used.name()
                    ),
                    None => format!("it does not match the request (access key {access_key:?} signs `{declared}`)"),
                },
            ));
        }
        let now = Utc::now();
        let tonce = parse_tonce(tonce, now.timestamp(), self.window_secs)?;
        let flight = match self.replay.claim(sig, now.timestamp()) {
            Claim::Accepted => return Ok(Accepted::Replayed),
            // A copy sent while the first is being published gets the first one's answer.
            Claim::Copy(outcome) => return replay::wait(outcome).await.map(|()| Accepted::Replayed),
            Claim::First(flight) => flight,
        };
        let published = self.publish(access_key, tonce, payload, &sig, now).await;
        let outcome = published.as_ref().map(|_| ()).map_err(Clone::clone);
        flight.finish(&outcome, tonce + self.window_secs);
        published
    }

    /// Checks the payload's id and publishes the submission (with those that arrive meanwhile),
    /// confirmed.
    async fn publish(
        &self,
        access_key: &str,
        tonce: i64,
        payload: &str,
        signature: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Result<Accepted, Rejection> {
        let moka_id = payload_id(payload)?;
        let meta = Meta::new(access_key, tonce, &moka_id, now).signed(signature);
        let message_id = meta.message_id;
        let started = std::time::Instant::now();
        self.grouper.publish(meta, payload.to_owned()).await.map_err(Rejection::Unavailable)?;
        self.publish_seconds.record(started.elapsed().as_secs_f64());
        Ok(Accepted::Enqueued { message_id, moka_id })
    }
}

/// The endpoint. Every log line of a request carries its `request_id`, also returned in the
/// `x-request-id` header: the client's when it sent a sane one, otherwise the message id of an
/// accepted request (one id from the answer to the queue) or a fresh UUIDv7. No span per request:
/// on the hot path a span costs more than the one line a request may log.
async fn submit(State(app): State<Arc<Ingress>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let given = parts
        .headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned();
    let outcome = app.accept(&parts, body).await;
    let (mut response, request_id) = match outcome {
        Ok(Accepted::Enqueued { message_id, moka_id }) => {
            app.accepted.increment(1);
            let id = uuid_header(message_id);
            let request_id = given.unwrap_or_else(|| id.clone());
            // Debug, not info: at thousands per second the metrics count these; rejections and
            // failures, which someone must look at, are logged at info and above.
            tracing::debug!(request_id = text(&request_id), %message_id, %moka_id, "submission enqueued");
            let mut response = ok_response();
            response.headers_mut().insert(MESSAGE_ID_HEADER, id);
            (response, request_id)
        }
        Ok(Accepted::Replayed) => {
            app.replayed.increment(1);
            let request_id = given.unwrap_or_else(|| uuid_header(Uuid::now_v7()));
            info!(request_id = text(&request_id), "repeat of an accepted request: answered ok, not enqueued again");
            let mut response = ok_response();
            response.headers_mut().insert(REPLAY_HEADER, HeaderValue::from_static("true"));
            (response, request_id)
        }
        Err(rejection) => {
            metrics::counter!("moka_ingress_requests_total", "outcome" => rejection.kind()).increment(1);
            let request_id = given.unwrap_or_else(|| uuid_header(Uuid::now_v7()));
            let (rid, code) = (text(&request_id), rejection.code());
            match rejection {
                Rejection::Unavailable(_) => warn!(request_id = rid, code, reason = %rejection, "request not enqueued"),
                _ => info!(request_id = rid, code, reason = %rejection, "request rejected"),
            }
            (rejection.into_response(), request_id)
        }
    };
    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    response
}

fn uuid_header(id: Uuid) -> HeaderValue {
    let mut buf = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)).expect("a uuid is ascii")
}

fn text(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or_default()
}

/// A refusal outside the submission handler (unknown path, wrong method), counted and answered
/// in the same shape.
pub(crate) fn refuse(rejection: Rejection) -> Response {
    metrics::counter!("moka_ingress_requests_total", "outcome" => rejection.kind()).increment(1);
    let mut response = rejection.into_response();
    response.headers_mut().insert(REQUEST_ID_HEADER, uuid_header(Uuid::now_v7()));
    response
}

fn ok_response() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OK_BODY).into_response()
}

/// Whole seconds, or milliseconds when the value is clearly milliseconds; within ±`window` of `now`.
fn parse_tonce(text: &str, now: i64, window: i64) -> Result<i64, Rejection> {
    let raw: i64 = text
        .trim()
        .parse()
        .map_err(|_| Rejection::BadTonce(format!("{text:?} is not an integer number of seconds")))?;
    let secs = if raw.abs() >= MILLIS_THRESHOLD { raw / 1000 } else { raw };
    let skew = secs - now;
    if skew.abs() > window {
        return Err(Rejection::BadTonce(format!(
            "it is {skew:+} s from the server clock; the allowed window is ±{window} s"
        )));
    }
    Ok(secs)
}

/// The candidate id: the payload must be a JSON object with a non-empty string `id`. The rest of
/// the payload is only checked to be well-formed JSON, without building it in memory.
fn payload_id(payload: &str) -> Result<String, Rejection> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        id: Option<&'a serde_json::value::RawValue>,
    }
    if !payload.trim_start().starts_with('{') {
        return Err(Rejection::BadPayload("payload must be a JSON object".into()));
    }
    let head: Head =
        serde_json::from_str(payload).map_err(|e| Rejection::BadPayload(format!("payload is not valid JSON: {e}")))?;
    let id = match head.id.map(|raw| serde_json::from_str::<String>(raw.get())) {
        Some(Ok(id)) => id,
        Some(Err(_)) => return Err(Rejection::BadPayload("payload.id must be a string".into())),
        None => return Err(Rejection::BadPayload("payload.id is missing".into())),
    };
    if id.trim().is_empty() {
        return Err(Rejection::BadPayload("payload.id is empty".into()));
    }
    Ok(id)
}

/// A running ingress, for `moka-ingest ingress`, `all` and the tests.
pub struct Handle {
    pub addr: std::net::SocketAddr,
    pub publisher: Arc<Publisher>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The ingress, ready to run: its address, its publisher, and the future that serves it.
pub struct Prepared<F> {
    pub addr: std::net::SocketAddr,
    pub publisher: Arc<Publisher>,
    pub serve: F,
}

/// Prepares the ingress on `listener` until `shutdown`: starts the broker supervisor and returns
/// the server future. On shutdown the server stops accepting, lets the requests in flight finish
/// (their publishes confirmed or failed), then closes the broker connection.
pub fn prepare(
    settings: &Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<Prepared<impl std::future::Future<Output = std::io::Result<()>> + Send + 'static>> {
    let addr = listener.local_addr()?;
    catalog::register();
    let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
    let (min, max) = settings.broker.reconnect_backoff();
    let options = PublisherOptions {
        channels: settings.ingress.publish_channels,
        confirm_timeout: Duration::from_millis(settings.ingress.confirm_timeout_ms),
        reconnect: Backoff::new(min, max),
    };
    let publisher = Publisher::new(&settings.amqp_url, topology, "moka-ingest ingress", options);
    let broker_stop = CancellationToken::new();
    let supervisor = tokio::spawn(publisher.clone().run(broker_stop.clone()));
    let i = &settings.ingress;
    let limits = group::Limits { max_messages: i.group_max_messages, max_bytes: i.group_max_bytes };
    // One publishing loop per channel: each has one group in flight, and the next gathers.
    let grouper = group::Grouper::start(publisher.clone(), limits, i.publish_channels, broker_stop.clone());
    let router = Ingress::new(&settings.ingress, settings.keys.clone(), publisher.clone(), grouper).router();
    let limits = serve::Limits {
        max_connections: i.max_connections,
        header_timeout: Duration::from_millis(i.header_timeout_ms),
        idle_timeout: Duration::from_millis(i.idle_timeout_ms),
    };
    let serve = async move {
        serve::serve(listener, router, limits, shutdown).await;
        info!("ingress stopped accepting; requests in flight are done");
        broker_stop.cancel();
        let _ = supervisor.await;
        Ok(())
    };
    Ok(Prepared { addr, publisher, serve })
}

/// Starts the ingress in a task of its own (tests, and `all` beside the worker).
pub fn spawn(settings: &Settings, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<Handle> {
    let Prepared { addr, publisher, serve } = prepare(settings, listener, shutdown)?;
    Ok(Handle { addr, publisher, task: tokio::spawn(serve) })
}

/// Waits at most `timeout` for the broker, so a caller can tell "started" from "not yet ready".
pub async fn wait_ready(handle: &Handle, timeout: Duration) -> bool {
    handle.publisher.wait_ready(timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonce_window_and_units() {
        let now = 1_764_400_000;
        assert_eq!(parse_tonce("1764400000", now, 300).unwrap(), now);
        assert_eq!(parse_tonce("1764400299", now, 300).unwrap(), now + 299);
        assert_eq!(parse_tonce("1764400300", now, 300).unwrap(), now + 300);
        assert_eq!(parse_tonce("1764400000123", now, 300).unwrap(), now, "milliseconds");
        for bad in ["1764400301", "1764399699", "abc", "", "1.5"] {
            assert_eq!(parse_tonce(bad, now, 300).unwrap_err().code(), 2003, "{bad}");
        }
    }

    #[test]
    fn payload_must_be_an_object_with_a_string_id() {
        assert_eq!(payload_id(r#" {"id":"abc","x":[1,2]}"#).unwrap(), "abc");
        let cases = [
            (r#"["id"]"#, "JSON object"),
            (r#"{"id":1}"#, "must be a string"),
            (r#"{"id":"  "}"#, "empty"),
            (r#"{"name":"x"}"#, "missing"),
            (r#"{"id":"x""#, "not valid JSON"),
            ("", "JSON object"),
        ];
        for (payload, want) in cases {
            let err = payload_id(payload).unwrap_err();
            assert_eq!(err.code(), 1004);
            assert!(err.to_string().contains(want), "{payload}: {err}");
        }
    }
}
