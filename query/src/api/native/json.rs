//! The native API's JSON shapes of the model (API.md): IDs as lowercase
//! hex, times as decimal strings of Unix ns, attributes as an object of
//! key to JSON value (bytes in base64), enums by name.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use skein_storage::model::{kind, status, AttrValue, Attributes, LogRecord, Span};

use crate::engine::TraceSummary;

/// An attribute value keeping its OTLP type: string, integer, float, bool,
/// base64 bytes, array, object; empty is `null`.
pub fn attr_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Empty => Value::Null,
        AttrValue::Str(s) => json!(s),
        AttrValue::Int(i) => json!(i),
        AttrValue::Double(d) => double(*d),
        AttrValue::Bool(b) => json!(b),
        AttrValue::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        AttrValue::Array(a) => Value::Array(a.iter().map(attr_value).collect()),
        AttrValue::KvList(kv) => attributes(kv),
    }
}

/// A double as JSON: a number when finite, else `"NaN"`, `"Infinity"` or
/// `"-Infinity"`, the strings the proto3 JSON mapping uses (JSON numbers
/// cannot hold them, and `serde_json` would write `null`).
pub fn double(d: f64) -> Value {
    if d.is_finite() {
        json!(d)
    } else if d.is_nan() {
        json!("NaN")
    } else if d > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// Attributes as an object `{key: value}` (a repeated key keeps the last).
pub fn attributes(a: &Attributes) -> Value {
    Value::Object(a.iter().map(|(k, v)| (k.clone(), attr_value(v))).collect::<Map<_, _>>())
}

/// A span (`Span` of API.md).
pub fn span(s: &Span) -> Value {
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "time_unix_nano": e.time_unix_nano.to_string(),
                "attributes": attributes(&e.attributes),
            })
        })
        .collect();
    let links: Vec<Value> = s
        .links
        .iter()
        .map(|l| {
            json!({
                "trace_id": l.trace_id.to_hex(),
                "span_id": l.span_id.to_hex(),
                "attributes": attributes(&l.attributes),
            })
        })
        .collect();
    let mut v = json!({
        "trace_id": s.trace_id.to_hex(),
        "span_id": s.span_id.to_hex(),
        "parent_span_id": s.parent_span_id.map(|p| p.to_hex()),
        "name": s.name,
        "kind": kind::name(s.kind),
        "service_name": s.service_name(),
        "start_time_unix_nano": s.start_time_unix_nano.to_string(),
        "end_time_unix_nano": s.end_time_unix_nano.to_string(),
        "duration_ns": s.duration_ns(),
        "status": {"code": status::name(s.status_code), "message": s.status_message},
        "attributes": attributes(&s.attributes),
        "resource": attributes(&s.resource.attributes),
        "scope": {"name": s.scope.name, "version": s.scope.version},
        "events": events,
        "links": links,
    });
    if !s.trace_state.is_empty() {
        v["trace_state"] = json!(s.trace_state);
    }
    v
}

/// A log record (`LogRecord` of API.md); `trace_id` is `null` without
/// trace context.
pub fn log(l: &LogRecord) -> Value {
    let mut v = json!({
        "time_unix_nano": l.time_unix_nano.to_string(),
        "observed_time_unix_nano": l.observed_time_unix_nano.to_string(),
        "severity_number": l.severity_number,
        "severity_text": l.severity_text,
        "body": attr_value(&l.body),
        "attributes": attributes(&l.attributes),
        "resource": attributes(&l.resource.attributes),
        "service_name": l.service_name(),
        "trace_id": (!l.trace_id.is_zero()).then(|| l.trace_id.to_hex()),
        "span_id": l.span_id.map(|s| s.to_hex()),
    });
    if !l.event_name.is_empty() {
        v["event_name"] = json!(l.event_name);
    }
    v
}

/// A search result (`TraceSummary` of API.md).
pub fn summary(t: &TraceSummary) -> Value {
    let services: Vec<Value> = t
        .services
        .iter()
        .map(|s| json!({"name": s.name, "span_count": s.span_count, "error_count": s.error_count}))
        .collect();
    json!({
        "trace_id": t.trace_id.to_hex(),
        "root_service": t.root_service,
        "root_name": t.root_name,
        "start_time_unix_nano": t.start_time_unix_nano.to_string(),
        "duration_ns": t.duration_ns,
        "span_count": t.span_count,
        "error_count": t.error_count,
        "services": services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_values_keep_their_json_type() {
        let attrs: Attributes = vec![
            ("s".into(), AttrValue::Str("x".into())),
            ("i".into(), AttrValue::Int(7)),
            ("d".into(), AttrValue::Double(1.5)),
            ("nan".into(), AttrValue::Double(f64::NAN)),
            ("inf".into(), AttrValue::Double(f64::INFINITY)),
            ("ninf".into(), AttrValue::Double(f64::NEG_INFINITY)),
            ("b".into(), AttrValue::Bool(true)),
            ("a".into(), AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Str("y".into())])),
            ("kv".into(), AttrValue::KvList(vec![("k".into(), AttrValue::Int(2))])),
            ("bytes".into(), AttrValue::Bytes(vec![1, 2, 3])),
        ];
        assert_eq!(
            attributes(&attrs),
            json!({"s":"x","i":7,"d":1.5,"nan":"NaN","inf":"Infinity","ninf":"-Infinity","b":true,"a":[1,"y"],"kv":{"k":2},"bytes":"AQID"})
        );
    }

    #[test]
    fn span_shape() {
        let mut s = crate::engine::testutil::span(1, 2, Some(1), "cart", "cart.Get", 5, 10, true);
        s.status_message = "boom".into();
        let v = span(&s);
        assert_eq!(v["trace_id"], "01".repeat(16));
        assert_eq!(v["parent_span_id"], "01".repeat(8));
        assert_eq!(v["start_time_unix_nano"], "5");
        assert_eq!(v["duration_ns"], 10);
        assert_eq!(v["status"], json!({"code": "ERROR", "message": "boom"}));
        assert_eq!(v["kind"], "CLIENT");
        assert_eq!(v["attributes"], json!({"http.status": 500}));
        assert!(v.get("trace_state").is_none());
    }
}
