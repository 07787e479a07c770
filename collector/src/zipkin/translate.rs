//! Zipkin v2 spans to an OTLP trace export request, the way the
//! OpenTelemetry Collector's Zipkin receiver maps them
//! (opentelemetry-collector-contrib `pkg/translator/zipkin/zipkinv2`,
//! `ToTranslator.ToTraces`, with its default `parse_string_tags: false`).
//! The request then takes the OTLP path ([`crate::Ingest::export`]), so
//! validation, content limits and storage are the same as for OTLP.
//!
//! Where Skein differs from the Collector, on purpose:
//! - `shared: true` (the server half of an RPC that reuses the client's
//!   span ID, Zipkin's B3 single-span model): Skein keeps one span per
//!   (trace ID, span ID), so the shared half gets a span ID derived from
//!   its own and the client span as parent, as Jaeger's `SpanIDDeduper`
//!   adjuster does at query time. The Collector passes both halves on with
//!   one ID.
//! - `debug: true` sets the W3C sampled bit in the span's flags (B3's debug
//!   implies sampled); the Collector drops the flag.
//! - Tags with resource semantic-convention names go to the resource of
//!   every span that carries them; the Collector takes them from the first
//!   span of each service only.
//! - `otel.status_code` also takes the OpenTelemetry spec's upper-case
//!   names (`OK`, `ERROR`), which the OpenTelemetry SDKs' Zipkin exporters
//!   send, and `otel.scope.name`/`version` name the scope as well as
//!   `otel.library.*`.
//! - An `error` tag whose value is a message (not `true`) also becomes the
//!   status message when no `otel.status_description` gave one (Zipkin's
//!   convention: the tag's value is the error message).
//! - An annotation whose value is a JSON object of one key holding an
//!   object (`{"name": {"k": "v"}}`, the OpenTelemetry spec's Zipkin
//!   exporter form for events) becomes an event of that name with those
//!   attributes.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::wire::{ZEndpoint, ZKind, ZSpan};

/// The span attribute the Collector sets when a span came without a
/// timestamp (its `zipkin.StartTimeAbsent`); the span then starts at the
/// Unix epoch.
pub(crate) const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";

/// The tag naming the resource attribute the local service name goes to
/// (the Collector's `zipkin.TagServiceNameSource`); `service.name` without it.
const SERVICE_NAME_SOURCE: &str = "otlp.service.name.source";

/// Whether a tag is a resource attribute rather than a span one: the names
/// of the resource semantic conventions (v1.6.1, as the Collector's
/// `GetResourceSemanticConventionAttributeNames`) and the OpenCensus
/// resource keys the Collector lists with them.
fn is_resource_key(k: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "cloud.",
        "aws.ecs.",
        "aws.eks.",
        "aws.log.",
        "container.",
        "device.",
        "host.",
        "k8s.",
        "os.",
        "process.",
        "service.",
        "telemetry.",
    ];
    const EXACT: [&str; 13] = [
        "deployment.environment",
        "faas.name",
        "faas.id",
        "faas.version",
        "faas.instance",
        "faas.max_memory",
        "webengine.name",
        "webengine.version",
        "webengine.description",
        "opencensus.starttime",
        "opencensus.exporterversion",
        "opencensus.resourcetype",
        SERVICE_NAME_SOURCE,
    ];
    PREFIXES.iter().any(|p| k.starts_with(p)) || EXACT.contains(&k)
}

