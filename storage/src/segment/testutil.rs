//! Fixtures shared by the segment tests: records with empty, typical and
//! maximal values, and a helper that writes and opens a segment.

use std::path::Path;
use std::sync::Arc;

use super::{sort_for_segment, write_segment, Segment, SegmentConfig};
use crate::head::TraceEntry;
use crate::metrics::StorageMetrics;
use crate::model::{AttrValue, Attributes, Event, Link, LogRecord, Resource, Scope, Span, SpanId, TraceId};

pub(super) fn resource(service: &str, attrs: Attributes) -> Arc<Resource> {
    Arc::new(Resource { service_name: service.into(), attributes: attrs })
}

pub(super) fn scope(name: &str, version: &str) -> Arc<Scope> {
    Arc::new(Scope { name: name.into(), version: version.into() })
}

/// Every kind of attribute value, nested ones included.
pub(super) fn every_value() -> Attributes {
    vec![
        ("empty".into(), AttrValue::Empty),
        ("str".into(), AttrValue::Str("héllo wörld".into())),
        ("int.min".into(), AttrValue::Int(i64::MIN)),
        ("int.max".into(), AttrValue::Int(i64::MAX)),
        ("double".into(), AttrValue::Double(-1.5e300)),
        ("bool".into(), AttrValue::Bool(true)),
        ("bytes".into(), AttrValue::Bytes(vec![0, 255, 7])),
        (
            "array".into(),
            AttrValue::Array(vec![
                AttrValue::Int(1),
                AttrValue::Array(vec![AttrValue::Str("in".into()), AttrValue::Empty]),
                AttrValue::KvList(vec![("k".into(), AttrValue::Bool(false))]),
            ]),
        ),
        (
            "map".into(),
            AttrValue::KvList(vec![
                ("inner".into(), AttrValue::KvList(vec![("deep".into(), AttrValue::Double(0.25))])),
                ("list".into(), AttrValue::Array(vec![])),
            ]),
        ),
    ]
}

/// A span with every field at its zero or empty value: no parent, no
/// attributes, events or links, empty strings, zero times.
pub(super) fn empty_span(trace: u8, span: u8) -> Span {
    Span {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([span; 8]),
        parent_span_id: None,
        trace_state: String::new(),
        flags: 0,
        name: String::new(),
        kind: 0,
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        status_code: 0,
        status_message: String::new(),
        attributes: vec![],
        events: vec![],
        links: vec![],
        resource: resource("", vec![]),
        scope: scope("", ""),
    }
}

/// A span with every field at a maximal value: u64::MAX times, a 1 MiB
/// attribute, 1000 attributes, every value kind, many events and links.
pub(super) fn max_span(trace: u8, span: u8) -> Span {
    let mut attributes = every_value();
    attributes.push(("big".into(), AttrValue::Str("x".repeat(1 << 20))));
    attributes.extend((0..1000).map(|i| (format!("k{i}"), AttrValue::Int(i))));
    Span {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([span; 8]),
        parent_span_id: Some(SpanId([0xff; 8])),
        trace_state: "vendor=".to_string() + &"v".repeat(4096),
        flags: u32::MAX,
        name: "n".repeat(10_000),
        kind: u8::MAX,
        start_time_unix_nano: u64::MAX,
        end_time_unix_nano: u64::MAX,
        status_code: u8::MAX,
        status_message: "m".repeat(70_000),
        attributes,
        events: (0..100)
            .map(|i| Event {
                time_unix_nano: u64::MAX - i,
                name: format!("ev{i}"),
                attributes: every_value(),
            })
            .collect(),
        links: (0..50)
            .map(|i| Link {
                trace_id: TraceId([i as u8; 16]),
                span_id: SpanId([0xff; 8]),
                trace_state: "a=b".into(),
                attributes: every_value(),
            })
            .collect(),
        resource: resource("ßervice-max", every_value()),
        scope: scope(&"s".repeat(300), "v9.9.9"),
    }
}

