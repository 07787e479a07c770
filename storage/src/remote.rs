//! Segments on object storage (S3 or another `object_store` backend).
//!
//! With a storage URL such as `s3://bucket/prefix`, the object store is the
//! home of every segment and `data_dir/segments` is a cache of it; the WAL
//! stays on local disk. Layout: `prefix/segments/<id>/<file>`, the same
//! files as a local segment directory. A segment is committed when its
//! `meta.json` exists: it is uploaded last and deleted first, so a segment
//! half uploaded or half deleted is never taken for a whole one.
//!
//! What stays local, and why: tantivy reads its index through mmap, and the
//! trace-ID index, resources and rollups are read on every query, so those
//! are downloaded when a segment is first opened and kept (the "indexes"
//! part of the cache). Parquet footers are read once per open and kept in
//! memory. Parquet data is kept locally after a flush or compaction while
//! the cache has room (`cache_bytes`, newest segments first); otherwise a
//! read fetches only the pages it needs with ranged GETs.
//!
//! The rest of the storage code is synchronous (it runs on blocking
//! threads), so requests run on a small runtime of their own and the caller
//! waits for the answer.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::StorageMetrics;
use crate::{Error, Result};

/// The object that commits a segment in the store: uploaded last, deleted
/// first, so a segment is whole exactly when it has one. It is the
/// segment's `meta.json`; the segment layout takes the name from here
/// (`crate::segment::META_FILE`) so that this module, plain object-store
/// access, depends on nothing of the segment code.
pub const COMMIT_FILE: &str = "meta.json";

/// Files copied at once by an upload or download.
const TRANSFER_CONCURRENCY: usize = 8;

/// Bytes read from a local file per chunk of an upload.
const UPLOAD_CHUNK_BYTES: usize = 256 << 10;

/// One object store holding segments under `prefix/segments/`.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    root: ObjPath,
    url: String,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    metrics: Arc<StorageMetrics>,
    /// The store this one is a view of ([`Remote::at`]): kept alive for
    /// its runtime, which this view's requests run on.
    _parent: Option<Arc<Remote>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code;
        // nothing is in flight once the last user is gone.
        if let Some(rt) = self.rt.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// What a listing of the store found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Segments whose `meta.json` exists.
    pub committed: Vec<String>,
    /// Segments with objects but no `meta.json`: an interrupted upload or
    /// deletion.
    pub incomplete: Vec<String>,
    /// Segments with a quarantine record (`crate::quarantine`): damaged,
    /// kept in the store, never loaded.
    pub quarantined: std::collections::BTreeSet<String>,
    /// Per committed segment, when its `meta.json` was stored (Unix ns, the
    /// store's clock): the instant the segment was committed. A compactor
    /// counts `compaction.deletion_delay` from it.
    pub committed_unix_nano: std::collections::HashMap<String, u64>,
}

