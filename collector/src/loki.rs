//! The Loki push API, `POST /loki/api/v1/push`, as Grafana Alloy, Promtail
//! and Fluent Bit's `loki` output send it: Loki's `logproto.PushRequest`
//! in protobuf, snappy-compressed (block format), or its JSON form
//! (optionally gzip). It takes OTLP/HTTP's path for logs: the same
//! authentication, tenancy (`X-Scope-OrgID`, as Loki), admission and
//! durability; a push is answered 204, as Loki does, once its records are
//! in the WAL.
//!
//! The mapping (Loki's own OTLP mapping read backwards, see
//! <https://grafana.com/docs/loki/latest/send-data/otel/>):
//! - each stream becomes one OTLP resource whose attributes are the
//!   stream's labels, except that `service.name` is taken, in this order,
//!   from the label `service_name`, `service`, `app`, `application`,
//!   `app_name`, `job` (the head of the list of Loki's `service_name`
//!   discovery, `discover_service_name`); the label `service_name` itself
//!   is stored as `service.name` only, since the Loki read API shows
//!   `service.name` as `service_name`. A stream with none of them is
//!   `unknown_service`, as both OpenTelemetry and Loki name it;
//! - each entry becomes a log record: its timestamp, its line as a string
//!   body, its structured metadata as string attributes, except
//!   `trace_id` and `span_id`, which become the record's trace context when
//!   they are hex IDs of the right length (a 16-digit trace ID is
//!   left-padded, as for Zipkin's 64-bit IDs) and stay attributes
//!   otherwise;
//! - a `level`, `detected_level` or `severity` label or metadata sets the
//!   record's severity text, and its number when it is a known level name.
//!
//! Any malformed part of a push refuses the whole push (400, nothing
//! stored), naming the stream and entry.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use skein_storage::tenant::TenantId;

use crate::error::HttpError;
use crate::memory::Reservation;
use crate::{Ingest, IngestError, Logs, Protocol};

/// Labels that name the service, in the order they are looked at (Loki's
/// `discover_service_name` default list, its first entries).
pub const SERVICE_LABELS: [&str; 6] = ["service_name", "service", "app", "application", "app_name", "job"];

/// Labels and metadata whose value is the record's severity.
const LEVEL_LABELS: [&str; 3] = ["level", "detected_level", "severity"];

/// The scope name the records of a push carry.
const SCOPE: &str = "loki-push";

/// Loki's `logproto` push messages, the subset a client sends.
///
/// From grafana/loki `pkg/push/push.proto` (package `logproto`), which is
/// licensed Apache-2.0 (Loki's LICENSING.md); the gogoproto options are
/// left out, the field numbers and types kept.
pub mod proto {
    /// `logproto.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        /// The streams pushed.
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }

    /// `logproto.StreamAdapter`: one stream's labels and entries.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        /// The labels in Prometheus selector form: `{a="b", c="d"}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        /// The stream's entries.
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
    }

    /// `logproto.EntryAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        /// When the line was logged.
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// The log line.
        #[prost(string, tag = "2")]
        pub line: String,
        /// Name/value pairs kept beside the line.
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    /// `logproto.LabelPairAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        /// The name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// The value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        /// Seconds since the Unix epoch.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds within the second, 0..=999,999,999.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Label or metadata pairs, in the order given.
pub type Pairs = Vec<(String, String)>;

/// One entry of a push: Unix ns, the line, its structured metadata.
pub type PushEntry = (u64, String, Pairs);

/// One stream of a push, decoded from either form.
#[derive(Debug, Default, PartialEq)]
pub struct PushStream {
    /// The stream's labels, in the order given.
    pub labels: Pairs,
    /// The entries.
    pub entries: Vec<PushEntry>,
}

fn malformed(msg: impl std::fmt::Display) -> IngestError {
    IngestError::Malformed(msg.to_string())
}

