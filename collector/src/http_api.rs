use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use prost::Message;
use skein_storage::tenant::TenantId;

use crate::error::{find_ingest_error, HttpError};
use crate::memory::Reservation;
use crate::{admission, Ingest, IngestError, Logs, Protocol, Signal, Traces};

/// OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, and the
/// Elasticsearch bulk API under `/es` ([`crate::es_bulk`]), behind the
/// admission and counting layer (`admission::http`), which sees every
/// request, unknown paths and methods included.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/v1/traces", post(export::<Traces>))
        .route("/v1/logs", post(export::<Logs>))
        .route("/v1/metrics", post(unsupported_signal))
        .merge(crate::es_bulk::routes())
        .route("/loki/api/v1/push", post(crate::loki::push))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(ingest.clone(), admission::http))
        .with_state(ingest)
}

async fn unsupported_signal(headers: HeaderMap) -> Response {
    let err = IngestError::UnknownPath("Skein stores traces and logs; metrics are not supported".into());
    HttpError { err, json: is_json(&headers) }.into_response()
}

async fn not_found(method: http::Method, uri: http::Uri, headers: HeaderMap) -> Response {
    if crate::es_bulk::is_es_path(uri.path()) {
        return crate::es_bulk::unknown(&method, uri.path());
    }
    let err = IngestError::UnknownPath(
        "not found; OTLP/HTTP endpoints are POST /v1/traces and POST /v1/logs".into(),
    );
    HttpError { err, json: is_json(&headers) }.into_response()
}

/// Whether the body is OTLP/JSON (`true`) or protobuf (`false`).
pub(crate) fn content_kind(headers: &HeaderMap) -> Result<bool, IngestError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match base.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(false),
        "application/json" => Ok(true),
        _ => Err(IngestError::UnsupportedMediaType(ct.to_string())),
    }
}

/// Whether an answer to this request is written as JSON (OTLP/HTTP answers
/// errors in the request's encoding; protobuf when it has none).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    content_kind(headers).unwrap_or(false)
}

/// Reads at most `limit` bytes into memory: a bigger body is refused
/// without being buffered whole, and a compressed one is refused as soon as
/// its decompressed size passes the limit (no zip bombs). The body's own
/// admission (reservation as it streams, read timeout) is in
/// `admission::AdmittedBody`; the decompressed bytes grow `reservation`
/// as they come.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    reservation: Option<&Reservation>,
) -> Result<Vec<u8>, IngestError> {
    let raw: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if let Some(err) = find_ingest_error(&e) {
            return err;
        }
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
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = r
                .read(&mut chunk)
                .map_err(|e| IngestError::Malformed(format!("invalid {what} body: {e}")))?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > limit {
                return Err(IngestError::TooLarge { size: out.len() + n, limit });
            }
            out.extend_from_slice(&chunk[..n]);
            if let Some(res) = reservation {
                res.grow_to((raw.len() + out.len()) as u64)?;
            }
        }
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

/// Decodes a body as protobuf or OTLP/JSON (every form the proto3 JSON
/// mapping allows; see [`skein_otlp::json`]).
fn decode<M: skein_otlp::json::OtlpJson>(bytes: &[u8], json: bool, what: &str) -> Result<M, IngestError> {
    if json {
        skein_otlp::json::decode(bytes)
            .map_err(|e| IngestError::Malformed(format!("invalid OTLP/JSON {what} request: {e}")))
    } else {
        M::decode(bytes)
            .map_err(|e| IngestError::Malformed(format!("invalid OTLP protobuf {what} request: {e}")))
    }
}

