//! Write-ahead log with group commit.
//!
//! Every acknowledged request is a WAL record first. One writer thread takes
//! whatever appends are waiting, writes them, and makes them durable with a
//! single `fdatasync`; only then does it apply each record (insert into the
//! head) and answer its caller. Concurrent requests therefore share an fsync,
//! and records enter the head in WAL order, which replay relies on.
//!
//! Layout: `wal/{start:020}.wal` files, `start` being the global byte offset
//! of the file's first record; a record's position is its global offset.
//! Record: `len: u32 LE | crc32(kind ‖ payload): u32 LE | kind: u8 | payload`.
//! Replay resynchronises past damage: after a record whose frame or
//! checksum does not hold, it looks for the next offset where a whole
//! record with a valid checksum starts and goes on from there, so damage in
//! the middle of a file costs only the damaged records (as PostgreSQL and
//! etcd report what they drop instead of stopping at the first bad byte).
//! Damage with no good record after it in the newest file is a torn tail (a
//! crash mid-write of records that were never acknowledged); anywhere else
//! it is corruption, reported as [`Damage`].
//!
//! The payload is one of storage's own batches ([`crate::batch`]): the
//! validated model, so replay decodes once and no wire format is involved.
//! Builds before issue 8 wrote raw OTLP requests (kinds 1 and 2); a WAL
//! holding those is refused at replay with [`WalError::OldFormat`], which
//! says how to migrate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::metrics::StorageMetrics;

const HEADER: usize = 9;

/// What a WAL record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Spans, encoded by [`crate::batch::encode_spans`].
    SpanBatch = 3,
    /// Log records, encoded by [`crate::batch::encode_logs`].
    LogBatch = 4,
}

/// Record kinds of the WAL format before issue 8: a protobuf
/// `ExportTraceServiceRequest` (1) or `ExportLogsServiceRequest` (2).
const OLD_KINDS: [u8; 2] = [1, 2];

impl RecordKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            3 => Some(RecordKind::SpanBatch),
            4 => Some(RecordKind::LogBatch),
            _ => None,
        }
    }
}

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading, writing, syncing or deleting a WAL file failed.
    #[error("WAL I/O error: {0}")]
    Io(#[from] io::Error),
    /// A record's payload does not fit the 32-bit length of the format.
    #[error("WAL record of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// The writer thread is gone (the storage is shutting down).
    #[error("WAL writer has stopped")]
    Closed,
    /// The WAL was written by a build that stored raw OTLP requests. A
    /// clean stop of that build flushes every record into segments but
    /// leaves its last WAL file in place (the file being written is never
    /// reclaimed), hence the step that removes the WAL directory.
    #[error(
        "WAL file {} holds records in the format of an older Skein build (raw OTLP requests), \
         which this build cannot read. To migrate without losing data: start the previous Skein \
         build on this data directory, stop it with SIGTERM (a clean stop flushes every WAL record \
         into segments), delete the WAL directory {}, then start this build",
        .file.display(),
        .file.parent().unwrap_or(.file).display()
    )]
    OldFormat {
        /// The first WAL file found holding an old record.
        file: PathBuf,
    },
}

/// WAL settings (`[wal]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// A WAL file is closed and a new one started past this size.
    pub max_file_bytes: u64,
    /// Upper bound on bytes written per group commit.
    pub max_batch_bytes: usize,
    /// `false` skips fsync: faster, and acknowledged data can be lost on a
    /// power failure (not on a process crash). For tests and benchmarks only.
    pub fsync: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig { max_file_bytes: 64 << 20, max_batch_bytes: 16 << 20, fsync: true }
    }
}

type Apply = Box<dyn FnOnce(u64) + Send>;

struct Append {
    kind: RecordKind,
    payload: Vec<u8>,
    apply: Apply,
    done: oneshot::Sender<Result<u64, WalError>>,
}

/// What the writer thread is asked to do.
enum Msg {
    Append(Append),
    /// Start a new file if the current one holds records, so that
    /// [`Wal::reclaim`] can delete it once they are all in segments.
    Roll,
}

/// Handle to the WAL writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::SyncSender<Msg>,
    files: Arc<Mutex<Vec<(u64, PathBuf)>>>,
    /// The position after the last durable record.
    end: Arc<AtomicU64>,
    dir: PathBuf,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

