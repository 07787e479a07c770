//! Reading rows back: a trace by ID, or any row ranges, from local Parquet
//! files or with ranged GETs from the object store, through one generic
//! path for spans and logs.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int32Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
    UInt8Array,
};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;

use super::layout::{corrupt, ColumnDef, LogCol, SpanCol, LOG_COLUMNS, SPAN_COLUMNS};
use super::Segment;
use crate::codec;
use crate::model::{LogRecord, Resource, Scope, Span, SpanId, TraceId};
use crate::remote::{Remote, RemoteFile};
use crate::{Error, Result};

/// How much of a remote Parquet file's end is fetched to read its footer.
const REMOTE_TAIL_BYTES: u64 = 256 << 10;

/// One Parquet file of an open segment: its footer (parsed once) and size.
#[derive(Debug)]
pub(crate) struct ParquetFile {
    pub(crate) name: &'static str,
    pub(crate) meta: ArrowReaderMetadata,
    len: u64,
}

impl ParquetFile {
    /// Reads the footer of `dir/name`, or, when that file is absent and the
    /// segment is on `remote`, of the stored object (one GET of the tail).
    pub(crate) fn open(
        dir: &Path,
        name: &'static str,
        id: &str,
        remote: Option<&Arc<Remote>>,
    ) -> Result<Self> {
        let opts = ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
        let (meta, len) = match (File::open(dir.join(name)), remote) {
            (Ok(f), _) => {
                let len = f.metadata()?.len();
                (ArrowReaderMetadata::load(&f, opts)?, len)
            }
            (Err(e), Some(remote)) if e.kind() == std::io::ErrorKind::NotFound => {
                let len = remote.size(id, name)?;
                let mut rf = RemoteFile {
                    remote: remote.clone(),
                    id: id.to_string(),
                    file: name,
                    len,
                    pieces: Vec::new(),
                };
                // The footer and the page index sit at the end: one GET of
                // the tail usually holds both.
                rf.prefetch(std::iter::once(len.saturating_sub(REMOTE_TAIL_BYTES)..len).collect())?;
                (ArrowReaderMetadata::load(&rf, opts)?, len)
            }
            (Err(e), _) => return Err(e.into()),
        };
        Ok(ParquetFile { name, meta, len })
    }
}

/// A row type read back from a segment Parquet file.
pub(crate) trait ReadRow: Sized {
    const TABLE: &'static [ColumnDef];
    fn file(seg: &Segment) -> &ParquetFile;
    /// Appends every row of `b` to `out`.
    fn read_batch(b: &Columns<'_>, ctx: &mut RowContext, out: &mut Vec<Self>) -> Result<()>;

    /// Completes the rows `out` of one read (the rows `rows` of the file)
    /// with what refers to other rows.
    fn finish(_seg: &Segment, _rows: &RowSet, _ctx: RowContext, _out: &mut [Self]) -> Result<()> {
        Ok(())
    }
}

impl ReadRow for Span {
    const TABLE: &'static [ColumnDef] = SPAN_COLUMNS;

    fn file(seg: &Segment) -> &ParquetFile {
        &seg.spans
    }

