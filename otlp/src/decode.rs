//! OTLP protobuf messages to storage's model, with the per-record validation
//! the OTLP spec asks for: a record with an invalid ID is dropped and counted
//! (reported back in `partial_success`), the rest of the request is kept.
//!
//! Content is bounded by [`Limits`] on the way in (the OpenTelemetry SDK's
//! attribute and span limits, applied by the receiver since a hostile or
//! broken sender applies none): attributes, events and links past their
//! count are dropped, long strings are cut at a UTF-8 boundary, and each
//! cut is counted in [`Converted::limited`]. A record is never refused
//! for its size, and neither is its request.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use serde::Deserialize;

use skein_storage::model::{
    AttrValue, Attributes, Event, Link, LogRecord, Resource, Scope, Span, SpanId, TraceId,
};

/// Service name used when a resource has no `service.name`, as the OTel SDK
/// resource semantic conventions prescribe.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Records of one request that passed validation, and why others did not.
#[derive(Debug)]
pub struct Converted<T> {
    /// The valid records, in request order.
    pub records: Vec<T>,
    /// How many records were dropped as invalid (`rejected_spans` /
    /// `rejected_log_records` in `partial_success`).
    pub rejected: u64,
    /// The first rejection reason, for `partial_success.error_message`.
    pub error: Option<String>,
    /// What [`Limits`] cut from the records kept.
    pub limited: Limited,
}

impl<T> Default for Converted<T> {
    fn default() -> Self {
        Converted { records: Vec::new(), rejected: 0, error: None, limited: Limited::default() }
    }
}

/// Bounds on the content of one record (`[collector.limits]` in the config
/// file). The counts are the OpenTelemetry SDK defaults (specification,
/// "Attribute Limits" and "Span Limits": 128 each); the SDK sets no length
/// limit, but a receiver must: see [`Limits::max_value_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Attributes kept per span, log record and resource (SDK
    /// `AttributeCountLimit`, 128); also the entries kept per array or
    /// key-value list inside a value. The first ones received are kept.
    pub max_attributes: usize,
    /// Events kept per span (SDK `EventCountLimit`, 128), the first ones.
    pub max_events_per_span: usize,
    /// Links kept per span (SDK `LinkCountLimit`, 128), the first ones.
    pub max_links_per_span: usize,
    /// Attributes kept per span event (SDK `AttributePerEventCountLimit`).
    pub max_attributes_per_event: usize,
    /// Attributes kept per span link (SDK `AttributePerLinkCountLimit`).
    pub max_attributes_per_link: usize,
    /// Bytes kept of each string or bytes value (attribute values, each
    /// element of arrays and maps, attribute keys, span and event names,
    /// status messages, trace states, scope names), cut at a UTF-8
    /// boundary. Default 64 KiB: the SDK default is unlimited, which lets
    /// one 15 MiB value through whole; Tempo cuts at 2 KiB
    /// (`max_attribute_bytes`), which cuts ordinary stack traces and SQL
    /// statements. 64 KiB keeps those whole and bounds a span's strings to
    /// a few MiB at the count limits.
    pub max_value_bytes: usize,
    /// Bytes kept of a log record's body (each string within it), cut at a
    /// UTF-8 boundary. Default 256 KiB, Loki's `max_line_size`.
    pub max_log_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attributes: 128,
            max_events_per_span: 128,
            max_links_per_span: 128,
            max_attributes_per_event: 128,
            max_attributes_per_link: 128,
            max_value_bytes: 64 << 10,
            max_log_body_bytes: 256 << 10,
        }
    }
}

impl Limits {
    /// No limit at all (for conversions of trusted data, e.g. tests).
    pub const UNLIMITED: Limits = Limits {
        max_attributes: usize::MAX,
        max_events_per_span: usize::MAX,
        max_links_per_span: usize::MAX,
        max_attributes_per_event: usize::MAX,
        max_attributes_per_link: usize::MAX,
        max_value_bytes: usize::MAX,
        max_log_body_bytes: usize::MAX,
    };
}

