//! The data model every crate shares: IDs, attribute values, spans and log
//! records as Skein keeps them. Their JSON form in the native API lives in
//! the query crate (`skein_query::api::native::json`).
//!
//! The model follows OTLP (opentelemetry-proto `trace/v1/trace.proto`,
//! `logs/v1/logs.proto`, `common/v1/common.proto`) field for field, minus
//! what Skein does not keep (dropped-count fields, scope attributes).
//! Conventions throughout: every time is Unix epoch nanoseconds in a `u64`
//! (0 means "not set", the proto3 default); every size is in bytes. Records
//! reach storage already validated by the collector (`skein_otlp::decode`),
//! so the invariants stated on the fields hold for ingested data, while the
//! types themselves do not enforce them.

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
    /// The all-zero ID. Invalid as a span's trace ID (W3C Trace Context: "All
    /// bytes as zero ... is considered an invalid value"; OTLP `trace.proto`
    /// says the same), so storage uses it on log records to mean "no trace
    /// context" instead of wrapping the field in an `Option`.
    pub const ZERO: TraceId = TraceId([0; 16]);

    /// Whether this is [`TraceId::ZERO`]: the invalid ID per W3C Trace Context
    /// and OTLP. The collector rejects spans carrying it; on a log it means the
    /// record has no trace context.
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

    /// The ID from raw OTLP bytes; `None` unless `b` is exactly 16 bytes long.
    /// An all-zero slice is accepted: checking validity is the caller's call.
    pub fn from_slice(b: &[u8]) -> Option<TraceId> {
        <[u8; 16]>::try_from(b).ok().map(TraceId)
    }

    /// 32 lowercase hex digits, the W3C `traceparent` form and the one every
    /// query API prints. Also what `Debug` and `Display` show.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The high and low halves, for indexes that store two u64 fast fields.
    pub fn halves(&self) -> (u64, u64) {
        let hi = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        let lo = u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"));
        (hi, lo)
    }

    /// Inverse of [`TraceId::halves`]: `hi` becomes bytes 0..8 and `lo` bytes
    /// 8..16, both big-endian, so index order matches byte order.
    pub fn from_halves(hi: u64, lo: u64) -> TraceId {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_be_bytes());
        out[8..].copy_from_slice(&lo.to_be_bytes());
        TraceId(out)
    }
}

impl SpanId {
    /// Whether all 8 bytes are zero, which OTLP `trace.proto` ("An ID with all
    /// zeroes OR of length other than 8 bytes is considered invalid") and W3C
    /// Trace Context (`parent-id`) treat as invalid. The collector rejects spans
    /// with such a `span_id` and reads a zero parent or log span ID as absent.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// The ID from raw OTLP bytes; `None` unless `b` is exactly 8 bytes long.
    /// Zero is accepted here; see [`SpanId::is_zero`].
    pub fn from_slice(b: &[u8]) -> Option<SpanId> {
        <[u8; 8]>::try_from(b).ok().map(SpanId)
    }

    /// 16 lowercase hex digits, the W3C `traceparent` `parent-id` form; also
    /// what `Debug` shows.
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
    /// OTLP `AnyValue` with no value set. The collector also stores this for
    /// values nested deeper than 16 levels and for profiles-only
    /// `string_value_strindex`, which means nothing without its dictionary.
    Empty,
    /// `string_value`: UTF-8 text (protobuf guarantees valid UTF-8).
    Str(String),
    /// `int_value`: a signed 64-bit integer (OTLP/JSON sends it as a string).
    Int(i64),
    /// `double_value`: an IEEE 754 double; NaN and infinities are kept as sent.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// `bytes_value`: raw bytes, not text (OTLP/JSON carries them base64).
    Bytes(Vec<u8>),
    /// `array_value`: elements in order; OTLP allows them to mix types, and
    /// they may nest.
    Array(Vec<AttrValue>),
    /// `kvlist_value`: a nested map, kept like [`Attributes`] (received order,
    /// duplicate keys as sent).
    KvList(Attributes),
}

impl AttrValue {
    /// The value as search indexes see it: scalars as text, composites as
    /// `None` (not searchable by equality).
    pub fn as_search_text(&self) -> Option<String> {
        self.scalar_text()
    }

