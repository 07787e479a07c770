//! OTLP protobuf messages to storage's model, with the per-record validation
//! the OTLP spec asks for: a record with an invalid ID is dropped and counted
//! (reported back in `partial_success`), the rest of the request is kept.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

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
}

impl<T> Default for Converted<T> {
    fn default() -> Self {
        Converted { records: Vec::new(), rejected: 0, error: None }
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

/// An OTLP `AnyValue` as an attribute value; an absent value, an unset
/// one, or nesting deeper than 16 levels is [`AttrValue::Empty`].
pub fn any_value(v: Option<&AnyValue>) -> AttrValue {
    any_value_depth(v, 0)
}

fn any_value_depth(v: Option<&AnyValue>, depth: usize) -> AttrValue {
    if depth > MAX_VALUE_DEPTH {
        return AttrValue::Empty;
    }
    match v.and_then(|v| v.value.as_ref()) {
        None => AttrValue::Empty,
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(any_value::Value::BytesValue(b)) => AttrValue::Bytes(b.clone()),
        Some(any_value::Value::ArrayValue(a)) => {
            AttrValue::Array(a.values.iter().map(|v| any_value_depth(Some(v), depth + 1)).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => AttrValue::KvList(attributes_depth(&kv.values, depth + 1)),
        // An index into a profiles string dictionary; meaningless for
        // traces and logs, which carry no dictionary.
        Some(any_value::Value::StringValueStrindex(_)) => AttrValue::Empty,
    }
}

/// OTLP key-value pairs as attributes, in their received order (duplicate
/// keys are kept as sent).
pub fn attributes(kvs: &[KeyValue]) -> Attributes {
    attributes_depth(kvs, 0)
}

fn attributes_depth(kvs: &[KeyValue], depth: usize) -> Attributes {
    kvs.iter().map(|kv| (kv.key.clone(), any_value_depth(kv.value.as_ref(), depth))).collect()
}

fn resource(r: Option<&OtlpResource>) -> Arc<Resource> {
    let attributes = r.map(|r| attributes(&r.attributes)).unwrap_or_default();
    let service_name = attributes
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("service.name", AttrValue::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
    Arc::new(Resource { service_name, attributes })
}

fn scope(s: Option<&InstrumentationScope>) -> Arc<Scope> {
    Arc::new(Scope {
        name: s.map(|s| s.name.clone()).unwrap_or_default(),
        version: s.map(|s| s.version.clone()).unwrap_or_default(),
    })
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
/// than 16 bytes is considered invalid").
pub fn spans(req: &ExportTraceServiceRequest) -> Converted<Span> {
    let mut out = Converted::default();
    for rs in &req.resource_spans {
        let res = resource(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            let sc = scope(ss.scope.as_ref());
            for s in &ss.spans {
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
                let mut links = Vec::with_capacity(s.links.len());
                for l in &s.links {
                    // A link to an invalid context carries no information;
                    // drop the link, keep the span.
                    if let (Some(t), Some(sp)) =
                        (TraceId::from_slice(&l.trace_id), SpanId::from_slice(&l.span_id))
                    {
                        links.push(Link {
                            trace_id: t,
                            span_id: sp,
                            trace_state: l.trace_state.clone(),
                            attributes: attributes(&l.attributes),
                        });
                    }
                }
                let status = s.status.as_ref();
                out.records.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    trace_state: s.trace_state.clone(),
                    flags: s.flags,
                    name: s.name.clone(),
                    kind: u8::try_from(s.kind).ok().filter(|k| *k <= 5).unwrap_or(0),
                    start_time_unix_nano: s.start_time_unix_nano,
                    end_time_unix_nano: s.end_time_unix_nano,
                    status_code: status
                        .and_then(|st| u8::try_from(st.code).ok())
                        .filter(|c| *c <= 2)
                        .unwrap_or(0),
                    status_message: status.map(|st| st.message.clone()).unwrap_or_default(),
                    attributes: attributes(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| Event {
                            time_unix_nano: e.time_unix_nano,
                            name: e.name.clone(),
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    links,
                    resource: res.clone(),
                    scope: sc.clone(),
                });
            }
        }
    }
    out
}

/// Converts a logs export request. Trace context is optional on logs: an
/// empty or all-zero trace ID means none; a trace or span ID of the wrong
/// length rejects the record.
pub fn logs(req: &ExportLogsServiceRequest) -> Converted<LogRecord> {
    let mut out = Converted::default();
    for rl in &req.resource_logs {
        let res = resource(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            let sc = scope(sl.scope.as_ref());
            for l in &sl.log_records {
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
                    severity_text: l.severity_text.clone(),
                    body: any_value(l.body.as_ref()),
                    attributes: attributes(&l.attributes),
                    trace_id,
                    span_id: if trace_id.is_zero() { None } else { span_id },
                    flags: l.flags,
                    event_name: l.event_name.clone(),
                    resource: res.clone(),
                    scope: sc.clone(),
                });
            }
        }
    }
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
}
