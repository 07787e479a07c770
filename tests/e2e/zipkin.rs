//! The Zipkin v2 receiver on `--zipkin-addr`, fed by real Zipkin clients:
//! the OpenTelemetry Python SDK's Zipkin JSON exporter and a protobuf
//! `ListOfSpans` from the Python protobuf runtime (`zipkin_client.py`), and
//! the spans Envoy's Zipkin tracer writes, to the endpoint that
//! docs/integrations.md's Envoy snippet names. Read back through
//! `/api/v1/traces/{id}` field by field.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{client, eventually, Server};

/// `GET /api/v1/traces/{id}` once it holds `n` spans, in start order.
fn trace(s: &Server, id: &str, n: usize) -> Vec<Value> {
    let mut spans = eventually(30, || {
        let (st, v) = s.api(&format!("/api/v1/traces/{id}"));
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        (st == 200 && spans.len() == n).then_some(spans)
    });
    spans.sort_by_key(|s| s["start_time_unix_nano"].as_str().unwrap().parse::<u64>().unwrap());
    spans
}

/// The span with `id` of `spans`.
fn by_id<'a>(spans: &'a [Value], id: &str) -> &'a Value {
    spans.iter().find(|s| s["span_id"] == id).unwrap_or_else(|| panic!("no span {id} in {spans:?}"))
}

/// Microseconds as the Python exporter rounds nanoseconds, back in
/// nanoseconds: what Skein stores.
fn us_rounded(ns: u64) -> u64 {
    (ns + 500) / 1000 * 1000
}

#[test]
fn test_python_zipkin_exporter_and_protobuf() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(d.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/zipkin_client.py");
    let out = Command::new("python3").arg(script).arg(&s.zipkin).output().expect("run python3");
    assert!(
        out.status.success(),
        "zipkin_client.py failed (scripts/test.sh installs its packages): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).expect("client output");
    let id = sent["trace_id"].as_str().unwrap();
    let spans = trace(&s, id, 3);

    let root = by_id(&spans, sent["root"]["span_id"].as_str().unwrap());
    let cl = by_id(&spans, sent["client"]["span_id"].as_str().unwrap());
    let srv = by_id(&spans, sent["server"]["span_id"].as_str().unwrap());
    for sp in [root, cl, srv] {
        assert_eq!(sp["trace_id"], id, "a 128-bit trace ID is kept whole");
        assert_eq!(sp["resource"]["telemetry.sdk.language"], "python", "resource tags back on the resource");
        assert!(sp["attributes"].get("telemetry.sdk.language").is_none());
        assert!(sp["attributes"].get("otel.library.name").is_none());
    }
    assert_eq!((root["name"].as_str(), root["kind"].as_str()), (Some("GET /checkout"), Some("SERVER")));
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["service_name"], "frontend");
    assert_eq!(root["resource"]["service.name"], "frontend");
    assert_eq!(root["scope"], json!({"name": "shop.frontend", "version": "1.2.3"}));
    assert_eq!(root["attributes"]["http.method"], "GET");
    assert_eq!(root["attributes"]["net.host.ip"], "10.0.0.1", "localEndpoint.ipv4");
    assert_eq!(root["attributes"]["net.host.port"], 8080, "localEndpoint.port");
    assert_eq!(root["status"]["code"], "UNSET");

    assert_eq!((cl["name"].as_str(), cl["kind"].as_str()), (Some("POST /pay"), Some("CLIENT")));
    assert_eq!(cl["parent_span_id"], root["span_id"]);
    assert_eq!(cl["attributes"]["http.status_code"], "402", "Zipkin tags are strings");

    assert_eq!((srv["name"].as_str(), srv["kind"].as_str()), (Some("POST /pay"), Some("SERVER")));
    assert_eq!(srv["service_name"], "payments");
    assert_eq!(srv["parent_span_id"], cl["span_id"], "the server span is under the client span");
    assert_eq!(srv["scope"]["name"], "shop.payments");
    assert_eq!(srv["status"], json!({"code": "ERROR", "message": "card declined"}));
    assert_eq!(srv["attributes"]["net.host.ip"], "10.0.0.2");
    assert_eq!(srv["attributes"]["net.host.port"], 9090);
    let (start, end) =
        (sent["server"]["start_ns"].as_u64().unwrap(), sent["server"]["end_ns"].as_u64().unwrap());
    let start_us = us_rounded(start);
    assert_eq!(srv["start_time_unix_nano"], start_us.to_string(), "microseconds to nanoseconds");
    assert_eq!(srv["duration_ns"], us_rounded(end - start));
    let ev = &srv["events"][0];
    assert_eq!(ev["name"], "charge attempt");
    assert_eq!(ev["attributes"], json!({"card.last4": "4242", "attempt": 2}));
    assert_eq!(ev["time_unix_nano"], us_rounded(sent["server"]["event_ns"].as_u64().unwrap()).to_string());

    // Protobuf: 64-bit trace ID, remote endpoint, the shared server half.
    let p = &sent["proto"];
    assert_eq!(p["status"], 202);
    let pid = p["trace_id"].as_str().unwrap();
    let spans = trace(&s, pid, 2);
    let (c, sv) = (&spans[0], &spans[1]);
    assert_eq!(c["trace_id"], format!("{pid:0>32}"), "64-bit trace IDs are left-padded");
    assert_eq!((c["span_id"].as_str(), c["kind"].as_str()), (p["span_id"].as_str(), Some("CLIENT")));
    assert_eq!(c["parent_span_id"], p["parent"]);
    assert_eq!(c["service_name"], "gateway");
    assert_eq!(c["attributes"]["peer.service"], "backend", "remoteEndpoint.serviceName");
    assert_eq!(c["attributes"]["net.peer.ip"], "172.3.0.2");
    assert_eq!(c["attributes"]["net.peer.port"], 9000);
    assert_eq!(c["attributes"]["net.host.ip"], "192.168.99.1");
    assert_eq!(c["attributes"]["http.path"], "/api");
    assert_eq!(c["duration_ns"], 207_000_000);
    assert_eq!(c["start_time_unix_nano"], (p["timestamp_us"].as_u64().unwrap() * 1000).to_string());
    assert_eq!(c["events"][0]["name"], "ws");
    assert_eq!((sv["kind"].as_str(), sv["service_name"].as_str()), (Some("SERVER"), Some("backend")));
    assert_ne!(sv["span_id"], c["span_id"], "the shared half is kept beside the client half");
    assert_eq!(sv["parent_span_id"], c["span_id"]);
    assert_eq!(sv["status"]["code"], "ERROR", "error=true");
    assert!(sv["attributes"].get("error").is_none());
    assert!(s.metric("skein_stored_records_total{signal=\"spans\",protocol=\"zipkin\"}") >= 5.0);
}

