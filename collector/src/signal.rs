//! What differs between the two signals on the ingest path, so that
//! [`Ingest::export`](crate::Ingest::export) and the receivers are written
//! once for both.

use std::future::Future;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use skein_otlp::decode::{self, Converted, Limits};
use skein_storage::model::{LogRecord, Span};
use skein_storage::Storage;

/// One OTLP signal: its wire messages, its records in storage's model,
/// and how the first become the second and reach storage.
pub trait Signal: Send + Sync + 'static {
    /// The OTLP export request (`Export…ServiceRequest`), read from
    /// protobuf or, with the whole proto3 JSON mapping, from OTLP/JSON.
    type Request: skein_otlp::json::OtlpJson + Send + 'static;
    /// The OTLP export response (`Export…ServiceResponse`).
    type Response: prost::Message + serde::Serialize + Send + 'static;
    /// The OTLP partial-success message of the response.
    type PartialSuccess: Send + 'static;
    /// A record in storage's model.
    type Record: Send + 'static;

    /// The `signal` label of the record counters (`spans`, `logs`).
    const RECORDS: &'static str;
    /// The signal as named in error messages (`trace`, `logs`).
    const REQUEST: &'static str;

    /// The request's valid records, cut to `limits`, and the count of
    /// invalid ones. Consumes the request: its strings move into the
    /// records.
    fn convert(req: Self::Request, limits: &Limits) -> Converted<Self::Record>;

    /// Appends `records` to storage; durable in the WAL (in storage's own
    /// batch encoding) and visible to reads once this returns `Ok`.
    fn store(
        storage: &Arc<Storage>,
        records: Vec<Self::Record>,
    ) -> impl Future<Output = skein_storage::Result<()>> + Send;

    /// The partial-success message for `rejected` records, with the first
    /// reason as `error_message`.
    fn partial_success(rejected: i64, error_message: String) -> Self::PartialSuccess;

    /// The response to a request that was stored.
    fn response(partial_success: Option<Self::PartialSuccess>) -> Self::Response;
}

/// Spans: `TraceService/Export`, `POST /v1/traces`.
#[derive(Debug)]
pub enum Traces {}

/// Log records: `LogsService/Export`, `POST /v1/logs`.
#[derive(Debug)]
pub enum Logs {}

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    type PartialSuccess = ExportTracePartialSuccess;
    type Record = Span;
    const RECORDS: &'static str = "spans";
    const REQUEST: &'static str = "trace";

    fn convert(req: Self::Request, limits: &Limits) -> Converted<Span> {
        decode::spans_owned(req, limits)
    }

    async fn store(storage: &Arc<Storage>, records: Vec<Span>) -> skein_storage::Result<()> {
        storage.append_spans(records).await
    }

    fn partial_success(rejected_spans: i64, error_message: String) -> Self::PartialSuccess {
        ExportTracePartialSuccess { rejected_spans, error_message }
    }

    fn response(partial_success: Option<Self::PartialSuccess>) -> Self::Response {
        ExportTraceServiceResponse { partial_success }
    }
}

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    type PartialSuccess = ExportLogsPartialSuccess;
    type Record = LogRecord;
    const RECORDS: &'static str = "logs";
    const REQUEST: &'static str = "logs";

    fn convert(req: Self::Request, limits: &Limits) -> Converted<LogRecord> {
        decode::logs_owned(req, limits)
    }

    async fn store(storage: &Arc<Storage>, records: Vec<LogRecord>) -> skein_storage::Result<()> {
        storage.append_logs(records).await
    }

    fn partial_success(rejected_log_records: i64, error_message: String) -> Self::PartialSuccess {
        ExportLogsPartialSuccess { rejected_log_records, error_message }
    }

    fn response(partial_success: Option<Self::PartialSuccess>) -> Self::Response {
        ExportLogsServiceResponse { partial_success }
    }
}
