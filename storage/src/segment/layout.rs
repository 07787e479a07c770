//! What a segment directory holds and how each file is shaped: the file
//! names, the Parquet columns of spans and logs, the tantivy index schemas
//! and the two small binary files (trace-ID index, resources).
//!
//! Every column and index field is named here once; the writer, the reader
//! and the index refer to it through [`SpanCol`], [`LogCol`], [`SpanFields`]
//! and [`LogFields`], so a column cannot be renamed in one place and not in
//! another.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tantivy::schema::{
    IndexRecordOption, NumericOptions, Schema as TSchema, TextFieldIndexing, TextOptions, FAST,
};

use super::SegmentConfig;
use crate::codec::{self, DecodeError};
use crate::model::{Attributes, TraceId};
use crate::{Error, Result};

/// The on-disk format this build writes and reads; [`super::Segment::open`]
/// refuses any other with [`crate::Error::Format`] (a segment of another
/// format can only be read by a build of that format). Format 4 (issue 11)
/// stores a span's parent as a row offset within its trace, log observed
/// times as a difference to the time, and attributes of frequent keys in a
/// dictionary-encoded column of their own.
pub const FORMAT_VERSION: u32 = 4;

/// Spans, sorted by trace ID then start time (zstd Parquet).
pub(crate) const SPANS_FILE: &str = "spans.parquet";
/// Log records, sorted by trace ID then time (zstd Parquet).
pub(crate) const LOGS_FILE: &str = "logs.parquet";
/// The trace-ID index: sorted trace IDs with their row ranges.
pub(crate) const TRACE_INDEX_FILE: &str = "traces.idx";
/// Tantivy index with one document per span.
pub(crate) const SPAN_INDEX_DIR: &str = "span_index";
/// Tantivy index with one document per log record.
pub(crate) const LOG_INDEX_DIR: &str = "log_index";
/// Edges and RED buckets per minute (JSON).
pub(crate) const ROLLUP_FILE: &str = "rollup.json";
/// The distinct resources of the segment's spans.
pub(crate) const RESOURCES_FILE: &str = "resources.bin";
/// The segment's [`super::SegmentMeta`] (JSON), written last: a directory
/// (or a stored segment) that has it is complete. It is also the object
/// store's commit marker, so the name is the one the store protocol uses.
pub const META_FILE: &str = crate::remote::COMMIT_FILE;
/// The name the log index's word analyzer ([`crate::filter::analyzer`]) is
/// registered under.
pub(crate) const TOKENIZER: &str = "skein";

/// The Arrow type of a Parquet column, and so which builder and array the
/// writer and reader use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// A 16-byte trace ID.
    Id16,
    /// An 8-byte span ID.
    Id8,
    Utf8,
    Binary,
    U8,
    U32,
    U64,
    I32,
}

impl ColumnKind {
    fn data_type(self) -> DataType {
        match self {
            ColumnKind::Id16 => DataType::FixedSizeBinary(16),
            ColumnKind::Id8 => DataType::FixedSizeBinary(8),
            ColumnKind::Utf8 => DataType::Utf8,
            ColumnKind::Binary => DataType::Binary,
            ColumnKind::U8 => DataType::UInt8,
            ColumnKind::U32 => DataType::UInt32,
            ColumnKind::U64 => DataType::UInt64,
            ColumnKind::I32 => DataType::Int32,
        }
    }
}

/// One Parquet column of a segment file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColumnDef {
    pub(crate) name: &'static str,
    pub(crate) kind: ColumnKind,
    pub(crate) nullable: bool,
    /// Whether Parquet may dictionary-encode it. Off for IDs and times
    /// (nearly unique) and for the high-cardinality blobs: their dictionary
    /// pages grow to the 1 MiB limit, and a lookup of a few rows had to
    /// decompress that whole page per column chunk (about half of
    /// trace-by-ID time in the 10 M-span profile); zstd on the plain pages
    /// keeps most of the repetition.
    pub(crate) dictionary: bool,
}

