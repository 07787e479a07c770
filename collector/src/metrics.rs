//! The receivers' Prometheus metrics: every ingest request and what became
//! of it, per signal, protocol and reason.
//!
//! For each signal and protocol: `received = accepted + refused` in
//! requests, counted where every answer passes (the admission layer in
//! front of both receivers), and for the records of accepted requests
//! `accepted = stored + dropped`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{METHOD_NOT_ALLOWED, OTHER};
use crate::{IngestError, Logs, MemoryLimit, Signal, Traces};

/// Label pairs, in the order they are written.
type Labels = Vec<(&'static str, &'static str)>;

/// The `signal` label of a request to no ingest endpoint.
pub(crate) const OTHER_SIGNAL: &str = "other";

/// The reason label of records of an accepted request that were invalid
/// (bad ID length, all-zero trace ID) and left out, as reported in
/// `partial_success`.
pub(crate) const INVALID: &str = "invalid";

/// The wire a request came over: the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP (protobuf or JSON).
    Http,
    /// Zipkin v2 (`POST /api/v2/spans` on its own listener).
    Zipkin,
}

impl Protocol {
    /// The label value: `grpc` or `http`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
            Protocol::Zipkin => "zipkin",
        }
    }
}

/// The receivers' counters and gauges; names and help texts are in
/// [`CollectorMetrics::register`].
#[derive(Debug, Default)]
pub struct CollectorMetrics {
    /// Requests received, by signal and protocol.
    pub received_requests: Family<Labels, Counter>,
    /// Requests refused whole (nothing stored), by signal, protocol and
    /// reason: every error answer a client got.
    pub refused_requests: Family<Labels, Counter>,
    /// Records in accepted requests, by signal and protocol.
    pub accepted_records: Family<Labels, Counter>,
    /// Records made durable, by signal and protocol.
    pub stored_records: Family<Labels, Counter>,
    /// Records of accepted requests left out, by signal, protocol and
    /// reason.
    pub dropped_records: Family<Labels, Counter>,
    /// Bytes of request bodies reserved in the in-flight budget now.
    pub inflight_bytes: Gauge,
    /// The in-flight budget, bytes.
    pub inflight_limit_bytes: Gauge,
    /// The last reading of resident memory as the limit counts it
    /// ([`crate::resident_bytes`]), bytes.
    pub resident_bytes: Gauge,
    /// The memory limits, bytes, by `limit` (`hard`, `soft`); absent
    /// without a limit.
    pub memory_limit_bytes: Family<Labels, Gauge>,
    /// Content cut by `[collector.limits]`, by signal and limit.
    pub limited: Family<Labels, Counter>,
}

const SIGNALS: [&str; 2] = [Traces::RECORDS, Logs::RECORDS];
const PROTOCOLS: [Protocol; 2] = [Protocol::Grpc, Protocol::Http];

