//! Writing a segment: the Parquet files through one table-driven column
//! builder, the indexes (through [`super::index`]), the small files, then
//! fsync and rename into place.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::BufWriter;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, Int32Builder, StringBuilder, UInt32Builder, UInt64Builder,
    UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;

use super::index::IndexBuilder;
use super::layout::{
    self, ColumnDef, ColumnKind, LogCol, SpanCol, TraceIndexEntry, FORMAT_VERSION, LOGS_FILE, LOG_COLUMNS,
    META_FILE, RESOURCES_FILE, ROLLUP_FILE, SPANS_FILE, SPAN_COLUMNS, TRACE_INDEX_FILE,
};
use super::{OperationStat, SegmentConfig, SegmentMeta, ServiceStat};
use crate::codec;
use crate::head::TraceEntry;
use crate::model::{dedup_spans, has_duplicate_spans, LogRecord, Resource, Span, SpanId, TraceId};
use crate::rollup::{Rollup, RollupBuilder};
use crate::Result;

/// Puts traces in segment order: by trace ID, spans by start time (then
/// span ID), logs by effective time. [`write_segment`] expects this order.
///
/// Rows are large (a [`crate::model::Span`] is a few hundred bytes inline):
/// each list is sorted as (key, index) pairs and then permuted in place,
/// so every row moves at most once instead of at every step of the sort,
/// and a list already in order (common: spans arrive by start time) is not
/// touched at all.
pub fn sort_for_segment(traces: &mut [(TraceId, TraceEntry)]) {
    sort_by_index(traces, |t| t.0);
    for (_, t) in traces.iter_mut() {
        sort_by_index(&mut t.spans, |s| (s.start_time_unix_nano, s.span_id));
        sort_by_index(&mut t.logs, |l| l.effective_time());
    }
}

/// Sorts `items` by `key`, stably, moving each item at most once: sorts
/// (key, index) pairs, then applies the permutation by following its
/// cycles with swaps.
fn sort_by_index<T, K: Ord + Copy>(items: &mut [T], key: impl Fn(&T) -> K) {
    if items.len() < 2 || items.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
        return;
    }
    let mut order: Vec<(K, usize)> = items.iter().enumerate().map(|(i, t)| (key(t), i)).collect();
    order.sort_unstable();
    // `order[i].1` is the index of the item that belongs at `i`.
    let mut src: Vec<usize> = order.into_iter().map(|o| o.1).collect();
    for start in 0..items.len() {
        let mut i = start;
        while src[i] != start {
            let j = src[i];
            items.swap(i, j);
            src[i] = i;
            i = j;
        }
        src[i] = i;
    }
}

/// Writes `traces` (ordered by [`sort_for_segment`], each trace ID once) as
/// a new segment directory `root/{ulid}` and returns its meta and rollup.
/// Of spans sharing a span ID within a trace only the first is written
/// ([`crate::model::dedup_spans`]).
/// `now_unix_nano` becomes [`SegmentMeta::created_unix_nano`].
///
/// Durability: when this returns `Ok`, every file of the segment and the
/// directory itself are fsynced, the directory has been renamed from
/// `root/tmp-{ulid}` to its final name and `root` is fsynced, so the
/// segment survives a crash. On `Err` (I/O, Parquet, tantivy, or
/// [`crate::Error::Config`] for an invalid zstd level) nothing is in place
/// under the final name and the `tmp-*` directory is already removed, so a
/// write that failed on a full disk gives its space back at once.
pub fn write_segment(
    root: &Path,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    now_unix_nano: u64,
) -> Result<(SegmentMeta, Rollup)> {
    write_segment_replacing(root, cfg, traces, now_unix_nano, Vec::new())
}

/// [`write_segment`] leaving out the spans `skip` lists by (trace ID, span
/// ID): copies of spans an older segment already holds (a batch retried
/// after its first copy was flushed), so this segment's counts, index and
/// rollups do not count them again. A trace all of whose spans are skipped
/// keeps its trace-ID index entry (with its logs and WAL position, which
/// replay needs). Same durability promise.
pub fn write_segment_skipping(
    root: &Path,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    now_unix_nano: u64,
    skip: &HashSet<(TraceId, SpanId)>,
) -> Result<(SegmentMeta, Rollup)> {
    write_checked(root, cfg, traces, now_unix_nano, Vec::new(), skip)
}

/// [`write_segment`] for a compaction output: `created_unix_nano` is the
/// oldest input's, and `replaces` lists the input segment IDs (see
/// [`SegmentMeta::replaces`]). Same durability promise.
pub fn write_segment_replacing(
    root: &Path,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    created_unix_nano: u64,
    replaces: Vec<String>,
) -> Result<(SegmentMeta, Rollup)> {
    write_checked(root, cfg, traces, created_unix_nano, replaces, &HashSet::new())
}

