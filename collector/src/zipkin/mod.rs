//! The Zipkin v2 receiver: `POST /api/v2/spans` on its own listener
//! (`--zipkin-addr`, 9411 by default, Zipkin's port), as Envoy, Istio and
//! the Zipkin libraries send it: JSON (`application/json`, or any type but
//! protobuf, as Zipkin's own server and the OpenTelemetry Collector read
//! it) or protobuf (`application/x-protobuf`, `zipkin.proto`'s
//! `ListOfSpans`), plain, gzip or zstd.
//!
//! The spans are read and checked ([`wire`]), mapped to OTLP as the
//! OpenTelemetry Collector's Zipkin receiver does ([`translate`]), and take
//! the OTLP path from there ([`Ingest::export`]): the same admission
//! (memory limit, in-flight budget, read timeout), tenancy, content limits
//! and durability. `202 Accepted` (Zipkin's answer) means the spans are in
//! the WAL. A body that does not decode, or any span in it with a missing
//! or invalid ID, time or address, is refused whole with `400` and a
//! plain-text message naming the span and field; nothing of it is stored
//! (the Collector's receiver also refuses the whole request). Other
//! refusals use the OTLP table ([`IngestError`]): 413, 429 and 503 with
//! `Retry-After`, 401, 403.

mod translate;
mod wire;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use skein_storage::tenant::TenantId;

use crate::admission::refusal_reason;
use crate::error::{Refused, RETRY_AFTER_SECS};
use crate::memory::Reservation;
use crate::metrics::{signal_of, OTHER_SIGNAL};
use crate::{Ingest, IngestError, Protocol, Traces};

/// The one path Zipkin v2 reporters post to.
pub const SPANS_PATH: &str = "/api/v2/spans";

/// The Zipkin listener's routes: `POST /api/v2/spans`, behind the same
/// admission as OTLP/HTTP (every request counted with `protocol="zipkin"`).
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route(SPANS_PATH, post(spans))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(ingest.clone(), admit))
        .with_state(ingest)
}

/// A refusal as Zipkin's server and the Collector's receiver answer one:
/// the status, and the reason as plain text.
#[derive(Debug)]
struct ZipkinError(IngestError);

impl IntoResponse for ZipkinError {
    fn into_response(self) -> Response {
        let wire = self.0.wire();
        let mut resp =
            (wire.http, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}\n", self.0))
                .into_response();
        if wire.retryable {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if wire.http == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"skein\""));
        }
        resp.extensions_mut().insert(Refused(self.0.reason()));
        resp
    }
}

impl Ingest {
    /// [`Ingest::refuse_http`] for the Zipkin listener: counted with
    /// `protocol="zipkin"`, answered in plain text.
    pub fn refuse_zipkin(&self, err: IngestError, path: &str) -> Response {
        let signal = signal_of(path);
        self.metrics.received(signal, Protocol::Zipkin);
        self.metrics.refused(signal, Protocol::Zipkin, err.reason());
        ZipkinError(err).into_response()
    }
}

/// Admission and counting, as `admission::http` does for OTLP/HTTP.
async fn admit(State(ing): State<Ingest>, req: Request, next: Next) -> Response {
    let signal = signal_of(req.uri().path());
    ing.metrics.received(signal, Protocol::Zipkin);
    let resp = if signal == OTHER_SIGNAL {
        next.run(req).await
    } else {
        ing.run_admitted(req, next, |err, _| ZipkinError(err).into_response()).await
    };
    if let Some(reason) = refusal_reason(&resp) {
        ing.metrics.refused(signal, Protocol::Zipkin, reason);
    }
    resp
}

async fn not_found(req: Request) -> Response {
    let msg = if req.uri().path() == "/api/v1/spans" {
        "Zipkin v1 is not supported; send Zipkin v2 (JSON or protobuf) to POST /api/v2/spans"
    } else {
        "not found; the Zipkin endpoint is POST /api/v2/spans"
    };
    ZipkinError(IngestError::UnknownPath(msg.into())).into_response()
}

/// Whether the body is protobuf (`application/x-protobuf`); anything else
/// is read as JSON, as Zipkin's server and the Collector do.
fn is_protobuf(headers: &HeaderMap) -> bool {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    matches!(base.as_str(), "application/x-protobuf" | "application/protobuf")
}

