//! Segments: immutable directories holding a batch of flushed traces.
//!
//! ```text
//! {id}/spans.parquet   spans sorted by trace ID, then start time (zstd)
//! {id}/logs.parquet    log records sorted by trace ID, then time (zstd)
//! {id}/traces.idx      trace-ID index: sorted IDs with their row ranges
//! {id}/span_index/     tantivy: one document per span (service, name, attributes, status, duration, start)
//! {id}/log_index/      tantivy: one document per log (words of body and attribute values, service, severity, time)
//! {id}/resources.bin   the distinct resources of the segment's spans
//! {id}/rollup.json     edges and RED buckets per minute
//! {id}/meta.json       counts, time range, services, operations; written last
//! ```
//!
//! A segment is written under `tmp-{id}` and renamed into place once every
//! file is fsynced, so a directory with a `meta.json` is always complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, Int32Builder, StringBuilder, UInt32Builder, UInt64Builder,
    UInt8Builder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Int32Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    IndexRecordOption, NumericOptions, Schema as TSchema, TextFieldIndexing, TextOptions, FAST,
};
use tantivy::{
    DocId, Index, IndexReader, Order, Score, SegmentOrdinal, SegmentReader, TantivyDocument, Term,
};

use crate::codec;
use crate::filter::{analyzer, log_text, tokenize, LogFilter, SpanFilter, StatusFilter};
use crate::head::TraceEntry;
use crate::metrics::StorageMetrics;
use crate::model::{LogRecord, Resource, Scope, Span, SpanId, TraceId};
use crate::remote::{Remote, RemoteFile};
use crate::rollup::{Rollup, RollupBuilder};
use crate::{Error, Result};

pub const FORMAT_VERSION: u32 = 3;
pub(crate) const SPANS_FILE: &str = "spans.parquet";
pub(crate) const LOGS_FILE: &str = "logs.parquet";
const TRACE_INDEX_FILE: &str = "traces.idx";
const SPAN_INDEX_DIR: &str = "span_index";
const LOG_INDEX_DIR: &str = "log_index";
const ROLLUP_FILE: &str = "rollup.json";
const RESOURCES_FILE: &str = "resources.bin";
pub const META_FILE: &str = "meta.json";
const TOKENIZER: &str = "skein";

/// Spans and errors of one service within a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServiceStat {
    pub name: String,
    pub span_count: u64,
    pub error_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationStat {
    pub service: String,
    pub name: String,
    pub kind: u8,
    pub span_count: u64,
}

/// What the catalog knows about a segment without opening its files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentMeta {
    pub format: u32,
    pub id: String,
    pub created_unix_nano: u64,
    /// Range of span start times and log times in the segment.
    pub min_time_unix_nano: u64,
    pub max_time_unix_nano: u64,
    pub span_count: u64,
    pub log_count: u64,
    pub trace_count: u64,
    /// The highest WAL position whose records are in this segment.
    pub wal_max_pos: u64,
    pub bytes: u64,
    pub services: Vec<ServiceStat>,
    pub operations: Vec<OperationStat>,
    /// IDs of the segments this one replaces (a compaction output lists its
    /// inputs). A crash after the output is renamed into place but before
    /// the inputs are deleted leaves both on disk; opening the storage then
    /// drops every segment listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

/// Segment writing settings (`[segment]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Rows per Parquet data page: the unit a trace lookup decodes.
    pub page_rows: usize,
    pub zstd_level: i32,
    /// Memory for the tantivy writer while indexing one segment.
    pub index_heap_bytes: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig { row_group_rows: 65_536, page_rows: 1024, zstd_level: 3, index_heap_bytes: 64 << 20 }
    }
}

/// One entry of the trace-ID index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceIndexEntry {
    pub trace_id: TraceId,
    pub span_row: u32,
    pub span_count: u32,
    pub log_row: u32,
    pub log_count: u32,
    /// Highest WAL position of this trace's records in the segment.
    pub wal_pos: u64,
}

impl TraceIndexEntry {
    pub fn span_rows(&self) -> std::ops::Range<usize> {
        self.span_row as usize..(self.span_row + self.span_count) as usize
    }

    pub fn log_rows(&self) -> std::ops::Range<usize> {
        self.log_row as usize..(self.log_row + self.log_count) as usize
    }
}

const TRACE_ENTRY_BYTES: usize = 16 + 4 * 4 + 8;

fn spans_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::UInt8, false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("start_time", DataType::UInt64, false),
        Field::new("duration", DataType::UInt64, false),
        Field::new("status_code", DataType::UInt8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("attributes", DataType::Binary, false),
        Field::new("resource", DataType::Binary, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
        Field::new("events", DataType::Binary, false),
        Field::new("links", DataType::Binary, false),
    ]))
}

fn logs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), true),
        Field::new("time", DataType::UInt64, false),
        Field::new("observed_time", DataType::UInt64, false),
        Field::new("severity_number", DataType::Int32, false),
        Field::new("severity_text", DataType::Utf8, false),
        Field::new("body", DataType::Binary, false),
        Field::new("attributes", DataType::Binary, false),
        Field::new("resource", DataType::Binary, false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("event_name", DataType::Utf8, false),
    ]))
}

