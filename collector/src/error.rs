use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use skein_storage::Error as StorageError;

/// Seconds a client is asked to wait before retrying a refused request.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error)]
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
    /// The HTTP `Content-Encoding` is not gzip, zstd or identity.
    #[error("unsupported content encoding {0:?}; use gzip, zstd or none")]
    UnsupportedEncoding(String),
    /// Too much in flight at once; retryable.
    #[error("over capacity; retry later")]
    Overloaded,
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
    pub(crate) const REASONS: [&'static str; 9] = [
        "malformed",
        "too_large",
        "unsupported_media_type",
        "unsupported_encoding",
        "overloaded",
        "not_ready",
        "unavailable",
        "unauthenticated",
        "forbidden",
    ];

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::Overloaded => "overloaded",
            IngestError::NotReady => "not_ready",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Unauthenticated(_) => "unauthenticated",
            IngestError::Forbidden(_) => "forbidden",
        }
    }
}

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
    /// The one table from refusal to wire, after the OTLP spec's
    /// retryable codes: for gRPC, UNAVAILABLE is retryable, and
    /// RESOURCE_EXHAUSTED only with a `RetryInfo` (which we never send,
    /// so a request too large is not retried); INVALID_ARGUMENT is not
    /// (<https://opentelemetry.io/docs/specs/otlp/#failures>). For HTTP,
    /// 429, 502, 503 and 504 are retryable and every other 4xx/5xx is not
    /// (<https://opentelemetry.io/docs/specs/otlp/#retryable-response-codes>);
    /// bad data is 400 (<https://opentelemetry.io/docs/specs/otlp/#bad-data>).
    pub(crate) fn wire(&self) -> WireStatus {
        use tonic::Code;
        let (grpc, http, retryable) = match self {
            IngestError::Malformed(_) | IngestError::UnsupportedEncoding(_) => {
                (Code::InvalidArgument, StatusCode::BAD_REQUEST, false)
            }
            IngestError::UnsupportedMediaType(_) => {
                (Code::InvalidArgument, StatusCode::UNSUPPORTED_MEDIA_TYPE, false)
            }
            IngestError::TooLarge { .. } => (Code::ResourceExhausted, StatusCode::PAYLOAD_TOO_LARGE, false),
            IngestError::Overloaded => (Code::Unavailable, StatusCode::TOO_MANY_REQUESTS, true),
            IngestError::NotReady | IngestError::Unavailable(_) => {
                (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE, true)
            }
            IngestError::Unauthenticated(_) => (Code::Unauthenticated, StatusCode::UNAUTHORIZED, false),
            IngestError::Forbidden(_) => (Code::PermissionDenied, StatusCode::FORBIDDEN, false),
        };
        WireStatus { grpc, http, retryable }
    }
}

impl From<IngestError> for tonic::Status {
    fn from(e: IngestError) -> Self {
        tonic::Status::new(e.wire().grpc, e.to_string())
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
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each variant.
    fn every_error() -> [IngestError; 9] {
        [
            IngestError::Malformed("x".into()),
            IngestError::TooLarge { size: 2, limit: 1 },
            IngestError::UnsupportedMediaType("text/plain".into()),
            IngestError::UnsupportedEncoding("br".into()),
            IngestError::Overloaded,
            IngestError::NotReady,
            IngestError::Unavailable("disk full".into()),
            IngestError::Unauthenticated("no token".into()),
            IngestError::Forbidden("tenant".into()),
        ]
    }

    /// The table agrees with itself and with the OTLP spec's retryable
    /// codes on both wires.
    #[test]
    fn test_wire_table_follows_the_spec() {
        let all = every_error();
        for e in all {
            let w = e.wire();
            let http_retryable = matches!(w.http.as_u16(), 429 | 502 | 503 | 504);
            assert_eq!(w.retryable, http_retryable, "{e}");
            assert_eq!(w.retryable, w.grpc == tonic::Code::Unavailable, "{e}");
            assert_eq!(tonic::Status::from(e).code(), w.grpc);
        }
    }

    /// Every variant's refusal reason is pre-registered (issue 9 item 10:
    /// every labelled counter present at zero from the start).
    #[test]
    fn test_every_reason_is_listed() {
        let all = every_error();
        let reasons: Vec<_> = all.iter().map(IngestError::reason).collect();
        assert_eq!(reasons, IngestError::REASONS);
        let mut r = prometheus_client::registry::Registry::default();
        crate::CollectorMetrics::default().register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for reason in IngestError::REASONS {
            assert!(
                text.contains(&format!("skein_refused_requests_total{{reason=\"{reason}\"}} 0")),
                "{text}"
            );
        }
        for signal in ["spans", "logs"] {
            assert!(
                text.contains(&format!("skein_received_records_total{{signal=\"{signal}\"}} 0")),
                "{text}"
            );
            assert!(
                text.contains(&format!("skein_rejected_records_total{{signal=\"{signal}\"}} 0")),
                "{text}"
            );
        }
    }
}
