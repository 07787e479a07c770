//! Flat out against a small memory limit (issue 10, acceptance): several
//! clients over OTLP/HTTP and OTLP/gRPC send as fast as they are answered,
//! retrying nothing. Resident memory, sampled from `/proc`, stays under
//! the hard limit; every acknowledged span is stored; every refusal a
//! client saw was retryable and is counted by the server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::sdk::unix_ns;
use crate::support::{client, otlp, proc_status, rss_of, Server};

const HARD_LIMIT: u64 = 256 << 20;
const CLIENTS_PER_PROTOCOL: u8 = 3;
/// Long enough for a compaction (every 30 s) to run under load.
const RUN: Duration = Duration::from_secs(40);
const TRACES_PER_REQUEST: u64 = 20;
const SPANS_PER_TRACE: u64 = 20;

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked_spans: u64,
    refused: u64,
    /// Answers that were neither a success nor a retryable refusal.
    unexpected: Vec<String>,
}

/// Request `n` of client `c`: 20 traces of 20 spans, each span with a few
/// attributes of realistic size, all IDs new, service `load-{c}`.
fn batch(c: u8, n: u64) -> ExportTraceServiceRequest {
    let t0 = unix_ns(SystemTime::now());
    let mut spans = Vec::new();
    for t in 0..TRACES_PER_REQUEST {
        let mut trace = [0u8; 16];
        trace[0] = c + 1;
        trace[1..9].copy_from_slice(&n.to_be_bytes());
        trace[9..13].copy_from_slice(&(t as u32).to_be_bytes());
        for i in 1..=SPANS_PER_TRACE {
            let mut s =
                otlp::span(trace, i, (i > 1).then_some(1), &format!("GET /api/items/{i}"), t0, t0 + i * 1000);
            // Values that compress about as much as real ones do (a run
            // of one letter would make segments tiny and compactions,
            // which decode them, far bigger than their share assumes).
            for k in 0..6u64 {
                let mut x = (n << 32 | t << 16 | i << 8 | k) ^ 0x9E37_79B9_7F4A_7C15 ^ u64::from(c);
                let noise: String = (0..5)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        format!("{x:016x}")
                    })
                    .collect();
                s.attributes.push(otlp::kv(&format!("attr.{k}"), &format!("value {k} of span {i}: {noise}")));
            }
            spans.push(s);
        }
    }
    otlp::traces(&format!("load-{c}"), spans)
}

const SPANS_PER_REQUEST: u64 = TRACES_PER_REQUEST * SPANS_PER_TRACE;

fn http_client(addr: String, c: u8, stop: Arc<AtomicBool>) -> Tally {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let body = batch(c, t.sent).encode_to_vec();
        t.sent += 1;
        let r = http
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send();
        match r {
            Ok(r) if r.status().as_u16() == 200 => {
                let resp = ExportTraceServiceResponse::decode(r.bytes().unwrap()).unwrap();
                assert!(resp.partial_success.is_none());
                t.acked_spans += SPANS_PER_REQUEST;
            }
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) && r.headers().contains_key("retry-after") => {
                t.refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(r) => t.unexpected.push(format!("HTTP {}: {:?}", r.status(), r.text())),
            Err(e) => t.unexpected.push(format!("HTTP transport error: {e}")),
        }
    }
    t
}

fn grpc_client(addr: String, c: u8, stop: Arc<AtomicBool>) -> Tally {
    use tonic_types::StatusExt as _;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut cl = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        let mut t = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            let req = batch(c, t.sent);
            t.sent += 1;
            match cl.export(req).await {
                Ok(r) => {
                    assert!(r.into_inner().partial_success.is_none());
                    t.acked_spans += SPANS_PER_REQUEST;
                }
                Err(st)
                    if st.code() == tonic::Code::Unavailable
                        && st.get_details_retry_info().is_some_and(|r| r.retry_delay.is_some()) =>
                {
                    t.refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(st) => t.unexpected.push(format!("gRPC {st:?}")),
            }
        }
        t
    })
}