fn writer_props(cfg: &SegmentConfig, no_dict: &[&str]) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(cfg.zstd_level).map_err(|e| Error::Config(e.to_string()))?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .set_data_page_row_count_limit(cfg.page_rows.max(1))
        .set_statistics_enabled(EnabledStatistics::Page);
    for c in no_dict {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
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

struct SpanFields {
    row: tantivy::schema::Field,
    resource: tantivy::schema::Field,
    service: tantivy::schema::Field,
    name: tantivy::schema::Field,
    attr: tantivy::schema::Field,
    status: tantivy::schema::Field,
    duration: tantivy::schema::Field,
    start: tantivy::schema::Field,
}

fn span_index_schema() -> (TSchema, SpanFields) {
    let mut b = TSchema::builder();
    let f = SpanFields {
        // The span's row in spans.parquet: rows are written in document
        // order, so this column is monotonic and costs almost nothing, and
        // the trace-ID index maps it to the trace.
        row: b.add_u64_field("row", FAST),
        // The ordinal of the span's resource in resources.bin. Resource
        // attributes (about two thirds of a span's attributes) are indexed
        // once per segment through it rather than once per span.
        resource: b.add_u64_field("resource", indexed_u64()),
        service: b.add_text_field("service", raw_text()),
        name: b.add_text_field("name", raw_text()),
        attr: b.add_text_field("attr", raw_text()),
        status: b.add_u64_field("status", indexed_u64()),
        // Fast fields only: nearly every span has its own start and
        // duration, so indexing them would add a term per span; range
        // queries on fast fields scan the (compact) column instead.
        duration: b.add_u64_field("duration", FAST),
        start: b.add_u64_field("start", FAST),
    };
    (b.build(), f)
}

struct LogFields {
    text: tantivy::schema::Field,
    service: tantivy::schema::Field,
    severity: tantivy::schema::Field,
    time: tantivy::schema::Field,
    row: tantivy::schema::Field,
}

fn log_index_schema() -> (TSchema, LogFields) {
    let mut b = TSchema::builder();
    let text_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let f = LogFields {
        text: b.add_text_field("text", text_opts),
        service: b.add_text_field("service", raw_text()),
        severity: b.add_u64_field("severity", indexed_u64()),
        time: b.add_u64_field("time", FAST),
        row: b.add_u64_field("row", FAST),
    };
    (b.build(), f)
}

fn open_index(dir: &Path) -> Result<(Index, IndexReader)> {
    let index = Index::open_in_dir(dir)?;
    index.tokenizers().register(TOKENIZER, analyzer());
    let reader = index.reader_builder().reload_policy(tantivy::ReloadPolicy::Manual).try_into()?;
    Ok((index, reader))
}

fn fsync_file(p: &Path) -> Result<()> {
    File::open(p)?.sync_all()?;
    Ok(())
}

fn fsync_tree(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            fsync_tree(&p)?;
        } else {
            fsync_file(&p)?;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Puts traces in segment order: by trace ID, spans by start time, logs by
/// time.
pub fn sort_for_segment(traces: &mut [(TraceId, TraceEntry)]) {
    traces.sort_unstable_by_key(|t| t.0);
    for (_, t) in traces.iter_mut() {
        t.spans.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
        t.logs.sort_by_key(|l| l.effective_time());
    }
}

/// Writes the given traces (ordered by [`sort_for_segment`]) as a new segment under `root`, returning its
/// meta. When this returns, the segment's files are durable (fsynced) and
/// renamed into place.
pub fn write_segment(
    root: &Path,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    now_unix_nano: u64,
) -> Result<(SegmentMeta, Rollup)> {
    write_segment_replacing(root, cfg, traces, now_unix_nano, Vec::new())
}

/// [`write_segment`] for a compaction output: `created_unix_nano` is the
/// oldest input's, and `replaces` lists the input segment IDs (see
/// [`SegmentMeta::replaces`]).
pub fn write_segment_replacing(
    root: &Path,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    created_unix_nano: u64,
    replaces: Vec<String>,
) -> Result<(SegmentMeta, Rollup)> {
    let now_unix_nano = created_unix_nano;
    debug_assert!(traces.windows(2).all(|w| w[0].0 < w[1].0), "traces must be sorted");
    let id = ulid::Ulid::new().to_string();
    let tmp = root.join(format!("tmp-{id}"));
    fs::create_dir_all(&tmp)?;

    let mut min_time = u64::MAX;
    let mut max_time = 0u64;
    let mut services: BTreeMap<String, ServiceStat> = BTreeMap::new();
    let mut ops: BTreeMap<(String, String, u8), u64> = BTreeMap::new();
    let mut rollup = RollupBuilder::default();
    let mut index_entries = Vec::with_capacity(traces.len());
    let (mut span_rows, mut log_rows) = (0u32, 0u32);
    let mut wal_max = 0u64;

    // Parquet: spans.
    // No dictionary for IDs and times (nearly unique), nor for the
    // high-cardinality blobs: their dictionary pages grow to the 1 MiB
    // limit, and a lookup of a few rows had to decompress that whole page
    // per column chunk (about half of trace-by-ID time in the 10 M-span
    // profile); zstd on the plain pages keeps most of the repetition.
    let span_props = writer_props(
        cfg,
        &[
            "trace_id",
            "span_id",
            "parent_span_id",
            "start_time",
            "duration",
            "attributes",
            "events",
            "links",
            "status_message",
        ],
    )?;
    let mut sw = ArrowWriter::try_new(
        BufWriter::new(File::create(tmp.join(SPANS_FILE))?),
        spans_schema(),
        Some(span_props),
    )?;
    let log_props = writer_props(cfg, &["span_id", "time", "observed_time", "body", "attributes"])?;
    let mut lw = ArrowWriter::try_new(
        BufWriter::new(File::create(tmp.join(LOGS_FILE))?),
        logs_schema(),
        Some(log_props),
    )?;

    // Tantivy indexes.
    let (sschema, sf) = span_index_schema();
    let sidx = Index::create_in_dir(
        {
            let p = tmp.join(SPAN_INDEX_DIR);
            fs::create_dir_all(&p)?;
            p
        },
        sschema,
    )?;
    let mut siw: tantivy::IndexWriter<TantivyDocument> =
        sidx.writer_with_num_threads(1, cfg.index_heap_bytes.max(15_000_000))?;
    let (lschema, lf) = log_index_schema();
    let lidx = Index::create_in_dir(
        {
            let p = tmp.join(LOG_INDEX_DIR);
            fs::create_dir_all(&p)?;
            p
        },
        lschema,
    )?;
    lidx.tokenizers().register(TOKENIZER, analyzer());
    let mut liw: tantivy::IndexWriter<TantivyDocument> =
        lidx.writer_with_num_threads(1, cfg.index_heap_bytes.max(15_000_000))?;

    let mut span_buf = SpanColumns::default();
    let mut resources: Vec<Vec<u8>> = Vec::new();
    let mut resource_ords: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut last_resource = (0usize, 0u64);
    let mut log_buf = LogColumns::default();
    let mut an = analyzer();
    let mut words = Vec::new();
    const CHUNK: usize = 16_384;

    for (tid, t) in traces {
        wal_max = wal_max.max(t.max_pos);
        index_entries.push(TraceIndexEntry {
            trace_id: *tid,
            span_row: span_rows,
            span_count: t.spans.len() as u32,
            log_row: log_rows,
            log_count: t.logs.len() as u32,
            wal_pos: t.max_pos,
        });
        rollup.add_trace(&t.spans);
        for s in &t.spans {
            min_time = min_time.min(s.start_time_unix_nano);
            max_time = max_time.max(s.start_time_unix_nano);
            let st = services
                .entry(s.service_name().to_string())
                .or_insert_with(|| ServiceStat { name: s.service_name().to_string(), ..Default::default() });
            st.span_count += 1;
            st.error_count += u64::from(s.is_error());
            *ops.entry((s.service_name().to_string(), s.name.clone(), s.kind)).or_default() += 1;

            let mut doc = TantivyDocument::default();
            doc.add_u64(sf.row, u64::from(span_rows));
            doc.add_text(sf.service, s.service_name());
            doc.add_text(sf.name, &s.name);
            let res_key = Arc::as_ptr(&s.resource) as usize;
            if last_resource.0 != res_key {
                let enc = codec::encode_attrs(&s.resource.attributes);
                let next = resources.len() as u64;
                let ord = *resource_ords.entry(enc.clone()).or_insert_with(|| {
                    resources.push(enc);
                    next
                });
                last_resource = (res_key, ord);
            }
            doc.add_u64(sf.resource, last_resource.1);
            for (k, v) in &s.attributes {
                if let Some(text) = v.as_search_text() {
                    doc.add_text(sf.attr, format!("{k}={text}"));
                }
            }
            doc.add_u64(sf.status, u64::from(s.status_code));
            doc.add_u64(sf.duration, s.duration_ns());
            doc.add_u64(sf.start, s.start_time_unix_nano);
            siw.add_document(doc)?;

            span_buf.push(s);
            span_rows += 1;
            if span_buf.len >= CHUNK {
                sw.write(&span_buf.finish()?)?;
            }
        }
        for l in &t.logs {
            let time = l.effective_time();
            min_time = min_time.min(time);
            max_time = max_time.max(time);
            let mut doc = TantivyDocument::default();
            words.clear();
            log_text(l, |s| tokenize(&mut an, s, &mut words));
            words.sort_unstable();
            words.dedup();
            for w in &words {
                doc.add_text(lf.text, w);
            }
            doc.add_text(lf.service, l.service_name());
            doc.add_u64(lf.severity, l.severity_number.max(0) as u64);
            doc.add_u64(lf.time, time);
            doc.add_u64(lf.row, u64::from(log_rows));
            liw.add_document(doc)?;

            log_buf.push(l);
            log_rows += 1;
            if log_buf.len >= CHUNK {
                lw.write(&log_buf.finish()?)?;
            }
        }
    }
    if span_buf.len > 0 {
        sw.write(&span_buf.finish()?)?;
    }
    if log_buf.len > 0 {
        lw.write(&log_buf.finish()?)?;
    }
    sw.close()?;
    lw.close()?;
    siw.commit()?;
    siw.wait_merging_threads()?;
    liw.commit()?;
    liw.wait_merging_threads()?;

    // Trace-ID index.
    {
        let mut w = BufWriter::new(File::create(tmp.join(TRACE_INDEX_FILE))?);
        w.write_all(b"SKTI")?;
        w.write_all(&(index_entries.len() as u32).to_le_bytes())?;
        for e in &index_entries {
            w.write_all(&e.trace_id.0)?;
            w.write_all(&e.span_row.to_le_bytes())?;
            w.write_all(&e.span_count.to_le_bytes())?;
            w.write_all(&e.log_row.to_le_bytes())?;
            w.write_all(&e.log_count.to_le_bytes())?;
            w.write_all(&e.wal_pos.to_le_bytes())?;
        }
        w.flush()?;
    }
    {
        let mut w = BufWriter::new(File::create(tmp.join(RESOURCES_FILE))?);
        let mut buf = Vec::new();
        codec::put_varint(&mut buf, resources.len() as u64);
        for r in &resources {
            codec::put_varint(&mut buf, r.len() as u64);
            buf.extend_from_slice(r);
        }
        w.write_all(&buf)?;
        w.flush()?;
    }
    let rollup = rollup.build();
    fs::write(tmp.join(ROLLUP_FILE), serde_json::to_vec(&rollup)?)?;

    let mut meta = SegmentMeta {
        format: FORMAT_VERSION,
        id: id.clone(),
        created_unix_nano: now_unix_nano,
        min_time_unix_nano: if min_time == u64::MAX { 0 } else { min_time },
        max_time_unix_nano: max_time,
        span_count: u64::from(span_rows),
        log_count: u64::from(log_rows),
        trace_count: index_entries.len() as u64,
        wal_max_pos: wal_max,
        bytes: 0,
        services: services.into_values().collect(),
        operations: ops
            .into_iter()
            .map(|((service, name, kind), span_count)| OperationStat { service, name, kind, span_count })
            .collect(),
        replaces,
    };
    meta.bytes = dir_size(&tmp);
    fs::write(tmp.join(META_FILE), serde_json::to_vec_pretty(&meta)?)?;
    fsync_tree(&tmp)?;
    let dst = root.join(&id);
    fs::rename(&tmp, &dst)?;
    File::open(root)?.sync_all()?;
    Ok((meta, rollup))
}

#[derive(Default)]
struct SpanColumns {
    len: usize,
    trace_id: Option<FixedSizeBinaryBuilder>,
    span_id: Option<FixedSizeBinaryBuilder>,
    parent: Option<FixedSizeBinaryBuilder>,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: UInt8Builder,
    service: StringBuilder,
    start: UInt64Builder,
    duration: UInt64Builder,
    status_code: UInt8Builder,
    status_message: StringBuilder,
    attributes: BinaryBuilder,
    resource: BinaryBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    events: BinaryBuilder,
    links: BinaryBuilder,
    resource_cache: Option<(usize, Vec<u8>)>,
}

fn fsb(b: &mut Option<FixedSizeBinaryBuilder>, width: i32) -> &mut FixedSizeBinaryBuilder {
    b.get_or_insert_with(|| FixedSizeBinaryBuilder::new(width))
}

impl SpanColumns {
    fn push(&mut self, s: &Span) {
        self.len += 1;
        fsb(&mut self.trace_id, 16).append_value(s.trace_id.0).expect("16 bytes");
        fsb(&mut self.span_id, 8).append_value(s.span_id.0).expect("8 bytes");
        match s.parent_span_id {
            Some(p) => fsb(&mut self.parent, 8).append_value(p.0).expect("8 bytes"),
            None => fsb(&mut self.parent, 8).append_null(),
        }
        self.trace_state.append_value(&s.trace_state);
        self.flags.append_value(s.flags);
        self.name.append_value(&s.name);
        self.kind.append_value(s.kind);
        self.service.append_value(s.service_name());
        self.start.append_value(s.start_time_unix_nano);
        self.duration.append_value(s.duration_ns());
        self.status_code.append_value(s.status_code);
        self.status_message.append_value(&s.status_message);
        self.attributes.append_value(codec::encode_attrs(&s.attributes));
        // Consecutive spans usually share a resource: encode it once.
        let key = Arc::as_ptr(&s.resource) as usize;
        match &self.resource_cache {
            Some((k, enc)) if *k == key => self.resource.append_value(enc),
            _ => {
                let enc = codec::encode_attrs(&s.resource.attributes);
                self.resource.append_value(&enc);
                self.resource_cache = Some((key, enc));
            }
        }
        self.scope_name.append_value(&s.scope.name);
        self.scope_version.append_value(&s.scope.version);
        self.events.append_value(codec::encode_events(&s.events));
        self.links.append_value(codec::encode_links(&s.links));
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        self.resource_cache = None;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(fsb(&mut self.trace_id, 16).finish()),
            Arc::new(fsb(&mut self.span_id, 8).finish()),
            Arc::new(fsb(&mut self.parent, 8).finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.links.finish()),
        ];
        Ok(RecordBatch::try_new(spans_schema(), cols)?)
    }
}

#[derive(Default)]
struct LogColumns {
    len: usize,
    trace_id: Option<FixedSizeBinaryBuilder>,
    span_id: Option<FixedSizeBinaryBuilder>,
    time: UInt64Builder,
    observed: UInt64Builder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: BinaryBuilder,
    attributes: BinaryBuilder,
    resource: BinaryBuilder,
    service: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    flags: UInt32Builder,
    event_name: StringBuilder,
}

impl LogColumns {
    fn push(&mut self, l: &LogRecord) {
        self.len += 1;
        fsb(&mut self.trace_id, 16).append_value(l.trace_id.0).expect("16 bytes");
        match l.span_id {
            Some(p) => fsb(&mut self.span_id, 8).append_value(p.0).expect("8 bytes"),
            None => fsb(&mut self.span_id, 8).append_null(),
        }
        self.time.append_value(l.time_unix_nano);
        self.observed.append_value(l.observed_time_unix_nano);
        self.severity_number.append_value(l.severity_number);
        self.severity_text.append_value(&l.severity_text);
        let mut body = Vec::new();
        codec::encode_value(&mut body, &l.body);
        self.body.append_value(body);
        self.attributes.append_value(codec::encode_attrs(&l.attributes));
        self.resource.append_value(codec::encode_attrs(&l.resource.attributes));
        self.service.append_value(l.service_name());
        self.scope_name.append_value(&l.scope.name);
        self.scope_version.append_value(&l.scope.version);
        self.flags.append_value(l.flags);
        self.event_name.append_value(&l.event_name);
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(fsb(&mut self.trace_id, 16).finish()),
            Arc::new(fsb(&mut self.span_id, 8).finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.observed.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.event_name.finish()),
        ];
        Ok(RecordBatch::try_new(logs_schema(), cols)?)
    }
}