/// What [`Limits`] cut from one request, by limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limited {
    /// Attributes (and array or map entries) dropped past a count limit.
    pub attributes: u64,
    /// Span events dropped past `max_events_per_span`.
    pub events: u64,
    /// Span links dropped past `max_links_per_span`.
    pub links: u64,
    /// Strings or bytes values cut to `max_value_bytes`.
    pub value_length: u64,
    /// Log body strings cut to `max_log_body_bytes`.
    pub body_length: u64,
}

impl Limited {
    /// The `limit` label values of the counts, in [`Limited::counts`] order.
    pub const LIMITS: [&'static str; 5] = ["attributes", "events", "links", "value_length", "body_length"];

    /// Each count with its `limit` label value.
    pub fn counts(&self) -> [(&'static str, u64); 5] {
        [
            ("attributes", self.attributes),
            ("events", self.events),
            ("links", self.links),
            ("value_length", self.value_length),
            ("body_length", self.body_length),
        ]
    }

    /// Whether nothing was cut.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|c| c.1 == 0)
    }
}

impl<T> Converted<T> {
    fn reject(&mut self, why: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.error.is_none() {
            self.error = Some(why());
        }
    }
}

/// Nesting deeper than this in an attribute value is cut off (the value is
/// replaced by empty). Guards the recursive conversion against stack abuse.
const MAX_VALUE_DEPTH: usize = 16;

/// An OTLP `AnyValue` as an attribute value, unlimited; an absent value,
/// an unset one, or nesting deeper than 16 levels is [`AttrValue::Empty`].
pub fn any_value(v: Option<&AnyValue>) -> AttrValue {
    Cut::new(&Limits::UNLIMITED).value(v.cloned().as_mut(), 0, false)
}

/// OTLP key-value pairs as attributes, unlimited, in their received order
/// (duplicate keys are kept as sent).
pub fn attributes(kvs: &[KeyValue]) -> Attributes {
    Cut::new(&Limits::UNLIMITED).attrs(&mut kvs.to_vec(), usize::MAX, 0)
}

/// Applies [`Limits`] while converting, counting what it cuts. It takes
/// the request's strings and byte vectors instead of copying them (the
/// request is consumed): a string within its limit moves into the record
/// as it is, with no allocation.
struct Cut<'a> {
    l: &'a Limits,
    n: Limited,
}

/// `s` cut to at most `max` bytes at a UTF-8 boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

impl<'a> Cut<'a> {
    fn new(l: &'a Limits) -> Self {
        Cut { l, n: Limited::default() }
    }

    /// A string field, taken from the request, cut to `max` bytes
    /// (counted when cut).
    fn text(&mut self, s: &mut String, max: usize) -> String {
        if s.len() <= max {
            return std::mem::take(s);
        }
        self.n.value_length += 1;
        prefix(s, max).to_string()
    }

    /// A name, message or key: cut to `max_value_bytes`.
    fn short(&mut self, s: &mut String) -> String {
        self.text(s, self.l.max_value_bytes)
    }

