use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use skein_storage::Error as StorageError;

/// Seconds a client is asked to wait before retrying a refused request.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Why a whole request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// The body is not a valid OTLP message (or not valid compressed data).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body, or its decompressed form, is over `max_request_bytes`.
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The body's size in bytes, as declared or as decompressed so far.
        size: usize,
        /// `max_request_bytes`.
        limit: usize,
    },
    /// The HTTP `Content-Type` is neither OTLP protobuf nor OTLP/JSON.
    #[error("unsupported content type {0:?}; use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The HTTP `Content-Encoding` (or gRPC `grpc-encoding`) is not gzip,
    /// zstd or identity.
    #[error("unsupported content encoding {0:?}; use gzip, zstd or none")]
    UnsupportedEncoding(String),
    /// No ingest endpoint at this path (or gRPC method); the message says
    /// which there are.
    #[error("{0}")]
    UnknownPath(String),
    /// The request bodies being read and processed already fill
    /// `max_inflight_bytes`, or the head is over its limit; retryable.
    #[error("over capacity; retry later")]
    Overloaded,
    /// Resident memory is over the soft memory limit; retryable.
    #[error("memory use of {resident} bytes is over the soft limit of {soft} bytes; retry later")]
    MemoryLimit {
        /// Resident memory at the last check, in bytes.
        resident: u64,
        /// The soft limit, in bytes.
        soft: u64,
    },
    /// The body did not arrive within `body_read_timeout`; the request was
    /// cut and nothing stored.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// WAL replay is still running; retryable.
    #[error("starting up (WAL replay in progress); retry later")]
    NotReady,
    /// Storage could not make the data durable (disk full, I/O error);
    /// retryable: nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// No valid bearer token, or no tenant where one is required.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token may not write to the tenant named, or the tenant cannot be
    /// created (`tenants.max_tenants`).
    #[error("permission denied: {0}")]
    Forbidden(String),
}

impl IngestError {
    /// Every value [`reason`](Self::reason) returns, so that each refusal
    /// counter is exported (at zero) before the first refusal.
    pub(crate) const REASONS: [&'static str; 12] = [
        "malformed",
        "too_large",
        "unsupported_media_type",
        "unsupported_encoding",
        "unknown_path",
        "overloaded",
        "memory_limit",
        "body_timeout",
        "not_ready",
        "unavailable",
        "unauthenticated",
        "forbidden",
    ];

    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::UnknownPath(_) => "unknown_path",
            IngestError::Overloaded => "overloaded",
            IngestError::MemoryLimit { .. } => "memory_limit",
            IngestError::BodyTimeout(_) => "body_timeout",
            IngestError::NotReady => "not_ready",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Unauthenticated(_) => "unauthenticated",
            IngestError::Forbidden(_) => "forbidden",
        }
    }
}

/// The refusal reason of an HTTP method an ingest path does not take
/// (answered by the router itself, 405).
pub(crate) const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

/// The refusal reason of an error answer that no other reason describes
/// (one the HTTP or gRPC stack gave itself), so every refusal is counted.
pub(crate) const OTHER: &str = "other";

impl From<StorageError> for IngestError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Overloaded(_) => IngestError::Overloaded,
            StorageError::NotReady => IngestError::NotReady,
            e @ StorageError::TooManyTenants { .. } => IngestError::Forbidden(e.to_string()),
            other => IngestError::Unavailable(other.to_string()),
        }
    }
}

/// How a refusal is answered on each wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireStatus {
    /// The OTLP/gRPC status code.
    pub grpc: tonic::Code,
    /// The OTLP/HTTP response status.
    pub http: StatusCode,
    /// Whether the client should retry; the HTTP answer then carries
    /// `Retry-After`.
    pub retryable: bool,
}

