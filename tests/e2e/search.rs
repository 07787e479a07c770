use std::time::{Duration, SystemTime};

use prost::Message;
use serde_json::Value;

use crate::sdk::{send_checkout, unix_ns, Transport};
use crate::support::{otlp, query, Server};

fn trace_ids(v: &Value) -> Vec<String> {
    v["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap().to_string()).collect()
}

fn finds(server: &Server, query: &str, id: &str) -> bool {
    trace_ids(&server.get_json(&format!("/api/v1/search/traces?{query}"))).iter().any(|t| t == id)
}

fn check_search(server: &Server, id: &str, base: SystemTime) {
    let t0 = unix_ns(base);
    let range = format!("start={}&end={}", t0 - 1_000_000_000, t0 + 1_000_000_000);
    assert!(finds(server, &format!("service=cart&{range}"), id));
    assert!(finds(server, "operation=cart.Get", id));
    assert!(finds(server, "service=postgres&operation=query", id));
    assert!(finds(server, "attr=http.response.status_code=500", id), "int attribute");
    assert!(finds(server, "attr=cart.items=3&service=cart", id), "int attribute on cart span");
    assert!(finds(server, "attr=deployment.environment=e2e&service=frontend", id), "resource attribute");
    assert!(finds(server, "status=error", id));
    assert!(finds(server, "min_duration=250ms", id));
    assert!(finds(server, "min_duration=140ms&max_duration=150ms&service=postgres", id));
    // Conditions hold on one span: no cart span has the root's status code.
    assert!(!finds(server, "service=cart&attr=http.response.status_code=500", id));
    assert!(!finds(server, "min_duration=1s", id));
    assert!(!finds(server, "service=cart&status=error", id));
    assert!(!finds(server, "attr=http.response.status_code=404", id));
    // Outside the time range.
    assert!(!finds(server, &format!("start={}&end={}", t0 - 10_000_000_000, t0 - 1_000_000_000), id));
    assert!(!finds(server, &format!("start={}", t0 + 5_000_000_000), id));
    let rfc = |ns: u64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!(finds(server, &format!("start={}&end={}", rfc(t0 - 1_000_000_000), rfc(t0 + 1_000_000_000)), id));

    // TraceQL, URL-encoded.
    let tq = |q: &str| query(&[("q", q)]);
    assert!(finds(
        server,
        &tq(r#"{ resource.service.name = "frontend" } > { resource.service.name = "cart" }"#),
        id
    ));
    assert!(finds(server, &tq(r#"{ span.http.response.status_code = 500 && status = error }"#), id));
    assert!(finds(server, &tq(r#"{ name = "query" && duration > 100ms } && { kind = client }"#), id));
    assert!(finds(server, &tq(r#"{ .cart.items >= 3 } >> { resource.service.name = "postgres" }"#), id));
    assert!(!finds(server, &tq(r#"{ resource.service.name = "cart" && status = error }"#), id));
    assert!(!finds(
        server,
        &tq(r#"{ resource.service.name = "postgres" } > { resource.service.name = "cart" }"#),
        id
    ));
    assert!(!finds(server, &format!("{}&{range}", tq("{ duration > 10s }")), id));

    let summary = server.get_json("/api/v1/search/traces?service=cart&limit=5")["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(summary["root_service"], "frontend");
    assert_eq!(summary["root_name"], "GET /checkout");
    assert_eq!(summary["span_count"], 5);
    assert_eq!(summary["error_count"], 1);
    assert_eq!(summary["duration_ns"], 300_000_000u64);
    assert_eq!(summary["services"].as_array().unwrap().len(), 3);

    // Logs: a word of the body finds the log and its trace.
    let logs = server.get_json("/api/v1/search/logs?q=timeout")["logs"].as_array().unwrap().clone();
    assert!(logs.iter().any(|l| l["trace_id"] == id && l["service_name"] == "cart"), "{logs:?}");
    let logs = server.get_json(&format!(
        "/api/v1/search/logs?{}",
        query(&[("q", "TIMEOUT retried"), ("service", "cart"), ("severity", "WARN")])
    ))["logs"]
        .as_array()
        .unwrap()
        .clone();
    assert!(logs.iter().any(|l| l["trace_id"] == id));
    assert!(server.get_json("/api/v1/search/logs?q=timeout&service=frontend")["logs"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(server.get_json("/api/v1/search/logs?q=timeout&severity=ERROR")["logs"]
        .as_array()
        .unwrap()
        .is_empty());
    let by_trace =
        server.get_json(&format!("/api/v1/search/logs?trace_id={id}"))["logs"].as_array().unwrap().len();
    assert_eq!(by_trace, 2);

    let services = server.get_json("/api/v1/services");
    let names: Vec<&str> =
        services["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cart", "frontend", "postgres"]);
    let ops = server.get_json("/api/v1/services/cart/operations");
    let ops: Vec<(String, String)> = ops["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap().into(), o["span_kind"].as_str().unwrap().into()))
        .collect();
    assert_eq!(ops, [("SELECT carts".into(), "CLIENT".into()), ("cart.Get".into(), "SERVER".into())]);
    let deps = server.get_json("/api/v1/dependencies");
    let edges: Vec<(String, String, u64)> = deps["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["parent"].as_str().unwrap().into(),
                e["child"].as_str().unwrap().into(),
                e["call_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(edges, [("cart".into(), "postgres".into(), 1), ("frontend".into(), "cart".into(), 1)]);
}

#[test]
fn search_from_head_and_from_segments() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = SystemTime::now() - Duration::from_secs(120);
    let sent = send_checkout(&server, Transport::Grpc, base);
    crate::support::eventually(20, || {
        let (s, v) = server.api(&format!("/api/v1/traces/{}", sent.trace_id));
        (s == 200 && v["spans"].as_array()?.len() == 5 && v["logs"].as_array()?.len() == 2).then_some(())
    });
    check_search(&server, &sent.trace_id, base);
    let f = server.flush();
    assert_eq!(f["spans"], 5);
    check_search(&server, &sent.trace_id, base);
}

#[test]
fn bad_search_parameters_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for q in
        ["min_duration=fast", "status=maybe", "start=yesterday", "limit=0", "attr=novalue", "start=20&end=10"]
    {
        let (s, v) = server.api(&format!("/api/v1/search/traces?{q}"));
        assert_eq!(s, 400, "{q}");
        assert!(v["error"].as_str().unwrap().len() > 5, "{q}: {v}");
    }
    let (s, v) = server.api("/api/v1/traces/not-hex");
    assert_eq!(s, 400, "{v}");
    let (s, v) = server.api("/api/v1/traces/0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("not found"));
    let (s, _) = server.api("/api/v1/search/logs?severity=LOUD");
    assert_eq!(s, 400);
}

/// A trace whose halves arrive minutes apart (span times and a flush in
/// between) lives in two segments and comes back whole.
#[test]
fn trace_split_across_segments_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let trace = [7u8; 16];
    let t0 = unix_ns(SystemTime::now()) - 600_000_000_000;
    let first = otlp::traces("gateway", vec![otlp::span(trace, 1, None, "GET /", t0, t0 + 400_000_000_000)]);
    let (s, _) = otlp::post(&server.otlp_http, "/v1/traces", first.encode_to_vec()).unwrap();
    assert_eq!(s, 200);
    let (s, _) = otlp::post(
        &server.otlp_http,
        "/v1/logs",
        otlp::logs("gateway", vec![otlp::log(trace, 1, t0 + 1, "first half")]).encode_to_vec(),
    )
    .unwrap();
    assert_eq!(s, 200);
    assert_eq!(server.flush()["spans"], 1);
    // Minutes later (in span time), the rest of the trace.
    let t1 = t0 + 180_000_000_000;
    let second = otlp::traces(
        "backend",
        vec![
            otlp::span(trace, 2, Some(1), "work", t1, t1 + 1_000),
            otlp::span(trace, 3, Some(2), "more", t1 + 10, t1 + 20),
        ],
    );
    let (s, _) = otlp::post(&server.otlp_http, "/v1/traces", second.encode_to_vec()).unwrap();
    assert_eq!(s, 200);
    let hex = hex::encode(trace);
    let check = |server: &Server| {
        let v = server.get_json(&format!("/api/v1/traces/{hex}"));
        let names: Vec<&str> =
            v["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["GET /", "work", "more"]);
        assert_eq!(v["logs"].as_array().unwrap().len(), 1);
    };
    check(&server); // one segment + head
    assert_eq!(server.flush()["spans"], 2);
    check(&server); // two segments
    let s = server.get_json(&format!("/api/v1/search/traces?service=backend&start={}", t1 - 1));
    let t = &s["traces"][0];
    assert_eq!(t["trace_id"], hex);
    assert_eq!(t["span_count"], 3);
    assert_eq!(t["root_name"], "GET /");
    let deps = server.get_json("/api/v1/dependencies");
    assert!(deps["edges"].as_array().unwrap().iter().all(|e| e["parent"] != e["child"]));
}
