use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prost::Message;
use serde_json::Value;

use crate::sdk::unix_ns;
use crate::support::{eventually, otlp, query, Server};

/// A config whose head keeps traces until an explicit flush (so each copy
/// sits where the test puts it), with compaction on or off.
fn write_config(path: &Path, compaction: bool) {
    std::fs::write(
        path,
        format!(
            "[head]\nidle_timeout = \"10m\"\nmax_trace_age = \"1h\"\n\
             [compaction]\nenabled = {compaction}\ninterval = \"200ms\"\nmin_inputs = 2\n"
        ),
    )
    .unwrap();
}

/// One case: a one-span trace of its own service, where the copies go.
struct Case {
    service: &'static str,
    trace: [u8; 16],
    body: Vec<u8>,
}

impl Case {
    fn new(service: &'static str, n: u8, t0: u64) -> Case {
        let trace = [0xd0, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let req = otlp::traces(service, vec![otlp::span(trace, 1, None, "GET /retried", t0, t0 + 2_000_000)]);
        Case { service, trace, body: req.encode_to_vec() }
    }

    fn hex(&self) -> String {
        hex::encode(self.trace)
    }

    /// Sends the same export request again, as a retrying exporter does.
    fn send(&self, server: &Server) {
        let (s, body) = otlp::post(&server.otlp_http, "/v1/traces", self.body.clone()).unwrap();
        assert_eq!(s, 200, "{}: {}", self.service, String::from_utf8_lossy(&body));
    }

    /// Every answer shows the span once.
    fn check_one_span(&self, server: &Server, t0: u64, when: &str) {
        let (id, svc) = (self.hex(), self.service);
        let what = format!("{svc} ({when})");
        let native = server.get_json(&format!("/api/v1/traces/{id}"));
        assert_eq!(native["spans"].as_array().unwrap().len(), 1, "native trace, {what}: {native}");

        let jaeger = server.get_json(&format!("/jaeger/api/traces/{id}"));
        assert_eq!(jaeger["data"][0]["spans"].as_array().unwrap().len(), 1, "Jaeger trace, {what}");

        let tempo = server.get_json(&format!("/tempo/api/traces/{id}"));
        let n: usize = tempo["batches"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["scopeSpans"].as_array().unwrap())
            .map(|s| s["spans"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, 1, "Tempo trace, {what}: {tempo}");

        let found = server.get_json(&format!("/api/v1/search/traces?{}", query(&[("service", svc)])));
        let hits: Vec<&Value> =
            found["traces"].as_array().unwrap().iter().filter(|t| t["trace_id"] == id.as_str()).collect();
        assert_eq!(hits.len(), 1, "search lists the trace once, {what}: {found}");
        assert_eq!(hits[0]["span_count"], 1, "search summary, {what}: {found}");
        assert_eq!(hits[0]["services"][0]["span_count"], 1, "search summary services, {what}");
        assert_eq!(hits[0]["duration_ns"], 2_000_000, "{what}");

        let us = t0 / 1_000;
        let q = query(&[
            ("service", svc),
            ("start", &(us - 600_000_000).to_string()),
            ("end", &(us + 600_000_000).to_string()),
            ("limit", "20"),
        ]);
        let found = server.get_json(&format!("/jaeger/api/traces?{q}"));
        let hits: Vec<&Value> =
            found["data"].as_array().unwrap().iter().filter(|t| t["traceID"] == id.as_str()).collect();
        assert_eq!(hits.len(), 1, "Jaeger search, {what}: {found}");
        assert_eq!(hits[0]["spans"].as_array().unwrap().len(), 1, "Jaeger search, {what}");
    }

    /// Spans the service listing and the RED series count for the service.
    fn counts(&self, server: &Server) -> (u64, u64) {
        let services = server.get_json("/api/v1/services");
        let listed = services["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == self.service)
            .map_or(0, |s| s["span_count"].as_u64().unwrap());
        let red = server.get_json(&format!("/api/v1/metrics/red?{}", query(&[("service", self.service)])));
        let requests = red["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["operation"].is_null())
            .flat_map(|s| s["points"].as_array().unwrap())
            .map(|p| p["request_count"].as_u64().unwrap())
            .sum();
        (listed, requests)
    }
}

/// A retried batch is one span: with both copies in the head, in two
/// segments, one in each, after a third copy sent after a flush, across a
/// crash (WAL replay) and a clean restart, and after compaction, which also
/// makes the service listing and RED count it once.
#[test]
fn a_retried_batch_is_stored_and_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: PathBuf = dir.path().join("skein.toml");
    write_config(&cfg, false);
    let mut server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let t0 = unix_ns(SystemTime::now() - Duration::from_secs(10));
    let head = Case::new("dedup-head", 1, t0);
    let segments = Case::new("dedup-segments", 2, t0);
    let mixed = Case::new("dedup-mixed", 3, t0);
    let cases = [&head, &segments, &mixed];
    let check_all =
        |server: &Server, when: &str| cases.iter().for_each(|c| c.check_one_span(server, t0, when));

    segments.send(&server);
    server.flush();
    segments.send(&server);
    server.flush();
    mixed.send(&server);
    server.flush();
    mixed.send(&server);
    head.send(&server);
    head.send(&server);
    check_all(&server, "sent twice");
    assert_eq!(head.counts(&server), (1, 1), "copies in the head are counted once");

    // A third copy of each after a flush.
    server.flush();
    cases.iter().for_each(|c| c.send(&server));
    check_all(&server, "a third copy after a flush");

    // A crash: the third copies come back from the WAL, and only they.
    server.kill();
    server.restart();
    check_all(&server, "after a crash");
    // A clean stop flushes them into a segment.
    server.terminate();
    server.restart();
    check_all(&server, "after a restart");

    // Compaction merges every segment (the copies were left out at flush).
    write_config(&cfg, true);
    server.terminate();
    server.restart();
    eventually(60, || {
        (server.metric("skein_compactions") >= 1.0 && server.metric("skein_segments") == 1.0).then_some(())
    });
    check_all(&server, "after compaction");
    for c in cases {
        assert_eq!(c.counts(&server), (1, 1), "{}: counts after compaction", c.service);
    }

    // One more copy after compaction, and a restart.
    head.send(&server);
    check_all(&server, "a copy after compaction");
    server.terminate();
    server.restart();
    check_all(&server, "the end");
}
