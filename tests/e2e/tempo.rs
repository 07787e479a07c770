use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use serde_json::Value;

use crate::sdk::{send_checkout, unix_ns, Transport};
use crate::support::{client, eventually, query, Server};

/// Tempo's `tempopb.Trace`, to decode the protobuf answer.
#[derive(Clone, PartialEq, prost::Message)]
struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    batches: Vec<ResourceSpans>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// Grafana's Tempo data source reads the same data.
#[test]
fn tempo_api_serves_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = SystemTime::now() - Duration::from_secs(30);
    let sent = send_checkout(&server, Transport::HttpProto, base);
    eventually(20, || {
        let (s, v) = server.api(&format!("/api/v1/traces/{}", sent.trace_id));
        (s == 200 && v["spans"].as_array()?.len() == 5 && v["logs"].as_array()?.len() == 2).then_some(())
    });
    let echo = client().get(format!("http://{}/tempo/api/echo", server.http)).send().unwrap();
    assert_eq!(echo.status().as_u16(), 200);
    assert_eq!(echo.text().unwrap(), "echo");
    for flushed in [false, true] {
        if flushed {
            server.flush();
        }
        let t = server.get_json(&format!("/tempo/api/traces/{}", sent.trace_id));
        let batches = t["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 3, "{t}");
        let spans: Vec<&Value> = batches
            .iter()
            .flat_map(|b| b["scopeSpans"].as_array().unwrap())
            .flat_map(|s| s["spans"].as_array().unwrap())
            .collect();
        assert_eq!(spans.len(), 5);
        assert!(spans.iter().all(|s| s["traceId"].as_str().unwrap().eq_ignore_ascii_case(&sent.trace_id)));
        let cart = spans.iter().find(|s| s["name"] == "cart.Get").unwrap();
        assert_eq!(cart["spanId"].as_str().unwrap().to_lowercase(), sent.cart_span);
        let v2 = server.get_json(&format!("/tempo/api/v2/traces/{}", sent.trace_id));
        assert_eq!(v2["trace"]["resourceSpans"].as_array().unwrap().len(), 3);

        let r = client()
            .get(format!("http://{}/tempo/api/traces/{}", server.http, sent.trace_id))
            .header("Accept", "application/protobuf")
            .send()
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/protobuf");
        let pb = TempoTrace::decode(r.bytes().unwrap()).unwrap();
        assert_eq!(pb.batches.len(), 3);
        let n: usize = pb.batches.iter().flat_map(|b| &b.scope_spans).map(|s| s.spans.len()).sum();
        assert_eq!(n, 5);
        assert_eq!(hex::encode(&pb.batches[0].scope_spans[0].spans[0].trace_id), sent.trace_id);

        let t0 = unix_ns(base) / 1_000_000_000;
        let (start, end) = ((t0 - 60).to_string(), (t0 + 60).to_string());
        for q in [
            query(&[("q", r#"{ resource.service.name = "cart" }"#)]),
            query(&[("tags", "service.name=cart")]),
            query(&[("tags", "service.name=cart"), ("start", &start), ("end", &end), ("limit", "5")]),
        ] {
            let found = server.get_json(&format!("/tempo/api/search?{q}"));
            let tr = &found["traces"][0];
            assert_eq!(tr["traceID"], sent.trace_id, "{q}: {found}");
            assert_eq!(tr["rootServiceName"], "frontend");
            assert_eq!(tr["rootTraceName"], "GET /checkout");
            assert!(tr["spanSet"]["matched"].as_u64().unwrap() >= 1);
            assert!(tr["startTimeUnixNano"].is_string());
        }
        let none = server.get_json(&format!("/tempo/api/search?{}", query(&[("tags", "service.name=nope")])));
        assert!(none["traces"].as_array().unwrap().is_empty());

        let names = strings(&server.get_json("/tempo/api/search/tags")["tagNames"]);
        assert!(
            names.contains(&"cart.items".into()) && names.contains(&"http.request.method".into()),
            "{names:?}"
        );
        let v2 = server.get_json("/tempo/api/v2/search/tags");
        let span_scope = v2["scopes"].as_array().unwrap().iter().find(|s| s["name"] == "span").unwrap();
        assert!(strings(&span_scope["tags"]).contains(&"cart.items".into()));

        let vals = server.get_json("/tempo/api/v2/search/tag/resource.service.name/values");
        let vals: Vec<&str> =
            vals["tagValues"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap()).collect();
        for svc in ["cart", "frontend", "postgres"] {
            assert!(vals.contains(&svc), "{vals:?}");
        }
        let methods =
            strings(&server.get_json("/tempo/api/search/tag/http.request.method/values")["tagValues"]);
        assert_eq!(methods, ["GET"]);
    }
    let (s, _) = server.api("/tempo/api/traces/0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s, 404);
}

/// TraceQL metrics as Grafana's Tempo data source asks for them (`query`,
/// `start`/`end` in Unix seconds, `step`, `exemplars`), from the rollups
/// (1 m) and from the spans (15 s), before and after a flush; and the
/// instant query of Tempo's API documentation.
#[test]
fn tempo_metrics_answer_grafana_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = SystemTime::now() - Duration::from_secs(30);
    let sent = send_checkout(&server, Transport::HttpProto, base);
    eventually(20, || {
        let (s, v) = server.api(&format!("/api/v1/traces/{}", sent.trace_id));
        (s == 200 && v["spans"].as_array()?.len() == 5).then_some(())
    });
    let t0 = unix_ns(base) / 1_000_000_000;
    let (start, end) = ((t0 - 120).to_string(), (t0 + 120).to_string());
    for flushed in [false, true] {
        if flushed {
            server.flush();
        }
        for step in ["60s", "15"] {
            let q = query(&[
                ("query", "{} | count_over_time() by (resource.service.name)"),
                ("start", &start),
                ("end", &end),
                ("step", step),
                ("exemplars", "10"),
            ]);
            let v = server.get_json(&format!("/tempo/api/metrics/query_range?{q}"));
            let series = v["series"].as_array().unwrap_or_else(|| panic!("{v}"));
            let mut per_service = std::collections::BTreeMap::new();
            for s in series {
                assert_eq!(s["labels"][0]["key"], "resource.service.name", "{s}");
                let svc = s["labels"][0]["value"]["stringValue"].as_str().unwrap().to_string();
                let n: f64 =
                    s["samples"].as_array().unwrap().iter().map(|x| x["value"].as_f64().unwrap()).sum();
                assert!(s["samples"][0]["timestampMs"].is_string(), "{s}");
                assert!(s["promLabels"].as_str().unwrap().starts_with("{resource.service.name="), "{s}");
                per_service.insert(svc, n);
            }
            let total: f64 = per_service.values().sum();
            assert_eq!(total, 5.0, "step {step}, flushed {flushed}: {v}");
            assert!(
                per_service.contains_key("frontend") && per_service.contains_key("cart"),
                "{per_service:?}"
            );
            // Exemplars come with answers computed from spans only.
            let with_exemplars =
                series.iter().any(|s| s["exemplars"].as_array().is_some_and(|e| !e.is_empty()));
            assert_eq!(with_exemplars, step == "15", "{v}");
        }
        let q = query(&[("q", "{status=error}|count_over_time()by(resource.service.name)"), ("since", "1h")]);
        let (status, v) = server.api(&format!("/tempo/api/metrics/query?{q}"));
        assert_eq!(status, 200, "{v}");
        assert!(v["series"].is_array(), "{v}");
        let q = query(&[("q", "{} | rate()"), ("since", "1h")]);
        let v = server.get_json(&format!("/tempo/api/metrics/query?{q}"));
        assert_eq!(v["series"][0]["labels"][0]["value"]["stringValue"], "rate", "{v}");
        assert!(v["series"][0]["value"].as_f64().unwrap() > 0.0, "{v}");
    }
    let (status, v) = server.api(&format!("/tempo/api/metrics/query_range?{}", query(&[("q", "{}")])));
    assert_eq!(status, 400, "{v}");
}
