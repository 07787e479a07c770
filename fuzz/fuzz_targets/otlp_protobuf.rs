//! OTLP protobuf export requests (traces and logs) through the decoder and
//! the conversion to storage's model, with the default content limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use skein_otlp::decode::{self, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportTraceServiceRequest::decode(data) {
        let _ = decode::spans_within(&req, &Limits::default());
    }
    if let Ok(req) = ExportLogsServiceRequest::decode(data) {
        let _ = decode::logs_within(&req, &Limits::default());
    }
});
