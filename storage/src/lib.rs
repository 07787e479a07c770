//! Skein's storage: the data model, the WAL, the head of live traces,
//! segments on disk and the catalog that lists them. It knows no wire
//! format: the collector hands it validated model records.
//!
//! Durability promise: [`Storage::append_spans`] and
//! [`Storage::append_logs`] return `Ok` only once the batch is fsynced in
//! the WAL and visible to reads. Replay on start restores every such
//! batch that is not yet in a segment, and skips exactly the records that
//! are, so nothing is lost or duplicated across a crash.
//!
//! Where things are: this file holds the settings, the error type and
//! [`Storage::open`]; [`Storage`]'s operations are split by what they do:
//! `ingest.rs` (admission, append, WAL replay), `lifecycle.rs` (flush,
//! retention and the background schedule), [`compact`], `read.rs` (the read
//! API). [`catalog`] is the one owner of "head, then in-flight flushes, then
//! segments" and their lock; [`wal`] and [`batch`] are the WAL and its
//! record encoding.

#![warn(missing_docs)]
// Tests read single row ranges through the read API, which takes a list.
#![cfg_attr(test, allow(clippy::single_range_in_vec_init))]

pub mod batch;
pub mod catalog;
pub mod cluster;
pub mod cluster_compact;
// Being split into `segment/` by another change, which documents it.
pub mod codec;
pub mod compact;
pub mod filter;
pub mod head;
mod ingest;
pub mod lease;
mod lifecycle;
pub mod metrics;
// The shared data model; its JSON serialization is moving to the query crate,
// which documents what stays.
pub mod model;
pub mod quarantine;
mod read;
pub mod remote;
pub mod rollup;
pub mod segment;
pub mod state;
pub mod summary;
pub mod tail;
pub mod tenant;
pub mod wal;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::catalog::Catalog;
use crate::head::{Flushing, Head};
use crate::metrics::StorageMetrics;
use crate::segment::{Segment, SegmentConfig, META_FILE};

pub use crate::compact::{CompactStats, CompactionConfig};
pub use crate::read::{ReadCtx, ReadStats, Reader, SpanPresence};
use crate::wal::{Wal, WalConfig, WalError};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the data directory could not be read or written.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WAL failed (see [`WalError`]; includes an old-format WAL).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A segment's Parquet file could not be read or written.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Segment rows did not fit their Arrow schema.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A segment's search index failed.
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// A segment's metadata file is not valid JSON.
    #[error("metadata: {0}")]
    Json(#[from] serde_json::Error),
    /// The object store refused or failed a request.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Stored data contradicts itself (a bug or a damaged file).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Settings that cannot work, or a data directory in use.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A segment of another on-disk format than this build's
    /// [`segment::FORMAT_VERSION`]: [`Storage::open`] refuses the data
    /// directory rather than quarantine or skip the data of an upgrade.
    #[error(
        "segment {segment} ({dir}) has on-disk format {found}, but this build reads only format {}: \
         to read it, run the Skein release that wrote format {found}; to start afresh, move the \
         data directory aside (and, with object storage, empty its prefix)",
        segment::FORMAT_VERSION
    )]
    Format {
        /// The segment's ID.
        segment: String,
        /// Its local directory.
        dir: PathBuf,
        /// The format its meta.json names.
        found: u32,
    },
    /// The head is over its memory limit because flushing is behind; the
    /// client should retry later.
    #[error("ingest is over capacity (head holds {0} bytes); retry later")]
    Overloaded(usize),
    /// A read stopped because its [`ReadCtx`] was cancelled or passed its
    /// deadline (the query's caller gave up on it).
    #[error("the read was cancelled (its query's deadline passed)")]
    Cancelled,
    /// WAL replay has not finished; retry later.
    #[error("storage is not ready (WAL replay in progress)")]
    NotReady,
    /// A request named a new tenant while `tenants.max_tenants` exist
    /// ([`tenant::Tenants::get`]); not retryable.
    #[error("tenant {tenant} is new and tenants.max_tenants ({limit}) tenants exist already")]
    TooManyTenants {
        /// The tenant asked for.
        tenant: String,
        /// `tenants.max_tenants`.
        limit: usize,
    },
}

impl From<tantivy::query::QueryParserError> for Error {
    fn from(e: tantivy::query::QueryParserError) -> Self {
        Error::Config(e.to_string())
    }
}

