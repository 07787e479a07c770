//! OTLP protobuf messages to Skein's model, with the per-record validation
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
    pub records: Vec<T>,
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
