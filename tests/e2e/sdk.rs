//! A three-service trace with logs, sent by the real Rust OpenTelemetry SDK
//! over each OTLP transport, read back whole through the native API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, Value as OtelValue};
use opentelemetry_otlp::{
    LogExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{json, Value};

use crate::support::Server;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport {
    Grpc,
    HttpProto,
    HttpJson,
}

pub(crate) struct Sdk {
    pub(crate) tracers: SdkTracerProvider,
    pub(crate) loggers: SdkLoggerProvider,
    /// tonic's channel needs a Tokio runtime to live on; dropped last.
    _rt: Option<tokio::runtime::Runtime>,
}

impl Sdk {
    pub(crate) fn flush(&self) {
        self.tracers.force_flush().expect("flush spans");
        self.loggers.force_flush().expect("flush logs");
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        let _ = self.tracers.shutdown();
        let _ = self.loggers.shutdown();
    }
}

/// Tracer and logger providers for one service, exporting to `server`
/// with `headers` (gRPC metadata or HTTP headers) on every export, as
/// `OTEL_EXPORTER_OTLP_HEADERS` would.
pub(crate) fn sdk_with_headers(
    server: &Server,
    t: Transport,
    service: &str,
    headers: &[(&str, &str)],
) -> Sdk {
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes([KeyValue::new("deployment.environment", "e2e"), KeyValue::new("host.cpus", 2i64)])
        .build();
    let mut rt = None;
    let (spans, logs) = match t {
        Transport::Grpc => {
            let r =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let _g = r.enter();
            let ep = format!("http://{}", server.grpc);
            let mut md = tonic::metadata::MetadataMap::new();
            for (k, v) in headers {
                md.insert(
                    tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let out = (
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&ep)
                    .with_metadata(md.clone())
                    .build()
                    .unwrap(),
                LogExporter::builder().with_tonic().with_endpoint(&ep).with_metadata(md).build().unwrap(),
            );
            rt = Some(r);
            out
        }
        Transport::HttpProto | Transport::HttpJson => {
            let p = if matches!(t, Transport::HttpJson) { Protocol::HttpJson } else { Protocol::HttpBinary };
            let h: std::collections::HashMap<String, String> =
                headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (
                SpanExporter::builder()
                    .with_http()
                    .with_headers(h.clone())
                    .with_protocol(p)
                    .with_endpoint(format!("http://{}/v1/traces", server.otlp_http))
                    .build()
                    .unwrap(),
                LogExporter::builder()
                    .with_http()
                    .with_headers(h)
                    .with_protocol(p)
                    .with_endpoint(format!("http://{}/v1/logs", server.otlp_http))
                    .build()
                    .unwrap(),
            )
        }
    };
    Sdk {
        tracers: SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(spans)
            .build(),
        loggers: SdkLoggerProvider::builder().with_resource(resource).with_batch_exporter(logs).build(),
        _rt: rt,
    }
}

pub(crate) fn emit_log(sdk: &Sdk, cx: &Context, sev: Severity, body: &str) {
    let _g = cx.clone().attach();
    let logger = sdk.loggers.logger("e2e");
    let mut r = logger.create_log_record();
    r.set_severity_number(sev);
    r.set_severity_text(sev.name());
    r.set_body(body.to_string().into());
    r.add_attribute("user.id", "alice");
    logger.emit(r);
}

/// What was sent, to compare with what comes back.
pub(crate) struct Sent {
    pub(crate) trace_id: String,
    pub(crate) root_span: String,
    pub(crate) cart_span: String,
    pub(crate) start: SystemTime,
}

/// Sends: frontend `GET /checkout` (SERVER, error) → frontend `call cart`
/// (CLIENT) → cart `cart.Get` (SERVER) → cart `SELECT carts` (CLIENT) →
/// postgres `query` (SERVER); logs inside the root and the cart span.
/// `base` offsets every timestamp, so tests can place traces in time.
pub(crate) fn send_checkout(server: &Server, t: Transport, base: SystemTime) -> Sent {
    send_checkout_with_headers(server, t, base, &[])
}

/// [`send_checkout`] with `headers` on every export (a token, a tenant).
pub(crate) fn send_checkout_with_headers(
    server: &Server,
    t: Transport,
    base: SystemTime,
    headers: &[(&str, &str)],
) -> Sent {
    let fe = sdk_with_headers(server, t, "frontend", headers);
    let cart = sdk_with_headers(server, t, "cart", headers);
    let pg = sdk_with_headers(server, t, "postgres", headers);
    let ms = |n: u64| base + Duration::from_millis(n);

    let linked = SpanContext::new(
        opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        opentelemetry::trace::SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let fe_tracer = fe.tracers.tracer("e2e");
    let mut root = fe_tracer
        .span_builder("GET /checkout")
        .with_kind(SpanKind::Server)
        .with_start_time(ms(0))
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 500i64),
            KeyValue::new("app.ratio", 0.25f64),
            KeyValue::new("app.cached", false),
            KeyValue::new("app.tags", OtelValue::Array(Array::String(vec!["a".into(), "b".into()]))),
        ])
        .with_links(vec![Link::new(linked, vec![KeyValue::new("link.kind", "follows")], 0)])
        .start_with_context(&fe_tracer, &Context::new());
    root.add_event_with_timestamp("cache-miss", ms(5), vec![KeyValue::new("cache.key", "cart:alice")]);
    root.set_status(Status::error("payment failed"));
    let trace_id = root.span_context().trace_id().to_string();
    let root_span = root.span_context().span_id().to_string();
    let root_cx = Context::new().with_span(root);
    emit_log(&fe, &root_cx, Severity::Info, "checkout started for alice");

    let mut call = fe_tracer
        .span_builder("call cart")
        .with_kind(SpanKind::Client)
        .with_start_time(ms(10))
        .start_with_context(&fe_tracer, &root_cx);
    call.set_attribute(KeyValue::new("rpc.system", "grpc"));
    let call_cx = root_cx.with_span(call);

    let cart_tracer = cart.tracers.tracer("e2e");
    let cart_get = cart_tracer
        .span_builder("cart.Get")
        .with_kind(SpanKind::Server)
        .with_start_time(ms(20))
        .with_attributes([KeyValue::new("cart.items", 3i64)])
        .start_with_context(&cart_tracer, &call_cx);
    let cart_span = cart_get.span_context().span_id().to_string();
    let cart_cx = call_cx.with_span(cart_get);
    emit_log(&cart, &cart_cx, Severity::Warn, "cart lookup slow: connection timeout retried");

    let sel = cart_tracer
        .span_builder("SELECT carts")
        .with_kind(SpanKind::Client)
        .with_start_time(ms(30))
        .with_attributes([KeyValue::new("db.system", "postgresql")])
        .start_with_context(&cart_tracer, &cart_cx);
    let sel_cx = cart_cx.with_span(sel);
    let pg_tracer = pg.tracers.tracer("e2e");
    let mut q = pg_tracer
        .span_builder("query")
        .with_kind(SpanKind::Server)
        .with_start_time(ms(35))
        .start_with_context(&pg_tracer, &sel_cx);
    q.end_with_timestamp(ms(180));
    sel_cx.span().end_with_timestamp(ms(190));
    cart_cx.span().end_with_timestamp(ms(200));
    call_cx.span().end_with_timestamp(ms(210));
    root_cx.span().end_with_timestamp(ms(300));

    for s in [&fe, &cart, &pg] {
        s.flush();
    }
    Sent { trace_id, root_span, cart_span, start: base }
}

