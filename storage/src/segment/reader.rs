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
        let resource = b.get::<BinaryArray>(SpanCol::Resource)?;
        let scope_name = b.get::<StringArray>(SpanCol::ScopeName)?;
        let scope_version = b.get::<StringArray>(SpanCol::ScopeVersion)?;
        let events = b.get::<BinaryArray>(SpanCol::Events)?;
        let links = b.get::<BinaryArray>(SpanCol::Links)?;
        for i in 0..b.num_rows() {
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
                end_time_unix_nano: st.wrapping_add(duration.value(i)),
                status_code: status_code.value(i),
                status_message: status_message.value(i).to_string(),
                attributes: codec::decode_attrs(attributes.value(i)).map_err(corrupt)?,
                events: codec::decode_events(events.value(i)).map_err(corrupt)?,
                links: codec::decode_links(links.value(i)).map_err(corrupt)?,
                resource: ctx.resource(resource.value(i), service.value(i))?,
                scope: ctx.scope(scope_name.value(i), scope_version.value(i)),
            });
        }
        Ok(())
    }
}

impl ReadRow for LogRecord {
    const TABLE: &'static [ColumnDef] = LOG_COLUMNS;

    fn file(seg: &Segment) -> &ParquetFile {
        &seg.logs
    }

    fn read_batch(b: &Columns<'_>, ctx: &mut RowContext, out: &mut Vec<Self>) -> Result<()> {
        let trace_id = b.get::<FixedSizeBinaryArray>(LogCol::TraceId)?;
        let span_id = b.get::<FixedSizeBinaryArray>(LogCol::SpanId)?;
        let time = b.get::<UInt64Array>(LogCol::Time)?;
        let observed = b.get::<UInt64Array>(LogCol::ObservedTime)?;
        let sevn = b.get::<Int32Array>(LogCol::SeverityNumber)?;
        let sevt = b.get::<StringArray>(LogCol::SeverityText)?;
        let body = b.get::<BinaryArray>(LogCol::Body)?;
        let attributes = b.get::<BinaryArray>(LogCol::Attributes)?;
        let resource = b.get::<BinaryArray>(LogCol::Resource)?;
        let service = b.get::<StringArray>(LogCol::ServiceName)?;
        let scope_name = b.get::<StringArray>(LogCol::ScopeName)?;
        let scope_version = b.get::<StringArray>(LogCol::ScopeVersion)?;
        let flags = b.get::<UInt32Array>(LogCol::Flags)?;
        let event_name = b.get::<StringArray>(LogCol::EventName)?;
        for i in 0..b.num_rows() {
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
        let logs = if with_logs { self.read_logs(vec![e.log_rows()])? } else { Vec::new() };
        Ok(Some((spans, logs)))
    }

    fn read<T: ReadRow>(&self, ranges: Vec<Range<usize>>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut ctx = RowContext::default();
        for b in self.read_rows(T::file(self), ranges)? {
            T::read_batch(&Columns { batch: &b, table: T::TABLE }, &mut ctx, &mut out)?;
        }
        Ok(out)
    }

    /// Reads the given row ranges of one Parquet file, touching only the row
    /// groups (and, through the page index, the pages) that hold them.
    fn read_rows(&self, file: &ParquetFile, mut ranges: Vec<Range<usize>>) -> Result<Vec<RecordBatch>> {
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
            (Ok(f), _) => collect_rows(f, &file.meta, groups, sel),
            (Err(e), Some(remote)) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut rf = RemoteFile {
                    remote: remote.clone(),
                    id: self.meta.id.clone(),
                    file: file.name,
                    len: file.len,
                    pieces: Vec::new(),
                };
                rf.prefetch(pages_to_fetch(md, &groups, &ranges))?;
                collect_rows(rf, &file.meta, groups, sel)
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
fn pages_to_fetch(md: &ParquetMetaData, groups: &[usize], ranges: &[Range<usize>]) -> Vec<Range<u64>> {
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
        let got = pages_to_fetch(md, &[1], &[3..4]);
        assert!(!got.is_empty());
        for r in &got {
            assert!(chunks.iter().any(|c| c.start <= r.start && r.end <= c.end), "{r:?}");
        }
        let total = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
        assert_eq!(total(&got), total(&chunks));
    }
}