impl Remote {
    /// Opens the store of `url`: `s3://bucket/prefix` (credentials, region
    /// and endpoint from the usual `AWS_*` variables, overridden by
    /// `options`, whose keys are those of `object_store`'s S3 builder such as
    /// `aws_endpoint` or `aws_allow_http`), or `file:///dir` (a directory
    /// used as an object store, e.g. a network mount).
    pub fn open(url: &str, options: &[(String, String)], metrics: Arc<StorageMetrics>) -> Result<Remote> {
        let bad = |why: String| Error::Config(format!("storage URL {url:?}: {why}"));
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name (expected s3://bucket/prefix)".into()));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            // An explicit http:// endpoint (a local S3 server, MinIO,
            // moto) is a choice, not an accident: allow it.
            let endpoint = options
                .iter()
                .find(|(k, _)| k == "aws_endpoint" || k == "aws_endpoint_url")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                .or_else(|| std::env::var("AWS_ENDPOINT").ok());
            if let Some(e) = &endpoint {
                b = b.with_endpoint(e.clone());
                if e.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
            }
            for (k, v) in options {
                let key = k.to_ascii_lowercase().parse().map_err(|e| bad(format!("option {k}: {e}")))?;
                b = b.with_config(key, v.clone());
            }
            (Arc::new(b.build().map_err(|e| bad(e.to_string()))?), prefix.to_string())
        } else if let Some(path) = url.strip_prefix("file://") {
            std::fs::create_dir_all(path)?;
            let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| bad(e.to_string()))?;
            (Arc::new(fs), String::new())
        } else {
            return Err(bad("expected s3://bucket/prefix or file:///path".into()));
        };
        let root = ObjPath::parse(prefix.trim_matches('/')).map_err(|e| bad(e.to_string()))?.join("segments");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skein-objstore")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(Remote {
            store,
            root,
            url: url.to_string(),
            rt: Mutex::new(Some(rt)),
            handle,
            metrics,
            _parent: None,
        })
    }

    /// The prefix the store was opened at (`root` without `segments`).
    fn base(&self) -> ObjPath {
        let parts: Vec<_> = self.root.parts().collect();
        parts[..parts.len().saturating_sub(1)].iter().cloned().collect()
    }

    /// A view of the same store whose segments live under
    /// `<prefix>/<rel...>/segments/` (one node's prefix,
    /// [`crate::layout`]), sharing this one's connection pool and runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a part that is not a valid path segment.
    pub fn at(self: &Arc<Self>, rel: &[&str]) -> Result<Arc<Remote>> {
        let mut root = self.base();
        for part in rel {
            let p = object_store::path::PathPart::parse(part)
                .map_err(|e| Error::Config(format!("object store path part {part:?}: {e}")))?;
            root = root.join(p);
        }
        let url = format!("{}/{}", self.url.trim_end_matches('/'), rel.join("/"));
        Ok(Arc::new(Remote {
            store: self.store.clone(),
            root: root.join("segments"),
            url,
            rt: Mutex::new(None),
            handle: self.handle.clone(),
            metrics: self.metrics.clone(),
            _parent: Some(self.clone()),
        }))
    }

    /// The names of the "directories" right under `<prefix>/<rel...>/` (one
    /// LIST request with a delimiter), as found, unchecked.
    ///
    /// # Errors
    /// Object-store errors.
    pub fn list_dirs(&self, rel: &[&str]) -> Result<Vec<String>> {
        let store = self.store.clone();
        let dir = rel.iter().fold(self.base(), |p, part| p.join(*part));
        self.metrics.remote_requests.inc();
        let l = self.run(async move { Ok(store.list_with_delimiter(Some(&dir)).await?) })?;
        Ok(l.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    /// The storage URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` on the store's runtime and waits for it. Works from any
    /// thread, including one of another runtime.
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = std::result::Result<T, Error>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| Error::Corrupt("object store task was dropped".into()))?
    }

    fn segment_path(&self, id: &str) -> ObjPath {
        self.root.clone().join(id)
    }

    fn file_path(&self, id: &str, file: &str) -> ObjPath {
        file.split('/').fold(self.segment_path(id), |p, part| p.join(part))
    }

    /// The tenant IDs with a directory under `<prefix>/tenants/` (one LIST
    /// request with a delimiter), as [`crate::tenant::Tenants`] lays them
    /// out; names are returned as found, unchecked.
    ///
    /// # Errors
    /// Object-store errors.
    pub fn list_tenants(&self) -> Result<Vec<String>> {
        // `root` is `<prefix>/segments`; tenants are its siblings.
        self.list_dirs(&["tenants"])
    }

    /// Segment IDs in the store, committed or not (one LIST request).
    /// Errors: object-store errors.
    pub fn list(&self) -> Result<Listing> {
        let store = self.store.clone();
        let root = self.root.clone();
        self.metrics.remote_requests.inc();
        let objects: Vec<object_store::ObjectMeta> =
            self.run(async move { Ok(store.list(Some(&root)).try_collect().await?) })?;
        let mut committed = std::collections::BTreeSet::new();
        let mut all = std::collections::BTreeSet::new();
        let mut quarantined = std::collections::BTreeSet::new();
        let mut committed_unix_nano = std::collections::HashMap::new();
        let depth = self.root.parts().count();
        for o in objects {
            let parts: Vec<String> = o.location.parts().skip(depth).map(|p| p.as_ref().to_string()).collect();
            let Some(id) = parts.first() else { continue };
            all.insert(id.clone());
            if parts.len() == 2 && parts[1] == COMMIT_FILE {
                committed.insert(id.clone());
                let t = o.last_modified.timestamp_nanos_opt().map_or(0, |t| t.max(0) as u64);
                committed_unix_nano.insert(id.clone(), t);
            }
            if parts.len() == 2 && parts[1] == crate::quarantine::RECORD_FILE {
                quarantined.insert(id.clone());
            }
        }
        let incomplete = all.difference(&committed).cloned().collect();
        Ok(Listing {
            committed: committed.into_iter().collect(),
            incomplete,
            quarantined,
            committed_unix_nano,
        })
    }

    /// Uploads every file of the segment directory `dir` as segment `id`,
    /// `meta.json` last: when this returns `Ok`, every object is stored
    /// (each upload completed), so the segment is committed in the store.
    /// On `Err` the segment may be partly uploaded without its `meta.json`
    /// ([`Listing::incomplete`]). Errors: [`Error::Corrupt`] when `dir` has
    /// no `meta.json`, I/O and object-store errors.
    #[tracing::instrument(name = "storage.upload", skip_all, fields(segment = id, files = tracing::field::Empty, bytes = tracing::field::Empty))]
    pub fn upload(&self, dir: &Path, id: &str) -> Result<()> {
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        let (meta, rest): (Vec<_>, Vec<_>) = files.into_iter().partition(|(rel, _)| rel == COMMIT_FILE);
        if meta.is_empty() {
            return Err(Error::Corrupt(format!("segment {id} has no {COMMIT_FILE}")));
        }
        let bytes: u64 =
            rest.iter().chain(&meta).map(|(_, p)| p.metadata().map(|m| m.len()).unwrap_or(0)).sum();
        let span = tracing::Span::current();
        span.record("files", (rest.len() + meta.len()) as i64);
        span.record("bytes", bytes as i64);
        for batch in [rest, meta] {
            self.transfer(
                batch
                    .into_iter()
                    .map(|(rel, p)| Transfer::Upload { from: p, to: self.file_path(id, &rel) })
                    .collect(),
            )?;
        }
        self.metrics.remote_written_bytes.inc_by(bytes);
        Ok(())
    }

    /// Downloads the files of segment `id` for which `want` holds (given
    /// the file's path within the segment, `/`-separated) into the
    /// directory `dir` (created). When this returns `Ok`, each downloaded
    /// file is fsynced (the directory entries are not). Errors: I/O and
    /// object-store errors.
    pub fn download(&self, id: &str, dir: &Path, want: impl Fn(&str) -> bool) -> Result<()> {
        let store = self.store.clone();
        let prefix = self.segment_path(id);
        self.metrics.remote_requests.inc();
        let objects: Vec<object_store::ObjectMeta> =
            self.run(async move { Ok(store.list(Some(&prefix)).try_collect().await?) })?;
        let depth = self.segment_path(id).parts().count();
        let mut jobs = Vec::new();
        for o in objects {
            let rel: Vec<String> = o.location.parts().skip(depth).map(|p| p.as_ref().to_string()).collect();
            let rel = rel.join("/");
            if rel.is_empty() || !want(&rel) {
                continue;
            }
            self.metrics.remote_read_bytes.inc_by(o.size);
            jobs.push(Transfer::Download { from: o.location, to: dir.join(&rel) });
        }
        std::fs::create_dir_all(dir)?;
        self.transfer(jobs)
    }

    /// Runs the copies `jobs`, [`TRANSFER_CONCURRENCY`] at a time, and
    /// waits for all of them; the first error ends the batch.
    fn transfer(&self, jobs: Vec<Transfer>) -> Result<()> {
        self.metrics.remote_requests.inc_by(jobs.len() as u64);
        let store = self.store.clone();
        self.run(async move {
            futures::stream::iter(jobs)
                .map(|job| job.run(store.clone()))
                .buffer_unordered(TRANSFER_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
            Ok(())
        })
    }

    /// Deletes segment `id`: `meta.json` first, so an interrupted deletion
    /// leaves an incomplete segment, never a partial one that looks whole.
    /// When this returns `Ok`, no object of the segment is left (a missing
    /// segment is not an error). Errors: object-store errors.
    pub fn delete(&self, id: &str) -> Result<()> {
        let store = self.store.clone();
        let meta = self.file_path(id, COMMIT_FILE);
        let prefix = self.segment_path(id);
        self.metrics.remote_requests.inc();
        self.run(async move {
            match store.delete(&meta).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let locations = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
            store.delete_stream(locations).try_collect::<Vec<ObjPath>>().await?;
            Ok(())
        })
    }

    /// Writes one object of a segment (a quarantine record; tests make
    /// partial segments with it). Errors: object-store errors.
    pub(crate) fn put(&self, id: &str, file: &str, data: Vec<u8>) -> Result<()> {
        let store = self.store.clone();
        let p = self.file_path(id, file);
        self.run(async move {
            store.put(&p, data.into()).await?;
            Ok(())
        })
    }

    /// The whole of one file of a segment (one GET request). Errors:
    /// object-store errors (`NotFound` for a missing file).
    pub fn get(&self, id: &str, file: &str) -> Result<Bytes> {
        let store = self.store.clone();
        let p = self.file_path(id, file);
        self.metrics.remote_requests.inc();
        let b = self.run(async move { Ok(store.get(&p).await?.bytes().await?) })?;
        self.metrics.remote_read_bytes.inc_by(b.len() as u64);
        Ok(b)
    }

    /// The store itself and the prefix the store was opened at (the shared
    /// prefix of every node): for the compactor lease ([`crate::lease`]),
    /// whose object lives beside `segments/`.
    pub fn store_and_prefix(&self) -> (Arc<dyn ObjectStore>, ObjPath) {
        (self.store.clone(), self.base())
    }

    /// The size in bytes of one file of a segment (one HEAD request).
    /// Errors: object-store errors (`NotFound` for a missing file).
    pub fn size(&self, id: &str, file: &str) -> Result<u64> {
        let store = self.store.clone();
        let p = self.file_path(id, file);
        self.metrics.remote_requests.inc();
        self.run(async move { Ok(store.head(&p).await?.size) })
    }

    /// Byte ranges of one file of a segment, fetched together; the result
    /// holds one buffer per range, in order. Errors: object-store errors.
    pub fn get_ranges(&self, id: &str, file: &str, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        let p = self.file_path(id, file);
        self.metrics.remote_requests.inc();
        self.metrics.remote_read_bytes.inc_by(ranges.iter().map(|r| r.end - r.start).sum());
        self.run(async move { Ok(store.get_ranges(&p, &ranges).await?) })
    }
}

