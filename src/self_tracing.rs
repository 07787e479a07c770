//! Self-tracing (`[self_tracing]`, docs/operations.md "Self-telemetry"):
//! Skein's own query, flush, upload and compaction paths as OpenTelemetry
//! spans, exported over OTLP to this process's own gRPC receiver or to any
//! other OTLP endpoint, and the trace and span IDs on JSON log lines.
//!
//! The spans are ordinary `tracing` spans (`info_span!`,
//! `#[tracing::instrument]`) in the query engine and in storage's read,
//! flush and compaction code; `tracing-opentelemetry` turns the ones
//! [`exported`] lets through into OpenTelemetry spans, and the SDK's batch
//! span processor (bounded queue, its own thread) sends them with
//! `opentelemetry-otlp`.
//!
//! Ingest never produces an exported span: with the endpoint pointing at
//! Skein itself, each export would be received as an ingest request, whose
//! spans would be exported again, and so on for ever. [`exported`] is an
//! allowlist of the query and storage-maintenance targets, and the OTLP,
//! Zipkin, Elasticsearch and Loki receivers (`skein_collector`), the WAL
//! and the head are refused even if a span is added there later.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tracing::{Instrument as _, Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How spans travel to the endpoint, as `OTEL_EXPORTER_OTLP_PROTOCOL`
/// names them (OpenTelemetry specification, "OTLP Exporter
/// Configuration").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub(crate) enum ExportProtocol {
    /// OTLP/gRPC (`http://host:4317`).
    #[default]
    #[serde(rename = "grpc")]
    #[value(name = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http://host:4318`; `/v1/traces`
    /// is added when the URL has no path).
    #[serde(rename = "http/protobuf")]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    #[value(name = "http/json")]
    HttpJson,
}

/// `[self_tracing]`: whether and where Skein sends spans of its own work.
/// Off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SelfTracingConfig {
    /// Trace the query, flush, upload and compaction paths
    /// (`--self-tracing`, `SKEIN_SELF_TRACING`).
    pub(crate) enabled: bool,
    /// Where spans go: an `http://` or `https://` URL of an OTLP receiver
    /// (`--self-tracing-endpoint`, `SKEIN_SELF_TRACING_ENDPOINT`). Unset:
    /// this process's own OTLP/gRPC listener, so Skein stores its own
    /// traces (service `service_name`).
    pub(crate) endpoint: Option<String>,
    /// The OTLP transport of `endpoint` (ignored without one: the own
    /// listener is gRPC).
    pub(crate) protocol: ExportProtocol,
    /// Share of traces that start in Skein (a query without a sampled
    /// `traceparent`, a flush, a compaction) that are recorded, 0 to 1
    /// (`--self-tracing-sample-ratio`). Parent-based: a query whose W3C
    /// `traceparent` says sampled is always traced, one that says not
    /// sampled never is, so a caller's trace is whole or absent.
    pub(crate) sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub(crate) service_name: String,
    /// The `service.instance.id` resource attribute [default: the host
    /// name].
    pub(crate) instance_id: Option<String>,
    /// More resource attributes (`deployment.environment = "prod"`);
    /// `OTEL_RESOURCE_ATTRIBUTES` is read too, these win.
    pub(crate) resource_attributes: BTreeMap<String, String>,
    /// Headers (gRPC metadata) sent with every export, e.g.
    /// `authorization = "Bearer ..."` when the receiver wants a token, or
    /// `X-Scope-OrgID` for a tenant.
    pub(crate) headers: BTreeMap<String, String>,
    /// Finished spans waiting for export; past it new spans are dropped
    /// (the SDK logs the first drop, and the total at shutdown).
    pub(crate) max_queue_size: usize,
    /// Spans per export request (at most `max_queue_size`).
    pub(crate) max_export_batch_size: usize,
    /// How long a span may wait in the queue before a smaller batch is
    /// sent.
    #[serde(with = "humantime_serde")]
    pub(crate) schedule_delay: Duration,
    /// Time for one export, retries included.
    #[serde(with = "humantime_serde")]
    pub(crate) export_timeout: Duration,
}

