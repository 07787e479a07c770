//! TLS on every listener with a certificate made by the test, reloaded
//! when its files change; plain-text clients get a clear refusal.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::listeners::Skein;
use crate::support::{eventually, otlp};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), der: cert.der().clone(), issuer: Issuer::new(params, key) }
}

/// Writes a leaf certificate for `localhost` signed by `ca`; returns its DER.
fn issue(ca: &Ca, dir: &Path) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca.issuer).unwrap();
    // Written aside and renamed, as a certificate manager does, so the
    // server never reads half a file.
    for (name, text) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
    cert.der().clone()
}

fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// The certificate the server presents at `addr`.
fn served_certificate(ca: &Ca, addr: &str) -> CertificateDer<'static> {
    let name = ServerName::try_from("localhost").unwrap();
    // No ALPN: every listener accepts that, whatever protocols it offers.
    let mut conn = rustls::ClientConnection::new(client_config(ca, &[]), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    conn.peer_certificates().expect("a certificate")[0].clone().into_owned()
}

fn https(ca: &Ca) -> reqwest::blocking::Client {
    let cert = reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    reqwest::blocking::Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// OTLP/gRPC export through tonic over a rustls connection trusting `ca`.
fn grpc_export(ca: &Ca, addr: &str, trace: [u8; 16]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(ca, &[b"h2"]));
    let addr = addr.to_string();
    rt.block_on(async move {
        let connector = tower::service_fn(move |_: http::Uri| {
            let (tls, addr) = (tls.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").unwrap();
                tls.connect(name, tcp).await.map(hyper_util::rt::TokioIo::new)
            }
        });
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let req =
            otlp::traces("tls", vec![otlp::span(trace, 1, None, "grpc-op", 1_000_000_000, 2_000_000_000)]);
        TraceServiceClient::new(channel).export(req).await.map(|_| ()).map_err(|e| format!("{e:?}"))
    })
}

/// Plain-text gRPC (h2c) against `addr`.
fn grpc_export_plaintext(addr: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let req = otlp::traces("tls", vec![otlp::span([1; 16], 1, None, "op", 1, 2)]);
        TraceServiceClient::new(channel).export(req).await.map(|_| ()).map_err(|e| format!("{e:?}"))
    })
}

#[test]
fn test_tls_on_every_listener_with_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let first = issue(&ca, dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut s = Skein::start(
        dir.path(),
        "[server]\ntls_reload_interval = \"200ms\"\nread_header_timeout = \"2s\"\n",
        &[],
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let c = https(&ca);
    let api = format!("https://localhost:{}", s.http.rsplit(':').next().unwrap());
    s.wait_ready(&c, &api);

    // OTLP/gRPC and OTLP/HTTP (protobuf) over TLS, read back over HTTPS.
    grpc_export(&ca, &s.grpc, [0xa1; 16]).expect("OTLP/gRPC over TLS");
    let otlp_http = format!("https://localhost:{}/v1/traces", s.otlp_http.rsplit(':').next().unwrap());
    let body =
        otlp::traces("tls", vec![otlp::span([0xa2; 16], 1, None, "http-op", 1_000_000_000, 2_000_000_000)]);
    let r = c
        .post(&otlp_http)
        .header("content-type", "application/x-protobuf")
        .body(body.encode_to_vec())
        .send()
        .expect("OTLP/HTTP over TLS");
    assert_eq!(r.status(), 200);
    // Zipkin v2 over TLS.
    let zipkin = format!("https://localhost:{}/api/v2/spans", s.zipkin.rsplit(':').next().unwrap());
    let span = serde_json::json!([{"traceId": hex::encode([0xa4u8; 16]), "id": "1", "name": "zipkin-op",
        "timestamp": 1_000_000, "duration": 1, "localEndpoint": {"serviceName": "tls"}}]);
    let r = c.post(&zipkin).header("content-type", "application/json").body(span.to_string()).send();
    assert_eq!(r.expect("Zipkin over TLS").status(), 202);
    for (trace, op) in [([0xa1u8; 16], "grpc-op"), ([0xa2; 16], "http-op"), ([0xa4; 16], "zipkin-op")] {
        let r = c.get(format!("{api}/api/v1/traces/{}", hex::encode(trace))).send().unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["spans"][0]["name"], op, "{v}");
    }
    for addr in [&s.grpc, &s.otlp_http, &s.http, &s.zipkin] {
        assert_eq!(served_certificate(&ca, addr), first);
    }

    // Plain-text clients are told, not left hanging.
    let plain = crate::support::client().get(format!("http://{}/readyz", s.http)).send().unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().unwrap().contains("requires TLS"));
    let err = grpc_export_plaintext(&s.grpc).unwrap_err();
    // tonic shows the GOAWAY's debug data in the error's source.
    assert!(err.contains("requires TLS"), "{err}");

    // A broken update keeps the old certificate; a good one is served to
    // new connections without a restart.
    std::fs::write(&cert, "not a certificate").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(served_certificate(&ca, &s.http), first);
    let second = issue(&ca, dir.path());
    assert_ne!(first, second);
    for addr in [&s.grpc, &s.otlp_http, &s.http, &s.zipkin] {
        eventually(20, || (served_certificate(&ca, addr) == second).then_some(()));
    }
    grpc_export(&ca, &s.grpc, [0xa3; 16]).expect("OTLP/gRPC after the reload");
    s.terminate();
}
