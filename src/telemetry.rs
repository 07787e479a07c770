//! Skein's own telemetry: its log output (`--log-format`), and what
//! `/metrics` says about the process itself (process metrics in the
//! Prometheus client conventions, `skein_build_info`, per-route HTTP
//! latency histograms). The metrics of ingest and storage are registered by
//! their crates; this module adds what only the binary knows.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use clap::ValueEnum;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

/// How log lines are written to stderr (`--log-format`, `SKEIN_LOG_FORMAT`,
/// `log_format` in the config file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal,
    /// so a pipe or a log file gets no escape bytes.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, message, the event's
    /// fields flattened, and `span` with the request's `method`, `route`
    /// and, when the request carried a W3C `traceparent`, its `trace_id`;
    /// with self-tracing, top-level `trace_id` and `span_id` of the
    /// self-traced span the line was logged in).
    Json,
}

/// Installs the global log subscriber: level filter from `SKEIN_LOG`
/// (`info` by default), lines to stderr in `format`. With `self_tracing`,
/// its OpenTelemetry layer too, which has its own filter (so `SKEIN_LOG`
/// does not decide what is traced), and JSON lines logged inside a
/// self-traced span carry its `trace_id` and `span_id`.
pub(crate) fn init_logging(format: LogFormat, self_tracing: Option<&crate::self_tracing::SelfTracing>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKEIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let otel = self_tracing.map(|s| s.layer());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel);
    match format {
        LogFormat::Text => {
            registry.with(fmt.with_ansi(std::io::stderr().is_terminal()).with_filter(filter)).init()
        }
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false);
            registry
                .with(
                    fmt.json()
                        .with_ansi(false)
                        .event_format(crate::self_tracing::OtelIds(json))
                        .with_filter(filter),
                )
                .init()
        }
    }
}

/// Registers what `/metrics` says about the process: `skein_build_info`
/// (value 1, the version as a label) and, on Linux, the process metrics of
/// the Prometheus client conventions (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
/// read from `/proc` on each scrape.
pub(crate) fn register_process(r: &mut Registry) {
    r.register(
        "skein_build",
        "Skein's version; the value is always 1",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    #[cfg(target_os = "linux")]
    r.register_collector(Box::new(process::ProcessCollector));
}

#[cfg(target_os = "linux")]
mod process {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    /// The process metrics, computed at scrape time as the Go and Python
    /// Prometheus clients do; a `/proc` read that fails leaves its metric
    /// out rather than failing the scrape.
    #[derive(Debug)]
    pub(super) struct ProcessCollector;

    fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
        let g = ConstGauge::new(v);
        g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
            if let Ok(stat) = me.stat() {
                let ticks = procfs::ticks_per_second() as f64;
                let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
                cpu.encode(enc.encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds.",
                    None,
                    cpu.metric_type(),
                )?)?;
                let rss = stat.rss.saturating_mul(procfs::page_size()) as f64;
                gauge(&mut enc, "process_resident_memory_bytes", "Resident memory size in bytes.", rss)?;
                gauge(
                    &mut enc,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    stat.vsize as f64,
                )?;
                if let Ok(boot) = procfs::boot_time_secs() {
                    let start = boot as f64 + stat.starttime as f64 / ticks;
                    gauge(
                        &mut enc,
                        "process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.",
                        start,
                    )?;
                }
            }
            if let Ok(n) = me.fd_count() {
                gauge(&mut enc, "process_open_fds", "Number of open file descriptors.", n as f64)?;
            }
            if let Ok(limits) = me.limits() {
                if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
                    gauge(
                        &mut enc,
                        "process_max_fds",
                        "Maximum number of open file descriptors.",
                        max as f64,
                    )?;
                }
            }
            Ok(())
        }
    }
}

/// Labels of one HTTP latency series: the route template as the router
/// matched it (`/api/v1/traces/{trace_id}`, never the raw path, so the
/// series stay few), the method, and the response status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// Per-route request latency of the HTTP servers (API and UI, OTLP/HTTP):
/// `skein_http_request_duration_seconds`.
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    duration: Family<RouteLabels, Histogram>,
}

/// The Prometheus clients' default buckets, plus 30 s (the default query
/// timeout) so that abandoned queries fall in a bucket of their own.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl HttpMetrics {
    /// The histogram family, registered in `r`.
    pub(crate) fn register(r: &mut Registry) -> Arc<HttpMetrics> {
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(BUCKETS.iter().copied())
        });
        r.register(
            "skein_http_request_duration_seconds",
            "Time from request to response headers, by route template, method and status",
            duration.clone(),
        );
        Arc::new(HttpMetrics { duration })
    }
}

/// Methods outside this list are counted as `other`, so a client cannot
/// make new series by inventing methods.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The trace ID of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`),
/// if the request carries a valid one. Whether or not Skein traces itself
/// (`[self_tracing]`), this
/// ties its log lines to the caller's trace.
fn traceparent_trace_id(h: &HeaderMap) -> Option<String> {
    let v = h.get("traceparent")?.to_str().ok()?;
    let mut parts = v.trim().split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let valid = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| trace_id.to_ascii_lowercase())
}

/// Middleware for `Router::route_layer` (which runs after routing, so the
/// route template is known): times each request into
/// [`HttpMetrics`] and runs it inside a `request` span whose fields
/// (`method`, `route`, `trace_id`) every log line of the request carries.
pub(crate) async fn track(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = method_label(req.method());
    let trace_id = traceparent_trace_id(req.headers());
    let span = tracing::info_span!("request", method, route = %route, trace_id = trace_id.as_deref());
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    m.duration.get_or_create(&RouteLabels { method, route, status }).observe(elapsed.as_secs_f64());
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request served"));
    resp
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    use super::*;

    /// `/metrics` as the binary registers it: process metrics, build info,
    /// and the latency of a request under its route template, not its path.
    #[tokio::test]
    async fn test_metrics_of_a_routed_request() {
        let mut r = Registry::default();
        register_process(&mut r);
        let m = HttpMetrics::register(&mut r);
        let app = Router::new()
            .route("/api/v1/traces/{trace_id}", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(m, track));
        let req = axum::http::Request::get("/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736")
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains(&format!("skein_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(
            text.contains(
                "skein_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/traces/{trace_id}\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("4bf92f35"), "raw paths are not labels: {text}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_max_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(text.contains(name), "no {name}in {text}");
            }
        }
    }

    #[test]
    fn test_traceparent() {
        let mut h = HeaderMap::new();
        assert_eq!(traceparent_trace_id(&h), None);
        h.insert("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(traceparent_trace_id(&h).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        h.insert("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(traceparent_trace_id(&h), None);
        h.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(traceparent_trace_id(&h), None);
    }
}