/// The snippet in docs/integrations.md's Zipkin section, for the Envoy
/// version of it.
fn envoy_snippet() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/integrations.md")).unwrap();
    let section = doc.split("\n## ").find(|s| s.starts_with("Zipkin")).expect("a Zipkin section");
    let start = section.find("```yaml\n").expect("a yaml block") + 8;
    section[start..start + section[start..].find("```").unwrap()].to_string()
}

/// Envoy (and Istio's Envoy sidecars) report to the collector endpoint the
/// docs name, in Zipkin JSON v2 with a shared span context (Envoy's
/// default): a 64-bit trace ID, the client span and the server span under
/// one span ID, `shared: true` on the server half. Skein stores both.
#[test]
fn test_envoy_snippet_and_envoy_spans() {
    let yaml = envoy_snippet();
    for want in [
        "collector_endpoint: /api/v2/spans",
        "collector_endpoint_version: HTTP_JSON",
        "port_value: 9411",
        "name: envoy.tracers.zipkin",
    ] {
        assert!(yaml.contains(want), "{want:?} not in the snippet:\n{yaml}");
    }
    let path = "/api/v2/spans";
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(d.path());
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    // As Envoy's Zipkin tracer serialises spans (envoyproxy/envoy
    // test/extensions/tracers/zipkin/span_buffer_test.cc, HTTP_JSON).
    let body = json!([
        {"traceId": "6e0c63257de34c92", "id": "bd7a977555f6b982", "kind": "CLIENT", "name": "egress",
         "timestamp": now_us, "duration": 3500,
         "localEndpoint": {"serviceName": "front-proxy", "ipv4": "172.18.0.6", "port": 8000},
         "tags": {"http.method": "GET", "http.status_code": "200", "upstream_cluster": "service1",
                  "response_size": "89", "component": "proxy", "node_id": "front-envoy"}},
        {"traceId": "6e0c63257de34c92", "id": "bd7a977555f6b982", "kind": "SERVER", "name": "ingress",
         "timestamp": now_us + 400, "duration": 2800, "shared": true,
         "localEndpoint": {"serviceName": "service1", "ipv4": "172.18.0.4", "port": 8000},
         "tags": {"http.method": "GET", "http.status_code": "503", "error": "true", "component": "proxy"}}
    ]);
    let r = client()
        .post(format!("http://{}{path}", s.zipkin))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap_or_default());
    let spans = trace(&s, "6e0c63257de34c92", 2);
    let (c, sv) = (&spans[0], &spans[1]);
    assert_eq!(c["trace_id"], "00000000000000006e0c63257de34c92");
    assert_eq!(
        (c["span_id"].as_str(), c["service_name"].as_str()),
        (Some("bd7a977555f6b982"), Some("front-proxy"))
    );
    assert_eq!(c["attributes"]["upstream_cluster"], "service1");
    assert_eq!((sv["service_name"].as_str(), sv["kind"].as_str()), (Some("service1"), Some("SERVER")));
    assert_eq!(sv["parent_span_id"], c["span_id"]);
    assert_eq!(sv["status"]["code"], "ERROR");
    assert_eq!(sv["duration_ns"], 2_800_000);

    // Bad input: one invalid span refuses the request, naming it.
    let bad = json!([
        {"traceId": "6e0c63257de34c93", "id": "1", "timestamp": now_us, "localEndpoint": {"serviceName": "x"}},
        {"traceId": "6e0c63257de34c93", "id": "xyz"}
    ]);
    let r = client().post(format!("http://{}{path}", s.zipkin)).body(bad.to_string()).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().unwrap();
    assert!(text.contains("spans[1].id: \"xyz\" is not hex"), "{text}");
    let (st, _) = s.api("/api/v1/traces/6e0c63257de34c93");
    assert_eq!(st, 404, "nothing of a refused request is stored");
}