/// `POST /v1/traces` and `POST /v1/logs`: an export of signal `S`,
/// answered in the request's encoding. Admitted before this runs (see
/// `admission`), which also counts the answer.
async fn export<S: Signal>(
    State(ing): State<Ingest>,
    tenant: Option<Extension<TenantId>>,
    reservation: Option<Extension<Arc<Reservation>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = tenant.map(|Extension(t)| t).unwrap_or_default();
    let json = match content_kind(&headers) {
        Ok(j) => j,
        Err(err) => return HttpError { err, json: false }.into_response(),
    };
    let run = async {
        let res = reservation.as_ref().map(|r| &*r.0);
        let bytes = read_body(&headers, body, ing.config().max_request_bytes, res).await?;
        let req = decode::<S::Request>(&bytes, json, S::REQUEST)?;
        drop(bytes);
        let partial_success = ing.export::<S>(&tenant, req, Protocol::Http).await?;
        Ok(S::response(partial_success))
    };
    match run.await {
        Ok(resp) => ok_response(&resp, json),
        Err(err) => HttpError { err, json }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use skein_storage::model::AttrValue;

    /// The OTLP/JSON encoding as the spec describes it: hex IDs, camelCase
    /// keys, 64-bit integers as strings or numbers, enums as integers.
    #[test]
    fn otlp_json_as_the_spec_writes_it() {
        let body = r#"{"resourceSpans":[{"resource":{"attributes":[
              {"key":"service.name","value":{"stringValue":"my.service"}}]},
            "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},
              "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
                "parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span",
                "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
                "kind":2,"status":{"code":2,"message":"boom"},
                "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"m","value":{"intValue":7}},
                  {"key":"d","value":{"doubleValue":1.5}},{"key":"b","value":{"boolValue":true}},
                  {"key":"a","value":{"arrayValue":{"values":[{"stringValue":"x"}]}}}],
                "unknownFutureField":{"ignored":true}}]}]}]}"#;
        let req: ExportTraceServiceRequest = decode(body.as_bytes(), true, "trace").unwrap();
        let c = skein_otlp::decode::spans(&req);
        assert_eq!(c.rejected, 0);
        let s = &c.records[0];
        assert_eq!(s.trace_id.to_hex(), "5b8efff798038103d269b633813fc60c");
        assert_eq!(s.parent_span_id.unwrap().to_hex(), "eee19b7ec3c1b173");
        assert_eq!(s.service_name(), "my.service");
        assert_eq!((s.kind, s.status_code), (2, 2));
        assert_eq!(s.duration_ns(), 1_000_000_000);
        assert_eq!(s.attributes[0].1, AttrValue::Int(42));
        assert_eq!(s.attributes[1].1, AttrValue::Int(7));
        assert_eq!(s.attributes[2].1, AttrValue::Double(1.5));
        assert_eq!(s.attributes[3].1, AttrValue::Bool(true));
        assert_eq!(s.attributes[4].1, AttrValue::Array(vec![AttrValue::Str("x".into())]));
    }

    async fn post(app: &Router, path: &str, body: &serde_json::Value) -> (StatusCode, String) {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let req = http::Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Issue 9 item 2: the forms the proto3 JSON mapping allows, sent to
    /// `POST /v1/traces` and `/v1/logs`, are stored with their values;
    /// bad input is still a 400 that names the field.
    #[tokio::test]
    async fn lenient_otlp_json_through_the_router() {
        use serde_json::json;
        use skein_storage::model::TraceId;
        let dir = tempfile::tempdir().unwrap();
        let storage =
            skein_storage::Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
        storage.replay().unwrap();
        let app = router(Ingest::new(
            skein_storage::tenant::Tenants::from_storage(storage.clone()),
            crate::CollectorConfig::default(),
        ));
        let now = skein_storage::now_unix_nano();
        let trace = "5b8efff798038103d269b633813fc60c";
        let spans = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "lenient"}}],
                         "entityRefs": [{"type": "service", "idKeys": ["service.name"]}]},
            "scopeSpans": [{"scope": {"name": "lib"}, "spans": [{
                "traceId": trace.to_uppercase(), "spanId": "EEE19B7EC3C1B174",
                "name": "GET /", "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": now.to_string(), "end_time_unix_nano": now + 1000,
                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                "attributes": [
                    {"key": "d", "value": {"doubleValue": "2.5"}},
                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                    {"key": "inf", "value": {"doubleValue": "Infinity"}},
                    {"key": "ninf", "value": {"doubleValue": "-Infinity"}},
                    {"key": "a", "value": {"arrayValue": {}}},
                    {"key": "m", "value": {"kvlistValue": {}}},
                    {"key": "i", "value": {"intValue": "-3"}}]}]}]}]});
        let (status, body) = post(&app, "/v1/traces", &spans).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let logs = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
            "timeUnixNano": now.to_string(), "severityNumber": "SEVERITY_NUMBER_WARN",
            "severityText": "WARN", "body": {"stringValue": "slow"},
            "traceId": trace, "spanId": "eee19b7ec3c1b174"}]}]}]});
        let (status, body) = post(&app, "/v1/logs", &logs).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let (spans, logs) = storage.get_trace(&TraceId::parse_hex(trace).unwrap()).unwrap().unwrap();
        let s = &spans[0];
        assert_eq!((s.kind, s.status_code, s.duration_ns()), (2, 2, 1000));
        assert_eq!(s.service_name(), "lenient");
        let attr = |k: &str| s.attributes.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(attr("d"), AttrValue::Double(2.5));
        assert!(matches!(attr("nan"), AttrValue::Double(d) if d.is_nan()));
        assert_eq!(attr("inf"), AttrValue::Double(f64::INFINITY));
        assert_eq!(attr("ninf"), AttrValue::Double(f64::NEG_INFINITY));
        assert_eq!(attr("a"), AttrValue::Array(vec![]));
        assert_eq!(attr("m"), AttrValue::KvList(vec![]));
        assert_eq!(attr("i"), AttrValue::Int(-3));
        assert_eq!(logs.len(), 1);
        assert_eq!((logs[0].severity_number, logs[0].body.clone()), (13, AttrValue::Str("slow".into())));

        let bad = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": true}]}]}]});
        let (status, body) = post(&app, "/v1/traces", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("resourceSpans[0].scopeSpans[0].spans[0].kind"), "{body}");
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(content_kind(&h).is_err());
        h.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        assert!(content_kind(&h).unwrap());
        h.insert(header::CONTENT_TYPE, "application/x-protobuf".parse().unwrap());
        assert!(!content_kind(&h).unwrap());
    }
}
