//! Skein's storage: the data model, the WAL, the head of live traces,
//! segments on disk and the catalog that lists them.
//!
//! Durability promise: [`Storage::append_spans`] and
//! [`Storage::append_logs`] return `Ok` only once the batch is fsynced in
//! the WAL and visible to reads. Replay on start restores every such
//! request that is not yet in a segment, and skips exactly the records that
//! are, so nothing is lost or duplicated across a crash.

pub mod batch;
pub mod codec;
pub mod compact;
pub mod filter;
pub mod head;
pub mod metrics;
pub mod model;
pub mod remote;
pub mod rollup;
pub mod segment;
pub mod wal;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::filter::{analyzer, LogFilter, SpanFilter};
use crate::head::{CutPolicy, Flushing, Head, TraceEntry};
use crate::metrics::StorageMetrics;
use crate::model::{LogRecord, Span, TraceId};
use crate::rollup::{Rollup, RollupBuilder};
use crate::segment::{Segment, SegmentConfig, META_FILE};

pub use crate::compact::{CompactStats, CompactionConfig};
use crate::wal::{RecordKind, Wal, WalConfig, WalError};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("metadata: {0}")]
    Json(#[from] serde_json::Error),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The head is over its memory limit because flushing is behind; the
    /// client should retry later.
    #[error("ingest is over capacity (head holds {0} bytes); retry later")]
    Overloaded(usize),
    #[error("storage is not ready (WAL replay in progress)")]
    NotReady,
}

impl From<tantivy::query::QueryParserError> for Error {
    fn from(e: tantivy::query::QueryParserError) -> Self {
        Error::Config(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Head settings (`[head]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// A trace with no new data for this long is written to a segment.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A trace (and the bucket of logs without trace context) is written
    /// out at the latest this long after its first record arrived.
    #[serde(with = "humantime_serde")]
    pub max_trace_age: Duration,
    /// Memory the head may hold; past it the least recently updated traces
    /// are flushed early.
    pub max_bytes: usize,
    /// Past `max_bytes * overload_factor` ingest is refused with a retryable
    /// error until flushing catches up.
    pub overload_factor: f64,
    /// How often the flusher looks for traces to write.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            idle_timeout: Duration::from_secs(5),
            max_trace_age: Duration::from_secs(30),
            max_bytes: 512 << 20,
            overload_factor: 1.5,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// All storage settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub head: HeadConfig,
    pub wal: WalConfig,
    pub segment: SegmentConfig,
    /// Segments older than this (counted from when Skein received the data)
    /// are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// When set, the oldest segments are also deleted while all segments
    /// together take more bytes than this.
    pub retention_bytes: Option<u64>,
    pub compaction: CompactionConfig,
    /// Where segments live: `None` keeps them in `data_dir/segments` only;
    /// `s3://bucket/prefix` or `file:///dir` keeps them in that object
    /// store, and `data_dir/segments` is then a cache (see [`remote`]).
    #[serde(skip)]
    pub storage_url: Option<String>,
    /// Object store options on top of the `AWS_*` environment (keys as in
    /// `object_store`'s S3 builder, e.g. `aws_endpoint`).
    #[serde(skip)]
    pub storage_options: Vec<(String, String)>,
    /// With object storage: Parquet bytes of segments kept on local disk
    /// (the newest segments'); older ones are read from the store.
    /// Indexes and footers are always cached. Default 4 GiB.
    pub cache_bytes: Option<u64>,
}

/// Default of [`StorageConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;

impl StorageConfig {
    pub fn with_retention(mut self, r: Duration) -> Self {
        self.retention = r;
        self
    }

    pub fn check(&self) -> Result<()> {
        if self.head.idle_timeout > self.head.max_trace_age {
            return Err(Error::Config(format!(
                "head.idle_timeout ({:?}) is longer than head.max_trace_age ({:?}); traces would be cut by age before they go idle",
                self.head.idle_timeout, self.head.max_trace_age
            )));
        }
        if self.head.overload_factor < 1.0 {
            return Err(Error::Config("head.overload_factor must be at least 1.0".into()));
        }
        if self.retention.is_zero() {
            return Err(Error::Config("retention must be longer than zero".into()));
        }
        self.compaction.check()
    }
}

pub fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[derive(Debug, Default)]
struct State {
    segments: Vec<Arc<Segment>>,
    flushing: Vec<Arc<Flushing>>,
}

/// A consistent view for one query: segments and in-flight flushes taken
/// together, so a trace moving from head to segment is seen once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub segments: Vec<Arc<Segment>>,
    pub flushing: Vec<Arc<Flushing>>,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    pub traces: usize,
    pub spans: u64,
    pub logs: u64,
}

/// The storage engine.
#[derive(Debug)]
pub struct Storage {
    cfg: StorageConfig,
    data_dir: PathBuf,
    head: Head,
    wal: OnceLock<Wal>,
    state: RwLock<State>,
    flush_lock: Mutex<()>,
    /// Held by compaction and retention, which both remove segments from
    /// the catalog; never by flush (see [`Storage::compact`]).
    maintenance_lock: Mutex<()>,
    /// Segments taken out of the catalog whose directories are deleted once
    /// no query snapshot holds them any more.
    graveyard: Mutex<Vec<Arc<Segment>>>,
    ready: AtomicBool,
    /// An exclusive lock on `data_dir/LOCK`, held while this exists: two
    /// processes replaying and flushing one WAL would duplicate data.
    _dir_lock: fs::File,
    /// The object store holding the segments, if not only local disk.
    remote: Option<Arc<remote::Remote>>,
    pub metrics: Arc<StorageMetrics>,
    /// Test hook: the next flush fails as if its segment write had.
    #[cfg(test)]
    fail_next_flush: AtomicBool,
}

impl Storage {
    fn segments_dir(&self) -> PathBuf {
        self.data_dir.join("segments")
    }

    fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// Opens the data directory and loads the catalog of segments. The
    /// storage is not ready for ingest until [`Storage::replay`] has run.
    pub fn open(data_dir: &Path, cfg: StorageConfig) -> Result<Arc<Storage>> {
        cfg.check()?;
        fs::create_dir_all(data_dir)?;
        let dir_lock =
            fs::OpenOptions::new().create(true).truncate(false).write(true).open(data_dir.join("LOCK"))?;
        match dir_lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "data directory {} is in use by another Skein process (it holds {}/LOCK); stop it first or use another --data-dir",
                    data_dir.display(),
                    data_dir.display()
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let metrics = Arc::new(StorageMetrics::default());
        let remote = match &cfg.storage_url {
            Some(url) => Some(Arc::new(remote::Remote::open(url, &cfg.storage_options, metrics.clone())?)),
            None => None,
        };
        let s = Storage {
            cfg,
            data_dir: data_dir.to_path_buf(),
            head: Head::default(),
            wal: OnceLock::new(),
            state: RwLock::new(State::default()),
            flush_lock: Mutex::new(()),
            maintenance_lock: Mutex::new(()),
            graveyard: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            _dir_lock: dir_lock,
            remote,
            metrics,
            #[cfg(test)]
            fail_next_flush: AtomicBool::new(false),
        };
        let segdir = s.segments_dir();
        fs::create_dir_all(&segdir)?;
        if let Some(r) = &s.remote {
            s.sync_cache(r)?;
        }
        let mut segments = Vec::new();
        let mut dirs = Vec::new();
        for e in fs::read_dir(&segdir)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.starts_with("tmp-") {
                // A segment whose write was interrupted (its data is still
                // in the WAL, or in the inputs of an interrupted
                // compaction), or one whose deletion was.
                tracing::info!(dir = %p.display(), "removing incomplete segment");
                let _ = fs::remove_dir_all(&p);
                continue;
            }
            if !p.join(META_FILE).exists() {
                continue;
            }
            dirs.push((name, p.clone()));
            match Segment::open(&p, s.metrics.clone(), s.remote.clone()) {
                Ok(seg) => segments.push(Arc::new(seg)),
                Err(e) => tracing::error!(dir = %p.display(), error = %e, "cannot open segment; skipping it"),
            }
        }
        // A crash after a compaction output was renamed into place but
        // before its inputs were deleted leaves both: the output wins.
        let replaced: HashSet<&str> =
            segments.iter().flat_map(|x| x.meta.replaces.iter().map(String::as_str)).collect();
        if !replaced.is_empty() {
            for (name, p) in dirs.iter().filter(|(n, _)| replaced.contains(n.as_str())) {
                tracing::info!(segment = %name, "removing segment already replaced by a compaction output");
                // Failing here would let the segment come back (twice the
                // data) once its replacement is gone, so it is fatal.
                if let Some(r) = &s.remote {
                    r.delete(name)?;
                }
                remove_segment_dir(&segdir, p)?;
            }
            let replaced: HashSet<String> = replaced.into_iter().map(str::to_string).collect();
            segments.retain(|x| !replaced.contains(&x.meta.id));
        }
        segments.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        s.metrics.segments.set(segments.len() as i64);
        s.metrics.segment_bytes.set(segments.iter().map(|x| x.meta.bytes as i64).sum());
        s.state.write().segments = segments;
        s.trim_cache();
        Ok(Arc::new(s))
    }

    /// Makes `data_dir/segments` agree with the object store before the
    /// catalog is loaded: drops local segments the store does not hold (an
    /// upload interrupted by a crash: their data is still in the WAL), and
    /// objects of segments whose upload or deletion was interrupted, and
    /// downloads the indexes of segments not cached yet (their Parquet data
    /// stays remote and is read on demand).
    fn sync_cache(&self, r: &remote::Remote) -> Result<()> {
        let segdir = self.segments_dir();
        let listing = r.list()?;
        for id in &listing.incomplete {
            tracing::info!(segment = %id, store = r.url(), "removing an incomplete segment from the object store");
            r.delete(id)?;
        }
        let committed: HashSet<&str> = listing.committed.iter().map(String::as_str).collect();
        for e in fs::read_dir(&segdir)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if !name.starts_with("tmp-") && !committed.contains(name.as_str()) {
                tracing::info!(segment = %name, "removing a cached segment the object store does not hold");
                remove_segment_dir(&segdir, &p)?;
            }
        }
        for id in &listing.committed {
            if segdir.join(id).join(META_FILE).exists() {
                continue;
            }
            let tmp = segdir.join(format!("tmp-dl-{id}"));
            let _ = fs::remove_dir_all(&tmp);
            r.download(id, &tmp, |f| f != segment::SPANS_FILE && f != segment::LOGS_FILE)?;
            fs::rename(&tmp, segdir.join(id))?;
        }
        Ok(())
    }