/// `POST /api/v2/spans`: `202 Accepted` once the spans are durable.
async fn spans(
    State(ing): State<Ingest>,
    tenant: Option<Extension<TenantId>>,
    reservation: Option<Extension<Arc<Reservation>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = tenant.map(|Extension(t)| t).unwrap_or_default();
    let run = async {
        let res = reservation.as_ref().map(|r| &*r.0);
        let bytes = crate::http_api::read_body(&headers, body, ing.config().max_request_bytes, res).await?;
        let decoded = if is_protobuf(&headers) { wire::from_proto(&bytes) } else { wire::from_json(&bytes) };
        let mut spans = decoded.map_err(|e| IngestError::Malformed(e.0))?;
        drop(bytes);
        // B3's `X-B3-Flags: 1` on the report marks its spans debug (the
        // Collector's receiver reads it the same way).
        if headers.get("x-b3-flags").is_some_and(|v| v.as_bytes() == b"1") {
            spans.iter_mut().for_each(|s| s.debug = true);
        }
        ing.export::<Traces>(&tenant, translate::to_otlp(spans), Protocol::Zipkin).await
    };
    match run.await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(err) => ZipkinError(err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use skein_storage::model::TraceId;
    use tower::ServiceExt as _;

    /// The router over fresh storage, with its ingest path (for its
    /// metrics) and storage (to read back).
    fn app_with() -> (Router, Ingest, Arc<skein_storage::Storage>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            skein_storage::Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
        storage.replay().unwrap();
        let ing = Ingest::new(
            skein_storage::tenant::Tenants::from_storage(storage.clone()),
            crate::CollectorConfig { max_request_bytes: 64 << 10, ..Default::default() },
        );
        (router(ing.clone()), ing, storage, dir)
    }

    fn app() -> (Router, Arc<skein_storage::Storage>, tempfile::TempDir) {
        let (app, _, storage, dir) = app_with();
        (app, storage, dir)
    }

    async fn send(app: &Router, req: http::Request<Body>) -> (StatusCode, HeaderMap, String) {
        let r = app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn post_body(ct: &str, body: impl Into<Body>) -> http::Request<Body> {
        http::Request::post(SPANS_PATH).header(header::CONTENT_TYPE, ct).body(body.into()).unwrap()
    }

    fn json_span(trace: &str, id: &str) -> serde_json::Value {
        let now_us = skein_storage::now_unix_nano() / 1000;
        serde_json::json!({"traceId": trace, "id": id, "name": "get", "kind": "SERVER",
            "timestamp": now_us, "duration": 1500, "localEndpoint": {"serviceName": "svc"}})
    }

    fn trace(storage: &skein_storage::Storage, hex: &str) -> Vec<skein_storage::model::Span> {
        storage.get_trace(&TraceId::parse_hex(hex).unwrap()).unwrap().map(|(s, _)| s).unwrap_or_default()
    }

    #[tokio::test]
    async fn test_json_gzip_and_protobuf_are_stored() {
        use prost::Message as _;
        let (app, storage, _d) = app();
        let body = serde_json::json!([json_span("463ac35c9f6413ad", "a")]).to_string();
        let (st, _, text) = send(&app, post_body("application/json", body)).await;
        assert_eq!((st, text.as_str()), (StatusCode::ACCEPTED, ""));
        let spans = trace(&storage, "463ac35c9f6413ad");
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].service_name(), spans[0].duration_ns()), ("svc", 1_500_000));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, serde_json::json!([json_span("b", "b")]).to_string().as_bytes())
            .unwrap();
        let req = http::Request::post(SPANS_PATH)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(header::CONTENT_ENCODING, "gzip")
            .header("X-B3-Flags", "1")
            .body(Body::from(gz.finish().unwrap()))
            .unwrap();
        assert_eq!(send(&app, req).await.0, StatusCode::ACCEPTED);
        let spans = trace(&storage, "b");
        assert_eq!(spans[0].flags, 1, "X-B3-Flags: 1 marks the report's spans debug");

        let list = wire::ListOfSpans {
            spans: vec![wire::ProtoSpan {
                trace_id: vec![0xc; 16],
                id: vec![0xd; 8],
                name: "proto".into(),
                timestamp: skein_storage::now_unix_nano() / 1000,
                local_endpoint: Some(wire::ProtoEndpoint { service_name: "p".into(), ..Default::default() }),
                ..Default::default()
            }],
        };
        let (st, _, _) = send(&app, post_body("application/x-protobuf", list.encode_to_vec())).await;
        assert_eq!(st, StatusCode::ACCEPTED);
        assert_eq!(trace(&storage, &"0c".repeat(16))[0].name, "proto");

        let (st, _, _) = send(&app, post_body("application/json", "[]")).await;
        assert_eq!(st, StatusCode::ACCEPTED, "an empty list is accepted");
    }

    /// A request with one bad span is refused whole, with the span and
    /// field named, and nothing of it is stored.
    #[tokio::test]
    async fn test_bad_input_is_refused_whole() {
        let (app, storage, _d) = app();
        let good = json_span("1234", "a");
        let cases = [
            (serde_json::json!([good, {"id": "b"}]).to_string(), "spans[1].traceId: missing (required)"),
            (
                serde_json::json!([good, json_span("zz", "b")]).to_string(),
                "spans[1].traceId: \"zz\" is not hex",
            ),
            (serde_json::json!([good, json_span("1234", "")]).to_string(), "spans[1].id: empty"),
            ("[{\"traceId\": \"1234\",".to_string(), "invalid Zipkin JSON v2 body"),
            ("{}".to_string(), "expected a list of spans"),
        ];
        for (body, want) in cases {
            let (st, h, text) = send(&app, post_body("application/json", body.clone())).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
            assert!(text.contains(want), "{body}: {text}");
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
        }
        let (st, _, text) = send(&app, post_body("application/x-protobuf", vec![0x0a, 0x09, 1])).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(text.contains("expected a ListOfSpans"), "{text}");
        let req = http::Request::post(SPANS_PATH)
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from("not gzip"))
            .unwrap();
        assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST);
        assert!(trace(&storage, "1234").is_empty(), "nothing of a refused request is stored");
    }

    #[tokio::test]
    async fn test_paths_sizes_and_counts() {
        let (app, _storage, _d) = app();
        let (st, _, text) = send(&app, post_body("application/json", "[]")).await;
        assert_eq!((st, text.as_str()), (StatusCode::ACCEPTED, ""));
        let req = http::Request::post("/api/v1/spans").body(Body::from("[]")).unwrap();
        let (st, _, text) = send(&app, req).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert!(text.contains("Zipkin v1 is not supported"), "{text}");
        let req = http::Request::get(SPANS_PATH).body(Body::empty()).unwrap();
        assert_eq!(send(&app, req).await.0, StatusCode::METHOD_NOT_ALLOWED);
        let big = format!("[{}]", vec![json_span("1", "2").to_string(); 1000].join(","));
        let req = http::Request::post(SPANS_PATH)
            .header(header::CONTENT_LENGTH, big.len())
            .body(Body::from(big))
            .unwrap();
        let (st, _, text) = send(&app, req).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    }

    #[tokio::test]
    async fn test_refusals_are_counted_as_zipkin() {
        let (app, ing, _s, _d) = app_with();
        let _ = send(&app, post_body("application/json", "nope")).await;
        let _ = send(&app, post_body("application/json", "[]")).await;
        let refused = ing.refuse_zipkin(IngestError::Unauthenticated("no token".into()), SPANS_PATH);
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
        let mut r = prometheus_client::registry::Registry::default();
        ing.metrics.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for series in [
            "skein_received_requests_total{signal=\"spans\",protocol=\"zipkin\"} 3",
            "skein_refused_requests_total{signal=\"spans\",protocol=\"zipkin\",reason=\"malformed\"} 1",
            "skein_refused_requests_total{signal=\"spans\",protocol=\"zipkin\",reason=\"unauthenticated\"} 1",
            "skein_received_requests_total{signal=\"other\",protocol=\"zipkin\"} 0",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    /// During WAL replay the answer is a retryable 503, before the body is
    /// read, through the same admission as OTLP/HTTP.
    #[tokio::test]
    async fn test_not_ready_is_503_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            skein_storage::Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
        let app =
            router(Ingest::new(skein_storage::tenant::Tenants::from_storage(storage), Default::default()));
        let body = serde_json::json!([json_span("1", "2")]).to_string();
        let (st, h, text) = send(&app, post_body("application/json", body)).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert_eq!(h[header::RETRY_AFTER], "1");
        assert!(text.contains("WAL replay"), "{text}");
    }

    #[tokio::test]
    async fn test_overload_is_retryable() {
        let r = ZipkinError(IngestError::Overloaded).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ZipkinError(IngestError::NotReady).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }

    proptest::proptest! {
        /// Whatever the body, the decoders answer with spans or an error,
        /// never a panic; and what they accept maps to OTLP the decoder
        /// takes without rejecting a span.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            for spans in [wire::from_json(&body), wire::from_proto(&body)].into_iter().flatten() {
                let n = spans.len();
                let c = skein_otlp::decode::spans(&translate::to_otlp(spans));
                proptest::prop_assert_eq!((c.records.len(), c.rejected), (n, 0));
            }
        }

        /// JSON-shaped bodies with arbitrary field values: same promise.
        #[test]
        fn arbitrary_json_spans_never_panic(
            trace in "[0-9a-fA-Fx]{0,34}", id in "[0-9a-f]{0,17}", ts in proptest::num::i64::ANY,
            dur in proptest::num::f64::ANY, kind in "[A-Z]{0,9}", tag in ".{0,12}", ann in ".{0,20}",
            shared in proptest::bool::ANY,
        ) {
            let body = serde_json::json!([{"traceId": trace, "id": id, "timestamp": ts, "duration": dur,
                "kind": kind, "shared": shared, "tags": {tag.clone(): tag},
                "annotations": [{"timestamp": 1, "value": ann}],
                "localEndpoint": {"serviceName": "s", "port": ts}}]).to_string();
            if let Ok(spans) = wire::from_json(body.as_bytes()) {
                let c = skein_otlp::decode::spans(&translate::to_otlp(spans));
                proptest::prop_assert_eq!((c.records.len(), c.rejected), (1, 0));
            }
        }
    }
}
