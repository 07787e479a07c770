//! Tenants (issue 10 item 10): tenant B cannot read, search, list the
//! services or operations of, see the dependencies, RED metrics or logs
//! of, or guess the trace IDs of tenant A, through the native, Jaeger and
//! Tempo APIs, before and after a flush and across a restart.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::sdk::{send_checkout_with_headers, unix_ns, Transport};
use crate::support::{client, eventually, query, Server};

const CONFIG: &str = r#"
multitenancy_enabled = true

[tenants]
max_tenants = 4

[[auth.tokens]]
token = "token-a"
scopes = ["ingest", "query"]
tenant = "team-a"

[[auth.tokens]]
token = "token-b"
scopes = ["ingest", "query"]
tenant = "team-b"

# Not bound: the request names its tenant with X-Scope-OrgID.
[[auth.tokens]]
token = "reader"
scopes = ["query"]

[[auth.tokens]]
token = "shipper"
scopes = ["ingest"]
"#;

const A: &[(&str, &str)] = &[("authorization", "Bearer token-a")];
const B: &[(&str, &str)] = &[("authorization", "Bearer token-b")];

/// POSTs one OTLP/JSON span of `service` in trace `trace_hex` with
/// `headers`; the status and body.
fn post_span(
    server: &Server,
    headers: &[(&str, &str)],
    service: &str,
    trace_hex: &str,
    t_ns: u64,
) -> (u16, String) {
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_hex, "spanId": "00000000000000b1", "name": "b-op", "kind": 2,
            "startTimeUnixNano": t_ns.to_string(), "endTimeUnixNano": (t_ns + 1_000_000).to_string()}]}]}]});
    let mut req = client()
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn flush_as(server: &Server, headers: &[(&str, &str)]) {
    let mut req = client().post(format!("http://{}/api/v1/flush", server.http));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "flush: {}", r.text().unwrap());
}

/// Trace IDs in any of the answers' shapes (native, Jaeger, Tempo).
fn trace_ids(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["traces", "data"] {
        for t in v[key].as_array().into_iter().flatten() {
            for f in ["trace_id", "traceID", "traceId"] {
                if let Some(id) = t[f].as_str() {
                    out.push(id.trim_start_matches('0').to_string());
                }
            }
        }
    }
    out
}