fn file_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.wal"))
}

/// The WAL files in `dir` as `(start position, path)`, oldest first; none
/// when `dir` does not exist.
pub(crate) fn list_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let start = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(s) = start {
            out.push((s, p));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A stretch of a WAL file that replay skipped because no record with a
/// valid checksum starts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The WAL file.
    pub file: PathBuf,
    /// Byte offset of the stretch in `file`.
    pub offset: u64,
    /// Length of the stretch, bytes.
    pub bytes: u64,
    /// `true` for the end of the newest file with no good record after it:
    /// a crash mid-write, whose records were never acknowledged. `false`
    /// for damage to records that were acknowledged (the middle of a file,
    /// or the end of a file a newer one follows).
    pub torn_tail: bool,
}

/// What [`replay`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The position the next record will have.
    pub next: u64,
    /// Every damaged stretch skipped, in WAL order.
    pub damaged: Vec<Damage>,
}

impl Replayed {
    /// The damaged stretches that held acknowledged records (torn tails
    /// left out).
    pub fn corrupt(&self) -> impl Iterator<Item = &Damage> {
        self.damaged.iter().filter(|d| !d.torn_tail)
    }
}

/// The record starting at `off` of `buf` if its frame fits in `buf` and its
/// checksum holds: `(kind byte, end offset)`. Kinds this build cannot read
/// are returned too (the caller decides); only the checksum and the frame
/// decide what is a record.
fn record_at(buf: &[u8], off: usize) -> Option<(u8, usize)> {
    let header = buf.get(off..off + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
    let end = (off + HEADER).checked_add(len).filter(|e| *e <= buf.len())?;
    (crc32fast::hash(&buf[off + 8..end]) == crc).then_some((header[8], end))
}

/// Whether `kind` is a kind any Skein build wrote: resynchronisation only
/// stops at those, which also skips the checksum of most garbage offsets.
fn known_kind(kind: u8) -> bool {
    RecordKind::from_u8(kind).is_some() || OLD_KINDS.contains(&kind)
}

/// The first offset at or after `from` where a record of a known kind
/// starts, or `buf.len()`. A false match needs a 32-bit checksum to hold by
/// chance.
fn resync(buf: &[u8], from: usize) -> usize {
    (from..buf.len())
        .find(|&o| buf.get(o + 8).copied().is_some_and(known_kind) && record_at(buf, o).is_some())
        .unwrap_or(buf.len())
}

/// Reads every record in `dir` in order, calling `f(position, kind, payload)`,
/// and returns the position the next record will have and the damaged
/// stretches it skipped (each also logged: file, offset, bytes). A damaged
/// record does not end replay: every undamaged record after it, in its file
/// and the following ones, is read (see the module comment).
///
/// # Errors
/// [`WalError::OldFormat`] when a record of the pre-issue-8 format is found
/// (before `f` sees any record of that file's later part), [`WalError::Io`]
/// when a file cannot be read.
pub fn replay(dir: &Path, mut f: impl FnMut(u64, RecordKind, &[u8])) -> Result<Replayed, WalError> {
    fs::create_dir_all(dir)?;
    let mut out = Replayed::default();
    let files = list_files(dir)?;
    let newest = files.last().map(|x| x.0);
    for (start, path) in files {
        let mut buf = Vec::new();
        File::open(&path)?.read_to_end(&mut buf)?;
        let (mut off, mut good_end) = (0usize, 0usize);
        while off < buf.len() {
            let record = record_at(&buf, off).filter(|(k, _)| known_kind(*k));
            let Some((kind, end)) = record else {
                let next = resync(&buf, off + 1);
                let torn_tail = next == buf.len() && Some(start) == newest;
                let d =
                    Damage { file: path.clone(), offset: off as u64, bytes: (next - off) as u64, torn_tail };
                if torn_tail {
                    tracing::warn!(file = %path.display(), offset = off, bytes = d.bytes, "WAL: torn tail (a crash mid-write; those records were never acknowledged), ignored");
                } else {
                    tracing::error!(file = %path.display(), offset = off, bytes = d.bytes, "WAL: damaged records skipped; replay goes on at the next good record");
                }
                out.damaged.push(d);
                off = next;
                continue;
            };
            if OLD_KINDS.contains(&kind) {
                return Err(WalError::OldFormat { file: path });
            }
            let kind = RecordKind::from_u8(kind).expect("known_kind");
            f(start + off as u64, kind, &buf[off + HEADER..end]);
            off = end;
            good_end = end;
        }
        out.next = out.next.max(start + good_end as u64);
    }
    Ok(out)
}

impl Wal {
    /// Starts the writer thread with a fresh file at position `next` (as
    /// returned by [`replay`]).
    pub fn start(
        dir: &Path,
        next: u64,
        cfg: WalConfig,
        metrics: Arc<StorageMetrics>,
    ) -> Result<Wal, WalError> {
        fs::create_dir_all(dir)?;
        let mut files = list_files(dir)?;
        // A leftover file starting at or after `next` held only a torn tail.
        files.retain(|(s, p)| {
            if *s >= next {
                let _ = fs::remove_file(p);
                false
            } else {
                true
            }
        });
        let path = file_path(dir, next);
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        sync_dir(dir)?;
        files.push((next, path));
        let files = Arc::new(Mutex::new(files));
        let (tx, rx) = mpsc::sync_channel::<Msg>(4096);
        let end = Arc::new(AtomicU64::new(next));
        let mut w = Writer {
            dir: dir.to_path_buf(),
            file,
            file_start: next,
            file_len: 0,
            cfg,
            files: files.clone(),
            end: end.clone(),
            metrics,
        };
        std::thread::Builder::new().name("skein-wal".into()).spawn(move || w.run(rx))?;
        Ok(Wal { tx, files, end, dir: dir.to_path_buf() })
    }

    /// Appends a record. When the returned future resolves with `Ok(pos)`,
    /// the record is on disk (fsynced) and `apply(pos)` has run on the WAL
    /// thread, in WAL order with every other record.
    pub async fn append(
        &self,
        kind: RecordKind,
        payload: Vec<u8>,
        apply: impl FnOnce(u64) + Send + 'static,
    ) -> Result<u64, WalError> {
        if payload.len() > u32::MAX as usize - 1 {
            return Err(WalError::TooLarge(payload.len()));
        }
        let (done, rx) = oneshot::channel();
        let msg = Msg::Append(Append { kind, payload, apply: Box::new(apply), done });
        // The channel is bounded; a full channel means the disk is behind.
        // Block in a blocking-safe way rather than queueing unboundedly.
        let tx = self.tx.clone();
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(msg)) => {
                tokio::task::spawn_blocking(move || tx.send(msg))
                    .await
                    .map_err(|_| WalError::Closed)?
                    .map_err(|_| WalError::Closed)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(WalError::Closed),
        }
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Deletes WAL files all of whose records are before `safe_pos`, i.e.
    /// already in segments, and returns how many. The file being written is
    /// never deleted; when every record written so far is before
    /// `safe_pos`, the writer is asked to start a new file, so the next call
    /// deletes this one too and a full disk gets its space back without
    /// waiting for the file to reach `max_file_bytes` (issue 10).
    ///
    /// # Errors
    /// A file that cannot be deleted (the files before it are deleted).
    pub fn reclaim(&self, safe_pos: u64) -> io::Result<usize> {
        let mut files = self.files.lock();
        let mut removed = 0;
        while files.len() > 1 && files[1].0 <= safe_pos {
            let (_, p) = files.remove(0);
            fs::remove_file(&p)?;
            removed += 1;
        }
        let current_start = files.last().map_or(0, |f| f.0);
        let end = self.end.load(Ordering::Acquire);
        if end > current_start && end <= safe_pos {
            // Full channel: the writer is busy with appends, which will
            // move the end past `safe_pos` anyway.
            let _ = self.tx.try_send(Msg::Roll);
        }
        Ok(removed)
    }

    /// The position of the oldest record still in the WAL.
    pub fn oldest_position(&self) -> u64 {
        self.files.lock().first().map(|f| f.0).unwrap_or(0)
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    file_start: u64,
    file_len: u64,
    cfg: WalConfig,
    files: Arc<Mutex<Vec<(u64, PathBuf)>>>,
    end: Arc<AtomicU64>,
    metrics: Arc<StorageMetrics>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut roll = false;
        while let Ok(first) = rx.recv() {
            let first = match first {
                Msg::Append(a) => a,
                Msg::Roll => {
                    self.roll();
                    continue;
                }
            };
            let mut batch = vec![first];
            let mut bytes = batch[0].payload.len();
            while bytes < self.cfg.max_batch_bytes {
                match rx.try_recv() {
                    Ok(Msg::Append(a)) => {
                        bytes += a.payload.len();
                        batch.push(a);
                    }
                    Ok(Msg::Roll) => roll = true,
                    Err(_) => break,
                }
            }
            buf.clear();
            let mut positions = Vec::with_capacity(batch.len());
            for a in &batch {
                let pos = self.file_start + self.file_len + buf.len() as u64;
                positions.push(pos);
                let mut h = crc32fast::Hasher::new();
                h.update(&[a.kind as u8]);
                h.update(&a.payload);
                buf.extend_from_slice(&(a.payload.len() as u32).to_le_bytes());
                buf.extend_from_slice(&h.finalize().to_le_bytes());
                buf.push(a.kind as u8);
                buf.extend_from_slice(&a.payload);
            }
            match self.write_durable(&buf) {
                Ok(()) => {
                    self.file_len += buf.len() as u64;
                    self.end.store(self.file_start + self.file_len, Ordering::Release);
                    self.metrics.wal_bytes.inc_by(buf.len() as u64);
                    for (a, pos) in batch.into_iter().zip(positions) {
                        (a.apply)(pos);
                        let _ = a.done.send(Ok(pos));
                    }
                    if self.file_len >= self.cfg.max_file_bytes {
                        if let Err(e) = self.rotate() {
                            tracing::error!(error = %e, "WAL: cannot start a new file");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "WAL: write failed; rejecting the batch");
                    // Cut back to the last durable length so the file stays
                    // a clean sequence of records.
                    let _ = self.file.set_len(self.file_len);
                    for a in batch {
                        let _ = a.done.send(Err(WalError::Io(io::Error::new(e.kind(), e.to_string()))));
                    }
                }
            }
            if std::mem::take(&mut roll) {
                self.roll();
            }
        }
        let _ = self.file.sync_all();
    }

    /// [`Msg::Roll`]: a new file if the current one holds records.
    fn roll(&mut self) {
        if self.file_len > 0 {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "WAL: cannot start a new file");
            }
        }
    }

    fn write_durable(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.file_len))?;
        self.file.write_all(buf)?;
        if self.cfg.fsync {
            let t = Instant::now();
            self.file.sync_data()?;
            self.metrics.wal_fsync_seconds.observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let start = self.file_start + self.file_len;
        let path = file_path(&self.dir, start);
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.file_start = start;
        self.file_len = 0;
        self.files.lock().push((start, path));
        Ok(())
    }
}

