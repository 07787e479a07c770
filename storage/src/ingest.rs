//! Ingest: admission, appending batches (durable, then visible) and WAL
//! replay at start.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::batch::{self, BatchError};
use crate::head::Head;
use crate::model::{LogRecord, Span, TraceId};
use crate::wal::{self, RecordKind, Wal};
use crate::{Error, Result, Storage};

impl Storage {
    /// Replays the WAL into the head, skipping records already in segments,
    /// then starts the WAL writer; the storage is ready for ingest once this
    /// returns `Ok`. Blocking; run it off the async runtime.
    ///
    /// # Errors
    /// [`Error::Wal`] when the WAL cannot be read or the writer cannot
    /// start, including [`wal::WalError::OldFormat`] for a WAL written by a
    /// build before issue 8 (its message says how to migrate). Damaged WAL
    /// records are skipped and replay goes on at the next good one
    /// ([`wal::replay`]): each damaged stretch is logged and counted in
    /// `skein_wal_corrupt_records_total` / `skein_wal_corrupt_bytes_total`,
    /// as is an undecodable batch inside a record whose checksum holds. A
    /// torn tail of the newest file (a crash mid-write) is cut off, so it is
    /// not taken for damage once newer files follow it.
    pub fn replay(&self) -> Result<()> {
        if self.cfg.mirror {
            // No WAL: ready after the first catalog poll.
            return Ok(());
        }
        let wal_dir = self.wal_dir();
        let oldest = wal::list_files(&wal_dir)?.first().map(|f| f.0);
        let segments = self.catalog.snapshot().segments;
        // Per trace, the last WAL position already in a segment.
        let mut flushed: HashMap<TraceId, u64> = HashMap::new();
        for seg in segments.iter().filter(|s| oldest.is_some_and(|o| s.meta.wal_max_pos >= o)) {
            for e in seg.trace_index() {
                let v = flushed.entry(e.trace_id).or_insert(e.wal_pos);
                *v = (*v).max(e.wal_pos);
            }
        }
        let head = self.catalog.head();
        let (mut spans, mut logs, mut skipped, mut copies) = (0u64, 0u64, 0u64, 0u64);
        let mut undecodable = 0u64;
        // Records are decoded in parallel a chunk at a time, then inserted
        // in WAL order (the head's copy and position rules need that order).
        let mut chunk: Vec<(u64, RecordKind, Vec<u8>)> = Vec::new();
        let mut chunk_bytes = 0usize;
        let mut apply = |chunk: &mut Vec<(u64, RecordKind, Vec<u8>)>| {
            for (pos, decoded) in decode_parallel(chunk) {
                match decoded {
                    Decoded::Spans(d) => {
                        if let Some(r) = unflushed(pos, d, &flushed, &mut skipped, |s| s.trace_id) {
                            spans += r.len() as u64;
                            copies += head.insert_spans(pos, r) as u64;
                        } else {
                            undecodable += 1;
                        }
                    }
                    Decoded::Logs(d) => {
                        if let Some(r) = unflushed(pos, d, &flushed, &mut skipped, |l| l.trace_id) {
                            logs += r.len() as u64;
                            head.insert_logs(pos, r);
                        } else {
                            undecodable += 1;
                        }
                    }
                }
            }
            chunk.clear();
        };
        let replayed = wal::replay(&wal_dir, |pos, kind, payload| {
            chunk_bytes += payload.len();
            chunk.push((pos, kind, payload.to_vec()));
            if chunk_bytes >= REPLAY_CHUNK_BYTES {
                apply(&mut chunk);
                chunk_bytes = 0;
            }
        })?;
        apply(&mut chunk);
        let (mut corrupt, mut corrupt_bytes) = (undecodable, 0u64);
        for d in &replayed.damaged {
            if d.torn_tail {
                cut_torn_tail(d)?;
            } else {
                corrupt += 1;
                corrupt_bytes += d.bytes;
            }
        }
        self.metrics.wal_corrupt_records.inc_by(corrupt);
        self.metrics.wal_corrupt_bytes.inc_by(corrupt_bytes);
        if corrupt > 0 {
            tracing::error!(
                damaged = corrupt,
                bytes = corrupt_bytes,
                undecodable,
                "WAL replay skipped damaged records (see the errors above for file and offset); every undamaged record was replayed"
            );
        }
        let next = replayed.next;
        tracing::info!(spans, logs, already_flushed = skipped, copies_dropped = copies, "WAL replay done");
        self.metrics.duplicate_spans.inc_by(copies);
        // New records must sort after every position a segment recorded,
        // or replay after a crash would take them for flushed ones. That
        // matters when the WAL is newer than the segments: a deleted WAL
        // directory, or a new node on segments in an object store.
        let floor = segments.iter().map(|s| s.meta.wal_max_pos + 1).max().unwrap_or(0);
        let w = Wal::start(&wal_dir, next.max(floor), self.cfg.wal.clone(), self.metrics.clone())?;
        let _ = self.wal.set(w);
        self.update_head_metrics();
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The WAL, if ingest may proceed: replay is done and the records in
    /// memory (the head and a flush being written, in real bytes:
    /// [`Head::memory_bytes`]) are under `max_bytes * overload_factor`.
    fn admit(&self) -> Result<&Wal> {
        let wal = self.wal.get().ok_or(Error::NotReady)?;
        let limit = (self.cfg.head.max_bytes as f64 * self.cfg.head.overload_factor) as usize;
        let b = self.catalog.head().memory_bytes();
        if b > limit {
            return Err(Error::Overloaded(b));
        }
        Ok(wal)
    }

    /// Makes spans durable, then visible: encodes them as one WAL record
    /// ([`batch::encode_spans`]) and resolves once that record is fsynced
    /// (group commit with concurrent appends) and the spans are in the head,
    /// readable by every query. Validation is the caller's (the
    /// collector's); storage keeps what it is given, except copies of spans
    /// the head already holds (a retried batch), which are dropped
    /// ([`crate::model::dedup_spans`]) and counted in
    /// `skein_duplicate_spans_dropped`.
    ///
    /// # Errors
    /// [`Error::NotReady`] before [`Storage::replay`] finished,
    /// [`Error::Overloaded`] while the head is over its limit (retryable),
    /// [`Error::Wal`] when the record could not be made durable (nothing of
    /// it is visible then).
    pub async fn append_spans(self: &Arc<Self>, spans: Vec<Span>) -> Result<()> {
        self.append(RecordKind::SpanBatch, spans, batch::encode_spans, Head::insert_spans).await
    }

    /// Makes log records durable, then visible; as [`Storage::append_spans`]
    /// (records without trace context carry [`TraceId::ZERO`]). Once
    /// durable, the records are also published to the live tail
    /// ([`crate::tail`]) when someone follows it.
    ///
    /// # Errors
    /// As [`Storage::append_spans`].
    pub async fn append_logs(self: &Arc<Self>, logs: Vec<LogRecord>) -> Result<()> {
        let link = self.tail.get();
        let follow = link.and_then(|l| Some((l.wanted()?.clone(), &l.tenant, logs.clone())));
        self.append(RecordKind::LogBatch, logs, batch::encode_logs, Head::insert_logs).await?;
        if let Some((tail, tenant, copy)) = follow {
            tail.publish(tenant, copy);
        }
        Ok(())
    }

    /// Writes `records` to the WAL as one batch and, once it is durable,
    /// inserts them into the head on the WAL thread (records enter the head
    /// in WAL order, which replay relies on).
    async fn append<T: Send + 'static>(
        self: &Arc<Self>,
        kind: RecordKind,
        records: Vec<T>,
        encode: fn(&[T]) -> Vec<u8>,
        insert: fn(&Head, u64, Vec<T>) -> usize,
    ) -> Result<()> {
        let wal = self.admit()?;
        let payload = encode(&records);
        let me = self.clone();
        wal.append(kind, payload, move |pos| {
            let head = me.catalog.head();
            let copies = insert(head, pos, records);
            me.metrics.duplicate_spans.inc_by(copies as u64);
            if head.head_memory_bytes() >= me.cfg.head.max_bytes {
                // Flush now rather than at the next tick: the head keeps
                // filling meanwhile, towards the overload limit.
                me.flush_wanted.notify_one();
            }
        })
        .await?;
        Ok(())
    }
}

