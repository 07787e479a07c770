//! Admission before the body is read, the body read timeout (issue 10
//! item 3), and refusals counted as clients saw them (item 6).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::sdk::unix_ns;
use crate::support::{client, otlp, RawCodec, Server};

const MAX_REQUEST: usize = 16 << 20;

/// Sends the headers of a `max_request_bytes` body and all of it but the
/// last byte, then waits for the answer: its status code, or 0 when the
/// connection ends without one. Half the connections declare their length,
/// half send chunks.
fn almost_whole_body(addr: &str, chunked: bool) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {MAX_REQUEST}")
    };
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n{framing}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut left = MAX_REQUEST - 1;
    while left > 0 {
        let n = left.min(chunk.len());
        let ok = if chunked {
            s.write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|_| s.write_all(&chunk[..n]))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(&chunk[..n])
        };
        if ok.is_err() {
            break; // the server answered and closed
        }
        left -= n;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Issue 10 item 3: many connections each sending a body of the largest
/// size minus one byte, and holding it open, take no more memory than the
/// in-flight budget; the ones that do not fit are refused (429) without
/// being buffered, the ones admitted are cut by the read timeout (408).
#[test]
fn bodies_held_open_take_no_more_than_the_budget() {
    const CONNECTIONS: usize = 24;
    const BUDGET: u64 = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        format!("[collector]\nmax_inflight_bytes = {BUDGET}\nbody_read_timeout = \"15s\"\n"),
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let before = server.rss();
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let addr = server.otlp_http.clone();
            std::thread::spawn(move || almost_whole_body(&addr, i % 2 == 1))
        })
        .collect();
    // Sample while the bodies are held open (the timeout is 15 s).
    let mut peak = 0;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(server.rss());
    }
    let statuses: Vec<u16> = senders.into_iter().map(|h| h.join().unwrap()).collect();
    let grown = peak.saturating_sub(before);
    eprintln!("resident grew by {} MiB; answers {statuses:?}", grown >> 20);
    // Unbounded, 24 bodies of 16 MiB would be 384 MiB.
    assert!(grown < BUDGET + (64 << 20), "resident memory grew by {grown} bytes");
    let timed_out = statuses.iter().filter(|&&s| s == 408).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(timed_out + refused, CONNECTIONS, "{statuses:?}");
    assert!((1..=(BUDGET as usize / MAX_REQUEST)).contains(&timed_out), "{statuses:?}");
    let counted = |reason: &str| {
        server.metric(&format!(
            "skein_refused_requests_total{{signal=\"spans\",protocol=\"http\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(counted("overloaded"), refused as f64);
    assert_eq!(counted("body_timeout"), timed_out as f64);
    assert_eq!(server.metric("skein_ingest_inflight_bytes"), 0.0);
}

/// A bad OTLP/HTTP request: method, path, content type, encoding, body,
/// and the status it must get.
type BadHttp<'a> = (reqwest::Method, &'a str, &'a str, Option<&'a str>, Vec<u8>, u16);

/// What the clients of the mixed load saw, per protocol.
#[derive(Debug, Default)]
struct Seen {
    requests: u64,
    refused: u64,
    /// Spans and log records in requests answered OK.
    accepted: u64,
    /// Of those, reported invalid in `partial_success`.
    dropped: u64,
}

/// Issue 10 item 6: a mixed load of good and bad requests over HTTP and
/// gRPC. The server counts each request, each refusal the clients saw
/// (415s, unknown paths and methods, undecodable and oversized gRPC
/// messages included), and for the records of accepted requests,
/// accepted = stored (read back through the API) + dropped.
#[test]
fn refusals_are_counted_as_clients_saw_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(&cfg, "[collector]\nmax_request_bytes = 65536\n").unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let t0 = unix_ns(SystemTime::now());
    let (mut http, mut grpc) = (Seen::default(), Seen::default());

    // Three good spans and two invalid ones (all-zero trace ID, short span
    // ID) per request, new IDs each time.
    let traces = |n: u8| {
        let good = (1..=3).map(|i| otlp::span([n; 16], i, None, "op", t0, t0 + 10)).collect::<Vec<_>>();
        let mut short = otlp::span([n; 16], 9, None, "short", t0, t0 + 10);
        short.span_id = vec![1, 2, 3];
        let zero = otlp::span([0; 16], 8, None, "zero", t0, t0 + 10);
        otlp::traces("mixed", good.into_iter().chain([short, zero]).collect())
    };
    let logs = |n: u8| otlp::logs("mixed", (0..4).map(|i| otlp::log([n; 16], 1, t0 + i, "line")).collect());
    let big = {
        let mut s = otlp::span([99; 16], 1, None, "big", t0, t0 + 1);
        s.attributes.push(otlp::kv("blob", &"x".repeat(100_000)));
        otlp::traces("mixed", vec![s])
    };

    let c = client();
    let mut send_http = |method: reqwest::Method, path: &str, ct: &str, enc: Option<&str>, body: Vec<u8>| {
        let mut r =
            c.request(method, format!("http://{}{path}", server.otlp_http)).header("content-type", ct);
        if let Some(e) = enc {
            r = r.header("content-encoding", e);
        }
        let r = r.body(body).send().unwrap();
        http.requests += 1;
        let status = r.status().as_u16();
        if status != 200 {
            http.refused += 1;
        }
        (status, r.bytes().unwrap())
    };
    for n in 1..=3u8 {
        let (s, body) = send_http(
            reqwest::Method::POST,
            "/v1/traces",
            "application/x-protobuf",
            None,
            traces(n).encode_to_vec(),
        );
        assert_eq!(s, 200);
        let ps = ExportTraceServiceResponse::decode(body).unwrap().partial_success.unwrap();
        http.accepted += 5;
        http.dropped += ps.rejected_spans as u64;
        let (s, _) = send_http(
            reqwest::Method::POST,
            "/v1/logs",
            "application/x-protobuf",
            None,
            logs(n).encode_to_vec(),
        );
        assert_eq!(s, 200);
        http.accepted += 4;

        let bad: [BadHttp; 8] = [
            (reqwest::Method::POST, "/v1/traces", "text/plain", None, b"hello".to_vec(), 415),
            (reqwest::Method::POST, "/v1/traces", "application/x-protobuf", None, vec![0xff; 64], 400),
            (reqwest::Method::POST, "/v1/logs", "application/json", None, b"{not json".to_vec(), 400),
            (reqwest::Method::POST, "/v1/traces", "application/x-protobuf", Some("gzip"), vec![1; 64], 400),
            (reqwest::Method::POST, "/v1/traces", "application/x-protobuf", None, big.encode_to_vec(), 413),
            (reqwest::Method::POST, "/v2/traces", "application/x-protobuf", None, vec![], 404),
            (reqwest::Method::POST, "/v1/metrics", "application/x-protobuf", None, vec![], 404),
            (reqwest::Method::GET, "/v1/traces", "application/x-protobuf", None, vec![], 405),
        ];
        for (m, path, ct, enc, body, want) in bad {
            assert_eq!(send_http(m, path, ct, enc, body).0, want, "{path} {ct} {enc:?}");
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("http://{}", server.grpc);
        let mut tc = TraceServiceClient::connect(url.clone()).await.unwrap();
        let mut lc = LogsServiceClient::connect(url.clone()).await.unwrap();
        let ch = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
        let mut raw = tonic::client::Grpc::new(ch);
        for n in 11..=13u8 {
            let ps = tc.export(traces(n)).await.unwrap().into_inner().partial_success.unwrap();
            grpc.accepted += 5;
            grpc.dropped += ps.rejected_spans as u64;
            lc.export(logs(n)).await.unwrap();
            grpc.accepted += 4;
            grpc.requests += 2;

            let trace_path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
            let bad = [
                (trace_path, vec![0xff; 64], tonic::Code::InvalidArgument),
                (trace_path, big.encode_to_vec(), tonic::Code::ResourceExhausted),
                (
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                    vec![],
                    tonic::Code::Unimplemented,
                ),
                (
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Other",
                    vec![],
                    tonic::Code::Unimplemented,
                ),
            ];
            for (path, body, want) in bad {
                raw.ready().await.unwrap();
                let p = http::uri::PathAndQuery::from_static(path);
                let err = raw.unary(tonic::Request::new(body), p, RawCodec).await.unwrap_err();
                assert_eq!(err.code(), want, "{path}: {err:?}");
                grpc.requests += 1;
                grpc.refused += 1;
            }
        }
    });

    for (p, seen) in [("http", &http), ("grpc", &grpc)] {
        let metric = |name: &str| -> u64 {
            ["spans", "logs", "other"]
                .iter()
                .map(|s| {
                    server.metric(&format!("skein_{name}_total{{signal=\"{s}\",protocol=\"{p}\"")) as u64
                })
                .sum()
        };
        assert_eq!(metric("received_requests"), seen.requests, "{p}");
        assert_eq!(metric("refused_requests"), seen.refused, "{p}");
        assert_eq!(metric("accepted_records"), seen.accepted, "{p}");
        assert_eq!(metric("dropped_records"), seen.dropped, "{p}");
        assert_eq!(metric("accepted_records"), metric("stored_records") + metric("dropped_records"), "{p}");
    }
    // The reasons the spec's wire codes stand for.
    let reason = |p: &str, signal: &str, r: &str| {
        server.metric(&format!(
            "skein_refused_requests_total{{signal=\"{signal}\",protocol=\"{p}\",reason=\"{r}\"}}"
        ))
    };
    assert_eq!(reason("http", "spans", "unsupported_media_type"), 3.0);
    assert_eq!(reason("http", "spans", "too_large"), 3.0);
    assert_eq!(reason("http", "other", "unknown_path"), 6.0);
    assert_eq!(reason("http", "spans", "method_not_allowed"), 3.0);
    assert_eq!(reason("grpc", "spans", "malformed"), 3.0);
    assert_eq!(reason("grpc", "spans", "too_large"), 3.0);
    assert_eq!(reason("grpc", "other", "unknown_path"), 6.0);

    // Stored: what the API gives back, 3 spans and 4 log records per
    // accepted request of each kind.
    let services = server.get_json("/api/v1/services");
    let stored_spans = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mixed")
        .map_or(0, |s| s["span_count"].as_u64().unwrap());
    let stored_logs =
        server.get_json("/api/v1/search/logs?service=mixed&limit=1000")["logs"].as_array().unwrap().len();
    let stored = server.metric("skein_stored_records_total") as u64;
    assert_eq!(stored_spans + stored_logs as u64, stored);
    assert_eq!(stored, http.accepted + grpc.accepted - http.dropped - grpc.dropped);
    assert_eq!((stored_spans, stored_logs), (18, 24));
}
