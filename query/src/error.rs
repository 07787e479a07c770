//! The query crate's one error type, and its one mapping to HTTP.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Seconds a client is told to wait (`Retry-After`) before retrying a query
/// refused as not ready or overloaded.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a query failed. Every adapter answers it through [`IntoResponse`],
/// as `{"error": "..."}` with the status each variant documents.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request parameter is malformed or contradicts another (400).
    #[error("{0}")]
    BadRequest(String),
    /// The trace, service or endpoint does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists but not with the request's method (405; the
    /// router adds `Allow`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// No valid bearer token, or no tenant where one is required (401 with
    /// `WWW-Authenticate: Bearer`, RFC 6750 §3).
    #[error("{0}")]
    Unauthorized(String),
    /// A state-changing request that a browser sent on behalf of another
    /// site (403): see `api::native::refuse_cross_site`.
    #[error("{0}")]
    Forbidden(String),
    /// Storage is still replaying its WAL (503 with `Retry-After`).
    #[error("storage is not ready (WAL replay in progress); retry later")]
    NotReady,
    /// Storage refuses work until flushing catches up (503 with
    /// `Retry-After`); the message says what is over its limit.
    #[error("{0}")]
    Overloaded(String),
    /// The query ran longer than `query.timeout` (504); its work was
    /// cancelled.
    #[error(
        "query exceeded the {} deadline (query.timeout) and was cancelled; narrow the time range or add \
         conditions",
        humantime::format_duration(*.0)
    )]
    Deadline(Duration),
    /// `query.max_concurrent` queries were running for all of
    /// `query.queue_timeout` (429 with `Retry-After`).
    #[error("{0}")]
    TooBusy(String),
    /// Storage failed to read (500): an I/O, format or object-store fault.
    #[error(transparent)]
    Storage(skein_storage::Error),
    /// The query's task panicked or was cancelled (500).
    #[error("query task failed: {0}")]
    Internal(String),
}

/// Results of the query crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 400 with `message`, which names the parameter and what is wrong.
    pub fn bad(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    /// The HTTP status of this error: retryable conditions (not ready,
    /// overloaded) are 503 so clients retry; a deadline is 504, the gateway
    /// timeout status (RFC 9110 §15.6.5) rather than "unavailable"; too
    /// many queries at once is 429 (RFC 6585 §4), as Tempo's and Loki's
    /// query frontends answer a full queue.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::NotReady | Error::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::TooBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Storage(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<skein_storage::Error> for Error {
    fn from(e: skein_storage::Error) -> Self {
        use skein_storage::Error as S;
        match e {
            S::NotReady => Error::NotReady,
            S::Overloaded(_) => Error::Overloaded(e.to_string()),
            S::TooManyTenants { .. } => Error::Forbidden(e.to_string()),
            // Storage reports a query its index parser rejects as `Config`.
            S::Config(m) => Error::BadRequest(m),
            // The engine puts its `query.timeout` in (see `Engine::run`).
            S::Cancelled => Error::Deadline(Duration::ZERO),
            other => Error::Storage(other),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "query failed");
        }
        let mut resp = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"skein\""));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_statuses() {
        let s = |e: skein_storage::Error| Error::from(e).status();
        assert_eq!(s(skein_storage::Error::NotReady), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s(skein_storage::Error::Overloaded(10)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s(skein_storage::Error::Config("bad".into())), StatusCode::BAD_REQUEST);
        assert_eq!(s(skein_storage::Error::Corrupt("x".into())), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(Error::Deadline(Duration::from_secs(1)).status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn unavailable_answers_say_when_to_retry() {
        let r = Error::NotReady.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = Error::TooBusy("busy".into()).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = Error::bad("limit: nope").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
