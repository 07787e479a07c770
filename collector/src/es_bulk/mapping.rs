//! One Elasticsearch document (a JSON object of a `_bulk` request) as an
//! OTLP log record, so that it takes the OTLP/HTTP logs path from there
//! (limits, validation, the durable append).
//!
//! The document is flattened first (`{"log":{"level":"warn"}}` becomes
//! `log.level`), then the well-known fields are taken out of it, each the
//! first present of its list: the time, the body, the severity, the trace
//! and span IDs and the service. Everything left is an attribute. The
//! field lists are those of the shippers' defaults: Logstash and ECS
//! (`@timestamp`, `message`, `log.level`, `trace.id`, `span.id`,
//! `service.name`), Fluent Bit and Docker (`log`, `time`), Fluentd
//! (`@timestamp` with `logstash_format`), Vector (`timestamp`, `message`),
//! and the common JSON loggers (`msg`, `level`, `severity`, `traceId`).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Map, Value};

/// The attribute that keeps the index (or data stream) a document was
/// sent to, the one place an Elasticsearch user's routing survives.
pub const INDEX_ATTRIBUTE: &str = "elasticsearch.index";

/// Fields read as the record's time, first present wins.
const TIME_FIELDS: [&str; 3] = ["@timestamp", "timestamp", "time"];
/// Fields read as the body.
const BODY_FIELDS: [&str; 3] = ["message", "log", "msg"];
/// Fields read as the severity.
const LEVEL_FIELDS: [&str; 3] = ["level", "severity", "log.level"];
/// Fields read as the trace ID.
const TRACE_FIELDS: [&str; 3] = ["trace_id", "traceId", "trace.id"];
/// Fields read as the span ID.
const SPAN_FIELDS: [&str; 3] = ["span_id", "spanId", "span.id"];
/// Fields read as the service (resource `service.name`).
const SERVICE_FIELDS: [&str; 3] = ["service.name", "service", "kubernetes.labels.app"];
/// Of [`SERVICE_FIELDS`], the one also kept as an attribute: it is a
/// Kubernetes label like its siblings, which stay attributes.
const SERVICE_FIELD_KEPT: &str = "kubernetes.labels.app";

/// A document mapped to a log record, with the service it goes under.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The resource's `service.name`; empty when the document names none
    /// (stored as `unknown_service`).
    pub service: String,
    /// The record, `observed_time_unix_nano` set to the time of receipt.
    pub record: LogRecord,
}

/// Maps one document sent to `index`, received at `now` (Unix ns).
///
/// # Errors
/// The reason the document cannot be stored, for the item's
/// `document_parsing_exception` (Elasticsearch's answer to a value its
/// mapping refuses): a time field that is not a date (RFC 3339, or epoch
/// milliseconds as a number or digits) or falls outside 1970-2554. A trace
/// or span ID that is not hex of the right length is not an error: the
/// record is kept without trace context and the value stays an attribute
/// under its own name, so no log line is lost to a malformed ID.
pub fn map_document(doc: Map<String, Value>, index: &str, now: u64) -> Result<Mapped, String> {
    let mut fields: Vec<(String, Value)> = Vec::with_capacity(doc.len() + 4);
    flatten(String::new(), doc, &mut fields);
    // Keys repeat when a document has both `a.b` and `a: {b}`. OTLP keys
    // are unique, so the values become one array under the key, in key
    // order (as `flatten` meets them), as Elasticsearch indexes them: one multi-valued
    // field, arrays among the values flattened into it.
    let mut at: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(fields.len());
    let mut merged: Vec<(String, Vec<Value>)> = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        match at.get(&k) {
            Some(&i) => merged[i].1.push(v),
            None => {
                at.insert(k.clone(), merged.len());
                merged.push((k, vec![v]));
            }
        }
    }
    let mut fields: Vec<(String, Value)> = merged
        .into_iter()
        .map(|(k, mut vs)| {
            if vs.len() == 1 {
                return (k, vs.pop().unwrap_or(Value::Null));
            }
            let all = vs
                .into_iter()
                .flat_map(|v| match v {
                    Value::Array(a) => a,
                    v => vec![v],
                })
                .collect();
            (k, Value::Array(all))
        })
        .collect();

    let mut record = LogRecord { observed_time_unix_nano: now, ..Default::default() };
    if let Some((name, v)) = take(&mut fields, &TIME_FIELDS, |v| !v.is_null()) {
        record.time_unix_nano =
            parse_time(&v).map_err(|e| format!("failed to parse field [{name}] of type [date]: {e}"))?;
    }
    if let Some((_, v)) = take(&mut fields, &BODY_FIELDS, |v| !v.is_null()) {
        record.body = Some(any_value(v));
    }
    if let Some((_, v)) = take(&mut fields, &LEVEL_FIELDS, |v| v.is_string() || v.is_number()) {
        let (text, number) = severity(&v);
        record.severity_text = text;
        record.severity_number = number;
    }
    let mut kept = Vec::new();
    if let Some((name, v)) = take(&mut fields, &TRACE_FIELDS, Value::is_string) {
        match parse_id(v.as_str().unwrap_or_default(), 16) {
            Some(id) => record.trace_id = id,
            None => kept.push((name, v)),
        }
    }
    if let Some((name, v)) = take(&mut fields, &SPAN_FIELDS, Value::is_string) {
        match parse_id(v.as_str().unwrap_or_default(), 8) {
            Some(id) => record.span_id = id,
            None => kept.push((name, v)),
        }
    }
    let service = match take(&mut fields, &SERVICE_FIELDS, Value::is_string) {
        Some((name, Value::String(s))) => {
            if name == SERVICE_FIELD_KEPT {
                kept.push((name, Value::String(s.clone())));
            }
            s
        }
        _ => String::new(),
    };
    fields.extend(kept);
    record.attributes = fields
        .into_iter()
        .map(|(key, v)| kv(key, any_value(v)))
        .chain(std::iter::once(kv(INDEX_ATTRIBUTE.into(), any_value(Value::String(index.into())))))
        .collect();
    Ok(Mapped { service, record })
}