/// WAL payload bytes replay decodes in parallel before inserting them: a
/// few MiB keeps every thread busy and the copies small.
const REPLAY_CHUNK_BYTES: usize = 8 << 20;

/// One decoded WAL record.
enum Decoded {
    Spans(Result<Vec<Span>, BatchError>),
    Logs(Result<Vec<LogRecord>, BatchError>),
}

/// Decodes the records of `chunk` on up to `available_parallelism`
/// threads; returns them in the chunk's (WAL) order with their positions.
fn decode_parallel(chunk: &[(u64, RecordKind, Vec<u8>)]) -> Vec<(u64, Decoded)> {
    let decode = |(pos, kind, payload): &(u64, RecordKind, Vec<u8>)| {
        let d = match kind {
            RecordKind::SpanBatch => Decoded::Spans(batch::decode_spans(payload)),
            RecordKind::LogBatch => Decoded::Logs(batch::decode_logs(payload)),
        };
        (*pos, d)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunk.len());
    if threads <= 1 {
        return chunk.iter().map(decode).collect();
    }
    let per = chunk.len().div_ceil(threads);
    std::thread::scope(|sc| {
        let parts: Vec<_> = chunk
            .chunks(per)
            .map(|part| sc.spawn(move || part.iter().map(decode).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|h| h.join().expect("WAL decode thread panicked")).collect()
    })
}

/// The records of the batch at WAL position `pos` that no segment holds
/// yet (`flushed`: per trace, the last position in a segment); counts the
/// others in `skipped`. `None`, logged, for a batch that does not decode.
fn unflushed<T>(
    pos: u64,
    decoded: Result<Vec<T>, BatchError>,
    flushed: &HashMap<TraceId, u64>,
    skipped: &mut u64,
    trace: impl Fn(&T) -> TraceId,
) -> Option<Vec<T>> {
    match decoded {
        Ok(mut records) => {
            let before = records.len();
            records.retain(|r| flushed.get(&trace(r)).is_none_or(|p| pos > *p));
            *skipped += (before - records.len()) as u64;
            Some(records)
        }
        Err(e) => {
            tracing::error!(pos, error = %e, "WAL: undecodable batch");
            None
        }
    }
}

/// Cuts a torn tail off the newest WAL file (those bytes were never
/// acknowledged), so that once the writer starts a newer file the stretch
/// is not reported as damage at every later start.
fn cut_torn_tail(d: &wal::Damage) -> Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(&d.file).map_err(wal::WalError::from)?;
    f.set_len(d.offset).map_err(wal::WalError::from)?;
    f.sync_all().map_err(wal::WalError::from)?;
    Ok(())
}
