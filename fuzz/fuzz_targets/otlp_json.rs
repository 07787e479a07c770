//! OTLP/JSON export requests (traces and logs) through the whole proto3
//! JSON mapping and the conversion to storage's model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use skein_otlp::decode::{self, Limits};
use skein_otlp::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = json::decode::<ExportTraceServiceRequest>(data) {
        let _ = decode::spans_within(&req, &Limits::default());
    }
    if let Ok(req) = json::decode::<ExportLogsServiceRequest>(data) {
        let _ = decode::logs_within(&req, &Limits::default());
    }
});
