//! The two encodings of a Zipkin v2 `POST /api/v2/spans` body, read into
//! one checked form ([`ZSpan`]): the JSON list of spans
//! (openzipkin/zipkin-api `zipkin2-api.yaml`, `ListOfSpans`) and the
//! protobuf `ListOfSpans` (`zipkin.proto`, vendored in
//! `collector/proto/zipkin.proto` and declared here with prost derives).
//!
//! Every span is checked here, so that a request is refused whole, with the
//! span and field named, before anything is stored: the OpenTelemetry
//! Collector's Zipkin receiver also answers 400 to the whole request when
//! one span does not decode (zipkin-go's "valid traceId required", "valid
//! span id required").

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A span kind as Zipkin names it (`zipkin.proto` `Span.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZKind {
    Client,
    Server,
    Producer,
    Consumer,
}

/// One endpoint (`zipkin.proto` `Endpoint`); empty fields are absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ZEndpoint {
    pub(crate) service_name: String,
    pub(crate) ipv4: Option<Ipv4Addr>,
    pub(crate) ipv6: Option<Ipv6Addr>,
    /// 0 when absent; Zipkin's `int32`, so out-of-range values are kept as
    /// sent and only positive ones are mapped (as the Collector does).
    pub(crate) port: i64,
}

/// A Zipkin v2 span whose IDs, times and endpoints were checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ZSpan {
    /// 16 bytes; a 64-bit trace ID is left-padded with zeroes, as the
    /// Collector's `idutils.UInt64ToTraceID(high=0, low)` does. Never zero.
    pub(crate) trace_id: [u8; 16],
    /// Never zero.
    pub(crate) id: [u8; 8],
    /// `None` when absent, empty or all zeroes.
    pub(crate) parent_id: Option<[u8; 8]>,
    pub(crate) kind: Option<ZKind>,
    pub(crate) name: String,
    /// Start in Unix nanoseconds (Zipkin sends microseconds); 0 when absent.
    pub(crate) timestamp_ns: u64,
    /// Nanoseconds (Zipkin sends microseconds); 0 when absent.
    pub(crate) duration_ns: u64,
    pub(crate) local_endpoint: Option<ZEndpoint>,
    pub(crate) remote_endpoint: Option<ZEndpoint>,
    /// `(Unix nanoseconds, value)`.
    pub(crate) annotations: Vec<(u64, String)>,
    /// By key (both encodings carry a map; JSON's last duplicate wins).
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) debug: bool,
    pub(crate) shared: bool,
}

/// Why a body is not a list of valid Zipkin v2 spans; the message names the
/// span (by its index in the list) and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(i: usize, field: &str, what: impl fmt::Display) -> WireError {
    WireError(format!("spans[{i}].{field}: {what}"))
}

/// Microseconds to nanoseconds; `None` past what a `u64` of nanoseconds
/// holds (the year 2554).
fn us_to_ns(us: u64) -> Option<u64> {
    us.checked_mul(1000)
}

/// Lower- or upper-case hex of at most `max` digits, left-padded with
/// zeroes to `N` bytes (Zipkin's own server pads short IDs the same way).
fn hex_id<const N: usize>(s: &str, max: usize) -> Result<[u8; N], String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.len() > max {
        return Err(format!("{:?} has {} hex digits; at most {max}", truncate(s), s.len()));
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{:?} is not hex", truncate(s)));
    }
    let padded = format!("{s:0>width$}", width = N * 2);
    let mut out = [0u8; N];
    hex::decode_to_slice(padded, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// At most 40 characters of `s`, for error messages about hostile input.
fn truncate(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

/// The checks both encodings share, once their IDs are bytes.
fn required_ids(i: usize, trace: [u8; 16], id: [u8; 8]) -> Result<(), WireError> {
    if trace == [0; 16] {
        return Err(err(i, "traceId", "all zeroes (an invalid trace ID)"));
    }
    if id == [0; 8] {
        return Err(err(i, "id", "all zeroes (an invalid span ID)"));
    }
    Ok(())
}

/// A span whose end (timestamp + duration) is a 64-bit Unix nanosecond
/// time, as every stored span's is; otherwise the span is refused rather
/// than its end clamped (to the year 2554) or wrapped.
fn end_in_range(i: usize, s: ZSpan) -> Result<ZSpan, WireError> {
    if s.timestamp_ns.checked_add(s.duration_ns).is_none() {
        return Err(err(
            i,
            "duration",
            format!("{} µs after the timestamp is out of range (past 2554-07-21)", s.duration_ns / 1000),
        ));
    }
    Ok(s)
}

// ---------------------------------------------------------------- JSON

/// A time in microseconds, read as nanoseconds: a non-negative integer, or
/// a non-negative number with a fraction (the OpenTelemetry spec's Zipkin
/// exporter allows "microseconds with decimal accuracy").
#[derive(Debug, Clone, Copy)]
struct Micros(u64);

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of microseconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Micros, E> {
                us_to_ns(v).map(Micros).ok_or_else(|| E::custom(format!("{v} microseconds is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Micros, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => {
                        Err(E::custom(format!("{v} is negative; expected microseconds since the epoch")))
                    }
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Micros, E> {
                let ns = v * 1000.0;
                if !(v.is_finite() && v >= 0.0 && ns < u64::MAX as f64) {
                    return Err(E::custom(format!("{v} is not a valid number of microseconds")));
                }
                Ok(Micros(ns.round() as u64))
            }
        }
        d.deserialize_any(V)
    }
}

/// A tag value. Zipkin's tags are strings; numbers and booleans, which
/// some clients send, are kept as their JSON text.
#[derive(Debug, Clone)]
struct TagValue(String);

impl<'de> Deserialize<'de> for TagValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TagValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TagValue, E> {
                Ok(TagValue(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<TagValue, E> {
                Ok(TagValue(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TagValue, E> {
                Ok(TagValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TagValue, E> {
                Ok(TagValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TagValue, E> {
                Ok(TagValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TagValue, E> {
                Ok(TagValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct JsonAnnotation {
    timestamp: Option<Micros>,
    value: Option<String>,
}

/// A span as `zipkin2-api.yaml` writes it; every field optional here so
/// that a missing one is reported by name (see [`ZSpan`]'s checks).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    timestamp: Option<Micros>,
    duration: Option<Micros>,
    local_endpoint: Option<JsonEndpoint>,
    remote_endpoint: Option<JsonEndpoint>,
    annotations: Option<Vec<JsonAnnotation>>,
    tags: Option<BTreeMap<String, Option<TagValue>>>,
    debug: Option<bool>,
    shared: Option<bool>,
}

fn json_endpoint(i: usize, field: &str, e: Option<JsonEndpoint>) -> Result<Option<ZEndpoint>, WireError> {
    let Some(e) = e else { return Ok(None) };
    let ipv4 = match e.ipv4.filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
            err(i, &format!("{field}.ipv4"), format!("{:?} is not an IPv4 address", truncate(&s)))
        })?),
        None => None,
    };
    let ipv6 = match e.ipv6.filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<Ipv6Addr>().map_err(|_| {
            err(i, &format!("{field}.ipv6"), format!("{:?} is not an IPv6 address", truncate(&s)))
        })?),
        None => None,
    };
    Ok(Some(ZEndpoint {
        service_name: e.service_name.unwrap_or_default(),
        ipv4,
        ipv6,
        port: e.port.unwrap_or(0),
    }))
}

fn kind_of(i: usize, s: Option<&str>) -> Result<Option<ZKind>, WireError> {
    Ok(match s {
        None | Some("") => None,
        Some("CLIENT") => Some(ZKind::Client),
        Some("SERVER") => Some(ZKind::Server),
        Some("PRODUCER") => Some(ZKind::Producer),
        Some("CONSUMER") => Some(ZKind::Consumer),
        Some(other) => {
            return Err(err(
                i,
                "kind",
                format!("{:?}; expected CLIENT, SERVER, PRODUCER or CONSUMER", truncate(other)),
            ))
        }
    })
}

fn json_span(i: usize, s: JsonSpan) -> Result<ZSpan, WireError> {
    let trace = s.trace_id.ok_or_else(|| err(i, "traceId", "missing (required)"))?;
    let trace_id = hex_id::<16>(&trace, 32).map_err(|e| err(i, "traceId", e))?;
    let id = s.id.ok_or_else(|| err(i, "id", "missing (required)"))?;
    let id = hex_id::<8>(&id, 16).map_err(|e| err(i, "id", e))?;
    required_ids(i, trace_id, id)?;
    let parent_id = match s.parent_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(hex_id::<8>(p, 16).map_err(|e| err(i, "parentId", e))?).filter(|p| *p != [0; 8]),
    };
    let mut annotations = Vec::new();
    for (j, a) in s.annotations.unwrap_or_default().into_iter().enumerate() {
        let ts = a
            .timestamp
            .ok_or_else(|| err(i, &format!("annotations[{j}].timestamp"), "missing (required)"))?;
        annotations.push((ts.0, a.value.unwrap_or_default()));
    }
    Ok(ZSpan {
        trace_id,
        id,
        parent_id,
        kind: kind_of(i, s.kind.as_deref())?,
        name: s.name.unwrap_or_default(),
        timestamp_ns: s.timestamp.map_or(0, |m| m.0),
        duration_ns: s.duration.map_or(0, |m| m.0),
        local_endpoint: json_endpoint(i, "localEndpoint", s.local_endpoint)?,
        remote_endpoint: json_endpoint(i, "remoteEndpoint", s.remote_endpoint)?,
        annotations,
        tags: s.tags.unwrap_or_default().into_iter().filter_map(|(k, v)| Some((k, v?.0))).collect(),
        debug: s.debug.unwrap_or(false),
        shared: s.shared.unwrap_or(false),
    })
}

/// Reads a JSON v2 body: a list of spans.
///
/// # Errors
/// Not JSON, not a list, a field of the wrong type (named by its path), or
/// a span that fails the checks of [`ZSpan`].
pub(crate) fn from_json(body: &[u8]) -> Result<Vec<ZSpan>, WireError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let spans: Vec<JsonSpan> = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            WireError(format!("invalid Zipkin JSON v2 body (expected a list of spans): {inner}"))
        } else {
            WireError(format!("invalid Zipkin JSON v2 body at spans{path}: {inner}"))
        }
    })?;
    spans.into_iter().enumerate().map(|(i, s)| json_span(i, s).and_then(|z| end_in_range(i, z))).collect()
}

// ---------------------------------------------------------------- protobuf

/// `zipkin2.proto3.ListOfSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub(crate) spans: Vec<ProtoSpan>,
}