    /// The first `max` of `items`, counting the rest in `dropped`.
    fn first<'i, T>(items: &'i mut [T], max: usize, dropped: &mut u64) -> &'i mut [T] {
        if items.len() > max {
            *dropped += (items.len() - max) as u64;
            &mut items[..max]
        } else {
            items
        }
    }

    /// A value whose strings and bytes are cut to `max_value_bytes`, or,
    /// in a log body (`body`), to `max_log_body_bytes`.
    fn value(&mut self, v: Option<&mut AnyValue>, depth: usize, body: bool) -> AttrValue {
        if depth > MAX_VALUE_DEPTH {
            return AttrValue::Empty;
        }
        let max_len = if body { self.l.max_log_body_bytes } else { self.l.max_value_bytes };
        let cut = |n: &mut Limited| {
            if body {
                n.body_length += 1;
            } else {
                n.value_length += 1;
            }
        };
        match v.and_then(|v| v.value.as_mut()) {
            None => AttrValue::Empty,
            Some(any_value::Value::StringValue(s)) => {
                if s.len() <= max_len {
                    return AttrValue::Str(std::mem::take(s));
                }
                cut(&mut self.n);
                AttrValue::Str(prefix(s, max_len).to_string())
            }
            Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
            Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
            Some(any_value::Value::BytesValue(b)) => {
                if b.len() <= max_len {
                    return AttrValue::Bytes(std::mem::take(b));
                }
                cut(&mut self.n);
                AttrValue::Bytes(b[..max_len].to_vec())
            }
            Some(any_value::Value::ArrayValue(a)) => {
                let items = Self::first(&mut a.values, self.l.max_attributes, &mut self.n.attributes);
                AttrValue::Array(items.iter_mut().map(|v| self.value(Some(v), depth + 1, body)).collect())
            }
            Some(any_value::Value::KvlistValue(kv)) => {
                AttrValue::KvList(self.attrs_in(&mut kv.values, self.l.max_attributes, depth + 1, body))
            }
            // An index into a profiles string dictionary; meaningless for
            // traces and logs, which carry no dictionary.
            Some(any_value::Value::StringValueStrindex(_)) => AttrValue::Empty,
        }
    }

    /// The first `max` attributes, keys and values cut to `max_value_bytes`.
    fn attrs(&mut self, kvs: &mut [KeyValue], max: usize, depth: usize) -> Attributes {
        self.attrs_in(kvs, max, depth, false)
    }

    fn attrs_in(&mut self, kvs: &mut [KeyValue], max: usize, depth: usize, body: bool) -> Attributes {
        let kvs = Self::first(kvs, max, &mut self.n.attributes);
        kvs.iter_mut()
            .map(|kv| (self.short(&mut kv.key), self.value(kv.value.as_mut(), depth, body)))
            .collect()
    }

    fn resource(&mut self, r: Option<&mut OtlpResource>) -> Arc<Resource> {
        let attributes =
            r.map(|r| self.attrs(&mut r.attributes, self.l.max_attributes, 0)).unwrap_or_default();
        resource_of(attributes)
    }

    fn scope(&mut self, s: Option<&mut InstrumentationScope>) -> Arc<Scope> {
        match s {
            Some(s) => Arc::new(Scope { name: self.short(&mut s.name), version: self.short(&mut s.version) }),
            None => Arc::new(Scope::default()),
        }
    }
}