impl Default for SelfTracingConfig {
    fn default() -> Self {
        // The queue and batch sizes and the 5 s delay are the SDK's
        // (`OTEL_BSP_*` defaults of the specification).
        SelfTracingConfig {
            enabled: false,
            endpoint: None,
            protocol: ExportProtocol::Grpc,
            sample_ratio: 1.0,
            service_name: "skein".into(),
            instance_id: None,
            resource_attributes: BTreeMap::new(),
            headers: BTreeMap::new(),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl SelfTracingConfig {
    /// Explains settings that cannot work.
    ///
    /// # Errors
    /// A ratio outside 0..=1, an endpoint that is not an http(s) URL, a
    /// zero queue, batch or duration, a batch larger than the queue, an
    /// empty service name, or (`tls`: the listeners serve TLS) no endpoint
    /// while the own listener needs TLS, which the exporter does not speak.
    pub(crate) fn check(&self, tls: bool) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!("self_tracing.sample_ratio ({}) must be between 0 and 1", self.sample_ratio);
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("self_tracing.endpoint {e:?}: expected an http:// or https:// URL of an OTLP receiver");
            }
        }
        if self.max_queue_size == 0 || self.max_export_batch_size == 0 {
            bail!("self_tracing.max_queue_size and max_export_batch_size must be at least 1");
        }
        if self.max_export_batch_size > self.max_queue_size {
            bail!(
                "self_tracing.max_export_batch_size ({}) must not exceed max_queue_size ({})",
                self.max_export_batch_size,
                self.max_queue_size
            );
        }
        if self.schedule_delay.is_zero() || self.export_timeout.is_zero() {
            bail!("self_tracing.schedule_delay and export_timeout must be more than 0");
        }
        if self.service_name.trim().is_empty() {
            bail!("self_tracing.service_name must not be empty");
        }
        if self.enabled && tls && self.endpoint.is_none() {
            bail!(
                "self_tracing to this process needs a plain-text OTLP listener, but the listeners serve TLS; \
                 set self_tracing.endpoint to a plain-text OTLP receiver"
            );
        }
        Ok(())
    }

    /// The trace export URL for `protocol`: OTLP/HTTP's signal path is
    /// added to a URL without a path, as the specification says of
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    fn export_url(endpoint: &str, protocol: ExportProtocol) -> String {
        let after_scheme = endpoint.split_once("://").map_or(endpoint, |x| x.1);
        let has_path = after_scheme.split_once('/').is_some_and(|(_, p)| !p.is_empty());
        match protocol {
            ExportProtocol::Grpc => endpoint.to_string(),
            _ if has_path => endpoint.to_string(),
            _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        }
    }
}

/// Targets whose spans are exported: the query HTTP span made here, the
/// query engine, and storage's reads, flush (`lifecycle`), compaction and
/// object-store transfers. A target matches itself and its submodules.
const EXPORTED_TARGETS: &[&str] = &[
    "skein::self_tracing",
    "skein_query",
    "skein_storage::read",
    "skein_storage::lifecycle",
    "skein_storage::compact",
    "skein_storage::remote",
];

/// The ingest path, refused whatever [`EXPORTED_TARGETS`] says: exporting
/// its spans to this process would make each export produce the next.
const INGEST_TARGETS: &[&str] = &[
    "skein_collector",
    "skein_storage::wal",
    "skein_storage::head",
    "skein_storage::ingest",
    "skein::auth",
    "skein::server",
];

fn under(target: &str, prefix: &str) -> bool {
    target.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Whether a span (or an event, which becomes an event of its span) goes
/// to the OpenTelemetry layer: INFO or more severe, from an
/// [`EXPORTED_TARGETS`] target and none of [`INGEST_TARGETS`]. Libraries'
/// spans (hyper, h2, tonic: the exporter's own requests among them) are
/// never exported. DEBUG spans (per-candidate reads of a search) stay out
/// so a search is a handful of spans, not one per trace it reads.
pub(crate) fn exported(meta: &Metadata<'_>) -> bool {
    let t = meta.target();
    *meta.level() <= Level::INFO
        && EXPORTED_TARGETS.iter().any(|p| under(t, p))
        && !INGEST_TARGETS.iter().any(|p| under(t, p))
}

/// `/metrics` of the exporter: `skein_self_tracing_spans_exported_total`,
/// `skein_self_tracing_spans_failed_total` (an export that failed after
/// its retries) and `skein_self_tracing_spans_unsent_total` (ended before
/// the exporter was started). Spans dropped because the queue was full are
/// not counted here: the SDK does not expose that count (it logs a warning
/// at the first drop and the total at shutdown).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportMetrics {
    exported: Counter,
    failed: Counter,
    unsent: Counter,
}

