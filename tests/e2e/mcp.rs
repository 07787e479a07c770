//! The MCP server at `/mcp` of the real binary, through rmcp's own client
//! over streamable HTTP: data sent over OTLP/HTTP, the query token
//! required, `[query.mcp]` page limits from the config file, a trace read
//! over its pages, logs, the service map and a bad argument.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{Peer, RoleClient};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt as _;
use serde_json::{json, Value};

use crate::support::{client, eventually, otlp, Server};

const CONFIG: &str = r#"
[[auth.tokens]]
token = "query-secret"
scopes = ["query"]

[query.mcp]
max_spans_per_page = 100
max_logs_per_page = 20
"#;

/// Spans of the trace: a root and its descendants, three pages' worth.
const SPANS: u64 = 250;

async fn call(c: &Peer<RoleClient>, tool: &'static str, args: Value) -> (bool, Value) {
    let args = args.as_object().cloned().unwrap_or_default();
    let r = c.call_tool(CallToolRequestParams::new(tool).with_arguments(args)).await.unwrap();
    let text = r.content[0].as_text().unwrap().text.clone();
    (r.is_error == Some(true), serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn transport(server: &Server, token: Option<&str>) -> StreamableHttpClientTransport<reqwest::Client> {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", server.http));
    if let Some(t) = token {
        cfg = cfg.auth_header(t);
    }
    StreamableHttpClientTransport::from_config(cfg)
}

#[test]
fn an_agent_reads_a_trace_over_mcp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);

    let trace = [0x5a; 16];
    let t0 =
        (SystemTime::now() - Duration::from_secs(60)).duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut spans: Vec<_> = (1..=SPANS)
        .map(|i| {
            let parent = (i > 1).then(|| (i - 2) / 4 + 1);
            otlp::span(trace, i, parent, &format!("step {i}"), t0 + i * 1000, t0 + 10_000_000 - i * 1000)
        })
        .collect();
    spans[0].name = "POST /checkout".into();
    let (s, _) =
        otlp::post(&server.otlp_http, "/v1/traces", otlp::traces("checkout", spans).encode_to_vec()).unwrap();
    assert_eq!(s, 200);
    let records =
        (0..30).map(|i| otlp::log(trace, 2, t0 + 5000 + i, &format!("payment retry {i}"))).collect();
    let (s, _) =
        otlp::post(&server.otlp_http, "/v1/logs", otlp::logs("checkout", records).encode_to_vec()).unwrap();
    assert_eq!(s, 200);
    // A second service, called by checkout, for the service map.
    let mut call_span = otlp::span([0x5b; 16], 1, None, "POST /checkout", t0, t0 + 5_000_000);
    call_span.kind = 3;
    let (s, _) = otlp::post(
        &server.otlp_http,
        "/v1/traces",
        otlp::traces("checkout", vec![call_span]).encode_to_vec(),
    )
    .unwrap();
    assert_eq!(s, 200);
    let mut served = otlp::span([0x5b; 16], 2, Some(1), "charge", t0 + 1000, t0 + 4_000_000);
    served.kind = 2;
    let (s, _) =
        otlp::post(&server.otlp_http, "/v1/traces", otlp::traces("payments", vec![served]).encode_to_vec())
            .unwrap();
    assert_eq!(s, 200);
    eventually(20, || {
        let (st, _) = server.api_with(
            &format!("/api/v1/traces/{}", hex::encode(trace)),
            &[("authorization", "Bearer query-secret")],
        );
        (st == 200).then_some(())
    });
    // The service map comes from the rollups segments carry.
    let r = client()
        .post(format!("http://{}/api/v1/flush", server.http))
        .header("authorization", "Bearer query-secret")
        .send()
        .unwrap();
    assert!(r.status().is_success());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Without the query token, the session does not start.
        assert!(ClientConfig::default().serve(transport(&server, None)).await.is_err());

        let client = ClientConfig::default().serve(transport(&server, Some("query-secret"))).await.unwrap();
        let tools = client.list_all_tools().await.unwrap();
        let names: HashSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert!(names.contains("get_trace") && names.contains("search_traces"), "{names:?}");

        let (err, v) = call(&client, "search_traces", json!({"service": "checkout", "start": "-1h"})).await;
        assert!(!err, "{v}");
        let ids: HashSet<&str> =
            v["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap()).collect();
        assert!(ids.contains(&*hex::encode(trace)), "{v}");

        let (mut seen, mut logs, mut pages) = (HashSet::new(), 0, 0);
        let mut args = json!({"trace_id": hex::encode(trace)});
        loop {
            let (err, v) = call(&client, "get_trace", args).await;
            assert!(!err, "{v}");
            pages += 1;
            if pages == 1 {
                assert_eq!(v["summary"]["span_count"], SPANS, "{v}");
                assert_eq!(v["summary"]["root"]["name"], "POST /checkout");
            }
            let page = v["spans"].as_array().unwrap();
            assert!(page.len() <= 100);
            for s in page {
                assert!(seen.insert(s["span_id"].as_str().unwrap().to_string()), "a span came twice");
            }
            logs += v["logs"].as_array().unwrap().len();
            match v["page"]["next_cursor"].as_str() {
                Some(c) => args = json!({"trace_id": hex::encode(trace), "cursor": c}),
                None => break,
            }
        }
        assert_eq!((pages, seen.len() as u64, logs), (3, SPANS, 30));

        let (err, v) = call(&client, "search_logs", json!({"q": "payment retry", "limit": 3})).await;
        assert!(!err, "{v}");
        assert_eq!(v["logs"].as_array().map(Vec::len), Some(3), "{v}");

        let (err, v) = call(&client, "get_service_map", json!({"start": "-1h"})).await;
        assert!(!err, "{v}");
        let edge = v["edges"].as_array().unwrap().iter().find(|e| e["child"] == "payments");
        assert_eq!(edge.map(|e| &e["parent"]), Some(&json!("checkout")), "{v}");

        let (err, v) = call(&client, "get_trace", json!({"trace_id": "zz"})).await;
        assert!(err && v.as_str().unwrap().contains("hex digits"), "{v}");
        client.cancel().await.unwrap();
    });
}