    /// Puts a segment just written to `data_dir/segments/<id>` into the
    /// object store (if any) and opens it. On failure nothing of it is left
    /// behind, locally or remotely, so the caller can simply retry.
    pub(crate) fn publish_segment(&self, id: &str) -> Result<Segment> {
        let root = self.segments_dir();
        let dir = root.join(id);
        let res = match &self.remote {
            Some(r) => r.upload(&dir, id),
            None => Ok(()),
        }
        .and_then(|()| Segment::open(&dir, self.metrics.clone(), self.remote.clone()));
        if res.is_err() {
            if let Some(r) = &self.remote {
                if let Err(e) = r.delete(id) {
                    tracing::warn!(segment = %id, error = %e, "cannot remove a failed upload from the object store");
                }
            }
            let _ = remove_segment_dir(&root, &dir);
        }
        res
    }

    /// With object storage, deletes the local Parquet files of the oldest
    /// segments while those of all segments take more than `cache_bytes`
    /// (reads of those segments then go to the object store).
    pub(crate) fn trim_cache(&self) {
        if self.remote.is_none() {
            return;
        }
        let limit = self.cfg.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
        let mut segs = self.snapshot().segments;
        segs.sort_by(|a, b| b.meta.id.cmp(&a.meta.id));
        let mut total = 0u64;
        for s in segs {
            let files = [segment::SPANS_FILE, segment::LOGS_FILE].map(|f| s.dir().join(f));
            let size: u64 = files.iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.len()).sum();
            total += size;
            if total > limit && size > 0 {
                tracing::debug!(segment = %s.meta.id, "cache: dropping local Parquet files");
                for f in &files {
                    let _ = fs::remove_file(f);
                }
            }
        }
    }

    /// Replays the WAL into the head, skipping records already in segments,
    /// then starts the WAL writer. Blocking; run it off the async runtime.
    pub fn replay(&self) -> Result<()> {
        let wal_dir = self.wal_dir();
        let oldest = wal::list_files(&wal_dir)?.first().map(|f| f.0);
        // Per trace, the last WAL position already in a segment.
        let mut flushed: HashMap<TraceId, u64> = HashMap::new();
        for seg in self.state.read().segments.iter() {
            if oldest.is_some_and(|o| seg.meta.wal_max_pos >= o) {
                for e in seg.trace_index() {
                    let v = flushed.entry(e.trace_id).or_insert(e.wal_pos);
                    *v = (*v).max(e.wal_pos);
                }
            }
        }
        let keep = |id: &TraceId, pos: u64| flushed.get(id).is_none_or(|p| pos > *p);
        let (mut spans_n, mut logs_n, mut skipped) = (0u64, 0u64, 0u64);
        let next = wal::replay(&wal_dir, |pos, kind, payload| match kind {
            RecordKind::SpanBatch => match batch::decode_spans(payload) {
                Ok(mut c) => {
                    let before = c.len();
                    c.retain(|s| keep(&s.trace_id, pos));
                    skipped += (before - c.len()) as u64;
                    spans_n += c.len() as u64;
                    self.head.insert_spans(pos, c);
                }
                Err(e) => tracing::error!(pos, error = %e, "WAL: undecodable span batch"),
            },
            RecordKind::LogBatch => match batch::decode_logs(payload) {
                Ok(mut c) => {
                    let before = c.len();
                    c.retain(|l| keep(&l.trace_id, pos));
                    skipped += (before - c.len()) as u64;
                    logs_n += c.len() as u64;
                    self.head.insert_logs(pos, c);
                }
                Err(e) => tracing::error!(pos, error = %e, "WAL: undecodable log batch"),
            },
        })?;
        tracing::info!(spans = spans_n, logs = logs_n, already_flushed = skipped, "WAL replay done");
        // New records must sort after every position a segment recorded,
        // or replay after a crash would take them for flushed ones. That
        // matters when the WAL is newer than the segments: a deleted WAL
        // directory, or a new node on segments in an object store.
        let floor = self.state.read().segments.iter().map(|s| s.meta.wal_max_pos + 1).max().unwrap_or(0);
        let next = next.max(floor);
        let w = Wal::start(&wal_dir, next, self.cfg.wal.clone(), self.metrics.clone())?;
        let _ = self.wal.set(w);
        self.update_head_metrics();
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    fn admit(&self) -> Result<&Wal> {
        let wal = self.wal.get().ok_or(Error::NotReady)?;
        let limit = (self.cfg.head.max_bytes as f64 * self.cfg.head.overload_factor) as usize;
        let b = self.head.bytes();
        if b > limit {
            return Err(Error::Overloaded(b));
        }
        Ok(wal)
    }

    /// Makes spans durable, then visible: encodes them as one WAL record
    /// ([`batch::encode_spans`]), and resolves once that record is fsynced
    /// (group commit) and the spans are in the head. Validation is the
    /// caller's (the collector's); storage keeps what it is given.
    ///
    /// # Errors
    /// [`Error::NotReady`] before [`Storage::replay`] finished,
    /// [`Error::Overloaded`] while the head is over its limit (retryable),
    /// [`Error::Wal`] when the record could not be made durable (nothing of
    /// it is visible then).
    pub async fn append_spans(self: &Arc<Self>, spans: Vec<Span>) -> Result<()> {
        let wal = self.admit()?;
        let payload = batch::encode_spans(&spans);
        let me = self.clone();
        wal.append(RecordKind::SpanBatch, payload, move |pos| me.head.insert_spans(pos, spans)).await?;
        Ok(())
    }

    /// Makes log records durable, then visible; as [`Storage::append_spans`].
    pub async fn append_logs(self: &Arc<Self>, logs: Vec<LogRecord>) -> Result<()> {
        let wal = self.admit()?;
        let payload = batch::encode_logs(&logs);
        let me = self.clone();
        wal.append(RecordKind::LogBatch, payload, move |pos| me.head.insert_logs(pos, logs)).await?;
        Ok(())
    }

    fn update_head_metrics(&self) {
        self.metrics.head_bytes.set(self.head.bytes() as i64);
        self.metrics.head_traces.set(self.head.trace_count() as i64);
    }

    /// Writes traces that are idle, old, or over the memory limit (or all
    /// of them with `all`) to a new segment, then deletes WAL files whose
    /// records are all in segments. Blocking.
    pub fn flush(&self, all: bool) -> Result<FlushStats> {
        let _guard = self.flush_lock.lock();
        let t0 = std::time::Instant::now();
        let h = &self.cfg.head;
        // Cut from the head and publish as `flushing` under the catalog
        // lock, which `get_trace` also holds while it reads the head: a
        // reader sees a trace's records in the head or in `flushing`, never
        // in neither.
        let mut st = self.state.write();
        let mut traces = self.head.cut(CutPolicy {
            now_ms: self.head.now_ms(),
            idle_ms: h.idle_timeout.as_millis() as u64,
            max_age_ms: h.max_trace_age.as_millis() as u64,
            target_bytes: h.max_bytes,
            all,
        });
        let mut stats = FlushStats::default();
        if traces.is_empty() {
            drop(st);
        } else {
            segment::sort_for_segment(&mut traces);
            stats.traces = traces.len();
            stats.spans = traces.iter().map(|t| t.1.spans.len() as u64).sum();
            stats.logs = traces.iter().map(|t| t.1.logs.len() as u64).sum();
            let flushing = Arc::new(Flushing { traces });
            st.flushing.push(flushing.clone());
            drop(st);
            #[cfg(test)]
            let injected = self.fail_next_flush.swap(false, Ordering::SeqCst);
            #[cfg(not(test))]
            let injected = false;
            let written = if injected {
                Err(Error::Io(std::io::Error::other("injected segment write failure")))
            } else {
                segment::write_segment(
                &self.segments_dir(),
                &self.cfg.segment,
                &flushing.traces,
                    now_unix_nano(),
                )
                .and_then(|(meta, _)| self.publish_segment(&meta.id))
            };
            let mut st = self.state.write();
            st.flushing.retain(|f| !Arc::ptr_eq(f, &flushing));
            match written {
                Ok(seg) => {
                    self.metrics.segment_bytes.inc_by(seg.meta.bytes as i64);
                    st.segments.push(Arc::new(seg));
                    self.metrics.segments.set(st.segments.len() as i64);
                    self.metrics.flushed_spans.inc_by(stats.spans);
                    self.metrics.flushed_logs.inc_by(stats.logs);
                }
                Err(e) => {
                    // Put the traces back (still under the catalog lock, so
                    // readers never miss them); their WAL records are still
                    // there.
                    for (id, t) in &flushing.traces {
                        self.head.restore(*id, t.clone());
                    }
                    self.update_head_metrics();
                    return Err(e);
                }
            }
            self.metrics.flush_seconds.observe(t0.elapsed().as_secs_f64());
        }
        self.reclaim_wal();
        self.update_head_metrics();
        if stats.traces > 0 {
            self.trim_cache();
        }
        Ok(stats)
    }

    fn reclaim_wal(&self) {
        let Some(wal) = self.wal.get() else { return };
        let st = self.state.read();
        let flushing_min = st.flushing.iter().flat_map(|f| f.traces.iter().map(|t| t.1.min_pos)).min();
        let safe = match (self.head.min_pos(), flushing_min) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => u64::MAX,
        };
        drop(st);
        match wal.reclaim(safe) {
            Ok(n) => {
                self.metrics.wal_files_reclaimed.inc_by(n as u64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot delete WAL file"),
        };
    }

    /// Deletes segments received longer ago than `retention`, then, with
    /// `retention_bytes`, the oldest segments (by when Skein received their
    /// data) while all segments together are larger than that. A segment
    /// holding records still in the WAL is never deleted: replay would
    /// bring them back. Returns the number of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        let _maint = self.maintenance_lock.lock();
        let cutoff = now_unix_nano().saturating_sub(self.cfg.retention.as_nanos() as u64);
        let wal_oldest = match self.wal.get() {
            Some(w) => w.oldest_position(),
            None => wal::list_files(&self.wal_dir())?.first().map_or(u64::MAX, |f| f.0),
        };
        let deletable = |s: &Segment| s.meta.wal_max_pos < wal_oldest;
        let expired: Vec<Arc<Segment>> = {
            let mut st = self.state.write();
            let (mut old, mut keep): (Vec<_>, Vec<_>) =
                st.segments.drain(..).partition(|s| s.meta.created_unix_nano < cutoff && deletable(s));
            if let Some(limit) = self.cfg.retention_bytes {
                let mut total: u64 = keep.iter().map(|s| s.meta.bytes).sum();
                if total > limit {
                    keep.sort_by(|a, b| {
                        (a.meta.created_unix_nano, &a.meta.id).cmp(&(b.meta.created_unix_nano, &b.meta.id))
                    });
                    let mut rest = Vec::with_capacity(keep.len());
                    for s in keep {
                        if total > limit && deletable(&s) {
                            total -= s.meta.bytes;
                            old.push(s);
                        } else {
                            rest.push(s);
                        }
                    }
                    if total > limit {
                        tracing::warn!(
                            total,
                            limit,
                            "retention: segments exceed retention_bytes but the rest still has data in the WAL"
                        );
                    }
                    keep = rest;
                    keep.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
                }
            }
            st.segments = keep;
            self.metrics.segments.set(st.segments.len() as i64);
            old
        };
        for s in &expired {
            tracing::info!(segment = %s.meta.id, bytes = s.meta.bytes, "retention: deleting segment");
            self.metrics.segment_bytes.dec_by(s.meta.bytes as i64);
        }
        self.metrics.retention_deleted_segments.inc_by(expired.len() as u64);
        let n = expired.len();
        self.bury(expired);
        Ok(n)
    }

    /// Queues segments already out of the catalog for deletion, and deletes
    /// every queued one no query snapshot holds any more. A snapshot taken
    /// before the segment left the catalog may still read its files; once
    /// only the queue holds it, nobody can get it again.
    fn bury(&self, segments: Vec<Arc<Segment>>) {
        let mut g = self.graveyard.lock();
        g.extend(segments);
        let root = self.segments_dir();
        g.retain(|s| {
            if Arc::strong_count(s) > 1 {
                return true;
            }
            if let Some(r) = &self.remote {
                if let Err(e) = r.delete(&s.meta.id) {
                    // Keep it queued: deleting the local copy alone would
                    // bring the segment back at the next start.
                    tracing::warn!(segment = %s.meta.id, error = %e, "cannot delete segment from the object store");
                    return true;
                }
            }
            if let Err(e) = remove_segment_dir(&root, s.dir()) {
                // A compaction input is dropped at the next start through
                // its replacement's `replaces`; an expired segment is
                // found expired again.
                tracing::warn!(segment = %s.meta.id, error = %e, "cannot delete segment directory");
            }
            false
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.read();
        Snapshot { segments: st.segments.clone(), flushing: st.flushing.clone() }
    }

    /// Every span and log of a trace, from the head, in-flight flushes and
    /// the segments whose trace-ID index lists it. Spans by start time,
    /// logs by time.
    pub fn get_trace(&self, id: &TraceId) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        self.read_trace(id, true)
    }

    /// The spans of a trace without its logs (what a search summary needs):
    /// segments' log rows are not read. `None` when no span is stored.
    pub fn get_trace_spans(&self, id: &TraceId) -> Result<Option<Vec<Span>>> {
        Ok(self.read_trace(id, false)?.map(|x| x.0).filter(|s| !s.is_empty()))
    }

    fn read_trace(&self, id: &TraceId, with_logs: bool) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        // The head and the catalog are read under one catalog read lock;
        // `flush` cuts and publishes under the write lock, so every record
        // is seen exactly once (see `flush`).
        let (head, snap) = {
            let st = self.state.read();
            let snap = Snapshot { segments: st.segments.clone(), flushing: st.flushing.clone() };
            (self.head.get(id), snap)
        };
        let (mut spans, mut logs) = head.unwrap_or_default();
        for f in &snap.flushing {
            if let Ok(i) = f.traces.binary_search_by(|t| t.0.cmp(id)) {
                spans.extend(f.traces[i].1.spans.iter().cloned());
                logs.extend(f.traces[i].1.logs.iter().cloned());
            }
        }
        for seg in &snap.segments {
            if let Some((s, l)) = seg.lookup(id, with_logs)? {
                spans.extend(s);
                logs.extend(l);
            }
        }
        if spans.is_empty() && logs.is_empty() {
            return Ok(None);
        }
        spans.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
        logs.sort_by_key(|l| l.effective_time());
        Ok(Some((spans, logs)))
    }

    /// Calls `f` with every span held in memory: the head and in-flight
    /// flushes (for listings that add the segments' metadata to it).
    pub fn for_each_memory_span(&self, mut f: impl FnMut(&Span)) {
        self.head.for_each(|_, t| t.spans.iter().for_each(&mut f));
        for fl in &self.snapshot().flushing {
            for (_, t) in &fl.traces {
                t.spans.iter().for_each(&mut f);
            }
        }
    }

    /// Trace IDs with a span matching `f`, latest matching span first.
    pub fn search_traces(&self, f: &SpanFilter, limit: usize) -> Result<Vec<TraceId>> {
        let mut best: HashMap<TraceId, u64> = HashMap::new();
        let mut consider = |id: TraceId, t: u64| {
            let e = best.entry(id).or_insert(t);
            *e = (*e).max(t);
        };
        let scan = |id: &TraceId, t: &TraceEntry, consider: &mut dyn FnMut(TraceId, u64)| {
            if let Some(m) = t.spans.iter().filter(|s| f.matches(s)).map(|s| s.start_time_unix_nano).max() {
                consider(*id, m);
            }
        };
        self.head.for_each(|id, t| scan(id, t, &mut consider));
        // The catalog is read after the head: a trace cut from the head
        // meanwhile is then seen in `flushing` or a segment (results are
        // keyed by trace, so seeing it twice is harmless), never in neither.
        let snap = self.snapshot();
        for fl in &snap.flushing {
            for (id, t) in &fl.traces {
                scan(id, t, &mut consider);
            }
        }
        // Newest segments first; stop once `limit` traces are known that
        // are newer than anything an older segment holds (a trace ranks by
        // its newest matching span, which lies within its segment's time
        // range), so a search usually reads one or two segments.
        let mut segs: Vec<&Arc<Segment>> =
            snap.segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)).collect();
        segs.sort_by_key(|s| std::cmp::Reverse(s.meta.max_time_unix_nano));
        for seg in segs {
            if kth_newest(best.values().copied(), limit).is_some_and(|k| seg.meta.max_time_unix_nano < k) {
                break;
            }
            for (id, t) in seg.search_spans(f, limit)? {
                let e = best.entry(id).or_insert(t);
                *e = (*e).max(t);
            }
        }
        let mut v: Vec<_> = best.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        Ok(v.into_iter().map(|x| x.0).collect())
    }

    /// Log records matching `f`, latest first.
    pub fn search_logs(&self, f: &LogFilter, limit: usize) -> Result<Vec<LogRecord>> {
        let snap = self.snapshot();
        let mut an = analyzer();
        let mut out: Vec<LogRecord> = Vec::new();
        // Keep at most ~2x limit candidates while scanning memory, so a
        // broad query over a large head stays bounded.
        let bound = |out: &mut Vec<LogRecord>| {
            if out.len() > limit.saturating_mul(2).max(1024) {
                out.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
                out.truncate(limit);
            }
        };
        let mut scan = |t: &TraceEntry, out: &mut Vec<LogRecord>| {
            out.extend(t.logs.iter().filter(|l| f.matches(l, &mut an)).cloned());
            bound(out);
        };
        match &f.trace_id {
            Some(id) => {
                if let Some((_, logs)) = self.head.get(id) {
                    let mut a = analyzer();
                    out.extend(logs.into_iter().filter(|l| f.matches(l, &mut a)));
                }
            }
            None => self.head.for_each(|_, t| scan(t, &mut out)),
        }
        for fl in &snap.flushing {
            for (_, t) in &fl.traces {
                scan(t, &mut out);
            }
        }
        let segs = snap.segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns));
        if f.trace_id.is_some() {
            for seg in segs {
                out.extend(seg.search_logs(f, limit)?);
            }
        } else {
            // The newest `limit` matches over all segments are chosen from
            // the indexes first (newest segments first, stopping as trace
            // search does); only their rows are then read.
            let mut segs: Vec<&Arc<Segment>> = segs.collect();
            segs.sort_by_key(|s| std::cmp::Reverse(s.meta.max_time_unix_nano));
            let mut picked: Vec<(u64, usize, usize)> = Vec::new(); // (time, segment, row)
            for (i, seg) in segs.iter().enumerate() {
                let times = out.iter().map(LogRecord::effective_time).chain(picked.iter().map(|p| p.0));
                if kth_newest(times, limit).is_some_and(|k| seg.meta.max_time_unix_nano < k) {
                    break;
                }
                picked.extend(seg.search_log_rows(f, limit)?.into_iter().map(|(t, r)| (t, i, r)));
                picked.sort_unstable_by(|a, b| b.cmp(a));
                picked.truncate(limit);
            }
            let mut by_segment: HashMap<usize, Vec<std::ops::Range<usize>>> = HashMap::new();
            for (_, i, r) in picked {
                by_segment.entry(i).or_default().push(r..r + 1);
            }
            for (i, ranges) in by_segment {
                out.extend(segs[i].read_logs(ranges)?);
            }
        }
        out.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
        out.truncate(limit);
        Ok(out)
    }

    /// Counts of logs matching `f` per `step`-wide bucket (keyed by bucket
    /// start, a multiple of `step`).
    pub fn log_histogram(&self, f: &LogFilter, _start: u64, step: u64) -> Result<HashMap<u64, u64>> {
        let step = step.max(1);
        let snap = self.snapshot();
        let mut an = analyzer();
        let mut counts: HashMap<u64, u64> = HashMap::new();
        let mut scan = |t: &TraceEntry| {
            for l in t.logs.iter().filter(|l| f.matches(l, &mut an)) {
                let ts = l.effective_time();
                *counts.entry(ts - ts % step).or_insert(0) += 1;
            }
        };
        self.head.for_each(|_, t| scan(t));
        for fl in &snap.flushing {
            for (_, t) in &fl.traces {
                scan(t);
            }
        }
        for seg in snap.segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
            let c = if f.trace_id.is_some() {
                let mut c = HashMap::new();
                for l in seg.search_logs(f, usize::MAX)? {
                    let ts = l.effective_time();
                    *c.entry(ts - ts % step).or_insert(0) += 1;
                }
                c
            } else {
                seg.count_logs(f, step)?
            };
            for (k, v) in c {
                *counts.entry(k).or_insert(0) += v;
            }
        }
        Ok(counts)
    }

    /// Rollups covering `[start, end]`: those stored with segments, plus
    /// one computed now from the head and in-flight flushes.
    pub fn rollups(&self, start: Option<u64>, end: Option<u64>) -> Vec<Rollup> {
        let snap = self.snapshot();
        let mut out: Vec<Rollup> =
            snap.segments.iter().filter(|s| s.overlaps(start, end)).map(|s| s.rollup.clone()).collect();
        let mut b = RollupBuilder::default();
        self.head.for_each(|_, t| b.add_trace(&t.spans));
        for fl in &snap.flushing {
            for (_, t) in &fl.traces {
                b.add_trace(&t.spans);
            }
        }
        out.push(b.build());
        out
    }
}

