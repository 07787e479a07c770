use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::error::HttpError;
use crate::{Ingest, IngestError};

/// OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(unsupported_signal))
        .fallback(not_found)
        .with_state(ingest)
}

async fn unsupported_signal() -> Response {
    (StatusCode::NOT_FOUND, "Skein stores traces and logs; metrics are not supported\n").into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found; OTLP/HTTP endpoints are POST /v1/traces and POST /v1/logs\n")
        .into_response()
}

/// Whether the body is OTLP/JSON (`true`) or protobuf (`false`).
fn content_kind(headers: &HeaderMap) -> Result<bool, IngestError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match base.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(false),
        "application/json" => Ok(true),
        _ => Err(IngestError::UnsupportedMediaType(ct.to_string())),
    }
}

/// Reads at most `limit` bytes into memory: a bigger body is refused
/// without being buffered whole, and a compressed one is refused as soon as
/// its decompressed size passes the limit (no zip bombs).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, IngestError> {
    let raw: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let size = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(limit + 1);
        // to_bytes fails on a length-limit overrun or a broken stream.
        if std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit")
        {
            IngestError::TooLarge { size, limit }
        } else {
            IngestError::Malformed(format!("cannot read body: {e}"))
        }
    })?;
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let decompress = |r: &mut dyn Read, what: &str| -> Result<Vec<u8>, IngestError> {
        let mut out = Vec::new();
        r.take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| IngestError::Malformed(format!("invalid {what} body: {e}")))?;
        if out.len() > limit {
            return Err(IngestError::TooLarge { size: out.len(), limit });
        }
        Ok(out)
    };
    match enc.as_str() {
        "" | "identity" => Ok(raw.to_vec()),
        "gzip" => decompress(&mut flate2::read::GzDecoder::new(&raw[..]), "gzip"),
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| IngestError::Malformed(format!("invalid zstd body: {e}")))?;
            decompress(&mut d, "zstd")
        }
        other => Err(IngestError::UnsupportedEncoding(other.to_string())),
    }
}

fn ok_response<M: Message + serde::Serialize>(msg: &M, json: bool) -> Response {
    if json {
        match serde_json::to_vec(msg) {
            Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    } else {
        ([(header::CONTENT_TYPE, "application/x-protobuf")], msg.encode_to_vec()).into_response()
    }
}

async fn traces(State(ing): State<Ingest>, headers: HeaderMap, body: Body) -> Response {
    let json = match content_kind(&headers) {
        Ok(j) => j,
        Err(err) => return HttpError { err, json: false }.into_response(),
    };
    let run = async {
        let bytes = read_body(&headers, body, ing.config().max_request_bytes).await?;
        let (req, raw) = if json {
            let r: ExportTraceServiceRequest = serde_json::from_slice(&bytes)
                .map_err(|e| IngestError::Malformed(format!("invalid OTLP/JSON trace request: {e}")))?;
            (r, None)
        } else {
            let r = ExportTraceServiceRequest::decode(&bytes[..])
                .map_err(|e| IngestError::Malformed(format!("invalid OTLP protobuf trace request: {e}")))?;
            (r, Some(bytes))
        };
        ing.export_traces(req, raw).await
    };
    match run.await {
        Ok(partial_success) => ok_response(&ExportTraceServiceResponse { partial_success }, json),
        Err(err) => {
            if matches!(
                err,
                IngestError::Malformed(_)
                    | IngestError::TooLarge { .. }
                    | IngestError::UnsupportedEncoding(_)
            ) {
                ing.metrics.refuse(&err);
            }
            HttpError { err, json }.into_response()
        }
    }
}

async fn logs(State(ing): State<Ingest>, headers: HeaderMap, body: Body) -> Response {
    let json = match content_kind(&headers) {
        Ok(j) => j,
        Err(err) => return HttpError { err, json: false }.into_response(),
    };
    let run = async {
        let bytes = read_body(&headers, body, ing.config().max_request_bytes).await?;
        let (req, raw) = if json {
            let r: ExportLogsServiceRequest = serde_json::from_slice(&bytes)
                .map_err(|e| IngestError::Malformed(format!("invalid OTLP/JSON logs request: {e}")))?;
            (r, None)
        } else {
            let r = ExportLogsServiceRequest::decode(&bytes[..])
                .map_err(|e| IngestError::Malformed(format!("invalid OTLP protobuf logs request: {e}")))?;
            (r, Some(bytes))
        };
        ing.export_logs(req, raw).await
    };
    match run.await {
        Ok(partial_success) => ok_response(&ExportLogsServiceResponse { partial_success }, json),
        Err(err) => {
            if matches!(
                err,
                IngestError::Malformed(_)
                    | IngestError::TooLarge { .. }
                    | IngestError::UnsupportedEncoding(_)
            ) {
                ing.metrics.refuse(&err);
            }
            HttpError { err, json }.into_response()
        }
    }
}