/// Moves nested objects' fields up with dotted names (in key order, as
/// the JSON parser keeps them); nulls are left out (Elasticsearch indexes
/// nothing for them). Arrays stay arrays, their objects key-value lists.
/// Depth is bounded by the JSON parser's own limit (128).
fn flatten(prefix: String, obj: Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in obj {
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            Value::Null => {}
            Value::Object(inner) => flatten(key, inner, out),
            v => out.push((key, v)),
        }
    }
}

/// Removes and returns the first field of `names`, in that order, whose
/// value `ok` accepts.
fn take(
    fields: &mut Vec<(String, Value)>,
    names: &[&str],
    ok: impl Fn(&Value) -> bool,
) -> Option<(String, Value)> {
    let i = names.iter().find_map(|n| fields.iter().position(|(k, v)| k == n && ok(v)))?;
    Some(fields.remove(i))
}

/// A JSON value as an OTLP value: integers that fit `i64` as integers,
/// other numbers as doubles, arrays as arrays, objects (inside arrays) as
/// key-value lists; null as an unset value.
pub(crate) fn any_value(v: Value) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(V::StringValue(s)),
        Value::Array(a) => Some(V::ArrayValue(ArrayValue { values: a.into_iter().map(any_value).collect() })),
        Value::Object(o) => Some(V::KvlistValue(KeyValueList {
            values: o.into_iter().map(|(key, v)| kv(key, any_value(v))).collect(),
        })),
    };
    AnyValue { value }
}

/// An OTLP attribute.
pub(crate) fn kv(key: String, value: AnyValue) -> KeyValue {
    KeyValue { key, value: Some(value), ..Default::default() }
}

/// The latest time storage's `u64` nanoseconds hold, with margin: 2554.
const MAX_MILLIS: f64 = 18_000_000_000_000.0;

