use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use skein_storage::tenant::TenantId;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::{admission, Ingest, IngestError, Logs, Protocol, Signal, Traces};

#[tonic::async_trait]
impl TraceService for Ingest {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = request.extensions().get::<TenantId>().cloned().unwrap_or_default();
        let partial_success = self.export::<Traces>(&tenant, request.into_inner(), Protocol::Grpc).await?;
        Ok(Response::new(Traces::response(partial_success)))
    }
}

#[tonic::async_trait]
impl LogsService for Ingest {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let tenant = request.extensions().get::<TenantId>().cloned().unwrap_or_default();
        let partial_success = self.export::<Logs>(&tenant, request.into_inner(), Protocol::Grpc).await?;
        Ok(Response::new(Logs::response(partial_success)))
    }
}

/// The gRPC services, with the request size limit applied to the message
/// both as received and decompressed, behind the admission and counting
/// layer (`admission::grpc`): a request is admitted before its message is
/// read or decoded, and every answer is counted, tonic's own included.
/// Services not listed here (metrics, profiles) answer UNIMPLEMENTED,
/// tonic's answer for an unknown service.
pub fn grpc_routes(ingest: Ingest) -> tonic::service::Routes {
    let layer = axum::middleware::from_fn_with_state(ingest.clone(), admission::grpc);
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
    let routes = tonic::service::Routes::new(traces).add_service(logs);
    tonic::service::Routes::from(routes.into_axum_router().layer(layer))
}

/// Rewrites two of tonic's own answers to the codes the OTLP spec gives,
/// by reading them as the [`IngestError`] they are and taking that error's
/// code from the one table (`IngestError::wire`): a message over the size
/// limit is OUT_OF_RANGE in tonic when sent uncompressed
/// (RESOURCE_EXHAUSTED when compressed) and should always be
/// RESOURCE_EXHAUSTED; an undecodable message is INTERNAL in tonic-prost
/// and should be INVALID_ARGUMENT, which clients do not retry. Both errors
/// happen before a handler runs, so tonic sends them in the headers
/// (trailers-only response), where this layer can see them. Other
/// responses pass unchanged. [`grpc_routes`] already answers these from
/// the table; this stays for a server built without it.
pub fn normalize_grpc_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    let msg = h.get("grpc-message").and_then(|m| m.to_str().ok()).map(grpc_message).unwrap_or_default();
    let code = h.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Some(err) = tonic_refusal(code, msg) {
        h.insert("grpc-status", http::HeaderValue::from(err.wire().grpc as i32));
    }
    resp
}

/// A `grpc-message` header as text: its `%XX` escapes decoded (the gRPC
/// HTTP/2 protocol's percent-encoding), invalid ones left as they are.
pub(crate) fn grpc_message(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The refusal behind a status tonic answered itself, if it is one of the
/// two it gets wrong (see [`normalize_grpc_status`]).
pub(crate) fn tonic_refusal(code: &str, msg: String) -> Option<IngestError> {
    match code {
        // tonic: "Error, decoded message length too large: found {len}
        // bytes, the limit is: {limit} bytes".
        "11" if msg.contains("too large") => {
            let mut n = msg.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok());
            Some(IngestError::TooLarge { size: n.next().unwrap_or(0), limit: n.next().unwrap_or(0) })
        }
        "13" if msg.contains("failed to decode Protobuf message") => Some(IngestError::Malformed(msg)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(code: &str, msg: &str) -> String {
        let resp = http::Response::builder()
            .header("grpc-status", code)
            .header("grpc-message", msg)
            .body(())
            .unwrap();
        let resp = normalize_grpc_status(resp);
        resp.headers()["grpc-status"].to_str().unwrap().to_string()
    }

    #[test]
    fn test_tonic_answers_take_the_spec_codes() {
        let too_large = "Error,%20decoded%20message%20length%20too%20large:%20found%2020%20bytes,%20the%20limit%20is:%2010%20bytes";
        assert_eq!(normalized("11", too_large), "8");
        assert_eq!(normalized("13", "failed%20to%20decode%20Protobuf%20message:%20x"), "3");
        assert_eq!(normalized("13", "something%20else"), "13");
        assert_eq!(normalized("14", "too%20large"), "14");
        assert_eq!(
            tonic_refusal("11", "found 20 bytes, the limit is: 10 bytes, too large".into())
                .unwrap()
                .to_string(),
            "request of 20 bytes exceeds the limit of 10 bytes"
        );
    }
}
