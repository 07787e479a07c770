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
//! A torn or corrupt tail (crash mid-write) ends replay of that file.
//!
//! The payload is one of storage's own batches ([`crate::batch`]): the
//! validated model, so replay decodes once and no wire format is involved.
//! Builds before issue 8 wrote raw OTLP requests (kinds 1 and 2); a WAL
//! holding those is refused at replay with [`WalError::OldFormat`], which
//! says how to migrate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
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

/// Handle to the WAL writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::SyncSender<Append>,
    files: Arc<Mutex<Vec<(u64, PathBuf)>>>,
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

/// Reads every record in `dir` in order, calling `f(position, kind, payload)`.
/// Returns the position the next record will have. Stops reading a file at
/// its first torn or corrupt record.
///
/// # Errors
/// [`WalError::OldFormat`] when a record of the pre-issue-8 format is found
/// (before `f` sees any record of that file's later part), [`WalError::Io`]
/// when a file cannot be read.
pub fn replay(dir: &Path, mut f: impl FnMut(u64, RecordKind, &[u8])) -> Result<u64, WalError> {
    fs::create_dir_all(dir)?;
    let mut next = 0u64;
    for (start, path) in list_files(dir)? {
        let mut buf = Vec::new();
        File::open(&path)?.read_to_end(&mut buf)?;
        let mut off = 0usize;
        while off + HEADER <= buf.len() {
            let len = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(buf[off + 4..off + 8].try_into().expect("4"));
            let end = off + HEADER + len;
            if end > buf.len() || crc32fast::hash(&buf[off + 8..end]) != crc {
                tracing::warn!(file = %path.display(), offset = off, "WAL: torn or corrupt record, ignoring the rest of the file");
                break;
            }
            if OLD_KINDS.contains(&buf[off + 8]) {
                return Err(WalError::OldFormat { file: path });
            }
            let Some(kind) = RecordKind::from_u8(buf[off + 8]) else {
                tracing::warn!(file = %path.display(), offset = off, "WAL: unknown record kind");
                break;
            };
            f(start + off as u64, kind, &buf[off + HEADER..end]);
            off = end;
        }
        next = next.max(start + off as u64);
    }
    Ok(next)
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
        let (tx, rx) = mpsc::sync_channel::<Append>(4096);
        let mut w = Writer {
            dir: dir.to_path_buf(),
            file,
            file_start: next,
            file_len: 0,
            cfg,
            files: files.clone(),
            metrics,
        };
        std::thread::Builder::new().name("skein-wal".into()).spawn(move || w.run(rx))?;
        Ok(Wal { tx, files, dir: dir.to_path_buf() })
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
        let msg = Append { kind, payload, apply: Box::new(apply), done };
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
    /// already in segments. The file being written is never deleted.
    pub fn reclaim(&self, safe_pos: u64) -> io::Result<usize> {
        let mut files = self.files.lock();
        let mut removed = 0;
        while files.len() > 1 && files[1].0 <= safe_pos {
            let (_, p) = files.remove(0);
            fs::remove_file(&p)?;
            removed += 1;
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
    metrics: Arc<StorageMetrics>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Append>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].payload.len();
            while bytes < self.cfg.max_batch_bytes {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.payload.len();
                        batch.push(a);
                    }
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
        }
        let _ = self.file.sync_all();
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
        let next = replay(dir.path(), |pos, kind, p| {
            assert_eq!(kind, RecordKind::SpanBatch);
            seen.push((pos, p[0]));
        })
        .unwrap();
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
