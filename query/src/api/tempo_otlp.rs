//! Model → OTLP, for Tempo's trace answers: spans grouped into
//! `ResourceSpans` by resource and scope. Kept apart, unchanged, because
//! the shared `skein_otlp::encode` replaces this file.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use skein_storage::model::{AttrValue, Attributes, Resource, Scope, Span};

fn any_value(v: &AttrValue) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        AttrValue::Empty => None,
        AttrValue::Str(s) => Some(V::StringValue(s.clone())),
        AttrValue::Int(i) => Some(V::IntValue(*i)),
        AttrValue::Double(d) => Some(V::DoubleValue(*d)),
        AttrValue::Bool(b) => Some(V::BoolValue(*b)),
        AttrValue::Bytes(b) => Some(V::BytesValue(b.clone())),
        AttrValue::Array(a) => Some(V::ArrayValue(ArrayValue { values: a.iter().map(any_value).collect() })),
        AttrValue::KvList(kv) => Some(V::KvlistValue(KeyValueList { values: key_values(kv) })),
    };
    AnyValue { value }
}

fn key_values(a: &Attributes) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| KeyValue { key: k.clone(), value: Some(any_value(v)), ..Default::default() })
        .collect()
}

fn otlp_span(s: &Span) -> OtlpSpan {
    OtlpSpan {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.name.clone(),
        kind: i32::from(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: key_values(&s.attributes),
        events: s
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.0.to_vec(),
                span_id: l.span_id.0.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: key_values(&l.attributes),
                ..Default::default()
            })
            .collect(),
        status: Some(Status { message: s.status_message.clone(), code: i32::from(s.status_code) }),
        ..Default::default()
    }
}

/// The spans as OTLP batches: one per resource (the same `Arc` or equal
/// attributes), one scope group per instrumentation scope within it.
pub fn batches(spans: &[Span]) -> Vec<ResourceSpans> {
    type Group<'a> = (&'a Arc<Resource>, Vec<(&'a Arc<Scope>, Vec<&'a Span>)>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for s in spans {
        let gi = match groups.iter().position(|(r, _)| Arc::ptr_eq(r, &s.resource) || ***r == *s.resource) {
            Some(i) => i,
            None => {
                groups.push((&s.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].1;
        match scopes.iter_mut().find(|(sc, _)| Arc::ptr_eq(sc, &s.scope) || ***sc == *s.scope) {
            Some((_, v)) => v.push(s),
            None => scopes.push((&s.scope, vec![s])),
        }
    }
    groups
        .into_iter()
        .map(|(r, scopes)| {
            let mut attributes = key_values(&r.attributes);
            if !r.attributes.iter().any(|(k, _)| k == "service.name") {
                attributes.insert(
                    0,
                    KeyValue {
                        key: "service.name".into(),
                        value: Some(any_value(&AttrValue::Str(r.service_name.clone()))),
                        ..Default::default()
                    },
                );
            }
            ResourceSpans {
                resource: Some(OtlpResource { attributes, ..Default::default() }),
                scope_spans: scopes
                    .into_iter()
                    .map(|(sc, spans)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: sc.name.clone(),
                            version: sc.version.clone(),
                            ..Default::default()
                        }),
                        spans: spans.into_iter().map(otlp_span).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            }
        })
        .collect()
}
