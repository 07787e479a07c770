//! An MCP session with the SDK's own client (rmcp over streamable HTTP)
//! against the whole API router on 127.0.0.1:0, as `skein serve` mounts
//! it: initialize, list the tools, call each kind, read a trace larger
//! than a page over its cursors, bad arguments, and tenant scoping.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{Peer, RoleClient};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt as _;
use serde_json::{json, Value};
use skein_storage::model::{AttrValue, LogRecord, Resource, Scope, Span, SpanId, TraceId};
use skein_storage::tenant::{TenantId, Tenants};
use tower::ServiceExt as _;

use crate::engine::testutil::{append, span, storage, three_traces};
use crate::{router, ApiState, McpConfig, QueryConfig};

/// Spans of the big trace, more than a page.
const BIG: usize = 450;
/// Its log records.
const BIG_LOGS: usize = 30;

/// Trace 9: a root and `BIG - 1` descendants of service `api`, one error,
/// and `BIG_LOGS` log records.
fn big_trace() -> (Vec<Span>, Vec<LogRecord>) {
    let spans = (0..BIG)
        .map(|i| {
            let mut s =
                span(9, 0, None, "api", &format!("step{i}"), 10_000_000_000 + i as u64, 1_000_000, i == 7);
            s.span_id = SpanId((i as u64 + 1).to_be_bytes());
            s.parent_span_id = (i > 0).then(|| SpanId(((i as u64 - 1) / 3 + 1).to_be_bytes()));
            if i == 7 {
                s.status_message = "upstream refused".into();
            }
            s
        })
        .collect();
    let logs = (0..BIG_LOGS)
        .map(|i| LogRecord {
            time_unix_nano: 10_000_000_000 + i as u64,
            observed_time_unix_nano: 10_000_000_000 + i as u64,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: AttrValue::Str(format!("checkout failed attempt {i}")),
            attributes: Vec::new(),
            trace_id: TraceId([9; 16]),
            span_id: Some(SpanId(8u64.to_be_bytes())),
            flags: 0,
            event_name: String::new(),
            resource: Arc::new(Resource {
                service_name: "api".into(),
                attributes: vec![("service.name".into(), AttrValue::Str("api".into()))],
            }),
            scope: Arc::new(Scope::default()),
        })
        .collect();
    (spans, logs)
}

/// Puts the `X-Scope-OrgID` tenant in the request, as the server's auth
/// layer does under `--multitenancy`.
async fn tenant_header(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(t) = req.headers().get("x-scope-orgid").and_then(|v| v.to_str().ok()) {
        let t = TenantId::parse(t).unwrap();
        req.extensions_mut().insert(t);
    }
    next.run(req).await
}

/// The API over a storage holding three small traces and the big one,
/// with pages of 100 spans and 10 logs.
async fn app() -> (tempfile::TempDir, Router, Arc<Tenants>) {
    let (d, s) = storage();
    append(&s, three_traces()).await;
    let (spans, logs) = big_trace();
    append(&s, spans).await;
    s.append_logs(logs).await.unwrap();
    s.flush(true).unwrap();
    let cfg = QueryConfig {
        mcp: McpConfig { max_spans_per_page: 100, max_logs_per_page: 10, ..Default::default() },
        ..Default::default()
    };
    let tenants = Tenants::from_storage(s);
    let st = ApiState::new(tenants.clone(), Default::default(), cfg);
    let app = router(st).route_layer(axum::middleware::from_fn(tenant_header));
    (d, app, tenants)
}

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// Calls `tool` with `args`: whether it is a tool error, and its text
/// (as JSON when it is).
async fn call(c: &Peer<RoleClient>, tool: &'static str, args: Value) -> (bool, Value) {
    let args = args.as_object().cloned().unwrap_or_default();
    let r = c.call_tool(CallToolRequestParams::new(tool).with_arguments(args)).await.unwrap();
    let text = r.content[0].as_text().unwrap().text.clone();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (r.is_error == Some(true), v)
}