/// The result of storage operations.
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
    /// Real memory the head may hold (allocated bytes of its records and
    /// structures, [`head::Head::memory_bytes`]); once it reaches this, a
    /// flush starts at once and cuts the least recently updated traces
    /// until the head is `max_block_bytes` under it.
    pub max_bytes: usize,
    /// A flush writes one segment per this many bytes of traces (real
    /// memory, as `max_bytes`), cut from the head one block at a time
    /// while ingest goes on, so a flush holds at most one block beside the
    /// head. Tempo's `max_block_bytes` names the same bound on a block.
    /// Default 128 MiB (with `--memory-limit`: a quarter of the head).
    pub max_block_bytes: usize,
    /// Past `max_bytes * overload_factor` ingest is refused with a retryable
    /// error until flushing catches up.
    pub overload_factor: f64,
    /// How often the flusher looks for traces to write.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Span bytes (approximate heap size) one trace may hold in the head;
    /// later spans of the trace are dropped and counted in
    /// `skein_trace_limit_dropped_spans_total` until it is flushed. The
    /// first span of a trace is always kept. Default 5 MB, Tempo's
    /// `max_bytes_per_trace`.
    pub max_bytes_per_trace: usize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            idle_timeout: Duration::from_secs(5),
            max_trace_age: Duration::from_secs(30),
            max_bytes: 512 << 20,
            max_block_bytes: 128 << 20,
            overload_factor: 1.5,
            flush_interval: Duration::from_secs(1),
            max_bytes_per_trace: 5_000_000,
        }
    }
}

/// All storage settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `[head]`.
    pub head: HeadConfig,
    /// `[wal]`.
    pub wal: WalConfig,
    /// `[segment]`.
    pub segment: SegmentConfig,
    /// Segments older than this (counted from when Skein received the data)
    /// are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// When set, the oldest segments are also deleted while all segments
    /// together take more bytes than this.
    pub retention_bytes: Option<u64>,
    /// `[compaction]`.
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
    /// A query node's read-only view of the bucket ([`cluster`]): no WAL,
    /// no head of its own; the catalog is every node's segments as
    /// [`Storage::poll_catalog`] lists them; nothing in the bucket is ever
    /// written or deleted. Needs `storage_url`.
    #[serde(skip)]
    pub mirror: bool,
    /// With `mirror`: the tenant whose segments this storage reads (`None`:
    /// the default tenant), since the tenant's part of a path comes after
    /// the node's (`nodes/{node}/tenants/{tenant}/segments/`).
    #[serde(skip)]
    pub mirror_tenant: Option<String>,
    /// Retention never runs (an ingest node of a split deployment: the
    /// bucket's retention is the compactor's job).
    #[serde(skip)]
    pub retention_disabled: bool,
}

/// Default of [`StorageConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;

impl StorageConfig {
    /// The same settings with retention `r`.
    pub fn with_retention(mut self, r: Duration) -> Self {
        self.retention = r;
        self
    }

    /// Refuses settings that cannot work or contradict each other, saying
    /// which and why.
    ///
    /// # Errors
    /// [`Error::Config`] naming the settings.
    pub fn check(&self) -> Result<()> {
        if self.head.idle_timeout > self.head.max_trace_age {
            return Err(Error::Config(format!(
                "head.idle_timeout ({:?}) is longer than head.max_trace_age ({:?}); traces would be cut by age before they go idle",
                self.head.idle_timeout, self.head.max_trace_age
            )));
        }
        if self.head.max_block_bytes == 0 {
            return Err(Error::Config("head.max_block_bytes must be larger than zero".into()));
        }
        if self.head.overload_factor < 1.0 {
            return Err(Error::Config("head.overload_factor must be at least 1.0".into()));
        }
        if self.mirror && self.storage_url.is_none() {
            return Err(Error::Config("a query node's storage needs an object store (storage_url)".into()));
        }
        if self.retention.is_zero() {
            return Err(Error::Config("retention must be longer than zero".into()));
        }
        self.compaction.check()
    }
}

/// The wall clock in Unix ns (0 before 1970).
pub fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A consistent view for one query: segments and in-flight flushes taken
/// together, so a trace moving from head to segment is seen once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The segments in the catalog, oldest first as loaded (flushes and
    /// compactions append).
    pub segments: Vec<Arc<Segment>>,
    /// Flushes being written.
    pub flushing: Vec<Arc<Flushing>>,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    /// Traces written to the new segment (0: nothing to flush).
    pub traces: usize,
    /// Their spans.
    pub spans: u64,
    /// Their log records.
    pub logs: u64,
    /// Segments written: one per block of `head.max_block_bytes`.
    pub segments: usize,
}