impl CollectorMetrics {
    /// Adds the metrics to `r`: `skein_received_requests`,
    /// `skein_refused_requests`, `skein_accepted_records`,
    /// `skein_stored_records`, `skein_dropped_records` (counters, written
    /// with `_total`), `skein_ingest_inflight_bytes`,
    /// `skein_ingest_inflight_limit_bytes`, `skein_memory_resident_bytes`
    /// and `skein_memory_limit_bytes{limit}`. Every label value a request
    /// to an ingest endpoint can take is present at zero from the start (a
    /// series that appears only on its first event breaks `rate()` and
    /// alerts on absence).
    pub fn register(&self, r: &mut Registry) {
        for p in PROTOCOLS.map(Protocol::label) {
            for s in SIGNALS {
                let _ = self.received_requests.get_or_create(&vec![("signal", s), ("protocol", p)]);
                let _ = self.accepted_records.get_or_create(&vec![("signal", s), ("protocol", p)]);
                let _ = self.stored_records.get_or_create(&vec![("signal", s), ("protocol", p)]);
                let _ = self.dropped_records.get_or_create(&vec![
                    ("signal", s),
                    ("protocol", p),
                    ("reason", INVALID),
                ]);
                for reason in IngestError::REASONS.into_iter().chain([METHOD_NOT_ALLOWED, OTHER]) {
                    let _ = self.refused_requests.get_or_create(&vec![
                        ("signal", s),
                        ("protocol", p),
                        ("reason", reason),
                    ]);
                }
            }
            let _ = self.received_requests.get_or_create(&vec![("signal", OTHER_SIGNAL), ("protocol", p)]);
            for reason in ["unauthenticated", "forbidden", "malformed"] {
                let _ = self.refused_requests.get_or_create(&vec![
                    ("signal", OTHER_SIGNAL),
                    ("protocol", p),
                    ("reason", reason),
                ]);
            }
            for reason in ["unknown_path", METHOD_NOT_ALLOWED, OTHER] {
                let _ = self.refused_requests.get_or_create(&vec![
                    ("signal", OTHER_SIGNAL),
                    ("protocol", p),
                    ("reason", reason),
                ]);
            }
        }
        // Zipkin carries spans only.
        let z = Protocol::Zipkin.label();
        let s = Traces::RECORDS;
        let _ = self.received_requests.get_or_create(&vec![("signal", s), ("protocol", z)]);
        let _ = self.accepted_records.get_or_create(&vec![("signal", s), ("protocol", z)]);
        let _ = self.stored_records.get_or_create(&vec![("signal", s), ("protocol", z)]);
        let _ =
            self.dropped_records.get_or_create(&vec![("signal", s), ("protocol", z), ("reason", INVALID)]);
        for reason in IngestError::REASONS.into_iter().chain([METHOD_NOT_ALLOWED, OTHER]) {
            let _ = self.refused_requests.get_or_create(&vec![
                ("signal", s),
                ("protocol", z),
                ("reason", reason),
            ]);
        }
        let _ = self.received_requests.get_or_create(&vec![("signal", OTHER_SIGNAL), ("protocol", z)]);
        for reason in ["unauthenticated", "forbidden", "unknown_path", METHOD_NOT_ALLOWED, OTHER] {
            let _ = self.refused_requests.get_or_create(&vec![
                ("signal", OTHER_SIGNAL),
                ("protocol", z),
                ("reason", reason),
            ]);
        }
        r.register(
            "skein_received_requests",
            "Ingest requests received, by signal and protocol (= accepted + refused)",
            self.received_requests.clone(),
        );
        r.register(
            "skein_refused_requests",
            "Ingest requests refused whole, nothing stored, by signal, protocol and reason",
            self.refused_requests.clone(),
        );
        r.register(
            "skein_accepted_records",
            "Records in accepted ingest requests (= stored + dropped)",
            self.accepted_records.clone(),
        );
        r.register(
            "skein_stored_records",
            "Records made durable (in the WAL) by ingest",
            self.stored_records.clone(),
        );
        r.register(
            "skein_dropped_records",
            "Records of accepted requests left out, by reason (invalid: reported in partial_success)",
            self.dropped_records.clone(),
        );
        for s in SIGNALS {
            for limit in skein_otlp::decode::Limited::LIMITS {
                let _ = self.limited.get_or_create(&vec![("signal", s), ("limit", limit)]);
            }
        }
        r.register(
            "skein_limited",
            "Attributes, events, links dropped and values cut by collector.limits, by signal and limit",
            self.limited.clone(),
        );
        r.register(
            "skein_ingest_inflight_bytes",
            "Bytes of request bodies being read or processed (the in-flight budget in use)",
            self.inflight_bytes.clone(),
        );
        r.register(
            "skein_ingest_inflight_limit_bytes",
            "The in-flight budget (collector.max_inflight_bytes)",
            self.inflight_limit_bytes.clone(),
        );
        r.register(
            "skein_memory_resident_bytes",
            "Resident memory as the memory limit counts it (mapped segment files left out), at the last check",
            self.resident_bytes.clone(),
        );
        r.register(
            "skein_memory_limit_bytes",
            "The memory limit: hard (memory_limit) and soft (ingest refused above it)",
            self.memory_limit_bytes.clone(),
        );
    }

    pub(crate) fn set_limits(&self, l: MemoryLimit) {
        let g = |name| self.memory_limit_bytes.get_or_create(&vec![("limit", name)]).clone();
        g("hard").set(l.hard as i64);
        g("soft").set(l.soft as i64);
    }

    pub(crate) fn received(&self, signal: &'static str, p: Protocol) {
        self.received_requests.get_or_create(&vec![("signal", signal), ("protocol", p.label())]).inc();
    }

    pub(crate) fn refused(&self, signal: &'static str, p: Protocol, reason: &'static str) {
        self.refused_requests
            .get_or_create(&vec![("signal", signal), ("protocol", p.label()), ("reason", reason)])
            .inc();
    }

    /// Counts what `[collector.limits]` cut from one request's records.
    pub(crate) fn limited(&self, signal: &'static str, l: &skein_otlp::decode::Limited) {
        for (limit, n) in l.counts().into_iter().filter(|c| c.1 > 0) {
            self.limited.get_or_create(&vec![("signal", signal), ("limit", limit)]).inc_by(n);
        }
    }

    /// Counts an accepted request's records: `stored` made durable,
    /// `invalid` left out.
    pub(crate) fn records(&self, signal: &'static str, p: Protocol, stored: u64, invalid: u64) {
        let l = vec![("signal", signal), ("protocol", p.label())];
        self.accepted_records.get_or_create(&l).inc_by(stored + invalid);
        self.stored_records.get_or_create(&l).inc_by(stored);
        if invalid > 0 {
            let l = vec![("signal", signal), ("protocol", p.label()), ("reason", INVALID)];
            self.dropped_records.get_or_create(&l).inc_by(invalid);
        }
    }
}

/// The `signal` label of a request path, HTTP or gRPC.
pub(crate) fn signal_of(path: &str) -> &'static str {
    match path {
        "/v1/traces" | "/opentelemetry.proto.collector.trace.v1.TraceService/Export" | "/api/v2/spans" => {
            Traces::RECORDS
        }
        "/v1/logs" | "/opentelemetry.proto.collector.logs.v1.LogsService/Export" => Logs::RECORDS,
        p if crate::es_bulk::is_bulk_path(p) => Logs::RECORDS,
        // The Loki push API takes the logs path (crate::loki).
        "/loki/api/v1/push" => Logs::RECORDS,
        _ => OTHER_SIGNAL,
    }
}