fn write_checked(
    root: &Path,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    created_unix_nano: u64,
    replaces: Vec<String>,
    skip: &HashSet<(TraceId, SpanId)>,
) -> Result<(SegmentMeta, Rollup)> {
    debug_assert!(traces.windows(2).all(|w| w[0].0 < w[1].0), "traces must be sorted");
    let id = ulid::Ulid::new().to_string();
    let tmp = root.join(format!("tmp-{id}"));
    let written = write_into(root, &id, cfg, traces, created_unix_nano, replaces, skip);
    if written.is_err() {
        // Best effort: what cannot be removed now goes at the next start.
        let _ = fs::remove_dir_all(&tmp);
    }
    written
}

/// [`write_segment_replacing`] into `root/tmp-{id}`, renamed to
/// `root/{id}` at the end.
fn write_into(
    root: &Path,
    id: &str,
    cfg: &SegmentConfig,
    traces: &[(TraceId, TraceEntry)],
    created_unix_nano: u64,
    replaces: Vec<String>,
    skip: &HashSet<(TraceId, SpanId)>,
) -> Result<(SegmentMeta, Rollup)> {
    let (tmp, id) = (root.join(format!("tmp-{id}")), id.to_string());
    fs::create_dir_all(&tmp)?;

    let mut min_time = u64::MAX;
    let mut max_time = 0u64;
    let mut services: BTreeMap<String, ServiceStat> = BTreeMap::new();
    let mut ops: BTreeMap<(String, String, u8), u64> = BTreeMap::new();
    let mut rollup = RollupBuilder::default();
    let mut index_entries = Vec::with_capacity(traces.len());
    let (mut span_rows, mut log_rows) = (0u32, 0u32);
    let mut wal_max = 0u64;

    let mut spans = ParquetSink::<Span>::create(&tmp, cfg)?;
    let mut logs = ParquetSink::<LogRecord>::create(&tmp, cfg)?;
    let mut index = IndexBuilder::create(&tmp, cfg)?;

    for (tid, t) in traces {
        // A segment holds each span once, whatever its input: its counts,
        // index and rollup then count each span once. The head and
        // compaction drop copies already, so this only checks.
        let skipped = |s: &Span| !skip.is_empty() && skip.contains(&(*tid, s.span_id));
        let unique: Cow<'_, [Span]> = if has_duplicate_spans(&t.spans) || t.spans.iter().any(skipped) {
            let mut v: Vec<Span> = t.spans.iter().filter(|s| !skipped(s)).cloned().collect();
            dedup_spans(&mut v);
            Cow::Owned(v)
        } else {
            Cow::Borrowed(&t.spans)
        };
        wal_max = wal_max.max(t.max_pos);
        index_entries.push(TraceIndexEntry {
            trace_id: *tid,
            span_row: span_rows,
            span_count: unique.len() as u32,
            log_row: log_rows,
            log_count: t.logs.len() as u32,
            wal_pos: t.max_pos,
        });
        rollup.add_trace(&unique);
        index.add_trace(&unique);
        let parents = ParentRows::new(&unique);
        for (i, s) in unique.iter().enumerate() {
            min_time = min_time.min(s.start_time_unix_nano);
            max_time = max_time.max(s.start_time_unix_nano);
            let st = services
                .entry(s.service_name().to_string())
                .or_insert_with(|| ServiceStat { name: s.service_name().to_string(), ..Default::default() });
            st.span_count += 1;
            st.error_count += u64::from(s.is_error());
            *ops.entry((s.service_name().to_string(), s.name.clone(), s.kind)).or_default() += 1;
            index.add_span(s, span_rows)?;
            spans.push(s, parents.offset(i, s))?;
            span_rows += 1;
        }
        for l in &t.logs {
            let time = l.effective_time();
            min_time = min_time.min(time);
            max_time = max_time.max(time);
            index.add_log(l, log_rows)?;
            logs.push(l, l.span_id.and_then(|id| parents.row_of(id)))?;
            log_rows += 1;
        }
    }
    spans.close()?;
    logs.close()?;
    let resources = index.commit()?;

    fs::write(tmp.join(TRACE_INDEX_FILE), layout::encode_trace_index(&index_entries))?;
    fs::write(tmp.join(RESOURCES_FILE), layout::encode_resources(&resources))?;
    let rollup = rollup.build();
    fs::write(tmp.join(ROLLUP_FILE), serde_json::to_vec(&rollup)?)?;

    let mut meta = SegmentMeta {
        format: FORMAT_VERSION,
        id: id.clone(),
        created_unix_nano,
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
        compaction_epoch: 0,
    };
    meta.bytes = dir_size(&tmp);
    // meta.json last: a directory that has it is complete.
    fs::write(tmp.join(META_FILE), serde_json::to_vec_pretty(&meta)?)?;
    fsync_tree(&tmp)?;
    fs::rename(&tmp, root.join(&id))?;
    File::open(root)?.sync_all()?;
    Ok((meta, rollup))
}

