//! The data model every crate shares: IDs, attribute values, spans and log
//! records as Skein keeps them. Their JSON form in the native API lives in
//! the query crate (`skein_query::api::native::json`).

use std::fmt;
use std::sync::Arc;

/// A 16-byte trace ID. All zeroes is invalid for spans; for logs it means
/// "no trace context".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    pub const ZERO: TraceId = TraceId([0; 16]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses 32 hex digits (upper or lower case). Shorter IDs are
    /// left-padded with zeroes, as Jaeger does for 64-bit trace IDs.
    pub fn parse_hex(s: &str) -> Option<TraceId> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let padded = format!("{s:0>32}");
        let mut out = [0u8; 16];
        hex::decode_to_slice(padded, &mut out).ok()?;
        Some(TraceId(out))
    }

    pub fn from_slice(b: &[u8]) -> Option<TraceId> {
        <[u8; 16]>::try_from(b).ok().map(TraceId)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The high and low halves, for indexes that store two u64 fast fields.
    pub fn halves(&self) -> (u64, u64) {
        let hi = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        let lo = u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"));
        (hi, lo)
    }

    pub fn from_halves(hi: u64, lo: u64) -> TraceId {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_be_bytes());
        out[8..].copy_from_slice(&lo.to_be_bytes());
        TraceId(out)
    }
}

impl SpanId {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    pub fn from_slice(b: &[u8]) -> Option<SpanId> {
        <[u8; 8]>::try_from(b).ok().map(SpanId)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An attribute value with its OTLP type kept.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Empty,
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Array(Vec<AttrValue>),
    KvList(Attributes),
}

impl AttrValue {
    /// The value as search indexes see it: scalars as text, composites as
    /// `None` (not searchable by equality).
    pub fn as_search_text(&self) -> Option<String> {
        match self {
            AttrValue::Str(s) => Some(s.clone()),
            AttrValue::Int(i) => Some(i.to_string()),
            AttrValue::Double(d) => Some(d.to_string()),
            AttrValue::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Rough heap size, for the head's memory accounting.
    pub fn heap_size(&self) -> usize {
        match self {
            AttrValue::Str(s) => s.len(),
            AttrValue::Bytes(b) => b.len(),
            AttrValue::Array(a) => a.iter().map(|v| v.heap_size() + 32).sum(),
            AttrValue::KvList(kv) => attrs_heap_size(kv),
            _ => 0,
        }
    }
}

/// Attributes in their received order. A vector, not a map: most spans have
/// a handful, and order is preserved for display.
pub type Attributes = Vec<(String, AttrValue)>;

pub fn attrs_heap_size(a: &Attributes) -> usize {
    a.iter().map(|(k, v)| k.len() + v.heap_size() + 48).sum()
}

/// The resource a span or log came from. Shared by every record of one
/// `ResourceSpans`/`ResourceLogs`, so it is reference-counted in the head.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    pub service_name: String,
    pub attributes: Attributes,
}

/// The instrumentation scope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    pub name: String,
    pub version: String,
}

pub mod kind {
    pub const UNSPECIFIED: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
    pub const PRODUCER: u8 = 4;
    pub const CONSUMER: u8 = 5;

    pub fn name(k: u8) -> &'static str {
        match k {
            INTERNAL => "INTERNAL",
            SERVER => "SERVER",
            CLIENT => "CLIENT",
            PRODUCER => "PRODUCER",
            CONSUMER => "CONSUMER",
            _ => "UNSPECIFIED",
        }
    }

    pub fn parse(s: &str) -> Option<u8> {
        Some(match s.to_ascii_uppercase().trim_start_matches("SPAN_KIND_") {
            "UNSPECIFIED" => UNSPECIFIED,
            "INTERNAL" => INTERNAL,
            "SERVER" => SERVER,
            "CLIENT" => CLIENT,
            "PRODUCER" => PRODUCER,
            "CONSUMER" => CONSUMER,
            _ => return None,
        })
    }
}

pub mod status {
    pub const UNSET: u8 = 0;
    pub const OK: u8 = 1;
    pub const ERROR: u8 = 2;

    pub fn name(c: u8) -> &'static str {
        match c {
            OK => "OK",
            ERROR => "ERROR",
            _ => "UNSET",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attributes: Attributes,
}

/// A span as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    pub kind: u8,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: u8,
    pub status_message: String,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
}

impl Span {
    pub fn service_name(&self) -> &str {
        &self.resource.service_name
    }

    /// Duration in nanoseconds; a span whose end is before its start (clock
    /// skew, a buggy SDK) has duration zero rather than wrapping.
    pub fn duration_ns(&self) -> u64 {
        self.end_time_unix_nano.saturating_sub(self.start_time_unix_nano)
    }

    pub fn is_error(&self) -> bool {
        self.status_code == status::ERROR
    }

    /// Rough memory footprint, for the head's size limit. The resource and
    /// scope are shared and counted once per request by the caller.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Span>()
            + self.name.len()
            + self.trace_state.len()
            + self.status_message.len()
            + attrs_heap_size(&self.attributes)
            + self.events.iter().map(|e| 48 + e.name.len() + attrs_heap_size(&e.attributes)).sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| 64 + l.trace_state.len() + attrs_heap_size(&l.attributes))
                .sum::<usize>()
    }
}

/// A log record as stored. `trace_id` is zero when the record carries no
/// trace context.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: AttrValue,
    pub attributes: Attributes,
    pub trace_id: TraceId,
    pub span_id: Option<SpanId>,
    pub flags: u32,
    pub event_name: String,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
}

impl LogRecord {
    pub fn service_name(&self) -> &str {
        &self.resource.service_name
    }

    /// The time a log is sorted and filtered by: its own timestamp, or when
    /// the SDK observed it if the source gave none (the OTLP data model says
    /// to use `observed_time_unix_nano` then).
    pub fn effective_time(&self) -> u64 {
        if self.time_unix_nano != 0 {
            self.time_unix_nano
        } else {
            self.observed_time_unix_nano
        }
    }

    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<LogRecord>()
            + self.severity_text.len()
            + self.body.heap_size()
            + self.event_name.len()
            + attrs_heap_size(&self.attributes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_hex_round_trip_and_padding() {
        let t = TraceId::parse_hex("0102030405060708090a0b0c0d0e0f10").unwrap();
        assert_eq!(t.to_hex(), "0102030405060708090a0b0c0d0e0f10");
        let short = TraceId::parse_hex("ABCDEF").unwrap();
        assert_eq!(short.to_hex(), "00000000000000000000000000abcdef");
        assert!(TraceId::parse_hex("xyz").is_none());
        assert!(TraceId::parse_hex(&"1".repeat(33)).is_none());
        let (hi, lo) = t.halves();
        assert_eq!(TraceId::from_halves(hi, lo), t);
    }
}