/// Tags that name the instrumentation scope (old and new semantic
/// conventions); taken off the span's attributes.
const SCOPE_NAME_KEYS: [&str; 2] = ["otel.scope.name", "otel.library.name"];
const SCOPE_VERSION_KEYS: [&str; 2] = ["otel.scope.version", "otel.library.version"];

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn str_kv(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

/// Sets `key`, replacing a value already there (the Collector's `PutStr`).
fn put(attrs: &mut Vec<KeyValue>, new: KeyValue) {
    match attrs.iter_mut().find(|a| a.key == new.key) {
        Some(a) => *a = new,
        None => attrs.push(new),
    }
}

/// `otel.status_code` values: the proto names, the names the Collector's
/// own Zipkin exporter once wrote (`Ok`, `Error`), and the spec's
/// upper-case names the SDK exporters write.
fn status_code(v: &str) -> i32 {
    match v {
        "STATUS_CODE_OK" | "Ok" | "OK" => StatusCode::Ok as i32,
        "STATUS_CODE_ERROR" | "Error" | "ERROR" => StatusCode::Error as i32,
        _ => StatusCode::Unset as i32,
    }
}

/// An event from an annotation value: the OpenTelemetry spec's exporter
/// form `{"name": {attrs}}`, the Collector exporter's
/// `name|{attrs}|dropped` form, or else the value as the name.
fn event(time_unix_nano: u64, value: String) -> Event {
    let attrs_of = |m: &serde_json::Map<String, serde_json::Value>| -> Vec<KeyValue> {
        m.iter().filter_map(|(k, v)| json_scalar(v).map(|v| kv(k, v))).collect()
    };
    if value.starts_with('{') {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&value) {
            if let (1, Some((name, serde_json::Value::Object(attrs)))) = (o.len(), o.iter().next()) {
                return Event {
                    time_unix_nano,
                    name: name.clone(),
                    attributes: attrs_of(attrs),
                    ..Default::default()
                };
            }
        }
    }
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() >= 3 {
        let json = parts[1..parts.len() - 1].join("|");
        let dropped = parts[parts.len() - 1].parse::<u32>();
        if let (Ok(serde_json::Value::Object(attrs)), Ok(dropped)) =
            (serde_json::from_str::<serde_json::Value>(&json), dropped)
        {
            return Event {
                time_unix_nano,
                name: parts[0].to_string(),
                attributes: attrs_of(&attrs),
                dropped_attributes_count: dropped,
            };
        }
    }
    // The Collector names the event by the part before the first `|`
    // even when the rest does not parse (and then fails the request);
    // the whole value is kept here instead, since nothing is lost.
    Event { time_unix_nano, name: value, ..Default::default() }
}

/// A JSON scalar as an attribute value: strings, booleans, and numbers as
/// integers when whole (the Collector's `jsonMapToAttributeMap`).
fn json_scalar(v: &serde_json::Value) -> Option<any_value::Value> {
    use any_value::Value as V;
    Some(match v {
        serde_json::Value::String(s) => V::StringValue(s.clone()),
        serde_json::Value::Bool(b) => V::BoolValue(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => {
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    V::IntValue(f as i64)
                } else {
                    V::DoubleValue(f)
                }
            }
        },
        _ => return None,
    })
}

/// The span ID a shared (server) half is stored under: a fixed bijective
/// mix (the SplitMix64 finaliser) of its Zipkin ID, so that a retry of the
/// same span gets the same ID and two shared spans of a trace never meet;
/// never zero and never the ID itself.
fn shared_span_id(id: [u8; 8]) -> [u8; 8] {
    let mut z = u64::from_be_bytes(id) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 || z == u64::from_be_bytes(id) {
        z = !u64::from_be_bytes(id);
    }
    z.to_be_bytes()
}

fn endpoint_attrs(attrs: &mut Vec<KeyValue>, e: &ZEndpoint, ip_key: &str, port_key: &str) {
    // IPv6 after IPv4, so IPv6 wins when both are set, as in the Collector.
    if let Some(ip) = e.ipv4 {
        put(attrs, str_kv(ip_key, ip.to_string()));
    }
    if let Some(ip) = e.ipv6 {
        put(attrs, str_kv(ip_key, ip.to_string()));
    }
    if e.port > 0 {
        put(attrs, kv(port_key, any_value::Value::IntValue(e.port)));
    }
}

/// Where a span goes: its resource and scope.
#[derive(PartialEq)]
struct GroupKey {
    resource: Vec<(String, String)>,
    scope: (String, String),
}

