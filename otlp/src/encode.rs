//! Storage's model back to OTLP, for APIs that answer in OTLP shapes (the
//! Tempo API's `tempopb.Trace` is OTLP `ResourceSpans` as `batches`).
//!
//! The inverse of [`crate::decode`] on everything the model keeps: a span
//! decoded from the output of [`batches`] equals the span encoded. What the
//! model does not keep (scope attributes, dropped counts, schema URLs) is
//! left at its proto3 default.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use skein_storage::model::{AttrValue, Attributes, Resource, Scope, Span};

/// An attribute value as an OTLP `AnyValue`; [`AttrValue::Empty`] is an
/// `AnyValue` with no value set.
pub fn any_value(v: &AttrValue) -> AnyValue {
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

/// Attributes as OTLP key-value pairs, in their stored order.
pub fn key_values(a: &Attributes) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| KeyValue { key: k.clone(), value: Some(any_value(v)), ..Default::default() })
        .collect()
}

/// One span as an OTLP span (its resource and scope go in the enclosing
/// [`ResourceSpans`] and [`ScopeSpans`]; see [`batches`]). The status is
/// always set, `UNSET` included, as Tempo does.
pub fn otlp_span(s: &Span) -> OtlpSpan {
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
/// attributes), one scope group per instrumentation scope within it, both
/// in order of first appearance; spans keep their order within a group.
/// A resource without a `service.name` attribute gets one (first) from
/// the resource's service name, so OTLP readers see the service the model
/// shows.
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

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use skein_storage::model::{kind, status, Event, Link, SpanId, TraceId};

    use super::*;
    use crate::decode;

    /// Every `AttrValue` variant, nested ones included.
    fn every_value() -> Attributes {
        vec![
            ("empty".into(), AttrValue::Empty),
            ("str".into(), AttrValue::Str("ünïcode".into())),
            ("int".into(), AttrValue::Int(i64::MIN)),
            ("double".into(), AttrValue::Double(-0.25)),
            ("bool".into(), AttrValue::Bool(false)),
            ("bytes".into(), AttrValue::Bytes(vec![0, 1, 0xff])),
            (
                "array".into(),
                AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Empty, AttrValue::Array(vec![])]),
            ),
            (
                "kvlist".into(),
                AttrValue::KvList(vec![
                    ("inner".into(), AttrValue::Bytes(vec![])),
                    ("deeper".into(), AttrValue::KvList(vec![("x".into(), AttrValue::Bool(true))])),
                ]),
            ),
        ]
    }

    fn span(resource: &Arc<Resource>, scope: &Arc<Scope>, n: u8) -> Span {
        Span {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([n; 8]),
            parent_span_id: (n > 1).then_some(SpanId([1; 8])),
            trace_state: format!("k{n}=v"),
            flags: 0x301,
            name: format!("op {n}"),
            kind: n % 6,
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(n),
            end_time_unix_nano: u64::MAX,
            status_code: n % 3,
            status_message: if n % 3 == status::ERROR { "boom".into() } else { String::new() },
            attributes: every_value(),
            events: vec![
                Event { time_unix_nano: 5, name: "exception".into(), attributes: every_value() },
                Event { time_unix_nano: 0, name: String::new(), attributes: vec![] },
            ],
            links: vec![Link {
                trace_id: TraceId([9; 16]),
                span_id: SpanId([8; 8]),
                trace_state: "a=b".into(),
                attributes: every_value(),
            }],
            resource: resource.clone(),
            scope: scope.clone(),
        }
    }

    /// Model → OTLP → protobuf bytes or OTLP/JSON (what the Tempo API
    /// serves) → OTLP → model gives the spans back,
    /// every field kind included: each `AttrValue` variant in span, event,
    /// link and resource attributes, events, links, status, kind, flags,
    /// trace state, two resources and two scopes. (Scope attributes and
    /// dropped counts are not in the model, so there is nothing to keep.)
    #[test]
    fn test_round_trip_model_otlp_model() {
        let mut res_attrs = every_value();
        res_attrs.insert(0, ("service.name".into(), AttrValue::Str("checkout".into())));
        let r1 = Arc::new(Resource { service_name: "checkout".into(), attributes: res_attrs });
        let r2 = Arc::new(Resource {
            service_name: "cart".into(),
            attributes: vec![("service.name".into(), AttrValue::Str("cart".into()))],
        });
        let s1 = Arc::new(Scope { name: "lib-a".into(), version: "1.2.3".into() });
        let s2 = Arc::new(Scope { name: "lib-b".into(), version: String::new() });
        let spans: Vec<Span> = [(&r1, &s1), (&r1, &s1), (&r1, &s2), (&r2, &s1), (&r2, &s1), (&r2, &s2)]
            .into_iter()
            .zip(1u8..)
            .map(|((r, sc), n)| span(r, sc, n))
            .collect();
        let kinds: Vec<u8> = spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [kind::INTERNAL, kind::SERVER, kind::CLIENT, kind::PRODUCER, kind::CONSUMER, 0]);

        let req = ExportTraceServiceRequest { resource_spans: batches(&spans) };
        assert_eq!(req.resource_spans.len(), 2);
        assert_eq!(req.resource_spans[0].scope_spans.len(), 2);
        let protobuf = ExportTraceServiceRequest::decode(&req.encode_to_vec()[..]).unwrap();
        let json: ExportTraceServiceRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        for wire in [protobuf, json] {
            let back = decode::spans(&wire);
            assert_eq!((back.rejected, back.error), (0, None));
            assert_eq!(back.records, spans);
        }
    }

    /// A resource stored without a `service.name` attribute (the service
    /// came from elsewhere) gets one in OTLP, so readers see the service.
    #[test]
    fn test_service_name_is_added_to_the_resource() {
        let r = Arc::new(Resource { service_name: "svc".into(), attributes: vec![] });
        let sc = Arc::new(Scope::default());
        let b = batches(&[span(&r, &sc, 1)]);
        let attrs = &b[0].resource.as_ref().unwrap().attributes;
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].key, "service.name");
        assert_eq!(decode::any_value(attrs[0].value.as_ref()), AttrValue::Str("svc".into()));
    }
}