/// `zipkin2.proto3.Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) id: Vec<u8>,
    /// `Span.Kind`: 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
    #[prost(int32, tag = "4")]
    pub(crate) kind: i32,
    #[prost(string, tag = "5")]
    pub(crate) name: String,
    #[prost(fixed64, tag = "6")]
    pub(crate) timestamp: u64,
    #[prost(uint64, tag = "7")]
    pub(crate) duration: u64,
    #[prost(message, optional, tag = "8")]
    pub(crate) local_endpoint: Option<ProtoEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub(crate) remote_endpoint: Option<ProtoEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub(crate) annotations: Vec<ProtoAnnotation>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub(crate) tags: BTreeMap<String, String>,
    #[prost(bool, tag = "12")]
    pub(crate) debug: bool,
    #[prost(bool, tag = "13")]
    pub(crate) shared: bool,
}

/// `zipkin2.proto3.Endpoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoEndpoint {
    #[prost(string, tag = "1")]
    pub(crate) service_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) ipv4: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub(crate) port: i32,
}

/// `zipkin2.proto3.Annotation`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoAnnotation {
    #[prost(fixed64, tag = "1")]
    pub(crate) timestamp: u64,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

fn proto_endpoint(i: usize, field: &str, e: Option<ProtoEndpoint>) -> Result<Option<ZEndpoint>, WireError> {
    let Some(e) = e else { return Ok(None) };
    let ipv4 = match e.ipv4.len() {
        0 => None,
        4 => Some(Ipv4Addr::new(e.ipv4[0], e.ipv4[1], e.ipv4[2], e.ipv4[3])),
        n => return Err(err(i, &format!("{field}.ipv4"), format!("{n} bytes; expected 4"))),
    };
    let ipv6 = match <[u8; 16]>::try_from(e.ipv6.as_slice()) {
        _ if e.ipv6.is_empty() => None,
        Ok(b) => Some(Ipv6Addr::from(b)),
        Err(_) => {
            return Err(err(i, &format!("{field}.ipv6"), format!("{} bytes; expected 16", e.ipv6.len())))
        }
    };
    Ok(Some(ZEndpoint { service_name: e.service_name, ipv4, ipv6, port: i64::from(e.port) }))
}