/// A resource of `attributes`, its service name from `service.name`.
fn resource_of(attributes: Attributes) -> Arc<Resource> {
    let service_name = attributes
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("service.name", AttrValue::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
    Arc::new(Resource { service_name, attributes })
}

/// An optional span ID field: empty or all zeroes is "none", 8 bytes is an
/// ID, any other length is invalid (`Err`).
fn optional_span_id(b: &[u8]) -> Result<Option<SpanId>, ()> {
    match b.len() {
        0 => Ok(None),
        8 => {
            let id = SpanId::from_slice(b).ok_or(())?;
            Ok((!id.is_zero()).then_some(id))
        }
        _ => Err(()),
    }
}

/// Converts a trace export request. Spans with a trace ID that is not 16
/// bytes or is all zeroes, or a span ID that is not 8 non-zero bytes, are
/// rejected (OTLP spec, "trace_id ... An ID with all zeroes OR of length other
/// than 16 bytes is considered invalid"). Content within the default
/// [`Limits`].
pub fn spans(req: &ExportTraceServiceRequest) -> Converted<Span> {
    spans_within(req, &Limits::default())
}

/// [`spans`] with content cut to `limits`: attributes, events and links
/// past their counts dropped, long strings cut, each counted in
/// [`Converted::limited`]; no span is rejected for its content.
pub fn spans_within(req: &ExportTraceServiceRequest, limits: &Limits) -> Converted<Span> {
    spans_owned(req.clone(), limits)
}

/// [`spans_within`] consuming the request: its strings move into the spans
/// instead of being copied (what the collector calls, the request being
/// dropped right after).
pub fn spans_owned(mut req: ExportTraceServiceRequest, limits: &Limits) -> Converted<Span> {
    let mut out = Converted::default();
    let n: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    out.records.reserve_exact(n);
    let mut cut = Cut::new(limits);
    let l = limits;
    for rs in &mut req.resource_spans {
        let res = cut.resource(rs.resource.as_mut());
        for ss in &mut rs.scope_spans {
            let sc = cut.scope(ss.scope.as_mut());
            for s in &mut ss.spans {
                let Some(trace_id) = TraceId::from_slice(&s.trace_id).filter(|t| !t.is_zero()) else {
                    out.reject(|| {
                        format!("span with invalid trace_id ({} bytes or all zeroes)", s.trace_id.len())
                    });
                    continue;
                };
                let Some(span_id) = SpanId::from_slice(&s.span_id).filter(|t| !t.is_zero()) else {
                    out.reject(|| format!("span with invalid span_id ({} bytes)", s.span_id.len()));
                    continue;
                };
                let Ok(parent_span_id) = optional_span_id(&s.parent_span_id) else {
                    out.reject(|| {
                        format!("span with invalid parent_span_id ({} bytes)", s.parent_span_id.len())
                    });
                    continue;
                };
                let mut links = Vec::new();
                for k in Cut::first(&mut s.links, l.max_links_per_span, &mut cut.n.links) {
                    // A link to an invalid context carries no information;
                    // drop the link, keep the span.
                    if let (Some(t), Some(sp)) =
                        (TraceId::from_slice(&k.trace_id), SpanId::from_slice(&k.span_id))
                    {
                        links.push(Link {
                            trace_id: t,
                            span_id: sp,
                            trace_state: cut.short(&mut k.trace_state),
                            attributes: cut.attrs(&mut k.attributes, l.max_attributes_per_link, 0),
                        });
                    }
                }
                let events = Cut::first(&mut s.events, l.max_events_per_span, &mut cut.n.events)
                    .iter_mut()
                    .map(|e| Event {
                        time_unix_nano: e.time_unix_nano,
                        name: cut.short(&mut e.name),
                        attributes: cut.attrs(&mut e.attributes, l.max_attributes_per_event, 0),
                    })
                    .collect();
                let status = s.status.as_mut();
                out.records.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    trace_state: cut.short(&mut s.trace_state),
                    flags: s.flags,
                    name: cut.short(&mut s.name),
                    kind: u8::try_from(s.kind).ok().filter(|k| *k <= 5).unwrap_or(0),
                    start_time_unix_nano: s.start_time_unix_nano,
                    end_time_unix_nano: s.end_time_unix_nano,
                    status_code: status
                        .as_ref()
                        .and_then(|st| u8::try_from(st.code).ok())
                        .filter(|c| *c <= 2)
                        .unwrap_or(0),
                    status_message: status.map(|st| cut.short(&mut st.message)).unwrap_or_default(),
                    attributes: cut.attrs(&mut s.attributes, l.max_attributes, 0),
                    events,
                    links,
                    resource: res.clone(),
                    scope: sc.clone(),
                });
            }
        }
    }
    out.limited = cut.n;
    out
}

/// Converts a logs export request. Trace context is optional on logs: an
/// empty or all-zero trace ID means none; a trace or span ID of the wrong
/// length rejects the record. Content within the default [`Limits`].
pub fn logs(req: &ExportLogsServiceRequest) -> Converted<LogRecord> {
    logs_within(req, &Limits::default())
}

/// [`logs`] with content cut to `limits` (attributes past the count
/// dropped, long strings and bodies cut, each counted in
/// [`Converted::limited`]); no record is rejected for its content.
pub fn logs_within(req: &ExportLogsServiceRequest, limits: &Limits) -> Converted<LogRecord> {
    logs_owned(req.clone(), limits)
}