    /// Whether search text `v` finds this value: a scalar whose
    /// [`Self::as_search_text`] is `v`, or an array with such a scalar
    /// element (at its top level). Arrays match by element as TraceQL's
    /// `=` does in Tempo ("Arrays" in Tempo's TraceQL construct
    /// documentation); the segment index keeps a `key=element` term for
    /// each, so indexed search and this agree.
    pub fn matches_search_text(&self, v: &str) -> bool {
        match self {
            AttrValue::Array(a) => {
                a.iter().any(|e| !matches!(e, AttrValue::Array(_)) && e.matches_search_text(v))
            }
            _ => self.scalar_text().as_deref() == Some(v),
        }
    }

    fn scalar_text(&self) -> Option<String> {
        match self {
            AttrValue::Str(s) => Some(s.clone()),
            AttrValue::Int(i) => Some(i.to_string()),
            AttrValue::Double(d) => Some(d.to_string()),
            AttrValue::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Heap bytes the value owns (string lengths: strings moved from a request are allocated at their length; vector capacities), for the
    /// head's memory accounting; the value's own inline bytes are its
    /// container's.
    pub fn heap_size(&self) -> usize {
        match self {
            AttrValue::Str(s) => s.len(),
            AttrValue::Bytes(b) => b.len(),
            AttrValue::Array(a) => {
                a.capacity() * std::mem::size_of::<AttrValue>()
                    + a.iter().map(AttrValue::heap_size).sum::<usize>()
            }
            AttrValue::KvList(kv) => attrs_heap_size(kv),
            _ => 0,
        }
    }
}

/// Attributes in their received order. A vector, not a map: most spans have
/// a handful, and order is preserved for display.
pub type Attributes = Vec<(String, AttrValue)>;

/// Heap bytes an attribute list owns, for the head's memory limit: the
/// vector's allocated slots, and each key's and value's allocations
/// (capacities, so slack counts). What a counting allocator sees, up to the
/// allocator's own rounding (`storage/tests/head_memory.rs` checks it).
pub fn attrs_heap_size(a: &Attributes) -> usize {
    a.capacity() * std::mem::size_of::<(String, AttrValue)>()
        + a.iter().map(|(k, v)| k.len() + v.heap_size()).sum::<usize>()
}

/// The resource a span or log came from. Shared by every record of one
/// `ResourceSpans`/`ResourceLogs`, so it is reference-counted in the head.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// The resource's `service.name` string attribute, or `unknown_service`
    /// when it is missing, empty or not a string (the fallback the resource
    /// semantic conventions prescribe, without the optional `:<executable>`
    /// suffix). Pulled out because nearly every query filters or groups by it;
    /// never empty for collector-ingested data.
    pub service_name: String,
    /// Every resource attribute as received, `service.name` included.
    pub attributes: Attributes,
}

/// The instrumentation scope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// The scope's name, conventionally the instrumentation library or module
    /// (e.g. `io.opentelemetry.contrib.mongodb`); empty when the request sent no
    /// scope.
    pub name: String,
    /// The scope's version string, free-form (often semver); empty when unset.
    pub version: String,
}

/// Span kind numbers, exactly OTLP `Span.SpanKind` in opentelemetry-proto
/// `opentelemetry/proto/trace/v1/trace.proto`, so they convert to and from the
/// wire without a table. Stored in [`Span::kind`].
pub mod kind {
    /// `SPAN_KIND_UNSPECIFIED`: the sender set no kind. The collector also maps
    /// numbers outside 0..=5 here. `trace.proto` lets receivers treat it as
    /// [`INTERNAL`].
    pub const UNSPECIFIED: u8 = 0;
    /// `SPAN_KIND_INTERNAL`: an operation inside an application, with no remote
    /// parent or child; what SDKs default to.
    pub const INTERNAL: u8 = 1;
    /// `SPAN_KIND_SERVER`: handling a synchronous request from a remote client
    /// (e.g. an incoming HTTP or gRPC call).
    pub const SERVER: u8 = 2;
    /// `SPAN_KIND_CLIENT`: a synchronous request to a remote service, usually the
    /// parent of that service's [`SERVER`] span.
    pub const CLIENT: u8 = 3;
    /// `SPAN_KIND_PRODUCER`: initiating asynchronous work (e.g. enqueuing a
    /// message); the span often ends before its [`CONSUMER`] starts.
    pub const PRODUCER: u8 = 4;
    /// `SPAN_KIND_CONSUMER`: processing work a [`PRODUCER`] initiated.
    pub const CONSUMER: u8 = 5;

