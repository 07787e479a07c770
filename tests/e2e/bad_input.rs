use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::sdk::unix_ns;
use crate::support::{otlp, RawCodec, Server};

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn grpc_export_raw(addr: &str, body: Vec<u8>) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut g = tonic::client::Grpc::new(ch);
        g.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        g.unary(tonic::Request::new(body), path, RawCodec).await.map(|r| r.into_inner())
    })
}

fn small_limit_server(dir: &std::path::Path) -> Server {
    let cfg = dir.join("skein.toml");
    std::fs::write(&cfg, "[collector]\nmax_request_bytes = 65536\n").unwrap();
    Server::start_with(&dir.join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())])
}

fn random_bytes(n: usize) -> Vec<u8> {
    // A fixed xorshift stream: random-looking, reproducible.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn malformed_bodies_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_limit_server(dir.path());
    let (s, body) = otlp::post(&server.otlp_http, "/v1/traces", random_bytes(512)).unwrap();
    assert_eq!(s, 400);
    // OTLP/HTTP errors carry a google.rpc.Status in the request's encoding.
    let st = RpcStatus::decode(&body[..]).expect("google.rpc.Status body");
    assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
    assert!(st.message.contains("invalid OTLP protobuf"), "{}", st.message);

    let r = skein_json_post(&server, "/v1/logs", "{not json");
    assert_eq!(r.0, 400);
    assert!(r.1["message"].as_str().unwrap().contains("invalid OTLP/JSON"), "{:?}", r.1);

    let gz = skein_post_encoded(&server, "gzip", random_bytes(100));
    assert_eq!(gz, 400, "bad gzip");
    let unsupported = super::support::client()
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(unsupported.status().as_u16(), 415);

    let err = grpc_export_raw(&server.grpc, random_bytes(512)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The server keeps serving.
    assert!(server.get_json("/api/v1/services")["services"].as_array().unwrap().is_empty());
    assert_eq!(server.api("/healthz").0, 200);
}

fn skein_json_post(server: &Server, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = super::support::client()
        .post(format!("http://{}{path}", server.otlp_http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

fn skein_post_encoded(server: &Server, enc: &str, body: Vec<u8>) -> u16 {
    super::support::client()
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", enc)
        .body(body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_limit_server(dir.path());
    let t0 = unix_ns(SystemTime::now());
    let big_span = |n: usize| {
        let mut s = otlp::span([1; 16], 1, None, "big", t0, t0 + 1);
        s.attributes.push(otlp::kv("blob", &"x".repeat(n)));
        otlp::traces("svc", vec![s]).encode_to_vec()
    };
    let (s, _) = otlp::post(&server.otlp_http, "/v1/traces", big_span(100_000)).unwrap();
    assert_eq!(s, 413);
    // Small on the wire, big once decompressed: refused too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &big_span(1_000_000)).unwrap();
    let compressed = gz.finish().unwrap();
    assert!(compressed.len() < 65536);
    assert_eq!(skein_post_encoded(&server, "gzip", compressed), 413);

    let err = grpc_export_raw(&server.grpc, big_span(100_000)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Still serving, and a normal request still works.
    let (s, _) = otlp::post(&server.otlp_http, "/v1/traces", big_span(10)).unwrap();
    assert_eq!(s, 200);
}

#[test]
fn invalid_records_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let t0 = unix_ns(SystemTime::now());
    let good = otlp::span([3; 16], 1, None, "good", t0, t0 + 10);
    let zero = otlp::span([0; 16], 2, None, "zero-trace", t0, t0 + 10);
    let mut short = otlp::span([4; 16], 3, None, "short-span-id", t0, t0 + 10);
    short.span_id = vec![1, 2, 3];
    let req = otlp::traces("svc", vec![good, zero, short]);

    // HTTP/protobuf
    let (s, body) = otlp::post(&server.otlp_http, "/v1/traces", req.encode_to_vec()).unwrap();
    assert_eq!(s, 200);
    let resp = ExportTraceServiceResponse::decode(&body[..]).unwrap();
    let ps = resp.partial_success.expect("partial_success set");
    assert_eq!(ps.rejected_spans, 2);
    assert!(ps.error_message.contains("trace_id"), "{}", ps.error_message);

    // gRPC
    let resp = grpc_export_raw(&server.grpc, req.encode_to_vec()).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 2);

    // Full success leaves partial_success unset.
    let ok = otlp::traces("svc", vec![otlp::span([5; 16], 1, None, "fine", t0, t0 + 1)]);
    let (_, body) = otlp::post(&server.otlp_http, "/v1/traces", ok.encode_to_vec()).unwrap();
    assert!(ExportTraceServiceResponse::decode(&body[..]).unwrap().partial_success.is_none());
    let resp = grpc_export_raw(&server.grpc, ExportTraceServiceRequest::default().encode_to_vec()).unwrap();
    assert!(resp.partial_success.is_none());

    let v = server.get_json(&format!("/api/v1/traces/{}", hex::encode([3u8; 16])));
    // Both requests carried it: one copy per (trace ID, span ID) (issue 9).
    assert_eq!(v["spans"].as_array().unwrap().len(), 1, "good span stored, once");
    assert_eq!(server.api(&format!("/api/v1/traces/{}", hex::encode([4u8; 16]))).0, 404);
    assert!(server.metric("skein_dropped_records_total") >= 4.0);
}