fn fsync_tree(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            fsync_tree(&p)?;
        } else {
            File::open(&p)?.sync_all()?;
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

/// Where each span's parent, and each log record's span, is among the
/// rows of its trace ([`SpanCol::ParentRow`], [`LogCol::SpanRow`]).
struct ParentRows<'a> {
    spans: &'a [Span],
    /// Span ID to index, for traces too long to search linearly.
    by_id: Option<HashMap<SpanId, usize>>,
}

impl<'a> ParentRows<'a> {
    /// Past this many spans a trace's parents are found through a map.
    const LINEAR: usize = 32;

    fn new(spans: &'a [Span]) -> Self {
        let by_id = (spans.len() > Self::LINEAR)
            .then(|| spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect());
        ParentRows { spans, by_id }
    }

    /// The parent's row minus the row of `s` (the `i`-th span), when the
    /// parent is one of the trace's spans.
    fn offset(&self, i: usize, s: &Span) -> Option<i32> {
        Some(self.row_of(s.parent_span_id?)? - i as i32)
    }

    /// The index of span `id` among the trace's spans (unique IDs), if there.
    fn row_of(&self, id: SpanId) -> Option<i32> {
        let j = match &self.by_id {
            Some(m) => *m.get(&id)?,
            None => self.spans.iter().position(|x| x.span_id == id)?,
        };
        // A trace has fewer than 2^31 spans (rows are u32).
        Some(j as i32)
    }
}

/// Rows buffered before they are handed to the Parquet writer as one batch.
const CHUNK: usize = 16_384;

/// A row type stored in a segment Parquet file: its file and columns, and
/// how one row fills them.
pub(crate) trait WriteRow {
    const FILE: &'static str;
    const TABLE: &'static [ColumnDef];
    /// What the row needs to know of its neighbours.
    type Context;
    fn write_row(&self, cx: Self::Context, b: &mut BatchBuilder, resources: &mut ResourceBlobs);
}

impl WriteRow for Span {
    const FILE: &'static str = SPANS_FILE;
    const TABLE: &'static [ColumnDef] = SPAN_COLUMNS;
    /// [`ParentRows::offset`].
    type Context = Option<i32>;

    fn write_row(&self, parent_row: Option<i32>, b: &mut BatchBuilder, resources: &mut ResourceBlobs) {
        b.id(SpanCol::TraceId, Some(&self.trace_id.0));
        b.id(SpanCol::SpanId, Some(&self.span_id.0));
        let parent_id = self.parent_span_id.filter(|_| parent_row.is_none());
        b.id(SpanCol::ParentSpanId, parent_id.as_ref().map(|p| &p.0[..]));
        b.opt_i32(SpanCol::ParentRow, parent_row);
        b.str(SpanCol::TraceState, &self.trace_state);
        b.u32(SpanCol::Flags, self.flags);
        b.str(SpanCol::Name, &self.name);
        b.u8(SpanCol::Kind, self.kind);
        b.str(SpanCol::ServiceName, self.service_name());
        b.u64(SpanCol::StartTime, self.start_time_unix_nano);
        // Wrapping: an end before the start (clock skew between hosts) is
        // stored as sent and read back exactly; see `SpanCol::Duration`.
        b.u64(SpanCol::Duration, self.end_time_unix_nano.wrapping_sub(self.start_time_unix_nano));
        b.u8(SpanCol::StatusCode, self.status_code);
        b.str(SpanCol::StatusMessage, &self.status_message);
        let (common, rest) = codec::split_attrs(&self.attributes, |k| layout::SPAN_COMMON_KEYS.contains(&k));
        b.bytes(SpanCol::AttrCommon, &common);
        b.bytes(SpanCol::Attributes, &rest);
        b.bytes(SpanCol::Resource, resources.get(&self.resource));
        b.str(SpanCol::ScopeName, &self.scope.name);
        b.str(SpanCol::ScopeVersion, &self.scope.version);
        b.bytes(SpanCol::Events, &codec::encode_events(&self.events));
        b.bytes(SpanCol::Links, &codec::encode_links(&self.links));
    }
}

impl WriteRow for LogRecord {
    const FILE: &'static str = LOGS_FILE;
    const TABLE: &'static [ColumnDef] = LOG_COLUMNS;
    /// [`ParentRows::row_of`] the record's span.
    type Context = Option<i32>;

