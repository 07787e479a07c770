//! Trace summaries: what a search answer says about each trace it returns
//! (root, start, duration, span and error counts per service). Computed
//! from a trace's spans here, both when a segment is written (kept per
//! trace in `summaries.bin`) and when a search reads a trace's spans, so
//! both give the same answer.

use std::collections::{BTreeMap, HashSet};

use crate::model::{Span, TraceId};

/// Spans of one service within a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCount {
    /// `service.name`.
    pub name: String,
    /// Spans of the service in the trace.
    pub span_count: u64,
    /// Those with status ERROR.
    pub error_count: u64,
}

/// What a search result says about a trace (`TraceSummary` of API.md).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// The trace's ID.
    pub trace_id: TraceId,
    /// Service of the root span (see [`summarize`]).
    pub root_service: String,
    /// Name of the root span.
    pub root_name: String,
    /// Earliest span start, Unix ns.
    pub start_time_unix_nano: u64,
    /// Earliest start to latest end, ns.
    pub duration_ns: u64,
    /// Spans in the trace.
    pub span_count: u64,
    /// Spans with status ERROR.
    pub error_count: u64,
    /// Span counts per service, sorted by name.
    pub services: Vec<ServiceCount>,
}

/// Summarizes a trace from its spans (each span ID once, in any order).
/// The root is the earliest span without a parent in the trace; if every
/// span has a parent (the root has not arrived), the earliest span whose
/// parent is missing stands in for it. Ties on start time go to the lower
/// span ID, so the answer does not depend on the order of `spans`.
pub fn summarize(id: TraceId, spans: &[Span]) -> TraceSummary {
    let ids: HashSet<_> = spans.iter().map(|s| s.span_id).collect();
    let key = |s: &&Span| (s.start_time_unix_nano, s.span_id);
    let root = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .min_by_key(key)
        .or_else(|| {
            spans.iter().filter(|s| s.parent_span_id.is_some_and(|p| !ids.contains(&p))).min_by_key(key)
        })
        .or_else(|| spans.iter().min_by_key(key));
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