/// Declares a file's columns once: an enum naming each column for the
/// writer and reader, and the table (in file order) the schema and writer
/// properties are built from.
macro_rules! columns {
    ($(#[$doc:meta])* $Enum:ident, $TABLE:ident {
        $($Var:ident = $name:literal, $kind:ident, nullable: $null:literal, dictionary: $dict:literal;)*
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $Enum {
            $(#[doc = $name] $Var,)*
        }

        /// The columns in file order; index with the enum.
        pub(crate) const $TABLE: &[ColumnDef] = &[
            $(ColumnDef { name: $name, kind: ColumnKind::$kind, nullable: $null, dictionary: $dict },)*
        ];

        impl From<$Enum> for usize {
            fn from(c: $Enum) -> usize {
                c as usize
            }
        }
    };
}

columns! {
    /// A column of `spans.parquet`. Times are Unix nanoseconds, `duration`
    /// nanoseconds as `end - start` modulo 2^64 (the end time is
    /// `start_time + duration` modulo 2^64, so an end before the start is
    /// kept as sent); the binary columns hold [`crate::codec`] encodings.
    ///
    /// The parent: `parent_row` is the parent's row minus the span's own
    /// (the parent is another span of the same trace in this file, a few
    /// rows away, so the column costs a few bits per span where the 8 random
    /// bytes of its ID cost 5.5 after compression); `parent_span_id` holds
    /// the ID only for a parent that is not in this file (a root has
    /// neither).
    ///
    /// `attr_common` and `attributes` hold the span's attributes, split by
    /// [`SPAN_COMMON_KEYS`] ([`codec::split_attrs`]).
    SpanCol, SPAN_COLUMNS {
        TraceId = "trace_id", Id16, nullable: false, dictionary: false;
        SpanId = "span_id", Id8, nullable: false, dictionary: false;
        ParentSpanId = "parent_span_id", Id8, nullable: true, dictionary: false;
        ParentRow = "parent_row", I32, nullable: true, dictionary: true;
        TraceState = "trace_state", Utf8, nullable: false, dictionary: true;
        Flags = "flags", U32, nullable: false, dictionary: true;
        Name = "name", Utf8, nullable: false, dictionary: true;
        Kind = "kind", U8, nullable: false, dictionary: true;
        ServiceName = "service_name", Utf8, nullable: false, dictionary: true;
        StartTime = "start_time", U64, nullable: false, dictionary: false;
        Duration = "duration", U64, nullable: false, dictionary: false;
        StatusCode = "status_code", U8, nullable: false, dictionary: true;
        StatusMessage = "status_message", Utf8, nullable: false, dictionary: false;
        Attributes = "attributes", Binary, nullable: false, dictionary: false;
        AttrCommon = "attr_common", Binary, nullable: false, dictionary: true;
        Resource = "resource", Binary, nullable: false, dictionary: true;
        ScopeName = "scope_name", Utf8, nullable: false, dictionary: true;
        ScopeVersion = "scope_version", Utf8, nullable: false, dictionary: true;
        Events = "events", Binary, nullable: false, dictionary: false;
        Links = "links", Binary, nullable: false, dictionary: false;
    }
}

columns! {
    /// A column of `logs.parquet`. Times are Unix nanoseconds;
    /// `observed_delta` is the observed time minus `time` modulo 2^64, null
    /// when they are equal; `trace_id` is zero for a record without trace
    /// context; `span_row` is the record's span as its row in spans.parquet
    /// minus the trace's first (traces.idx) when the span is in this
    /// segment, `span_id` then null (as [`SpanCol::ParentRow`]); the binary
    /// columns hold [`crate::codec`] encodings (`body`
    /// one value); `attr_common` and `attributes` hold the attributes, split
    /// by [`LOG_COMMON_KEYS`].
    LogCol, LOG_COLUMNS {
        TraceId = "trace_id", Id16, nullable: false, dictionary: false;
        SpanId = "span_id", Id8, nullable: true, dictionary: false;
        SpanRow = "span_row", I32, nullable: true, dictionary: true;
        Time = "time", U64, nullable: false, dictionary: false;
        ObservedDelta = "observed_delta", U64, nullable: true, dictionary: false;
        SeverityNumber = "severity_number", I32, nullable: false, dictionary: true;
        SeverityText = "severity_text", Utf8, nullable: false, dictionary: true;
        Body = "body", Binary, nullable: false, dictionary: false;
        Attributes = "attributes", Binary, nullable: false, dictionary: false;
        AttrCommon = "attr_common", Binary, nullable: false, dictionary: true;
        Resource = "resource", Binary, nullable: false, dictionary: true;
        ServiceName = "service_name", Utf8, nullable: false, dictionary: true;
        ScopeName = "scope_name", Utf8, nullable: false, dictionary: true;
        ScopeVersion = "scope_version", Utf8, nullable: false, dictionary: true;
        Flags = "flags", U32, nullable: false, dictionary: true;
        EventName = "event_name", Utf8, nullable: false, dictionary: true;
    }
}

/// The attribute keys of spans stored in `attr_common` rather than in the
/// `attributes` blob ([`codec::split_attrs`]): the most frequent keys of
/// the benchmark workload (HTTP, RPC, database and messaging semantic
/// conventions) with few distinct values, so a span's common attributes
/// repeat exactly on many spans and the column's dictionary holds each
/// combination once (about 150 per segment there). Keys with many values
/// (addresses, URLs, statements) stay in the blob: they would multiply the
/// combinations, and the dictionary page is decoded by every lookup.
pub(crate) const SPAN_COMMON_KEYS: &[&str] = &[
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "url.scheme",
    "server.address",
    "server.port",
    "network.protocol.version",
    "user_agent.original",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system",
    "db.operation.name",
    "db.collection.name",
    "db.namespace",
    "messaging.system",
    "messaging.destination.name",
    "messaging.operation.type",
    "messaging.operation.name",
    "messaging.consumer.group.name",
    "messaging.destination.partition.id",
    "error.type",
];

/// [`SPAN_COMMON_KEYS`] of log records (about 800 combinations per segment
/// on the benchmark workload).
pub(crate) const LOG_COMMON_KEYS: &[&str] = &["code.function", "thread.name", "exception.type"];

/// The Arrow schema of a file with these columns.
pub(crate) fn schema(table: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        table.iter().map(|c| Field::new(c.name, c.kind.data_type(), c.nullable)).collect::<Vec<_>>(),
    ))
}