    fn write_row(&self, span_row: Option<i32>, b: &mut BatchBuilder, resources: &mut ResourceBlobs) {
        b.id(LogCol::TraceId, Some(&self.trace_id.0));
        let span_id = self.span_id.filter(|_| span_row.is_none());
        b.id(LogCol::SpanId, span_id.as_ref().map(|p| &p.0[..]));
        b.opt_i32(LogCol::SpanRow, span_row);
        b.u64(LogCol::Time, self.time_unix_nano);
        let observed = self.observed_time_unix_nano.wrapping_sub(self.time_unix_nano);
        b.opt_u64(LogCol::ObservedDelta, (observed != 0).then_some(observed));
        b.i32(LogCol::SeverityNumber, self.severity_number);
        b.str(LogCol::SeverityText, &self.severity_text);
        let mut body = Vec::new();
        codec::encode_value(&mut body, &self.body);
        b.bytes(LogCol::Body, &body);
        let (common, rest) = codec::split_attrs(&self.attributes, |k| layout::LOG_COMMON_KEYS.contains(&k));
        b.bytes(LogCol::AttrCommon, &common);
        b.bytes(LogCol::Attributes, &rest);
        b.bytes(LogCol::Resource, resources.get(&self.resource));
        b.str(LogCol::ServiceName, self.service_name());
        b.str(LogCol::ScopeName, &self.scope.name);
        b.str(LogCol::ScopeVersion, &self.scope.version);
        b.u32(LogCol::Flags, self.flags);
        b.str(LogCol::EventName, &self.event_name);
    }
}

/// Encodes a resource's attributes once for consecutive rows that share it
/// (records of one request share one `Arc<Resource>`).
#[derive(Debug, Default)]
pub(crate) struct ResourceBlobs(Option<(*const Resource, Vec<u8>)>);

impl ResourceBlobs {
    fn get(&mut self, r: &Arc<Resource>) -> &[u8] {
        let key = Arc::as_ptr(r);
        if self.0.as_ref().is_none_or(|(k, _)| *k != key) {
            self.0 = Some((key, codec::encode_attrs(&r.attributes)));
        }
        &self.0.as_ref().expect("just set").1
    }
}

/// One Parquet file of a segment being written, `CHUNK` rows at a time.
struct ParquetSink<T: WriteRow> {
    writer: ArrowWriter<BufWriter<File>>,
    batch: BatchBuilder,
    resources: ResourceBlobs,
    row: PhantomData<fn(&T)>,
}

impl<T: WriteRow> ParquetSink<T> {
    fn create(dir: &Path, cfg: &SegmentConfig) -> Result<Self> {
        let batch = BatchBuilder::new(T::TABLE);
        let writer = ArrowWriter::try_new(
            BufWriter::new(File::create(dir.join(T::FILE))?),
            batch.schema.clone(),
            Some(layout::writer_props(cfg, T::TABLE)?),
        )?;
        Ok(ParquetSink { writer, batch, resources: ResourceBlobs::default(), row: PhantomData })
    }

    fn push(&mut self, row: &T, cx: T::Context) -> Result<()> {
        row.write_row(cx, &mut self.batch, &mut self.resources);
        self.batch.rows += 1;
        if self.batch.rows >= CHUNK {
            self.writer.write(&self.batch.finish()?)?;
        }
        Ok(())
    }

    /// Writes the last rows and the footer (not fsynced: the caller syncs
    /// the whole directory).
    fn close(mut self) -> Result<()> {
        if self.batch.rows > 0 {
            self.writer.write(&self.batch.finish()?)?;
        }
        self.writer.close()?;
        Ok(())
    }
}

/// An Arrow builder of the kind a [`ColumnDef`] says.
#[derive(Debug)]
enum Builder {
    Id(FixedSizeBinaryBuilder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    U8(UInt8Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    I32(Int32Builder),
}

impl Builder {
    fn new(kind: ColumnKind) -> Builder {
        match kind {
            ColumnKind::Id16 => Builder::Id(FixedSizeBinaryBuilder::new(16)),
            ColumnKind::Id8 => Builder::Id(FixedSizeBinaryBuilder::new(8)),
            ColumnKind::Utf8 => Builder::Utf8(StringBuilder::new()),
            ColumnKind::Binary => Builder::Binary(BinaryBuilder::new()),
            ColumnKind::U8 => Builder::U8(UInt8Builder::new()),
            ColumnKind::U32 => Builder::U32(UInt32Builder::new()),
            ColumnKind::U64 => Builder::U64(UInt64Builder::new()),
            ColumnKind::I32 => Builder::I32(Int32Builder::new()),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Id(b) => Arc::new(b.finish()),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::U8(b) => Arc::new(b.finish()),
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
        }
    }
}

/// Column builders for one file's table. A row sets every column once
/// through the typed setters; setting a column with a setter of another
/// kind than its table entry is a bug in this module and panics (the
/// round-trip tests set every column).
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    table: &'static [ColumnDef],
    schema: SchemaRef,
    cols: Vec<Builder>,
    rows: usize,
}

macro_rules! setter {
    ($fn:ident, $variant:ident, $t:ty) => {
        fn $fn(&mut self, c: impl Into<usize>, v: $t) {
            let c = c.into();
            match &mut self.cols[c] {
                Builder::$variant(b) => b.append_value(v),
                _ => self.wrong_kind(c, stringify!($variant)),
            }
        }
    };
}

impl BatchBuilder {
    fn new(table: &'static [ColumnDef]) -> BatchBuilder {
        let cols = table.iter().map(|c| Builder::new(c.kind)).collect();
        BatchBuilder { table, schema: layout::schema(table), cols, rows: 0 }
    }