/// How long to wait between retries when the WAL channel is full.
pub const BACKPRESSURE_HINT: Duration = Duration::from_secs(1);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn metrics() -> Arc<StorageMetrics> {
        Arc::new(StorageMetrics::default())
    }

    #[tokio::test]
    async fn append_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig { max_file_bytes: 100, ..Default::default() };
        let wal = Wal::start(dir.path(), 0, cfg.clone(), metrics()).unwrap();
        let applied = Arc::new(AtomicU64::new(0));
        let mut positions = Vec::new();
        for i in 0..10u8 {
            let a = applied.clone();
            let pos = wal
                .append(RecordKind::SpanBatch, vec![i; 40], move |_| {
                    a.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            positions.push(pos);
        }
        assert_eq!(applied.load(Ordering::SeqCst), 10);
        // Files rotated past 100 bytes.
        assert!(list_files(dir.path()).unwrap().len() > 2);
        drop(wal);
        std::thread::sleep(Duration::from_millis(50));
        // Tear the last file.
        let last = list_files(dir.path()).unwrap().pop().unwrap().1;
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let mut seen = Vec::new();
        let replayed = replay(dir.path(), |pos, kind, p| {
            assert_eq!(kind, RecordKind::SpanBatch);
            seen.push((pos, p[0]));
        })
        .unwrap();
        let next = replayed.next;
        assert_eq!(replayed.damaged.len(), 1);
        assert!(replayed.damaged[0].torn_tail && replayed.damaged[0].bytes == 3);
        assert_eq!(replayed.corrupt().count(), 0);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), positions);
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        assert_eq!(next, positions[9] + 49);
        // Restart writes after the torn tail and replay stays consistent.
        let wal = Wal::start(dir.path(), next, cfg, metrics()).unwrap();
        let p = wal.append(RecordKind::LogBatch, vec![9; 5], |_| {}).await.unwrap();
        assert_eq!(p, next);
        let safe = positions[5];
        wal.reclaim(safe).unwrap();
        drop(wal);
        std::thread::sleep(Duration::from_millis(50));
        let mut after = Vec::new();
        replay(dir.path(), |pos, _, _| after.push(pos)).unwrap();
        assert!(after.contains(&positions[5]) && after.contains(&p));
        assert!(!after.contains(&positions[0]));
    }

    /// Once every record is in segments, reclaim rolls the current file and
    /// the next reclaim deletes it, whatever its size (issue 10: a 49 MiB
    /// file on a full disk was kept until it reached `max_file_bytes`).
    #[tokio::test]
    async fn reclaim_rolls_a_fully_flushed_current_file_then_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::start(dir.path(), 0, WalConfig::default(), metrics()).unwrap();
        let mut last = 0;
        for i in 0..5u8 {
            last = wal.append(RecordKind::SpanBatch, vec![i; 1000], |_| {}).await.unwrap();
        }
        let end = last + 1000 + HEADER as u64;
        // Not everything flushed: no roll, nothing deleted.
        assert_eq!(wal.reclaim(last).unwrap(), 0);
        // Everything flushed: the writer starts a new file ...
        assert_eq!(wal.reclaim(u64::MAX).unwrap(), 0);
        // (The writer publishes the new file after creating it on disk.)
        let files = eventually(|| Some(wal.files.lock().clone()).filter(|f| f.len() == 2));
        assert_eq!(files[1].0, end);
        // ... and the next reclaim deletes the old one.
        assert_eq!(wal.reclaim(u64::MAX).unwrap(), 1);
        assert_eq!(list_files(dir.path()).unwrap().iter().map(|f| f.0).collect::<Vec<_>>(), vec![end]);
        // An empty current file is not rolled again.
        assert_eq!(wal.reclaim(u64::MAX).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(list_files(dir.path()).unwrap().len(), 1);
        // Appends go on at the right position.
        assert_eq!(wal.append(RecordKind::LogBatch, vec![1], |_| {}).await.unwrap(), end);
    }

    fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..500 {
            if let Some(v) = f() {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("condition not reached in 5 s");
    }

    /// A record as the writer frames it, for tests that forge WAL files.
    pub(crate) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = crc32fast::Hasher::new();
        h.update(&[kind]);
        h.update(payload);
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    /// Writes `records` framed, `per_file` to a file, as the writer would
    /// have; returns each record's (file index, offset in file, position).
    fn forge(dir: &Path, records: &[Vec<u8>], per_file: usize) -> Vec<(usize, usize, u64)> {
        let (mut out, mut pos) = (Vec::new(), 0u64);
        for (fi, chunk) in records.chunks(per_file.max(1)).enumerate() {
            let mut buf = Vec::new();
            let start = pos;
            for r in chunk {
                out.push((fi, buf.len(), pos));
                let framed = frame(RecordKind::SpanBatch as u8, r);
                pos += framed.len() as u64;
                buf.extend_from_slice(&framed);
            }
            fs::write(file_path(dir, start), buf).unwrap();
        }
        out
    }

    #[test]
    fn garbage_in_the_middle_of_the_oldest_file_costs_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 30 + usize::from(i)]).collect();
        let at = forge(dir.path(), &records, 30);
        // Overwrite the middle of record 10 (file 0) with garbage.
        let file0 = list_files(dir.path()).unwrap()[0].1.clone();
        let mut bytes = fs::read(&file0).unwrap();
        let off = at[10].1 + 12;
        bytes[off..off + 20].fill(0xA5);
        fs::write(&file0, bytes).unwrap();

        let mut seen = Vec::new();
        let replayed = replay(dir.path(), |pos, _, p| seen.push((pos, p[0]))).unwrap();
        let want: Vec<_> = (0..70u8).filter(|i| *i != 10).map(|i| (at[usize::from(i)].2, i)).collect();
        assert_eq!(seen, want, "every undamaged record, in order, once");
        let corrupt: Vec<_> = replayed.corrupt().collect();
        assert_eq!(corrupt.len(), 1);
        assert_eq!((corrupt[0].file.clone(), corrupt[0].offset), (file0, at[10].1 as u64));
        assert_eq!(corrupt[0].bytes as usize, at[11].1 - at[10].1);
        let last = records.last().unwrap().len() + HEADER;
        assert_eq!(replayed.next, at[69].2 + last as u64);
    }

    #[test]
    fn the_end_of_an_older_file_is_damage_and_the_end_of_the_newest_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 40]).collect();
        forge(dir.path(), &records, 3);
        let files = list_files(dir.path()).unwrap();
        for (_, p) in &files {
            let mut f = OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(&[7; 11]).unwrap();
        }
        let mut seen = 0;
        let r = replay(dir.path(), |_, _, _| seen += 1).unwrap();
        assert_eq!(seen, 6);
        let kinds: Vec<_> = r.damaged.iter().map(|d| (d.bytes, d.torn_tail)).collect();
        assert_eq!(kinds, vec![(11, false), (11, true)]);
    }

    proptest::proptest! {
        /// Whatever stretch of whichever file is overwritten, replay hands
        /// out exactly the records it did not touch (plus, rarely, a
        /// touched one the garbage left intact), in order, each once.
        #[test]
        fn replay_keeps_every_undamaged_record(
            sizes in proptest::collection::vec(0usize..300, 1..60),
            per_file in 1usize..20,
            file_pick in 0usize..100,
            start_pick in 0usize..10_000,
            len in 1usize..200,
            fill in proptest::prelude::any::<u8>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let records: Vec<Vec<u8>> = sizes.iter().enumerate()
                .map(|(i, n)| { let mut v = vec![i as u8; *n]; v.extend_from_slice(&(i as u32).to_le_bytes()); v })
                .collect();
            let at = forge(dir.path(), &records, per_file);
            let files = list_files(dir.path()).unwrap();
            let fi = file_pick % files.len();
            let mut bytes = fs::read(&files[fi].1).unwrap();
            let s = start_pick % bytes.len();
            let e = (s + len).min(bytes.len());
            bytes[s..e].fill(fill);
            fs::write(&files[fi].1, &bytes).unwrap();

            let mut seen = Vec::new();
            replay(dir.path(), |pos, _, p| seen.push((pos, p.to_vec()))).unwrap();
            let mut expected_untouched = Vec::new();
            for (i, r) in records.iter().enumerate() {
                let (f, off, pos) = at[i];
                let end = off + HEADER + r.len();
                if f != fi || end <= s || off >= e {
                    expected_untouched.push((pos, r.clone()));
                }
            }
            // Seen is in WAL order, holds only real records, and every untouched one.
            proptest::prop_assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
            for (pos, p) in &seen {
                let i = at.iter().position(|a| a.2 == *pos);
                proptest::prop_assert!(i.is_some_and(|i| &records[i] == p), "record at {} is not one written", pos);
            }
            for u in &expected_untouched {
                proptest::prop_assert!(seen.contains(u), "untouched record at {} lost", u.0);
            }
        }
    }

    #[test]
    fn old_format_records_are_refused_with_the_migration_steps() {
        for old in OLD_KINDS {
            let dir = tempfile::tempdir().unwrap();
            fs::write(file_path(dir.path(), 0), frame(old, b"\x0a\x00")).unwrap();
            let e = replay(dir.path(), |_, _, _| panic!("no record is handed out")).unwrap_err();
            assert!(matches!(e, WalError::OldFormat { .. }), "{e}");
            let msg = e.to_string();
            for want in ["older Skein build", "previous Skein build", "SIGTERM", "delete the WAL directory"] {
                assert!(msg.contains(want), "{want:?} missing in: {msg}");
            }
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
    }
}
