//! OTLP/JSON request bodies to OTLP messages, accepting every form the
//! [proto3 JSON mapping](https://protobuf.dev/programming-guides/json/)
//! allows: enums by name or number, 64-bit integers and doubles as numbers
//! or strings (`"NaN"`, `"Infinity"`, `"-Infinity"` included), `null` or an
//! omitted field as the default, lowerCamelCase or the proto field name as
//! the key, unknown fields ignored.
//!
//! Why not opentelemetry-proto's serde derives, which the receiver used
//! before: they cover a subset of the mapping (enums and doubles only as
//! numbers, no proto field names, `{"arrayValue":{}}` refused), and a
//! whole batch refused with 400 is lost, since clients must not retry it.
//! Why not a hand-written normalising layer: prost-reflect implements the
//! whole mapping from the descriptors opentelemetry-proto ships
//! (`file-descriptors` feature), so the descriptors are the one table of
//! field kinds per message, and a new OTLP field needs no code here.
//!
//! The one OTLP deviation from the mapping is applied first, walking the
//! same descriptors: trace and span IDs are case-insensitive hex, not
//! base64 (OTLP spec, "JSON Protobuf Encoding"), i.e. every `bytes` field
//! named `trace_id`, `span_id` or `parent_span_id`.
//!
//! The full mapping costs about ten times the derives' time (measured on a
//! 4 MB request of 5,000 spans: 1.5 s against 0.16 s in a debug build;
//! most of it in turning the dynamic message into the prost one). So a
//! body is first tried with the derives, which read the common form (the
//! one OTLP exporters write: camelCase keys, numeric enums, hex IDs)
//! exactly as the full mapping does; only a body they refuse, or one with
//! a key containing `_` (a proto field name, which the derives would
//! silently ignore as unknown), takes the full mapping.

use std::fmt;
use std::sync::LazyLock;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

/// An OTLP message that can be read from OTLP/JSON by [`decode`]: a prost
/// message with opentelemetry-proto's serde derive (the fast path).
pub trait OtlpJson: prost::Message + Default + serde::de::DeserializeOwned {
    /// The message's full protobuf name, e.g.
    /// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`.
    const FULL_NAME: &'static str;
}

impl OtlpJson for ExportTraceServiceRequest {
    const FULL_NAME: &'static str = "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest";
}

impl OtlpJson for ExportLogsServiceRequest {
    const FULL_NAME: &'static str = "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest";
}

/// Why a body is not an OTLP/JSON message; the text names the field by
/// its JSON path (`resourceSpans[0].scopeSpans[0].spans[2].traceId: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(pub String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

/// Unknown fields are ignored, as the OTLP spec requires of receivers
/// ("OTLP/JSON receivers MUST ignore message fields with unknown names");
/// an unknown enum name then reads as the enum's default.
const OPTIONS: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(false);

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(opentelemetry_proto::DESCRIPTORS)
        .expect("opentelemetry-proto ships a valid descriptor set")
});

/// The descriptor of the message named `full_name`.
///
/// # Panics
/// If opentelemetry-proto's descriptors lack it: a build mistake, caught by
/// this module's tests.
pub fn descriptor(full_name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(full_name).unwrap_or_else(|| panic!("no descriptor for {full_name}"))
}

/// Reads an OTLP/JSON body as message `M`.
///
/// # Errors
/// [`JsonError`] when the body is not JSON, a field's value has a form the
/// mapping does not allow (`"kind": true`, `"intValue": "x"`), an ID is
/// not hex, or two members of one oneof are set; the message names the
/// field's path.
pub fn decode<M: OtlpJson>(body: &[u8]) -> Result<M, JsonError> {
    // serde's derives also read a struct from a JSON array of its fields,
    // so `[]` was an empty request answered 200 (issue 9 review).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(JsonError("an OTLP/JSON request body is a JSON object ({...})".into()));
    }
    if !has_key_with_underscore(body) {
        if let Ok(m) = serde_json::from_slice::<M>(body) {
            return Ok(m);
        }
    }
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| JsonError(format!("not valid JSON: {e}")))?;
    let desc = descriptor(M::FULL_NAME);
    hex_ids_to_base64(&mut value, &desc).map_err(|e| JsonError(e.to_string()))?;
    let mut track = serde_path_to_error::Track::new();
    let msg = DynamicMessage::deserialize_with_options(
        desc,
        serde_path_to_error::Deserializer::new(value, &mut track),
        &OPTIONS,
    )
    .map_err(|e| {
        let path = track.path().to_string();
        if path == "." {
            JsonError(e.to_string())
        } else {
            JsonError(format!("{path}: {e}"))
        }
    })?;
    msg.transcode_to::<M>().map_err(|e| JsonError(format!("cannot build the message: {e}")))
}

