//! Skein's OTLP receivers: gRPC (`TraceService`, `LogsService`) and HTTP
//! (`POST /v1/traces`, `POST /v1/logs`), protobuf and JSON, gzip and zstd;
//! and the Zipkin v2 receiver ([`zipkin_router`]), whose spans are mapped to
//! OTLP and take the same path.
//!
//! Every request is admitted first, before its body is read: under the
//! memory limit and the in-flight budget ([`MemoryLimit`]), with a read
//! timeout. It is then decoded and validated here (the mapping itself is
//! `skein_otlp::decode`), and handed to storage, which answers only once
//! it is durable. Both signals take one path, [`Ingest::export`], over a
//! [`Signal`]. Errors map to the wire from one table ([`IngestError`] →
//! gRPC code, HTTP status, retryable), using the retryable codes of the
//! OTLP spec for transient faults. Every request and its outcome is
//! counted per signal, protocol and reason ([`CollectorMetrics`]).

#![warn(missing_docs)]

mod admission;
mod error;
pub mod es_bulk;
mod grpc;
mod http_api;
pub mod loki;
mod memory;
mod metrics;
mod signal;
mod zipkin;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use skein_storage::tenant::{TenantId, Tenants};

pub use error::IngestError;
pub use grpc::{grpc_routes, normalize_grpc_status};
pub use http_api::router;
pub use memory::{resident_bytes, MemoryConfig, MemoryLimit, DEFAULT_LIMIT, MIN_LIMIT};
pub use metrics::{CollectorMetrics, Protocol};
pub use signal::{Logs, Signal, Traces};
pub use zipkin::{router as zipkin_router, SPANS_PATH as ZIPKIN_SPANS_PATH};

use memory::Limiter;

/// Receiver settings (`[collector]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Largest request accepted, in bytes, both as received and after
    /// decompression.
    pub max_request_bytes: usize,
    /// Bytes of request bodies being read and processed at once, counted
    /// from before a body is read (its `Content-Length`, or as it streams
    /// in) until it is answered; past this, new requests get a retryable
    /// "over capacity" answer instead of queueing. Never less than
    /// `max_request_bytes`. `None`: 1/16 of the memory limit
    /// ([`MemoryLimit::inflight_bytes`]), or 256 MiB without one.
    pub max_inflight_bytes: Option<usize>,
    /// A request body not received whole within this long (from the
    /// request's headers) is cut: 408 / DEADLINE_EXCEEDED, nothing stored.
    /// 30 s, as the OpenTelemetry Collector's HTTP server's `read_timeout`
    /// is commonly set: 16 MiB in 30 s is 0.5 MiB/s, slower than any
    /// exporter on a working network.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Operations (action lines) in one Elasticsearch `_bulk` request; a
    /// request with more is refused whole (400). The answer has an item
    /// per operation, about 250 bytes each against as few as 14 bytes of
    /// request, so this bounds the answer's memory, which the in-flight
    /// budget does not count: 100,000 items are about 25 MB. Shippers send
    /// far fewer (Logstash 125 events a batch, the Python client 500).
    pub max_bulk_operations: usize,
    /// `[collector.limits]`: content limits per record (attribute, event
    /// and link counts, value lengths); excess is cut and counted in
    /// `skein_limited_total`, never refused.
    pub limits: skein_otlp::decode::Limits,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            max_request_bytes: 16 << 20,
            max_inflight_bytes: None,
            body_read_timeout: Duration::from_secs(30),
            max_bulk_operations: 100_000,
            limits: skein_otlp::decode::Limits::default(),
        }
    }
}

/// The in-flight budget when neither `max_inflight_bytes` nor a memory
/// limit sets it.
const DEFAULT_INFLIGHT_BYTES: usize = 256 << 20;

/// The shared ingest path behind both receivers: admission under the
/// memory limit and in-flight budget, validation, and the durable append
/// to storage.
#[derive(Debug, Clone)]
pub struct Ingest {
    tenants: Arc<Tenants>,
    cfg: CollectorConfig,
    limiter: Arc<Limiter>,
    /// Counters of received, refused, accepted, stored and dropped data.
    pub metrics: Arc<CollectorMetrics>,
}