/// An open segment: its meta, trace-ID index and rollups in memory, its
/// Parquet footers parsed once, its tantivy readers open.
pub struct Segment {
    pub meta: SegmentMeta,
    pub rollup: Rollup,
    dir: PathBuf,
    trace_index: Arc<Vec<TraceIndexEntry>>,
    resources: Vec<crate::model::Attributes>,
    spans_meta: ArrowReaderMetadata,
    logs_meta: ArrowReaderMetadata,
    span_reader: IndexReader,
    log_reader: IndexReader,
    log_index: Index,
    metrics: Arc<StorageMetrics>,
    /// The object store holding this segment, when it is not only local:
    /// its Parquet files are read from there when they are not in `dir`.
    remote: Option<Arc<Remote>>,
    /// Sizes of the Parquet files (known when they were opened remotely).
    spans_len: u64,
    logs_len: u64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("id", &self.meta.id).finish()
    }
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Corrupt(format!("column {name} missing or of the wrong type")))
}

fn opt_span_id(a: &FixedSizeBinaryArray, i: usize) -> Option<SpanId> {
    if a.is_null(i) {
        None
    } else {
        SpanId::from_slice(a.value(i))
    }
}

/// Decodes a resource blob once per distinct value within a read.
#[derive(Default)]
struct ResourceCache(HashMap<(Vec<u8>, String), Arc<Resource>>);