impl IngestError {
    /// The one table from refusal to wire, after the OTLP spec
    /// (<https://opentelemetry.io/docs/specs/otlp/#failures>). For HTTP,
    /// 429, 502, 503 and 504 are retryable and every other 4xx/5xx is not
    /// (<https://opentelemetry.io/docs/specs/otlp/#retryable-response-codes>);
    /// bad data is 400 (<https://opentelemetry.io/docs/specs/otlp/#bad-data>).
    /// For gRPC, every retryable refusal is UNAVAILABLE, which every OTLP
    /// exporter retries, with a `RetryInfo` delay the newer ones honour;
    /// RESOURCE_EXHAUSTED is retried only with a `RetryInfo`, so it is kept
    /// for a request too large, which must not be retried. A body that
    /// stalls is DEADLINE_EXCEEDED / 408 with no retry hint: the spec lets
    /// gRPC clients retry it and not HTTP ones, and a client that stalls
    /// mid-body is seldom waiting for the answer.
    pub(crate) fn wire(&self) -> WireStatus {
        use tonic::Code;
        let (grpc, http, retryable) = match self {
            IngestError::Malformed(_) | IngestError::UnsupportedEncoding(_) => {
                (Code::InvalidArgument, StatusCode::BAD_REQUEST, false)
            }
            IngestError::UnsupportedMediaType(_) => {
                (Code::InvalidArgument, StatusCode::UNSUPPORTED_MEDIA_TYPE, false)
            }
            IngestError::UnknownPath(_) => (Code::Unimplemented, StatusCode::NOT_FOUND, false),
            IngestError::TooLarge { .. } => (Code::ResourceExhausted, StatusCode::PAYLOAD_TOO_LARGE, false),
            IngestError::BodyTimeout(_) => (Code::DeadlineExceeded, StatusCode::REQUEST_TIMEOUT, false),
            IngestError::Overloaded => (Code::Unavailable, StatusCode::TOO_MANY_REQUESTS, true),
            // Not this client's rate but the whole process: 503, the
            // spec's other throttling answer.
            IngestError::MemoryLimit { .. } | IngestError::NotReady | IngestError::Unavailable(_) => {
                (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE, true)
            }
            IngestError::Unauthenticated(_) => (Code::Unauthenticated, StatusCode::UNAUTHORIZED, false),
            IngestError::Forbidden(_) => (Code::PermissionDenied, StatusCode::FORBIDDEN, false),
        };
        WireStatus { grpc, http, retryable }
    }
}

impl From<IngestError> for tonic::Status {
    /// The table's code, with a `google.rpc.RetryInfo` of
    /// [`RETRY_AFTER_SECS`] in the details when the refusal is retryable
    /// (the OTLP spec's throttling rule), and the error itself as source so
    /// that the receivers' counting layer can read its reason.
    fn from(e: IngestError) -> Self {
        use tonic_types::{ErrorDetails, StatusExt as _};
        let wire = e.wire();
        let mut st = if wire.retryable {
            let retry = ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS)));
            tonic::Status::with_error_details(wire.grpc, e.to_string(), retry)
        } else {
            tonic::Status::new(wire.grpc, e.to_string())
        };
        st.set_source(Arc::new(e));
        st
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// An error answered in the request's own encoding, as OTLP/HTTP requires.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub err: IngestError,
    pub json: bool,
}

/// The reason of a refusal, attached to the HTTP response for the
/// counting layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused(pub &'static str);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let wire = self.err.wire();
        let st = RpcStatus { code: wire.grpc as i32, message: self.err.to_string() };
        let mut resp = if self.json {
            (
                wire.http,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"code": st.code, "message": st.message}).to_string(),
            )
                .into_response()
        } else {
            use prost::Message;
            (wire.http, [(header::CONTENT_TYPE, "application/x-protobuf")], st.encode_to_vec())
                .into_response()
        };
        if wire.retryable {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if wire.http == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme it wants.
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"skein\""));
        }
        resp.extensions_mut().insert(Refused(self.err.reason()));
        resp
    }
}