/// [`logs_within`] consuming the request: its strings move into the
/// records instead of being copied.
pub fn logs_owned(mut req: ExportLogsServiceRequest, limits: &Limits) -> Converted<LogRecord> {
    let mut out = Converted::default();
    let n: usize = req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
    out.records.reserve_exact(n);
    let mut cut = Cut::new(limits);
    for rl in &mut req.resource_logs {
        let res = cut.resource(rl.resource.as_mut());
        for sl in &mut rl.scope_logs {
            let sc = cut.scope(sl.scope.as_mut());
            for l in &mut sl.log_records {
                let trace_id = match l.trace_id.len() {
                    0 => TraceId::ZERO,
                    16 => TraceId::from_slice(&l.trace_id).unwrap_or_default(),
                    n => {
                        out.reject(|| format!("log record with invalid trace_id ({n} bytes)"));
                        continue;
                    }
                };
                let Ok(span_id) = optional_span_id(&l.span_id) else {
                    out.reject(|| format!("log record with invalid span_id ({} bytes)", l.span_id.len()));
                    continue;
                };
                out.records.push(LogRecord {
                    time_unix_nano: l.time_unix_nano,
                    observed_time_unix_nano: l.observed_time_unix_nano,
                    severity_number: l.severity_number,
                    severity_text: cut.short(&mut l.severity_text),
                    body: cut.value(l.body.as_mut(), 0, true),
                    attributes: cut.attrs(&mut l.attributes, limits.max_attributes, 0),
                    trace_id,
                    span_id: if trace_id.is_zero() { None } else { span_id },
                    flags: l.flags,
                    event_name: cut.short(&mut l.event_name),
                    resource: res.clone(),
                    scope: sc.clone(),
                });
            }
        }
    }
    out.limited = cut.n;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan};

    fn str_attr(k: &str, v: &str) -> (String, AttrValue) {
        (k.to_string(), AttrValue::Str(v.to_string()))
    }

    /// The resource and scope of both spec examples. The scope's
    /// `my.scope.attribute` has no place in storage's `Scope` (name and
    /// version only), so it is the one field of the examples not kept.
    fn example_resource_and_scope() -> (Arc<Resource>, Arc<Scope>) {
        (
            Arc::new(Resource {
                service_name: "my.service".into(),
                attributes: vec![str_attr("service.name", "my.service")],
            }),
            Arc::new(Scope { name: "my.library".into(), version: "1.0.0".into() }),
        )
    }

    /// opentelemetry-proto `examples/trace.json`, the OTLP spec's OTLP/JSON
    /// trace example: every field it sets lands in the span, the fields it
    /// leaves out take their proto3 defaults.
    #[test]
    fn test_spec_trace_example() {
        let req: ExportTraceServiceRequest =
            serde_json::from_str(include_str!("../tests/data/trace.json")).unwrap();
        let c = spans(&req);
        assert_eq!((c.rejected, c.error), (0, None));
        let (resource, scope) = example_resource_and_scope();
        let expected = Span {
            trace_id: TraceId::parse_hex("5b8efff798038103d269b633813fc60c").unwrap(),
            span_id: SpanId([0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]),
            parent_span_id: Some(SpanId([0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73])),
            trace_state: String::new(),
            flags: 0,
            name: "I'm a server span".into(),
            kind: skein_storage::model::kind::SERVER,
            start_time_unix_nano: 1_544_712_660_000_000_000,
            end_time_unix_nano: 1_544_712_661_000_000_000,
            status_code: skein_storage::model::status::UNSET,
            status_message: String::new(),
            attributes: vec![str_attr("my.span.attr", "some value")],
            events: vec![],
            links: vec![],
            resource,
            scope,
        };
        assert_eq!(c.records, vec![expected]);
    }

    /// opentelemetry-proto `examples/logs.json`, the OTLP spec's OTLP/JSON
    /// logs example, with one attribute of each value type.
    #[test]
    fn test_spec_logs_example() {
        let req: ExportLogsServiceRequest =
            serde_json::from_str(include_str!("../tests/data/logs.json")).unwrap();
        let c = logs(&req);
        assert_eq!((c.rejected, c.error), (0, None));
        let (resource, scope) = example_resource_and_scope();
        let expected = LogRecord {
            time_unix_nano: 1_544_712_660_300_000_000,
            observed_time_unix_nano: 1_544_712_660_300_000_000,
            severity_number: 0,
            severity_text: "Information".into(),
            body: AttrValue::Str("Example log record".into()),
            attributes: vec![
                str_attr("string.attribute", "some string"),
                ("boolean.attribute".into(), AttrValue::Bool(true)),
                ("int.attribute".into(), AttrValue::Int(10)),
                ("double.attribute".into(), AttrValue::Double(637.704)),
                (
                    "array.attribute".into(),
                    AttrValue::Array(vec![AttrValue::Str("many".into()), AttrValue::Str("values".into())]),
                ),
                ("map.attribute".into(), AttrValue::KvList(vec![str_attr("some.map.key", "some value")])),
            ],
            trace_id: TraceId::parse_hex("5b8efff798038103d269b633813fc60c").unwrap(),
            span_id: Some(SpanId([0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74])),
            flags: 0,
            event_name: String::new(),
            resource,
            scope,
        };
        assert_eq!(c.records, vec![expected]);
    }

    fn otlp_span(trace_id: Vec<u8>, span_id: Vec<u8>, parent_span_id: Vec<u8>) -> OtlpSpan {
        OtlpSpan { trace_id, span_id, parent_span_id, name: "s".into(), ..Default::default() }
    }

    /// A span with a bad ID is dropped and counted; the first reason is
    /// kept; the request's other spans are stored.
    #[test]
    fn test_invalid_ids_reject_the_record_only() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        otlp_span(vec![0; 16], vec![1; 8], vec![]),
                        otlp_span(vec![1; 16], vec![1; 7], vec![]),
                        otlp_span(vec![1; 16], vec![1; 8], vec![1; 3]),
                        otlp_span(vec![1; 16], vec![1; 8], vec![0; 8]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let c = spans(&req);
        assert_eq!(c.rejected, 3);
        assert_eq!(c.error.as_deref(), Some("span with invalid trace_id (16 bytes or all zeroes)"));
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.records[0].parent_span_id, None, "an all-zero parent is no parent");
        assert_eq!(c.records[0].service_name(), UNKNOWN_SERVICE);
    }

    #[test]
    fn test_nesting_past_the_limit_is_cut() {
        let mut v = AnyValue { value: Some(any_value::Value::IntValue(1)) };
        for i in 0..=MAX_VALUE_DEPTH {
            v = if i % 2 == 0 {
                AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })) }
            } else {
                let kv = KeyValue { key: "k".into(), value: Some(v), ..Default::default() };
                AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![kv] })) }
            };
        }
        let mut got = &any_value(Some(&v));
        let mut depth = 0;
        loop {
            got = match got {
                AttrValue::Array(a) => &a[0],
                AttrValue::KvList(kv) => &kv[0].1,
                other => break assert_eq!(other, &AttrValue::Empty),
            };
            depth += 1;
        }
        assert_eq!(depth, MAX_VALUE_DEPTH + 1);
    }

    fn int_kv(k: String, i: i64) -> KeyValue {
        KeyValue {
            key: k,
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(i)) }),
            ..Default::default()
        }
    }

    fn str_kv(k: &str, v: String) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
            ..Default::default()
        }
    }

    /// Issue 10 item 8: a span with a million attributes and a 15 MiB
    /// value is kept with the first 128 attributes and the value cut to
    /// 64 KiB at a character boundary, both counted; its batch's other
    /// span is whole, and nothing is rejected.
    #[test]
    fn hostile_content_is_cut_and_counted_and_the_batch_kept() {
        let mut attrs: Vec<KeyValue> = vec![str_kv("big", "é".repeat(15 << 19))]; // 15 MiB of 2-byte chars
        attrs.extend((0..1_000_000).map(|i| int_kv(format!("k{i}"), i)));
        let mut hostile = otlp_span(vec![1; 16], vec![1; 8], vec![]);
        hostile.attributes = attrs;
        hostile.events = (0..300)
            .map(|i| opentelemetry_proto::tonic::trace::v1::span::Event {
                name: format!("e{i}"),
                attributes: (0..200).map(|j| int_kv(format!("a{j}"), j)).collect(),
                ..Default::default()
            })
            .collect();
        hostile.links = (0..129)
            .map(|_| opentelemetry_proto::tonic::trace::v1::span::Link {
                trace_id: vec![2; 16],
                span_id: vec![2; 8],
                ..Default::default()
            })
            .collect();
        let mut fine = otlp_span(vec![1; 16], vec![2; 8], vec![]);
        fine.attributes = vec![str_kv("ok", "v".into())];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![hostile, fine], ..Default::default() }],
                ..Default::default()
            }],
        };
        let c = spans_within(&req, &Limits::default());
        assert_eq!((c.rejected, c.records.len()), (0, 2));
        let s = &c.records[0];
        assert_eq!(s.attributes.len(), 128);
        let AttrValue::Str(big) = &s.attributes[0].1 else { panic!("{:?}", s.attributes[0]) };
        assert_eq!(big.len(), 64 << 10, "cut at 64 KiB, a character boundary");
        assert_eq!(s.attributes[127], ("k126".to_string(), AttrValue::Int(126)));
        assert_eq!(s.events.len(), 128);
        assert_eq!(s.events[0].attributes.len(), 128);
        assert_eq!(s.links.len(), 128);
        let want = Limited {
            attributes: (1_000_001 - 128) + 128 * (200 - 128),
            events: 300 - 128,
            links: 1,
            value_length: 1,
            body_length: 0,
        };
        assert_eq!(c.limited, want);
        assert_eq!(c.records[1].attributes, vec![str_attr("ok", "v")], "the other span is whole");
    }

    /// Cuts fall on character boundaries; a log body has its own limit
    /// and counter; nested arrays are bounded too.
    #[test]
    fn cuts_keep_utf8_and_bodies_have_their_own_limit() {
        assert_eq!(prefix("aé", 2), "a");
        assert_eq!(prefix("aé", 3), "aé");
        assert_eq!(prefix("€", 2), "");
        let limits =
            Limits { max_value_bytes: 4, max_log_body_bytes: 6, max_attributes: 2, ..Limits::default() };
        let body = AnyValue { value: Some(any_value::Value::StringValue("ééééé".into())) };
        let arr = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: (0..5).map(|i| AnyValue { value: Some(any_value::Value::IntValue(i)) }).collect(),
            })),
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
                scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                    log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                        body: Some(body),
                        attributes: vec![
                            KeyValue { key: "arr".into(), value: Some(arr), ..Default::default() },
                            str_kv("s", "abcdef".into()),
                            str_kv("x", "y".into()),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let c = logs_within(&req, &limits);
        let l = &c.records[0];
        assert_eq!(l.body, AttrValue::Str("ééé".into()));
        assert_eq!(l.attributes.len(), 2);
        assert_eq!(l.attributes[0].1, AttrValue::Array(vec![AttrValue::Int(0), AttrValue::Int(1)]));
        assert_eq!(l.attributes[1], str_attr("s", "abcd"));
        assert_eq!(
            c.limited,
            Limited { attributes: 1 + 3, value_length: 1, body_length: 1, ..Default::default() }
        );
        let whole = logs_within(&req, &Limits::default());
        assert!(whole.limited.is_empty());
    }
}
