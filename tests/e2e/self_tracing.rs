//! Self-telemetry (issue 13 item 7): Skein's query and flush spans sent to
//! itself or to another Skein, a caller's `traceparent` continued, JSON
//! log lines that name a stored trace, and no span of the ingest path.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{client, eventually, query, Server};

/// A `skein serve` whose stderr goes to a file, so a test can read its log
/// lines while it runs.
struct Skein {
    child: Child,
    http: String,
    log: PathBuf,
}

impl Skein {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Skein {
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(crate::support::skein_bin());
        cmd.arg("serve").arg("--data-dir").arg(dir.join("data")).args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--zipkin-addr",
            "127.0.0.1:0",
        ]);
        cmd.args(args).env("SKEIN_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("start skein");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("ready line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| {
                    panic!("no {name} in {line:?}: {}", std::fs::read_to_string(&log).unwrap())
                })
                .to_string()
        };
        let s = Skein { http: field("http"), child, log };
        eventually(60, || s.get("/readyz").ok().filter(|(st, _)| *st == 200));
        s
    }

    fn get(&self, path: &str) -> reqwest::Result<(u16, Value)> {
        self.get_with(path, &[])
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Result<(u16, Value)> {
        let mut req = client().get(format!("http://{}{path}", self.http));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send()?;
        Ok((r.status().as_u16(), r.json().unwrap_or(Value::Null)))
    }

    fn json(&self, path: &str) -> Value {
        let (st, v) = self.get(path).expect("GET");
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    /// IDs of the traces of service `skein` with a span named `operation`.
    fn self_traces(&self, operation: &str) -> Vec<String> {
        let q = query(&[("service", "skein"), ("operation", operation), ("limit", "50")]);
        self.json(&format!("/api/v1/search/traces?{q}"))["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The spans of a stored trace (empty when it is not stored).
    fn spans(&self, trace_id: &str) -> Vec<Value> {
        match self.get(&format!("/api/v1/traces/{trace_id}")).expect("GET") {
            (200, v) => v["spans"].as_array().cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The JSON log lines so far.
    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Skein {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short export delays, so spans arrive within a test's patience.
fn config(dir: &Path) -> String {
    let p = dir.join("skein.toml");
    std::fs::write(&p, "[self_tracing]\nschedule_delay = \"200ms\"\nsample_ratio = 1.0\n").unwrap();
    p.to_str().unwrap().to_string()
}

fn names(spans: &[Value]) -> Vec<&str> {
    spans.iter().map(|s| s["name"].as_str().unwrap()).collect()
}

/// What the query and maintenance paths name their spans: the HTTP SERVER
/// span (`METHOD route`) and the engine's and storage's phases.
fn is_query_or_maintenance(name: &str) -> bool {
    ["engine.", "search.", "storage.read_trace", "storage.search_spans", "storage.flush", "storage.compact"]
        .iter()
        .any(|p| name.starts_with(p))
        || name.starts_with("GET /api/")
        || name == "POST /api/v1/flush"
}

/// (1), (3), (4): self-traces to this process's own receiver: the query
/// routes' SERVER spans with the engine's phases under them, a flush span,
/// a caller's `traceparent` continued, JSON log lines whose `trace_id` is
/// a stored trace, and not one span of the ingest path (the exports
/// themselves are OTLP ingest).
#[test]
fn test_self_traces_to_itself() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let s = Skein::start(
        d.path(),
        &["--log-format", "json"],
        &[("SKEIN_CONFIG", &cfg), ("SKEIN_SELF_TRACING", "true"), ("SKEIN_LOG", "info,skein=debug")],
    );

    // (3) A caller's trace: the SERVER span is its child.
    let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (st, _) = s
        .get_with("/api/v1/services", &[("traceparent", &format!("00-{caller}-00f067aa0ba902b7-01"))])
        .unwrap();
    assert_eq!(st, 200);
    // A search and a lookup by ID.
    assert_eq!(s.get("/api/v1/search/traces?service=nothing").unwrap().0, 200);
    assert_eq!(s.get("/api/v1/traces/0af7651916cd43dd8448eb211c80319c").unwrap().0, 404);

    let continued = eventually(30, || {
        let spans = s.spans(caller);
        spans.iter().any(|x| x["name"] == "engine.services").then_some(spans)
    });
    let server = continued.iter().find(|x| x["name"] == "GET /api/v1/services").expect("SERVER span");
    assert_eq!(server["kind"], "SERVER", "{server}");
    assert_eq!(server["parent_span_id"], "00f067aa0ba902b7", "the caller's span is the parent");
    assert_eq!(server["service_name"], "skein");
    assert_eq!(server["attributes"]["http.route"], "/api/v1/services", "{server}");
    assert_eq!(server["attributes"]["http.response.status_code"], 200, "{server}");
    assert!(server["resource"]["service.version"].is_string(), "{server}");
    assert!(server["resource"]["service.instance.id"].is_string(), "{server}");

    // (1) The search's trace: route span, engine, index candidates, the
    // evaluation phase.
    let search = eventually(30, || s.self_traces("GET /api/v1/search/traces").into_iter().next());
    let spans = s.spans(&search);
    for want in ["GET /api/v1/search/traces", "engine.search_traces", "engine.read", "search.evaluate"] {
        assert!(names(&spans).contains(&want), "no {want} in {:?}", names(&spans));
    }
    // The lookup of an absent trace (this test's own lookups are traced
    // too: pick it by its path).
    let absent = "/api/v1/traces/0af7651916cd43dd8448eb211c80319c";
    let spans = eventually(30, || {
        s.self_traces("engine.trace")
            .into_iter()
            .map(|t| s.spans(&t))
            .find(|spans| spans.iter().any(|x| x["attributes"]["url.path"] == absent))
    });
    assert!(names(&spans).contains(&"storage.read_trace"), "{:?}", names(&spans));
    let server = spans.iter().find(|x| x["name"] == "GET /api/v1/traces/{trace_id}").unwrap();
    assert_eq!(server["attributes"]["http.response.status_code"], 404, "{server}");

    // A flush writes the self-traces stored so far: its own span.
    let r = client().post(format!("http://{}/api/v1/flush", s.http)).send().unwrap();
    assert!(r.status().is_success());
    let flush = eventually(30, || s.self_traces("storage.flush").into_iter().next());
    let spans = s.spans(&flush);
    let f = spans.iter().find(|x| x["name"] == "storage.flush").unwrap();
    assert!(f["attributes"]["spans"].as_i64().unwrap() > 0, "{f}");
    assert!(f["attributes"]["bytes"].as_i64().unwrap() > 0, "{f}");
    assert!(f["attributes"]["segment"].is_string(), "{f}");

    // Nothing of the ingest path: every operation of service skein is a
    // query route, an engine or search phase, or storage maintenance.
    let ops = s.json("/api/v1/services/skein/operations");
    let ops: Vec<&str> =
        ops["operations"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert!(!ops.is_empty());
    for op in &ops {
        assert!(is_query_or_maintenance(op), "an ingest or unexpected span was stored: {op} (all: {ops:?})");
    }

    // (4) Log lines: the request line of the caller's query carries its
    // trace; the search's line a trace that is stored.
    let lines = s.log_lines();
    let served = |route: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request served" && l["span"]["route"] == route)
            .unwrap_or_else(|| panic!("no request line for {route} in {lines:?}"))
            .clone()
    };
    let l = served("/api/v1/services");
    assert_eq!(l["trace_id"], caller, "{l}");
    assert_eq!(l["span"]["trace_id"], caller, "the traceparent's ID stays where it was");
    let l = served("/api/v1/search/traces");
    let id = l["trace_id"].as_str().unwrap_or_else(|| panic!("no trace_id: {l}"));
    let span_id = l["span_id"].as_str().unwrap();
    assert_eq!((id.len(), span_id.len()), (32, 16), "{l}");
    assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "lowercase hex: {id}");
    let stored = s.spans(id);
    assert!(
        stored.iter().any(|x| x["span_id"] == span_id),
        "the line's span is stored: {:?}",
        names(&stored)
    );
    // Lines outside a self-traced span have no IDs.
    let listening = lines.iter().find(|l| l["message"] == "listening").unwrap();
    assert!(listening.get("trace_id").is_none(), "{listening}");

    // /metrics counts what was sent.
    let text = client().get(format!("http://{}/metrics", s.http)).send().unwrap().text().unwrap();
    let exported: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("skein_self_tracing_spans_exported_total ")?.parse().ok())
        .unwrap_or_else(|| panic!("no exported count in {text}"));
    assert!(exported > 0.0);
}

/// (2) Self-traces sent to another Skein: the receiver stores them, the
/// sender stores none of its own.
#[test]
fn test_self_traces_to_another_skein() {
    let d = tempfile::tempdir().unwrap();
    let receiver = Server::start(&d.path().join("receiver"));
    let sd = d.path().join("sender");
    std::fs::create_dir_all(&sd).unwrap();
    let cfg = config(&sd);
    let endpoint = format!("http://{}", receiver.grpc);
    let sender = Skein::start(
        &sd,
        &["--self-tracing", "--self-tracing-endpoint", &endpoint],
        &[("SKEIN_CONFIG", &cfg)],
    );
    let found = eventually(30, || {
        assert_eq!(sender.get("/api/v1/services").unwrap().0, 200);
        let q = query(&[("service", "skein"), ("operation", "GET /api/v1/services")]);
        let v = receiver.get_json(&format!("/api/v1/search/traces?{q}"));
        v["traces"].as_array().unwrap().first().map(|t| t["trace_id"].as_str().unwrap().to_string())
    });
    let spans = receiver.get_json(&format!("/api/v1/traces/{found}"))["spans"].as_array().unwrap().clone();
    assert!(names(&spans).contains(&"engine.services"), "{:?}", names(&spans));
    // The sender's own store has no service skein.
    let services = sender.json("/api/v1/services");
    assert!(!services.to_string().contains("\"skein\""), "{services}");
}