/// Parses a stream's labels in Prometheus selector form, `{a="b", c="d"}`
/// (values as Go string literals with their backslash escapes, as Loki
/// reads them). An empty selector (`{}`) is valid: Loki refuses it, but
/// here the stream is then `unknown_service`.
///
/// # Errors
/// A message saying what is wrong and where.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut cs = s.trim().char_indices().peekable();
    let src = s.trim();
    let mut out = Vec::new();
    let skip_ws = |cs: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while cs.peek().is_some_and(|c| c.1.is_whitespace()) {
            cs.next();
        }
    };
    if cs.next().map(|c| c.1) != Some('{') {
        return Err(format!("labels {src:?} do not start with '{{'"));
    }
    loop {
        skip_ws(&mut cs);
        match cs.peek().map(|c| c.1) {
            Some('}') => {
                cs.next();
                break;
            }
            None => return Err(format!("labels {src:?} end before '}}'")),
            _ => {}
        }
        let mut name = String::new();
        while let Some(&(_, c)) = cs.peek() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                name.push(c);
                cs.next();
            } else {
                break;
            }
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            let at = cs.peek().map_or(src.len(), |c| c.0);
            return Err(format!("labels {src:?}: expected a label name at byte {at}"));
        }
        skip_ws(&mut cs);
        if cs.next().map(|c| c.1) != Some('=') {
            return Err(format!("labels {src:?}: expected '=' after {name:?}"));
        }
        skip_ws(&mut cs);
        if cs.next().map(|c| c.1) != Some('"') {
            return Err(format!("labels {src:?}: the value of {name:?} is not a quoted string"));
        }
        let mut value = String::new();
        loop {
            match cs.next().map(|c| c.1) {
                None => return Err(format!("labels {src:?}: unterminated value of {name:?}")),
                Some('"') => break,
                Some('\\') => match cs.next().map(|c| c.1) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some('b') => value.push('\u{8}'),
                    Some('f') => value.push('\u{c}'),
                    Some('a') => value.push('\u{7}'),
                    Some('v') => value.push('\u{b}'),
                    Some('/') => value.push('/'),
                    Some(c @ ('"' | '\\' | '\'')) => value.push(c),
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| cs.next().map(|c| c.1)).collect();
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(c) => value.push(c),
                            None => return Err(format!("labels {src:?}: bad \\u escape in {name:?}")),
                        }
                    }
                    other => {
                        return Err(format!(
                            "labels {src:?}: unknown escape \\{} in {name:?}",
                            other.unwrap_or(' ')
                        ))
                    }
                },
                Some(c) => value.push(c),
            }
        }
        if out.iter().any(|(n, _): &(String, String)| n == &name) {
            return Err(format!("labels {src:?}: duplicate label {name:?}"));
        }
        out.push((name, value));
        skip_ws(&mut cs);
        match cs.next().map(|c| c.1) {
            Some(',') => {}
            Some('}') => break,
            _ => return Err(format!("labels {src:?}: expected ',' or '}}' after a value")),
        }
    }
    if let Some((at, _)) = cs.next() {
        return Err(format!("labels {src:?}: unexpected text at byte {at} after '}}'"));
    }
    Ok(out)
}

/// Decodes a protobuf push (already snappy-decompressed).
///
/// # Errors
/// [`IngestError::Malformed`] naming what is wrong.
pub fn decode_proto(bytes: &[u8]) -> Result<Vec<PushStream>, IngestError> {
    let req = proto::PushRequest::decode(bytes)
        .map_err(|e| malformed(format!("invalid Loki protobuf push request: {e}")))?;
    let mut out = Vec::with_capacity(req.streams.len());
    for (i, s) in req.streams.into_iter().enumerate() {
        let labels = parse_labels(&s.labels).map_err(|e| malformed(format!("streams[{i}]: {e}")))?;
        let mut entries = Vec::with_capacity(s.entries.len());
        for (j, e) in s.entries.into_iter().enumerate() {
            let ts = e.timestamp.unwrap_or_default();
            let ns = (ts.seconds >= 0 && (0..1_000_000_000).contains(&ts.nanos))
                .then(|| (ts.seconds as u64).checked_mul(1_000_000_000)?.checked_add(ts.nanos as u64))
                .flatten()
                .ok_or_else(|| {
                    malformed(format!(
                        "streams[{i}].entries[{j}]: timestamp {}s {}ns is not a time after 1970 in range",
                        ts.seconds, ts.nanos
                    ))
                })?;
            let meta = e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect();
            entries.push((ns, e.line, meta));
        }
        out.push(PushStream { labels, entries });
    }
    Ok(out)
}