/// Columns written in another encoding than PLAIN (all without
/// dictionary), chosen by bytes after zstd on the benchmark workload:
/// `observed_delta` (small, varying differences) takes 2.7 bytes a record
/// delta-packed against 3.1 plain; durations and log times (random low
/// bytes, shared high bytes) take 6% and 2% less split by byte. Span start
/// times do not gain from either (nor from offsets within the trace).
const ENCODINGS: &[(&str, Encoding)] = &[
    ("observed_delta", Encoding::DELTA_BINARY_PACKED),
    ("duration", Encoding::BYTE_STREAM_SPLIT),
    ("time", Encoding::BYTE_STREAM_SPLIT),
];

/// Parquet writer settings for a file with these columns. Page statistics
/// and the page row limit let a lookup decode only the pages holding its
/// rows (through the page index).
pub(crate) fn writer_props(cfg: &SegmentConfig, table: &[ColumnDef]) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(cfg.zstd_level).map_err(|e| Error::Config(e.to_string()))?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .set_data_page_row_count_limit(cfg.page_rows.max(1))
        .set_statistics_enabled(EnabledStatistics::Page);
    for c in table.iter().filter(|c| !c.dictionary) {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c.name), false);
        if let Some((_, e)) = ENCODINGS.iter().find(|(n, _)| *n == c.name) {
            b = b.set_column_encoding(ColumnPath::from(c.name), *e);
        }
    }
    Ok(b.build())
}

// No fieldnorms anywhere: nothing is ranked by relevance (results are
// ordered by time), and fieldnorms cost a byte per document per field
// (5 bytes per span, 3 per log record).