impl ResourceCache {
    fn get(&mut self, blob: &[u8], service: &str) -> Result<Arc<Resource>> {
        if let Some(r) = self.0.get(&(blob.to_vec(), service.to_string())) {
            return Ok(r.clone());
        }
        let r = Arc::new(Resource {
            service_name: service.to_string(),
            attributes: codec::decode_attrs(blob).map_err(|e| Error::Corrupt(e.to_string()))?,
        });
        self.0.insert((blob.to_vec(), service.to_string()), r.clone());
        Ok(r)
    }
}

fn corrupt(e: codec::DecodeError) -> Error {
    Error::Corrupt(e.to_string())
}

impl Segment {
    /// Opens the segment in `dir`. With `remote`, the Parquet files may be
    /// absent from `dir`: their footers are then read from the object store
    /// (once, kept in memory) and their rows fetched from it when read.
    pub fn open(dir: &Path, metrics: Arc<StorageMetrics>, remote: Option<Arc<Remote>>) -> Result<Segment> {
        let meta: SegmentMeta = serde_json::from_slice(&fs::read(dir.join(META_FILE))?)?;
        if meta.format != FORMAT_VERSION {
            return Err(Error::Corrupt(format!(
                "segment {} has format {}, this build reads {FORMAT_VERSION}",
                meta.id, meta.format
            )));
        }
        let rollup: Rollup = serde_json::from_slice(&fs::read(dir.join(ROLLUP_FILE))?)?;
        let trace_index = Arc::new(read_trace_index(&dir.join(TRACE_INDEX_FILE))?);
        let resources = read_resources(&dir.join(RESOURCES_FILE))?;
        let opts = ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
        let load = |file: &'static str| -> Result<(ArrowReaderMetadata, u64)> {
            match File::open(dir.join(file)) {
                Ok(f) => {
                    let len = f.metadata()?.len();
                    Ok((ArrowReaderMetadata::load(&f, opts.clone())?, len))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && remote.is_some() => {
                    let remote = remote.clone().expect("checked");
                    let len = remote.size(&meta.id, file)?;
                    let mut rf = RemoteFile { remote, id: meta.id.clone(), file, len, pieces: Vec::new() };
                    // The footer and the page index sit at the end: one GET
                    // of the tail usually holds both.
                    rf.prefetch(std::iter::once(len.saturating_sub(REMOTE_TAIL_BYTES)..len).collect())?;
                    Ok((ArrowReaderMetadata::load(&rf, opts.clone())?, len))
                }
                Err(e) => Err(e.into()),
            }
        };
        let (spans_meta, spans_len) = load(SPANS_FILE)?;
        let (logs_meta, logs_len) = load(LOGS_FILE)?;
        let (_sidx, span_reader) = open_index(&dir.join(SPAN_INDEX_DIR))?;
        let (log_index, log_reader) = open_index(&dir.join(LOG_INDEX_DIR))?;
        Ok(Segment {
            meta,
            rollup,
            dir: dir.to_path_buf(),
            trace_index,
            resources,
            spans_meta,
            logs_meta,
            span_reader,
            log_reader,
            log_index,
            metrics,
            remote,
            spans_len,
            logs_len,
        })
    }

