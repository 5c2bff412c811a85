//! The ingress's answers to a request it refuses: a small, stable table of error codes, each with
//! one HTTP status. Messages say what is wrong and never contain a secret.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

/// Why a request was refused. The `code()` values are part of the public contract (README).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("missing parameter `{0}`")]
    MissingParameter(&'static str),
    #[error("parameter `{0}` is given more than once")]
    DuplicateParameter(String),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("bad payload: {0}")]
    BadPayload(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("unknown access_key")]
    UnknownKey,
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    #[error("bad tonce: {0}")]
    BadTonce(String),
    #[error("temporarily unavailable, retry later: {0}")]
    Unavailable(String),
}

impl Rejection {
    /// The stable error code (documented in README.md).
    pub fn code(&self) -> u32 {
        match self {
            Rejection::MissingParameter(_) => 1001,
            Rejection::DuplicateParameter(_) => 1002,
            Rejection::Malformed(_) => 1003,
            Rejection::BadPayload(_) => 1004,
            Rejection::TooLarge(_) => 1005,
            Rejection::UnknownKey => 2001,
            Rejection::BadSignature(_) => 2002,
            Rejection::BadTonce(_) => 2003,
            Rejection::Unavailable(_) => 5001,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.code() {
            1005 => StatusCode::PAYLOAD_TOO_LARGE,
            2001..=2003 => StatusCode::UNAUTHORIZED,
            5001 => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::MissingParameter(_) => "missing_parameter",
            Rejection::DuplicateParameter(_) => "duplicate_parameter",
            Rejection::Malformed(_) => "malformed",
            Rejection::BadPayload(_) => "bad_payload",
            Rejection::TooLarge(_) => "too_large",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::BadTonce(_) => "bad_tonce",
            Rejection::Unavailable(_) => "unavailable",
        }
    }
}

/// The body of every answer, success included (`0`, `"ok"`).
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error_code: u32,
    pub error_message: String,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = ErrorBody { error_code: self.code(), error_message: self.to_string() };
        (self.status(), Json(body)).into_response()
    }
}