impl Ingest {
    /// An ingest path over every tenant's storage with no memory limit:
    /// only the in-flight budget (`max_inflight_bytes`, 256 MiB by default)
    /// bounds what it admits. [`Ingest::with_memory_limit`] adds the limit.
    pub fn new(tenants: Arc<Tenants>, cfg: CollectorConfig) -> Self {
        let metrics = Arc::new(CollectorMetrics::default());
        let limiter = Arc::new(Limiter::new(None, inflight_budget(&cfg, None), &metrics));
        Ingest { tenants, cfg, limiter, metrics }
    }

    /// The same path under `limit`: ingest is refused (retryably) while
    /// resident memory is over its soft limit, and the in-flight budget
    /// defaults to its share ([`MemoryLimit::inflight_bytes`]).
    pub fn with_memory_limit(mut self, limit: MemoryLimit) -> Self {
        let budget = inflight_budget(&self.cfg, Some(limit));
        self.limiter = Arc::new(Limiter::new(Some(limit), budget, &self.metrics));
        self.metrics.set_limits(limit);
        self
    }

    /// The settings this path was built with.
    pub fn config(&self) -> &CollectorConfig {
        &self.cfg
    }

    /// Counts a request refused before it reached the receivers (by the
    /// authentication layer in front of them) as received and refused, and
    /// answers it as OTLP/HTTP does: in the request's encoding, judged by
    /// its `Content-Type`; under `/es/`, in Elasticsearch's error envelope.
    pub fn refuse_http(
        &self,
        err: IngestError,
        path: &str,
        headers: &http::HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let signal = metrics::signal_of(path);
        self.metrics.received(signal, Protocol::Http);
        self.metrics.refused(signal, Protocol::Http, err.reason());
        if es_bulk::is_es_path(path) {
            return es_bulk::refusal(&err);
        }
        error::HttpError { err, json: http_api::is_json(headers) }.into_response()
    }

    /// [`Ingest::refuse_http`] for OTLP/gRPC: a trailers-only status.
    pub fn refuse_grpc(&self, err: IngestError, path: &str) -> tonic::Status {
        let signal = metrics::signal_of(path);
        self.metrics.received(signal, Protocol::Grpc);
        self.metrics.refused(signal, Protocol::Grpc, err.reason());
        err.into()
    }

    /// The in-flight budget in bytes.
    pub fn inflight_budget(&self) -> usize {
        self.limiter.inflight_limit() as usize
    }

    /// Validates one export request of signal `S` for `tenant` that came
    /// over `protocol`, stores its valid records durably and reports the invalid
    /// ones: `Ok(None)` when every record was kept (the OTLP spec: leave
    /// `partial_success` unset on full success), `Ok(Some(_))` with the
    /// count and first reason otherwise. When this returns `Ok`, the
    /// records are in the WAL. Admission (memory limit, in-flight budget)
    /// is the receivers' and happens before the body is read; refusals are
    /// counted by the receivers, which see every answer.
    ///
    /// # Errors
    /// [`IngestError::NotReady`] during WAL replay,
    /// [`IngestError::Overloaded`] when the head is over its limit, and
    /// [`IngestError::Unavailable`] when storage cannot make the records
    /// durable, [`IngestError::Forbidden`] for a new tenant past
    /// `tenants.max_tenants`; nothing was stored then.
    pub async fn export<S: Signal>(
        &self,
        tenant: &TenantId,
        req: S::Request,
        protocol: Protocol,
    ) -> Result<Option<S::PartialSuccess>, IngestError> {
        let storage = self.tenants.get_async(tenant).await?;
        if !storage.is_ready() {
            return Err(IngestError::NotReady);
        }
        let c = S::convert(req, &self.cfg.limits);
        self.metrics.limited(S::RECORDS, &c.limited);
        let (n, rejected, error) = (c.records.len() as u64, c.rejected, c.error);
        if n > 0 {
            S::store(&storage, c.records).await?;
        }
        self.metrics.records(S::RECORDS, protocol, n, rejected);
        if rejected == 0 {
            return Ok(None);
        }
        Ok(Some(S::partial_success(rejected as i64, error.unwrap_or_default())))
    }
}

/// `max_inflight_bytes`, or the memory limit's share, or the fixed
/// default; never under one request of `max_request_bytes`, so that a
/// request of the largest size is admitted when it is alone.
fn inflight_budget(cfg: &CollectorConfig, limit: Option<MemoryLimit>) -> usize {
    let share = limit.map_or(DEFAULT_INFLIGHT_BYTES, |l| l.inflight_bytes());
    cfg.max_inflight_bytes.unwrap_or(share).max(cfg.max_request_bytes)
}