    /// Whether the segment's Parquet files are on local disk.
    pub fn parquet_is_local(&self) -> bool {
        self.dir.join(SPANS_FILE).exists() && self.dir.join(LOGS_FILE).exists()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn trace_index(&self) -> &[TraceIndexEntry] {
        &self.trace_index
    }

    pub fn overlaps(&self, start: Option<u64>, end: Option<u64>) -> bool {
        !(start.is_some_and(|s| self.meta.max_time_unix_nano < s)
            || end.is_some_and(|e| self.meta.min_time_unix_nano > e))
    }

    pub fn find(&self, id: &TraceId) -> Option<&TraceIndexEntry> {
        self.trace_index.binary_search_by(|e| e.trace_id.cmp(id)).ok().map(|i| &self.trace_index[i])
    }

    /// Reads the given row ranges of one Parquet file, touching only the row
    /// groups (and, through the page index, the pages) that hold them.
    fn read_rows(
        &self,
        file: &'static str,
        meta: &ArrowReaderMetadata,
        mut ranges: Vec<std::ops::Range<usize>>,
    ) -> Result<Vec<RecordBatch>> {
        ranges.retain(|r| !r.is_empty());
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        ranges.sort_by_key(|r| r.start);
        self.metrics.segment_reads.inc();
        // Map global row ranges to the row groups that contain them.
        let md = meta.metadata();
        let mut groups = Vec::new();
        let mut local = Vec::new();
        let mut base = 0usize;
        let mut selected_base = 0usize;
        for (gi, rg) in md.row_groups().iter().enumerate() {
            let n = rg.num_rows() as usize;
            let end = base + n;
            let mut hit = false;
            for r in &ranges {
                let s = r.start.max(base);
                let e = r.end.min(end);
                if s < e {
                    hit = true;
                    local.push(selected_base + (s - base)..selected_base + (e - base));
                }
            }
            if hit {
                groups.push(gi);
                selected_base += n;
            }
            base = end;
        }
        let sel = RowSelection::from_consecutive_ranges(local.into_iter(), selected_base);
        match (File::open(self.dir.join(file)), &self.remote) {
            (Ok(f), _) => collect_rows(f, meta, groups, sel),
            (Err(e), Some(remote)) if e.kind() == std::io::ErrorKind::NotFound => {
                let len = if file == SPANS_FILE { self.spans_len } else { self.logs_len };
                let mut rf = RemoteFile {
                    remote: remote.clone(),
                    id: self.meta.id.clone(),
                    file,
                    len,
                    pieces: Vec::new(),
                };
                rf.prefetch(pages_to_fetch(md, &groups, &ranges))?;
                collect_rows(rf, meta, groups, sel)
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    pub fn read_spans(&self, ranges: Vec<std::ops::Range<usize>>) -> Result<Vec<Span>> {
        let mut out = Vec::new();
        let mut rc = ResourceCache::default();
        let mut scopes: HashMap<(String, String), Arc<Scope>> = HashMap::new();
        for b in self.read_rows(SPANS_FILE, &self.spans_meta, ranges)? {
            let trace_id = col::<FixedSizeBinaryArray>(&b, "trace_id")?;
            let span_id = col::<FixedSizeBinaryArray>(&b, "span_id")?;
            let parent = col::<FixedSizeBinaryArray>(&b, "parent_span_id")?;
            let trace_state = col::<StringArray>(&b, "trace_state")?;
            let flags = col::<UInt32Array>(&b, "flags")?;
            let name = col::<StringArray>(&b, "name")?;
            let kind = col::<UInt8Array>(&b, "kind")?;
            let service = col::<StringArray>(&b, "service_name")?;
            let start = col::<UInt64Array>(&b, "start_time")?;
            let duration = col::<UInt64Array>(&b, "duration")?;
            let status_code = col::<UInt8Array>(&b, "status_code")?;
            let status_message = col::<StringArray>(&b, "status_message")?;
            let attributes = col::<BinaryArray>(&b, "attributes")?;
            let resource = col::<BinaryArray>(&b, "resource")?;
            let scope_name = col::<StringArray>(&b, "scope_name")?;
            let scope_version = col::<StringArray>(&b, "scope_version")?;
            let events = col::<BinaryArray>(&b, "events")?;
            let links = col::<BinaryArray>(&b, "links")?;
            for i in 0..b.num_rows() {
                let scope = scopes
                    .entry((scope_name.value(i).to_string(), scope_version.value(i).to_string()))
                    .or_insert_with_key(|(n, v)| Arc::new(Scope { name: n.clone(), version: v.clone() }))
                    .clone();
                let st = start.value(i);
                out.push(Span {
                    trace_id: TraceId::from_slice(trace_id.value(i)).unwrap_or_default(),
                    span_id: SpanId::from_slice(span_id.value(i)).unwrap_or_default(),
                    parent_span_id: opt_span_id(parent, i),
                    trace_state: trace_state.value(i).to_string(),
                    flags: flags.value(i),
                    name: name.value(i).to_string(),
                    kind: kind.value(i),
                    start_time_unix_nano: st,
                    end_time_unix_nano: st.saturating_add(duration.value(i)),
                    status_code: status_code.value(i),
                    status_message: status_message.value(i).to_string(),
                    attributes: codec::decode_attrs(attributes.value(i)).map_err(corrupt)?,
                    events: codec::decode_events(events.value(i)).map_err(corrupt)?,
                    links: codec::decode_links(links.value(i)).map_err(corrupt)?,
                    resource: rc.get(resource.value(i), service.value(i))?,
                    scope,
                });
            }
        }
        Ok(out)
    }

    pub fn read_logs(&self, ranges: Vec<std::ops::Range<usize>>) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let mut rc = ResourceCache::default();
        let mut scopes: HashMap<(String, String), Arc<Scope>> = HashMap::new();
        for b in self.read_rows(LOGS_FILE, &self.logs_meta, ranges)? {
            let trace_id = col::<FixedSizeBinaryArray>(&b, "trace_id")?;
            let span_id = col::<FixedSizeBinaryArray>(&b, "span_id")?;
            let time = col::<UInt64Array>(&b, "time")?;
            let observed = col::<UInt64Array>(&b, "observed_time")?;
            let sevn = col::<Int32Array>(&b, "severity_number")?;
            let sevt = col::<StringArray>(&b, "severity_text")?;
            let body = col::<BinaryArray>(&b, "body")?;
            let attributes = col::<BinaryArray>(&b, "attributes")?;
            let resource = col::<BinaryArray>(&b, "resource")?;
            let service = col::<StringArray>(&b, "service_name")?;
            let scope_name = col::<StringArray>(&b, "scope_name")?;
            let scope_version = col::<StringArray>(&b, "scope_version")?;
            let flags = col::<UInt32Array>(&b, "flags")?;
            let event_name = col::<StringArray>(&b, "event_name")?;
            for i in 0..b.num_rows() {
                let scope = scopes
                    .entry((scope_name.value(i).to_string(), scope_version.value(i).to_string()))
                    .or_insert_with_key(|(n, v)| Arc::new(Scope { name: n.clone(), version: v.clone() }))
                    .clone();
                out.push(LogRecord {
                    time_unix_nano: time.value(i),
                    observed_time_unix_nano: observed.value(i),
                    severity_number: sevn.value(i),
                    severity_text: sevt.value(i).to_string(),
                    body: codec::decode_value(body.value(i)).map_err(corrupt)?,
                    attributes: codec::decode_attrs(attributes.value(i)).map_err(corrupt)?,
                    trace_id: TraceId::from_slice(trace_id.value(i)).unwrap_or_default(),
                    span_id: opt_span_id(span_id, i),
                    flags: flags.value(i),
                    event_name: event_name.value(i).to_string(),
                    resource: rc.get(resource.value(i), service.value(i))?,
                    scope,
                });
            }
        }
        Ok(out)
    }

    /// All spans and logs of one trace held by this segment, or `None`
    /// without reading any file when the trace-ID index says it is not here.
    /// `with_logs = false` reads the spans only.
    pub fn lookup(&self, id: &TraceId, with_logs: bool) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        let Some(e) = self.find(id).copied() else { return Ok(None) };
        let spans = self.read_spans(vec![e.span_rows()])?;
        let logs = if with_logs { self.read_logs(vec![e.log_rows()])? } else { Vec::new() };
        Ok(Some((spans, logs)))
    }

    /// The distinct resources (attributes, `service.name` included) of the
    /// segment's spans, as `resources.bin` lists them.
    pub fn resources(&self) -> &[crate::model::Attributes] {
        &self.resources
    }

    /// Walks the span index's `attr` term dictionary (terms are
    /// `key=value` of scalar span attributes, sorted) from the first term
    /// starting with `prefix`, calling `f` with each term that starts with
    /// it until `f` returns `false`. Callers bound the walk through `f`.
    pub fn for_each_attr_term(&self, prefix: &str, mut f: impl FnMut(&str) -> bool) -> Result<()> {
        let (_, sf) = span_index_schema();
        let searcher = self.span_reader.searcher();
        for sr in searcher.segment_readers() {
            let inv = sr.inverted_index(sf.attr)?;
            let mut stream = inv.terms().range().ge(prefix.as_bytes()).into_stream()?;
            while stream.advance() {
                let Ok(term) = std::str::from_utf8(stream.key()) else { continue };
                if !term.starts_with(prefix) || !f(term) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Traces with at least one span matching `f`, with the latest start
    /// time among their matching spans; at most `limit`, latest first.
    pub fn search_spans(&self, f: &SpanFilter, limit: usize) -> Result<Vec<(TraceId, u64)>> {
        let (schema, sf) = span_index_schema();
        let _ = schema;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let term = |field, v: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, v), IndexRecordOption::Basic))
        };
        if let Some(s) = &f.service {
            must.push((Occur::Must, term(sf.service, s)));
        }
        if let Some(s) = &f.operation {
            must.push((Occur::Must, term(sf.name, s)));
        }
        for (k, v) in &f.attrs {
            // The span's own attribute, or its resource's.
            let mut any: Vec<(Occur, Box<dyn Query>)> =
                vec![(Occur::Should, term(sf.attr, &format!("{k}={v}")))];
            for (ord, attrs) in self.resources.iter().enumerate() {
                if attrs.iter().any(|(ak, av)| ak == k && av.as_search_text().as_deref() == Some(v.as_str()))
                {
                    any.push((
                        Occur::Should,
                        Box::new(TermQuery::new(
                            Term::from_field_u64(sf.resource, ord as u64),
                            IndexRecordOption::Basic,
                        )),
                    ));
                }
            }
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if f.min_duration_ns.is_some() || f.max_duration_ns.is_some() {
            must.push((Occur::Must, u64_range(sf.duration, f.min_duration_ns, f.max_duration_ns)));
        }
        match f.status {
            Some(StatusFilter::Error) => must.push((Occur::Must, u64_range(sf.status, Some(2), Some(2)))),
            Some(StatusFilter::Ok) => must.push((Occur::Must, u64_range(sf.status, Some(0), Some(1)))),
            None => {}
        }
        if f.start_ns.is_some() || f.end_ns.is_some() {
            must.push((Occur::Must, u64_range(sf.start, f.start_ns, f.end_ns)));
        }
        let q: Box<dyn Query> =
            if must.is_empty() { Box::new(AllQuery) } else { Box::new(BooleanQuery::new(must)) };
        let searcher = self.span_reader.searcher();
        let limit = limit.max(1);
        // The newest matching spans first, through tantivy's top-k by a
        // fast field (a bounded heap, no per-match allocation); several
        // may belong to one trace, so ask for more spans than traces, and
        // more again when that was not enough.
        let mut k = limit * 4;
        while k <= SEARCH_TOP_SPANS_MAX {
            let top = searcher
                .search(&q, &TopDocs::with_limit(k).order_by_fast_field::<u64>("start", Order::Desc))?;
            let exhausted = top.len() < k;
            let mut out: Vec<(TraceId, u64)> = Vec::with_capacity(limit);
            let mut seen = std::collections::HashSet::with_capacity(limit);
            let mut rows: HashMap<SegmentOrdinal, tantivy::columnar::Column<u64>> = HashMap::new();
            for (start, addr) in top {
                let col = match rows.entry(addr.segment_ord) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(searcher.segment_reader(addr.segment_ord).fast_fields().u64("row")?)
                    }
                };
                let (Some(start), Some(row)) = (start, col.first(addr.doc_id)) else { continue };
                let Some(entry) = trace_of_span_row(&self.trace_index, row) else { continue };
                if seen.insert(entry.trace_id) {
                    out.push((entry.trace_id, start));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                return Ok(out);
            }
            k *= 8;
        }
        // Many matching spans in few traces: visit every match.
        let hits = searcher.search(&q, &LatestTraces { limit, traces: self.trace_index.clone() })?;
        Ok(hits)
    }

    /// The newest `limit` log records matching `f` (without a trace ID):
    /// their times and rows, from the index alone.
    pub fn search_log_rows(&self, f: &LogFilter, limit: usize) -> Result<Vec<(u64, usize)>> {
        let q = self.log_query(f)?;
        let searcher = self.log_reader.searcher();
        let top = searcher
            .search(&q, &TopDocs::with_limit(limit.max(1)).order_by_fast_field::<u64>("time", Order::Desc))?;
        let mut rows = Vec::with_capacity(top.len());
        for (time, addr) in top {
            let seg = searcher.segment_reader(addr.segment_ord);
            let col = seg.fast_fields().u64("row")?;
            if let (Some(time), Some(r)) = (time, col.first(addr.doc_id)) {
                rows.push((time, r as usize));
            }
        }
        Ok(rows)
    }

    pub fn search_logs(&self, f: &LogFilter, limit: usize) -> Result<Vec<LogRecord>> {
        if let Some(tid) = &f.trace_id {
            // The trace-ID index is exact and cheaper than the text index.
            let Some(e) = self.find(tid).copied() else { return Ok(Vec::new()) };
            let logs = self.read_logs(vec![e.log_rows()])?;
            let mut an = analyzer();
            let mut logs: Vec<_> = logs.into_iter().filter(|l| f.matches(l, &mut an)).collect();
            logs.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
            logs.truncate(limit);
            return Ok(logs);
        }
        let mut rows: Vec<usize> = self.search_log_rows(f, limit)?.into_iter().map(|r| r.1).collect();
        rows.sort_unstable();
        let mut logs = self.read_logs(rows.iter().map(|r| *r..*r + 1).collect())?;
        logs.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
        Ok(logs)
    }

    fn log_query(&self, f: &LogFilter) -> Result<Box<dyn Query>> {
        let schema = self.log_index.schema();
        let field = |n: &str| schema.get_field(n).map_err(Error::from);
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let text = field("text")?;
        for w in &f.words {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_text(text, w), IndexRecordOption::Basic)),
            ));
        }
        if let Some(s) = &f.service {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(field("service")?, s),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(m) = f.min_severity {
            must.push((Occur::Must, u64_range(field("severity")?, Some(m.max(0) as u64), None)));
        }
        if f.start_ns.is_some() || f.end_ns.is_some() {
            must.push((Occur::Must, u64_range(field("time")?, f.start_ns, f.end_ns)));
        }
        Ok(if must.is_empty() { Box::new(AllQuery) } else { Box::new(BooleanQuery::new(must)) })
    }

    /// Counts logs matching `f` (trace ID aside) per `step`-wide bucket,
    /// keyed by bucket start (multiples of `step`).
    pub fn count_logs(&self, f: &LogFilter, step: u64) -> Result<HashMap<u64, u64>> {
        let q = self.log_query(f)?;
        let searcher = self.log_reader.searcher();
        Ok(searcher.search(&q, &TimeHistogram { step: step.max(1) })?)
    }
}