/// A date as Elasticsearch's default date format reads it
/// (`strict_date_optional_time||epoch_millis`): RFC 3339 with any number of
/// fraction digits, a date-time without offset (UTC), a bare date, or epoch
/// milliseconds as a number or a string of digits (with a fraction).
/// Answers Unix nanoseconds.
pub(crate) fn parse_time(v: &Value) -> Result<u64, String> {
    let range = |ms: String| format!("epoch milliseconds [{ms}] outside 1970-2554");
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(ms) => ms.checked_mul(1_000_000).ok_or_else(|| range(n.to_string())),
            // A fraction is read from its digits, exactly; only an
            // exponent form goes through a float.
            None => match n.as_f64() {
                Some(_) if is_decimal(&n.to_string()) => parse_time(&Value::String(n.to_string())),
                Some(ms) if (0.0..MAX_MILLIS).contains(&ms) => Ok((ms * 1e6).round() as u64),
                _ => Err(range(n.to_string())),
            },
        },
        Value::String(s) => {
            let s = s.trim();
            // Four digits are a year (the date format is tried first, as
            // Elasticsearch does); longer digit strings, epoch millis.
            if is_decimal(s) && (s.len() != 4 || s.contains('.')) {
                let (int, frac) = s.split_once('.').unwrap_or((s, ""));
                // Exact: whole milliseconds, then up to six fraction digits.
                let ms: u64 = int.parse().map_err(|_| range(s.to_string()))?;
                let sub: u64 = format!("{:0<6}", &frac[..frac.len().min(6)]).parse().unwrap_or(0);
                ms.checked_mul(1_000_000).and_then(|n| n.checked_add(sub)).ok_or_else(|| range(s.to_string()))
            } else {
                parse_date(s)
            }
        }
        other => Err(format!("[{other}] is not a date")),
    }
}

/// Digits, with at most one `.` after the first.
fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    !int.is_empty() && digits(int) && digits(frac)
}

