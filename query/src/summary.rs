//! Trace summaries for search results.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use skein_storage::model::{Span, TraceId};

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceCount {
    pub name: String,
    pub span_count: u64,
    pub error_count: u64,
}

/// `TraceSummary` of API.md.
#[derive(Debug, Serialize, PartialEq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    pub root_service: String,
    pub root_name: String,
    #[serde(serialize_with = "as_string")]
    pub start_time_unix_nano: u64,
    pub duration_ns: u64,
    pub span_count: u64,
    pub error_count: u64,
    pub services: Vec<ServiceCount>,
}

fn as_string<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// Summarizes a trace. The root is the earliest span without a parent in
/// the trace; if every span has a parent (the root has not arrived), the
/// earliest span whose parent is missing stands in for it.
pub fn summarize(id: TraceId, spans: &[Span]) -> TraceSummary {
    let ids: HashSet<_> = spans.iter().map(|s| s.span_id).collect();
    let root = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .min_by_key(|s| s.start_time_unix_nano)
        .or_else(|| {
            spans
                .iter()
                .filter(|s| s.parent_span_id.is_some_and(|p| !ids.contains(&p)))
                .min_by_key(|s| s.start_time_unix_nano)
        })
        .or_else(|| spans.iter().min_by_key(|s| s.start_time_unix_nano));
    let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_time_unix_nano.max(s.start_time_unix_nano)).max().unwrap_or(0);
    let mut services: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in spans {
        let e = services.entry(s.service_name()).or_default();
        e.0 += 1;
        e.1 += u64::from(s.is_error());
    }
    TraceSummary {
        trace_id: id,
        root_service: root.map(|r| r.service_name().to_string()).unwrap_or_default(),
        root_name: root.map(|r| r.name.clone()).unwrap_or_default(),
        start_time_unix_nano: start,
        duration_ns: end.saturating_sub(start),
        span_count: spans.len() as u64,
        error_count: spans.iter().filter(|s| s.is_error()).count() as u64,
        services: services
            .into_iter()
            .map(|(name, (span_count, error_count))| ServiceCount {
                name: name.to_string(),
                span_count,
                error_count,
            })
            .collect(),
    }
}