/// Matching spans a segment's trace search ranks by start time at most
/// before it visits every match instead.
const SEARCH_TOP_SPANS_MAX: usize = 1 << 16;

/// How much of a remote Parquet file's end is fetched to read its footer.
const REMOTE_TAIL_BYTES: u64 = 256 << 10;

/// The trace-ID index entry of the trace holding span row `row`: rows are
/// sorted by trace, so it is the last entry starting at or before the row.
fn trace_of_span_row(index: &[TraceIndexEntry], row: u64) -> Option<&TraceIndexEntry> {
    let i = index.partition_point(|e| u64::from(e.span_row) <= row);
    i.checked_sub(1).and_then(|i| index.get(i))
}

fn collect_rows<T: parquet::file::reader::ChunkReader + 'static>(
    input: T,
    meta: &ArrowReaderMetadata,
    groups: Vec<usize>,
    sel: RowSelection,
) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input, meta.clone())
        .with_row_groups(groups)
        .with_row_selection(sel)
        .with_batch_size(8192)
        .build()?;
    let mut out = Vec::new();
    for b in reader {
        out.push(b?);
    }
    Ok(out)
}

/// The byte ranges a read of rows `ranges` (sorted, file-wide row numbers)
/// from row groups `groups` needs: per column, its dictionary page and the
/// data pages holding those rows (from the page index), or the whole column
/// chunk when the file has no page index.
fn pages_to_fetch(
    md: &parquet::file::metadata::ParquetMetaData,
    groups: &[usize],
    ranges: &[std::ops::Range<usize>],
) -> Vec<std::ops::Range<u64>> {
    let mut starts = Vec::with_capacity(md.num_row_groups());
    let mut base = 0usize;
    for rg in md.row_groups() {
        starts.push(base);
        base += rg.num_rows() as usize;
    }
    let hit = |lo: usize, hi: usize| ranges.iter().any(|r| r.start < hi && lo < r.end);
    let mut out = Vec::new();
    for &gi in groups {
        let rg = md.row_group(gi);
        let b = starts[gi];
        let rows = rg.num_rows() as usize;
        for (ci, c) in rg.columns().iter().enumerate() {
            let (start, len) = c.byte_range();
            let pages = md.page_index().and_then(|p| p.offset_index(gi, ci));
            let Some(locs) = pages.map(|p| p.page_locations()).filter(|l| !l.is_empty()) else {
                out.push(start..start + len);
                continue;
            };
            let first = locs[0].offset as u64;
            if first > start {
                out.push(start..first); // dictionary page
            }
            for (i, p) in locs.iter().enumerate() {
                let lo = b + p.first_row_index as usize;
                let hi = b + locs.get(i + 1).map_or(rows, |n| n.first_row_index as usize);
                if hit(lo, hi) {
                    out.push(p.offset as u64..p.offset as u64 + p.compressed_page_size as u64);
                }
            }
        }
    }
    out
}

