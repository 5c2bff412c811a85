//! The ingress's answers to a request it refuses: a small, stable table of error codes, each with
//! one HTTP status. Messages say what is wrong and never contain a secret.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

/// Why a request was refused. The `code()` values are part of the public contract (README).
#[derive(Debug, Clone, thiserror::Error)]
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
    BadSignature(String),
    #[error("bad tonce: {0}")]
    BadTonce(String),
    #[error("temporarily unavailable, retry later: {0}")]
    Unavailable(String),
    #[error("too many parameters: at most {0} are accepted")]
    TooManyParameters(usize),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("no such endpoint; submissions go to POST /api/v2/moka_candidates")]
    NotFound,
    #[error("method not allowed on this path (its Allow header lists what it takes); submissions are POST /api/v2/moka_candidates")]
    MethodNotAllowed,
    /// A request hyper could not parse and answered by itself with this status.
    #[error("{}", unparsable_message(*.0))]
    Unparsable(StatusCode),
}

fn unparsable_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "request head too large (more than 100 header fields, or 64 KiB)"
        }
        StatusCode::URI_TOO_LONG => "request URI too long",
        _ => "malformed HTTP request (request line, header or Content-Length)",
    }
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
            Rejection::TooManyParameters(_) => 1006,
            Rejection::BodyTimeout(_) => 1007,
            Rejection::NotFound => 1008,
            Rejection::MethodNotAllowed => 1009,
            Rejection::Unparsable(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => 1010,
            Rejection::Unparsable(StatusCode::URI_TOO_LONG) => 1011,
            Rejection::Unparsable(_) => 1003,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Unparsable(status) => *status,
            _ => match self.code() {
                1005 => StatusCode::PAYLOAD_TOO_LARGE,
                1007 => StatusCode::REQUEST_TIMEOUT,
                1008 => StatusCode::NOT_FOUND,
                1009 => StatusCode::METHOD_NOT_ALLOWED,
                2001..=2003 => StatusCode::UNAUTHORIZED,
                5001 => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> String {
        let body = ErrorBody { error_code: self.code(), error_message: self.to_string() };
        serde_json::to_string(&body).expect("a struct of a number and a string serializes")
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
            Rejection::TooManyParameters(_) => "too_many_parameters",
            Rejection::BodyTimeout(_) => "body_timeout",
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::Unparsable(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => "head_too_large",
            Rejection::Unparsable(StatusCode::URI_TOO_LONG) => "uri_too_long",
            Rejection::Unparsable(_) => "malformed",
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

/// Every code, for the documentation test and the OpenAPI document: one example of each.
pub fn examples() -> Vec<Rejection> {
    vec![
        Rejection::MissingParameter("payload"),
        Rejection::DuplicateParameter("payload".into()),
        Rejection::Malformed("…".into()),
        Rejection::BadPayload("…".into()),
        Rejection::TooLarge(1),
        Rejection::TooManyParameters(1),
        Rejection::BodyTimeout(1),
        Rejection::NotFound,
        Rejection::MethodNotAllowed,
        Rejection::Unparsable(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Rejection::Unparsable(StatusCode::URI_TOO_LONG),
        Rejection::UnknownKey,
        Rejection::BadSignature("…".into()),
        Rejection::BadTonce("…".into()),
        Rejection::Unavailable("…".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_documents_every_code_with_its_status() {
        let readme = include_str!("../../README.md");
        for r in examples() {
            let row = format!("| {} | {} |", r.code(), r.status().as_u16());
            assert!(readme.contains(&row), "README's error table lacks `{row}` ({r})");
        }
    }
}