/// An exact-match string field (like tantivy's `STRING`), without fieldnorms.
fn raw_text() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

/// A searchable integer (like tantivy's `INDEXED`), without fieldnorms.
fn indexed_u64() -> NumericOptions {
    NumericOptions::default().set_indexed()
}

/// Fast-field names read back by name (tantivy's fast-field and top-k APIs
/// take names, not [`tantivy::schema::Field`]s).
pub(crate) mod fast {
    /// The document's row in its Parquet file (span and log indexes).
    pub(crate) const ROW: &str = "row";
    /// A span's start time, Unix ns.
    pub(crate) const START: &str = "start";
    /// A span's duration, ns (0 when its end precedes its start).
    pub(crate) const DURATION: &str = "duration";
    /// A log record's effective time, Unix ns.
    pub(crate) const TIME: &str = "time";
}

/// The fields of the span index (one document per span).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanFields {
    /// The span's row in spans.parquet: rows are written in document
    /// order, so this column is monotonic and costs almost nothing, and the
    /// trace-ID index maps it to the trace.
    pub(crate) row: tantivy::schema::Field,
    /// The ordinal of the span's resource in resources.bin. Resource
    /// attributes (about two thirds of a span's attributes) and the service
    /// name are indexed once per segment through it rather than once per
    /// span: a condition on them is the set of resources meeting it.
    pub(crate) resource: tantivy::schema::Field,
    pub(crate) name: tantivy::schema::Field,
    /// `key=value` of each scalar span attribute.
    pub(crate) attr: tantivy::schema::Field,
    /// Fast field only (the status code, 2 bits a span), as below.
    pub(crate) status: tantivy::schema::Field,
    /// Fast fields only: nearly every span has its own start and duration,
    /// so indexing them would add a term per span; range queries on fast
    /// fields scan the (compact) column instead. Nanoseconds.
    pub(crate) duration: tantivy::schema::Field,
    /// Unix ns.
    pub(crate) start: tantivy::schema::Field,
}

/// The span index schema. Fields are added in a fixed order, so the
/// [`SpanFields`] of a fresh schema are valid for any index built with it.
pub(crate) fn span_index_schema() -> (TSchema, SpanFields) {
    let mut b = TSchema::builder();
    let f = SpanFields {
        row: b.add_u64_field(fast::ROW, FAST),
        resource: b.add_u64_field("resource", indexed_u64()),
        name: b.add_text_field("name", raw_text()),
        attr: b.add_text_field("attr", raw_text()),
        status: b.add_u64_field("status", FAST),
        duration: b.add_u64_field(fast::DURATION, FAST),
        start: b.add_u64_field(fast::START, FAST),
    };
    (b.build(), f)
}

/// The fields of the log index (one document per log record).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogFields {
    /// The distinct words of body and attribute values.
    pub(crate) text: tantivy::schema::Field,
    /// Fast field only (a dictionary and an ordinal per record: a few
    /// services make a few bits a record, where postings cost a byte or
    /// more); an equality is a range query on it.
    pub(crate) service: tantivy::schema::Field,
    /// Severity number, negative ones as 0; fast field only.
    pub(crate) severity: tantivy::schema::Field,
    /// Effective time, Unix ns.
    pub(crate) time: tantivy::schema::Field,
    pub(crate) row: tantivy::schema::Field,
}

/// The log index schema; see [`span_index_schema`] on field order.
pub(crate) fn log_index_schema() -> (TSchema, LogFields) {
    let mut b = TSchema::builder();
    let text_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let f = LogFields {
        text: b.add_text_field("text", text_opts),
        service: b.add_text_field("service", TextOptions::default().set_fast("raw")),
        severity: b.add_u64_field("severity", FAST),
        time: b.add_u64_field(fast::TIME, FAST),
        row: b.add_u64_field(fast::ROW, FAST),
    };
    (b.build(), f)
}