#[test]
fn tenant_b_cannot_see_tenant_a() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let base = SystemTime::now() - Duration::from_secs(30);
    let t0 = unix_ns(base);
    // Tenant A: the checkout trace (frontend, cart, postgres, with logs),
    // by its bound token over gRPC, and by an unbound ingest token naming
    // the tenant over HTTP.
    let a1 = send_checkout_with_headers(&server, Transport::Grpc, base, A);
    let a2 = send_checkout_with_headers(
        &server,
        Transport::HttpProto,
        base,
        &[("authorization", "Bearer shipper"), ("X-Scope-OrgID", "team-a")],
    );
    // Tenant B: one span of its own service.
    let b1 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    assert_eq!(post_span(&server, B, "b-only", b1, t0).0, 200);
    // A token bound to B cannot write as A.
    let (st, body) = post_span(&server, &[B[0], ("X-Scope-OrgID", "team-a")], "evil", b1, t0);
    assert_eq!(st, 403, "{body}");

    for sent in [&a1, &a2] {
        eventually(20, || {
            let (s, v) = server.api_with(&format!("/api/v1/traces/{}", sent.trace_id), A);
            (s == 200 && v["spans"].as_array()?.len() == 5 && v["logs"].as_array()?.len() == 2).then_some(())
        });
    }
    eventually(20, || (server.api_with(&format!("/api/v1/traces/{b1}"), B).0 == 200).then_some(()));

    let (start_ns, end_ns) = (t0 - 60_000_000_000, t0 + 60_000_000_000);
    let (s_us, e_us) = ((start_ns / 1000).to_string(), (end_ns / 1000).to_string());
    let (s_s, e_s) = ((start_ns / 1_000_000_000).to_string(), (end_ns / 1_000_000_000 + 1).to_string());
    let range = query(&[("start", &start_ns.to_string()), ("end", &end_ns.to_string())]);
    let check = |server: &Server, phase: &str| {
        // B, by its token or by an unbound token and the header, is B.
        for who in [B, &[("authorization", "Bearer reader"), ("X-Scope-OrgID", "team-b")][..]] {
            let get = |path: &str| {
                let (s, v) = server.api_with(path, who);
                (s, v)
            };
            for id in [&a1.trace_id, &a2.trace_id] {
                for path in [
                    format!("/api/v1/traces/{id}"),
                    format!("/jaeger/api/traces/{id}"),
                    format!("/tempo/api/traces/{id}"),
                    format!("/tempo/api/v2/traces/{id}"),
                ] {
                    assert_eq!(get(&path).0, 404, "{phase}: {path} answered B");
                }
            }
            let only_b = |path: &str| {
                let (s, v) = get(path);
                assert_eq!(s, 200, "{phase}: {path}: {v}");
                let ids = trace_ids(&v);
                assert!(
                    ids.iter().all(|i| b1.trim_start_matches('0') == i),
                    "{phase}: {path} shows A's traces to B: {v}"
                );
            };
            only_b(&format!("/api/v1/search/traces?{range}"));
            only_b(&format!("/api/v1/search/traces?{range}&service=frontend"));
            only_b(&format!(
                "/api/v1/search/traces?{range}&q=%7B%20resource.service.name%20%3D%20%22cart%22%20%7D"
            ));
            only_b(&format!("/jaeger/api/traces?service=frontend&start={s_us}&end={e_us}"));
            only_b(&format!("/tempo/api/search?start={s_s}&end={e_s}"));
            only_b(&format!("/tempo/api/search?start={s_s}&end={e_s}&tags=service.name%3Dfrontend"));

            let (s, v) = get(&format!("/api/v1/search/logs?{range}"));
            assert_eq!((s, v["logs"].as_array().map(Vec::len)), (200, Some(0)), "{phase}: logs: {v}");
            let (s, v) = get(&format!("/api/v1/search/logs?{range}&q=alice"));
            assert_eq!((s, v["logs"].as_array().map(Vec::len)), (200, Some(0)), "{phase}: logs: {v}");
            let (_, v) = get(&format!("/api/v1/logs/histogram?{range}"));
            let n: u64 = v["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
            assert_eq!(n, 0, "{phase}: B's log histogram counts A's logs: {v}");

            let (_, v) = get("/api/v1/services");
            let names: Vec<&str> =
                v["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
            assert_eq!(names, vec!["b-only"], "{phase}");
            assert_eq!(get("/jaeger/api/services").1["data"], json!(["b-only"]), "{phase}");
            assert_eq!(get("/api/v1/services/frontend/operations").0, 404, "{phase}");
            let (s, v) = get("/jaeger/api/services/frontend/operations");
            assert!(s == 404 || v["data"] == json!([]), "{phase}: {v}");
            let (_, v) = get("/jaeger/api/operations?service=frontend");
            assert!(v["data"].as_array().is_none_or(Vec::is_empty), "{phase}: {v}");
            let (_, v) = get(&format!("/api/v1/dependencies?{range}"));
            assert_eq!(v["edges"], json!([]), "{phase}: {v}");
            let (_, v) =
                get(&format!("/jaeger/api/dependencies?endTs={}&lookback=3600000", end_ns / 1_000_000));
            assert!(v["data"].as_array().is_none_or(Vec::is_empty), "{phase}: {v}");
            let (_, v) = get(&format!("/api/v1/metrics/red?{range}&service=frontend"));
            assert!(v["series"].as_array().is_none_or(Vec::is_empty), "{phase}: B sees A's RED: {v}");
            let (_, v) = get("/tempo/api/search/tag/service.name/values");
            assert_eq!(v["tagValues"], json!(["b-only"]), "{phase}: {v}");
            let (_, v) = get("/tempo/api/v2/search/tag/resource.service.name/values");
            let vals: Vec<&str> =
                v["tagValues"].as_array().unwrap().iter().filter_map(|t| t["value"].as_str()).collect();
            assert_eq!(vals, vec!["b-only"], "{phase}: {v}");
            let (_, v) = get("/tempo/api/v2/search/tags");
            assert!(!v.to_string().contains("cart.items"), "{phase}: B sees A's attribute names: {v}");
        }
        // B's token naming A is refused, on every API.
        let b_as_a = [B[0], ("X-Scope-OrgID", "team-a")];
        for path in [
            "/api/v1/services",
            "/jaeger/api/services",
            "/tempo/api/search/tags",
            &format!("/api/v1/traces/{}", a1.trace_id),
        ] {
            assert_eq!(server.api_with(path, &b_as_a).0, 403, "{phase}: {path}");
        }
        // A still sees all of its own, and none of B's.
        let (_, v) = server.api_with("/jaeger/api/services", A);
        assert_eq!(v["data"], json!(["cart", "frontend", "postgres"]), "{phase}");
        assert_eq!(server.api_with(&format!("/api/v1/traces/{b1}"), A).0, 404, "{phase}");
        let (_, v) = server.api_with(&format!("/api/v1/search/logs?{range}&q=alice"), A);
        assert!(v["logs"].as_array().is_some_and(|l| l.len() >= 2), "{phase}: {v}");
    };
    check(&server, "in the head");
    flush_as(&server, A);
    flush_as(&server, B);
    check(&server, "in segments");
    assert!(data.join("tenants/team-a/segments").is_dir() && data.join("tenants/team-b/wal").is_dir());
    server.terminate();
    server.restart();
    check(&server, "after a restart");

    // Reading a tenant that has no data answers empty and creates nothing
    // (QA: reads used to create tenants up to the cap, locking real ones out).
    for i in 0..5 {
        let junk = format!("junk{i}");
        let (s, v) = server
            .api_with("/api/v1/services", &[("authorization", "Bearer reader"), ("X-Scope-OrgID", &junk)]);
        assert_eq!((s, v["services"].clone()), (200, json!([])));
        assert!(!data.join("tenants").join(&junk).exists());
    }
    // So the cap (4: single-tenant, team-a, team-b, one more) still has room.
    let (s, body) =
        post_span(&server, &[("authorization", "Bearer shipper"), ("X-Scope-OrgID", "team-c")], "c", b1, t0);
    assert_eq!(s, 200, "{body}");
    let (s, body) =
        post_span(&server, &[("authorization", "Bearer shipper"), ("X-Scope-OrgID", "team-d")], "d", b1, t0);
    assert_eq!(s, 403, "past max_tenants: {body}");
    // /metrics spans every tenant: a token bound to one may not read it.
    assert_eq!(server.api_with("/metrics", A).0, 403);
    assert_eq!(server.api_with("/metrics", &[("authorization", "Bearer reader")]).0, 200);

    // Requests that name no tenant, or a malformed one, are refused.
    let (s, v) = server.api_with("/api/v1/services", &[("authorization", "Bearer reader")]);
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().contains("X-Scope-OrgID"), "{v}");
    let (s, _) =
        server.api_with("/api/v1/services", &[("authorization", "Bearer reader"), ("X-Scope-OrgID", "../a")]);
    assert_eq!(s, 400);
}
