use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::Ingest;

#[tonic::async_trait]
impl TraceService for Ingest {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let partial_success = self.export_traces(request.into_inner(), None).await?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl LogsService for Ingest {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let partial_success = self.export_logs(request.into_inner(), None).await?;
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

/// The gRPC services, with the request size limit applied to the message
/// both as received and decompressed. Services not listed here (metrics,
/// profiles) answer UNIMPLEMENTED, tonic's answer for an unknown service.
pub fn grpc_routes(ingest: Ingest) -> tonic::service::Routes {
    let limit = ingest.config().max_request_bytes;
    let traces = TraceServiceServer::new(ingest.clone())
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let logs = LogsServiceServer::new(ingest)
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    tonic::service::Routes::new(traces).add_service(logs)
}

/// Rewrites two of tonic's own answers to the codes the OTLP spec gives:
/// a message over the size limit is OUT_OF_RANGE in tonic when sent
/// uncompressed (RESOURCE_EXHAUSTED when compressed) and should always be
/// RESOURCE_EXHAUSTED; an undecodable message is INTERNAL in tonic-prost
/// and should be INVALID_ARGUMENT, which clients do not retry. Both errors
/// happen before a handler runs, so tonic sends them in the headers
/// (trailers-only response), where this layer can see them.
pub fn normalize_grpc_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    let msg = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    let code = h.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let new = match code {
        "11" if msg.contains("too large") => Some("8"),
        "13" if msg.contains("failed to decode Protobuf message") => Some("3"),
        _ => None,
    };
    if let Some(c) = new {
        h.insert("grpc-status", http::HeaderValue::from_static(c));
    }
    resp
}