impl ExportMetrics {
    /// Registers the counters in `r`.
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "skein_self_tracing_spans_exported",
            "Spans of Skein's own work sent to the self-tracing endpoint",
            self.exported.clone(),
        );
        r.register(
            "skein_self_tracing_spans_failed",
            "Spans of Skein's own work whose export failed after retries",
            self.failed.clone(),
        );
        r.register(
            "skein_self_tracing_spans_unsent",
            "Spans of Skein's own work ended before the exporter started",
            self.unsent.clone(),
        );
    }
}

/// The exporter behind the batch processor, filled in once the listeners
/// are bound ([`SelfTracing::start`]): the default endpoint is the gRPC
/// listener's real address, which a port of 0 leaves unknown until then,
/// while the log subscriber (and so the OpenTelemetry layer) starts first.
#[derive(Debug, Clone)]
struct Deferred {
    inner: Arc<OnceLock<opentelemetry_otlp::SpanExporter>>,
    resource: Arc<Mutex<Option<Resource>>>,
    metrics: ExportMetrics,
    /// Set once this process's own receiver has closed: what is left is
    /// counted as unsent instead of being retried against a closed port.
    closed: Arc<AtomicBool>,
}

impl opentelemetry_sdk::trace::SpanExporter for Deferred {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let Some(e) = self.inner.get().filter(|_| !self.closed.load(Ordering::Relaxed)) else {
            self.metrics.unsent.inc_by(n);
            return Ok(());
        };
        let r = e.export(batch).await;
        match r {
            Ok(()) => self.metrics.exported.inc_by(n),
            Err(_) => self.metrics.failed.inc_by(n),
        };
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.get().map_or(Ok(()), |e| e.shutdown_with_timeout(timeout))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.get().map_or(Ok(()), |e| e.force_flush())
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.lock().expect("lock") = Some(resource.clone());
    }
}

/// The running self-tracing pipeline: the tracer provider the
/// OpenTelemetry layer records into, and the exporter slot
/// [`SelfTracing::start`] fills.
#[derive(Debug)]
pub(crate) struct SelfTracing {
    cfg: SelfTracingConfig,
    provider: SdkTracerProvider,
    exporter: Deferred,
    /// Its counters, for `/metrics`.
    pub(crate) metrics: ExportMetrics,
}

/// This host's name, for `service.instance.id` and `host.name`.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