/// The storage engine.
#[derive(Debug)]
pub struct Storage {
    cfg: StorageConfig,
    data_dir: PathBuf,
    /// Head, in-flight flushes and segments: the only holder of their lock.
    catalog: Catalog,
    wal: OnceLock<Wal>,
    flush_lock: Mutex<()>,
    /// Woken when the head reaches `head.max_bytes`: the background flusher
    /// ([`Storage::run_maintenance`]) flushes then without waiting for its
    /// next tick.
    flush_wanted: tokio::sync::Notify,
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
    /// Damaged segments taken out of service ([`quarantine`]).
    quarantine: parking_lot::RwLock<Vec<quarantine::QuarantinedSegment>>,
    /// The storage's metrics (register them with [`StorageMetrics::register`]);
    /// shared by every tenant's storage when opened by [`tenant::Tenants`].
    pub metrics: Arc<StorageMetrics>,
    /// This storage's part of the shared gauges in `metrics`.
    gauges: crate::metrics::GaugeShares,
    /// Where appended log records are published for live tail, once a
    /// [`tenant::Tenants`] registry links this storage ([`tail`]).
    tail: OnceLock<tail::TailLink>,
    /// A query node's view of which node prefix holds each segment
    /// ([`cluster`]).
    mirror: Mutex<cluster::MirrorState>,
    /// One catalog poll at a time.
    poll_lock: Mutex<()>,
    /// Ingest nodes that did not answer the last fan-out
    /// ([`Storage::install_node_memory`]).
    node_warnings: parking_lot::RwLock<Vec<String>>,
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

    /// Opens the data directory and loads the catalog of segments (with an
    /// object store: first makes the local cache agree with it). The
    /// storage is not ready for ingest until [`Storage::replay`] has run.
    /// Blocking.
    ///
    /// # Errors
    /// [`Error::Config`] for bad settings or a data directory another
    /// process holds; [`Error::Format`] for a segment (local or in the
    /// object store) of another on-disk format; I/O and object store errors
    /// while loading (a segment that cannot be opened otherwise is
    /// quarantined when damaged, else logged and skipped).
    pub fn open(data_dir: &Path, cfg: StorageConfig) -> Result<Arc<Storage>> {
        Self::open_with_metrics(data_dir, cfg, Arc::new(StorageMetrics::default()))
    }