    fn read_batch(b: &Columns<'_>, ctx: &mut RowContext, out: &mut Vec<Self>) -> Result<()> {
        let trace_id = b.get::<FixedSizeBinaryArray>(SpanCol::TraceId)?;
        let span_id = b.get::<FixedSizeBinaryArray>(SpanCol::SpanId)?;
        let parent = b.get::<FixedSizeBinaryArray>(SpanCol::ParentSpanId)?;
        let parent_row = b.get::<Int32Array>(SpanCol::ParentRow)?;
        let trace_state = b.get::<StringArray>(SpanCol::TraceState)?;
        let flags = b.get::<UInt32Array>(SpanCol::Flags)?;
        let name = b.get::<StringArray>(SpanCol::Name)?;
        let kind = b.get::<UInt8Array>(SpanCol::Kind)?;
        let service = b.get::<StringArray>(SpanCol::ServiceName)?;
        let start = b.get::<UInt64Array>(SpanCol::StartTime)?;
        let duration = b.get::<UInt64Array>(SpanCol::Duration)?;
        let status_code = b.get::<UInt8Array>(SpanCol::StatusCode)?;
        let status_message = b.get::<StringArray>(SpanCol::StatusMessage)?;
        let attributes = b.get::<BinaryArray>(SpanCol::Attributes)?;
        let common = b.get::<BinaryArray>(SpanCol::AttrCommon)?;
        let resource = b.get::<BinaryArray>(SpanCol::Resource)?;
        let scope_name = b.get::<StringArray>(SpanCol::ScopeName)?;
        let scope_version = b.get::<StringArray>(SpanCol::ScopeVersion)?;
        let events = b.get::<BinaryArray>(SpanCol::Events)?;
        let links = b.get::<BinaryArray>(SpanCol::Links)?;
        for i in 0..b.num_rows() {
            let st = start.value(i);
            if parent_row.is_valid(i) {
                ctx.parents.push((out.len(), parent_row.value(i)));
            }
            out.push(Span {
                trace_id: TraceId::from_slice(trace_id.value(i)).unwrap_or_default(),
                span_id: SpanId::from_slice(span_id.value(i)).unwrap_or_default(),
                parent_span_id: opt_span_id(parent, i),
                trace_state: trace_state.value(i).to_string(),
                flags: flags.value(i),
                name: name.value(i).to_string(),
                kind: kind.value(i),
                start_time_unix_nano: st,
                end_time_unix_nano: st.wrapping_add(duration.value(i)),
                status_code: status_code.value(i),
                status_message: status_message.value(i).to_string(),
                attributes: codec::join_attrs(common.value(i), attributes.value(i)).map_err(corrupt)?,
                events: codec::decode_events(events.value(i)).map_err(corrupt)?,
                links: codec::decode_links(links.value(i)).map_err(corrupt)?,
                resource: ctx.resource(resource.value(i), service.value(i))?,
                scope: ctx.scope(scope_name.value(i), scope_version.value(i)),
            });
        }
        Ok(())
    }

    /// Sets the parent IDs stored as row offsets: from the rows read when
    /// the parent is among them (always so for a whole trace), else with a
    /// second read of the span ID column for the parents' rows.
    fn finish(seg: &Segment, rows: &RowSet, ctx: RowContext, out: &mut [Span]) -> Result<()> {
        let mut missing = Vec::new();
        let mut targets = Vec::with_capacity(ctx.parents.len());
        for (k, offset) in ctx.parents {
            let row = rows.row(k).checked_add_signed(offset as isize).ok_or_else(bad_parent)?;
            match rows.index(row) {
                Some(j) => targets.push((k, Ok(j))),
                None => {
                    targets.push((k, Err(missing.len())));
                    missing.push(row);
                }
            }
        }
        let others = if missing.is_empty() { Vec::new() } else { seg.read_span_ids(&missing)? };
        for (k, t) in targets {
            let id = match t {
                Ok(j) => out.get(j).ok_or_else(bad_parent)?.span_id,
                Err(m) => *others.get(m).ok_or_else(bad_parent)?,
            };
            out[k].parent_span_id = Some(id);
        }
        Ok(())
    }
}

/// Sets the span IDs stored as rows within the trace: from the trace's
/// spans when the read has them (a lookup), else with a read of the span
/// ID column of spans.parquet for those rows.
fn finish_logs(seg: &Segment, ctx: RowContext, out: &mut [LogRecord]) -> Result<()> {
    let mut missing = Vec::new();
    let mut targets = Vec::with_capacity(ctx.parents.len());
    for (k, offset) in ctx.parents {
        let trace = out.get(k).map(|l| l.trace_id).ok_or_else(bad_span)?;
        let e = seg.find(&trace).ok_or_else(bad_span)?;
        let offset = u32::try_from(offset).ok().filter(|o| *o < e.span_count).ok_or_else(bad_span)?;
        let row = (e.span_row + offset) as usize;
        match &ctx.spans {
            Some((first, ids)) if row >= *first && row - first < ids.len() => {
                targets.push((k, Ok(ids[row - first])));
            }
            _ => {
                targets.push((k, Err(missing.len())));
                missing.push(row);
            }
        }
    }
    let others = if missing.is_empty() { Vec::new() } else { seg.read_span_ids(&missing)? };
    for (k, t) in targets {
        out[k].span_id = Some(match t {
            Ok(id) => id,
            Err(m) => *others.get(m).ok_or_else(bad_span)?,
        });
    }
    Ok(())
}

fn bad_span() -> Error {
    Error::Corrupt("a log record's span row is outside its trace".into())
}

fn bad_parent() -> Error {
    Error::Corrupt("a span's parent row is outside spans.parquet".into())
}

impl ReadRow for LogRecord {
    const TABLE: &'static [ColumnDef] = LOG_COLUMNS;