/// Decodes a JSON push: `{"streams":[{"stream":{"label":"value"},
/// "values":[["<unix ns>", "line", {"metadata":"value"}]]}]}`, the
/// metadata object optional (Loki's HTTP API doc, "Ingest logs").
///
/// # Errors
/// [`IngestError::Malformed`] naming the field that is wrong.
pub fn decode_json(bytes: &[u8]) -> Result<Vec<PushStream>, IngestError> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("invalid Loki JSON push request: {e}")))?;
    let streams = v
        .get("streams")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("Loki JSON push request: expected an object with a \"streams\" array"))?;
    let strings = |v: &Value, at: &str| -> Result<Vec<(String, String)>, IngestError> {
        let obj = v.as_object().ok_or_else(|| malformed(format!("{at}: expected an object")))?;
        obj.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(malformed(format!("{at}.{k}: expected a string value"))),
            })
            .collect()
    };
    let mut out = Vec::with_capacity(streams.len());
    for (i, s) in streams.iter().enumerate() {
        let labels = match s.get("stream") {
            Some(l) => strings(l, &format!("streams[{i}].stream"))?,
            None => Vec::new(),
        };
        let values = s
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(format!("streams[{i}]: expected a \"values\" array")))?;
        let mut entries = Vec::with_capacity(values.len());
        for (j, e) in values.iter().enumerate() {
            let at = format!("streams[{i}].values[{j}]");
            let arr = e.as_array().filter(|a| (2..=3).contains(&a.len())).ok_or_else(|| {
                malformed(format!("{at}: expected [\"<unix ns>\", \"line\", {{metadata}}?]"))
            })?;
            let ns = arr[0].as_str().and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
                malformed(format!("{at}[0]: expected Unix nanoseconds as a decimal string"))
            })?;
            let line = arr[1]
                .as_str()
                .ok_or_else(|| malformed(format!("{at}[1]: expected the line as a string")))?;
            let meta = match arr.get(2) {
                Some(m) => strings(m, &format!("{at}[2]"))?,
                None => Vec::new(),
            };
            entries.push((ns, line.to_string(), meta));
        }
        out.push(PushStream { labels, entries });
    }
    Ok(out)
}

fn kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// A trace or span ID given as hex in metadata: lowercase or uppercase,
/// `len` bytes, or half as many left-padded with zeroes; `None` when it is
/// not one (or is all zeroes).
fn hex_id(s: &str, len: usize) -> Option<Vec<u8>> {
    let s = s.trim();
    let b = hex::decode(s).ok()?;
    let b = match b.len() {
        n if n == len => b,
        n if len == 16 && n == 8 => [vec![0; 8], b].concat(),
        _ => return None,
    };
    b.iter().any(|&x| x != 0).then_some(b)
}

/// The OTLP severity number of a level name (OTel logs data model), 0
/// when it is not one.
fn severity_number(level: &str) -> i32 {
    skein_storage::filter::parse_severity(level).filter(|_| level.parse::<i32>().is_err()).unwrap_or(0)
}

/// The push as an OTLP logs export, mapped as the module comment says.
pub fn to_otlp(streams: Vec<PushStream>, observed_ns: u64) -> ExportLogsServiceRequest {
    let mut resource_logs = Vec::with_capacity(streams.len());
    for s in streams {
        let service = SERVICE_LABELS
            .iter()
            .find_map(|want| s.labels.iter().find(|(n, v)| n == want && !v.is_empty()))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "unknown_service".to_string());
        let stream_level =
            s.labels.iter().find(|(n, _)| LEVEL_LABELS.contains(&n.as_str())).map(|l| l.1.clone());
        let mut attributes = vec![kv("service.name", service)];
        attributes.extend(s.labels.into_iter().filter(|(n, _)| n != "service_name").map(|(n, v)| kv(n, v)));
        let mut records = Vec::with_capacity(s.entries.len());
        for (ts, line, meta) in s.entries {
            let mut r = LogRecord {
                time_unix_nano: ts,
                observed_time_unix_nano: observed_ns,
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(line)) }),
                ..Default::default()
            };
            let mut level = stream_level.clone();
            for (n, v) in meta {
                match n.as_str() {
                    "trace_id" if r.trace_id.is_empty() => {
                        if let Some(id) = hex_id(&v, 16) {
                            r.trace_id = id;
                            continue;
                        }
                    }
                    "span_id" if r.span_id.is_empty() => {
                        if let Some(id) = hex_id(&v, 8) {
                            r.span_id = id;
                            continue;
                        }
                    }
                    n if LEVEL_LABELS.contains(&n) => level = Some(v.clone()),
                    _ => {}
                }
                r.attributes.push(kv(n, v));
            }
            if r.trace_id.is_empty() && !r.span_id.is_empty() {
                // A span ID means nothing without its trace: keep it as
                // the attribute it came as.
                r.attributes.push(kv("span_id", hex::encode(std::mem::take(&mut r.span_id))));
            }
            if let Some(l) = level {
                r.severity_number = severity_number(&l);
                r.severity_text = l;
            }
            records.push(r);
        }
        resource_logs.push(ResourceLogs {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope { name: SCOPE.into(), ..Default::default() }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ExportLogsServiceRequest { resource_logs }
}

/// Whether the body is protobuf (`true`) or JSON (`false`), by
/// `Content-Type`; Loki takes protobuf when none is given.
fn is_proto(headers: &HeaderMap) -> Result<bool, IngestError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match base.as_str() {
        "" | "application/x-protobuf" | "application/protobuf" => Ok(true),
        "application/json" => Ok(false),
        _ => Err(IngestError::UnsupportedMediaType(ct.to_string())),
    }
}