/// The `k`-th largest of `values` (`None` when there are fewer than `k`).
fn kth_newest(values: impl Iterator<Item = u64>, k: usize) -> Option<u64> {
    let mut v: Vec<u64> = values.collect();
    if k == 0 || v.len() < k {
        return None;
    }
    let (_, kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    Some(*kth)
}

/// Deletes a segment directory: renamed to `tmp-del-*` first (one atomic
/// step, and `tmp-*` leftovers are removed at start), so a half-deleted
/// segment never looks like a segment.
fn remove_segment_dir(root: &Path, dir: &Path) -> Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let tmp = root.join(format!("tmp-del-{name}"));
    fs::rename(dir, &tmp)?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

#[cfg(test)]
mod s3_tests;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

#[cfg(test)]
mod tests {
    use super::*;
    pub(crate) use crate::testsuite::test_config;
    use crate::testsuite::{append_log_of, append_spans_of, spans_of_trace};

    pub(crate) async fn append(s: &Arc<Storage>, trace: u8, spans: u64) {
        append_spans_of(s, trace, 0, spans).await;
    }

    /// A trace-by-ID lookup reads only the segments whose trace-ID index
    /// lists the trace, whatever the number of segments.
    #[tokio::test]
    async fn lookup_reads_only_segments_holding_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        for t in 1..=6u8 {
            append(&s, t, 3).await;
            if t == 3 {
                // Trace 3 gets a second part in a later segment.
                s.flush(true).unwrap();
                append(&s, 3, 2).await;
            }
            s.flush(true).unwrap();
        }
        assert_eq!(s.snapshot().segments.len(), 7);
        let reads = |s: &Storage| s.metrics.segment_reads.get();
        let before = reads(&s);
        let (spans, logs) = s.get_trace(&TraceId([5; 16])).unwrap().unwrap();
        assert_eq!((spans.len(), logs.len()), (3, 0));
        assert_eq!(reads(&s) - before, 1, "one segment holds trace 5");
        let before = reads(&s);
        let (spans, _) = s.get_trace(&TraceId([3; 16])).unwrap().unwrap();
        assert_eq!(spans.len(), 5);
        assert_eq!(reads(&s) - before, 2, "trace 3 is in two segments");
        let before = reads(&s);
        assert!(s.get_trace(&TraceId([9; 16])).unwrap().is_none());
        assert_eq!(reads(&s) - before, 0, "an unknown trace reads nothing");
    }

    /// Trace search visits segments newest first and stops early, yet
    /// returns exactly the newest matching traces.
    #[tokio::test]
    async fn search_returns_the_newest_traces_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        for t in 1..=6u8 {
            // Trace t's spans start at 1000 + 100 t + i: newer segments hold newer traces.
            s.append_spans(spans_of_trace(t, u64::from(t) * 100, 3)).await.unwrap();
            s.flush(true).unwrap();
        }
        let ids = |v: Vec<TraceId>| v.into_iter().map(|t| t.0[0]).collect::<Vec<u8>>();
        assert_eq!(ids(s.search_traces(&SpanFilter::default(), 2).unwrap()), vec![6, 5]);
        assert_eq!(ids(s.search_traces(&SpanFilter::default(), 10).unwrap()), vec![6, 5, 4, 3, 2, 1]);
        let oldest = SpanFilter { operation: Some("op101".into()), ..Default::default() };
        assert_eq!(ids(s.search_traces(&oldest, 2).unwrap()), vec![1]);
        // A trace in the head that is newer than every segment.
        s.append_spans(spans_of_trace(7, 700, 1)).await.unwrap();
        assert_eq!(ids(s.search_traces(&SpanFilter::default(), 3).unwrap()), vec![7, 6, 5]);
    }

    /// Replay after a crash restores what is only in the WAL and skips what
    /// segments hold, including a trace that is partly in both.
    #[tokio::test]
    async fn replay_skips_exactly_what_segments_hold() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(dir.path(), test_config()).unwrap();
            s.replay().unwrap();
            append(&s, 1, 2).await;
            append(&s, 2, 2).await;
            s.flush(true).unwrap();
            append(&s, 2, 3).await; // trace 2: 2 spans in a segment, 3 only in the WAL
            append(&s, 3, 1).await;
            // Dropped without a final flush: a crash, as far as disk goes.
        }
        std::thread::sleep(Duration::from_millis(100));
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        let n = |t: u8| s.get_trace(&TraceId([t; 16])).unwrap().map(|x| x.0.len()).unwrap_or(0);
        assert_eq!((n(1), n(2), n(3)), (2, 5, 1));
        s.flush(true).unwrap();
        assert_eq!((n(1), n(2), n(3)), (2, 5, 1));
    }

    pub(crate) async fn append_log(s: &Arc<Storage>, trace: u8, body: &str) {
        append_log_of(s, trace, body).await;
    }

    /// Segment search maps matching spans back to their traces, also when
    /// traces with only logs sit between them in the segment.
    #[tokio::test]
    async fn segment_search_finds_the_right_traces() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        append(&s, 1, 3).await;
        append_log(&s, 2, "only a log here").await; // trace 2: logs only
        append(&s, 3, 2).await;
        append_log(&s, 0, "no trace context, disk full").await;
        append_log(&s, 3, "disk full while writing").await;
        s.flush(true).unwrap();
        assert_eq!(s.head().trace_count(), 0);
        let find = |f: SpanFilter| s.search_traces(&f, 10).unwrap();
        let op = |name: &str| SpanFilter { operation: Some(name.into()), ..Default::default() };
        assert_eq!(find(op("op2")), vec![TraceId([1; 16])]);
        let mut both = find(op("op1"));
        both.sort();
        assert_eq!(both, vec![TraceId([1; 16]), TraceId([3; 16])]);
        let slow = SpanFilter { min_duration_ns: Some(1_000), start_ns: Some(1_001), ..Default::default() };
        let mut v = find(slow);
        v.sort();
        assert_eq!(v, vec![TraceId([1; 16]), TraceId([3; 16])]);
        assert!(find(SpanFilter { min_duration_ns: Some(1_001), ..Default::default() }).is_empty());
        let words = |q: &str| {
            let mut w = Vec::new();
            filter::tokenize(&mut analyzer(), q, &mut w);
            w
        };
        let logs = s.search_logs(&LogFilter { words: words("DISK full"), ..Default::default() }, 10).unwrap();
        assert_eq!(logs.len(), 2);
        let logs = s
            .search_logs(
                &LogFilter { words: words("disk"), trace_id: Some(TraceId([3; 16])), ..Default::default() },
                10,
            )
            .unwrap();
        assert_eq!(logs.len(), 1);
        let all = s.search_logs(&LogFilter { min_severity: Some(17), ..Default::default() }, 10).unwrap();
        assert_eq!(all.len(), 3);
    }

    /// A data directory whose WAL was written by a build that stored raw
    /// OTLP requests is refused at start, with the way to migrate.
    #[test]
    fn an_old_format_wal_is_refused_with_the_migration_steps() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        fs::create_dir_all(&wal_dir).unwrap();
        // Kind 1: a protobuf ExportTraceServiceRequest (here an empty one).
        fs::write(wal_dir.join(format!("{:020}.wal", 0)), wal::tests::frame(1, &[])).unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        let e = s.replay().unwrap_err().to_string();
        assert!(e.contains("older Skein build"), "{e}");
        assert!(e.contains("start the previous Skein build on this data directory, stop it with SIGTERM"), "{e}");
        assert!(e.contains(&format!("delete the WAL directory {}", wal_dir.display())), "{e}");
        assert!(!s.is_ready());
    }

    #[test]
    fn a_data_dir_is_used_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Storage::open(dir.path(), test_config()).unwrap();
        let e = Storage::open(dir.path(), test_config()).unwrap_err().to_string();
        assert!(e.contains("in use by another Skein process"), "{e}");
        drop(first);
        Storage::open(dir.path(), test_config()).unwrap();
    }

    #[test]
    fn conflicting_settings_are_explained() {
        let mut c = test_config();
        c.head.idle_timeout = Duration::from_secs(60);
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("idle_timeout"), "{e}");
    }

    fn compact_config(min_inputs: usize, max_inputs: usize) -> StorageConfig {
        let mut c = test_config();
        c.compaction.min_inputs = min_inputs;
        c.compaction.max_inputs = max_inputs;
        c
    }

    async fn append_from(s: &Arc<Storage>, trace: u8, first: u64, spans: u64) {
        append_spans_of(s, trace, first, spans).await;
    }

    /// What each trace should hold: span IDs and log bodies.
    type Expected = HashMap<u8, (Vec<u64>, Vec<String>)>;

    /// Every expected span and log comes back exactly once, through
    /// `get_trace`, trace search and log search.
    fn check_exactly_once(s: &Storage, want: &Expected) {
        for t in 1..=8u8 {
            let got = s.get_trace(&TraceId([t; 16])).unwrap();
            match want.get(&t) {
                None => assert!(got.is_none(), "trace {t} should not exist"),
                Some((spans, logs)) => {
                    let (gs, gl) = got.unwrap_or_default();
                    let mut ids: Vec<u64> = gs.iter().map(|x| u64::from_be_bytes(x.span_id.0)).collect();
                    ids.sort_unstable();
                    let mut w = spans.clone();
                    w.sort_unstable();
                    assert_eq!(ids, w, "spans of trace {t}");
                    let mut bodies: Vec<String> = gl.iter().map(|l| format!("{:?}", l.body)).collect();
                    bodies.sort();
                    let mut w: Vec<String> = logs
                        .iter()
                        .map(|b| format!("{:?}", crate::model::AttrValue::Str(b.clone())))
                        .collect();
                    w.sort();
                    assert_eq!(bodies, w, "logs of trace {t}");
                    let by_trace = s
                        .search_logs(
                            &LogFilter { trace_id: Some(TraceId([t; 16])), ..Default::default() },
                            1000,
                        )
                        .unwrap();
                    assert_eq!(by_trace.len(), logs.len(), "log search by trace {t}");
                }
            }
        }
        let mut found = s.search_traces(&SpanFilter::default(), 100).unwrap();
        found.sort();
        let mut w: Vec<TraceId> =
            want.iter().filter(|(_, v)| !v.0.is_empty()).map(|(t, _)| TraceId([*t; 16])).collect();
        w.sort();
        assert_eq!(found, w, "trace search");
        let all = s.search_logs(&LogFilter { min_severity: Some(17), ..Default::default() }, 1000).unwrap();
        assert_eq!(all.len(), want.values().map(|v| v.1.len()).sum::<usize>(), "log search");
    }

    /// One step of the property test: an append to a trace, then maybe a
    /// flush.
    #[derive(Debug, Clone)]
    struct Step {
        trace: u8,
        spans: u64,
        log: bool,
        flush: bool,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        (1..=8u8, 0..4u64, any::<bool>(), proptest::bool::weighted(0.3))
            .prop_map(|(trace, spans, log, flush)| Step { trace, spans, log, flush })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]

        /// Compaction keeps every span and log exactly once, also across a
        /// crash and WAL replay (which must skip exactly what the merged
        /// segment holds).
        #[test]
        fn compaction_keeps_everything_exactly_once(
            steps in proptest::collection::vec(step(), 1..40),
            max_inputs in 2..5usize,
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let mut want: Expected = HashMap::new();
                {
                    let s = Storage::open(dir.path(), compact_config(2, max_inputs)).unwrap();
                    s.replay().unwrap();
                    for (k, st) in steps.iter().enumerate() {
                        let e = want.entry(st.trace).or_default();
                        if st.spans > 0 || !st.log {
                            let first = e.0.len() as u64;
                            let n = st.spans.max(1);
                            append_from(&s, st.trace, first, n).await;
                            e.0.extend(first + 1..=first + n);
                        }
                        if st.log {
                            let body = format!("log {k} of trace {}", st.trace);
                            append_log(&s, st.trace, &body).await;
                            e.1.push(body);
                        }
                        if st.flush {
                            s.flush(true).unwrap();
                        }
                    }
                    let before = s.snapshot().segments.len();
                    let mut rounds = 0;
                    while s.compact().unwrap().inputs > 0 {
                        rounds += 1;
                        check_exactly_once(&s, &want);
                    }
                    let after = s.snapshot().segments.len();
                    assert!(after <= 1, "{before} segments compacted into {after} in {rounds} rounds");
                    assert!(before < 2 || rounds > 0);
                    check_exactly_once(&s, &want);
                    // Dropped without flushing what is left in the head: a crash.
                }
                std::thread::sleep(Duration::from_millis(50));
                let s = Storage::open(dir.path(), compact_config(2, max_inputs)).unwrap();
                s.replay().unwrap();
                check_exactly_once(&s, &want);
                s.flush(true).unwrap();
                s.compact().unwrap();
                check_exactly_once(&s, &want);
            });
        }
    }

    /// A flush that fails puts its traces back with both WAL positions, so
    /// neither WAL reclamation nor a later flush forgets any record. Before
    /// the fix, a trace with only logs (and the bucket of logs without trace
    /// context) came back with `min_pos = max_pos`, so reclamation deleted
    /// WAL records whose logs were only in memory (lost at a crash); a trace
    /// with only spans lost `max_pos`, so replay duplicated its newer spans.
    #[tokio::test]
    async fn failed_flush_then_reclaim_then_crash_keeps_every_record_once() {
        // Logs only in memory after the failed flush, then a crash.
        let dir = tempfile::tempdir().unwrap();
        let mut want: Expected = HashMap::new();
        {
            let s = Storage::open(dir.path(), retention_config()).unwrap();
            s.replay().unwrap();
            append_log(&s, 2, "first log of trace 2").await;
            append_log(&s, 0, "a log without trace context").await;
            append(&s, 1, 2).await;
            append_log(&s, 2, "second log of trace 2").await;
            append_log(&s, 0, "another log without trace context").await;
            want.insert(1, (vec![1, 2], vec![]));
            want.insert(2, (vec![], vec!["first log of trace 2".into(), "second log of trace 2".into()]));
            // Counted by `check_exactly_once`'s log search only.
            want.insert(0, (vec![], vec!["a log without trace context".into(), "another log without trace context".into()]));
            s.fail_next_flush.store(true, Ordering::SeqCst);
            assert!(s.flush(true).is_err());
            check_exactly_once(&s, &want);
            // Cuts nothing (nothing is idle yet); reclaims the WAL.
            s.flush(false).unwrap();
            check_exactly_once(&s, &want);
            // Dropped without flushing: a crash.
        }
        std::thread::sleep(Duration::from_millis(50));
        let s = Storage::open(dir.path(), retention_config()).unwrap();
        s.replay().unwrap();
        check_exactly_once(&s, &want);
        let bodies = |s: &Storage| {
            let mut v: Vec<String> = s
                .search_logs(&LogFilter { min_severity: Some(17), ..Default::default() }, 100)
                .unwrap()
                .into_iter()
                .map(|l| format!("{:?}", l.body))
                .collect();
            v.sort();
            v
        };
        assert_eq!(bodies(&s).len(), 4, "{:?}", bodies(&s));
        drop(s);

        // Spans only: the failed flush, then a good one, then a crash.
        let dir = tempfile::tempdir().unwrap();
        let mut want: Expected = HashMap::new();
        {
            let s = Storage::open(dir.path(), retention_config()).unwrap();
            s.replay().unwrap();
            append_from(&s, 3, 0, 2).await;
            append(&s, 1, 1).await;
            // The last record: it stays in the WAL file being written.
            append_from(&s, 3, 2, 2).await;
            want.insert(1, (vec![1], vec![]));
            want.insert(3, (vec![1, 2, 3, 4], vec![]));
            s.fail_next_flush.store(true, Ordering::SeqCst);
            assert!(s.flush(true).is_err());
            s.flush(false).unwrap();
            check_exactly_once(&s, &want);
            s.flush(true).unwrap();
            check_exactly_once(&s, &want);
        }
        std::thread::sleep(Duration::from_millis(50));
        let s = Storage::open(dir.path(), retention_config()).unwrap();
        s.replay().unwrap();
        check_exactly_once(&s, &want);
        assert_eq!(bodies(&s).len(), 0);
    }

    /// A crash after the compaction output is in place but before the
    /// inputs are deleted: on restart the output replaces the inputs.
    #[tokio::test]
    async fn crash_before_inputs_are_deleted_keeps_data_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut input_dirs = Vec::new();
        {
            let s = Storage::open(dir.path(), compact_config(2, 8)).unwrap();
            s.replay().unwrap();
            for t in 1..=3u8 {
                append(&s, t, 2).await;
                append_log(&s, t, "hello").await;
                s.flush(true).unwrap();
            }
            append_from(&s, 1, 2, 3).await; // trace 1: 3 more spans, only in the WAL
                                            // A query snapshot holding the inputs delays their deletion,
                                            // which is the state a crash right after the swap leaves.
            let snap = s.snapshot();
            input_dirs.extend(snap.segments.iter().map(|x| x.dir().to_path_buf()));
            let st = s.compact().unwrap();
            assert_eq!(st.inputs, 3);
            assert_eq!(s.snapshot().segments.len(), 1);
            assert!(input_dirs.iter().all(|d| d.exists()), "inputs still on disk");
            assert_eq!(s.get_trace(&TraceId([1; 16])).unwrap().unwrap().0.len(), 5);
            assert_eq!(s.metrics.compactions.get(), 1);
        }
        std::thread::sleep(Duration::from_millis(100));
        let s = Storage::open(dir.path(), compact_config(2, 8)).unwrap();
        assert_eq!(s.snapshot().segments.len(), 1);
        assert!(input_dirs.iter().all(|d| !d.exists()), "replaced inputs deleted at open");
        s.replay().unwrap();
        let n = |t: u8| s.get_trace(&TraceId([t; 16])).unwrap().map(|x| (x.0.len(), x.1.len()));
        assert_eq!((n(1), n(2), n(3)), (Some((5, 1)), Some((2, 1)), Some((2, 1))));
        // Without the queued deletion: inputs go as soon as nobody reads them.
        s.flush(true).unwrap();
        append(&s, 4, 1).await;
        s.flush(true).unwrap();
        let before: Vec<PathBuf> = s.snapshot().segments.iter().map(|x| x.dir().to_path_buf()).collect();
        assert_eq!(s.compact().unwrap().inputs, 3);
        assert!(before.iter().all(|d| !d.exists()));
        assert_eq!(n(1), Some((5, 1)));
    }

    /// Rewrites a segment's creation time, as if it had been received long
    /// ago.
    fn age_segment(dir: &Path, by: Duration) {
        let p = dir.join(META_FILE);
        let mut m: segment::SegmentMeta = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        m.created_unix_nano -= by.as_nanos() as u64;
        fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
    }

    pub(crate) fn retention_config() -> StorageConfig {
        let mut c = test_config();
        // A WAL file per request, so flushed data leaves the WAL.
        c.wal.max_file_bytes = 1;
        c
    }

    #[tokio::test]
    async fn retention_by_age_deletes_only_expired_segments() {
        let dir = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = {
            let s = Storage::open(dir.path(), retention_config()).unwrap();
            s.replay().unwrap();
            for t in 1..=3u8 {
                append(&s, t, 2).await;
                s.flush(true).unwrap();
            }
            s.snapshot().segments.iter().map(|x| x.dir().to_path_buf()).collect()
        };
        std::thread::sleep(Duration::from_millis(100));
        age_segment(&dirs[0], Duration::from_secs(7200)); // retention is one hour
        let s = Storage::open(dir.path(), retention_config()).unwrap();
        s.replay().unwrap();
        assert_eq!(s.enforce_retention().unwrap(), 1);
        assert!(!dirs[0].exists() && dirs[1].exists() && dirs[2].exists());
        assert!(s.get_trace(&TraceId([1; 16])).unwrap().is_none());
        assert!(s.get_trace(&TraceId([2; 16])).unwrap().is_some());
        assert_eq!(s.enforce_retention().unwrap(), 0);
        // A compaction output keeps its oldest input's age.
        let mut c = retention_config();
        c.compaction.min_inputs = 2;
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
        age_segment(&dirs[1], Duration::from_secs(3000));
        let s = Storage::open(dir.path(), c).unwrap();
        s.replay().unwrap();
        assert_eq!(s.compact().unwrap().inputs, 2);
        assert_eq!(s.enforce_retention().unwrap(), 0, "still under an hour");
        let seg = s.snapshot().segments[0].clone();
        assert!(seg.meta.created_unix_nano < now_unix_nano() - 2_900_000_000_000);
    }

    #[tokio::test]
    async fn retention_by_size_deletes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), retention_config()).unwrap();
        s.replay().unwrap();
        for t in 1..=5u8 {
            append(&s, t, 3).await;
            s.flush(true).unwrap();
        }
        let segs = s.snapshot().segments;
        let sizes: Vec<u64> = segs.iter().map(|x| x.meta.bytes).collect();
        let limit = sizes[3] + sizes[4];
        drop(s);
        drop(segs);
        std::thread::sleep(Duration::from_millis(100));
        let mut c = retention_config();
        c.retention_bytes = Some(limit);
        let s = Storage::open(dir.path(), c).unwrap();
        s.replay().unwrap();
        assert_eq!(s.enforce_retention().unwrap(), 3);
        let left = s.snapshot().segments;
        assert!(left.iter().map(|x| x.meta.bytes).sum::<u64>() <= limit);
        let alive = |t: u8| s.get_trace(&TraceId([t; 16])).unwrap().is_some();
        assert_eq!((1..=5).map(alive).collect::<Vec<_>>(), vec![false, false, false, true, true]);
        assert_eq!(s.metrics.retention_deleted_segments.get(), 3);
    }

    /// Size retention never deletes a segment whose records are still in
    /// the WAL: replay would bring them back.
    #[tokio::test]
    async fn retention_by_size_keeps_data_still_in_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config(); // one WAL file: nothing leaves it
        c.retention_bytes = Some(1);
        let s = Storage::open(dir.path(), c).unwrap();
        s.replay().unwrap();
        append(&s, 1, 3).await;
        s.flush(true).unwrap();
        assert_eq!(s.enforce_retention().unwrap(), 0);
        assert!(s.get_trace(&TraceId([1; 16])).unwrap().is_some());
    }
}