#[test]
fn flat_out_under_a_small_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    // No fsync: the point is memory, and the disk is shared.
    std::fs::write(&cfg, format!("memory_limit = {HARD_LIMIT}\n[wal]\nfsync = false\n")).unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);

    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let max_rss = Arc::new(AtomicU64::new(0));
    let peak_at = Arc::new(std::sync::Mutex::new((Duration::ZERO, String::new())));
    // Sampled until the end, through the final flush.
    let sampler = {
        let (done, max_rss, pid) = (done.clone(), max_rss.clone(), server.pid());
        let peak_at = peak_at.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let rss = rss_of(pid);
                if rss > max_rss.fetch_max(rss, Ordering::Relaxed) {
                    // When and in what the peak was, for a failure's report.
                    *peak_at.lock().unwrap() = (t0.elapsed(), proc_status(pid, &["RssAnon", "RssFile"]));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut clients = Vec::new();
    for c in 0..CLIENTS_PER_PROTOCOL {
        let (addr, s) = (server.otlp_http.clone(), stop.clone());
        clients.push(("http", c, std::thread::spawn(move || http_client(addr, c, s))));
        let c = c + CLIENTS_PER_PROTOCOL;
        let (addr, s) = (server.grpc.clone(), stop.clone());
        clients.push(("grpc", c, std::thread::spawn(move || grpc_client(addr, c, s))));
    }
    let t0 = Instant::now();
    while t0.elapsed() < RUN {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<(&str, u8, Tally)> =
        clients.into_iter().map(|(p, c, h)| (p, c, h.join().unwrap())).collect();
    for (p, c, t) in &tallies {
        eprintln!("client {c} ({p}): sent {} acked spans {} refused {}", t.sent, t.acked_spans, t.refused);
        assert!(t.unexpected.is_empty(), "client {c} ({p}) saw {:?}", t.unexpected);
    }
    let text = client().get(format!("http://{}/metrics", server.http)).send().unwrap().text().unwrap();
    for l in text.lines().filter(|l| l.starts_with("skein_refused_requests_total") && !l.ends_with(" 0")) {
        eprintln!("{l}");
    }

    // The server counted what the clients saw, per protocol.
    for p in ["http", "grpc"] {
        let mine = || tallies.iter().filter(move |t| t.0 == p).map(|t| &t.2);
        let sent: u64 = mine().map(|t| t.sent).sum();
        let refused: u64 = mine().map(|t| t.refused).sum();
        let acked: u64 = mine().map(|t| t.acked_spans).sum();
        let labels = format!("{{signal=\"spans\",protocol=\"{p}\"");
        assert_eq!(server.metric(&format!("skein_received_requests_total{labels}")), sent as f64, "{p}");
        assert_eq!(server.metric(&format!("skein_refused_requests_total{labels}")), refused as f64, "{p}");
        assert_eq!(server.metric(&format!("skein_accepted_records_total{labels}")), acked as f64, "{p}");
        assert_eq!(server.metric(&format!("skein_stored_records_total{labels}")), acked as f64, "{p}");
    }

    // Every acknowledged span is stored: each client's service holds
    // exactly the spans it had acknowledged.
    let r = client().post(format!("http://{}/api/v1/flush", server.http)).send().unwrap();
    assert!(r.status().is_success());
    let services = server.get_json("/api/v1/services");
    for (p, c, t) in &tallies {
        let name = format!("load-{c}");
        let stored = services["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name.as_str())
            .map_or(0, |s| s["span_count"].as_u64().unwrap());
        assert_eq!(stored, t.acked_spans, "client {c} ({p})");
    }

    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let max_rss = max_rss.load(Ordering::Relaxed);
    let (at, split) = peak_at.lock().unwrap().clone();
    eprintln!(
        "max resident {} MiB of a {} MiB limit, {:.1} s after the load began ({split})",
        max_rss >> 20,
        HARD_LIMIT >> 20,
        at.as_secs_f64()
    );
    assert!(
        max_rss < HARD_LIMIT,
        "resident memory reached {max_rss} bytes, over the hard limit {HARD_LIMIT}"
    );
}