fn proto_span(i: usize, s: ProtoSpan) -> Result<ZSpan, WireError> {
    let trace_id = match s.trace_id.len() {
        0 => return Err(err(i, "trace_id", "missing (required)")),
        8 => {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&s.trace_id);
            t
        }
        16 => <[u8; 16]>::try_from(s.trace_id.as_slice()).expect("16 bytes"),
        n => return Err(err(i, "trace_id", format!("{n} bytes; expected 8 or 16"))),
    };
    let id = match <[u8; 8]>::try_from(s.id.as_slice()) {
        Ok(id) => id,
        Err(_) if s.id.is_empty() => return Err(err(i, "id", "missing (required)")),
        Err(_) => return Err(err(i, "id", format!("{} bytes; expected 8", s.id.len()))),
    };
    required_ids(i, trace_id, id)?;
    let parent_id = match <[u8; 8]>::try_from(s.parent_id.as_slice()) {
        _ if s.parent_id.is_empty() => None,
        Ok(p) => Some(p).filter(|p| *p != [0; 8]),
        Err(_) => return Err(err(i, "parent_id", format!("{} bytes; expected 8", s.parent_id.len()))),
    };
    let kind = match s.kind {
        1 => Some(ZKind::Client),
        2 => Some(ZKind::Server),
        3 => Some(ZKind::Producer),
        4 => Some(ZKind::Consumer),
        // Unspecified, or a kind newer than this proto: absent, as proto3
        // reads an unknown enum value.
        _ => None,
    };
    let time = |us: u64, field: &str| {
        us_to_ns(us).ok_or_else(|| err(i, field, format!("{us} microseconds is out of range")))
    };
    let mut annotations = Vec::with_capacity(s.annotations.len());
    for (j, a) in s.annotations.into_iter().enumerate() {
        annotations.push((time(a.timestamp, &format!("annotations[{j}].timestamp"))?, a.value));
    }
    Ok(ZSpan {
        trace_id,
        id,
        parent_id,
        kind,
        name: s.name,
        timestamp_ns: time(s.timestamp, "timestamp")?,
        duration_ns: time(s.duration, "duration")?,
        local_endpoint: proto_endpoint(i, "local_endpoint", s.local_endpoint)?,
        remote_endpoint: proto_endpoint(i, "remote_endpoint", s.remote_endpoint)?,
        annotations,
        tags: s.tags,
        debug: s.debug,
        shared: s.shared,
    })
}

