use std::time::{Duration, SystemTime};

use prost::Message as _;
use serde_json::{json, Value};
use skein_collector::loki::proto;

use crate::support::{client, eventually, query, Server};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// POSTs a Loki push; the status and body text.
fn push(server: &Server, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut req = client()
        .post(format!("http://{}/loki/api/v1/push", server.otlp_http))
        .header("content-type", content_type);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let r = req.body(body).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// A push as Promtail and Grafana Alloy send it (protobuf, snappy block
/// format) and one in JSON (gzip, as Fluent Bit's `loki` output can send
/// it), each 204, read back through the Loki read API and the native log
/// search; a bad push is a 400 and stores nothing.
#[test]
fn loki_push_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let t0 = unix_ns(SystemTime::now() - Duration::from_secs(30));
    let req = proto::PushRequest {
        streams: vec![proto::Stream {
            labels: r#"{job="varlogs", app="checkout", filename="/var/log/checkout.log"}"#.into(),
            entries: vec![
                proto::Entry {
                    timestamp: Some(proto::Timestamp {
                        seconds: (t0 / 1_000_000_000) as i64,
                        nanos: (t0 % 1_000_000_000) as i32,
                    }),
                    line: "level=error msg=\"payment declined\" code=402".into(),
                    structured_metadata: vec![
                        proto::LabelPair { name: "trace_id".into(), value: TRACE.into() },
                        proto::LabelPair { name: "span_id".into(), value: "00f067aa0ba902b7".into() },
                    ],
                },
                proto::Entry {
                    timestamp: Some(proto::Timestamp { seconds: (t0 / 1_000_000_000) as i64 + 1, nanos: 0 }),
                    line: "level=info msg=\"order placed\"".into(),
                    structured_metadata: vec![],
                },
            ],
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let (st, text) = push(&server, "application/x-protobuf", None, body);
    assert_eq!(st, 204, "{text}");

    let json_push = json!({"streams": [{
    "stream": {"service_name": "frontend", "env": "prod"},
    "values": [
        [(t0 + 5).to_string(), r#"{"level":"warn","msg":"cart slow","ms":812}"#, {"trace_id": TRACE}],
        [(t0 + 6).to_string(), "GET /healthz 200"],
    ]}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, json_push.to_string().as_bytes()).unwrap();
    let (st, text) = push(&server, "application/json", Some("gzip"), gz.finish().unwrap());
    assert_eq!(st, 204, "{text}");

    // Bad input: a 400 that says what is wrong, and nothing stored.
    let (st, text) = push(
        &server,
        "application/json",
        None,
        json!({"streams": [{"stream": {"service_name": "bad"}, "values": [["not-a-time", "x"]]}]})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(st, 400);
    assert!(text.contains("streams[0].values[0][0]"), "{text}");
    let (st, _) = push(&server, "application/x-protobuf", None, b"not snappy at all".to_vec());
    assert_eq!(st, 400);

    let range = format!("&start={}&end={}", t0 - 60_000_000_000, t0 + 60_000_000_000);
    for flushed in [false, true] {
        if flushed {
            server.flush();
        }
        // The native search sees them, with their service and trace.
        let v = server.get_json("/api/v1/search/logs?service=checkout&limit=10");
        let logs = v["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 2, "{v}");
        assert_eq!(logs[1]["trace_id"], TRACE);
        assert_eq!(logs[1]["span_id"], "00f067aa0ba902b7");
        assert_eq!(logs[1]["severity_text"], "");
        assert_eq!(logs[1]["resource"]["job"], "varlogs");
        let v = server.get_json(&format!("/api/v1/search/logs?trace_id={TRACE}"));
        assert_eq!(v["logs"].as_array().unwrap().len(), 2, "{v}");
        assert!(server.get_json("/api/v1/search/logs?service=bad")["logs"].as_array().unwrap().is_empty());

        // The Loki read API, as Grafana asks it.
        let v = server.get_json(&format!("/loki/api/v1/labels?{}", &range[1..]));
        let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        for n in ["app", "env", "filename", "job", "service_name"] {
            assert!(names.contains(&n), "{v}");
        }
        let v = server.get_json(&format!("/loki/api/v1/label/service_name/values?{}", &range[1..]));
        assert_eq!(v["data"], json!(["checkout", "frontend"]));
        let q = query(&[
            ("query", r#"{app="checkout"} | logfmt | level="error""#),
            ("direction", "backward"),
            ("limit", "1000"),
        ]);
        let v = server.get_json(&format!("/loki/api/v1/query_range?{q}{range}"));
        let result = v["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{v}");
        assert_eq!(result[0]["stream"]["service_name"], "checkout");
        assert_eq!(result[0]["stream"]["msg"], "payment declined");
        assert_eq!(result[0]["stream"]["trace_id"], TRACE);
        assert_eq!(result[0]["values"][0][0], t0.to_string());
        // Trace to logs, the query deploy/grafana's Tempo data source makes.
        let q = query(&[
            ("query", &format!(r#"{{service_name="frontend"}} | trace_id="{TRACE}""#)),
            ("limit", "1000"),
        ]);
        let v = server.get_json(&format!("/loki/api/v1/query_range?{q}{range}"));
        let result = v["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{v}");
        assert_eq!(result[0]["values"][0][1], r#"{"level":"warn","msg":"cart slow","ms":812}"#);
        let q = query(&[("query", r#"{env="prod"} | json | ms > 500"#)]);
        let v = server.get_json(&format!("/loki/api/v1/query_range?{q}{range}"));
        assert_eq!(v["data"]["result"][0]["stream"]["msg"], "cart slow", "{v}");
        // A metric query is a plain-text 400, as Loki answers.
        let q = query(&[("query", r#"rate({app="checkout"}[1m])"#)]);
        let r = client().get(format!("http://{}/loki/api/v1/query_range?{q}", server.http)).send().unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r.text().unwrap().contains("metric queries"));
    }
    assert!(server.metric("skein_stored_records_total{signal=\"logs\",protocol=\"http\"}") >= 4.0);
}

/// `text` with Grafana's provisioning escape `$$` read as `$`.
fn unescape(text: &str) -> String {
    text.replace("$$", "$")
}

/// Every `skein_…` metric name in `expr`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("skein_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// deploy/grafana: the files parse, the data sources point at the paths
/// Skein serves (asked of a running server), the trace-to-logs query they
/// make finds a span's logs, and the dashboard's PromQL names only
/// metrics the server's /metrics exports.
#[test]
fn grafana_provisioning_matches_the_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let ds: Value = serde_norway::from_str(&read("provisioning/datasources/skein.yaml")).unwrap();
    let providers: Value = serde_norway::from_str(&read("provisioning/dashboards/skein.yaml")).unwrap();
    assert_eq!(providers["providers"][0]["type"], "file");
    let dash: Value = serde_json::from_str(&read("dashboards/skein.json")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let by_type = |t: &str| -> Value {
        ds["datasources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["type"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("{t}"))
    };
    let local = |url: &str| url.replace("http://skein:16686", &format!("http://{}", server.http));
    let (tempo, jaeger, loki) = (by_type("tempo"), by_type("jaeger"), by_type("loki"));
    assert_eq!(tempo["url"], "http://skein:16686/tempo");
    assert_eq!(jaeger["url"], "http://skein:16686/jaeger");
    // Grafana's Loki data source adds /loki/api/v1 to its URL itself.
    assert_eq!(loki["url"], "http://skein:16686");
    for (base, path) in [
        (&tempo, "/api/echo"),
        (&tempo, "/api/search/tags"),
        (&jaeger, "/api/services"),
        (&loki, "/loki/api/v1/labels"),
    ] {
        let url = format!("{}{path}", local(base["url"].as_str().unwrap()));
        let r = client().get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
    }
    // Links between them, by UID.
    let uid = |d: &Value| d["uid"].as_str().unwrap().to_string();
    for d in [&tempo, &jaeger] {
        assert_eq!(d["jsonData"]["tracesToLogsV2"]["datasourceUid"].as_str().unwrap(), uid(&loki));
    }
    let derived = &loki["jsonData"]["derivedFields"][0];
    assert_eq!(
        (derived["datasourceUid"].as_str().unwrap(), &derived["matcherRegex"]),
        (&*uid(&tempo), &json!("trace_id"))
    );

    // The trace-to-logs query, as Grafana fills it in for a span of
    // service "frontend" (tag service.name mapped to service_name).
    let t2l = &tempo["jsonData"]["tracesToLogsV2"];
    let tag = &t2l["tags"][0];
    assert_eq!((tag["key"].as_str(), tag["value"].as_str()), (Some("service.name"), Some("service_name")));
    let q = unescape(t2l["query"].as_str().unwrap())
        .replace("${__tags}", r#"service_name="frontend""#)
        .replace("${__trace.traceId}", TRACE);
    assert_eq!(q, format!(r#"{{service_name="frontend"}} | trace_id="{TRACE}""#));
    let t0 = unix_ns(SystemTime::now() - Duration::from_secs(10));
    let json_push = json!({"streams": [{"stream": {"service_name": "frontend"},
        "values": [[t0.to_string(), "span's log", {"trace_id": TRACE}], [(t0 + 1).to_string(), "other log"]]}]});
    assert_eq!(push(&server, "application/json", None, json_push.to_string().into_bytes()).0, 204);
    let v = eventually(10, || {
        let (s, v) = server.api(&format!("/loki/api/v1/query_range?{}", query(&[("query", &q)])));
        (s == 200 && !v["data"]["result"].as_array()?.is_empty()).then_some(v)
    });
    assert_eq!(v["data"]["result"][0]["values"], json!([[t0.to_string(), "span's log"]]));

    // Every metric the dashboard names is in /metrics.
    let metrics = client().get(format!("http://{}/metrics", server.http)).send().unwrap().text().unwrap();
    let exported: std::collections::BTreeSet<&str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let mut named = 0;
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], "skein-prometheus");
        for t in p["targets"].as_array().unwrap() {
            for m in metric_names(t["expr"].as_str().unwrap()) {
                assert!(exported.contains(m.as_str()), "dashboard metric {m} is not in /metrics");
                named += 1;
            }
        }
    }
    assert!(named >= 14, "{named}");
}

/// Loki's tenancy and Skein's auth on both sides: under multi-tenancy a
/// push names its tenant with `X-Scope-OrgID` (as Loki's clients send
/// `tenant_id`) behind the ingest token, and only that tenant reads it back
/// through the Loki API; a push without a tenant, or without the token,
/// is refused (401) and stores nothing.
#[test]
fn loki_tenancy_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        "multitenancy_enabled = true\n\
         [[auth.tokens]]\ntoken = \"shipper\"\nscopes = [\"ingest\"]\n\
         [[auth.tokens]]\ntoken = \"reader\"\nscopes = [\"query\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let t0 = unix_ns(SystemTime::now() - Duration::from_secs(10));
    let body = json!({"streams": [{"stream": {"service_name": "billing"}, "values": [[t0.to_string(), "invoice sent"]]}]})
        .to_string();
    let send = |headers: &[(&str, &str)]| {
        let mut req = client()
            .post(format!("http://{}/loki/api/v1/push", server.otlp_http))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.clone()).send().unwrap().status().as_u16()
    };
    assert_eq!(send(&[("X-Scope-OrgID", "team-a")]), 401, "no token");
    assert_eq!(send(&[("authorization", "Bearer shipper")]), 401, "no tenant");
    assert_eq!(send(&[("authorization", "Bearer shipper"), ("X-Scope-OrgID", "team-a")]), 204);

    let q = format!("/loki/api/v1/query_range?{}", query(&[("query", r#"{service_name="billing"}"#)]));
    let read =
        |tenant: &str| server.api_with(&q, &[("authorization", "Bearer reader"), ("X-Scope-OrgID", tenant)]);
    let (s, v) = read("team-a");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["values"][0][1], "invoice sent", "{v}");
    let (s, v) = read("team-b");
    assert_eq!((s, &v["data"]["result"]), (200, &json!([])));
    let (s, _) = server.api_with(&q, &[("authorization", "Bearer reader")]);
    assert_eq!(s, 401);
}