/// One entry of the trace-ID index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceIndexEntry {
    /// The trace; entries are sorted by it.
    pub trace_id: TraceId,
    /// First row of the trace's spans in spans.parquet.
    pub span_row: u32,
    /// Number of the trace's spans (rows from `span_row`).
    pub span_count: u32,
    /// First row of the trace's logs in logs.parquet.
    pub log_row: u32,
    /// Number of the trace's log records.
    pub log_count: u32,
    /// Highest WAL position of this trace's records in the segment.
    pub wal_pos: u64,
}

impl TraceIndexEntry {
    /// The trace's rows in spans.parquet.
    pub fn span_rows(&self) -> std::ops::Range<usize> {
        self.span_row as usize..(self.span_row + self.span_count) as usize
    }

    /// The trace's rows in logs.parquet.
    pub fn log_rows(&self) -> std::ops::Range<usize> {
        self.log_row as usize..(self.log_row + self.log_count) as usize
    }
}

/// traces.idx: `SKTI`, the entry count (u32 LE), then per entry the trace
/// ID, four u32 LE (span row, span count, log row, log count) and the WAL
/// position (u64 LE).
const TRACE_INDEX_MAGIC: &[u8; 4] = b"SKTI";
const TRACE_ENTRY_BYTES: usize = 16 + 4 * 4 + 8;

pub(crate) fn encode_trace_index(entries: &[TraceIndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * TRACE_ENTRY_BYTES);
    out.extend_from_slice(TRACE_INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.trace_id.0);
        for v in [e.span_row, e.span_count, e.log_row, e.log_count] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&e.wal_pos.to_le_bytes());
    }
    out
}

/// Decodes traces.idx; `what` names the file in errors.
pub(crate) fn decode_trace_index(b: &[u8], what: &str) -> Result<Vec<TraceIndexEntry>> {
    if b.len() < 8 || &b[..4] != TRACE_INDEX_MAGIC {
        return Err(Error::Corrupt(format!("{what}: bad header")));
    }
    let n = u32::from_le_bytes(b[4..8].try_into().expect("4")) as usize;
    if b.len() != 8 + n * TRACE_ENTRY_BYTES {
        return Err(Error::Corrupt(format!("{what}: bad length")));
    }
    Ok(b[8..]
        .chunks_exact(TRACE_ENTRY_BYTES)
        .map(|e| {
            let u32_at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().expect("4"));
            TraceIndexEntry {
                trace_id: TraceId::from_slice(&e[..16]).expect("16"),
                span_row: u32_at(16),
                span_count: u32_at(20),
                log_row: u32_at(24),
                log_count: u32_at(28),
                wal_pos: u64::from_le_bytes(e[32..40].try_into().expect("8")),
            }
        })
        .collect())
}

/// resources.bin: a varint count, then per resource its service name
/// ([`crate::model::Resource::service_name`], UTF-8) and its encoded
/// attributes ([`codec::encode_attrs`]), each behind a varint length.
pub(crate) fn encode_resources(resources: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut buf = Vec::new();
    codec::put_varint(&mut buf, resources.len() as u64);
    for (service, r) in resources {
        codec::put_varint(&mut buf, service.len() as u64);
        buf.extend_from_slice(service.as_bytes());
        codec::put_varint(&mut buf, r.len() as u64);
        buf.extend_from_slice(r);
    }
    buf
}

/// Decodes resources.bin into each resource's service name and attributes.
pub(crate) fn decode_resources(b: &[u8]) -> Result<Vec<(String, Attributes)>> {
    let mut r = codec::Reader::new(b);
    let n = r.varint().map_err(corrupt)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = r.varint().map_err(corrupt)? as usize;
        let service = String::from_utf8(r.take(len).map_err(corrupt)?.to_vec())
            .map_err(|_| Error::Corrupt("resources.bin: service name is not UTF-8".into()))?;
        let len = r.varint().map_err(corrupt)? as usize;
        out.push((service, codec::decode_attrs(r.take(len).map_err(corrupt)?).map_err(corrupt)?));
    }
    Ok(out)
}