    fn wrong_kind(&self, c: usize, kind: &str) -> ! {
        panic!("column {} is {:?}, not {kind}", self.table[c].name, self.table[c].kind)
    }

    /// A trace or span ID, or null (a nullable ID column).
    fn id(&mut self, c: impl Into<usize>, v: Option<&[u8]>) {
        let c = c.into();
        match (&mut self.cols[c], v) {
            (Builder::Id(b), Some(v)) => b.append_value(v).expect("ID width from the table"),
            (Builder::Id(b), None) => b.append_null(),
            _ => self.wrong_kind(c, "Id"),
        }
    }

    setter!(str, Utf8, &str);
    setter!(bytes, Binary, &[u8]);
    setter!(u8, U8, u8);
    setter!(u32, U32, u32);
    setter!(u64, U64, u64);
    setter!(i32, I32, i32);

    /// A value or null (a nullable column).
    fn opt_i32(&mut self, c: impl Into<usize>, v: Option<i32>) {
        let c = c.into();
        match &mut self.cols[c] {
            Builder::I32(b) => b.append_option(v),
            _ => self.wrong_kind(c, "I32"),
        }
    }

    /// A value or null (a nullable column).
    fn opt_u64(&mut self, c: impl Into<usize>, v: Option<u64>) {
        let c = c.into();
        match &mut self.cols[c] {
            Builder::U64(b) => b.append_option(v),
            _ => self.wrong_kind(c, "U64"),
        }
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        let cols = self.cols.iter_mut().map(Builder::finish).collect();
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::Array as _;

    use super::super::testutil::*;
    use super::super::{layout, Segment};
    use super::*;
    use crate::metrics::StorageMetrics;
    use crate::model::AttrValue;

    fn all_spans(t: &[(TraceId, TraceEntry)]) -> Vec<Span> {
        t.iter().flat_map(|(_, e)| e.spans.clone()).collect()
    }

    fn all_logs(t: &[(TraceId, TraceEntry)]) -> Vec<LogRecord> {
        t.iter().flat_map(|(_, e)| e.logs.clone()).collect()
    }

    #[test]
    fn every_span_and_log_column_round_trips_with_empty_and_maximal_values() {
        let dir = tempfile::tempdir().unwrap();
        let res = resource("cart", vec![("host".into(), AttrValue::Str("h1".into()))]);
        let spans = vec![
            empty_span(1, 1),
            max_span(2, 2),
            span(3, 1, &res, "GET /", 1_000, 5_000, 2, vec![("http.status".into(), AttrValue::Int(500))]),
            span(3, 2, &res, "db", 2_000, 1, 1, every_value()),
        ];
        let logs = vec![empty_log(), max_log(2), log(3, &res, 1_500, 9, "hello world")];
        let t = traces(spans, logs);
        for cfg in [small_cfg(), SegmentConfig::default()] {
            let seg = write_and_open(dir.path(), &cfg, &t);
            for (tid, e) in &t {
                let (s, l) = seg.lookup(tid, true).unwrap().expect("trace in segment");
                assert_eq!(s, e.spans);
                assert_eq!(l, e.logs);
            }
            let n = seg.meta.span_count as usize;
            assert_eq!(seg.read_spans(vec![0..n]).unwrap(), all_spans(&t));
            let n = seg.meta.log_count as usize;
            assert_eq!(seg.read_logs(vec![0..n]).unwrap(), all_logs(&t));
        }
    }

    /// Parents among the trace's rows (before or after the span, itself)
    /// are stored as row offsets, others by ID, and all read back exactly,
    /// whole traces and single rows alike (a single row's parent takes a
    /// second read of the span ID column). A trace past the linear search
    /// length takes the map.
    #[test]
    fn parents_are_row_offsets_within_the_trace_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let res = resource("svc", vec![]);
        let mut spans = Vec::new();
        for t in 1..=2u8 {
            let n = if t == 1 { 6 } else { ParentRows::LINEAR as u8 + 8 };
            for i in 1..=n {
                let mut s = span(t, i, &res, "op", u64::from(i) * 10, 5, 0, vec![]);
                s.parent_span_id = match i {
                    1 => None,
                    2 => Some(SpanId([0xEE; 8])), // not in the segment
                    3 => Some(SpanId([3; 8])),    // itself
                    4 => Some(SpanId([n; 8])),    // a later row
                    _ => Some(SpanId([i - 1; 8])),
                };
                spans.push(s);
            }
        }
        let t = traces(spans.clone(), vec![]);
        for cfg in [small_cfg(), SegmentConfig::default()] {
            let seg = write_and_open(dir.path(), &cfg, &t);
            for (tid, e) in &t {
                assert_eq!(seg.lookup(tid, false).unwrap().unwrap().0, e.spans);
            }
            let all = all_spans(&t);
            for (row, s) in all.iter().enumerate() {
                assert_eq!(seg.read_spans(vec![row..row + 1]).unwrap(), std::slice::from_ref(s), "row {row}");
            }
            let b = seg.columns_of(&seg.spans, &["parent_row", "parent_span_id"]);
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            assert_eq!(col("parent_row").null_count(), 4, "two roots and two outside parents");
            assert_eq!(b.num_rows() - col("parent_span_id").null_count(), 2, "the outside parents' IDs");
        }
    }