    /// [`Storage::open`], adding to `metrics` (shared by several storages,
    /// one per tenant: counters add up and gauges are sums).
    ///
    /// # Errors
    /// As [`Storage::open`].
    pub fn open_with_metrics(
        data_dir: &Path,
        cfg: StorageConfig,
        metrics: Arc<StorageMetrics>,
    ) -> Result<Arc<Storage>> {
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
        let remote = match &cfg.storage_url {
            Some(url) => Some(Arc::new(remote::Remote::open(url, &cfg.storage_options, metrics.clone())?)),
            None => None,
        };
        let mut head = Head::default();
        head.limit_trace_bytes(cfg.head.max_bytes_per_trace, metrics.trace_limit_dropped_spans.clone());
        let s = Storage {
            cfg,
            data_dir: data_dir.to_path_buf(),
            catalog: Catalog::with_head(head),
            wal: OnceLock::new(),
            flush_lock: Mutex::new(()),
            flush_wanted: tokio::sync::Notify::new(),
            maintenance_lock: Mutex::new(()),
            graveyard: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            _dir_lock: dir_lock,
            remote,
            quarantine: Default::default(),
            metrics,
            gauges: Default::default(),
            tail: OnceLock::new(),
            mirror: Default::default(),
            poll_lock: Mutex::new(()),
            node_warnings: Default::default(),
            #[cfg(test)]
            fail_next_flush: AtomicBool::new(false),
        };
        let segdir = s.segments_dir();
        fs::create_dir_all(&segdir)?;
        if s.cfg.mirror {
            // The bucket's listing is the catalog: the first poll loads it.
            return Ok(Arc::new(s));
        }
        if let Some(r) = &s.remote {
            s.sync_cache(r)?;
        }
        s.load_quarantine()?;
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
            if name == quarantine::QUARANTINE_DIR || !p.join(META_FILE).exists() {
                continue;
            }
            dirs.push((name.clone(), p.clone()));
            match Segment::open(&p, s.metrics.clone(), s.remote.clone()) {
                Ok(seg) => segments.push(Arc::new(seg)),
                // Not damage: the whole directory is of another release.
                Err(e @ Error::Format { .. }) => return Err(e),
                Err(e) if e.is_damage() => {
                    // What can still be read tells which answers may miss it.
                    let meta: Option<segment::SegmentMeta> =
                        fs::read(p.join(META_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
                    let index = segment::read_trace_index(&p).ok().map(Arc::new);
                    s.quarantine_dir(&p, &name, meta.as_ref(), index, &format!("cannot open: {e}"));
                }
                Err(e) => {
                    // A fault that may pass (permissions, descriptors): not
                    // damage, so the files stay where they are.
                    tracing::error!(dir = %p.display(), error = %e, "cannot open segment; skipping it for this run")
                }
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
        s.gauges.segments.set(&s.metrics.segments, segments.len() as i64);
        s.metrics.segment_bytes.inc_by(segments.iter().map(|x| x.meta.bytes as i64).sum());
        s.catalog.edit_segments(|segs| *segs = segments);
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
            if !name.starts_with("tmp-")
                && name != quarantine::QUARANTINE_DIR
                && !committed.contains(name.as_str())
            {
                tracing::info!(segment = %name, "removing a cached segment the object store does not hold");
                remove_segment_dir(&segdir, &p)?;
            }
        }
        for id in &listing.committed {
            if listing.quarantined.contains(id) {
                // Out of service, kept in the store: its record (and what
                // else is small) comes to the local quarantine directory.
                let qdir = segdir.join(quarantine::QUARANTINE_DIR).join(id);
                if segdir.join(id).exists() {
                    fs::create_dir_all(qdir.parent().unwrap_or(&segdir))?;
                    let _ = fs::remove_dir_all(&qdir);
                    fs::rename(segdir.join(id), &qdir)?;
                } else if !qdir.exists() {
                    r.download(id, &qdir, |f| f != segment::SPANS_FILE && f != segment::LOGS_FILE)?;
                }
                continue;
            }
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

    /// Whether [`Storage::replay`] has finished: ingest is accepted.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    /// The head, for its statistics (reads go through the read API).
    pub fn head(&self) -> &Head {
        self.catalog.head()
    }
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
mod rollup_proptest;
#[cfg(test)]
mod s3_tests;
#[cfg(test)]
mod search_proptest;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{self, analyzer, LogFilter, SpanFilter};
    use crate::model::TraceId;
    pub(crate) use crate::testsuite::test_config;
    use crate::testsuite::{append_log_of, append_spans_of, spans_of_trace};
    use std::collections::HashMap;

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
                append_spans_of(&s, 3, 3, 2).await;
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
            append_spans_of(&s, 2, 2, 3).await; // trace 2: 2 spans in a segment, 3 only in the WAL
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
        assert!(
            e.contains("start the previous Skein build on this data directory, stop it with SIGTERM"),
            "{e}"
        );
        assert!(e.contains(&format!("delete the WAL directory {}", wal_dir.display())), "{e}");
        assert!(!s.is_ready());
    }

    /// A data directory holding a segment of an older (or newer) on-disk
    /// format is refused at open, naming the segment, both formats and what
    /// to do; the segment stays where it is (not quarantined).
    #[tokio::test]
    async fn a_segment_of_another_format_refuses_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let s = Storage::open(dir.path(), test_config()).unwrap();
            s.replay().unwrap();
            append(&s, 1, 3).await;
            s.flush(true).unwrap();
            s.snapshot().segments[0].meta.id.clone()
        };
        let seg_dir = dir.path().join("segments").join(&id);
        let meta_path = seg_dir.join(META_FILE);
        let current = fs::read(&meta_path).unwrap();
        for found in [segment::FORMAT_VERSION - 1, segment::FORMAT_VERSION + 1] {
            // Only `format` and `id` need to parse: another format's meta
            // may have other fields.
            fs::write(&meta_path, format!(r#"{{"format": {found}, "id": "{id}", "other": 1}}"#)).unwrap();
            let Err(e) = Storage::open(dir.path(), test_config()) else { panic!("format {found} opened") };
            assert!(matches!(e, Error::Format { found: f, .. } if f == found), "{e}");
            let e = e.to_string();
            assert!(e.contains(&format!("segment {id}")), "{e}");
            assert!(e.contains(&format!("on-disk format {found}")), "{e}");
            assert!(e.contains(&format!("reads only format {}", segment::FORMAT_VERSION)), "{e}");
            assert!(e.contains("move the data directory aside"), "{e}");
            assert!(seg_dir.join(META_FILE).exists(), "not quarantined");
        }
        fs::write(&meta_path, current).unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        assert_eq!(s.snapshot().segments.len(), 1);
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

    /// One operation of the issue 11 property test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Spans `first+1 ..= first+n` of a trace (ranges overlap: copies).
        Spans {
            trace: u8,
            first: u64,
            n: u64,
        },
        /// The `k`-th span batch sent so far, sent again (a retry).
        Resend {
            k: usize,
        },
        /// One log record of a trace.
        Log {
            trace: u8,
        },
        /// A flush: of everything, or of what is over the (tiny) head limit.
        Flush {
            all: bool,
        },
        Compact,
        /// The storage closed without a final flush and opened again: WAL
        /// replay.
        Reopen,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            5 => (1..=8u8, 0..12u64, 1..5u64).prop_map(|(trace, first, n)| Op::Spans { trace, first, n }),
            1 => (0..100usize).prop_map(|k| Op::Resend { k }),
            3 => (1..=8u8).prop_map(|trace| Op::Log { trace }),
            2 => any::<bool>().prop_map(|all| Op::Flush { all }),
            1 => Just(Op::Compact),
            1 => Just(Op::Reopen),
        ]
    }

    /// A head of a few traces, flushed in blocks of one or two traces,
    /// compacting any two segments.
    fn block_config() -> StorageConfig {
        let mut c = compact_config(2, 3);
        c.head.max_bytes = 6_000;
        c.head.max_block_bytes = 2_500;
        c.head.overload_factor = 1e9;
        c
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

        /// Issue 11 item 6: random spans and logs of random traces (split
        /// across batches, batches sent again), with bounded-block flushes,
        /// compactions and close/reopen (WAL replay) at random points: every
        /// trace lookup returns every span and log exactly once.
        #[test]
        fn bounded_flushes_compaction_and_replay_keep_everything_exactly_once(
            ops in proptest::collection::vec(op(), 1..30),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let mut want: Expected = HashMap::new();
                let mut sent: Vec<(u8, u64, u64)> = Vec::new();
                let mut s = Storage::open(dir.path(), block_config()).unwrap();
                s.replay().unwrap();
                for (k, op) in ops.iter().enumerate() {
                    match *op {
                        Op::Spans { trace, first, n } => {
                            append_from(&s, trace, first, n).await;
                            let e = &mut want.entry(trace).or_default().0;
                            e.extend((first + 1..=first + n).filter(|i| !e.contains(i)).collect::<Vec<_>>());
                            sent.push((trace, first, n));
                        }
                        Op::Resend { k } => {
                            if let Some(&(trace, first, n)) = sent.get(k % sent.len().max(1)) {
                                append_from(&s, trace, first, n).await;
                            }
                        }
                        Op::Log { trace } => {
                            let body = format!("log {k} of trace {trace}");
                            append_log_of(&s, trace, &body).await;
                            want.entry(trace).or_default().1.push(body);
                        }
                        Op::Flush { all } => {
                            s.flush(all).unwrap();
                        }
                        Op::Compact => {
                            s.compact().unwrap();
                        }
                        Op::Reopen => {
                            drop(s);
                            std::thread::sleep(Duration::from_millis(50));
                            s = Storage::open(dir.path(), block_config()).unwrap();
                            s.replay().unwrap();
                        }
                    }
                }
                check_exactly_once(&s, &want);
                s.flush(true).unwrap();
                while s.compact().unwrap().inputs > 0 {}
                check_exactly_once(&s, &want);
                drop(s);
                std::thread::sleep(Duration::from_millis(50));
                let s = Storage::open(dir.path(), block_config()).unwrap();
                s.replay().unwrap();
                check_exactly_once(&s, &want);
            });
        }
    }