/// Whether the JSON text has an object key containing `_`. In OTLP/JSON
/// every object is a message, so such a key is a proto field name
/// (`trace_id`) or an unknown field. A scan of the raw bytes that tracks
/// strings and escapes; on invalid JSON its answer does not matter, since
/// both paths refuse it.
fn has_key_with_underscore(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'"' {
            i += 1;
            continue;
        }
        let mut underscore = false;
        i += 1;
        while i < body.len() && body[i] != b'"' {
            match body[i] {
                b'\\' => i += 1,
                b'_' => underscore = true,
                _ => {}
            }
            i += 1;
        }
        i += 1;
        if underscore {
            let rest = body.get(i..).unwrap_or_default();
            if rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':') {
                return true;
            }
        }
    }
    false
}

/// Whether `bytes` field `name` holds a trace or span ID, hex in OTLP/JSON.
fn is_otlp_id(name: &str) -> bool {
    matches!(name, "trace_id" | "span_id" | "parent_span_id")
}

/// A hex ID that is not hex, with the path to it: segments pushed on the
/// way out of the recursion, innermost first.
#[derive(Debug)]
struct IdError {
    path: Vec<String>,
    value: String,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path: String = self.path.iter().rev().map(String::as_str).collect();
        let path = path.trim_start_matches('.');
        write!(f, "{path}: {:?} is not a hex-encoded ID (OTLP/JSON IDs are hex, not base64)", self.value)
    }
}