/// Files under `dir`, as (path relative to `root` with `/`, full path).
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).map_err(|e| Error::Corrupt(e.to_string()))?;
            let rel: Vec<String> =
                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            out.push((rel.join("/"), p));
        }
    }
    Ok(())
}

/// One file copied between local disk and the store. Both directions
/// stream chunks into a buffered sink and then make the copy durable.
#[derive(Debug)]
enum Transfer {
    /// A local file to an object (multipart when large, through
    /// `object_store`'s buffered writer).
    Upload { from: PathBuf, to: ObjPath },
    /// An object to a local file (one streaming GET).
    Download { from: ObjPath, to: PathBuf },
}

impl Transfer {
    async fn run(self, store: Arc<dyn ObjectStore>) -> Result<()> {
        let (mut chunks, mut sink) = match self {
            Transfer::Upload { from, to } => {
                let f = tokio::fs::File::open(&from).await?;
                (file_chunks(f), Sink::Object(object_store::buffered::BufWriter::new(store, to)))
            }
            Transfer::Download { from, to } => {
                if let Some(parent) = to.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let chunks = store.get(&from).await?.into_stream().map_err(Error::from).boxed();
                (chunks, Sink::File(tokio::fs::File::create(&to).await?))
            }
        };
        while let Some(chunk) = chunks.try_next().await? {
            sink.write(&chunk).await?;
        }
        sink.finish().await
    }
}

