//! Skein's OTLP receivers: gRPC (`TraceService`, `LogsService`) and HTTP
//! (`POST /v1/traces`, `POST /v1/logs`), protobuf and JSON, gzip and zstd.
//!
//! Every request is decoded and validated here, then handed to storage,
//! which answers only once it is durable. Errors map to the wire in one
//! place each ([`IngestError`] → `tonic::Status`, → HTTP response), using
//! the retryable codes of the OTLP spec for transient faults.

pub mod convert;
mod error;
mod grpc;
mod http_api;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use serde::Deserialize;
use skein_storage::Storage;
use tokio::sync::Semaphore;

pub use error::IngestError;
pub use grpc::{grpc_routes, normalize_grpc_status};
pub use http_api::router;

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
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig { max_request_bytes: 16 << 20, max_inflight_bytes: 256 << 20 }
    }
}

#[derive(Debug, Default)]
pub struct CollectorMetrics {
    /// Records accepted, by signal (`spans`, `logs`).
    pub accepted: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Records dropped as invalid inside otherwise valid requests.
    pub rejected: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Requests refused whole, by reason.
    pub refused: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl CollectorMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("skein_received_records", "Records accepted (durable)", self.accepted.clone());
        r.register(
            "skein_rejected_records",
            "Invalid records dropped from valid requests (reported in partial_success)",
            self.rejected.clone(),
        );
        r.register("skein_refused_requests", "Requests refused whole, by reason", self.refused.clone());
    }

    fn refuse(&self, e: &IngestError) {
        self.refused.get_or_create(&vec![("reason", e.reason())]).inc();
    }
}

/// The shared ingest path behind both receivers.
#[derive(Debug, Clone)]
pub struct Ingest {
    storage: Arc<Storage>,
    cfg: CollectorConfig,
    inflight: Arc<Semaphore>,
    pub metrics: Arc<CollectorMetrics>,
}

/// Permits are counted in KiB so the semaphore's u32 range covers any
/// sensible in-flight limit.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1)
}

impl Ingest {
    pub fn new(storage: Arc<Storage>, cfg: CollectorConfig) -> Self {
        let permits = kib(cfg.max_inflight_bytes.max(cfg.max_request_bytes)) as usize;
        Ingest {
            storage,
            cfg,
            inflight: Arc::new(Semaphore::new(permits)),
            metrics: Arc::new(CollectorMetrics::default()),
        }
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.cfg
    }

    fn admit(&self, size: usize) -> Result<tokio::sync::SemaphorePermit<'_>, IngestError> {
        if !self.storage.is_ready() {
            return Err(IngestError::NotReady);
        }
        self.inflight.try_acquire_many(kib(size)).map_err(|_| IngestError::Overloaded)
    }

    /// Validates, stores durably and reports partial success. `raw` is the
    /// request's protobuf encoding if the caller has it (HTTP protobuf), to
    /// spare a re-encode for the WAL.
    pub async fn export_traces(
        &self,
        req: ExportTraceServiceRequest,
        raw: Option<Vec<u8>>,
    ) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
        let r = self.export_traces_inner(req, raw).await;
        if let Err(e) = &r {
            self.metrics.refuse(e);
        }
        r
    }

    async fn export_traces_inner(
        &self,
        req: ExportTraceServiceRequest,
        raw: Option<Vec<u8>>,
    ) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
        let size = raw.as_ref().map_or_else(|| req.encoded_len(), Vec::len);
        let _permit = self.admit(size)?;
        let c = convert::spans(&req);
        drop(req);
        let (n, rejected, error) = (c.records.len() as u64, c.rejected, c.error);
        if n > 0 {
            self.storage.append_spans(c.records).await?;
        }
        self.metrics.accepted.get_or_create(&vec![("signal", "spans")]).inc_by(n);
        if rejected == 0 {
            // The spec: leave partial_success unset on full success.
            return Ok(None);
        }
        self.metrics.rejected.get_or_create(&vec![("signal", "spans")]).inc_by(rejected);
        Ok(Some(ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: error.unwrap_or_default(),
        }))
    }

    pub async fn export_logs(
        &self,
        req: ExportLogsServiceRequest,
        raw: Option<Vec<u8>>,
    ) -> Result<Option<ExportLogsPartialSuccess>, IngestError> {
        let r = self.export_logs_inner(req, raw).await;
        if let Err(e) = &r {
            self.metrics.refuse(e);
        }
        r
    }

    async fn export_logs_inner(
        &self,
        req: ExportLogsServiceRequest,
        raw: Option<Vec<u8>>,
    ) -> Result<Option<ExportLogsPartialSuccess>, IngestError> {
        let size = raw.as_ref().map_or_else(|| req.encoded_len(), Vec::len);
        let _permit = self.admit(size)?;
        let c = convert::logs(&req);
        drop(req);
        let (n, rejected, error) = (c.records.len() as u64, c.rejected, c.error);
        if n > 0 {
            self.storage.append_logs(c.records).await?;
        }
        self.metrics.accepted.get_or_create(&vec![("signal", "logs")]).inc_by(n);
        if rejected == 0 {
            return Ok(None);
        }
        self.metrics.rejected.get_or_create(&vec![("signal", "logs")]).inc_by(rejected);
        Ok(Some(ExportLogsPartialSuccess {
            rejected_log_records: rejected as i64,
            error_message: error.unwrap_or_default(),
        }))
    }
}