    /// A log record's span in the segment is stored as its row within the
    /// trace, any other by ID; both read back exactly, by a lookup without
    /// reading spans.parquet again, and by a read of log rows alone.
    #[test]
    fn log_spans_are_rows_within_the_trace_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let res = resource("svc", vec![]);
        let spans: Vec<Span> =
            (1..=5u8).map(|i| span(1, i, &res, "op", u64::from(i), 5, 0, vec![])).collect();
        let mut logs = Vec::new();
        for (i, sid) in [Some(5u8), Some(1), Some(9), None, Some(3)].into_iter().enumerate() {
            let mut l = log(1, &res, 10 + i as u64, 9, "x");
            l.span_id = sid.map(|b| SpanId([b; 8]));
            logs.push(l);
        }
        let mut orphan = log(0, &res, 1, 9, "no trace");
        orphan.span_id = Some(SpanId([1; 8]));
        logs.push(orphan);
        let t = traces(spans, logs);
        for cfg in [small_cfg(), SegmentConfig::default()] {
            let seg = write_and_open(dir.path(), &cfg, &t);
            let reads = seg.metrics.segment_reads.get();
            let (_, l) = seg.lookup(&TraceId([1; 16]), true).unwrap().unwrap();
            assert_eq!(l, t[1].1.logs);
            assert_eq!(seg.metrics.segment_reads.get() - reads, 2, "spans, then logs");
            let all = all_logs(&t);
            for (row, l) in all.iter().enumerate() {
                assert_eq!(seg.read_logs(vec![row..row + 1]).unwrap(), std::slice::from_ref(l), "row {row}");
            }
            assert_eq!(seg.read_logs(vec![0..all.len()]).unwrap(), all);
            let b = seg.columns_of(&seg.logs, &["span_id", "span_row"]);
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            assert_eq!(b.num_rows() - col("span_id").null_count(), 2, "the span outside, the orphan's");
            assert_eq!(b.num_rows() - col("span_row").null_count(), 3);
        }
    }