/// A local file as a stream of chunks.
fn file_chunks(f: tokio::fs::File) -> BoxStream<'static, Result<Bytes>> {
    futures::stream::try_unfold(f, |mut f| async move {
        let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK_BYTES);
        let n = f.read_buf(&mut buf).await?;
        Ok::<_, Error>((n > 0).then(|| (buf.freeze(), f)))
    })
    .boxed()
}

/// Where a [`Transfer`] writes.
enum Sink {
    Object(object_store::buffered::BufWriter),
    File(tokio::fs::File),
}

impl Sink {
    async fn write(&mut self, b: &[u8]) -> Result<()> {
        match self {
            Sink::Object(w) => w.write_all(b).await?,
            Sink::File(f) => f.write_all(b).await?,
        }
        Ok(())
    }

    /// Completes the upload (the object exists once this returns), or
    /// fsyncs the downloaded file.
    async fn finish(self) -> Result<()> {
        match self {
            Sink::Object(mut w) => w.shutdown().await?,
            Sink::File(f) => f.sync_all().await?,
        }
        Ok(())
    }
}

/// A Parquet file on the object store, read through `parquet`'s
/// synchronous reader: byte ranges fetched beforehand (the pages a read
/// needs) are served from memory, anything else with a ranged GET.
pub(crate) struct RemoteFile {
    pub(crate) remote: Arc<Remote>,
    pub(crate) id: String,
    pub(crate) file: &'static str,
    pub(crate) len: u64,
    /// Fetched ranges, sorted by start.
    pub(crate) pieces: Vec<(u64, Bytes)>,
}