pub(crate) fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

pub(crate) fn check_trace(server: &Server, sent: &Sent) {
    let v = crate::support::eventually(20, || {
        let (s, v) = server.api(&format!("/api/v1/traces/{}", sent.trace_id));
        (s == 200 && v["spans"].as_array()?.len() == 5 && v["logs"].as_array()?.len() == 2).then_some(v)
    });
    assert_eq!(v["trace_id"], sent.trace_id);
    let spans = v["spans"].as_array().unwrap();
    let by_name = |n: &str| spans.iter().find(|s| s["name"] == n).unwrap_or_else(|| panic!("span {n}"));
    let root = by_name("GET /checkout");
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["span_id"], sent.root_span);
    assert_eq!(root["kind"], "SERVER");
    assert_eq!(root["service_name"], "frontend");
    assert_eq!(root["status"], json!({"code": "ERROR", "message": "payment failed"}));
    assert_eq!(root["duration_ns"], 300_000_000u64);
    assert_eq!(root["start_time_unix_nano"], unix_ns(sent.start).to_string());
    let a = &root["attributes"];
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.response.status_code"], 500);
    assert_eq!(a["app.ratio"], 0.25);
    assert_eq!(a["app.cached"], false);
    assert_eq!(a["app.tags"], json!(["a", "b"]));
    assert_eq!(root["resource"]["service.name"], "frontend");
    assert_eq!(root["resource"]["deployment.environment"], "e2e");
    assert_eq!(root["resource"]["host.cpus"], 2);
    assert_eq!(root["scope"]["name"], "e2e");
    assert_eq!(root["events"][0]["name"], "cache-miss");
    assert_eq!(root["events"][0]["attributes"]["cache.key"], "cart:alice");
    assert_eq!(root["events"][0]["time_unix_nano"], (unix_ns(sent.start) + 5_000_000).to_string());
    assert_eq!(root["links"][0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(root["links"][0]["span_id"], "b7ad6b7169203331");
    assert_eq!(root["links"][0]["attributes"]["link.kind"], "follows");

    let call = by_name("call cart");
    assert_eq!(call["kind"], "CLIENT");
    assert_eq!(call["parent_span_id"], root["span_id"]);
    let cart = by_name("cart.Get");
    assert_eq!(cart["service_name"], "cart");
    assert_eq!(cart["parent_span_id"], call["span_id"]);
    assert_eq!(cart["attributes"]["cart.items"], 3);
    assert_eq!(cart["status"]["code"], "UNSET");
    let sel = by_name("SELECT carts");
    assert_eq!(sel["parent_span_id"], cart["span_id"]);
    let q = by_name("query");
    assert_eq!(q["service_name"], "postgres");
    assert_eq!(q["parent_span_id"], sel["span_id"]);
    assert_eq!(q["duration_ns"], 145_000_000u64);

    let logs = v["logs"].as_array().unwrap();
    let fe_log = logs.iter().find(|l| l["service_name"] == "frontend").expect("frontend log");
    assert_eq!(fe_log["body"], "checkout started for alice");
    assert_eq!(fe_log["trace_id"], sent.trace_id);
    assert_eq!(fe_log["span_id"], sent.root_span);
    assert_eq!(fe_log["severity_number"], 9);
    assert_eq!(fe_log["severity_text"], "INFO");
    assert_eq!(fe_log["attributes"]["user.id"], "alice");
    assert_eq!(fe_log["resource"]["deployment.environment"], "e2e");
    let cart_log = logs.iter().find(|l| l["service_name"] == "cart").expect("cart log");
    assert_eq!(cart_log["span_id"], sent.cart_span);
    assert_eq!(cart_log["severity_text"], "WARN");
}

fn round_trip(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let sent = send_checkout(&server, t, SystemTime::now() - Duration::from_secs(60));
    // Read from the head, then again from a segment.
    check_trace(&server, &sent);
    server.flush();
    check_trace(&server, &sent);
}

#[test]
fn grpc_trace_with_logs_round_trips() {
    round_trip(Transport::Grpc);
}

#[test]
fn http_protobuf_trace_with_logs_round_trips() {
    round_trip(Transport::HttpProto);
}

#[test]
fn http_json_trace_with_logs_round_trips() {
    round_trip(Transport::HttpJson);
}