    /// Attributes of the common keys come back with their values, types and
    /// places, repeated keys included; only the other keys are in the blob.
    #[test]
    fn attribute_columns_keep_values_types_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let res = resource("svc", vec![]);
        let attrs: crate::model::Attributes = vec![
            ("x".into(), AttrValue::Bool(true)),
            ("http.response.status_code".into(), AttrValue::Int(503)),
            ("http.request.method".into(), AttrValue::Str("GET".into())),
            ("server.port".into(), AttrValue::Str("443".into())),
            ("http.request.method".into(), AttrValue::Str("again".into())),
            ("http.route".into(), AttrValue::Str(String::new())),
        ];
        let only_columns: crate::model::Attributes = vec![
            ("server.address".into(), AttrValue::Str("db".into())),
            ("server.port".into(), AttrValue::Int(5432)),
        ];
        let spans = vec![
            span(1, 1, &res, "a", 1, 1, 0, attrs.clone()),
            span(1, 2, &res, "b", 2, 1, 0, only_columns.clone()),
            span(1, 3, &res, "c", 3, 1, 0, vec![]),
        ];
        let mut l = log(1, &res, 1, 9, "x");
        l.attributes = vec![
            ("thread.name".into(), AttrValue::Str("worker-1".into())),
            ("code.function".into(), AttrValue::Int(7)),
            ("app.user.id".into(), AttrValue::Str("u1".into())),
        ];
        let t = traces(spans, vec![l]);
        let seg = write_and_open(dir.path(), &SegmentConfig::default(), &t);
        let (s, logs) = seg.lookup(&TraceId([1; 16]), true).unwrap().unwrap();
        assert_eq!(s, t[0].1.spans);
        assert_eq!(logs, t[0].1.logs);
        let b = seg.columns_of(&seg.spans, &["attributes", "attr_common"]);
        let col = |n: &str| {
            let a = b.column_by_name(n).unwrap();
            let a = a.as_any().downcast_ref::<arrow_array::BinaryArray>().unwrap();
            (0..a.len()).map(|i| a.value(i).to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(col("attributes")[0], codec::encode_attrs(&vec![attrs[0].clone()]));
        assert_eq!(col("attributes")[1], b"", "only common keys");
        assert_eq!(col("attr_common")[2], b"", "no attributes");
    }

    /// A failed write leaves nothing behind:    /// A failed write leaves nothing behind: on a full disk each failed
    /// flush used to keep its `tmp-*` directory until the next start, and
    /// six of them took back all the space freed meanwhile (issue 10).
    #[test]
    fn a_failed_write_removes_its_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        let t = traces(vec![max_span(1, 1)], vec![max_log(1)]);
        let bad = SegmentConfig { zstd_level: 99, ..Default::default() };
        assert!(write_segment(dir.path(), &bad, &t, 1).is_err());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn files_carry_the_layout_schema_and_dictionary_choices() {
        let dir = tempfile::tempdir().unwrap();
        let t = traces(vec![max_span(1, 1)], vec![max_log(1)]);
        let seg = write_and_open(dir.path(), &SegmentConfig::default(), &t);
        for (file, table) in [(&seg.spans, layout::SPAN_COLUMNS), (&seg.logs, layout::LOG_COLUMNS)] {
            assert_eq!(file.meta.schema().fields(), layout::schema(table).fields());
            let rg = file.meta.metadata().row_group(0);
            for (c, def) in rg.columns().iter().zip(table) {
                let dict = c.dictionary_page_offset().is_some();
                assert_eq!(dict, def.dictionary, "{}: {}", file.name, def.name);
            }
        }
    }

    #[test]
    /// A span whose end is before its start (clock skew between hosts) is
    /// stored as sent, not rewritten to end = start at flush while the copy
    /// in memory showed it as sent (issue 10); its duration for search and
    /// display is 0.
    fn an_end_before_the_start_is_stored_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut skewed = empty_span(1, 1);
        (skewed.start_time_unix_nano, skewed.end_time_unix_nano) = (10, 5);
        let mut far = empty_span(1, 2);
        (far.start_time_unix_nano, far.end_time_unix_nano) = (u64::MAX, 0);
        let mut long = empty_span(1, 3);
        (long.start_time_unix_nano, long.end_time_unix_nano) = (0, u64::MAX);
        let spans = vec![skewed, far, long];
        let seg = write_and_open(dir.path(), &SegmentConfig::default(), &traces(spans.clone(), vec![]));
        let back = seg.read_spans(vec![0..3]).unwrap();
        let times = |v: &[Span]| {
            let mut t: Vec<_> = v.iter().map(|s| (s.start_time_unix_nano, s.end_time_unix_nano)).collect();
            t.sort();
            t
        };
        assert_eq!(times(&back), times(&spans));
        assert!(back
            .iter()
            .filter(|s| s.end_time_unix_nano < s.start_time_unix_nano)
            .all(|s| s.duration_ns() == 0));
    }

    #[test]
    fn meta_counts_times_services_and_operations() {
        let dir = tempfile::tempdir().unwrap();
        let cart = resource("cart", vec![]);
        let web = resource("web", vec![]);
        let t = traces(
            vec![
                span(1, 1, &web, "GET /", 100, 10, 2, vec![]),
                span(1, 2, &cart, "get", 200, 10, 0, vec![]),
                span(2, 1, &web, "GET /", 300, 10, 0, vec![]),
            ],
            vec![log(1, &cart, 50, 9, "a"), log(0, &web, 400, 9, "b")],
        );
        let (meta, _) =
            write_segment_replacing(dir.path(), &small_cfg(), &t, 77, vec!["old".into()]).unwrap();
        assert_eq!(meta.format, FORMAT_VERSION);
        assert_eq!((meta.span_count, meta.log_count, meta.trace_count), (3, 2, 3));
        assert_eq!((meta.min_time_unix_nano, meta.max_time_unix_nano), (50, 400));
        assert_eq!(meta.created_unix_nano, 77);
        assert_eq!(meta.replaces, vec!["old".to_string()]);
        assert_eq!(meta.wal_max_pos, t.iter().map(|(_, e)| e.max_pos).max().unwrap());
        let web_stat = meta.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!((web_stat.span_count, web_stat.error_count), (2, 1));
        assert_eq!(meta.operations.len(), 2);
        assert!(meta.bytes > 0);
        // Renamed into place, the meta on disk equal to the one returned.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![meta.id.clone()]);
        let seg =
            Segment::open(&dir.path().join(&meta.id), Arc::new(StorageMetrics::default()), None).unwrap();
        assert_eq!(seg.meta, meta);
        assert_eq!(seg.trace_index().len(), 3);
    }

