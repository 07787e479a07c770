//! Segments: immutable directories holding a batch of flushed traces.
//!
//! ```text
//! {id}/spans.parquet   spans sorted by trace ID, then start time (zstd)
//! {id}/logs.parquet    log records sorted by trace ID, then time (zstd)
//! {id}/traces.idx      trace-ID index: sorted IDs with their row ranges
//! {id}/span_index/     tantivy: one document per span (service, name, attributes, status, duration, start)
//! {id}/log_index/      tantivy: one document per log (words of body and attribute values, service, severity, time)
//! {id}/resources.bin   the distinct resources of the segment's spans
//! {id}/summaries.bin   per trace: root, start, duration, span and error counts per service
//! {id}/rollup.json     edges and RED buckets (latency sketches) per minute, unpaired call halves
//! {id}/meta.json       counts, time range, services, operations; written last
//! ```
//!
//! A segment is written under `tmp-{id}` and renamed into place once every
//! file is fsynced, so a directory with a `meta.json` is always complete.
//!
//! The code is split by operation: `layout` (file names, columns, index
//! schemas, each named once), `writer`, `reader` (local and ranged remote
//! reads) and `index` (tantivy build and search), each with its tests.

mod index;
mod layout;
mod reader;
mod summaries;
mod writer;

#[cfg(test)]
mod testutil;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::IndexReader;

pub use self::layout::{TraceIndexEntry, FORMAT_VERSION, META_FILE};
pub(crate) use self::layout::{LOGS_FILE, SPANS_FILE};
use self::layout::{LOG_INDEX_DIR, RESOURCES_FILE, ROLLUP_FILE, SPAN_INDEX_DIR, TRACE_INDEX_FILE};
use self::reader::ParquetFile;
pub use self::writer::{sort_for_segment, write_segment, write_segment_replacing, write_segment_skipping};
use crate::metrics::StorageMetrics;
use crate::model::{Attributes, TraceId};
use crate::remote::Remote;
use crate::rollup::Rollup;
use crate::{Error, Result};

/// Spans and errors of one service within a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServiceStat {
    /// `service.name` of the spans' resource.
    pub name: String,
    /// Spans of the service in the segment.
    pub span_count: u64,
    /// Of those, spans with status ERROR.
    pub error_count: u64,
}

/// Spans of one operation (service, span name, kind) within a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationStat {
    /// `service.name` of the spans' resource.
    pub service: String,
    /// The span name.
    pub name: String,
    /// The span kind ([`crate::model::kind`]).
    pub kind: u8,
    /// Spans of the operation in the segment.
    pub span_count: u64,
}

/// What the catalog knows about a segment without opening its files: the
/// content of its `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentMeta {
    /// On-disk format ([`FORMAT_VERSION`] when written by this build).
    pub format: u32,
    /// The segment's ID (a ULID), also its directory and object prefix.
    pub id: String,
    /// When the segment's data was first flushed, Unix ns (a compaction
    /// output keeps its oldest input's, so retention ages data, not files).
    pub created_unix_nano: u64,
    /// Earliest span start time or log effective time in the segment,
    /// Unix ns (0 for an empty segment).
    pub min_time_unix_nano: u64,
    /// Latest span start time or log effective time, Unix ns.
    pub max_time_unix_nano: u64,
    /// Rows of spans.parquet.
    pub span_count: u64,
    /// Rows of logs.parquet.
    pub log_count: u64,
    /// Entries of the trace-ID index (the logs without trace context count
    /// as one trace, the zero ID).
    pub trace_count: u64,
    /// The highest WAL position whose records are in this segment.
    pub wal_max_pos: u64,
    /// Bytes of the segment's files, `meta.json` aside.
    pub bytes: u64,
    /// Per service, sorted by name.
    pub services: Vec<ServiceStat>,
    /// Per operation, sorted by service, name and kind.
    pub operations: Vec<OperationStat>,
    /// IDs of the segments this one replaces (a compaction output lists its
    /// inputs). A crash after the output is renamed into place but before
    /// the inputs are deleted leaves both on disk; opening the storage then
    /// drops every segment listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    /// The compactor lease's epoch ([`crate::lease`]) under which a
    /// compactor node (`--role compact`) wrote this output; 0 for every
    /// other segment (and in segments written before the field existed).
    /// When two outputs replace overlapping inputs (a deposed holder's late
    /// output), the higher epoch wins ([`crate::cluster_compact`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compaction_epoch: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Segment writing settings (`[segment]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Rows per Parquet row group (at least 1).
    pub row_group_rows: usize,
    /// Rows per Parquet data page: the unit a trace lookup decodes (at
    /// least 1).
    pub page_rows: usize,
    /// zstd level of the Parquet pages (1..=22; writing fails with
    /// [`Error::Config`] outside it).
    pub zstd_level: i32,
    /// Memory for the tantivy writer while indexing one segment, in bytes
    /// (raised to tantivy's minimum of 15 MB).
    pub index_heap_bytes: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig { row_group_rows: 65_536, page_rows: 1024, zstd_level: 3, index_heap_bytes: 64 << 20 }
    }
}

/// The trace-ID index of the segment in `dir` (also of a quarantined one,
/// to tell which lookups may miss its data).
///
/// # Errors
/// I/O errors, or [`Error::Corrupt`] for a malformed file.
pub fn read_trace_index(dir: &Path) -> Result<Vec<TraceIndexEntry>> {
    let idx = dir.join(TRACE_INDEX_FILE);
    layout::decode_trace_index(&fs::read(&idx)?, &idx.display().to_string())
}