    fn file(seg: &Segment) -> &ParquetFile {
        &seg.logs
    }

    fn finish(seg: &Segment, _rows: &RowSet, ctx: RowContext, out: &mut [Self]) -> Result<()> {
        finish_logs(seg, ctx, out)
    }

    fn read_batch(b: &Columns<'_>, ctx: &mut RowContext, out: &mut Vec<Self>) -> Result<()> {
        let trace_id = b.get::<FixedSizeBinaryArray>(LogCol::TraceId)?;
        let span_id = b.get::<FixedSizeBinaryArray>(LogCol::SpanId)?;
        let span_row = b.get::<Int32Array>(LogCol::SpanRow)?;
        let time = b.get::<UInt64Array>(LogCol::Time)?;
        let observed = b.get::<UInt64Array>(LogCol::ObservedDelta)?;
        let sevn = b.get::<Int32Array>(LogCol::SeverityNumber)?;
        let sevt = b.get::<StringArray>(LogCol::SeverityText)?;
        let body = b.get::<BinaryArray>(LogCol::Body)?;
        let attributes = b.get::<BinaryArray>(LogCol::Attributes)?;
        let common = b.get::<BinaryArray>(LogCol::AttrCommon)?;
        let resource = b.get::<BinaryArray>(LogCol::Resource)?;
        let service = b.get::<StringArray>(LogCol::ServiceName)?;
        let scope_name = b.get::<StringArray>(LogCol::ScopeName)?;
        let scope_version = b.get::<StringArray>(LogCol::ScopeVersion)?;
        let flags = b.get::<UInt32Array>(LogCol::Flags)?;
        let event_name = b.get::<StringArray>(LogCol::EventName)?;
        for i in 0..b.num_rows() {
            if span_row.is_valid(i) {
                ctx.parents.push((out.len(), span_row.value(i)));
            }
            out.push(LogRecord {
                time_unix_nano: time.value(i),
                observed_time_unix_nano: time.value(i).wrapping_add(if observed.is_valid(i) {
                    observed.value(i)
                } else {
                    0
                }),
                severity_number: sevn.value(i),
                severity_text: sevt.value(i).to_string(),
                body: codec::decode_value(body.value(i)).map_err(corrupt)?,
                attributes: codec::join_attrs(common.value(i), attributes.value(i)).map_err(corrupt)?,
                trace_id: TraceId::from_slice(trace_id.value(i)).unwrap_or_default(),
                span_id: opt_span_id(span_id, i),
                flags: flags.value(i),
                event_name: event_name.value(i).to_string(),
                resource: ctx.resource(resource.value(i), service.value(i))?,
                scope: ctx.scope(scope_name.value(i), scope_version.value(i)),
            });
        }
        Ok(())
    }
}

/// A record batch seen through its file's column table.
#[derive(Debug)]
pub(crate) struct Columns<'a> {
    batch: &'a RecordBatch,
    table: &'static [ColumnDef],
}

impl<'a> Columns<'a> {
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Column `c` as the Arrow array type its table entry implies; a file
    /// that lacks it or stores another type is corrupt.
    fn get<T: 'static>(&self, c: impl Into<usize>) -> Result<&'a T> {
        let name = self.table[c.into()].name;
        self.batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| Error::Corrupt(format!("column {name} missing or of the wrong type")))
    }
}

fn opt_span_id(a: &FixedSizeBinaryArray, i: usize) -> Option<SpanId> {
    if a.is_null(i) {
        None
    } else {
        SpanId::from_slice(a.value(i))
    }
}