/// Rewrites every hex ID under `value` (a `desc` message) to the base64
/// the proto3 mapping reads for `bytes`. Values of the wrong JSON type are
/// left for the deserializer to refuse. The recursion is bounded by
/// serde_json's nesting limit (128), already enforced on parse.
fn hex_ids_to_base64(value: &mut Value, desc: &MessageDescriptor) -> Result<(), IdError> {
    let Value::Object(fields) = value else { return Ok(()) };
    for (key, v) in fields.iter_mut() {
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else {
            continue;
        };
        let at = |mut e: IdError, index: Option<usize>| {
            if let Some(i) = index {
                e.path.push(format!("[{i}]"));
            }
            e.path.push(format!(".{key}"));
            e
        };
        match field.kind() {
            Kind::Message(m) if !field.is_map() => match v {
                Value::Array(items) if field.is_list() => {
                    for (i, item) in items.iter_mut().enumerate() {
                        hex_ids_to_base64(item, &m).map_err(|e| at(e, Some(i)))?;
                    }
                }
                _ => hex_ids_to_base64(v, &m).map_err(|e| at(e, None))?,
            },
            Kind::Bytes if is_otlp_id(field.name()) && !field.is_list() => {
                if let Value::String(s) = v {
                    let bytes = hex::decode(s.as_str())
                        .map_err(|_| at(IdError { path: Vec::new(), value: s.clone() }, None))?;
                    *s = base64::engine::general_purpose::STANDARD.encode(bytes);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};

    use prost::bytes::Bytes;
    use prost_reflect::{FieldDescriptor, Value as PValue};
    use serde_json::json;

    use super::*;

    /// The allowed JSON forms of one value of `field`'s kind (singular),
    /// each with the value it must decode to. Built from the kind alone, so
    /// every field of every message gets every form its kind allows.
    fn scalar_forms(field: &FieldDescriptor) -> Vec<(Value, PValue)> {
        match field.kind() {
            Kind::Double => vec![
                (json!(2.5), PValue::F64(2.5)),
                (json!("2.5"), PValue::F64(2.5)),
                (json!("NaN"), PValue::F64(f64::NAN)),
                (json!("Infinity"), PValue::F64(f64::INFINITY)),
                (json!("-Infinity"), PValue::F64(f64::NEG_INFINITY)),
                (json!(3), PValue::F64(3.0)),
                (json!("-1e3"), PValue::F64(-1000.0)),
            ],
            Kind::Float => vec![
                (json!(2.5), PValue::F32(2.5)),
                (json!("2.5"), PValue::F32(2.5)),
                (json!("NaN"), PValue::F32(f32::NAN)),
                (json!("-Infinity"), PValue::F32(f32::NEG_INFINITY)),
            ],
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => vec![
                (json!(42), PValue::I64(42)),
                (json!("42"), PValue::I64(42)),
                (json!(-7), PValue::I64(-7)),
                (json!("-9223372036854775808"), PValue::I64(i64::MIN)),
                (json!(1e2), PValue::I64(100)),
            ],
            Kind::Uint64 | Kind::Fixed64 => vec![
                (json!(42), PValue::U64(42)),
                (json!("1544712660000000000"), PValue::U64(1_544_712_660_000_000_000)),
                (json!(1544712660000000000u64), PValue::U64(1_544_712_660_000_000_000)),
                (json!("18446744073709551615"), PValue::U64(u64::MAX)),
                (json!(1e2), PValue::U64(100)),
            ],
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                vec![(json!(7), PValue::I32(7)), (json!("7"), PValue::I32(7)), (json!(-7), PValue::I32(-7))]
            }
            Kind::Uint32 | Kind::Fixed32 => vec![
                (json!(7), PValue::U32(7)),
                (json!("7"), PValue::U32(7)),
                (json!(4294967295u32), PValue::U32(u32::MAX)),
            ],
            Kind::Bool => vec![(json!(true), PValue::Bool(true)), (json!(false), PValue::Bool(false))],
            Kind::String => vec![(json!("x ü"), PValue::String("x ü".into()))],
            Kind::Bytes if is_otlp_id(field.name()) => {
                let id = Bytes::from_static(&[0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03]);
                vec![
                    (json!("5B8EFFF798038103"), PValue::Bytes(id.clone())),
                    (json!("5b8efff798038103"), PValue::Bytes(id)),
                    (json!(""), PValue::Bytes(Bytes::new())),
                ]
            }
            Kind::Bytes => vec![
                (json!("AQID"), PValue::Bytes(Bytes::from_static(&[1, 2, 3]))),
                (json!("AQI="), PValue::Bytes(Bytes::from_static(&[1, 2]))),
                (json!("AQI"), PValue::Bytes(Bytes::from_static(&[1, 2]))),
                (json!("-_-_"), PValue::Bytes(Bytes::from_static(&[0xfb, 0xff, 0xbf]))),
            ],
            Kind::Enum(e) => {
                let mut forms = Vec::new();
                for v in e.values() {
                    forms.push((json!(v.name()), PValue::EnumNumber(v.number())));
                    forms.push((json!(v.number()), PValue::EnumNumber(v.number())));
                }
                // proto3 enums are open: an unknown number is kept.
                forms.push((json!(99), PValue::EnumNumber(99)));
                forms
            }
            Kind::Message(m) => vec![(json!({}), PValue::Message(DynamicMessage::new(m)))],
        }
    }

    /// Every allowed form of `field`'s value, repeated or singular, plus
    /// `null` (the default, "unset" where the field has presence).
    fn forms(field: &FieldDescriptor) -> Vec<(Value, PValue, bool)> {
        let mut out = Vec::new();
        if field.is_list() {
            out.push((json!([]), PValue::List(vec![]), false));
            out.push((Value::Null, PValue::List(vec![]), false));
            for (j, v) in scalar_forms(field) {
                out.push((json!([j, j]), PValue::List(vec![v.clone(), v]), true));
            }
        } else {
            out.push((Value::Null, field.default_value(), false));
            for (j, v) in scalar_forms(field) {
                out.push((j, v, true));
            }
        }
        out
    }

    fn same(a: &PValue, b: &PValue) -> bool {
        match (a, b) {
            (PValue::F64(x), PValue::F64(y)) => x == y || (x.is_nan() && y.is_nan()),
            (PValue::F32(x), PValue::F32(y)) => x == y || (x.is_nan() && y.is_nan()),
            (PValue::List(x), PValue::List(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            _ => a == b,
        }
    }

    /// Every message type reachable from `root`, each with the first path of
    /// fields that leads to it.
    fn messages(root: &MessageDescriptor) -> Vec<(MessageDescriptor, Vec<FieldDescriptor>)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut queue = VecDeque::from([(root.clone(), Vec::new())]);
        while let Some((m, path)) = queue.pop_front() {
            if !seen.insert(m.full_name().to_string()) {
                continue;
            }
            for f in m.fields() {
                if let Kind::Message(child) = f.kind() {
                    let mut p: Vec<FieldDescriptor> = path.clone();
                    p.push(f.clone());
                    queue.push_back((child, p));
                }
            }
            out.push((m, path));
        }
        out
    }

    /// `leaf` placed at the end of `path` (one element per repeated field).
    fn nest(path: &[FieldDescriptor], leaf: Value) -> Value {
        path.iter().rev().fold(leaf, |inner, f| {
            let v = if f.is_list() { json!([inner]) } else { inner };
            json!({ f.json_name(): v })
        })
    }

    /// The message at the end of `path` in `msg` (first element of lists).
    fn follow(mut msg: DynamicMessage, path: &[FieldDescriptor]) -> DynamicMessage {
        for f in path {
            msg = match msg.get_field(f).into_owned() {
                PValue::Message(m) => m,
                PValue::List(l) => match l.into_iter().next() {
                    Some(PValue::Message(m)) => m,
                    other => panic!("{}: no element ({other:?})", f.full_name()),
                },
                other => panic!("{}: not a message ({other:?})", f.full_name()),
            };
        }
        msg
    }

    /// Decodes `body` as `M` through the receiver's path, then reads the
    /// protobuf it became back as a dynamic message of `M`'s type.
    fn through<M: OtlpJson>(body: &Value) -> Result<DynamicMessage, JsonError> {
        let m: M = decode(body.to_string().as_bytes())?;
        Ok(DynamicMessage::decode(descriptor(M::FULL_NAME), m.encode_to_vec().as_slice()).unwrap())
    }

    /// Walks every field of every message of `M` (the export request and
    /// everything under it) in every JSON form the mapping allows, under
    /// both its lowerCamelCase and its proto name, next to an unknown
    /// field; returns the message types visited and the cases run.
    fn walk<M: OtlpJson>() -> (BTreeSet<String>, usize) {
        let root = descriptor(M::FULL_NAME);
        let mut visited = BTreeSet::new();
        let mut cases = 0;
        for (m, path) in messages(&root) {
            visited.insert(m.name().to_string());
            // Every field omitted: the message is there, all defaults.
            let got =
                follow(through::<M>(&nest(&path, json!({"someFutureField": {"x": [1]}}))).unwrap(), &path);
            for f in m.fields() {
                assert!(!got.has_field(&f), "{} set though omitted", f.full_name());
            }
            for f in m.fields() {
                let mut keys = vec![f.json_name().to_string()];
                if f.name() != f.json_name() {
                    keys.push(f.name().to_string());
                }
                for key in &keys {
                    for (j, want, present) in forms(&f) {
                        let leaf = json!({ key.as_str(): j.clone(), "unknownField": [1, {"a": null}] });
                        let doc = nest(&path, leaf);
                        let got = through::<M>(&doc)
                            .unwrap_or_else(|e| panic!("{} = {j} refused: {e}\n{doc}", f.full_name()));
                        let got = follow(got, &path);
                        let value = got.get_field(&f);
                        assert!(same(&value, &want), "{} = {j}: got {value:?}, want {want:?}", f.full_name());
                        if f.supports_presence() {
                            assert_eq!(got.has_field(&f), present, "{} = {j}: presence", f.full_name());
                        }
                        cases += 1;
                    }
                }
            }
        }
        (visited, cases)
    }

    #[test]
    fn test_every_field_of_the_trace_request_in_every_form() {
        let (visited, cases) = walk::<ExportTraceServiceRequest>();
        for m in [
            "ExportTraceServiceRequest",
            "ResourceSpans",
            "Resource",
            "EntityRef",
            "ScopeSpans",
            "InstrumentationScope",
            "Span",
            "Event",
            "Link",
            "Status",
            "KeyValue",
            "AnyValue",
            "ArrayValue",
            "KeyValueList",
        ] {
            assert!(visited.contains(m), "{m} not walked: {visited:?}");
        }
        assert!(cases > 300, "{cases}");
    }

    #[test]
    fn test_every_field_of_the_logs_request_in_every_form() {
        let (visited, cases) = walk::<ExportLogsServiceRequest>();
        for m in [
            "ExportLogsServiceRequest",
            "ResourceLogs",
            "Resource",
            "EntityRef",
            "ScopeLogs",
            "InstrumentationScope",
            "LogRecord",
            "KeyValue",
            "AnyValue",
            "ArrayValue",
            "KeyValueList",
        ] {
            assert!(visited.contains(m), "{m} not walked: {visited:?}");
        }
        assert!(cases > 200, "{cases}");
    }

    /// Bad input is still refused, and the message says where.
    #[test]
    fn test_bad_forms_are_refused_with_the_path() {
        let span = |s: Value| json!({"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]});
        for (doc, want) in [
            (json!([1]), "is a JSON object"),
            (json!([]), "is a JSON object"),
            (json!("x"), "is a JSON object"),
            (span(json!({"kind": true})), "resourceSpans[0].scopeSpans[0].spans[0].kind"),
            (span(json!({"traceId": "xyz"})), "resourceSpans[0].scopeSpans[0].spans[0].traceId: \"xyz\""),
            (span(json!({"startTimeUnixNano": "1.5"})), "spans[0].startTimeUnixNano"),
            (span(json!({"start_time_unix_nano": -1})), "spans[0].start_time_unix_nano"),
            (span(json!({"attributes": {}})), "spans[0].attributes"),
            (
                span(json!({"attributes": [{"key": "k", "value": {"intValue": "x"}}]})),
                "spans[0].attributes[0].value.intValue",
            ),
            (span(json!({"status": {"code": "STATUS_CODE_ERROR", "message": 5}})), "status.message"),
        ] {
            let err = decode::<ExportTraceServiceRequest>(doc.to_string().as_bytes()).unwrap_err();
            assert!(err.0.contains(want), "{doc}: {err} lacks {want:?}");
        }
        let err = decode::<ExportTraceServiceRequest>(b" \n[]").unwrap_err();
        assert!(err.0.contains("is a JSON object"), "{err}");
        let err = decode::<ExportTraceServiceRequest>(b"{\"resourceSpans\": [").unwrap_err();
        assert!(err.0.starts_with("not valid JSON"), "{err}");
    }

    #[test]
    fn test_keys_with_underscores_are_found() {
        for (body, want) in [
            (r#"{"resourceSpans": [{"scope_spans": []}]}"#, true),
            (r#"{"a" : {"trace_id"  :"x"}}"#, true),
            (r#"{"key": "http.status_code", "v": ["a_b", "c"]}"#, false),
            (r#"{"key": "x\"y_z\": 1"}"#, false),
            (r#"{"k\\_": 1}"#, true),
            (r#"{"k": "a_b"}"#, false),
        ] {
            assert_eq!(has_key_with_underscore(body.as_bytes()), want, "{body}");
        }
    }

    /// The inputs of issue 9 item 2, as a client sends them.
    #[test]
    fn test_issue_inputs() {
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}],
                         "entityRefs": [{"type": "service", "idKeys": ["service.name"]}]},
            "scopeSpans": [{"spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
                "name": "n", "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": "1", "endTimeUnixNano": 2,
                "status": {"code": "STATUS_CODE_ERROR"},
                "attributes": [
                    {"key": "d", "value": {"doubleValue": "2.5"}},
                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                    {"key": "a", "value": {"arrayValue": {}}},
                    {"key": "m", "value": {"kvlistValue": {}}}]}]}]}]});
        let req: ExportTraceServiceRequest = decode(body.to_string().as_bytes()).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().entity_refs[0].schema_url, "");
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!((s.kind, s.status.as_ref().unwrap().code), (2, 2));
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let v = |i: usize| s.attributes[i].value.as_ref().unwrap().value.clone().unwrap();
        assert_eq!(v(0), V::DoubleValue(2.5));
        assert!(matches!(v(1), V::DoubleValue(d) if d.is_nan()));
        assert_eq!(v(2), V::ArrayValue(Default::default()));
        assert_eq!(v(3), V::KvlistValue(Default::default()));

        let logs = json!({"resource_logs": [{"scope_logs": [{"log_records": [{
            "severityNumber": "SEVERITY_NUMBER_WARN", "time_unix_nano": "3",
            "body": {"doubleValue": "-Infinity"}}]}]}]});
        let req: ExportLogsServiceRequest = decode(logs.to_string().as_bytes()).unwrap();
        let l = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!((l.severity_number, l.time_unix_nano), (13, 3));
        assert_eq!(l.body.as_ref().unwrap().value, Some(V::DoubleValue(f64::NEG_INFINITY)));
    }
}