/// Reads a protobuf body: a `ListOfSpans`.
///
/// # Errors
/// Not a `ListOfSpans`, or a span that fails the checks of [`ZSpan`].
pub(crate) fn from_proto(body: &[u8]) -> Result<Vec<ZSpan>, WireError> {
    use prost::Message as _;
    let list = ListOfSpans::decode(body)
        .map_err(|e| WireError(format!("invalid Zipkin protobuf body (expected a ListOfSpans): {e}")))?;
    list.spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| proto_span(i, s).and_then(|z| end_in_range(i, z)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_json_ids_are_padded_and_checked() {
        let one = |span: &str| from_json(format!("[{span}]").as_bytes());
        let s = &one(r#"{"traceId":"463AC35C9F6413AD","id":"a","parentId":"0000000000000000"}"#).unwrap()[0];
        assert_eq!(hex::encode(s.trace_id), "0000000000000000463ac35c9f6413ad");
        assert_eq!(hex::encode(s.id), "000000000000000a");
        assert_eq!(s.parent_id, None, "an all-zero parent is no parent");
        for (span, want) in [
            (r#"{"id":"a"}"#, "spans[0].traceId: missing (required)"),
            (r#"{"traceId":"1"}"#, "spans[0].id: missing (required)"),
            (r#"{"traceId":"xyz","id":"a"}"#, "spans[0].traceId: \"xyz\" is not hex"),
            (&format!(r#"{{"traceId":"{}","id":"a"}}"#, "1".repeat(33)), "has 33 hex digits; at most 32"),
            (r#"{"traceId":"1","id":"12345678901234567"}"#, "spans[0].id: \"12345678901234567\" has 17"),
            (r#"{"traceId":"0","id":"a"}"#, "spans[0].traceId: all zeroes"),
            (r#"{"traceId":"1","id":"00"}"#, "spans[0].id: all zeroes"),
            (r#"{"traceId":"1","id":"a","parentId":"q"}"#, "spans[0].parentId: \"q\" is not hex"),
            (r#"{"traceId":"1","id":"a","kind":"SIDEWAYS"}"#, "spans[0].kind: \"SIDEWAYS\""),
            (r#"{"traceId":1,"id":"a"}"#, "at spans[0].traceId: invalid type: integer"),
            (r#"{"traceId":"1","id":"a","timestamp":-5}"#, "at spans[0].timestamp: -5 is negative"),
            (r#"{"traceId":"1","id":"a","timestamp":18446744073709552}"#, "out of range"),
            // Each in range, their sum not (a report: stored ending in 2554).
            (
                r#"{"traceId":"a1b2c3d4e5f60719","id":"1","timestamp":1764511200000000,"duration":18446744073709551}"#,
                "spans[0].duration: 18446744073709551 µs after the timestamp is out of range",
            ),
            (r#"{"traceId":"1","id":"a","localEndpoint":{"ipv4":"1.2.3"}}"#, "localEndpoint.ipv4: \"1.2.3\""),
            (
                r#"{"traceId":"1","id":"a","annotations":[{"value":"x"}]}"#,
                "annotations[0].timestamp: missing",
            ),
            (r#"{"traceId":"1","id":"a","tags":{"k":{"x":1}}}"#, "at spans[0].tags.k: invalid type: map"),
        ] {
            let e = one(span).unwrap_err().0;
            assert!(e.contains(want), "{span}: {e}");
        }
        let e = from_json(b"{\"traceId\":\"1\"}").unwrap_err().0;
        assert!(e.contains("expected a list of spans"), "{e}");
        assert!(from_json(b"").is_err());
        assert_eq!(from_json(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn test_json_times_tags_and_nulls() {
        let s = &from_json(
            br#"[{"traceId":"1","id":"2","timestamp":1502787600000000,"duration":1.5,"kind":null,
                "tags":{"n":3,"b":true,"s":"x","nul":null},"annotations":[{"timestamp":7,"value":"ws"}],
                "localEndpoint":null,"remoteEndpoint":{"ipv6":"::1","port":8080},"debug":true,"shared":false,
                "unknownField":[1,2]}]"#,
        )
        .unwrap()[0];
        assert_eq!((s.timestamp_ns, s.duration_ns), (1_502_787_600_000_000_000, 1500));
        assert_eq!(s.kind, None);
        let tags: Vec<_> = s.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(tags, vec![("b", "true"), ("n", "3"), ("s", "x")]);
        assert_eq!(s.annotations, vec![(7000, "ws".to_string())]);
        assert_eq!(s.local_endpoint, None);
        let r = s.remote_endpoint.as_ref().unwrap();
        assert_eq!((r.ipv6, r.port), (Some(Ipv6Addr::LOCALHOST), 8080));
        assert!(s.debug && !s.shared);
    }

    /// Bytes written by hand from `zipkin.proto`'s field numbers and wire
    /// types, so the prost declarations are checked against the .proto and
    /// not against themselves.
    #[test]
    fn test_proto_fields_match_zipkin_proto() {
        let mut span = Vec::new();
        span.extend([0x0a, 8, 1, 2, 3, 4, 5, 6, 7, 8]); // 1 trace_id: 8 bytes
        span.extend([0x12, 8, 0, 0, 0, 0, 0, 0, 0, 9]); // 2 parent_id
        span.extend([0x1a, 8, 0, 0, 0, 0, 0, 0, 0, 10]); // 3 id
        span.extend([0x20, 2]); // 4 kind = SERVER (varint)
        span.extend([0x2a, 3, b'g', b'e', b't']); // 5 name
        span.push(0x31); // 6 timestamp, fixed64
        span.extend(1_502_787_600_000_000u64.to_le_bytes());
        span.extend([0x38, 0x96, 0x01]); // 7 duration = 150 (varint)
                                         // 8 local_endpoint { service_name "fe", ipv4 10.0.0.1, port 443 }
        span.extend([0x42, 13, 0x0a, 2, b'f', b'e', 0x12, 4, 10, 0, 0, 1, 0x20, 0xbb, 0x03]);
        span.extend([0x4a, 0]); // 9 remote_endpoint: present, empty
                                // 10 annotation { timestamp (fixed64) 5, value "ws" }
        span.extend([0x52, 13, 0x09, 5, 0, 0, 0, 0, 0, 0, 0, 0x12, 2, b'w', b's']);
        span.extend([0x5a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']); // 11 tags {k: v}
        span.extend([0x60, 1, 0x68, 1]); // 12 debug, 13 shared
        let mut body = vec![0x0a, span.len() as u8];
        body.extend(&span);
        let s = &from_proto(&body).unwrap()[0];
        assert_eq!(hex::encode(s.trace_id), "00000000000000000102030405060708");
        assert_eq!((s.parent_id, s.id), (Some([0, 0, 0, 0, 0, 0, 0, 9]), [0, 0, 0, 0, 0, 0, 0, 10]));
        assert_eq!((s.kind, s.name.as_str()), (Some(ZKind::Server), "get"));
        assert_eq!((s.timestamp_ns, s.duration_ns), (1_502_787_600_000_000_000, 150_000));
        let l = s.local_endpoint.as_ref().unwrap();
        assert_eq!((l.service_name.as_str(), l.ipv4, l.port), ("fe", Some(Ipv4Addr::new(10, 0, 0, 1)), 443));
        assert_eq!(s.remote_endpoint, Some(ZEndpoint::default()));
        assert_eq!(s.annotations, vec![(5000, "ws".to_string())]);
        assert_eq!(s.tags.get("k").map(String::as_str), Some("v"));
        assert!(s.debug && s.shared);
    }

    #[test]
    fn test_proto_errors_name_the_field() {
        use prost::Message as _;
        let ok = ProtoSpan { trace_id: vec![1; 16], id: vec![2; 8], ..Default::default() };
        let enc = |s: ProtoSpan| ListOfSpans { spans: vec![ok.clone(), s] }.encode_to_vec();
        for (s, want) in [
            (
                ProtoSpan { trace_id: vec![1; 5], ..ok.clone() },
                "spans[1].trace_id: 5 bytes; expected 8 or 16",
            ),
            (ProtoSpan { trace_id: vec![], ..ok.clone() }, "spans[1].trace_id: missing"),
            (ProtoSpan { trace_id: vec![0; 16], ..ok.clone() }, "spans[1].traceId: all zeroes"),
            (ProtoSpan { id: vec![2; 7], ..ok.clone() }, "spans[1].id: 7 bytes; expected 8"),
            (ProtoSpan { parent_id: vec![2; 3], ..ok.clone() }, "spans[1].parent_id: 3 bytes"),
            (ProtoSpan { timestamp: u64::MAX, ..ok.clone() }, "spans[1].timestamp: 18446744073709551615"),
            (
                ProtoSpan {
                    remote_endpoint: Some(ProtoEndpoint { ipv6: vec![1; 4], ..Default::default() }),
                    ..ok.clone()
                },
                "spans[1].remote_endpoint.ipv6: 4 bytes; expected 16",
            ),
        ] {
            let e = from_proto(&enc(s)).unwrap_err().0;
            assert!(e.contains(want), "{e}");
        }
        let e = from_proto(b"\x0a\x05\x01").unwrap_err().0;
        assert!(e.contains("expected a ListOfSpans"), "{e}");
        assert_eq!(from_proto(b"").unwrap(), vec![]);
    }
}