/// Shares resources and scopes among the rows of one read, as the head
/// shares them among the records of one request.
#[derive(Debug, Default)]
pub(crate) struct RowContext {
    resources: HashMap<(Vec<u8>, String), Arc<Resource>>,
    scopes: HashMap<(String, String), Arc<Scope>>,
    /// Spans (index in the output) whose parent is given as a row offset,
    /// or log records whose span is given as a row within the trace.
    parents: Vec<(usize, i32)>,
    /// For a read of logs: the first row and IDs of spans already read.
    spans: Option<(usize, Vec<SpanId>)>,
}

/// The rows of one read: sorted, disjoint ranges of file rows, the output
/// in that order.
#[derive(Debug)]
pub(crate) struct RowSet {
    ranges: Vec<Range<usize>>,
    /// Output index of each range's first row.
    firsts: Vec<usize>,
}

impl RowSet {
    /// `ranges` clipped to `0..total`, sorted and merged.
    fn new(mut ranges: Vec<Range<usize>>, total: usize) -> RowSet {
        ranges.iter_mut().for_each(|r| r.end = r.end.min(total));
        ranges.retain(|r| r.start < r.end);
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let mut firsts = Vec::with_capacity(merged.len());
        let mut n = 0;
        for r in &merged {
            firsts.push(n);
            n += r.len();
        }
        RowSet { ranges: merged, firsts }
    }

    /// The file row of output row `k` (which must be in the set).
    fn row(&self, k: usize) -> usize {
        let i = self.firsts.partition_point(|&f| f <= k) - 1;
        self.ranges[i].start + (k - self.firsts[i])
    }

    /// The output index of file row `row`, if the set holds it.
    fn index(&self, row: usize) -> Option<usize> {
        let i = self.ranges.partition_point(|r| r.end <= row);
        let r = self.ranges.get(i).filter(|r| r.contains(&row))?;
        Some(self.firsts[i] + (row - r.start))
    }
}

impl RowContext {
    /// Decodes a resource blob once per distinct value within a read.
    fn resource(&mut self, blob: &[u8], service: &str) -> Result<Arc<Resource>> {
        if let Some(r) = self.resources.get(&(blob.to_vec(), service.to_string())) {
            return Ok(r.clone());
        }
        let r = Arc::new(Resource {
            service_name: service.to_string(),
            attributes: codec::decode_attrs(blob).map_err(corrupt)?,
        });
        self.resources.insert((blob.to_vec(), service.to_string()), r.clone());
        Ok(r)
    }

    fn scope(&mut self, name: &str, version: &str) -> Arc<Scope> {
        self.scopes
            .entry((name.to_string(), version.to_string()))
            .or_insert_with_key(|(n, v)| Arc::new(Scope { name: n.clone(), version: v.clone() }))
            .clone()
    }
}

impl Segment {
    /// The spans at the given row ranges of spans.parquet (rows past the
    /// end are ignored), in row order. Reads only the pages holding them,
    /// from local disk or, when the file is only on the object store, with
    /// ranged GETs. Errors: I/O, Parquet, object store, or
    /// [`Error::Corrupt`] for an undecodable row.
    pub fn read_spans(&self, ranges: Vec<Range<usize>>) -> Result<Vec<Span>> {
        self.read(ranges)
    }

    /// The log records at the given row ranges of logs.parquet; see
    /// [`Segment::read_spans`].
    pub fn read_logs(&self, ranges: Vec<Range<usize>>) -> Result<Vec<LogRecord>> {
        self.read(ranges)
    }