impl SelfTracing {
    /// The provider (batch processor thread started, exporter not yet) for
    /// `cfg`, which must be enabled and checked.
    pub(crate) fn new(cfg: SelfTracingConfig) -> SelfTracing {
        let metrics = ExportMetrics::default();
        let exporter = Deferred {
            inner: Arc::new(OnceLock::new()),
            resource: Arc::default(),
            metrics: metrics.clone(),
            closed: Arc::default(),
        };
        let host = host_name();
        let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
        if let Some(h) = &host {
            attrs.push(KeyValue::new("host.name", h.clone()));
        }
        if let Some(id) = cfg.instance_id.clone().or(host) {
            attrs.push(KeyValue::new("service.instance.id", id));
        }
        attrs.extend(cfg.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
        let resource =
            Resource::builder().with_service_name(cfg.service_name.clone()).with_attributes(attrs).build();
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size)
            .with_max_export_batch_size(cfg.max_export_batch_size)
            .with_scheduled_delay(cfg.schedule_delay)
            .build();
        let processor = BatchSpanProcessor::builder(exporter.clone()).with_batch_config(batch).build();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio))))
            .with_span_processor(processor)
            .build();
        SelfTracing { cfg, provider, exporter, metrics }
    }

    /// The layer for the log subscriber: spans [`exported`] lets through
    /// become OpenTelemetry spans of this provider; entering one makes its
    /// context current, which [`OtelIds`] reads.
    pub(crate) fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        // Thread names and IDs say little about an async query; `busy_ns`
        // and `idle_ns` (time polled and waiting) and the code location
        // stay.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("skein"))
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    }

    /// The endpoint spans go to: the configured one, or the gRPC listener
    /// at `own_grpc` (an unspecified address is reached on loopback).
    /// Whether spans go to a configured endpoint rather than to this
    /// process's own OTLP/gRPC listener.
    pub(crate) fn has_endpoint(&self) -> bool {
        self.cfg.endpoint.is_some()
    }

    pub(crate) fn endpoint(&self, own_grpc: std::net::SocketAddr) -> (String, ExportProtocol) {
        match &self.cfg.endpoint {
            Some(e) => (SelfTracingConfig::export_url(e, self.cfg.protocol), self.cfg.protocol),
            None => {
                let mut a = own_grpc;
                if a.ip().is_unspecified() {
                    a.set_ip(if a.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                (format!("http://{a}"), ExportProtocol::Grpc)
            }
        }
    }

    /// Builds the OTLP exporter for [`SelfTracing::endpoint`] and starts
    /// sending. Call inside the Tokio runtime (the gRPC channel runs on
    /// it).
    ///
    /// # Errors
    /// The exporter cannot be built (a header that is not a valid header).
    pub(crate) fn start(&self, own_grpc: std::net::SocketAddr) -> Result<String> {
        let (url, protocol) = self.endpoint(own_grpc);
        let mut e = match protocol {
            ExportProtocol::Grpc => {
                let mut md = tonic::metadata::MetadataMap::new();
                for (k, v) in &self.cfg.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .with_context(|| format!("self_tracing.headers: {k:?} is not a header name"))?;
                    let value = v
                        .parse()
                        .map_err(|_| anyhow::anyhow!("self_tracing.headers.{k}: not a valid header value"))?;
                    md.insert(key, value);
                }
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(url.clone())
                    .with_timeout(self.cfg.export_timeout)
                    .with_metadata(md)
                    .build()?
            }
            p => {
                let headers: std::collections::HashMap<String, String> =
                    self.cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let (url, timeout) = (url.clone(), self.cfg.export_timeout);
                let proto =
                    if p == ExportProtocol::HttpJson { Protocol::HttpJson } else { Protocol::HttpBinary };
                // The blocking HTTP client may not be built on a runtime
                // thread (it runs a runtime of its own).
                std::thread::spawn(move || {
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_endpoint(url)
                        .with_protocol(proto)
                        .with_timeout(timeout)
                        .with_headers(headers)
                        .build()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("building the OTLP/HTTP exporter panicked"))??
            }
        };
        use opentelemetry_sdk::trace::SpanExporter as _;
        if let Some(r) = self.exporter.resource.lock().expect("lock").as_ref() {
            e.set_resource(r);
        }
        let _ = self.exporter.inner.set(e);
        Ok(url)
    }

    /// Sends what the queue holds now (before the listeners close, so
    /// spans bound for this process still find its receiver). Blocking.
    pub(crate) fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "self-tracing: flushing spans failed");
        }
    }

    /// Flushes and stops the batch processor. Blocking, at most about
    /// `export_timeout`. Spans bound for this process's own receiver, which
    /// has closed by now (the last flush's), are dropped and counted as
    /// unsent.
    pub(crate) fn shutdown(&self) {
        if self.cfg.endpoint.is_none() {
            self.exporter.closed.store(true, Ordering::Relaxed);
        }
        if let Err(e) = self.provider.shutdown_with_timeout(self.cfg.export_timeout) {
            tracing::warn!(error = %e, "self-tracing: shutting down the exporter failed");
        }
    }
}

/// Reads W3C trace context headers from a request.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Probes and scrapes, which come every few seconds and read nothing
/// worth a trace.
const UNTRACED_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Middleware for the query listener's router (`route_layer`, outside
/// `telemetry::track`): each request but [`UNTRACED_ROUTES`] runs in a
/// SERVER span named
/// `METHOD route` with the HTTP semantic-convention attributes
/// (`http.request.method`, `http.route`, `url.path`,
/// `http.response.status_code`; status error on a 5xx, as the conventions
/// say for servers). A valid W3C `traceparent` (and `tracestate`) becomes
/// its parent, so a caller's trace continues into Skein.
pub(crate) async fn server_span(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    if UNTRACED_ROUTES.contains(&route.as_str()) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let resp = next.run(req).instrument(span.clone()).await;
    // As i64: tracing-opentelemetry turns a u64 into a string.
    span.record("http.response.status_code", i64::from(resp.status().as_u16()));
    if resp.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    resp
}

/// A JSON event format that adds the current self-traced span's
/// `trace_id` and `span_id` (lowercase hex, as OTLP/JSON and Tempo show
/// them) to each line logged inside one, when that span is sampled (so
/// the ID names a trace that was recorded). Lines outside any such span
/// are the inner format's, unchanged.
#[derive(Debug)]
pub(crate) struct OtelIds<F>(pub(crate) F);

