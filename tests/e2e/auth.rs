//! Bearer tokens (issue 10 item 9): ingest and query each need their own
//! token when one is configured, over OTLP/gRPC, OTLP/HTTP and every query
//! API; refusals are 401 / UNAUTHENTICATED and counted; probes and the
//! UI's files stay open.

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::sdk::{send_checkout_with_headers, Transport};
use crate::support::{client, eventually, Server};

const CONFIG: &str = r#"
[[auth.tokens]]
token_file = "TOKEN_FILE"
scopes = ["ingest"]

[[auth.tokens]]
token = "query-secret"
scopes = ["query"]
"#;

const QUERY: &[(&str, &str)] = &[("authorization", "Bearer query-secret")];

fn grpc_export(addr: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
        let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        c.export(req).await.map(|_| ())
    })
}

#[test]
fn tokens_guard_ingest_and_query() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ingest-token");
    std::fs::write(&token_file, "ingest-secret\n").unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(&cfg, CONFIG.replace("TOKEN_FILE", token_file.to_str().unwrap())).unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);

    // The real SDK with the ingest token, over gRPC and HTTP.
    let base = SystemTime::now() - Duration::from_secs(30);
    let ingest = [("authorization", "Bearer ingest-secret")];
    let sent = [
        send_checkout_with_headers(&server, Transport::Grpc, base, &ingest),
        send_checkout_with_headers(&server, Transport::HttpJson, base, &ingest),
    ];
    for s in &sent {
        eventually(20, || {
            let (st, v) = server.api_with(&format!("/api/v1/traces/{}", s.trace_id), QUERY);
            (st == 200 && v["spans"].as_array()?.len() == 5).then_some(())
        });
    }

    // Without a token, with a wrong one, or with the query token: refused.
    let mut refused = 0;
    for token in [None, Some("wrong"), Some("query-secret")] {
        let e = grpc_export(&server.grpc, token).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        refused += 1;
        let mut req = client()
            .post(format!("http://{}/v1/traces", server.otlp_http))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let r = req.send().unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"skein\"");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["code"], 16, "google.rpc.Status UNAUTHENTICATED: {body}");
        refused += 1;
    }
    assert!(grpc_export(&server.grpc, Some("ingest-secret")).is_ok());

    // Every query API needs the query token; the ingest token is not one.
    let id = &sent[0].trace_id;
    for path in [
        format!("/api/v1/traces/{id}"),
        "/api/v1/services".into(),
        "/api/v1/search/logs?q=alice".into(),
        "/jaeger/api/services".into(),
        format!("/jaeger/api/traces/{id}"),
        "/tempo/api/search".into(),
        format!("/tempo/api/traces/{id}"),
        "/metrics".into(),
        "/api/v1/openapi.json".into(),
    ] {
        for headers in [&[][..], &ingest[..], &[("authorization", "Bearer query-secre")][..]] {
            let (s, v) = server.api_with(&path, headers);
            assert_eq!(s, 401, "{path} with {headers:?}: {v}");
            assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        }
        assert_eq!(server.api_with(&path, QUERY).0, 200, "{path}");
    }
    let r = client().post(format!("http://{}/api/v1/flush", server.http)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401, "flush without a token");

    // Probes and the UI's own files need no token (the UI asks for one
    // when the API answers 401).
    for path in ["/healthz", "/readyz", "/", "/search"] {
        let r = client().get(format!("http://{}{path}", server.http)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }

    // Refusals are counted by reason.
    let metrics = client()
        .get(format!("http://{}/metrics", server.http))
        .header("authorization", "Bearer query-secret")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let n: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("skein_refused_requests_total") && l.contains("reason=\"unauthenticated\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(n, refused as f64, "{metrics}");
    // The tokens never reach the log or the metrics.
    assert!(!metrics.contains("secret"));
}