    /// All spans and logs of one trace held by this segment, or `None`
    /// without reading any file when the trace-ID index says it is not here.
    /// `with_logs = false` reads the spans only.
    pub fn lookup(&self, id: &TraceId, with_logs: bool) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        let Some(e) = self.find(id).copied() else { return Ok(None) };
        let spans = self.read_spans(vec![e.span_rows()])?;
        let logs = if with_logs {
            // The records' spans are those just read: no second read.
            let known = (e.span_row as usize, spans.iter().map(|s| s.span_id).collect());
            self.read_with(vec![e.log_rows()], RowContext { spans: Some(known), ..Default::default() })?
        } else {
            Vec::new()
        };
        Ok(Some((spans, logs)))
    }

    /// Bytes of the Parquet pages [`Segment::lookup`] of trace `id` reads
    /// (0 when the segment does not hold it), from the files' page index:
    /// what a query reading it counts as inspected.
    pub fn trace_read_bytes(&self, id: &TraceId, with_logs: bool) -> u64 {
        let Some(e) = self.find(id) else { return 0 };
        let logs = if with_logs { rows_bytes(&self.logs, &[e.log_rows()]) } else { 0 };
        rows_bytes(&self.spans, &[e.span_rows()]) + logs
    }

    /// Bytes of the Parquet pages [`Segment::read_logs`] of `ranges` reads.
    pub fn log_read_bytes(&self, ranges: &[Range<usize>]) -> u64 {
        rows_bytes(&self.logs, ranges)
    }

    fn read<T: ReadRow>(&self, ranges: Vec<Range<usize>>) -> Result<Vec<T>> {
        self.read_with(ranges, RowContext::default())
    }

    fn read_with<T: ReadRow>(&self, ranges: Vec<Range<usize>>, mut ctx: RowContext) -> Result<Vec<T>> {
        let file = T::file(self);
        let rows = RowSet::new(ranges, file.meta.metadata().file_metadata().num_rows() as usize);
        let mut out = Vec::new();
        for b in self.read_rows(file, rows.ranges.clone(), None)? {
            T::read_batch(&Columns { batch: &b, table: T::TABLE }, &mut ctx, &mut out)?;
        }
        T::finish(self, &rows, ctx, &mut out)?;
        Ok(out)
    }

    /// The span IDs of the given rows of spans.parquet, in the order given;
    /// reads that one column.
    fn read_span_ids(&self, rows: &[usize]) -> Result<Vec<SpanId>> {
        let set = RowSet::new(rows.iter().map(|&r| r..r + 1).collect(), usize::MAX);
        let col = usize::from(SpanCol::SpanId);
        let mut ids = Vec::new();
        for b in self.read_rows(&self.spans, set.ranges.clone(), Some(col))? {
            let a = b
                .column(0)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| Error::Corrupt("column span_id of the wrong type".into()))?;
            ids.extend((0..a.len()).map(|i| SpanId::from_slice(a.value(i)).unwrap_or_default()));
        }
        rows.iter().map(|&r| set.index(r).and_then(|i| ids.get(i).copied()).ok_or_else(bad_parent)).collect()
    }

    /// Reads the given row ranges of one Parquet file, touching only the row
    /// groups (and, through the page index, the pages) that hold them.
    /// With `column`, reads that column only.
    fn read_rows(
        &self,
        file: &ParquetFile,
        mut ranges: Vec<Range<usize>>,
        column: Option<usize>,
    ) -> Result<Vec<RecordBatch>> {
        ranges.retain(|r| !r.is_empty());
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        ranges.sort_by_key(|r| r.start);
        self.metrics.segment_reads.inc();
        // Map global row ranges to the row groups that contain them.
        let md = file.meta.metadata();
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
        match (File::open(self.dir.join(file.name)), &self.remote) {
            (Ok(f), _) => collect_rows(f, &file.meta, groups, sel, column),
            (Err(e), Some(remote)) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut rf = RemoteFile {
                    remote: remote.clone(),
                    id: self.meta.id.clone(),
                    file: file.name,
                    len: file.len,
                    pieces: Vec::new(),
                };
                rf.prefetch(pages_to_fetch(md, &groups, &ranges, column))?;
                collect_rows(rf, &file.meta, groups, sel, column)
            }
            (Err(e), _) => Err(e.into()),
        }
    }
}

fn collect_rows<T: parquet::file::reader::ChunkReader + 'static>(
    input: T,
    meta: &ArrowReaderMetadata,
    groups: Vec<usize>,
    sel: RowSelection,
    column: Option<usize>,
) -> Result<Vec<RecordBatch>> {
    let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(input, meta.clone());
    if let Some(c) = column {
        let mask = ProjectionMask::roots(meta.metadata().file_metadata().schema_descr(), [c]);
        builder = builder.with_projection(mask);
    }
    let reader = builder.with_row_groups(groups).with_row_selection(sel).with_batch_size(8192).build()?;
    let mut out = Vec::new();
    for b in reader {
        out.push(b?);
    }
    Ok(out)
}

