//! The HTTP adapters over the [`Engine`](crate::Engine): each parses its
//! API's parameters into the engine's input types and renders the engine's
//! results in its API's JSON. No adapter reads storage itself.

pub mod internal;
pub mod jaeger;
pub mod jaeger_metrics;
pub mod loki;
pub mod mcp;
pub mod native;
pub mod tail;
pub mod tempo;
mod tempo_metrics;

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::error::Error;
use crate::ApiState;

/// Every API (native, Jaeger, Tempo) plus `/healthz`, `/readyz`,
/// `/metrics`. Any other path under `/api/`, `/jaeger/` or `/tempo/` is a
/// 404, and a known path asked with a method it does not take a 405 with
/// `Allow`, both as `{"error": ...}`: the web UI, merged in beside this
/// router, answers every other path with its HTML, which an API client
/// would take for an answer.
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    if state.cfg.mcp.enabled {
        r = r.route_service("/mcp", mcp::service(state.clone()));
    } else {
        r = r.route("/mcp", any(not_found));
    }
    r.merge(native::routes())
        .merge(jaeger::routes())
        .merge(jaeger_metrics::routes())
        .merge(tempo::routes())
        .merge(tempo_metrics::routes())
        .merge(loki::routes())
        .merge(tail::routes())
        .merge(internal::routes())
        .route("/api", any(not_found))
        .route("/api/", any(not_found))
        .route("/api/{*rest}", any(not_found))
        .route("/jaeger", any(not_found))
        .route("/jaeger/", any(not_found))
        .route("/jaeger/{*rest}", any(not_found))
        .route("/tempo", any(not_found))
        .route("/tempo/", any(not_found))
        .route("/tempo/{*rest}", any(not_found))
        .route("/loki", any(not_found))
        .route("/loki/", any(not_found))
        .route("/loki/{*rest}", any(not_found))
        .route("/internal/{*rest}", any(not_found))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Last: it applies to the routes added so far.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(nosniff))
        .with_state(state)
}

/// `X-Content-Type-Options: nosniff` on every API answer, so a browser
/// never renders a JSON body (which may echo a parameter) as HTML (OWASP
/// HTTP Headers Cheat Sheet). The UI's own responses carry it too.
async fn nosniff(mut r: Response) -> Response {
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// A 404 for a path under an API prefix that no endpoint serves, pointing
/// at where that API's endpoints are listed.
async fn not_found(uri: Uri) -> Error {
    let path = uri.path();
    let see = if path.starts_with("/jaeger") {
        "the Jaeger API is /jaeger/api/{services, services/{service}/operations, operations, traces, \
         traces/{trace_id}, dependencies, metrics/{latencies, calls, errors, minstep}}"
    } else if path.starts_with("/tempo") {
        "the Tempo API is /tempo/api/{echo, traces/{trace_id}, v2/traces/{trace_id}, search, search/tags, \
         v2/search/tags, search/tag/{tag}/values, v2/search/tag/{tag}/values, metrics/query_range, \
         metrics/query}"
    } else if path == "/mcp" {
        "the MCP server is off (query.mcp.enabled = false)"
    } else if path.starts_with("/loki") {
        "the Loki API is /loki/api/v1/{labels, label/{name}/values, query_range, query}; \
         pushes go to POST /loki/api/v1/push on the OTLP/HTTP port"
    } else {
        "see /api/v1/openapi.json"
    };
    Error::not_found(format!("no such API endpoint {path}; {see}"))
}

/// A 405 for a known endpoint asked with another method; axum adds the
/// `Allow` header listing the methods it takes.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Error {
    Error::MethodNotAllowed(format!(
        "{} does not take {method}; the Allow header lists what it takes",
        uri.path()
    ))
}