impl RemoteFile {
    pub(crate) fn prefetch(&mut self, mut ranges: Vec<Range<u64>>) -> Result<()> {
        ranges.sort_by_key(|r| r.start);
        // Merge ranges that touch or nearly touch: fewer, larger requests.
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(m) if r.start <= m.end + 4096 => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let got = self.remote.get_ranges(&self.id, self.file, merged.clone())?;
        self.pieces = merged.into_iter().map(|r| r.start).zip(got).collect();
        Ok(())
    }

    fn piece(&self, start: u64, len: u64) -> Option<Bytes> {
        let i = self.pieces.partition_point(|(s, _)| *s <= start).checked_sub(1)?;
        let (s, b) = &self.pieces[i];
        let off = (start - s) as usize;
        let end = off.checked_add(len as usize)?;
        (end <= b.len()).then(|| b.slice(off..end))
    }

    fn fetch(&self, start: u64, len: u64) -> parquet::errors::Result<Bytes> {
        self.remote
            .get_ranges(&self.id, self.file, std::iter::once(start..start + len).collect())
            .map(|mut v| v.pop().unwrap_or_default())
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        if let Some(i) = self.pieces.partition_point(|(s, _)| *s <= start).checked_sub(1) {
            let (s, b) = &self.pieces[i];
            if start < s + b.len() as u64 {
                return Ok(b.slice((start - s) as usize..).reader());
            }
        }
        // Not fetched beforehand: read up to 1 MiB (a page header and,
        // usually, its page).
        let len = (self.len.saturating_sub(start)).min(1 << 20);
        Ok(self.fetch(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self.piece(start, length as u64) {
            Some(b) => Ok(b),
            None => self.fetch(start, length as u64),
        }
    }
}