/// Elasticsearch's `strict_date_optional_time` (its default date format;
/// Java `DateFormatters.STRICT_DATE_OPTIONAL_TIME`): `yyyy[-MM[-dd]]`, then
/// optionally `T` and `HH[:mm[:ss[.fraction]]]`, then an optional offset
/// `Z`, `±HH`, `±HH:mm` or `±HHmm`; missing parts are their lowest value and
/// no offset is UTC. A fraction past nine digits is cut to nanoseconds.
fn parse_date(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("[{s}] is not a strict_date_optional_time date (RFC 3339 and its shorter forms) or epoch milliseconds")
    };
    let b = s.as_bytes();
    let mut pos = 0;
    // `n` ASCII digits at `pos`, as a number.
    let digits = |pos: &mut usize, n: usize| -> Option<u32> {
        let part = b.get(*pos..*pos + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *pos += n;
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |pos: &mut usize, c: u8| -> bool {
        let hit = b.get(*pos) == Some(&c);
        if hit {
            *pos += 1;
        }
        hit
    };
    let year = digits(&mut pos, 4).ok_or_else(bad)?;
    let (month, day) = if sep(&mut pos, b'-') {
        let month = digits(&mut pos, 2).ok_or_else(bad)?;
        (month, if sep(&mut pos, b'-') { digits(&mut pos, 2).ok_or_else(bad)? } else { 1 })
    } else {
        (1, 1)
    };
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    if sep(&mut pos, b'T') {
        hour = digits(&mut pos, 2).ok_or_else(bad)?;
        if sep(&mut pos, b':') {
            minute = digits(&mut pos, 2).ok_or_else(bad)?;
            if sep(&mut pos, b':') {
                second = digits(&mut pos, 2).ok_or_else(bad)?;
                if sep(&mut pos, b'.') || sep(&mut pos, b',') {
                    let start = pos;
                    while b.get(pos).is_some_and(u8::is_ascii_digit) {
                        pos += 1;
                    }
                    let frac = &s[start..pos];
                    if frac.is_empty() {
                        return Err(bad());
                    }
                    nanos = format!("{:0<9}", &frac[..frac.len().min(9)]).parse().map_err(|_| bad())?;
                }
            }
        }
    }
    let offset_secs: i32 = match b.get(pos) {
        None => 0,
        Some(b'Z' | b'z') => {
            pos += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            pos += 1;
            let h = digits(&mut pos, 2).ok_or_else(bad)? as i32;
            let m = if sep(&mut pos, b':') {
                digits(&mut pos, 2).ok_or_else(bad)? as i32
            } else {
                digits(&mut pos, 2).map_or(0, |m| m as i32)
            };
            if h > 18 || m > 59 {
                return Err(bad());
            }
            let secs = h * 3600 + m * 60;
            if c == b'-' {
                -secs
            } else {
                secs
            }
        }
        Some(_) => return Err(bad()),
    };
    if pos != b.len() {
        return Err(bad());
    }
    let month = time::Month::try_from(u8::try_from(month).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year as i32, month, u8::try_from(day).map_err(|_| bad())?)
        .map_err(|_| bad())?;
    let tod = time::Time::from_hms_nano(
        u8::try_from(hour).map_err(|_| bad())?,
        u8::try_from(minute).map_err(|_| bad())?,
        u8::try_from(second).map_err(|_| bad())?,
        nanos,
    )
    .map_err(|_| bad())?;
    let offset = time::UtcOffset::from_whole_seconds(offset_secs).map_err(|_| bad())?;
    let parsed = time::PrimitiveDateTime::new(date, tod).assume_offset(offset);
    u64::try_from(parsed.unix_timestamp_nanos()).map_err(|_| format!("[{s}] is before 1970"))
}

/// Severity text and OTLP `SeverityNumber` of a level field. Names are
/// matched case-insensitively, after the OTel logs data model's mapping
/// of common level names (its appendix B: syslog, log4j, .NET; Python's
/// CRITICAL is FATAL as the OTel Python SDK maps it); a
/// number 1-24, or a string of its digits, is taken as a
/// `SeverityNumber`; anything else keeps its
/// text with number 0 (unspecified).
pub(crate) fn severity(v: &Value) -> (String, i32) {
    match v {
        Value::Number(n) => {
            let number = n.as_i64().filter(|i| (1..=24).contains(i)).unwrap_or(0) as i32;
            (n.to_string(), number)
        }
        Value::String(s) if s.trim().parse::<i64>().is_ok() => {
            let number = s.trim().parse::<i64>().ok().filter(|i| (1..=24).contains(i)).unwrap_or(0) as i32;
            (s.clone(), number)
        }
        Value::String(s) => {
            let number = match s.trim().to_ascii_lowercase().as_str() {
                "trace" | "trc" | "finest" | "verbose" => 1,
                "debug" | "dbg" | "fine" | "finer" | "config" => 5,
                "info" | "inf" | "information" | "informational" => 9,
                "notice" => 10,
                "warn" | "warning" | "wrn" => 13,
                "error" | "err" | "eror" | "severe" => 17,
                "fatal" | "critical" | "crit" | "panic" => 21,
                "alert" => 22,
                "emerg" | "emergency" => 23,
                _ => 0,
            };
            (s.clone(), number)
        }
        _ => (String::new(), 0),
    }
}

/// A hex ID of `bytes` bytes; a shorter one (a 64-bit Zipkin-style trace
/// ID) is left-padded with zeroes. `None` for anything not hex or too long.
/// All zeroes is valid and means "no trace context" (the decoder's rule).
pub(crate) fn parse_id(s: &str, bytes: usize) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() || s.len() > bytes * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>width$}", width = bytes * 2);
    (0..bytes).map(|i| u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(doc: Value) -> Mapped {
        map_document(doc.as_object().unwrap().clone(), "logs-app", 7).unwrap()
    }

    fn attr(m: &Mapped, key: &str) -> Option<any_value::Value> {
        m.record.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
    }

    fn s(v: &str) -> Option<any_value::Value> {
        Some(any_value::Value::StringValue(v.into()))
    }

    /// The ECS shape Logstash and Elastic's loggers write: every
    /// well-known field taken out of the nested form, the rest flattened.
    #[test]
    fn test_ecs_document() {
        let m = map(json!({
            "@timestamp": "2024-05-01T12:00:00.123456789Z",
            "message": "payment declined",
            "log": {"level": "WARN", "logger": "pay"},
            "trace": {"id": "5B8EFFF798038103D269B633813FC60C"},
            "span": {"id": "eee19b7ec3c1b174"},
            "service": {"name": "checkout", "version": "1.2"},
            "http": {"status": 402, "ok": false, "ratio": 0.5},
            "tags": ["a", 1, {"k": "v"}],
            "gone": null
        }));
        assert_eq!(m.service, "checkout");
        let r = &m.record;
        assert_eq!(r.time_unix_nano, 1_714_564_800_123_456_789);
        assert_eq!(r.observed_time_unix_nano, 7);
        assert_eq!(r.body.clone().unwrap().value, s("payment declined"));
        assert_eq!((r.severity_text.as_str(), r.severity_number), ("WARN", 13));
        assert_eq!(hex(&r.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(hex(&r.span_id), "eee19b7ec3c1b174");
        let keys: Vec<_> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.ok",
                "http.ratio",
                "http.status",
                "log.logger",
                "service.version",
                "tags",
                INDEX_ATTRIBUTE
            ]
        );
        assert_eq!(attr(&m, "http.status"), Some(any_value::Value::IntValue(402)));
        assert_eq!(attr(&m, "http.ok"), Some(any_value::Value::BoolValue(false)));
        assert_eq!(attr(&m, "http.ratio"), Some(any_value::Value::DoubleValue(0.5)));
        assert_eq!(attr(&m, INDEX_ATTRIBUTE), s("logs-app"));
        let Some(any_value::Value::ArrayValue(a)) = attr(&m, "tags") else { panic!("tags") };
        assert_eq!(a.values.len(), 3);
        assert!(matches!(a.values[2].value, Some(any_value::Value::KvlistValue(_))));
    }

    /// `a.b` and `a: {b}` in one document are one multi-valued field, as
    /// Elasticsearch indexes them: nothing is dropped.
    #[test]
    fn test_colliding_keys_keep_every_value() {
        let m = map(
            json!({"message": "x", "http.status": 200, "http": {"status": 503}, "k.v": ["a"], "k": {"v": "b"}}),
        );
        let Some(any_value::Value::ArrayValue(a)) = attr(&m, "http.status") else { panic!("http.status") };
        let got: Vec<_> = a.values.iter().map(|v| v.value.clone()).collect();
        // In key order, as the JSON parser keeps the fields: `http` sorts before `http.status`.
        assert_eq!(got, [Some(any_value::Value::IntValue(503)), Some(any_value::Value::IntValue(200))]);
        let Some(any_value::Value::ArrayValue(a)) = attr(&m, "k.v") else { panic!("k.v") };
        let got: Vec<_> = a.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(got, [s("b"), s("a")]);
        assert_eq!(m.record.attributes.iter().filter(|kv| kv.key == "http.status").count(), 1);
    }

    /// Fluent Bit's Docker shape (`log`, `time`) and the common JSON
    /// logger names; the first field of each list wins.
    #[test]
    fn test_field_precedence_and_aliases() {
        let m = map(json!({
            "time": "2024-05-01T12:00:00Z", "timestamp": 1714564801000u64,
            "log": "from log", "msg": "from msg",
            "severity": "error", "traceId": "ab", "spanId": "cd",
            "kubernetes": {"labels": {"app": "web"}, "pod_name": "web-1"}
        }));
        assert_eq!(m.record.time_unix_nano, 1_714_564_801_000_000_000, "timestamp before time");
        assert_eq!(m.record.body.clone().unwrap().value, s("from log"));
        assert_eq!(m.record.severity_number, 17);
        assert_eq!(hex(&m.record.trace_id), format!("{:0>32}", "ab"));
        assert_eq!(hex(&m.record.span_id), format!("{:0>16}", "cd"));
        assert_eq!(m.service, "web");
        // The Kubernetes label stays with its siblings.
        assert_eq!(attr(&m, "kubernetes.labels.app"), s("web"));
        assert_eq!(attr(&m, "time"), s("2024-05-01T12:00:00Z"));
        assert_eq!(attr(&m, "msg"), s("from msg"));
    }

    /// A malformed ID keeps the record, without trace context, and the
    /// value under its own name; a malformed time is the item's error.
    #[test]
    fn test_bad_values() {
        let m = map(json!({"message": "x", "trace_id": "not-hex", "span.id": "123456789abcdef01"}));
        assert!(m.record.trace_id.is_empty() && m.record.span_id.is_empty());
        assert_eq!(attr(&m, "trace_id"), s("not-hex"));
        assert_eq!(attr(&m, "span.id"), s("123456789abcdef01"));
        assert_eq!(m.record.time_unix_nano, 0, "no time: the observed time stands in");
        for t in [json!("yesterday"), json!(true), json!(-5), json!("2024-13-01T00:00:00Z"), json!([1])] {
            let doc = json!({"@timestamp": t}).as_object().unwrap().clone();
            let err = map_document(doc, "i", 0).unwrap_err();
            assert!(err.contains("failed to parse field [@timestamp] of type [date]"), "{err}");
        }
    }

    #[test]
    fn test_times() {
        let ns = |v: Value| parse_time(&v).unwrap();
        assert_eq!(ns(json!(1714564800123u64)), 1_714_564_800_123_000_000);
        assert_eq!(ns(json!("1714564800123")), 1_714_564_800_123_000_000);
        assert_eq!(ns(json!("1714564800123.5")), 1_714_564_800_123_500_000);
        assert_eq!(ns(json!(1714564800123.25)), 1_714_564_800_123_250_000);
        assert_eq!(ns(json!("2024-05-01T12:00:00Z")), 1_714_564_800_000_000_000);
        assert_eq!(ns(json!("2024-05-01T14:00:00.5+02:00")), 1_714_564_800_500_000_000);
        assert_eq!(ns(json!("2024-05-01T12:00:00.1")), 1_714_564_800_100_000_000);
        assert_eq!(ns(json!("2024-05-01")), 1_714_521_600_000_000_000);
        // strict_date_optional_time's shorter forms and offsets.
        assert_eq!(ns(json!("2024-05-01T12:00")), 1_714_564_800_000_000_000);
        assert_eq!(ns(json!("2024-05-01T12")), 1_714_564_800_000_000_000);
        assert_eq!(ns(json!("2024-05-01T14:00:00+0200")), 1_714_564_800_000_000_000);
        assert_eq!(ns(json!("2024-05-01T14:00+02")), 1_714_564_800_000_000_000);
        assert_eq!(ns(json!("2024-05-01T10:30:00.25-01:30")), 1_714_564_800_250_000_000);
        assert_eq!(ns(json!("2024-05-01T12:00:00,5Z")), 1_714_564_800_500_000_000);
        assert_eq!(ns(json!("2024-05-01T12:00:00.1234567891234Z")), 1_714_564_800_123_456_789);
        assert_eq!(ns(json!("2024-05")), 1_714_521_600_000_000_000);
        assert_eq!(ns(json!("2024")), 1_704_067_200_000_000_000);
        for bad in [
            "2024-05-01 12:00:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T25:00:00Z",
            "2024-02-30",
            "2024-05-01T12:00:00+2500",
            "2024-05-01T12:00:00Zjunk",
            "2024-5-1",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_time(&json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(ns(json!(0)), 0);
        assert!(parse_time(&json!(u64::MAX)).is_err());
        assert!(parse_time(&json!("99999999999999999999")).is_err());
        assert!(parse_time(&json!(1e300)).is_err());
    }

    #[test]
    fn test_severities() {
        let n = |v: Value| severity(&v).1;
        for (name, want) in [
            ("TRACE", 1),
            ("debug", 5),
            ("Information", 9),
            ("notice", 10),
            ("warning", 13),
            ("ERR", 17),
            ("critical", 21),
            ("fatal", 21),
            ("emerg", 23),
            ("chatty", 0),
        ] {
            assert_eq!(n(json!(name)), want, "{name}");
        }
        assert_eq!(severity(&json!(17)), ("17".to_string(), 17));
        assert_eq!(severity(&json!(30)), ("30".to_string(), 0));
        assert_eq!(severity(&json!("17")), ("17".to_string(), 17));
        assert_eq!(severity(&json!(" 5 ")), (" 5 ".to_string(), 5));
        assert_eq!(severity(&json!("99")), ("99".to_string(), 0));
    }

    /// Any JSON value, nested a few levels, with keys that hit the
    /// well-known fields and their dotted forms.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("@timestamp".to_string()),
            Just("time".to_string()),
            Just("message".to_string()),
            Just("log".to_string()),
            Just("level".to_string()),
            Just("trace".to_string()),
            Just("id".to_string()),
            Just("span_id".to_string()),
            Just("service".to_string()),
            Just("name".to_string()),
            "[a-z.]{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            "[0-9a-fA-F.:TZ+-]{0,34}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever the document, mapping answers a record or a reason
        /// (never panics), and a record keeps the index attribute and
        /// only IDs of the right length.
        #[test]
        fn prop_any_document_maps_or_fails(v in json_value()) {
            let Value::Object(doc) = v else { return Ok(()) };
            if let Ok(m) = map_document(doc, "idx", 1) {
                proptest::prop_assert!(m.record.trace_id.is_empty() || m.record.trace_id.len() == 16);
                proptest::prop_assert!(m.record.span_id.is_empty() || m.record.span_id.len() == 8);
                proptest::prop_assert_eq!(&m.record.attributes.last().unwrap().key, INDEX_ATTRIBUTE);
            }
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