/// One Zipkin span as an OTLP span, and the resource and scope it belongs to.
fn span(z: ZSpan) -> (GroupKey, Span) {
    let mut tags: BTreeMap<String, String> = z.tags;

    // Resource: the local service name, and every tag with a resource name.
    let mut resource = Vec::new();
    let service = z.local_endpoint.as_ref().map(|e| e.service_name.as_str()).filter(|s| !s.is_empty());
    let source = tags.remove(SERVICE_NAME_SOURCE).filter(|s| !s.is_empty());
    let resource_keys: Vec<String> = tags.keys().filter(|k| is_resource_key(k)).cloned().collect();
    for k in resource_keys {
        let v = tags.remove(&k).expect("listed");
        resource.push((k, v));
    }
    if let Some(service) = service {
        let key = source.unwrap_or_else(|| "service.name".to_string());
        match resource.iter_mut().find(|(k, _)| *k == key) {
            Some(r) => r.1 = service.to_string(),
            None => resource.push((key, service.to_string())),
        }
    }
    resource.sort();

    let take_first = |tags: &mut BTreeMap<String, String>, keys: [&str; 2]| {
        let found = keys.iter().find_map(|k| tags.get(*k).cloned());
        for k in keys {
            tags.remove(k);
        }
        found.unwrap_or_default()
    };
    let scope = (take_first(&mut tags, SCOPE_NAME_KEYS), take_first(&mut tags, SCOPE_VERSION_KEYS));

    let trace_state = tags.remove("w3c.tracestate").unwrap_or_default();
    let kind = match z.kind {
        Some(ZKind::Client) => SpanKind::Client,
        Some(ZKind::Server) => SpanKind::Server,
        Some(ZKind::Producer) => SpanKind::Producer,
        Some(ZKind::Consumer) => SpanKind::Consumer,
        None => match tags.remove("span.kind").as_deref() {
            Some("internal") => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
    };

    let mut status = Status::default();
    if let Some(code) = tags.remove("otel.status_code") {
        status.code = status_code(&code);
        if let Some(msg) = tags.remove("otel.status_description") {
            status.message = msg;
        }
    }
    if let Some(v) = tags.get("error") {
        status.code = StatusCode::Error as i32;
        if v == "true" {
            tags.remove("error");
        } else if status.message.is_empty() {
            status.message = v.clone();
        }
    }

    let mut attributes: Vec<KeyValue> = tags.into_iter().map(|(k, v)| str_kv(&k, v)).collect();
    if let Some(l) = &z.local_endpoint {
        endpoint_attrs(&mut attributes, l, "net.host.ip", "net.host.port");
    }
    if let Some(r) = &z.remote_endpoint {
        if !r.service_name.is_empty() {
            put(&mut attributes, str_kv("peer.service", r.service_name.clone()));
        }
        endpoint_attrs(&mut attributes, r, "net.peer.ip", "net.peer.port");
    }
    if z.timestamp_ns == 0 {
        put(&mut attributes, kv(START_TIME_ABSENT, any_value::Value::BoolValue(true)));
    }

    let (span_id, parent) = if z.shared {
        (shared_span_id(z.id), Some(z.id))
    } else {
        // A span that names itself as its parent is a root (the Collector
        // drops such a parent).
        (z.id, z.parent_id.filter(|p| *p != z.id))
    };
    let span = Span {
        trace_id: z.trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        trace_state,
        flags: u32::from(z.debug),
        name: z.name,
        kind: kind as i32,
        start_time_unix_nano: z.timestamp_ns,
        end_time_unix_nano: z.timestamp_ns.saturating_add(z.duration_ns),
        attributes,
        events: z.annotations.into_iter().map(|(t, v)| event(t, v)).collect(),
        status: Some(status),
        ..Default::default()
    };
    (GroupKey { resource, scope }, span)
}

/// The OTLP export request for `spans`: one `ResourceSpans` per distinct
/// resource, one `ScopeSpans` per scope in it, spans in request order
/// within each.
pub(crate) fn to_otlp(spans: Vec<ZSpan>) -> ExportTraceServiceRequest {
    let mut groups: Vec<(GroupKey, Vec<Span>)> = Vec::new();
    for z in spans {
        let (key, s) = span(z);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(s),
            None => groups.push((key, vec![s])),
        }
    }
    let mut out: Vec<ResourceSpans> = Vec::new();
    for (key, spans) in groups {
        let scope_spans = ScopeSpans {
            scope: Some(InstrumentationScope {
                name: key.scope.0,
                version: key.scope.1,
                ..Default::default()
            }),
            spans,
            ..Default::default()
        };
        let attributes: Vec<KeyValue> = key.resource.iter().map(|(k, v)| str_kv(k, v.clone())).collect();
        match out.iter_mut().find(|r| r.resource.as_ref().is_some_and(|r| r.attributes == attributes)) {
            Some(rs) => rs.scope_spans.push(scope_spans),
            None => out.push(ResourceSpans {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_spans: vec![scope_spans],
                ..Default::default()
            }),
        }
    }
    ExportTraceServiceRequest { resource_spans: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zipkin::wire::from_json;
    use skein_storage::model::{kind, status, AttrValue, Span as Stored};

    /// The JSON spans through the mapping and the OTLP decoder, as stored.
    fn stored(json: &str) -> Vec<Stored> {
        let req = to_otlp(from_json(json.as_bytes()).unwrap());
        let c = skein_otlp::decode::spans(&req);
        assert_eq!(c.rejected, 0, "{:?}", c.error);
        c.records
    }

    fn one(fields: &str) -> Stored {
        let sep = if fields.is_empty() { "" } else { "," };
        stored(&format!(r#"[{{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312"{sep}{fields}}}]"#))
            .remove(0)
    }

    fn attr(s: &Stored, k: &str) -> Option<AttrValue> {
        s.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn res_attr(s: &Stored, k: &str) -> Option<AttrValue> {
        s.resource.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn text(v: &str) -> Option<AttrValue> {
        Some(AttrValue::Str(v.into()))
    }

    #[test]
    fn test_ids_times_and_name() {
        let s = one(
            r#""parentId":"6b221d5bc9e6496c","name":"get /api","timestamp":1472470996199000,"duration":207000"#,
        );
        assert_eq!(
            s.trace_id.to_hex(),
            "0000000000000000463ac35c9f6413ad",
            "64-bit trace IDs are left-padded"
        );
        assert_eq!(s.span_id.to_hex(), "a2fb4a1d1a96d312");
        assert_eq!(s.parent_span_id.unwrap().to_hex(), "6b221d5bc9e6496c");
        assert_eq!(s.name, "get /api");
        assert_eq!(s.start_time_unix_nano, 1_472_470_996_199_000_000, "microseconds to nanoseconds");
        assert_eq!(s.duration_ns(), 207_000_000);
        assert_eq!(attr(&s, START_TIME_ABSENT), None);
        let s = one(r#""parentId":"a2fb4a1d1a96d312","duration":5"#);
        assert_eq!(s.parent_span_id, None, "a span that is its own parent is a root");
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (0, 5000));
        assert_eq!(attr(&s, START_TIME_ABSENT), Some(AttrValue::Bool(true)));
    }

    #[test]
    fn test_kinds() {
        for (k, want) in [
            ("CLIENT", kind::CLIENT),
            ("SERVER", kind::SERVER),
            ("PRODUCER", kind::PRODUCER),
            ("CONSUMER", kind::CONSUMER),
        ] {
            assert_eq!(one(&format!(r#""kind":"{k}""#)).kind, want);
        }
        assert_eq!(one("").kind, kind::UNSPECIFIED);
        let s = one(r#""tags":{"span.kind":"internal"}"#);
        assert_eq!((s.kind, attr(&s, "span.kind")), (kind::INTERNAL, None));
        let s = one(r#""kind":"CLIENT","tags":{"span.kind":"internal"}"#);
        assert_eq!((s.kind, attr(&s, "span.kind")), (kind::CLIENT, text("internal")), "kind wins; tag kept");
    }

    #[test]
    fn test_local_endpoint_is_the_resource_and_host() {
        let s = one(r#""localEndpoint":{"serviceName":"frontend","ipv4":"192.168.99.1","port":8080},
               "tags":{"host.name":"h1","telemetry.sdk.language":"python","http.method":"GET"}"#);
        assert_eq!(s.service_name(), "frontend");
        assert_eq!(res_attr(&s, "host.name"), text("h1"), "resource conventions go to the resource");
        assert_eq!(res_attr(&s, "telemetry.sdk.language"), text("python"));
        assert_eq!(attr(&s, "host.name"), None);
        assert_eq!(attr(&s, "http.method"), text("GET"), "tags are string attributes");
        assert_eq!(attr(&s, "net.host.ip"), text("192.168.99.1"));
        assert_eq!(attr(&s, "net.host.port"), Some(AttrValue::Int(8080)));
        let s = one(r#""localEndpoint":{"serviceName":"fe","ipv4":"10.0.0.1","ipv6":"2001:db8::c001"}"#);
        assert_eq!(attr(&s, "net.host.ip"), text("2001:db8::c001"), "IPv6 wins, as in the Collector");
        assert_eq!(attr(&s, "net.host.port"), None, "no port: no attribute");
        assert_eq!(one("").service_name(), "unknown_service");
        let s =
            one(r#""localEndpoint":{"serviceName":"fe"},"tags":{"otlp.service.name.source":"faas.name"}"#);
        assert_eq!(res_attr(&s, "faas.name"), text("fe"));
        assert_eq!(res_attr(&s, "service.name"), None);
    }

    #[test]
    fn test_remote_endpoint_is_the_peer() {
        let s = one(
            r#""kind":"CLIENT","remoteEndpoint":{"serviceName":"backend","ipv4":"172.3.0.2","port":9000}"#,
        );
        assert_eq!(attr(&s, "peer.service"), text("backend"));
        assert_eq!(attr(&s, "net.peer.ip"), text("172.3.0.2"));
        assert_eq!(attr(&s, "net.peer.port"), Some(AttrValue::Int(9000)));
        let s = one(r#""remoteEndpoint":{"ipv6":"::1","port":0},"tags":{"peer.service":"tagged"}"#);
        assert_eq!(attr(&s, "net.peer.ip"), text("::1"));
        assert_eq!(attr(&s, "net.peer.port"), None);
        assert_eq!(attr(&s, "peer.service"), text("tagged"), "no remote name: the tag stays");
    }

    #[test]
    fn test_status_from_tags() {
        let s = one(r#""tags":{"error":"true"}"#);
        assert_eq!((s.status_code, attr(&s, "error")), (status::ERROR, None));
        let s = one(r#""tags":{"error":"connection refused"}"#);
        assert_eq!(s.status_code, status::ERROR, "any error tag is an error");
        assert_eq!(attr(&s, "error"), text("connection refused"), "a message is kept, as the Collector does");
        assert_eq!(s.status_message, "connection refused");
        let s = one(r#""tags":{"otel.status_code":"STATUS_CODE_ERROR","otel.status_description":"boom"}"#);
        assert_eq!((s.status_code, s.status_message.as_str()), (status::ERROR, "boom"));
        assert_eq!((attr(&s, "otel.status_code"), attr(&s, "otel.status_description")), (None, None));
        for (v, want) in
            [("OK", status::OK), ("Ok", status::OK), ("ERROR", status::ERROR), ("bogus", status::UNSET)]
        {
            assert_eq!(one(&format!(r#""tags":{{"otel.status_code":"{v}"}}"#)).status_code, want, "{v}");
        }
        let s = one(r#""tags":{"otel.status_code":"ERROR","error":"","otel.status_description":"why"}"#);
        assert_eq!((s.status_code, s.status_message.as_str()), (status::ERROR, "why"));
        let s = one(r#""tags":{"otel.status_description":"alone"}"#);
        assert_eq!(s.status_code, status::UNSET);
        assert_eq!(attr(&s, "otel.status_description"), text("alone"), "without a code it is a plain tag");
        assert_eq!(one("").status_code, status::UNSET);
    }

    #[test]
    fn test_annotations_are_events() {
        let s = one(r#""annotations":[{"timestamp":1472470996238000,"value":"ws"},
                {"timestamp":2,"value":"{\"cache miss\": {\"key\": \"u:1\", \"n\": 3, \"ok\": false, \"r\": 0.5}}"},
                {"timestamp":3,"value":"retry|{\"attempt\":2}|1"},
                {"timestamp":4,"value":"{\"not\": \"an event\"}"}]"#);
        let e = &s.events;
        assert_eq!((e[0].time_unix_nano, e[0].name.as_str()), (1_472_470_996_238_000_000, "ws"));
        assert!(e[0].attributes.is_empty());
        assert_eq!(e[1].name, "cache miss");
        let a = |i: usize, k: &str| e[i].attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(a(1, "key"), text("u:1"));
        assert_eq!(a(1, "n"), Some(AttrValue::Int(3)));
        assert_eq!(a(1, "ok"), Some(AttrValue::Bool(false)));
        assert_eq!(a(1, "r"), Some(AttrValue::Double(0.5)));
        assert_eq!((e[2].name.as_str(), a(2, "attempt")), ("retry", Some(AttrValue::Int(2))));
        assert_eq!(e[3].name, r#"{"not": "an event"}"#);
    }

    #[test]
    fn test_scope_trace_state_debug() {
        let s = one(
            r#""debug":true,"timestamp":1,"tags":{"otel.library.name":"lib","otel.library.version":"1.0",
               "otel.scope.name":"lib","otel.scope.version":"1.0","w3c.tracestate":"k=v"}"#,
        );
        assert_eq!((s.scope.name.as_str(), s.scope.version.as_str()), ("lib", "1.0"));
        assert!(s.attributes.is_empty(), "{:?}", s.attributes);
        assert_eq!(s.trace_state, "k=v");
        assert_eq!(s.flags, 1, "debug sets the sampled bit");
        assert_eq!(one("").flags, 0);
    }

    #[test]
    fn test_shared_server_half_gets_its_own_id() {
        let spans = stored(
            r#"[{"traceId":"1","id":"c","parentId":"b","kind":"CLIENT","localEndpoint":{"serviceName":"a"}},
                {"traceId":"1","id":"c","parentId":"b","kind":"SERVER","shared":true,"localEndpoint":{"serviceName":"z"}},
                {"traceId":"1","id":"d","parentId":"c","localEndpoint":{"serviceName":"z"}}]"#,
        );
        let (client, server) = (&spans[0], &spans[1]);
        assert_eq!(client.span_id.to_hex(), "000000000000000c");
        assert_ne!(server.span_id, client.span_id);
        assert_eq!(server.parent_span_id, Some(client.span_id), "the client is the server half's parent");
        assert_eq!(server.span_id.0, shared_span_id([0, 0, 0, 0, 0, 0, 0, 0xc]), "stable across retries");
        assert_eq!(spans[2].parent_span_id, Some(client.span_id));
        assert_eq!((client.service_name(), server.service_name()), ("a", "z"));
    }

    #[test]
    fn test_groups_by_resource_and_scope() {
        let req = to_otlp(
            from_json(
                br#"[{"traceId":"1","id":"1","localEndpoint":{"serviceName":"a"}},
                    {"traceId":"1","id":"2","localEndpoint":{"serviceName":"b"}},
                    {"traceId":"1","id":"3","localEndpoint":{"serviceName":"a"},"tags":{"otel.library.name":"x"}},
                    {"traceId":"1","id":"4","localEndpoint":{"serviceName":"a"}}]"#,
            )
            .unwrap(),
        );
        assert_eq!(req.resource_spans.len(), 2);
        let a = &req.resource_spans[0];
        assert_eq!(a.scope_spans.len(), 2);
        assert_eq!(a.scope_spans[0].spans.len(), 2);
        assert_eq!(a.scope_spans[1].scope.as_ref().unwrap().name, "x");
    }
}