/// Bytes of the pages of `file` holding rows `ranges` (file-wide row
/// numbers, any order), every column: the pages [`Segment::read_rows`]
/// touches for them.
fn rows_bytes(file: &ParquetFile, ranges: &[Range<usize>]) -> u64 {
    let mut ranges: Vec<Range<usize>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    ranges.sort_by_key(|r| r.start);
    let md = file.meta.metadata();
    let mut groups = Vec::new();
    let mut base = 0usize;
    for (gi, rg) in md.row_groups().iter().enumerate() {
        let end = base + rg.num_rows() as usize;
        if ranges.iter().any(|r| r.start < end && base < r.end) {
            groups.push(gi);
        }
        base = end;
    }
    pages_to_fetch(md, &groups, &ranges, None).iter().map(|r| r.end - r.start).sum()
}

/// The byte ranges a read of rows `ranges` (sorted, file-wide row numbers)
/// from row groups `groups` needs: per column, its dictionary page and the
/// data pages holding those rows (from the page index), or the whole column
/// chunk when the file has no page index; with `column`, of that column only.
fn pages_to_fetch(
    md: &ParquetMetaData,
    groups: &[usize],
    ranges: &[Range<usize>],
    column: Option<usize>,
) -> Vec<Range<u64>> {
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
            if column.is_some_and(|want| want != ci) {
                continue;
            }
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

#[cfg(test)]
impl Segment {
    /// Whole columns of a local Parquet file of the segment, by name, as one
    /// batch (for small test files).
    pub(crate) fn columns_of(&self, file: &ParquetFile, names: &[&str]) -> RecordBatch {
        let f = File::open(self.dir.join(file.name)).unwrap();
        let idx: Vec<usize> = names.iter().map(|n| file.meta.schema().index_of(n).unwrap()).collect();
        let mask = ProjectionMask::roots(file.meta.metadata().file_metadata().schema_descr(), idx);
        let mut batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::new_with_metadata(f, file.meta.clone())
                .with_projection(mask)
                .with_batch_size(1 << 20)
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
        assert_eq!(batches.len(), 1);
        batches.pop().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testutil::*;
    use super::super::{layout, Segment, SegmentConfig};
    use super::*;
    use crate::metrics::StorageMetrics;

    /// 12 traces of 3 spans and 2 logs: with `small_cfg`, many row groups
    /// and pages.
    fn many() -> Vec<(TraceId, crate::head::TraceEntry)> {
        let res = resource("svc", vec![]);
        let spans = (1..=12u8)
            .flat_map(|t| (1..=3u8).map(move |s| (t, s)))
            .map(|(t, s)| span(t, s, &res, "op", u64::from(t) * 100 + u64::from(s), 5, 0, vec![]))
            .collect();
        let logs = (1..=12u8)
            .flat_map(|t| (0..2u64).map(move |i| (t, i)))
            .map(|(t, i)| log(t, &res, u64::from(t) * 100 + i, 9, "line"))
            .collect();
        traces(spans, logs)
    }

    #[test]
    fn row_ranges_across_row_groups_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let t = many();
        let seg = write_and_open(dir.path(), &small_cfg(), &t);
        assert!(seg.spans.meta.metadata().num_row_groups() > 5);
        let all: Vec<Span> = t.iter().flat_map(|(_, e)| e.spans.clone()).collect();
        // Unsorted, empty, straddling and past-the-end ranges.
        let got = seg.read_spans(vec![20..23, 4..4, 1..5, 34..99]).unwrap();
        let want: Vec<Span> = [1..5, 20..23, 34..36].into_iter().flat_map(|r| all[r].to_vec()).collect();
        assert_eq!(got, want);
        assert!(seg.read_spans(vec![]).unwrap().is_empty());
        assert!(seg.read_logs(vec![100..200]).unwrap().is_empty());
    }

    #[test]
    fn lookup_reads_one_trace_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = many();
        let seg = write_and_open(dir.path(), &small_cfg(), &t);
        let (tid, e) = &t[7];
        let (spans, logs) = seg.lookup(tid, false).unwrap().unwrap();
        assert_eq!(spans, e.spans);
        assert!(logs.is_empty());
        assert_eq!(seg.lookup(tid, true).unwrap().unwrap().1, e.logs);
        let reads = seg.metrics.segment_reads.get();
        assert!(seg.lookup(&TraceId([200; 16]), true).unwrap().is_none());
        assert_eq!(seg.metrics.segment_reads.get(), reads, "an absent trace reads no file");
    }

    #[test]
    fn rows_share_resources_and_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_open(dir.path(), &small_cfg(), &many());
        let spans = seg.read_spans(vec![0..36]).unwrap();
        assert!(spans.windows(2).all(|w| Arc::ptr_eq(&w[0].resource, &w[1].resource)));
        assert!(spans.windows(2).all(|w| Arc::ptr_eq(&w[0].scope, &w[1].scope)));
    }

    #[test]
    fn open_refuses_another_format_and_a_corrupt_trace_index() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_open(dir.path(), &SegmentConfig::default(), &many());
        let p = seg.dir().to_path_buf();
        let metrics = Arc::new(StorageMetrics::default());
        std::fs::write(p.join(layout::TRACE_INDEX_FILE), b"SKTI\x05\0\0\0").unwrap();
        assert!(matches!(Segment::open(&p, metrics.clone(), None), Err(Error::Corrupt(_))));
        let mut meta = seg.meta.clone();
        meta.format = FORMAT + 1;
        std::fs::write(p.join(layout::META_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
        let err = Segment::open(&p, metrics, None).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
    }

    const FORMAT: u32 = layout::FORMAT_VERSION;

    #[test]
    fn parquet_only_on_the_object_store_is_read_with_ranged_gets() {
        let dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let metrics = Arc::new(StorageMetrics::default());
        let url = format!("file://{}", store.path().display());
        let remote = Arc::new(Remote::open(&url, &[], metrics.clone()).unwrap());
        let t = many();
        let local = write_and_open(dir.path(), &small_cfg(), &t);
        remote.upload(local.dir(), &local.meta.id).unwrap();
        for f in [layout::SPANS_FILE, layout::LOGS_FILE] {
            std::fs::remove_file(local.dir().join(f)).unwrap();
        }
        let seg = Segment::open(local.dir(), metrics.clone(), Some(remote)).unwrap();
        assert!(!seg.parquet_is_local());
        let before = metrics.remote_requests.get();
        for (tid, e) in &t {
            let (spans, logs) = seg.lookup(tid, true).unwrap().unwrap();
            assert_eq!((spans, logs), (e.spans.clone(), e.logs.clone()));
        }
        assert!(metrics.remote_requests.get() > before);
        let all: Vec<Span> = t.iter().flat_map(|(_, e)| e.spans.clone()).collect();
        assert_eq!(seg.read_spans(vec![30..36, 0..2]).unwrap(), [&all[0..2], &all[30..36]].concat());
    }

    #[test]
    fn pages_to_fetch_stays_within_the_row_groups_read() {
        // Parquet checks the page row limit once per 1024-row write batch,
        // so these small groups hold one page per column: the fetch is the
        // group's column chunks, and nothing of the other groups.
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_open(dir.path(), &small_cfg(), &many());
        let md = seg.spans.meta.metadata();
        let chunks: Vec<Range<u64>> = md
            .row_group(1)
            .columns()
            .iter()
            .map(|c| {
                let (start, len) = c.byte_range();
                start..start + len
            })
            .collect();
        let got = pages_to_fetch(md, &[1], &[3..4], None);
        assert!(!got.is_empty());
        for r in &got {
            assert!(chunks.iter().any(|c| c.start <= r.start && r.end <= c.end), "{r:?}");
        }
        // At most the group's chunks: a column whose chunk holds more than
        // one page (a dictionary page, or a delta-encoded column's pages)
        // is fetched in part.
        let total = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
        assert!(total(&got) <= total(&chunks));
    }
}