    /// Issue 11 item 1: a flush writes a segment per `head.max_block_bytes`
    /// of traces, and over `head.max_bytes` it cuts the least recently
    /// updated traces until the head is a block under the limit.
    #[tokio::test]
    async fn flushes_write_bounded_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config();
        c.head.overload_factor = 1e9;
        let s = Storage::open(dir.path(), c.clone()).unwrap();
        s.replay().unwrap();
        for t in 1..=8u8 {
            append(&s, t, 4).await;
        }
        let per_trace = s.head().memory_bytes() / 8;
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
        // Two traces per block; a head of five traces.
        c.head.max_block_bytes = per_trace * 2 - per_trace / 2;
        c.head.max_bytes = per_trace * 5;
        let s = Storage::open(dir.path(), c).unwrap();
        s.replay().unwrap();
        assert!(s.head().memory_bytes() >= per_trace * 7);
        let st = s.flush(false).unwrap();
        // Over the limit: cut to at most max_bytes - max_block_bytes, the
        // least recently updated first, two traces a segment.
        assert!(s.head().head_memory_bytes() <= per_trace * 5 - (per_trace * 2 - per_trace / 2));
        assert_eq!(st.segments, st.traces.div_ceil(2));
        assert_eq!(s.snapshot().segments.len(), st.segments);
        let st2 = s.flush(false).unwrap();
        assert_eq!(st2.traces, 0, "under the limit, nothing idle: nothing to flush");
        let st3 = s.flush(true).unwrap();
        assert_eq!(st.traces + st3.traces, 8);
        assert_eq!(s.head().memory_bytes(), 0);
        for t in 1..=8u8 {
            assert_eq!(s.get_trace(&TraceId([t; 16])).unwrap().unwrap().0.len(), 4);
        }
    }

    /// A batch retried after its first copy was flushed: the second flush
    /// leaves the copies out, so segment counts (services, operations) and
    /// rollups (RED, dependencies) count each span once without waiting
    /// for compaction (issue 9 review: counts went 3, 6, 9).
    #[tokio::test]
    async fn a_flush_leaves_out_copies_an_older_segment_holds() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        append(&s, 1, 3).await;
        s.flush(true).unwrap();
        for _ in 0..2 {
            append(&s, 1, 3).await; // the same three spans again
            append(&s, 2, 2).await;
            s.flush(true).unwrap();
        }
        let segs = s.snapshot().segments;
        assert_eq!(segs.len(), 3);
        assert_eq!(segs.iter().map(|g| g.meta.span_count).sum::<u64>(), 5, "3 of trace 1, 2 of trace 2");
        let per_service: u64 = segs.iter().flat_map(|g| &g.meta.services).map(|v| v.span_count).sum();
        assert_eq!(per_service, 5);
        assert_eq!(s.get_trace(&TraceId([1; 16])).unwrap().unwrap().0.len(), 3);
        // Replay after a crash does not bring the copies back either.
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        s.flush(true).unwrap();
        let total: u64 = s.snapshot().segments.iter().map(|g| g.meta.span_count).sum();
        assert_eq!(total, 5);
    }

    /// Damage in the middle of the WAL costs only the damaged record: the
    /// acknowledged records after it come back at restart, and the skip is
    /// counted (issue 10: garbage mid-file silently dropped 63 requests).
    #[tokio::test]
    async fn replay_resyncs_past_a_damaged_record_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(dir.path(), test_config()).unwrap();
            s.replay().unwrap();
            for t in 1..=5u8 {
                append(&s, t, 2).await;
            }
            // Dropped without flushing: a crash.
        }
        std::thread::sleep(Duration::from_millis(50));
        let files = wal::list_files(&dir.path().join("wal")).unwrap();
        let (start, path) = files.last().unwrap().clone();
        let mut bytes = fs::read(&path).unwrap();
        // The second record (trace 2): find its offset by replaying.
        let mut positions = Vec::new();
        wal::replay(&dir.path().join("wal"), |pos, _, _| positions.push(pos)).unwrap();
        assert_eq!(positions.len(), 5);
        let off = (positions[1] - start) as usize;
        bytes[off + 20..off + 40].fill(0xEE);
        fs::write(&path, bytes).unwrap();

        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        for t in [1u8, 3, 4, 5] {
            assert_eq!(s.get_trace(&TraceId([t; 16])).unwrap().unwrap().0.len(), 2, "trace {t}");
        }
        assert!(s.get_trace(&TraceId([2; 16])).unwrap().is_none(), "the damaged record is skipped");
        assert_eq!(s.metrics.wal_corrupt_records.get(), 1);
        assert_eq!(s.metrics.wal_corrupt_bytes.get(), positions[2] - positions[1]);
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
            want.insert(
                0,
                (
                    vec![],
                    vec!["a log without trace context".into(), "another log without trace context".into()],
                ),
            );
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

    /// Spans 1..=3 of trace `t`, every one named `name`: one export
    /// request, sent again by a retrying exporter (a different name marks
    /// which copy an answer shows).
    fn copies(t: u8, name: &str) -> Vec<crate::model::Span> {
        let mut v = spans_of_trace(t, 0, 3);
        v.iter_mut().for_each(|x| x.name = name.into());
        v
    }

    fn names(s: &Storage, t: u8) -> Vec<String> {
        let spans = s.get_trace(&TraceId([t; 16])).unwrap().unwrap_or_default().0;
        assert_eq!(spans.len(), s.get_trace_spans(&TraceId([t; 16])).unwrap().unwrap_or_default().len());
        spans.into_iter().map(|x| x.name).collect()
    }

    fn red_count(rollups: &[Arc<crate::rollup::Rollup>]) -> u64 {
        rollups.iter().flat_map(|r| &r.red).map(|b| b.count).sum()
    }

    /// Copies of a span in two segments, an in-flight flush and the head
    /// are read as one span, the first received; compaction then keeps one
    /// copy on disk and counts it once in the meta and rollups.
    #[tokio::test]
    async fn copies_in_segments_in_flight_and_head_are_one_span() {
        let all = crate::head::CutPolicy { now_ms: 0, idle_ms: 0, max_age_ms: 0, target_bytes: 0, all: true };
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), compact_config(2, 8)).unwrap();
        s.replay().unwrap();
        let first = ["first"; 3];
        s.append_spans(copies(1, "first")).await.unwrap();
        s.append_spans(copies(1, "dropped in the head")).await.unwrap();
        assert_eq!(names(&s, 1), first);
        assert_eq!(red_count(&s.rollups(None, None)), 3, "head rollup counts once");
        assert_eq!(s.metrics.duplicate_spans.get(), 3);
        s.flush(true).unwrap();
        s.append_spans(copies(1, "second segment")).await.unwrap();
        assert_eq!(names(&s, 1), first, "one in a segment, one in the head");
        s.flush(true).unwrap();
        assert_eq!(names(&s, 1), first, "two segments");
        s.append_spans(copies(1, "in flight")).await.unwrap();
        let flushing = s.catalog.cut(all).unwrap();
        s.append_spans(copies(1, "head")).await.unwrap();
        assert_eq!(names(&s, 1), first, "two segments, in flight and head");
        // The flush fails: the in-flight copy goes back, the head's is dropped.
        s.catalog.finish_flush(&flushing, None);
        assert_eq!(names(&s, 1), first);
        let mut held = Vec::new();
        s.head().with_trace(&TraceId([1; 16]), |e| held = e.spans.iter().map(|x| x.name.clone()).collect());
        assert_eq!(held, ["in flight"; 3]);
        assert_eq!(s.head().bytes(), copies(1, "in flight").iter().map(|x| x.heap_size()).sum::<usize>());
        s.flush(true).unwrap();
        assert_eq!(s.snapshot().segments.len(), 3);
        assert_eq!(names(&s, 1), first, "three segments");
        // Later flushes left out the copies the first segment holds.
        assert_eq!(s.snapshot().segments.iter().map(|g| g.meta.span_count).sum::<u64>(), 3);
        let st = s.compact().unwrap();
        assert_eq!((st.inputs, st.spans, st.duplicate_spans), (3, 3, 0));
        let segs = s.snapshot().segments;
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].meta.span_count, 3);
        assert_eq!(segs[0].meta.services.iter().map(|x| x.span_count).sum::<u64>(), 3);
        assert_eq!(red_count(&s.rollups(None, None)), 3, "compacted rollup counts once");
        assert_eq!(names(&s, 1), first, "after compaction");
    }

    /// A batch sent twice, then again after a flush, then again after
    /// that copy was flushed, with crashes between: replay neither
    /// reintroduces a copy the head dropped (its WAL position is in the
    /// segment) nor loses one, and the trace always reads as one span each.
    #[tokio::test]
    async fn a_retried_batch_is_one_copy_across_crashes_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            std::thread::sleep(Duration::from_millis(50));
            let s = Storage::open(dir.path(), compact_config(2, 8)).unwrap();
            s.replay().unwrap();
            s
        };
        {
            let s = open();
            s.append_spans(copies(1, "a")).await.unwrap();
            s.append_spans(copies(1, "b")).await.unwrap();
            // A crash: both copies only in the WAL.
        }
        {
            let s = open();
            assert_eq!(names(&s, 1), ["a"; 3]);
            assert_eq!(s.metrics.duplicate_spans.get(), 3, "replay dropped the copy");
            assert_eq!(s.head().bytes(), copies(1, "a").iter().map(|x| x.heap_size()).sum::<usize>());
            s.flush(true).unwrap();
        }
        {
            let s = open();
            assert_eq!(s.head().trace_count(), 0, "the dropped copy's record is known flushed");
            s.append_spans(copies(1, "c")).await.unwrap();
            assert_eq!(names(&s, 1), ["a"; 3]);
        }
        {
            let s = open();
            assert_eq!(s.head().trace_count(), 1, "the copy sent after the flush is replayed");
            assert_eq!(names(&s, 1), ["a"; 3]);
            s.flush(true).unwrap();
            assert_eq!(s.snapshot().segments.len(), 2);
            assert_eq!(names(&s, 1), ["a"; 3]);
        }
        {
            let s = open();
            assert_eq!(s.head().trace_count(), 0);
            // The flush left the copy out: compaction finds none.
            assert_eq!(s.compact().unwrap().duplicate_spans, 0);
            assert_eq!(names(&s, 1), ["a"; 3]);
        }
        let s = open();
        assert_eq!(s.head().trace_count(), 0);
        let segs = s.snapshot().segments;
        assert_eq!((segs.len(), segs[0].meta.span_count), (1, 3));
        assert_eq!(names(&s, 1), ["a"; 3]);
    }

    /// One step of the retry property test.
    #[derive(Debug, Clone)]
    enum RetryStep {
        /// Appends `n` new spans to trace `t`, as one batch.
        Send {
            t: u8,
            n: u64,
        },
        /// Appends again the batch sent at (index modulo batches sent).
        Resend(usize),
        Flush,
        Compact,
        /// Drops the storage without flushing and opens it again.
        Crash,
    }

    fn retry_step() -> impl proptest::strategy::Strategy<Value = RetryStep> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (1..=4u8, 1..4u64).prop_map(|(t, n)| RetryStep::Send { t, n }),
            3 => any::<usize>().prop_map(RetryStep::Resend),
            2 => Just(RetryStep::Flush),
            1 => Just(RetryStep::Compact),
            1 => Just(RetryStep::Crash),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

        /// Batches sent again at any point (in the head, after a flush,
        /// after a compaction, across crashes) are stored and answered as
        /// one copy of each span; once everything is compacted, the
        /// segment's counts and rollups count each span once.
        #[test]
        fn retried_batches_are_stored_once(steps in proptest::collection::vec(retry_step(), 1..30)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let open = || {
                    let s = Storage::open(dir.path(), compact_config(2, 8)).unwrap();
                    s.replay().unwrap();
                    s
                };
                let mut s = open();
                let mut want: Expected = HashMap::new();
                let mut sent: Vec<(u8, u64, u64)> = Vec::new();
                for st in &steps {
                    match st {
                        RetryStep::Send { t, n } => {
                            let e = want.entry(*t).or_default();
                            let first = e.0.len() as u64;
                            append_from(&s, *t, first, *n).await;
                            e.0.extend(first + 1..=first + n);
                            sent.push((*t, first, *n));
                        }
                        RetryStep::Resend(k) => {
                            if !sent.is_empty() {
                                let (t, first, n) = sent[k % sent.len()];
                                append_from(&s, t, first, n).await;
                            }
                        }
                        RetryStep::Flush => {
                            s.flush(true).unwrap();
                        }
                        RetryStep::Compact => {
                            s.compact().unwrap();
                        }
                        RetryStep::Crash => {
                            drop(s);
                            std::thread::sleep(Duration::from_millis(50));
                            s = open();
                        }
                    }
                    check_exactly_once(&s, &want);
                }
                s.flush(true).unwrap();
                while s.compact().unwrap().inputs > 0 {}
                check_exactly_once(&s, &want);
                let spans: u64 = want.values().map(|v| v.0.len() as u64).sum();
                let segs = s.snapshot().segments;
                assert_eq!(segs.iter().map(|x| x.meta.span_count).sum::<u64>(), spans);
                if segs.len() == 1 {
                    assert_eq!(red_count(&s.rollups(None, None)), spans);
                }
            });
        }
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
