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
    TooLarge { size: usize, limit: usize },
    #[error("unsupported content type {0:?}; use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
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
}

impl IngestError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::Overloaded => "overloaded",
            IngestError::NotReady => "not_ready",
            IngestError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<StorageError> for IngestError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Overloaded(_) => IngestError::Overloaded,
            StorageError::NotReady => IngestError::NotReady,
            other => IngestError::Unavailable(other.to_string()),
        }
    }
}

/// The OTLP spec's table: RESOURCE_EXHAUSTED for a request too large
/// (permanent for that request), UNAVAILABLE for transient conditions the
/// client should retry.
impl From<IngestError> for tonic::Status {
    fn from(e: IngestError) -> Self {
        let msg = e.to_string();
        match e {
            IngestError::Malformed(_)
            | IngestError::UnsupportedMediaType(_)
            | IngestError::UnsupportedEncoding(_) => tonic::Status::invalid_argument(msg),
            IngestError::TooLarge { .. } => tonic::Status::resource_exhausted(msg),
            IngestError::Overloaded | IngestError::NotReady | IngestError::Unavailable(_) => {
                tonic::Status::unavailable(msg)
            }
        }
    }
}

impl IngestError {
    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            IngestError::Malformed(_) | IngestError::UnsupportedEncoding(_) => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            IngestError::NotReady | IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn grpc_code(&self) -> i32 {
        match self {
            IngestError::Malformed(_)
            | IngestError::UnsupportedMediaType(_)
            | IngestError::UnsupportedEncoding(_) => tonic::Code::InvalidArgument as i32,
            IngestError::TooLarge { .. } => tonic::Code::ResourceExhausted as i32,
            IngestError::Overloaded | IngestError::NotReady | IngestError::Unavailable(_) => {
                tonic::Code::Unavailable as i32
            }
        }
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
        let status = self.err.http_status();
        let st = RpcStatus { code: self.err.grpc_code(), message: self.err.to_string() };
        let mut resp = if self.json {
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"code": st.code, "message": st.message}).to_string(),
            )
                .into_response()
        } else {
            use prost::Message;
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], st.encode_to_vec()).into_response()
        };
        if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}