#[tokio::test]
async fn an_mcp_session_with_the_sdk_client() {
    let (_d, app, _) = app().await;
    let addr = serve(app).await;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp")),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("skein"));
    assert!(info.instructions.as_deref().unwrap().contains("get_trace"));

    let tools = client.list_all_tools().await.unwrap();
    let names: HashSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for want in [
        "search_traces",
        "get_trace",
        "get_span_details",
        "search_logs",
        "get_services",
        "get_operations",
        "get_service_map",
        "get_red_metrics",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    // Every parameter is described in the schema.
    for t in &tools {
        for (p, schema) in t.input_schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let described = schema.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
            assert!(described, "{}.{p} has no description: {schema}", t.name);
        }
        assert!(t.description.as_deref().is_some_and(|d| !d.is_empty()), "{}", t.name);
    }

    let (err, v) = call(&client, "search_traces", json!({"service": "cart", "status": "error"})).await;
    assert!(!err, "{v}");
    let ids: Vec<&str> =
        v["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["01".repeat(16)]);
    let (err, v) =
        call(&client, "search_traces", json!({"q": "{ resource.service.name = \"api\" && status = error }"}))
            .await;
    assert!(!err, "{v}");
    assert_eq!(v["traces"][0]["trace_id"], "09".repeat(16));
    assert_eq!(v["traces"][0]["span_count"], BIG);

    // The big trace over its pages: the summary first, then every span
    // and log record once.
    let (mut spans, mut logs, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut args = json!({"trace_id": "09".repeat(16)});
    loop {
        let (err, v) = call(&client, "get_trace", args.clone()).await;
        assert!(!err, "{v}");
        pages += 1;
        if pages == 1 {
            let s = &v["summary"];
            assert_eq!((s["span_count"].as_u64(), s["log_count"].as_u64()), (Some(BIG as u64), Some(30)));
            assert_eq!(s["root"]["name"], "step0");
            assert_eq!(s["error_spans"][0]["status_message"], "upstream refused");
            assert!(!s["critical_path"].as_array().unwrap().is_empty(), "{s}");
            assert_eq!(s["services"][0]["name"], "api");
        } else {
            assert!(v.get("summary").is_none());
        }
        let page_spans = v["spans"].as_array().unwrap();
        assert!(page_spans.len() <= 100 && v["logs"].as_array().unwrap().len() <= 10);
        spans.extend(page_spans.iter().map(|s| s["span_id"].as_str().unwrap().to_string()));
        logs.extend(v["logs"].as_array().unwrap().iter().map(|l| l["body"].as_str().unwrap().to_string()));
        match v["page"]["next_cursor"].as_str() {
            Some(c) => args = json!({"trace_id": "09".repeat(16), "cursor": c}),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!((spans.len(), spans.iter().collect::<HashSet<_>>().len()), (BIG, BIG));
    assert_eq!((logs.len(), logs.iter().collect::<HashSet<_>>().len()), (BIG_LOGS, BIG_LOGS));

    let (err, v) = call(
        &client,
        "get_span_details",
        json!({"trace_id": "09".repeat(16), "span_ids": [SpanId(8u64.to_be_bytes()).to_hex(), "00000000000003e7"]}),
    )
    .await;
    assert!(!err, "{v}");
    assert_eq!(v["spans"][0]["status"]["message"], "upstream refused");
    assert_eq!(v["spans"][0]["attributes"]["http.status"], 500);
    assert_eq!(v["not_found"], json!(["00000000000003e7"]));
    assert_eq!(v["logs_total"], 30);

    let (err, v) =
        call(&client, "search_logs", json!({"q": "checkout failed", "service": "api", "limit": 5})).await;
    assert!(!err, "{v}");
    assert_eq!(v["logs"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["logs"][0]["body"], "checkout failed attempt 29", "newest first");

    let range = json!({"start": "1970-01-01T00:00:00Z", "end": "1970-01-01T01:00:00Z"});
    let (err, v) = call(&client, "get_service_map", range.clone()).await;
    assert!(!err, "{v}");
    let edges: HashMap<(&str, &str), u64> = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            ((e["parent"].as_str().unwrap(), e["child"].as_str().unwrap()), e["call_count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(edges.get(&("frontend", "cart")), Some(&1), "{v}");
    assert_eq!(edges.get(&("cart", "db")), Some(&1), "{v}");

    let (err, v) = call(&client, "get_red_metrics", range).await;
    assert!(!err, "{v}");
    let frontend = v["series"].as_array().unwrap().iter().find(|s| s["service"] == "frontend").unwrap();
    assert_eq!(frontend["request_count"], 2, "{v}");

    let (err, v) = call(&client, "get_services", json!({})).await;
    assert!(!err, "{v}");
    assert_eq!(v["services"].as_array().map(Vec::len), Some(4), "{v}");
    let (err, v) = call(&client, "get_operations", json!({"service": "cart"})).await;
    assert!(!err, "{v}");
    assert_eq!(v["operations"].as_array().map(Vec::len), Some(2), "{v}");

    // Bad arguments: tool errors that say what is wrong.
    for (tool, args, says) in [
        ("get_trace", json!({"trace_id": "not-hex"}), "not 1-32 hex digits"),
        ("get_trace", json!({"trace_id": "09".repeat(16), "page": "two"}), "invalid type"),
        ("get_trace", json!({"trace_id": "09".repeat(16), "cursor": "bogus"}), "not one get_trace returned"),
        ("get_trace", json!({"trace_id": "09".repeat(16), "page": 50}), "past the last"),
        ("get_trace", json!({"trace_id": "0a".repeat(16)}), "not found"),
        ("get_trace", json!({}), "trace_id"),
        ("search_traces", json!({"q": "{ name = "}), "TraceQL"),
        ("search_traces", json!({"min_duration": "5"}), "min_duration"),
        ("search_traces", json!({"status": "broken"}), "unknown variant"),
        ("search_traces", json!({"servce": "cart"}), "unknown field"),
        ("search_logs", json!({"severity": "LOUD"}), "severity"),
        ("search_logs", json!({"start": "yesterday"}), "start"),
        ("get_span_details", json!({"trace_id": "09".repeat(16), "span_ids": ["xyz"]}), "16 hex digits"),
        ("get_operations", json!({"service": "nope"}), "not found"),
    ] {
        let (err, v) = call(&client, tool, args.clone()).await;
        assert!(err, "{tool} {args}: {v}");
        let text = v.as_str().unwrap_or_default();
        assert!(text.contains(says), "{tool} {args}: {text}");
    }
    // An unknown tool stays a protocol error.
    let r = client.call_tool(CallToolRequestParams::new("drop_tables")).await;
    assert!(r.is_err(), "{r:?}");
    client.cancel().await.unwrap();
}

/// A session naming another tenant sees none of the default tenant's data.
#[tokio::test]
async fn tools_read_only_the_requests_tenant() {
    let (_d, app, tenants) = app().await;
    let other = tenants.get(&TenantId::parse("someone-else").unwrap()).unwrap();
    append(&other, vec![span(4, 1, None, "billing", "charge", 1_000, 5_000, false)]).await;
    let addr = serve(app).await;
    let headers = HashMap::from([(
        http::HeaderName::from_static("x-scope-orgid"),
        http::HeaderValue::from_static("someone-else"),
    )]);
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp")).custom_headers(headers),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let (err, v) = call(&client, "search_traces", json!({})).await;
    assert!(!err, "{v}");
    let ids: Vec<&str> =
        v["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["04".repeat(16)]);
    let (err, v) = call(&client, "get_trace", json!({"trace_id": "09".repeat(16)})).await;
    assert!(err && v.as_str().unwrap().contains("not found"), "{v}");
    client.cancel().await.unwrap();
}

/// A request a browser page sends (it carries `Origin`) is refused, as
/// the MCP transport specification asks against DNS rebinding; `/mcp` is
/// absent when `query.mcp.enabled` is off.
#[tokio::test]
async fn browser_origins_are_refused_and_mcp_can_be_off() {
    let (_d, app, _) = app().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let post = |origin: Option<&str>| {
        let mut r = Request::post("/mcp")
            .header("host", "skein.example:16686")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.body(Body::from(init.to_string())).unwrap()
    };
    let r = app.clone().oneshot(post(Some("https://evil.example"))).await.unwrap();
    // rmcp's refusal: "Forbidden: Origin header is not allowed".
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = app.clone().oneshot(post(None)).await.unwrap();
    let st = r.status();
    let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let (_d2, s) = storage();
    let cfg = QueryConfig { mcp: McpConfig { enabled: false, ..Default::default() }, ..Default::default() };
    let off = router(ApiState::new(Tenants::from_storage(s), Default::default(), cfg));
    let r = off.oneshot(post(None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