async fn readyz(axum::extract::State(st): axum::extract::State<ApiState>) -> Response {
    let s = st.tenants.default_storage();
    if s.is_mirror() {
        // A query node: ready once the bucket was listed; says how stale
        // its catalog may be (docs/scaling.md).
        return match s.last_poll_unix_nano() {
            Some(t) if st.tenants.is_ready() => {
                let ago = skein_storage::now_unix_nano().saturating_sub(t) / 1_000_000;
                (StatusCode::OK, format!("ready; catalog polled {ago} ms ago (last_poll_unix_nano={t})\n"))
                    .into_response()
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first catalog poll of the bucket\n")
                .into_response(),
        };
    }
    if st.tenants.is_ready() {
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
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use serde_json::{json, Value};
    use skein_storage::model::TraceId;
    use tower::ServiceExt as _;

    use super::*;
    use crate::engine::testutil::{append, engine, storage, three_traces};
    use crate::engine::traceql::TraceQl;
    use crate::engine::TraceQuery;
    use crate::QueryConfig;

    /// The whole router over `s` (the default tenant) with `cfg`.
    pub(crate) fn app_with(s: &Arc<skein_storage::Storage>, cfg: QueryConfig) -> Router {
        router(ApiState::new(
            skein_storage::tenant::Tenants::from_storage(s.clone()),
            Default::default(),
            cfg,
        ))
    }

    /// GETs `uri` from `app`: the status and the JSON body (`Null` when
    /// the body is not JSON).
    pub(crate) async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
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

    fn q(traceql: &str) -> String {
        form_urlencoded::byte_serialize(traceql.as_bytes()).collect()
    }

    /// TraceQL through the Tempo and native search: regexes with `/`,
    /// `select` fields on the returned spans, `by` spansets with their
    /// labels, and parse errors as 400s naming line and column.
    #[tokio::test]
    async fn traceql_through_the_search_apis() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let app = app_with(&s, QueryConfig::default());
        let (st, v) = get(&app, &format!("/tempo/api/search?q={}", q(r#"{ name =~ "GET /.*" }"#))).await;
        assert_eq!(st, StatusCode::OK);
        let ids: Vec<_> = v["traces"].as_array().unwrap().iter().map(|t| t["traceID"].clone()).collect();
        assert_eq!(ids, vec![json!("02".repeat(16)), json!("01".repeat(16))]);

        let query = r#"{ resource.service.name = "cart" } | select(span.http.status, duration, span:status)"#;
        let (st, v) = get(&app, &format!("/tempo/api/search?q={}", q(query))).await;
        assert_eq!(st, StatusCode::OK);
        let t1 = &v["traces"][1];
        assert_eq!(t1["traceID"], "01".repeat(16));
        assert_eq!(
            t1["spanSet"]["spans"][0]["attributes"],
            json!([
                {"key": "http.status", "value": {"intValue": "500"}},
                {"key": "duration", "value": {"stringValue": "100ms"}},
                {"key": "status", "value": {"stringValue": "error"}},
            ])
        );

        let query = "{ } | by(resource.service.name) | count() >= 1";
        let (st, v) = get(&app, &format!("/tempo/api/search?q={}", q(query))).await;
        assert_eq!(st, StatusCode::OK);
        let t3 = &v["traces"][0];
        assert_eq!(t3["traceID"], "03".repeat(16));
        assert_eq!(t3["spanSets"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            t3["spanSets"][1]["attributes"],
            json!([
                {"key": "by(resource.service.name)", "value": {"stringValue": "db"}},
                {"key": "count()", "value": {"intValue": "1"}},
            ])
        );

        let bad = r#"{ name = "a" "#;
        let want = "TraceQL: expected `}`, found end of query at line 1, column 14";
        for api in ["/tempo/api/search", "/api/v1/search/traces"] {
            let (st, v) = get(&app, &format!("{api}?q={}", q(bad))).await;
            assert_eq!((st, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some(want)), "{api}");
        }
        let (st, v) = get(&app, &format!("/tempo/api/search?q={}", q("{\n} | rate()"))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("/tempo/api/metrics/query_range"), "{v}");
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

    /// `(status, headers, JSON body or null)` of `method uri`.
    async fn send(app: &Router, method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn untraced_log() -> skein_storage::model::LogRecord {
        use skein_storage::model::{AttrValue, LogRecord, Resource, Scope};
        LogRecord {
            time_unix_nano: 1_500_000_000,
            observed_time_unix_nano: 1_500_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: AttrValue::Str("untraced housekeeping done".into()),
            attributes: Vec::new(),
            trace_id: TraceId::default(),
            span_id: None,
            flags: 0,
            event_name: String::new(),
            resource: Arc::new(Resource {
                service_name: "cart".into(),
                attributes: vec![("service.name".into(), AttrValue::Str("cart".into()))],
            }),
            scope: Arc::new(Scope::default()),
        }
    }

    /// Issue 9 item 3: storage keeps log records without trace context
    /// under the all-zero trace ID, which no trace has; every API refuses
    /// it as invalid, and log search still finds those records.
    #[tokio::test]
    async fn the_all_zero_trace_id_is_invalid_on_every_api() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        s.append_logs(vec![untraced_log()]).await.unwrap();
        let app = app_with(&s, QueryConfig::default());
        let zero = "0".repeat(32);
        for uri in [
            format!("/api/v1/traces/{zero}"),
            "/api/v1/traces/0".into(),
            format!("/jaeger/api/traces/{zero}"),
            "/jaeger/api/traces/0000000000000000".into(),
            format!("/tempo/api/traces/{zero}"),
            format!("/tempo/api/v2/traces/{zero}"),
            format!("/api/v1/search/logs?trace_id={zero}"),
            "/api/v1/logs/histogram?trace_id=0".into(),
        ] {
            let (st, v) = get(&app, &uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
            assert!(v["error"].as_str().is_some_and(|e| e.contains("all zeroes")), "{uri}: {v}");
        }
        let (st, v) = get(&app, "/api/v1/search/logs?q=housekeeping").await;
        assert_eq!((st, v["logs"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{v}");
        assert_eq!(v["logs"][0]["trace_id"], Value::Null);
    }

    /// Issue 9 item 6: units, unknown parameters and capped limits.
    #[tokio::test]
    async fn wrong_units_unknown_parameters_and_capped_limits_are_reported() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let app = app_with(&s, QueryConfig::default());
        for (uri, says) in [
            ("/api/v1/search/traces?min_duration=5", "no unit"),
            ("/api/v1/search/traces?max_duration=250", "ns, us (or µs), ms, s, m or h"),
            ("/api/v1/metrics/red?step=60", "no unit"),
            ("/jaeger/api/traces?service=cart&minDuration=5", "no unit"),
            ("/tempo/api/search?minDuration=100", "no unit"),
            ("/api/v1/search/traces?start=1731000000", "looks like Unix seconds (2024-11-07T17:20:00Z)"),
            ("/api/v1/search/logs?end=1731000000000", "looks like Unix milliseconds"),
            ("/api/v1/dependencies?start=1731000000000000", "looks like Unix microseconds"),
            (
                "/jaeger/api/traces?service=cart&start=1731000000",
                "read as Unix microseconds; it looks like Unix seconds",
            ),
            (
                "/jaeger/api/dependencies?endTs=1731000000",
                "read as Unix milliseconds; it looks like Unix seconds",
            ),
            (
                "/tempo/api/search?start=1731000000000",
                "read as Unix seconds; it looks like Unix milliseconds",
            ),
            (
                "/api/v1/search/traces?serivce=cart",
                r#"unknown parameter "serivce" (did you mean "service"?)"#,
            ),
            ("/api/v1/search/traces?services=cart", "accepted: service, operation, attr, min_duration"),
            ("/api/v1/search/logs?severty=WARN", r#"(did you mean "severity"?)"#),
            ("/api/v1/logs/histogram?stp=1m", r#"(did you mean "step"?)"#),
            ("/api/v1/metrics/red?servce=cart", "accepted: service, operation, start, end, step"),
            ("/api/v1/dependencies?lookback=1h", "accepted: start, end"),
            ("/api/v1/services?service=cart", "takes no parameters"),
            ("/api/v1/services/cart/operations?kind=server", "takes no parameters"),
            ("/api/v1/traces/0101?pretty=1", "takes no parameters"),
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
            let e = v["error"].as_str().unwrap_or_default();
            assert!(e.contains(says), "{uri}: {e:?} lacks {says:?}");
        }
        // `sort` is known; the compatible APIs take their clients' extra
        // parameters; `0` is the epoch in any unit.
        for uri in [
            "/api/v1/search/traces?service=cart&sort=duration&start=0",
            "/jaeger/api/traces?service=cart&lookback=1h&prettyPrint=true&maxDuration=",
            "/tempo/api/search?tags=service.name%3Dcart&spss=3&foo=bar",
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::OK, "{uri}: {v}");
        }

        let (st, v) = get(&app, "/api/v1/search/traces?limit=100000").await;
        assert_eq!(
            (st, &v["limit"], &v["limit_capped"]),
            (StatusCode::OK, &json!(1000), &json!(true)),
            "{v}"
        );
        assert_eq!(v["traces"].as_array().map(Vec::len), Some(3));
        let (_, v) = get(&app, "/api/v1/search/traces").await;
        assert_eq!((&v["limit"], &v["limit_capped"]), (&json!(20), &json!(false)), "{v}");
        let (_, v) = get(&app, "/api/v1/search/logs?limit=1001").await;
        assert_eq!((&v["limit"], &v["limit_capped"]), (&json!(1000), &json!(true)), "{v}");
    }

    /// Issue 9 item 5: RED's percentiles come from histogram buckets and
    /// the answer says so.
    #[tokio::test]
    async fn red_labels_its_percentiles_approximate() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let app = app_with(&s, QueryConfig::default());
        let (st, v) = get(&app, "/api/v1/metrics/red?start=0&end=1970-01-01T00:01:00Z&step=1m").await;
        assert_eq!((st, &v["percentiles_approximate"]), (StatusCode::OK, &json!(true)), "{v}");
        let frontend = &v["series"].as_array().unwrap().iter().find(|x| x["service"] == "frontend").unwrap();
        assert_eq!(frontend["points"][0]["request_count"], 2, "{v}");
    }

    /// Issue 9 item 11: the UI, merged in as in `src/main.rs`, answers
    /// every other path with HTML and 200; under an API prefix an unknown
    /// path is a JSON 404 and a wrong method a JSON 405 with `Allow`.
    #[tokio::test]
    async fn unknown_paths_and_methods_answer_json_on_every_api_prefix() {
        let (_d, s) = storage();
        let ui =
            Router::new().fallback(|| async { axum::response::Html("<!doctype html><title>Skein</title>") });
        let app = app_with(&s, QueryConfig::default()).merge(ui);
        let json_error = |uri: &str, h: &axum::http::HeaderMap, v: &Value| {
            assert_eq!(h[header::CONTENT_TYPE], "application/json", "{uri}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{uri}: {v}");
        };
        for (method, uri) in [
            ("GET", "/jaeger/api/nope"),
            ("GET", "/jaeger/api/services/cart/nope"),
            ("GET", "/jaeger/search"),
            ("GET", "/jaeger/"),
            ("GET", "/jaeger"),
            ("POST", "/jaeger/api/v2/nope"),
            ("GET", "/tempo/api/nope"),
            ("GET", "/tempo/api/v2/search/nope"),
            ("GET", "/tempo/"),
            ("GET", "/tempo"),
            ("GET", "/api/v1/nope"),
            ("PUT", "/api/v1/nope"),
            ("GET", "/api/"),
        ] {
            let (st, h, v) = send(&app, method, uri).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{method} {uri}: {v}");
            json_error(uri, &h, &v);
        }
        let (_, _, v) = send(&app, "GET", "/jaeger/api/nope").await;
        assert!(v["error"].as_str().unwrap().contains("/jaeger/api/{services"), "{v}");
        for (method, uri, allow) in [
            ("POST", "/api/v1/services", "GET,HEAD"),
            ("DELETE", "/api/v1/search/traces", "GET,HEAD"),
            ("GET", "/api/v1/flush", "POST"),
            ("POST", "/jaeger/api/traces", "GET,HEAD"),
            ("PUT", "/jaeger/api/traces/0101", "GET,HEAD"),
            ("POST", "/tempo/api/search", "GET,HEAD"),
            ("DELETE", "/tempo/api/v2/traces/0101", "GET,HEAD"),
            ("POST", "/metrics", "GET,HEAD"),
        ] {
            let (st, h, v) = send(&app, method, uri).await;
            assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {v}");
            json_error(uri, &h, &v);
            assert_eq!(h[header::ALLOW], allow, "{method} {uri}");
            assert!(v["error"].as_str().unwrap().contains(method), "{v}");
        }
        // The UI keeps its paths.
        let r = app.clone().oneshot(Request::get("/search?service=cart").body(Body::empty()).unwrap()).await;
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    }

    /// `POST /api/v1/flush` refuses what a page of another site can make a
    /// browser send, and accepts scripts, `curl` and the UI's own origin
    /// (issue 10: no simple-request CSRF on state-changing endpoints).
    #[tokio::test]
    async fn flush_refuses_cross_site_requests() {
        let (_d, s) = storage();
        let app = app_with(&s, QueryConfig::default());
        let post = |headers: &[(&str, &str)]| {
            let mut r = Request::post("/api/v1/flush").header("host", "skein.local:16686");
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            let app = app.clone();
            let req = r.body(Body::empty()).unwrap();
            async move { app.oneshot(req).await.unwrap().status() }
        };
        for refused in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "https://evil.example")],
            vec![("origin", "null")],
            vec![("content-type", "application/x-www-form-urlencoded")],
            vec![("content-type", "multipart/form-data; boundary=x")],
            vec![("content-type", "text/plain;charset=UTF-8")],
        ] {
            assert_eq!(post(&refused).await, StatusCode::FORBIDDEN, "{refused:?}");
        }
        for accepted in [
            vec![],
            vec![("sec-fetch-site", "same-origin"), ("origin", "http://skein.local:16686")],
            vec![("sec-fetch-site", "none")],
            vec![("content-type", "application/json")],
        ] {
            assert_eq!(post(&accepted).await, StatusCode::OK, "{accepted:?}");
        }
    }

    /// `/metrics` as text.
    async fn metrics_text(app: &Router) -> String {
        let r = app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// Issue 12, guard rails: a search that cannot finish within a tiny
    /// `query.timeout` is a 504 that names the limit, its work stops (no
    /// query holds a slot afterwards), and `/metrics` counts it.
    #[tokio::test]
    async fn a_query_past_its_deadline_is_a_504_and_its_work_stops() {
        let (_d, s) = storage();
        crate::engine::testutil::many_traces(&s, 400, 4).await;
        let cfg = QueryConfig { timeout: Duration::from_millis(1), ..Default::default() };
        let st =
            ApiState::new(skein_storage::tenant::Tenants::from_storage(s.clone()), Default::default(), cfg);
        let app = router(st.clone());
        for (uri, n) in [
            ("/api/v1/search/traces?q=%7B%20duration%20%3E%201ns%20%7D&limit=1000", 1),
            ("/tempo/api/search?minDuration=1ns&limit=1000", 2),
            ("/jaeger/api/traces?service=cart&limit=1000", 3),
        ] {
            let (status, h, v) = send(&app, "GET", uri).await;
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{uri}: {v}");
            let e = v["error"].as_str().unwrap_or_default();
            assert!(e.contains("exceeded the 1ms deadline (query.timeout)"), "{uri}: {e}");
            assert!(h.get(header::RETRY_AFTER).is_none());
            crate::engine::testutil::until_idle(&st.guards, crate::Pool::Search).await;
            assert_eq!(st.guards.metrics().deadlines(crate::Pool::Search), n);
        }
        let (_, _, v) = send(&app, "GET", "/jaeger/api/traces?service=cart&limit=1000").await;
        assert_eq!(v["errors"][0]["code"], 504, "Jaeger's envelope: {v}");
        crate::engine::testutil::until_idle(&st.guards, crate::Pool::Search).await;
        let m = metrics_text(&app).await;
        assert!(m.contains(r#"skein_queries_deadline_exceeded_total{pool="search"} 4"#), "{m}");
        assert!(m.contains(r#"skein_queries_running{pool="search"} 0"#), "{m}");
        assert!(m.contains(r#"skein_queries_refused_total{pool="trace"} 0"#), "{m}");
    }

    /// Issue 12, guard rails: with every slot taken, a query waits
    /// `query.queue_timeout` and is refused with 429 and `Retry-After`, on
    /// every API in its own error shape; health, readiness and metrics are
    /// not limited, and trace lookups have slots of their own.
    #[tokio::test]
    async fn queries_beyond_the_limit_are_429_with_retry_after() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let cfg =
            QueryConfig { max_concurrent: 2, queue_timeout: Duration::from_millis(20), ..Default::default() };
        let st =
            ApiState::new(skein_storage::tenant::Tenants::from_storage(s.clone()), Default::default(), cfg);
        let app = router(st.clone());
        let slots = [
            st.guards.admit(crate::Pool::Search).await.unwrap(),
            st.guards.admit(crate::Pool::Search).await.unwrap(),
        ];
        for uri in ["/api/v1/search/traces", "/api/v1/services", "/tempo/api/search", "/jaeger/api/services"]
        {
            let (status, h, v) = send(&app, "GET", uri).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{uri}: {v}");
            assert_eq!(h[header::RETRY_AFTER], "1", "{uri}");
            assert!(v["error"].as_str().unwrap().contains("query.max_concurrent"), "{uri}: {v}");
        }
        let (_, _, v) = send(&app, "GET", "/jaeger/api/services").await;
        assert_eq!((&v["errors"][0]["code"], &v["data"]), (&json!(429), &Value::Null), "{v}");
        for uri in ["/healthz", "/readyz", "/metrics", &*format!("/api/v1/traces/{}", "01".repeat(16))] {
            let (status, _, _) = send(&app, "GET", uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
        assert!(metrics_text(&app).await.contains(r#"skein_queries_refused_total{pool="search"} 5"#));
        drop(slots);
        let (status, _, _) = send(&app, "GET", "/api/v1/search/traces").await;
        assert_eq!(status, StatusCode::OK);
    }

    /// Issue 12, guard rails: a `start..end` longer than `query.max_range`
    /// is a 400 naming the limit, on every API that takes a range; a
    /// `limit` above `query.max_limit` is capped, as before.
    #[tokio::test]
    async fn ranges_beyond_max_range_are_refused() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let cfg =
            QueryConfig { max_range: std::time::Duration::from_secs(31 * 86_400), ..Default::default() };
        let app = app_with(&s, cfg);
        let day = 86_400u64;
        // 2024-01-01T00:00:00Z and 40 days later, in seconds.
        let (t0, t1) = (1_704_067_200u64, 1_704_067_200 + 40 * day);
        let (ns0, ns1) = (t0 * 1_000_000_000, t1 * 1_000_000_000);
        for uri in [
            format!("/api/v1/search/traces?start={ns0}&end={ns1}"),
            format!("/api/v1/search/logs?start={ns0}&end={ns1}"),
            format!("/api/v1/logs/histogram?start={ns0}&end={ns1}&step=1h"),
            format!("/api/v1/dependencies?start={ns0}&end={ns1}"),
            format!("/api/v1/metrics/red?start={ns0}&end={ns1}&step=1h"),
            format!("/tempo/api/search?start={t0}&end={t1}"),
            format!("/jaeger/api/traces?service=cart&start={}&end={}", t0 * 1_000_000, t1 * 1_000_000),
            format!("/jaeger/api/dependencies?endTs={}&lookback={}", t1 * 1000, 40 * day * 1000),
        ] {
            let (st, v) = get(&app, &uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
            let e = v["error"].as_str().unwrap_or_default();
            assert!(e.contains("covers 40d, more than 31d (query.max_range)"), "{uri}: {e}");
        }
        // 31 days is not refused.
        let (st, v) =
            get(&app, "/api/v1/search/traces?start=1970-01-01T00:00:00Z&end=1970-02-01T00:00:00Z").await;
        assert_eq!((st, v["traces"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "{v}");
        // The default admits the web UI's "Any time (10 years)".
        let app = app_with(&s, QueryConfig::default());
        let ten_years = 3650 * day * 1_000_000_000;
        let (st, v) =
            get(&app, &format!("/api/v1/search/traces?start={}&end={}", ns1 - ten_years, ns1)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }

    /// Issue 12: every search answer says what it did (`metrics`), counted
    /// from the work: native trace and log search in snake_case, Tempo's
    /// search as Tempo's `SearchMetrics`.
    #[tokio::test]
    async fn search_answers_carry_their_metrics() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        s.flush(true).unwrap();
        let app = app_with(&s, QueryConfig::default());
        let (st, v) =
            get(&app, "/api/v1/search/traces?q=%7B%20resource.service.name%20%3D%20%22cart%22%20%7D").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let m = &v["metrics"];
        assert_eq!((&m["inspected_traces"], &m["inspected_spans"]), (&json!(2), &json!(4)), "{v}");
        assert_eq!((&m["inspected_segments"], &m["total_segments"]), (&json!(1), &json!(1)), "{v}");
        assert!(m["inspected_bytes"].as_u64().unwrap() > 0, "{v}");
        assert!(m["total_segment_bytes"].as_u64().unwrap() > 0, "{v}");
        assert!(m["elapsed_ns"].as_u64().unwrap() > 0, "{v}");

        let (_, v) =
            get(&app, "/tempo/api/search?q=%7B%20resource.service.name%20%3D%20%22cart%22%20%7D").await;
        let m = &v["metrics"];
        assert_eq!((&m["inspectedTraces"], &m["inspectedSpans"]), (&json!(2), &json!("4")), "{v}");
        assert_eq!(
            (&m["totalBlocks"], &m["completedJobs"], &m["totalJobs"]),
            (&json!(1), &json!(1), &json!(1))
        );
        assert!(m["inspectedBytes"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{v}");
        assert!(m["totalBlockBytes"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{v}");

        s.append_logs(vec![untraced_log()]).await.unwrap();
        let (_, v) = get(&app, "/api/v1/search/logs?q=housekeeping").await;
        let m = &v["metrics"];
        assert_eq!(m["inspected_logs"], 1, "{v}");
        assert_eq!(m["inspected_segments"], 1, "{v}");
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