/// An open segment: its meta, trace-ID index and rollups in memory, its
/// Parquet footers parsed once, its tantivy readers open. Reads never
/// change it; it is shared behind an `Arc` by concurrent queries.
pub struct Segment {
    /// The segment's `meta.json`.
    pub meta: SegmentMeta,
    /// The segment's `rollup.json`, shared with the queries reading it.
    pub rollup: Arc<Rollup>,
    dir: PathBuf,
    trace_index: Arc<Vec<TraceIndexEntry>>,
    resources: Vec<Attributes>,
    /// The service name of each resource, by ordinal.
    resource_services: Vec<String>,
    spans: ParquetFile,
    logs: ParquetFile,
    span_reader: IndexReader,
    log_reader: IndexReader,
    /// summaries.bin, read on first use (a search asks for it; opening
    /// every segment at start-up does not).
    summaries: std::sync::OnceLock<Option<Arc<summaries::Summaries>>>,
    metrics: Arc<StorageMetrics>,
    /// The object store holding this segment, when it is not only local:
    /// its Parquet files are read from there when they are not in `dir`.
    remote: Option<Arc<Remote>>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("id", &self.meta.id).finish()
    }
}

impl Segment {
    /// Opens the segment in `dir`. With `remote`, the Parquet files may be
    /// absent from `dir`: their footers are then read from the object store
    /// (once, kept in memory) and their rows fetched from it when read.
    /// Every other file must be in `dir`.
    ///
    /// Errors: [`Error::Format`] for a segment of another
    /// [`FORMAT_VERSION`] (checked before any other file is read);
    /// [`Error::Corrupt`] for a malformed file; I/O, JSON, Parquet, tantivy
    /// and object-store errors as they come.
    pub fn open(dir: &Path, metrics: Arc<StorageMetrics>, remote: Option<Arc<Remote>>) -> Result<Segment> {
        let raw = fs::read(dir.join(META_FILE))?;
        // The format first, read alone: the meta of another format may have
        // other fields, and must be refused as such, not as damage.
        #[derive(Deserialize)]
        struct Version {
            format: u32,
            id: String,
        }
        let v: Version = serde_json::from_slice(&raw)?;
        if v.format != FORMAT_VERSION {
            return Err(Error::Format { segment: v.id, dir: dir.to_path_buf(), found: v.format });
        }
        let meta: SegmentMeta = serde_json::from_slice(&raw)?;
        let rollup: Arc<Rollup> = Arc::new(serde_json::from_slice(&fs::read(dir.join(ROLLUP_FILE))?)?);
        let trace_index = Arc::new(read_trace_index(dir)?);
        let (resource_services, resources) =
            layout::decode_resources(&fs::read(dir.join(RESOURCES_FILE))?)?.into_iter().unzip();
        let spans = ParquetFile::open(dir, SPANS_FILE, &meta.id, remote.as_ref())?;
        let logs = ParquetFile::open(dir, LOGS_FILE, &meta.id, remote.as_ref())?;
        let span_reader = index::open_index(&dir.join(SPAN_INDEX_DIR))?;
        let log_reader = index::open_index(&dir.join(LOG_INDEX_DIR))?;
        Ok(Segment {
            meta,
            rollup,
            dir: dir.to_path_buf(),
            trace_index,
            resources,
            resource_services,
            spans,
            logs,
            span_reader,
            log_reader,
            summaries: std::sync::OnceLock::new(),
            metrics,
            remote,
        })
    }

    /// Whether the segment's Parquet files are on local disk.
    pub fn parquet_is_local(&self) -> bool {
        self.dir.join(SPANS_FILE).exists() && self.dir.join(LOGS_FILE).exists()
    }

    /// The segment's local directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trace-ID index, sorted by trace ID.
    pub fn trace_index(&self) -> &[TraceIndexEntry] {
        &self.trace_index
    }

    /// Whether the segment's time range meets `[start, end]` (Unix ns,
    /// inclusive, either side open when `None`).
    pub fn overlaps(&self, start: Option<u64>, end: Option<u64>) -> bool {
        !(start.is_some_and(|s| self.meta.max_time_unix_nano < s)
            || end.is_some_and(|e| self.meta.min_time_unix_nano > e))
    }

    /// The trace-ID index entry of trace `id`, if the segment holds it.
    pub fn find(&self, id: &TraceId) -> Option<&TraceIndexEntry> {
        self.trace_index.binary_search_by(|e| e.trace_id.cmp(id)).ok().map(|i| &self.trace_index[i])
    }

    /// The summary of trace `id` from its spans in this segment alone
    /// (summaries.bin, no Parquet read): `None` when the segment holds no
    /// span of it, or has no summaries.bin.
    ///
    /// Errors: [`Error::Corrupt`] for a malformed file, I/O errors.
    pub fn trace_summary(&self, id: &TraceId) -> Result<Option<crate::summary::TraceSummary>> {
        let Ok(i) = self.trace_index.binary_search_by(|e| e.trace_id.cmp(id)) else { return Ok(None) };
        if self.trace_index[i].span_count == 0 {
            return Ok(None);
        }
        let loaded = match self.summaries.get() {
            Some(s) => s.clone(),
            None => {
                let path = self.dir.join(summaries::SUMMARIES_FILE);
                let s = match fs::read(&path) {
                    Ok(b) => Some(Arc::new(summaries::Summaries::decode(
                        &b,
                        self.trace_index.len(),
                        &path.display().to_string(),
                    )?)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e.into()),
                };
                self.summaries.get_or_init(|| s).clone()
            }
        };
        match loaded {
            Some(s) => s.get(i, *id),
            None => Ok(None),
        }
    }

    /// The distinct resources (attributes, `service.name` included) of the
    /// segment's spans, as `resources.bin` lists them.
    pub fn resources(&self) -> &[Attributes] {
        &self.resources
    }
}