    #[test]
    fn an_empty_segment_opens_and_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_open(dir.path(), &SegmentConfig::default(), &[]);
        assert_eq!((seg.meta.min_time_unix_nano, seg.meta.max_time_unix_nano), (0, 0));
        assert!(seg.lookup(&TraceId([1; 16]), true).unwrap().is_none());
        assert!(seg.read_spans(vec![0..10]).unwrap().is_empty());
        assert!(seg.resources().is_empty());
    }

    #[test]
    fn a_bad_config_leaves_no_segment_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SegmentConfig { zstd_level: 1000, ..Default::default() };
        let t = traces(vec![empty_span(1, 1)], vec![]);
        assert!(matches!(write_segment(dir.path(), &cfg, &t, 1), Err(crate::Error::Config(_))));
        for e in fs::read_dir(dir.path()).unwrap() {
            assert!(e.unwrap().file_name().to_string_lossy().starts_with("tmp-"));
        }
    }

    /// Copies of a span (a retried batch) given to the writer are written
    /// once: rows, trace-ID index, meta counts and rollup count one.
    #[test]
    fn copies_of_a_span_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let web = resource("web", vec![]);
        let db = resource("db", vec![]);
        let root = span(1, 1, &web, "GET /", 100, 10, 2, vec![]);
        let child = span(1, 2, &db, "query", 101, 5, 0, vec![]);
        let other = span(2, 1, &web, "GET /", 100, 10, 0, vec![]);
        let t = traces(
            vec![root.clone(), child.clone(), root.clone(), other.clone(), child.clone(), root],
            vec![log(1, &web, 100, 9, "same"), log(1, &web, 100, 9, "same")],
        );
        let (meta, rollup) = write_segment(dir.path(), &small_cfg(), &t, 1).unwrap();
        assert_eq!((meta.span_count, meta.log_count, meta.trace_count), (3, 2, 2), "logs kept as sent");
        let web_stat = meta.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!((web_stat.span_count, web_stat.error_count), (2, 1));
        assert_eq!(meta.operations.iter().map(|o| o.span_count).sum::<u64>(), 3);
        assert_eq!(rollup.red.iter().map(|r| r.count).sum::<u64>(), 3);
        assert_eq!(rollup.red.iter().map(|r| r.errors).sum::<u64>(), 1);
        assert_eq!(rollup.edges.iter().map(|e| e.calls).sum::<u64>(), 1);
        let seg =
            Segment::open(&dir.path().join(&meta.id), Arc::new(StorageMetrics::default()), None).unwrap();
        let (spans, logs) = seg.lookup(&TraceId([1; 16]), true).unwrap().unwrap();
        assert_eq!(spans.iter().map(|s| s.span_id.0[0]).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(logs.len(), 2);
        assert_eq!(seg.lookup(&TraceId([2; 16]), false).unwrap().unwrap().0, [other]);
    }

    /// Issue 11: the index sort gives what a stable sort by the key gives,
    /// for any input (ties keep their order).
    #[test]
    fn sort_by_index_matches_a_stable_sort() {
        let mut seed = 7u64;
        for n in 0..60usize {
            let v: Vec<(u8, usize)> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 60) as u8, i)
                })
                .collect();
            let mut want = v.clone();
            want.sort_by_key(|x| x.0);
            let mut got = v;
            sort_by_index(&mut got, |x| x.0);
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn sort_for_segment_orders_traces_spans_and_logs() {
        let res = resource("a", vec![]);
        let mut observed_only = log(1, &res, 0, 9, "observed only");
        observed_only.observed_time_unix_nano = 99;
        let mut t = traces(
            vec![span(2, 2, &res, "a", 10, 1, 0, vec![]), span(2, 3, &res, "b", 20, 1, 0, vec![])],
            vec![log(1, &res, 5, 9, "x"), observed_only],
        );
        t.reverse();
        for (_, e) in &mut t {
            e.spans.reverse();
            e.logs.reverse();
        }
        sort_for_segment(&mut t);
        assert_eq!(t[0].0, TraceId([1; 16]));
        assert_eq!(t[0].1.logs.iter().map(|l| l.effective_time()).collect::<Vec<_>>(), vec![5, 99]);
        assert_eq!(t[1].1.spans.iter().map(|s| s.start_time_unix_nano).collect::<Vec<_>>(), vec![10, 20]);
    }
}