pub(crate) fn corrupt(e: DecodeError) -> Error {
    Error::Corrupt(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttrValue;

    #[test]
    fn tables_name_each_column_once_and_match_the_enums() {
        for table in [SPAN_COLUMNS, LOG_COLUMNS] {
            let mut names: Vec<_> = table.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.len());
        }
        assert_eq!(SPAN_COLUMNS[usize::from(SpanCol::Links)].name, "links");
        assert_eq!(SPAN_COLUMNS.len(), usize::from(SpanCol::Links) + 1);
        assert_eq!(LOG_COLUMNS[usize::from(LogCol::EventName)].name, "event_name");
        assert_eq!(LOG_COLUMNS.len(), usize::from(LogCol::EventName) + 1);
        assert!(schema(SPAN_COLUMNS).field(usize::from(SpanCol::ParentSpanId)).is_nullable());
        assert!(schema(SPAN_COLUMNS).field(usize::from(SpanCol::ParentRow)).is_nullable());
    }

    #[test]
    fn writer_props_turn_dictionary_off_where_the_table_says() {
        let p = writer_props(&SegmentConfig::default(), SPAN_COLUMNS).unwrap();
        for c in SPAN_COLUMNS {
            assert_eq!(p.dictionary_enabled(&ColumnPath::from(c.name)), c.dictionary, "{}", c.name);
        }
        let p = writer_props(&SegmentConfig::default(), LOG_COLUMNS).unwrap();
        let enc = |c: &str| p.encoding(&ColumnPath::from(c));
        assert_eq!(enc("observed_delta"), Some(Encoding::DELTA_BINARY_PACKED));
        assert_eq!(enc("time"), Some(Encoding::BYTE_STREAM_SPLIT));
        assert_eq!(enc("body"), None);
        let bad = SegmentConfig { zstd_level: 99, ..Default::default() };
        assert!(matches!(writer_props(&bad, LOG_COLUMNS), Err(Error::Config(_))));
    }

    #[test]
    fn index_schemas_resolve_fields_by_name() {
        let (s, f) = span_index_schema();
        assert_eq!(s.get_field(fast::ROW).unwrap(), f.row);
        assert_eq!(s.get_field(fast::START).unwrap(), f.start);
        let (s, f) = log_index_schema();
        assert_eq!(s.get_field(fast::TIME).unwrap(), f.time);
        assert_eq!(s.get_field(fast::ROW).unwrap(), f.row);
    }

    #[test]
    fn trace_index_round_trip_and_corruption() {
        let entries = vec![
            TraceIndexEntry {
                trace_id: TraceId([0; 16]),
                span_row: 0,
                span_count: 0,
                log_row: 0,
                log_count: 3,
                wal_pos: 0,
            },
            TraceIndexEntry {
                trace_id: TraceId([0xff; 16]),
                span_row: u32::MAX - 1,
                span_count: 1,
                log_row: 3,
                log_count: 0,
                wal_pos: u64::MAX,
            },
        ];
        let b = encode_trace_index(&entries);
        assert_eq!(decode_trace_index(&b, "t").unwrap(), entries);
        assert_eq!(decode_trace_index(&encode_trace_index(&[]), "t").unwrap(), vec![]);
        assert!(decode_trace_index(&b[..b.len() - 1], "t").is_err());
        assert!(decode_trace_index(b"SKTX\0\0\0\0", "t").is_err());
        assert_eq!(entries[0].log_rows(), 0..3);
        assert!(entries[1].span_rows().len() == 1);
    }

    #[test]
    fn resources_round_trip() {
        let a: Attributes = vec![("service.name".into(), AttrValue::Str("cart".into()))];
        let enc = vec![
            ("cart".to_string(), codec::encode_attrs(&a)),
            (String::new(), codec::encode_attrs(&vec![])),
        ];
        let want = vec![("cart".to_string(), a), (String::new(), vec![])];
        assert_eq!(decode_resources(&encode_resources(&enc)).unwrap(), want);
        assert!(decode_resources(&[5]).is_err());
    }
}