    /// The upper-case proto name without its `SPAN_KIND_` prefix, as the
    /// native API prints it (Jaeger lower-cases it). Any number outside 1..=5
    /// prints as `UNSPECIFIED`, so this never fails.
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

    /// Inverse of [`name`] for query input: accepts the short or the full
    /// `SPAN_KIND_`-prefixed proto name in any case (`server`,
    /// `SPAN_KIND_SERVER`); `None` for anything else.
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

/// Span status codes, exactly OTLP `Status.StatusCode` in opentelemetry-proto
/// `opentelemetry/proto/trace/v1/trace.proto`. Stored in
/// [`Span::status_code`].
pub mod status {
    /// `STATUS_CODE_UNSET`: the default; the instrumentation made no call, which
    /// is not an error. The collector also maps numbers outside 0..=2 here.
    pub const UNSET: u8 = 0;
    /// `STATUS_CODE_OK`: explicitly marked successful, which the trace API
    /// reserves for the application developer or operator.
    pub const OK: u8 = 1;
    /// `STATUS_CODE_ERROR`: the operation failed; the one code
    /// [`Span::is_error`](super::Span::is_error) counts.
    pub const ERROR: u8 = 2;

    /// The upper-case proto name without its `STATUS_CODE_` prefix (`UNSET`,
    /// `OK`, `ERROR`), as the native API and Jaeger's `otel.status_code` tag
    /// print it; numbers outside 0..=2 print as `UNSET`.
    pub fn name(c: u8) -> &'static str {
        match c {
            OK => "OK",
            ERROR => "ERROR",
            _ => "UNSET",
        }
    }
}

/// A span event (OTLP `Span.Event`): a timestamped annotation inside a span,
/// such as an exception record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened, in Unix epoch nanoseconds; 0 if the sender left it
    /// unset. Not checked to fall within the span.
    pub time_unix_nano: u64,
    /// The event name, e.g. `exception` for the semantic conventions' exception
    /// events; may be empty.
    pub name: String,
    /// The event's attributes, in received order.
    pub attributes: Attributes,
}

/// A link from a span to another span context (OTLP `Span.Link`), e.g. the
/// messages a batch consumer processed. The target may be in another trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The linked span's trace. Only the length is checked on ingest (links
    /// with a wrong-length ID are dropped); it may be all zeroes.
    pub trace_id: TraceId,
    /// The linked span; length-checked like `trace_id`, not zero-checked.
    pub span_id: SpanId,
    /// The linked context's W3C `tracestate` header value, verbatim; empty when
    /// none.
    pub trace_state: String,
    /// The link's attributes, in received order.
    pub attributes: Attributes,
}