/// The Zipkin port takes the ingest tokens and tenants of OTLP: no token is
/// a 401 in plain text, a token bound to a tenant writes to that tenant
/// only, an unbound one names its tenant with `X-Scope-OrgID`.
#[test]
fn test_tokens_and_tenants_on_the_zipkin_port() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        "multitenancy_enabled = true\n\
         [[auth.tokens]]\ntoken = \"mesh\"\nscopes = [\"ingest\"]\ntenant = \"team-z\"\n\
         [[auth.tokens]]\ntoken = \"shipper\"\nscopes = [\"ingest\"]\n",
    )
    .unwrap();
    let s = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let span = |trace: &str| {
        json!([{"traceId": trace, "id": "1", "name": "get", "timestamp": now_us, "duration": 10,
                "localEndpoint": {"serviceName": "mesh"}}])
        .to_string()
    };
    let post = |trace: &str, headers: &[(&str, &str)]| {
        let mut r = client()
            .post(format!("http://{}/api/v2/spans", s.zipkin))
            .header("Content-Type", "application/json")
            .body(span(trace));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().unwrap();
        let auth = r.headers().get("www-authenticate").is_some();
        (r.status().as_u16(), auth, r.text().unwrap())
    };
    let (st, auth, text) = post("a1", &[]);
    assert_eq!((st, auth), (401, true), "{text}");
    assert!(text.contains("unauthenticated"), "{text}");
    assert_eq!(post("a1", &[("authorization", "Bearer wrong")]).0, 401);
    assert_eq!(post("a1", &[("authorization", "Bearer mesh")]).0, 202);
    let (st, _, text) = post("a2", &[("authorization", "Bearer mesh"), ("x-scope-orgid", "team-y")]);
    assert_eq!(st, 403, "a token bound to team-z cannot write to team-y: {text}");
    assert_eq!(post("a2", &[("authorization", "Bearer shipper")]).0, 401, "no tenant named");
    assert_eq!(post("a2", &[("authorization", "Bearer shipper"), ("x-scope-orgid", "team-y")]).0, 202);

    let find = |trace: &str, tenant: &str| {
        eventually(30, || {
            let (st, v) = s.api_with(&format!("/api/v1/traces/{trace}"), &[("x-scope-orgid", tenant)]);
            (st == 200).then_some(v["spans"][0]["service_name"].clone())
        })
    };
    assert_eq!(find("a1", "team-z"), "mesh");
    assert_eq!(find("a2", "team-y"), "mesh");
    let (st, _) = s.api_with("/api/v1/traces/a1", &[("x-scope-orgid", "team-y")]);
    assert_eq!(st, 404, "team-z's trace is not team-y's");
    assert!(
        s.metric(
            "skein_refused_requests_total{signal=\"spans\",protocol=\"zipkin\",reason=\"unauthenticated\"}"
        ) >= 3.0
    );
}

/// `202 Accepted` means the spans are in the WAL: a `kill -9` right after
/// loses none of them.
#[test]
fn test_accepted_spans_survive_kill_9() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(d.path());
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let body: Vec<Value> = (1..=20)
        .map(|i| {
            json!({"traceId": "d0d0d0d0d0d0d0d0", "id": format!("{i:x}"), "name": format!("op-{i}"),
                   "timestamp": now_us + i, "duration": 5, "localEndpoint": {"serviceName": "durable"}})
        })
        .collect();
    let r = client()
        .post(format!("http://{}/api/v2/spans", s.zipkin))
        .header("Content-Type", "application/json")
        .body(Value::Array(body).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    s.kill();
    s.restart();
    assert_eq!(trace(&s, "d0d0d0d0d0d0d0d0", 20).len(), 20);
}