/// A span as instrumentation usually sends it.
#[allow(clippy::too_many_arguments)]
pub(super) fn span(
    trace: u8,
    span: u8,
    res: &Arc<Resource>,
    name: &str,
    start: u64,
    duration: u64,
    status: u8,
    attrs: Attributes,
) -> Span {
    Span {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([span; 8]),
        parent_span_id: (span > 1).then_some(SpanId([1; 8])),
        trace_state: "k=v".into(),
        flags: 1,
        name: name.into(),
        kind: crate::model::kind::SERVER,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        status_code: status,
        status_message: if status == 2 { "boom".into() } else { String::new() },
        attributes: attrs,
        events: vec![Event { time_unix_nano: start + 1, name: "e".into(), attributes: vec![] }],
        links: vec![],
        resource: res.clone(),
        scope: scope("lib", "1.0"),
    }
}

/// A log record with zero/empty values: no trace context, no span, empty
/// body, no attributes, zero times.
pub(super) fn empty_log() -> LogRecord {
    LogRecord {
        time_unix_nano: 0,
        observed_time_unix_nano: 0,
        severity_number: 0,
        severity_text: String::new(),
        body: AttrValue::Empty,
        attributes: vec![],
        trace_id: TraceId::default(),
        span_id: None,
        flags: 0,
        event_name: String::new(),
        resource: resource("", vec![]),
        scope: scope("", ""),
    }
}

/// A log record with maximal values.
pub(super) fn max_log(trace: u8) -> LogRecord {
    let mut attributes = every_value();
    attributes.extend((0..1000).map(|i| (format!("k{i}"), AttrValue::Str("v".repeat(i % 50)))));
    LogRecord {
        time_unix_nano: u64::MAX,
        observed_time_unix_nano: u64::MAX,
        severity_number: i32::MAX,
        severity_text: "FATAL4".into(),
        body: AttrValue::KvList(every_value()),
        attributes,
        trace_id: TraceId([trace; 16]),
        span_id: Some(SpanId([0xff; 8])),
        flags: u32::MAX,
        event_name: "e".repeat(1000),
        resource: resource("ßervice-max", every_value()),
        scope: scope("log-lib", &"9".repeat(100)),
    }
}

/// A log record with body text `body`.
pub(super) fn log(trace: u8, res: &Arc<Resource>, time: u64, severity: i32, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time + 1,
        severity_number: severity,
        severity_text: "INFO".into(),
        body: AttrValue::Str(body.into()),
        attributes: vec![("user".into(), AttrValue::Str("alice".into()))],
        trace_id: TraceId([trace; 16]),
        span_id: Some(SpanId([1; 8])),
        flags: 1,
        event_name: String::new(),
        resource: res.clone(),
        scope: scope("log", "2"),
    }
}

/// Groups records into sorted traces, as a flush does.
pub(super) fn traces(spans: Vec<Span>, logs: Vec<LogRecord>) -> Vec<(TraceId, TraceEntry)> {
    let mut by: std::collections::BTreeMap<TraceId, TraceEntry> = Default::default();
    for s in spans {
        by.entry(s.trace_id).or_insert_with(entry).spans.push(s);
    }
    for l in logs {
        by.entry(l.trace_id).or_insert_with(entry).logs.push(l);
    }
    let mut v: Vec<_> = by.into_iter().collect();
    for (i, (_, t)) in v.iter_mut().enumerate() {
        t.max_pos = 10 + i as u64;
    }
    sort_for_segment(&mut v);
    v
}

fn entry() -> TraceEntry {
    TraceEntry::default()
}

/// Writes `traces` as a segment under `root` and opens it.
pub(super) fn write_and_open(root: &Path, cfg: &SegmentConfig, traces: &[(TraceId, TraceEntry)]) -> Segment {
    let (meta, _) = write_segment(root, cfg, traces, 1).unwrap();
    Segment::open(&root.join(&meta.id), Arc::new(StorageMetrics::default()), None).unwrap()
}

/// A small config: several row groups and pages even for a few rows.
pub(super) fn small_cfg() -> SegmentConfig {
    SegmentConfig { row_group_rows: 3, page_rows: 2, zstd_level: 1, index_heap_bytes: 0 }
}