/// The [`IngestError`] in `err`'s source chain, if any (a body error
/// wrapped by the HTTP stack, or the source of a `tonic::Status`).
pub(crate) fn find_ingest_error(err: &(dyn std::error::Error + 'static)) -> Option<IngestError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(ie) = e.downcast_ref::<IngestError>() {
            return Some(ie.clone());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each variant.
    fn every_error() -> [IngestError; 12] {
        [
            IngestError::Malformed("x".into()),
            IngestError::TooLarge { size: 2, limit: 1 },
            IngestError::UnsupportedMediaType("text/plain".into()),
            IngestError::UnsupportedEncoding("br".into()),
            IngestError::UnknownPath("/v2/traces".into()),
            IngestError::Overloaded,
            IngestError::MemoryLimit { resident: 2, soft: 1 },
            IngestError::BodyTimeout(Duration::from_secs(30)),
            IngestError::NotReady,
            IngestError::Unavailable("disk full".into()),
            IngestError::Unauthenticated("no token".into()),
            IngestError::Forbidden("tenant".into()),
        ]
    }

    /// The table agrees with itself and with the OTLP spec's retryable
    /// codes on both wires: a retryable refusal is 429/502/503/504 on HTTP
    /// with `Retry-After`, UNAVAILABLE on gRPC with a `RetryInfo`; no other
    /// refusal is one of those, and none of them carries a retry hint.
    #[test]
    fn test_wire_table_follows_the_spec() {
        use tonic_types::StatusExt as _;
        for e in every_error() {
            let w = e.wire();
            let http_retryable = matches!(w.http.as_u16(), 429 | 502 | 503 | 504);
            assert_eq!(w.retryable, http_retryable, "{e}");
            assert_eq!(w.retryable, w.grpc == tonic::Code::Unavailable, "{e}");
            let resp = HttpError { err: e.clone(), json: true }.into_response();
            assert_eq!(resp.status(), w.http);
            assert_eq!(resp.headers().contains_key(header::RETRY_AFTER), w.retryable, "{e}");
            assert_eq!(resp.extensions().get::<Refused>().unwrap().0, e.reason());
            let st = tonic::Status::from(e.clone());
            assert_eq!(st.code(), w.grpc);
            let retry = st.get_details_retry_info().and_then(|r| r.retry_delay);
            assert_eq!(retry, w.retryable.then_some(Duration::from_secs(RETRY_AFTER_SECS)), "{e}");
            // The counting layer finds the reason through the status.
            assert_eq!(find_ingest_error(&st).unwrap().reason(), e.reason());
        }
    }

    /// Every variant's refusal reason is pre-registered (issue 9 item 10:
    /// every labelled counter present at zero from the start), for each
    /// signal and protocol, with the other series of the receivers.
    #[test]
    fn test_every_reason_is_listed() {
        let all = every_error();
        let reasons: Vec<_> = all.iter().map(IngestError::reason).collect();
        assert_eq!(reasons, IngestError::REASONS);
        let mut r = prometheus_client::registry::Registry::default();
        crate::CollectorMetrics::default().register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for p in ["grpc", "http"] {
            for signal in ["spans", "logs"] {
                for reason in IngestError::REASONS.into_iter().chain([METHOD_NOT_ALLOWED, OTHER]) {
                    let series = format!(
                        "skein_refused_requests_total{{signal=\"{signal}\",protocol=\"{p}\",reason=\"{reason}\"}} 0"
                    );
                    assert!(text.contains(&series), "{series} in {text}");
                }
                for name in ["received_requests", "accepted_records", "stored_records"] {
                    let series = format!("skein_{name}_total{{signal=\"{signal}\",protocol=\"{p}\"}} 0");
                    assert!(text.contains(&series), "{series} in {text}");
                }
                let series = format!(
                    "skein_dropped_records_total{{signal=\"{signal}\",protocol=\"{p}\",reason=\"invalid\"}} 0"
                );
                assert!(text.contains(&series), "{series} in {text}");
            }
            let series = format!(
                "skein_refused_requests_total{{signal=\"other\",protocol=\"{p}\",reason=\"unknown_path\"}} 0"
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    }
}
