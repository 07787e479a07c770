use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::sdk::{send_checkout, unix_ns, Transport};
use crate::support::{eventually, query, Server};

/// Jaeger-API clients (Grafana's Jaeger data source) read the same data.
#[test]
fn jaeger_api_serves_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = SystemTime::now() - Duration::from_secs(30);
    let sent = send_checkout(&server, Transport::HttpProto, base);
    eventually(20, || {
        let (s, v) = server.api(&format!("/api/v1/traces/{}", sent.trace_id));
        (s == 200 && v["spans"].as_array()?.len() == 5 && v["logs"].as_array()?.len() == 2).then_some(())
    });
    for flushed in [false, true] {
        if flushed {
            server.flush();
        }
        let services = server.get_json("/jaeger/api/services");
        assert_eq!(services["data"], serde_json::json!(["cart", "frontend", "postgres"]));
        let ops = server.get_json("/jaeger/api/operations?service=cart&spanKind=server");
        assert_eq!(ops["data"], serde_json::json!([{"name": "cart.Get", "spanKind": "server"}]));

        let t0 = unix_ns(base) / 1_000;
        let (start, end) = ((t0 - 1_000_000).to_string(), (t0 + 1_000_000).to_string());
        let q = format!(
            "/jaeger/api/traces?{}",
            query(&[
                ("service", "cart"),
                ("tags", r#"{"cart.items":"3"}"#),
                ("minDuration", "100ms"),
                ("start", &start),
                ("end", &end),
                ("limit", "5"),
            ])
        );
        let found = server.get_json(&q);
        let trace = &found["data"][0];
        assert_eq!(trace["traceID"], sent.trace_id);
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 5);
        let cart = spans.iter().find(|s| s["operationName"] == "cart.Get").unwrap();
        assert_eq!(trace["processes"][cart["processID"].as_str().unwrap()]["serviceName"], "cart");
        assert_eq!(cart["references"][0]["refType"], "CHILD_OF");
        assert_eq!(cart["duration"], 180_000);
        let tag = |s: &Value, k: &str| s["tags"].as_array().unwrap().iter().find(|t| t["key"] == k).cloned();
        assert_eq!(tag(cart, "cart.items").unwrap()["type"], "int64");
        assert_eq!(tag(cart, "span.kind").unwrap()["value"], "server");
        let root = spans.iter().find(|s| s["operationName"] == "GET /checkout").unwrap();
        assert_eq!(tag(root, "error").unwrap()["value"], true);
        assert_eq!(root["references"][0]["refType"], "FOLLOWS_FROM");
        // The span's event and the log record it wrote, as Jaeger span logs.
        let logs = root["logs"].as_array().unwrap();
        assert!(logs.iter().any(|l| l["fields"][0]["value"] == "cache-miss"));
        assert!(logs.iter().any(|l| l["fields"][0]["value"] == "checkout started for alice"));

        let by_id = server.get_json(&format!("/jaeger/api/traces/{}", sent.trace_id));
        assert_eq!(by_id["data"][0]["spans"].as_array().unwrap().len(), 5);
        assert!(server.get_json("/jaeger/api/traces?service=cart&minDuration=1s")["data"]
            .as_array()
            .unwrap()
            .is_empty());

        let deps = server.get_json(&format!(
            "/jaeger/api/dependencies?endTs={}&lookback=3600000",
            unix_ns(SystemTime::now()) / 1_000_000
        ));
        let edges: Vec<(String, String, u64)> = deps["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["parent"].as_str().unwrap().into(),
                    e["child"].as_str().unwrap().into(),
                    e["callCount"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(edges, [("cart".into(), "postgres".into(), 1), ("frontend".into(), "cart".into(), 1)]);
    }
    let (s, _) = server.api("/jaeger/api/traces/0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s, 404);
    let (s, v) = server.api("/jaeger/api/traces?tags=notjson");
    assert_eq!(s, 400, "{v}");
}