/// A span as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The trace this span belongs to; never [`TraceId::ZERO`] (the collector
    /// rejects such spans, per OTLP `trace.proto`).
    pub trace_id: TraceId,
    /// This span's ID; never all zeroes (rejected on ingest, per OTLP
    /// `trace.proto`). Unique within its trace only by the sender's promise.
    pub span_id: SpanId,
    /// The parent's span ID; `None` for a root span, which OTLP sends as an
    /// empty (or all-zero) `parent_span_id`. Never `Some` of zero.
    pub parent_span_id: Option<SpanId>,
    /// The W3C `tracestate` header value, verbatim; empty when none.
    pub trace_state: String,
    /// OTLP `Span.flags` (`SpanFlags`): bits 0-7 are the W3C trace flags (bit 0
    /// = sampled); bit 8 says whether bit 9 is known, bit 9 that the parent was
    /// remote. 0 when the sender set none.
    pub flags: u32,
    /// The operation name, e.g. `GET /users/{id}`; may be empty.
    pub name: String,
    /// One of the [`kind`] constants (0..=5, OTLP `Span.SpanKind` numbering).
    pub kind: u8,
    /// Start time in Unix epoch nanoseconds.
    pub start_time_unix_nano: u64,
    /// End time in Unix epoch nanoseconds. Kept as sent even when before the
    /// start; [`Span::duration_ns`] copes.
    pub end_time_unix_nano: u64,
    /// One of the [`status`] constants (0..=2, OTLP `Status.StatusCode`
    /// numbering).
    pub status_code: u8,
    /// OTLP `Status.message`: a developer-facing description, usually set only
    /// with [`status::ERROR`]; empty when none.
    pub status_message: String,
    /// The span's attributes, in received order.
    pub attributes: Attributes,
    /// Events in received order (not sorted by time).
    pub events: Vec<Event>,
    /// Links in received order; those with a wrong-length ID were dropped on
    /// ingest.
    pub links: Vec<Link>,
    /// The emitting resource, shared with every span of the same OTLP
    /// `ResourceSpans`.
    pub resource: Arc<Resource>,
    /// The instrumentation scope, shared with every span of the same
    /// `ScopeSpans`.
    pub scope: Arc<Scope>,
}

impl Span {
    /// The resource's service name; `unknown_service` rather than empty when
    /// the sender set no `service.name` (see [`Resource::service_name`]).
    pub fn service_name(&self) -> &str {
        &self.resource.service_name
    }

    /// Duration in nanoseconds; a span whose end is before its start (clock
    /// skew, a buggy SDK) has duration zero rather than wrapping.
    pub fn duration_ns(&self) -> u64 {
        self.end_time_unix_nano.saturating_sub(self.start_time_unix_nano)
    }

    /// True only for [`status::ERROR`]. An `UNSET` status is not an error even
    /// when attributes suggest one (e.g. an HTTP 500): the status is what the
    /// instrumentation decided.
    pub fn is_error(&self) -> bool {
        self.status_code == status::ERROR
    }

    /// Memory the span takes, for the head's size limit: its inline size
    /// and every allocation it owns (capacities, so slack counts). The
    /// resource and scope are shared by the spans of one request and
    /// counted by the head ([`crate::head::shared_bytes`]), not here.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Span>()
            + self.name.len()
            + self.trace_state.len()
            + self.status_message.len()
            + attrs_heap_size(&self.attributes)
            + self.events.capacity() * std::mem::size_of::<Event>()
            + self.events.iter().map(|e| e.name.len() + attrs_heap_size(&e.attributes)).sum::<usize>()
            + self.links.capacity() * std::mem::size_of::<Link>()
            + self.links.iter().map(|l| l.trace_state.len() + attrs_heap_size(&l.attributes)).sum::<usize>()
    }
}

/// Removes in place, keeping the order of the rest, every span whose
/// (trace ID, span ID) an earlier span of `spans` already has; returns how
/// many were removed. This is the one rule for copies of a span, used
/// wherever spans from several places meet (the head, a segment being
/// written, a compaction, a trace read from several segments).
///
/// Why: an OTLP exporter resends a whole batch after a timeout, a 429 or a
/// 503 (OTLP/HTTP "Retryable Response Codes"; it cannot know whether the
/// first attempt was stored), so one span may arrive twice or more. A span
/// is its trace ID and span ID (OTLP `trace.proto`: `span_id` is "a unique
/// identifier for a span within a trace"), so the first copy received is
/// kept. Copies of a retried batch are identical; a sender that reuses a
/// span ID for another span of the same trace loses the later one.
pub fn dedup_spans(spans: &mut Vec<Span>) -> usize {
    if !has_duplicate_spans(spans) {
        return 0;
    }
    let before = spans.len();
    let mut seen = std::collections::HashSet::with_capacity(before);
    spans.retain(|s| seen.insert((s.trace_id, s.span_id)));
    before - spans.len()
}