fn u64_range(field: tantivy::schema::Field, lo: Option<u64>, hi: Option<u64>) -> Box<dyn Query> {
    let lo = lo.map_or(Bound::Unbounded, |v| Bound::Included(Term::from_field_u64(field, v)));
    let hi = hi.map_or(Bound::Unbounded, |v| Bound::Included(Term::from_field_u64(field, v)));
    Box::new(RangeQuery::new(lo, hi))
}

fn read_resources(p: &Path) -> Result<Vec<crate::model::Attributes>> {
    let b = fs::read(p)?;
    let mut r = codec::Reader::new(&b);
    let n = r.varint().map_err(corrupt)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = r.varint().map_err(corrupt)? as usize;
        out.push(codec::decode_attrs(r.take(len).map_err(corrupt)?).map_err(corrupt)?);
    }
    Ok(out)
}

fn read_trace_index(p: &Path) -> Result<Vec<TraceIndexEntry>> {
    let b = fs::read(p)?;
    if b.len() < 8 || &b[..4] != b"SKTI" {
        return Err(Error::Corrupt(format!("{}: bad header", p.display())));
    }
    let n = u32::from_le_bytes(b[4..8].try_into().expect("4")) as usize;
    if b.len() != 8 + n * TRACE_ENTRY_BYTES {
        return Err(Error::Corrupt(format!("{}: bad length", p.display())));
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let o = 8 + i * TRACE_ENTRY_BYTES;
        out.push(TraceIndexEntry {
            trace_id: TraceId::from_slice(&b[o..o + 16]).expect("16"),
            span_row: u32_at(o + 16),
            span_count: u32_at(o + 20),
            log_row: u32_at(o + 24),
            log_count: u32_at(o + 28),
            wal_pos: u64::from_le_bytes(b[o + 32..o + 40].try_into().expect("8")),
        });
    }
    Ok(out)
}