impl<S, N, F> FormatEvent<S, N> for OtelIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        // The OpenTelemetry layer makes the context of the innermost
        // exported span current while it is entered.
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() || !sc.is_sampled() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(open) => {
                writeln!(
                    writer,
                    "{open},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                    sc.trace_id(),
                    sc.span_id()
                )
            }
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;

    use super::*;

    /// Keeps what it is given (the SDK's in-memory exporter is behind a
    /// feature of its own).
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// The config's defaults, and the checks that explain bad settings.
    #[test]
    fn test_config_defaults_and_checks() {
        let c: SelfTracingConfig = toml::from_str("").unwrap();
        assert_eq!(c, SelfTracingConfig::default());
        assert!(!c.enabled);
        assert_eq!((c.service_name.as_str(), c.sample_ratio, c.max_queue_size), ("skein", 1.0, 2048));
        c.check(false).unwrap();
        let c: SelfTracingConfig = toml::from_str(
            "enabled = true\nendpoint = \"http://collector:4318\"\nprotocol = \"http/protobuf\"\n\
             sample_ratio = 0.25\nmax_queue_size = 100\nmax_export_batch_size = 10\nschedule_delay = \"200ms\"\n\
             [resource_attributes]\n\"deployment.environment\" = \"prod\"\n[headers]\nauthorization = \"Bearer x\"",
        )
        .unwrap();
        assert_eq!(
            (c.protocol, c.sample_ratio, c.schedule_delay),
            (ExportProtocol::HttpProtobuf, 0.25, Duration::from_millis(200))
        );
        assert_eq!(c.resource_attributes["deployment.environment"], "prod");
        c.check(true).unwrap();
        for (text, hint) in [
            ("sample_ratio = 1.5", "between 0 and 1"),
            ("endpoint = \"collector:4317\"", "http:// or https://"),
            ("max_queue_size = 0", "at least 1"),
            ("max_queue_size = 10\nmax_export_batch_size = 20", "must not exceed"),
            ("schedule_delay = \"0s\"", "more than 0"),
            ("service_name = \" \"", "must not be empty"),
        ] {
            let c: SelfTracingConfig = toml::from_str(text).unwrap();
            let err = c.check(false).unwrap_err().to_string();
            assert!(err.contains(hint), "{text}: {err}");
        }
        let c: SelfTracingConfig = toml::from_str("enabled = true").unwrap();
        assert!(c.check(true).unwrap_err().to_string().contains("TLS"));
        assert!(toml::from_str::<SelfTracingConfig>("endpont = \"http://x\"").is_err(), "unknown keys");
        assert!(toml::from_str::<SelfTracingConfig>("protocol = \"thrift\"").is_err());
    }

    #[test]
    fn test_export_url_and_default_endpoint() {
        let url = SelfTracingConfig::export_url;
        assert_eq!(url("http://c:4318", ExportProtocol::HttpProtobuf), "http://c:4318/v1/traces");
        assert_eq!(url("http://c:4318/", ExportProtocol::HttpJson), "http://c:4318/v1/traces");
        assert_eq!(
            url("http://c:4318/otlp/v1/traces", ExportProtocol::HttpProtobuf),
            "http://c:4318/otlp/v1/traces"
        );
        assert_eq!(url("http://c:4317", ExportProtocol::Grpc), "http://c:4317");
        let st = SelfTracing::new(SelfTracingConfig { enabled: true, ..Default::default() });
        let (e, p) = st.endpoint("0.0.0.0:4317".parse().unwrap());
        assert_eq!((e.as_str(), p), ("http://127.0.0.1:4317", ExportProtocol::Grpc));
        let (e, _) = st.endpoint("[::]:4317".parse().unwrap());
        assert_eq!(e, "http://[::1]:4317");
        st.shutdown();
    }

    /// The filter: query and flush/compaction spans are exported; ingest
    /// spans (receivers, WAL, head), the ingest listeners' request spans,
    /// libraries' spans and DEBUG spans are not.
    #[test]
    fn test_ingest_spans_are_not_exported() {
        let exporter = Collect::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("t"))
            .with_filter(tracing_subscriber::filter::filter_fn(exported));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!(target: "skein_query::engine", "engine.trace").in_scope(|| {
                tracing::info_span!(target: "skein_storage::read", "storage.get_trace").in_scope(|| {
                    // Nested inside a query, still never exported.
                    tracing::info_span!(target: "skein_storage::wal", "wal.append").in_scope(|| {});
                    tracing::info_span!(target: "h2::proto", "h2.stream").in_scope(|| {});
                    tracing::debug_span!(target: "skein_storage::read", "storage.read_trace").in_scope(|| {});
                });
            });
            tracing::info_span!(target: "skein_storage::lifecycle", "storage.flush").in_scope(|| {});
            tracing::info_span!(target: "skein_storage::compact", "storage.compact").in_scope(|| {});
            tracing::info_span!(target: "skein_storage::remote", "storage.upload").in_scope(|| {});
            tracing::info_span!(target: "skein_collector::grpc", "otlp.export").in_scope(|| {
                tracing::info_span!(target: "skein_storage::ingest", "storage.append").in_scope(|| {});
                tracing::info_span!(target: "skein_storage::head", "head.insert").in_scope(|| {});
            });
            tracing::info_span!(target: "skein::telemetry", "request").in_scope(|| {});
            tracing::info_span!(target: "skein::auth", "auth").in_scope(|| {});
        });
        provider.force_flush().unwrap();
        let finished = exporter.0.lock().unwrap().clone();
        let mut names: Vec<String> = finished.iter().map(|s| s.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            ["engine.trace", "storage.compact", "storage.flush", "storage.get_trace", "storage.upload"],
            "only query and maintenance spans"
        );
        let get = finished.iter().find(|s| s.name == "storage.get_trace").unwrap();
        let engine = finished.iter().find(|s| s.name == "engine.trace").unwrap();
        assert_eq!(get.parent_span_id, engine.span_context.span_id(), "nesting kept across filtered spans");
    }

    /// A buffer the fmt layer writes lines into.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// JSON lines inside an exported, sampled span carry its IDs as the
    /// stored span has them; lines outside (or in an unsampled trace) are
    /// the plain JSON format.
    #[test]
    fn test_json_lines_carry_the_span_ids() {
        for ratio in [1.0, 0.0] {
            let exporter = Collect::default();
            let provider = SdkTracerProvider::builder()
                .with_sampler(Sampler::TraceIdRatioBased(ratio))
                .with_simple_exporter(exporter.clone())
                .build();
            let otel = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("t"))
                .with_filter(tracing_subscriber::filter::filter_fn(exported));
            let out = Lines::default();
            let w = out.clone();
            let json = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(true);
            let fmt = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || w.clone())
                .event_format(OtelIds(json));
            let subscriber = tracing_subscriber::registry().with(otel).with(fmt);
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(target: "skein_query", "outside");
                tracing::info_span!(target: "skein_query::engine", "engine.trace").in_scope(|| {
                    // Not exported itself: the line names the exported one.
                    tracing::info_span!(target: "skein::telemetry", "request", route = "/x").in_scope(|| {
                        tracing::info!(target: "skein::telemetry", n = 1, "inside");
                    });
                });
            });
            provider.force_flush().unwrap();
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<serde_json::Value> =
                text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(lines.len(), 2, "{text}");
            assert!(lines[0].get("trace_id").is_none(), "{text}");
            assert_eq!((&lines[1]["message"], &lines[1]["n"]), (&"inside".into(), &1.into()), "{text}");
            assert_eq!(lines[1]["span"]["route"], "/x", "the line's own span stays: {text}");
            let spans = exporter.0.lock().unwrap().clone();
            if ratio == 1.0 {
                let sc = &spans.iter().find(|s| s.name == "engine.trace").unwrap().span_context;
                assert_eq!(lines[1]["trace_id"], sc.trace_id().to_string(), "{text}");
                assert_eq!(lines[1]["span_id"], sc.span_id().to_string(), "{text}");
            } else {
                assert!(spans.is_empty());
                assert!(lines[1].get("trace_id").is_none(), "an unsampled trace is not named: {text}");
            }
        }
    }

    #[test]
    fn test_under_matches_whole_path_segments() {
        assert!(under("skein_query", "skein_query"));
        assert!(under("skein_query::engine::search", "skein_query"));
        assert!(!under("skein_queryx", "skein_query"));
        assert!(!under("skein_storage::reader", "skein_storage::read"));
    }
}
