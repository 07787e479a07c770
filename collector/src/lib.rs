//! Skein's OTLP receivers: gRPC (`TraceService`, `LogsService`) and HTTP
//! (`POST /v1/traces`, `POST /v1/logs`), protobuf and JSON, gzip and zstd.
//!
//! Every request is decoded and validated here (the mapping itself is
//! `skein_otlp::decode`), then handed to storage, which answers only once
//! it is durable. Both signals take one path, [`Ingest::export`], over a
//! [`Signal`]. Errors map to the wire from one table ([`IngestError`] →
//! gRPC code, HTTP status, retryable), using the retryable codes of the
//! OTLP spec for transient faults.

#![warn(missing_docs)]

mod error;
mod grpc;
mod http_api;
mod signal;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use serde::Deserialize;
use skein_storage::tenant::{TenantId, Tenants};
use skein_storage::Storage;
use tokio::sync::Semaphore;

pub use error::IngestError;
pub use grpc::{grpc_routes, normalize_grpc_status};
pub use http_api::router;
pub use signal::{Logs, Signal, Traces};

/// Receiver settings (`[collector]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Largest request accepted, in bytes, both as received and after
    /// decompression.
    pub max_request_bytes: usize,
    /// Bytes of requests being processed at once; past this, new requests
    /// get a retryable "over capacity" answer instead of queueing.
    pub max_inflight_bytes: usize,
    /// `[collector.limits]`: content limits per record (attribute, event
    /// and link counts, value lengths); excess is cut and counted in
    /// `skein_limited_total`, never refused.
    pub limits: skein_otlp::decode::Limits,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            max_request_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
            limits: skein_otlp::decode::Limits::default(),
        }
    }
}

/// The receivers' Prometheus counters, labelled by signal (`spans`,
/// `logs`) or by refusal reason.
#[derive(Debug, Default)]
pub struct CollectorMetrics {
    /// Records accepted, by signal (`spans`, `logs`).
    pub accepted: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Records dropped as invalid inside otherwise valid requests.
    pub rejected: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Requests refused whole, by reason.
    pub refused: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Content cut by `[collector.limits]`, by signal and limit.
    pub limited: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl CollectorMetrics {
    /// Adds the counters to `r` as `skein_received_records`,
    /// `skein_rejected_records` and `skein_refused_requests`, each label
    /// value present at zero from the start (a series that appears only
    /// on its first event breaks `rate()` and alerts on absence).
    pub fn register(&self, r: &mut Registry) {
        for signal in [Traces::RECORDS, Logs::RECORDS] {
            let _ = self.accepted.get_or_create(&vec![("signal", signal)]);
            let _ = self.rejected.get_or_create(&vec![("signal", signal)]);
            for limit in skein_otlp::decode::Limited::LIMITS {
                let _ = self.limited.get_or_create(&vec![("signal", signal), ("limit", limit)]);
            }
        }
        for reason in IngestError::REASONS {
            let _ = self.refused.get_or_create(&vec![("reason", reason)]);
        }
        r.register("skein_received_records", "Records accepted (durable)", self.accepted.clone());
        r.register(
            "skein_rejected_records",
            "Invalid records dropped from valid requests (reported in partial_success)",
            self.rejected.clone(),
        );
        r.register("skein_refused_requests", "Requests refused whole, by reason", self.refused.clone());
        r.register(
            "skein_limited",
            "Attributes, events, links dropped and values cut by collector.limits, by signal and limit",
            self.limited.clone(),
        );
    }

    fn refuse(&self, e: &IngestError) {
        self.refused.get_or_create(&vec![("reason", e.reason())]).inc();
    }
}

/// The shared ingest path behind both receivers: admission under the
/// in-flight budget, validation, and the durable append to storage.
#[derive(Debug, Clone)]
pub struct Ingest {
    tenants: Arc<Tenants>,
    cfg: CollectorConfig,
    inflight: Arc<Semaphore>,
    /// Counters of accepted, rejected and refused data.
    pub metrics: Arc<CollectorMetrics>,
}

/// Permits are counted in KiB so the semaphore's u32 range covers any
/// sensible in-flight limit.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1)
}

