//! Test-only helpers, in one place: model test-data builders, a storage
//! configuration for tests, and a launcher for a real S3 API server
//! ([`Moto`]). Compiled for this crate's tests and, with the `testsuite`
//! feature, for other crates' tests and benchmarks (as quickwit does).
//!
//! The builders make model records directly, as the collector would hand
//! them to storage: storage tests need no wire format.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{AttrValue, LogRecord, Resource, Scope, Span, SpanId, TraceId};
use crate::{Storage, StorageConfig};

mod moto;

pub use moto::Moto;

/// Service name of [`spans_of_trace`]'s spans.
pub const TEST_SERVICE: &str = "svc";

/// The trace ID every byte of which is `t`.
pub fn trace_id(t: u8) -> TraceId {
    TraceId([t; 16])
}

/// Spans `first+1 ..= first+n` of trace `t` (span ID `i` big-endian, so IDs
/// stay unique per trace as `first` advances), named `op{i-1}`, starting at
/// `1_000 + i - 1` ns and ending 1 µs later, of service [`TEST_SERVICE`],
/// sharing one resource and one empty scope as the spans of one export
/// request do.
pub fn spans_of_trace(t: u8, first: u64, n: u64) -> Vec<Span> {
    let resource = Arc::new(Resource {
        service_name: TEST_SERVICE.into(),
        attributes: vec![("service.name".into(), AttrValue::Str(TEST_SERVICE.into()))],
    });
    let scope = Arc::new(Scope::default());
    (first..first + n)
        .map(|i| Span {
            trace_id: trace_id(t),
            span_id: SpanId((i + 1).to_be_bytes()),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: format!("op{i}"),
            kind: 0,
            start_time_unix_nano: 1_000 + i,
            end_time_unix_nano: 2_000 + i,
            status_code: 0,
            status_message: String::new(),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            resource: resource.clone(),
            scope: scope.clone(),
        })
        .collect()
}

/// An ERROR log record (severity 17) at 5 µs with body `body`, in trace `t`
/// (without trace context when `t` is 0), from a resource without a
/// service name (`unknown_service`, as the collector names it).
pub fn log_of_trace(t: u8, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 5_000,
        observed_time_unix_nano: 0,
        severity_number: 17,
        severity_text: String::new(),
        body: AttrValue::Str(body.into()),
        attributes: Vec::new(),
        trace_id: if t == 0 { TraceId::ZERO } else { trace_id(t) },
        span_id: None,
        flags: 0,
        event_name: String::new(),
        resource: Arc::new(Resource { service_name: "unknown_service".into(), attributes: Vec::new() }),
        scope: Arc::new(Scope::default()),
    }
}

/// Defaults with one hour of retention and no fsync (tests do not survive
/// power failures, only simulated crashes).
pub fn test_config() -> StorageConfig {
    let mut c = StorageConfig::default().with_retention(Duration::from_secs(3600));
    c.wal.fsync = false;
    c
}

/// Appends spans `first+1 ..= first+n` of trace `t` ([`spans_of_trace`]).
///
/// # Panics
/// When the append fails.
pub async fn append_spans_of(s: &Arc<Storage>, t: u8, first: u64, n: u64) {
    s.append_spans(spans_of_trace(t, first, n)).await.expect("append spans");
}

/// Appends one log record of trace `t` ([`log_of_trace`]).
///
/// # Panics
/// When the append fails.
pub async fn append_log_of(s: &Arc<Storage>, t: u8, body: &str) {
    s.append_logs(vec![log_of_trace(t, body)]).await.expect("append logs");
}

/// Damages the first data page of Parquet file `path`: 64 bytes after the
/// leading magic become zeroes, so the page header no longer decodes (the
/// footer stays whole and the file still opens).
///
/// # Panics
/// When the file cannot be read or written.
pub fn corrupt_parquet_page(path: &std::path::Path) {
    let mut b = std::fs::read(path).expect("read parquet file");
    let end = (4 + 64).min(b.len().saturating_sub(8));
    b[4..end].fill(0);
    std::fs::write(path, b).expect("write parquet file");
}

/// Damages the footer (file metadata) of Parquet file `path`: its bytes
/// become zeroes, so the file no longer opens.
///
/// # Panics
/// When the file cannot be read or written.
pub fn corrupt_parquet_footer(path: &std::path::Path) {
    let mut b = std::fs::read(path).expect("read parquet file");
    let n = b.len();
    let footer = u32::from_le_bytes(b[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
    b[n - 8 - footer..n - 8].fill(0);
    std::fs::write(path, b).expect("write parquet file");
}
