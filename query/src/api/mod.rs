//! The HTTP adapters over the [`Engine`](crate::Engine): each parses its
//! API's parameters into the engine's input types and renders the engine's
//! results in its API's JSON. No adapter reads storage itself.

pub mod jaeger;
pub mod native;
pub mod tempo;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::Error;
use crate::ApiState;

/// Every API (native, Jaeger, Tempo) plus `/healthz`, `/readyz`,
/// `/metrics`; any other `/api/...` path is a 404 in the native error shape.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(native::routes())
        .merge(jaeger::routes())
        .merge(tempo::routes())
        .route("/api/{*rest}", get(api_not_found).post(api_not_found))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn api_not_found() -> Error {
    Error::not_found("no such API endpoint; see /api/v1/openapi.json")
}

async fn readyz(axum::extract::State(st): axum::extract::State<ApiState>) -> Response {
    if st.storage.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replaying WAL\n").into_response()
    }
}

async fn metrics(axum::extract::State(st): axum::extract::State<ApiState>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &st.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use serde_json::Value;
    use skein_storage::model::TraceId;
    use tower::ServiceExt as _;

    use super::*;
    use crate::engine::testutil::{append, engine, storage, three_traces};
    use crate::engine::traceql::TraceQl;
    use crate::engine::TraceQuery;
    use crate::QueryConfig;

    fn app_with(s: &Arc<skein_storage::Storage>, cfg: QueryConfig) -> Router {
        router(ApiState { storage: s.clone(), registry: Arc::new(Default::default()), cfg })
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
        let r = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Native, Jaeger and Tempo render one engine result: the same traces
    /// in the same order, each adapter in its own shape.
    #[tokio::test]
    async fn every_adapter_renders_one_engine_result() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let q = TraceQuery {
            traceql: Some(TraceQl::parse(r#"{ resource.service.name = "cart" }"#).unwrap()),
            limit: 10,
            keep_matched: 3,
            with_trace: true,
            ..Default::default()
        };
        let r = engine(&s).search_traces(q).await.unwrap();
        let want = [TraceId([3; 16]).to_hex(), TraceId([1; 16]).to_hex()];
        let native = native::search_json(&r);
        let native: Vec<_> =
            native["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].clone()).collect();
        let tempo = tempo::search_json(&r);
        let tempo_ids: Vec<_> =
            tempo["traces"].as_array().unwrap().iter().map(|t| t["traceID"].clone()).collect();
        let jaeger: Vec<_> = jaeger::search_json(&r).iter().map(|t| t["traceID"].clone()).collect();
        for ids in [&native, &tempo_ids, &jaeger] {
            assert_eq!(ids, &want, "{ids:?}");
        }
        assert_eq!(tempo["traces"][1]["spanSet"]["matched"], 1);
        assert_eq!(tempo["traces"][1]["rootServiceName"], "frontend");
        assert_eq!(tempo["metrics"]["inspectedTraces"], 2);
    }

    #[tokio::test]
    async fn each_adapter_answers_through_the_router() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let app = app_with(&s, QueryConfig::default());
        let (st, v) = get(&app, "/api/v1/services").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["services"][0], serde_json::json!({"name": "cart", "span_count": 2, "error_count": 1}));
        let (st, v) = get(&app, "/api/v1/search/traces?service=cart&status=error").await;
        assert_eq!((st, v["traces"][0]["trace_id"].as_str()), (StatusCode::OK, Some(&*"01".repeat(16))));
        let (st, v) = get(&app, &format!("/api/v1/traces/{}", "03".repeat(16))).await;
        assert_eq!((st, v["spans"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)));

        let (st, v) = get(&app, "/jaeger/api/services").await;
        assert_eq!((st, &v["data"]), (StatusCode::OK, &serde_json::json!(["cart", "db", "frontend"])));
        let (st, v) = get(&app, "/jaeger/api/traces?service=db").await;
        assert_eq!((st, v["data"][0]["spans"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)));

        let (st, v) = get(&app, "/tempo/api/search?tags=service.name%3Dcart").await;
        assert_eq!((st, v["traces"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
        let (st, v) = get(&app, &format!("/tempo/api/traces/{}", "02".repeat(16))).await;
        assert_eq!((st, v["batches"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
        let (st, v) = get(&app, "/tempo/api/v2/search/tag/rootServiceName/values").await;
        assert_eq!((st, v["tagValues"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)));
    }

    #[tokio::test]
    async fn errors_map_to_statuses_once() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let app = app_with(&s, QueryConfig::default());
        for uri in [
            "/api/v1/search/traces?limit=0",
            "/api/v1/search/traces?start=20&end=10",
            "/api/v1/traces/not-hex",
            "/jaeger/api/traces?start=soon",
            "/tempo/api/search?start=2024-01-01",
            "/tempo/api/search?q=%7B",
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{uri}: {v}");
        }
        for uri in [
            &*format!("/api/v1/traces/{}", "09".repeat(16)),
            "/api/v1/nope",
            "/api/v1/services/nope/operations",
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{uri}: {v}");
        }
        let (st, v) = get(&app, &format!("/tempo/api/traces/{}", "09".repeat(16))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let (st, v) = get(&app, &format!("/jaeger/api/traces/{}", "09".repeat(16))).await;
        assert_eq!((st, &v["errors"][0]["code"]), (StatusCode::NOT_FOUND, &serde_json::json!(404)));

        // The engine's deadline (its own test makes one happen) is a 504
        // with a message that says what to change; the mapping is the one
        // every handler uses.
        let r = Error::Deadline(Duration::from_secs(30)).into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        let v: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert!(v["error"].as_str().unwrap().contains("narrow the time range"), "{v}");
    }

    #[tokio::test]
    async fn readyz_is_503_until_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = skein_storage::StorageConfig::default().with_retention(Duration::from_secs(3600));
        let s = skein_storage::Storage::open(dir.path(), cfg).unwrap();
        let app = app_with(&s, QueryConfig::default());
        let r = app.oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