impl Ingest {
    /// An ingest path over every tenant's storage, admitting at most
    /// `max(max_inflight_bytes, max_request_bytes)` of requests at once.
    pub fn new(tenants: Arc<Tenants>, cfg: CollectorConfig) -> Self {
        let permits = kib(cfg.max_inflight_bytes.max(cfg.max_request_bytes)) as usize;
        Ingest {
            tenants,
            cfg,
            inflight: Arc::new(Semaphore::new(permits)),
            metrics: Arc::new(CollectorMetrics::default()),
        }
    }

    /// The settings this path was built with.
    pub fn config(&self) -> &CollectorConfig {
        &self.cfg
    }

    /// Counts a refusal made before the ingest path (by the
    /// authentication layer) and answers it as OTLP/HTTP does: in the
    /// request's encoding, judged by its `Content-Type`.
    pub fn refuse_http(&self, err: IngestError, headers: &http::HeaderMap) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        self.metrics.refuse(&err);
        let json = http_api::content_kind(headers).unwrap_or(false);
        error::HttpError { err, json }.into_response()
    }

    /// Counts a refusal made before the ingest path (by the
    /// authentication layer) and answers it as OTLP/gRPC does.
    pub fn refuse_grpc(&self, err: IngestError) -> tonic::Status {
        self.metrics.refuse(&err);
        err.into()
    }

    fn admit(&self, storage: &Storage, size: usize) -> Result<tokio::sync::SemaphorePermit<'_>, IngestError> {
        if !storage.is_ready() {
            return Err(IngestError::NotReady);
        }
        self.inflight.try_acquire_many(kib(size)).map_err(|_| IngestError::Overloaded)
    }

    /// Validates one export request of signal `S` for `tenant`, stores its valid
    /// records durably and reports the invalid ones: `Ok(None)` when every
    /// record was kept (the OTLP spec: leave `partial_success` unset on
    /// full success), `Ok(Some(_))` with the count and first reason
    /// otherwise. When this returns `Ok`, the records are in the WAL.
    ///
    /// # Errors
    /// [`IngestError::NotReady`] during WAL replay,
    /// [`IngestError::Overloaded`] past the in-flight budget, and
    /// [`IngestError::Unavailable`] when storage cannot make the records
    /// durable; nothing was stored then. Each is counted as refused.
    pub async fn export<S: Signal>(
        &self,
        tenant: &TenantId,
        req: S::Request,
    ) -> Result<Option<S::PartialSuccess>, IngestError> {
        let r = self.export_inner::<S>(tenant, req).await;
        if let Err(e) = &r {
            self.metrics.refuse(e);
        }
        r
    }

    async fn export_inner<S: Signal>(
        &self,
        tenant: &TenantId,
        req: S::Request,
    ) -> Result<Option<S::PartialSuccess>, IngestError> {
        let storage = self.tenants.get_async(tenant).await?;
        // Admission counts the request's protobuf size (what it was on the
        // wire for protobuf, about that for JSON).
        let _permit = self.admit(&storage, req.encoded_len())?;
        let c = S::convert(&req, &self.cfg.limits);
        drop(req);
        for (limit, n) in c.limited.counts().into_iter().filter(|c| c.1 > 0) {
            self.metrics.limited.get_or_create(&vec![("signal", S::RECORDS), ("limit", limit)]).inc_by(n);
        }
        let (n, rejected, error) = (c.records.len() as u64, c.rejected, c.error);
        if n > 0 {
            S::store(&storage, c.records).await?;
        }
        let label = vec![("signal", S::RECORDS)];
        self.metrics.accepted.get_or_create(&label).inc_by(n);
        if rejected == 0 {
            return Ok(None);
        }
        self.metrics.rejected.get_or_create(&label).inc_by(rejected);
        Ok(Some(S::partial_success(rejected as i64, error.unwrap_or_default())))
    }
}