/// Snappy block-format decompression (Loki's protobuf bodies), refusing a
/// body that would decompress past `limit` before decompressing it.
fn unsnappy(raw: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let n = snap::raw::decompress_len(raw).map_err(|e| {
        malformed(format!("invalid snappy body (Loki's protobuf push is snappy block format): {e}"))
    })?;
    if n > limit {
        return Err(IngestError::TooLarge { size: n, limit });
    }
    snap::raw::Decoder::new().decompress_vec(raw).map_err(|e| {
        malformed(format!("invalid snappy body (Loki's protobuf push is snappy block format): {e}"))
    })
}

/// Decodes a whole push body (after any `Content-Encoding`).
///
/// # Errors
/// [`IngestError::Malformed`] or [`IngestError::TooLarge`].
pub fn decode(body: &[u8], proto: bool, limit: usize) -> Result<Vec<PushStream>, IngestError> {
    if proto {
        decode_proto(&unsnappy(body, limit)?)
    } else {
        decode_json(body)
    }
}

/// `POST /loki/api/v1/push`: answered 204 once the records are durable;
/// errors as `{"code", "message"}` JSON with the status and `Retry-After`
/// of OTLP/HTTP's table.
pub(crate) async fn push(
    State(ing): State<Ingest>,
    tenant: Option<Extension<TenantId>>,
    reservation: Option<Extension<Arc<Reservation>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = tenant.map(|Extension(t)| t).unwrap_or_default();
    let run = async {
        let proto = is_proto(&headers)?;
        let res = reservation.as_ref().map(|r| &*r.0);
        let limit = ing.config().max_request_bytes;
        let bytes = crate::http_api::read_body(&headers, body, limit, res).await?;
        let streams = decode(&bytes, proto, limit)?;
        drop(bytes);
        let req = to_otlp(streams, skein_storage::now_unix_nano());
        ing.export::<Logs>(&tenant, req, Protocol::Http).await?;
        Ok::<_, IngestError>(())
    };
    match run.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => HttpError { err, json: true }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels_in_selector_form() {
        let l = parse_labels(r#"{job="varlogs", filename="/var/log/a \"b\".log",app="x\ny"}"#).unwrap();
        assert_eq!(
            l,
            vec![
                ("job".into(), "varlogs".into()),
                ("filename".into(), "/var/log/a \"b\".log".into()),
                ("app".into(), "x\ny".into())
            ]
        );
        assert_eq!(parse_labels("{}").unwrap(), vec![]);
        assert_eq!(parse_labels(r#" { a = "1" , } "#).unwrap(), vec![("a".into(), "1".into())]);
        for bad in [
            "",
            "a=\"b\"",
            "{a=\"b\"",
            "{a=b}",
            "{=\"b\"}",
            "{a=\"b\" c=\"d\"}",
            "{a=\"b\"} x",
            "{a=\"1\",a=\"2\"}",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_push_maps_to_otlp() {
        let body = br#"{"streams":[{"stream":{"app":"shop","env":"prod"},
            "values":[["1700000000000000001","GET / 200",{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060708","level":"error","user":"u1"}],
                      ["1700000000000000002","plain"]]}]}"#;
        let req = to_otlp(decode_json(body).unwrap(), 5);
        let rl = &req.resource_logs[0];
        let attrs: Vec<_> = rl.resource.as_ref().unwrap().attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(attrs, ["service.name", "app", "env"]);
        let svc = &rl.resource.as_ref().unwrap().attributes[0].value;
        assert_eq!(svc.as_ref().unwrap().value, Some(any_value::Value::StringValue("shop".into())));
        let recs = &rl.scope_logs[0].log_records;
        assert_eq!(recs[0].time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(hex::encode(&recs[0].trace_id), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(hex::encode(&recs[0].span_id), "0102030405060708");
        assert_eq!((recs[0].severity_number, recs[0].severity_text.as_str()), (17, "error"));
        let keys: Vec<_> = recs[0].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["level", "user"]);
        assert!(recs[1].trace_id.is_empty() && recs[1].attributes.is_empty());
    }

    #[test]
    fn service_name_order_and_odd_ids() {
        let s = |labels: &[(&str, &str)]| PushStream {
            labels: labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            entries: vec![(1, "x".into(), vec![("trace_id".into(), "nothex".into())])],
        };
        let svc = |req: &ExportLogsServiceRequest| {
            let a = &req.resource_logs[0].resource.as_ref().unwrap().attributes;
            (a[0].key.clone(), a[0].value.clone().unwrap().value, a.len())
        };
        let sv = |s: &str| Some(any_value::Value::StringValue(s.into()));
        let r = to_otlp(vec![s(&[("job", "j"), ("app", "a"), ("service_name", "s")])], 0);
        // service_name wins and is not kept twice.
        assert_eq!(svc(&r), ("service.name".into(), sv("s"), 3));
        assert_eq!(svc(&to_otlp(vec![s(&[("job", "j"), ("app", "a")])], 0)).1, sv("a"));
        assert_eq!(svc(&to_otlp(vec![s(&[("job", "j")])], 0)).1, sv("j"));
        let r = to_otlp(vec![s(&[("env", "e")])], 0);
        assert_eq!(svc(&r).1, sv("unknown_service"));
        // A trace ID that is not hex stays an attribute.
        let rec = &r.resource_logs[0].scope_logs[0].log_records[0];
        assert!(rec.trace_id.is_empty());
        assert_eq!(rec.attributes[0].key, "trace_id");
        // A 64-bit trace ID is left-padded.
        assert_eq!(hex_id("0102030405060708", 16).unwrap()[..8], [0; 8]);
        assert_eq!(hex_id("00000000000000000000000000000000", 16), None);
    }

    #[test]
    fn protobuf_snappy_round_trip_and_bad_bodies() {
        let req = proto::PushRequest {
            streams: vec![proto::Stream {
                labels: r#"{service_name="api"}"#.into(),
                entries: vec![proto::Entry {
                    timestamp: Some(proto::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
                    line: "hello".into(),
                    structured_metadata: vec![proto::LabelPair { name: "k".into(), value: "v".into() }],
                }],
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
        let got = decode(&body, true, 1 << 20).unwrap();
        assert_eq!(
            got,
            vec![PushStream {
                labels: vec![("service_name".into(), "api".into())],
                entries: vec![(1_700_000_000_000_000_005, "hello".into(), vec![("k".into(), "v".into())])],
            }]
        );
        // Not snappy; too large once decompressed; a bad label string; a
        // negative time.
        assert!(matches!(decode(b"\xff\xff\xff\xff\xff", true, 1 << 20), Err(IngestError::Malformed(_))));
        assert!(matches!(decode(&body, true, 10), Err(IngestError::TooLarge { .. })));
        let mut bad = req.clone();
        bad.streams[0].labels = "service_name=api".into();
        let e = decode(&snap::raw::Encoder::new().compress_vec(&bad.encode_to_vec()).unwrap(), true, 1 << 20);
        assert!(e.unwrap_err().to_string().contains("streams[0]"));
        let mut bad = req;
        bad.streams[0].entries[0].timestamp = Some(proto::Timestamp { seconds: -1, nanos: 0 });
        let e = decode(&snap::raw::Encoder::new().compress_vec(&bad.encode_to_vec()).unwrap(), true, 1 << 20);
        assert!(e.unwrap_err().to_string().contains("entries[0]"));
        for bad in [
            r#"{}"#,
            r#"{"streams":[{"stream":{"a":1},"values":[]}]}"#,
            r#"{"streams":[{"stream":{},"values":[["x","l"]]}]}"#,
            r#"{"streams":[{"stream":{},"values":[[1,"l"]]}]}"#,
            r#"{"streams":[{"stream":{},"values":[["1"]]}]}"#,
            r#"{"streams":[{"stream":{},"values":[["1","l",{"m":2}]]}]}"#,
        ] {
            assert!(decode_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    /// Through the OTLP/HTTP router: a JSON push (plain and gzip) and a
    /// protobuf+snappy push are answered 204 and are in storage; bad input
    /// is a 400 (or 415) and stores nothing.
    #[tokio::test]
    async fn push_through_the_router() {
        use axum::body::Body;
        use http_body_util::BodyExt as _;
        use skein_storage::model::TraceId;
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let storage =
            skein_storage::Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
        storage.replay().unwrap();
        let app = crate::router(Ingest::new(
            skein_storage::tenant::Tenants::from_storage(storage.clone()),
            crate::CollectorConfig::default(),
        ));
        let send = |ct: &'static str, enc: Option<&'static str>, body: Vec<u8>| {
            let app = app.clone();
            async move {
                let mut req = http::Request::post("/loki/api/v1/push").header(header::CONTENT_TYPE, ct);
                if let Some(e) = enc {
                    req = req.header(header::CONTENT_ENCODING, e);
                }
                let r = app.oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
                let st = r.status();
                (st, String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned())
            }
        };
        let now = skein_storage::now_unix_nano();
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let json = format!(
            r#"{{"streams":[{{"stream":{{"service_name":"shop"}},"values":[["{now}","json line",{{"trace_id":"{trace}"}}]]}}]}}"#
        );
        let (st, b) = send("application/json", None, json.clone().into_bytes()).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, json.as_bytes()).unwrap();
        let (st, b) = send("application/json", Some("gzip"), gz.finish().unwrap()).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
        let req = proto::PushRequest {
            streams: vec![proto::Stream {
                labels: r#"{app="shop", env="prod"}"#.into(),
                entries: vec![proto::Entry {
                    timestamp: Some(proto::Timestamp { seconds: (now / 1_000_000_000) as i64, nanos: 0 }),
                    line: "proto line".into(),
                    structured_metadata: vec![proto::LabelPair {
                        name: "trace_id".into(),
                        value: trace.into(),
                    }],
                }],
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
        let (st, b) = send("application/x-protobuf", None, body).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
        let (_, logs) = storage.get_trace(&TraceId::parse_hex(trace).unwrap()).unwrap().unwrap();
        assert_eq!(logs.len(), 3);
        assert!(logs.iter().all(|l| l.service_name() == "shop"), "{logs:?}");

        let (st, b) =
            send("application/json", None, br#"{"streams":[{"values":[["x","y"]]}]}"#.to_vec()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(b.contains("streams[0].values[0][0]"), "{b}");
        let (st, _) = send("application/x-protobuf", None, b"not snappy".to_vec()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = send("text/plain", None, b"x".to_vec()).await;
        assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (_, logs) = storage.get_trace(&TraceId::parse_hex(trace).unwrap()).unwrap().unwrap();
        assert_eq!(logs.len(), 3);
    }

    proptest! {
        /// Arbitrary bytes, as protobuf (snappy or not) or JSON, never
        /// panic the decoder or the mapping.
        #[test]
        fn arbitrary_push_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), proto in any::<bool>()) {
            if let Ok(s) = decode(&body, proto, 1 << 16) {
                let _ = to_otlp(s, 0);
            }
            let snapped = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            if let Ok(s) = decode(&snapped, true, 1 << 16) {
                let _ = to_otlp(s, 0);
            }
            let _ = parse_labels(&String::from_utf8_lossy(&body));
        }

        /// Label strings built from arbitrary names and values parse back
        /// to them.
        #[test]
        fn labels_round_trip(pairs in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", ".{0,12}", 0..5)) {
            let text = format!("{{{}}}", pairs.iter()
                .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap()))
                .collect::<Vec<_>>().join(", "));
            let got = parse_labels(&text);
            // serde_json writes control characters as \u00XX, which Go's
            // strconv reads too.
            let want: Vec<_> = pairs.into_iter().collect();
            prop_assert_eq!(got, Ok(want));
        }
    }
}