/// Whether two spans of `spans` share a (trace ID, span ID): see
/// [`dedup_spans`]. Sorts a copy of the IDs: no hashing, no allocation for
/// fewer than two spans.
pub fn has_duplicate_spans(spans: &[Span]) -> bool {
    if spans.len() < 2 {
        return false;
    }
    let mut ids: Vec<(TraceId, SpanId)> = spans.iter().map(|s| (s.trace_id, s.span_id)).collect();
    ids.sort_unstable();
    ids.windows(2).any(|w| w[0] == w[1])
}

/// A log record as stored. `trace_id` is zero when the record carries no
/// trace context.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When the event happened per the source, in Unix epoch nanoseconds; 0
    /// when the source gave none (see [`LogRecord::effective_time`]).
    pub time_unix_nano: u64,
    /// When the collection pipeline (SDK or agent) saw the record, in Unix epoch
    /// nanoseconds; 0 if unset.
    pub observed_time_unix_nano: u64,
    /// OTel logs data model `SeverityNumber`: 0 unspecified, then four steps per
    /// level: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24
    /// FATAL; higher is more severe, so filters compare numerically. Stored as
    /// sent, not range-checked: any `i32` may appear.
    pub severity_number: i32,
    /// The source's own severity label (e.g. `Information`, `warn`), verbatim;
    /// empty when none. Not normalized against `severity_number`.
    pub severity_text: String,
    /// The log body: usually [`AttrValue::Str`] but any `AnyValue` is allowed
    /// (structured logs send a `KvList`); [`AttrValue::Empty`] when absent.
    pub body: AttrValue,
    /// The record's attributes, in received order.
    pub attributes: Attributes,
    /// The trace the record was emitted in, or [`TraceId::ZERO`] when it has no
    /// trace context (an empty or all-zero OTLP `trace_id`).
    pub trace_id: TraceId,
    /// The span the record was emitted in; `None` when absent, all zeroes, or
    /// when `trace_id` is zero (a span ID means nothing without its trace).
    pub span_id: Option<SpanId>,
    /// OTLP `LogRecord.flags`: bits 0-7 are the W3C trace flags of the trace
    /// context (bit 0 = sampled); the rest are reserved. 0 when unset.
    pub flags: u32,
    /// OTLP `LogRecord.event_name`: set when the record is an event (names the
    /// event's type); empty for ordinary logs.
    pub event_name: String,
    /// The emitting resource, shared with every record of the same OTLP
    /// `ResourceLogs`.
    pub resource: Arc<Resource>,
    /// The instrumentation scope, shared with every record of the same
    /// `ScopeLogs`.
    pub scope: Arc<Scope>,
}

impl LogRecord {
    /// The resource's service name; `unknown_service` rather than empty when
    /// the sender set no `service.name` (see [`Resource::service_name`]).
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

    /// Memory the record takes, for the head's size limit: its inline size
    /// and every allocation it owns (capacities). The shared resource and
    /// scope are the head's to count, as for [`Span::heap_size`].
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

    proptest::proptest! {
        /// `dedup_spans` keeps the first span of each (trace ID, span ID),
        /// in order, and nothing else: the same as a naive scan.
        #[test]
        fn dedup_keeps_the_first_of_each_id_in_order(keys in proptest::collection::vec((0..3u8, 0..6u8), 0..40)) {
            let mut spans: Vec<Span> = crate::testsuite::spans_of_trace(1, 0, keys.len() as u64);
            for (i, (s, (t, id))) in spans.iter_mut().zip(&keys).enumerate() {
                s.trace_id = TraceId([*t + 1; 16]);
                s.span_id = SpanId([*id; 8]);
                s.name = i.to_string();
            }
            let mut want: Vec<Span> = Vec::new();
            for s in &spans {
                if !want.iter().any(|w| (w.trace_id, w.span_id) == (s.trace_id, s.span_id)) {
                    want.push(s.clone());
                }
            }
            let had = has_duplicate_spans(&spans);
            let mut got = spans.clone();
            let removed = dedup_spans(&mut got);
            proptest::prop_assert_eq!(removed, spans.len() - want.len());
            proptest::prop_assert_eq!(had, removed > 0);
            proptest::prop_assert_eq!(got, want);
        }
    }

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