/// Collects, per trace, the latest start time among matching spans, and
/// keeps the `limit` latest traces. Pruning below the current k-th latest is
/// safe because a trace's value only grows as more of its spans are seen.
struct LatestTraces {
    limit: usize,
    traces: Arc<Vec<TraceIndexEntry>>,
}

struct LatestTracesSegment {
    limit: usize,
    traces: Arc<Vec<TraceIndexEntry>>,
    row: tantivy::columnar::Column<u64>,
    start: tantivy::columnar::Column<u64>,
    best: HashMap<TraceId, u64>,
}

fn prune(best: &mut HashMap<TraceId, u64>, limit: usize) {
    if best.len() <= limit {
        return;
    }
    let mut v: Vec<u64> = best.values().copied().collect();
    v.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a));
    let kth = v[limit - 1];
    best.retain(|_, s| *s >= kth);
}

impl Collector for LatestTraces {
    type Fruit = Vec<(TraceId, u64)>;
    type Child = LatestTracesSegment;

    fn for_segment(&self, _: SegmentOrdinal, seg: &SegmentReader) -> tantivy::Result<Self::Child> {
        let ff = seg.fast_fields();
        Ok(LatestTracesSegment {
            limit: self.limit,
            traces: self.traces.clone(),
            row: ff.u64("row")?,
            start: ff.u64("start")?,
            best: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<TraceId, u64>>) -> tantivy::Result<Self::Fruit> {
        let mut all: HashMap<TraceId, u64> = HashMap::new();
        for f in fruits {
            for (k, v) in f {
                let e = all.entry(k).or_insert(v);
                *e = (*e).max(v);
            }
        }
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(self.limit);
        Ok(v)
    }
}

impl SegmentCollector for LatestTracesSegment {
    type Fruit = HashMap<TraceId, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let (Some(row), Some(start)) = (self.row.first(doc), self.start.first(doc)) else {
            return;
        };
        let Some(entry) = trace_of_span_row(&self.traces, row) else { return };
        let e = self.best.entry(entry.trace_id).or_insert(start);
        *e = (*e).max(start);
        if self.best.len() > self.limit * 4 + 1024 {
            prune(&mut self.best, self.limit);
        }
    }

    fn harvest(mut self) -> Self::Fruit {
        prune(&mut self.best, self.limit);
        self.best
    }
}

/// Counts matching documents per time bucket.
struct TimeHistogram {
    step: u64,
}

struct TimeHistogramSegment {
    step: u64,
    time: tantivy::columnar::Column<u64>,
    counts: HashMap<u64, u64>,
}

impl Collector for TimeHistogram {
    type Fruit = HashMap<u64, u64>;
    type Child = TimeHistogramSegment;

    fn for_segment(&self, _: SegmentOrdinal, seg: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(TimeHistogramSegment {
            step: self.step,
            time: seg.fast_fields().u64("time")?,
            counts: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<u64, u64>>) -> tantivy::Result<Self::Fruit> {
        let mut all = HashMap::new();
        for f in fruits {
            for (k, v) in f {
                *all.entry(k).or_insert(0) += v;
            }
        }
        Ok(all)
    }
}

impl SegmentCollector for TimeHistogramSegment {
    type Fruit = HashMap<u64, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(t) = self.time.first(doc) {
            *self.counts.entry(t - t % self.step).or_insert(0) += 1;
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.counts
    }
}
