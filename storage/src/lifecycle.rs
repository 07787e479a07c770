//! The life of data after ingest: flush (head to segment, then WAL
//! reclamation), retention, and the background schedule that runs them and
//! compaction ([`Storage::run_maintenance`]). Compaction itself is in
//! [`crate::compact`].

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use crate::head::{CutPolicy, TraceEntry};
use crate::model::{SpanId, TraceId};
use crate::segment::{self, Segment};
use crate::{now_unix_nano, remove_segment_dir, wal, Error, FlushStats, Result, Storage};

/// Retention runs every this many flush ticks (once a minute with the
/// default one-second `head.flush_interval`).
const RETENTION_EVERY_TICKS: u64 = 60;

impl Storage {
    /// Writes traces that are idle, old, or over the memory limit (or all
    /// of them with `all`) to new segments, then deletes WAL files whose
    /// records are all in segments. Blocking; one flush runs at a time.
    ///
    /// Bounded: the traces chosen ([`crate::head::Head::select`]) are cut
    /// from the head and written one block of at most about
    /// `head.max_block_bytes` at a time, a segment per block, while ingest
    /// goes on into the head; so a flush holds at most one block beside
    /// the head, and the rest of the chosen traces stay readable (and
    /// keep receiving records) in the head until their block is cut. Over
    /// `head.max_bytes` of real memory, the least recently updated traces
    /// are chosen until the head is `max_block_bytes` under it.
    ///
    /// When it returns `Ok`, the flushed records are in segments in the
    /// catalog (uploaded first, with an object store) and readable from
    /// there; the WAL no longer needs them.
    ///
    /// # Errors
    /// A segment could not be written or published. Its traces are then
    /// back in the head with their WAL positions and their WAL records are
    /// kept: the next flush retries them and a crash replays them. Blocks
    /// written before it stay written.
    pub fn flush(&self, all: bool) -> Result<FlushStats> {
        let _guard = self.flush_lock.lock();
        let h = &self.cfg.head;
        let head = self.catalog.head();
        let over = head.head_memory_bytes() >= h.max_bytes;
        let policy = CutPolicy {
            now_ms: head.now_ms(),
            idle_ms: h.idle_timeout.as_millis() as u64,
            max_age_ms: h.max_trace_age.as_millis() as u64,
            target_bytes: if over { h.max_bytes.saturating_sub(h.max_block_bytes) } else { usize::MAX },
            all,
        };
        let chosen = head.select(policy);
        let mut stats = FlushStats::default();
        let mut block: Vec<TraceId> = Vec::new();
        let mut block_bytes = 0usize;
        let mut result = Ok(());
        for (i, (id, b)) in chosen.iter().enumerate() {
            block.push(*id);
            block_bytes += b;
            if block_bytes >= h.max_block_bytes || i + 1 == chosen.len() {
                if let Err(e) = self.flush_block(&block, &mut stats) {
                    result = Err(e);
                    break;
                }
                block.clear();
                block_bytes = 0;
            }
        }
        self.reclaim_wal();
        self.update_head_metrics();
        if stats.traces > 0 {
            self.trim_cache();
        }
        result.map(|()| stats)
    }

    /// Cuts the traces `ids` names from the head and writes them as one
    /// segment (the caller holds `flush_lock`), adding what it wrote to
    /// `stats`.
    fn flush_block(&self, ids: &[TraceId], stats: &mut FlushStats) -> Result<()> {
        let t0 = std::time::Instant::now();
        let Some(flushing) = self.catalog.cut_ids(ids) else { return Ok(()) };
        let traces = &flushing.traces;
        let spans: u64 = traces.iter().map(|t| t.1.spans.len() as u64).sum();
        let logs: u64 = traces.iter().map(|t| t.1.logs.len() as u64).sum();
        // Self-tracing: one span per block written (a flush with nothing
        // to write makes none), a root of its own trace; numbers as i64
        // (tracing-opentelemetry turns a u64 into a string).
        let span = tracing::info_span!(
            parent: None,
            "storage.flush",
            traces = traces.len() as i64,
            spans = spans as i64,
            logs = logs as i64,
            segment = tracing::field::Empty,
            bytes = tracing::field::Empty,
            duplicate_spans = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let _in = span.enter();
        #[cfg(test)]
        let injected = self.fail_next_flush.swap(false, std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(test))]
        let injected = false;
        let mut copies = 0;
        let written = if injected {
            Err(Error::Io(std::io::Error::other("injected segment write failure")))
        } else {
            let skip = self.copies_in_segments(traces);
            copies = skip.len() as u64;
            segment::write_segment_skipping(
                &self.segments_dir(),
                &self.cfg.segment,
                traces,
                now_unix_nano(),
                &skip,
            )
            .and_then(|(meta, _)| self.publish_segment(&meta.id))
        };
        match written {
            Ok(seg) => {
                span.record("segment", seg.meta.id.as_str());
                span.record("bytes", seg.meta.bytes as i64);
                span.record("duplicate_spans", copies as i64);
                // Counted once written: a failed flush is retried.
                self.metrics.duplicate_spans.inc_by(copies);
                self.metrics.segment_bytes.inc_by(seg.meta.bytes as i64);
                let n = self.catalog.finish_flush(&flushing, Some(Arc::new(seg)));
                self.gauges.segments.set(&self.metrics.segments, n as i64);
                self.metrics.flushed_spans.inc_by(spans);
                self.metrics.flushed_logs.inc_by(logs);
                stats.traces += traces.len();
                stats.spans += spans;
                stats.logs += logs;
                stats.segments += 1;
                self.metrics.flush_seconds.observe(t0.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                span.record("otel.status_code", "error");
                self.catalog.finish_flush(&flushing, None);
                self.update_head_metrics();
                Err(e)
            }
        }
    }

    /// The spans of `traces` that a segment already holds, by (trace ID,
    /// span ID): copies of a batch retried after its first copy was
    /// flushed. Only traces whose ID a segment's in-memory trace-ID index
    /// lists are read, spans only; a segment that cannot be read is
    /// skipped (its copies then wait for compaction, as before), and one
    /// found damaged is quarantined.
    fn copies_in_segments(&self, traces: &[(TraceId, TraceEntry)]) -> HashSet<(TraceId, SpanId)> {
        let segments = self.catalog.snapshot().segments;
        let mut out = HashSet::new();
        for (id, t) in traces.iter().filter(|t| !t.1.spans.is_empty()) {
            for seg in segments.iter().filter(|s| s.find(id).is_some()) {
                match self.guarded(seg, |g| g.lookup(id, false)) {
                    Ok(Some(Some((stored, _)))) => {
                        let ids: HashSet<SpanId> = stored.iter().map(|s| s.span_id).collect();
                        out.extend(
                            t.spans.iter().filter(|s| ids.contains(&s.span_id)).map(|s| (*id, s.span_id)),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(segment = %seg.meta.id, error = %e, "cannot read a segment to find copies of spans")
                    }
                }
            }
        }
        out
    }

    pub(crate) fn update_head_metrics(&self) {
        let head = self.catalog.head();
        self.gauges.head_bytes.set(&self.metrics.head_bytes, head.head_memory_bytes() as i64);
        self.gauges.head_traces.set(&self.metrics.head_traces, head.trace_count() as i64);
    }

    /// Deletes the WAL files before the oldest record not in a segment.
    fn reclaim_wal(&self) {
        let Some(wal) = self.wal.get() else { return };
        let safe = self.catalog.oldest_unflushed_pos().unwrap_or(u64::MAX);
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
    /// bring them back. Returns the number of segments deleted (out of the
    /// catalog at return; their files go once no query reads them).
    /// Blocking.
    ///
    /// # Errors
    /// The WAL directory cannot be listed (before replay).
    ///
    /// An ingest node of a split deployment (`retention_disabled`) deletes
    /// nothing itself: the compactor applies retention and compaction to
    /// its prefix. It forgets instead the segments the compactor removed
    /// ([`Storage::forget_removed_segments`]), so its catalog and cache do
    /// not grow without end.
    pub fn enforce_retention(&self) -> Result<usize> {
        if self.cfg.mirror {
            return Ok(0);
        }
        if self.cfg.retention_disabled {
            return self.forget_removed_segments();
        }
        let _maint = self.maintenance_lock.lock();
        let cutoff = now_unix_nano().saturating_sub(self.cfg.retention.as_nanos() as u64);
        let wal_oldest = match self.wal.get() {
            Some(w) => w.oldest_position(),
            None => wal::list_files(&self.wal_dir())?.first().map_or(u64::MAX, |f| f.0),
        };
        let deletable = |s: &Segment| s.meta.wal_max_pos < wal_oldest;
        let expired: Vec<Arc<Segment>> = self.catalog.edit_segments(|segments| {
            let (mut old, mut keep): (Vec<_>, Vec<_>) =
                segments.drain(..).partition(|s| s.meta.created_unix_nano < cutoff && deletable(s));
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
            *segments = keep;
            self.gauges.segments.set(&self.metrics.segments, segments.len() as i64);
            old
        });
        for s in &expired {
            tracing::info!(segment = %s.meta.id, bytes = s.meta.bytes, "retention: deleting segment");
            self.metrics.segment_bytes.dec_by(s.meta.bytes as i64);
        }
        self.metrics.retention_deleted_segments.inc_by(expired.len() as u64);
        let n = expired.len();
        self.bury(expired);
        Ok(n)
    }

    /// Drops from the catalog (and, once no query reads them, from the
    /// local cache) the segments that were in the catalog before a listing
    /// of this storage's object-store prefix and are absent from it: the
    /// compactor of a split deployment deleted them after their records
    /// reached its output (docs/storage.md). A segment is in the catalog
    /// only once its upload committed, so one absent from a listing taken
    /// later was deleted, not not-yet-uploaded. Returns how many were
    /// dropped; 0 without an object store. Blocking (one LIST).
    ///
    /// # Errors
    /// The listing failed; the catalog is then unchanged.
    pub fn forget_removed_segments(&self) -> Result<usize> {
        let Some(r) = self.remote.as_ref().filter(|_| !self.cfg.mirror) else { return Ok(0) };
        let before: std::collections::HashSet<String> =
            self.catalog.edit_segments(|segs| segs.iter().map(|s| s.meta.id.clone()).collect());
        let listing = r.list()?;
        let stored: std::collections::HashSet<&str> = listing.committed.iter().map(String::as_str).collect();
        let _maint = self.maintenance_lock.lock();
        let gone: Vec<Arc<Segment>> = self.catalog.edit_segments(|segments| {
            let (gone, keep): (Vec<_>, Vec<_>) = segments
                .drain(..)
                .partition(|s| before.contains(&s.meta.id) && !stored.contains(s.meta.id.as_str()));
            *segments = keep;
            self.gauges.segments.set(&self.metrics.segments, segments.len() as i64);
            gone
        });
        for s in &gone {
            tracing::info!(segment = %s.meta.id, "the compactor removed this segment from the bucket; forgetting it");
            self.metrics.segment_bytes.dec_by(s.meta.bytes as i64);
        }
        let n = gone.len();
        // Deleting from the store again is harmless (deletes are idempotent)
        // and keeps one path for removing a segment's files.
        self.bury(gone);
        Ok(n)
    }

    /// Queues segments already out of the catalog for deletion, and deletes
    /// every queued one no query snapshot holds any more. A snapshot taken
    /// before the segment left the catalog may still read its files; once
    /// only the queue holds it, nobody can get it again.
    pub(crate) fn bury(&self, segments: Vec<Arc<Segment>>) {
        let mut g = self.graveyard.lock();
        g.extend(segments);
        let root = self.segments_dir();
        g.retain(|s| {
            if Arc::strong_count(s) > 1 {
                return true;
            }
            if let Some(r) = self.remote.as_ref().filter(|_| !self.cfg.mirror) {
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

    /// Runs flush, retention and compaction in the background until `stop`
    /// turns `true` (or its sender is dropped), then waits for a running
    /// retention or compaction to finish. It does not flush what is left:
    /// the caller does that with `flush(true)` once ingest has stopped.
    ///
    /// Every `head.flush_interval`, and at once when the head reaches
    /// `head.max_bytes`, a flush writes idle, old or excess traces. Retention (every 60 ticks, starting with the first) and
    /// compaction (every `compaction.interval`, when enabled) run in one
    /// maintenance task beside it, one at a time, so a long compaction never
    /// delays a flush; a tick whose maintenance is due while the previous
    /// one still runs leaves it pending. Failures are logged and retried at
    /// the next turn. Call after [`Storage::replay`].
    pub async fn run_maintenance(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let interval = self.cfg.head.flush_interval;
        let compaction = self.cfg.compaction.clone();
        let compact_every =
            (compaction.interval.as_secs_f64() / interval.as_secs_f64().max(1e-3)).ceil().max(1.0) as u64;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let (mut retention_due, mut compaction_due) = (false, false);
        let mut maintenance: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let ticked = tokio::select! {
                _ = tick.tick() => true,
                _ = self.flush_wanted.notified() => false,
                _ = stop.wait_for(|s| *s) => break,
            };
            if ticked {
                n += 1;
                retention_due |= n % RETENTION_EVERY_TICKS == 1;
                compaction_due |= compaction.enabled && n.is_multiple_of(compact_every);
            }
            if (retention_due || compaction_due) && maintenance.as_ref().is_none_or(|h| h.is_finished()) {
                let (r, c) = (std::mem::take(&mut retention_due), std::mem::take(&mut compaction_due));
                let s = self.clone();
                maintenance = Some(tokio::task::spawn_blocking(move || s.maintain(r, c)));
            }
            let s = self.clone();
            match tokio::task::spawn_blocking(move || s.flush(false)).await {
                Ok(Ok(st)) if st.traces > 0 => {
                    tracing::debug!(traces = st.traces, spans = st.spans, logs = st.logs, "flushed")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "flush failed; will retry"),
                _ => {}
            }
        }
        // A compaction is safe to interrupt, but letting it finish keeps
        // its work.
        if let Some(h) = maintenance {
            let _ = h.await;
        }
    }

    /// One maintenance turn: retention and/or compaction. Blocking.
    fn maintain(&self, retention: bool, compaction: bool) {
        if retention {
            if let Err(e) = self.enforce_retention() {
                tracing::error!(error = %e, "retention failed");
            }
        }
        if compaction {
            // One compaction per interval cannot clear the backlog a long
            // flat-out load leaves (242 flushed blocks at 10 M spans, each
            // compaction merging 2-4 of them): keep merging while there is
            // work, for at most one interval, as Tempo's compactor keeps
            // taking jobs. Retention and the next cycle wait meanwhile.
            let until = std::time::Instant::now() + self.cfg.compaction.interval;
            loop {
                match self.compact() {
                    Ok(st) if st.inputs > 0 => tracing::debug!(
                        inputs = st.inputs,
                        bytes_in = st.bytes_in,
                        bytes_out = st.bytes_out,
                        "compacted"
                    ),
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "compaction failed; will retry");
                        break;
                    }
                }
                if std::time::Instant::now() >= until {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testsuite::{append_spans_of, test_config};
    use crate::{Storage, StorageConfig};

    /// An ingest node of a split deployment forgets the segments the
    /// compactor deleted from its prefix, and only those; it deletes
    /// nothing of its own accord.
    #[tokio::test]
    async fn test_an_ingest_node_forgets_what_the_compactor_removed() {
        let (bucket, d) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = StorageConfig {
            storage_url: Some(format!("file://{}", bucket.path().display())),
            retention_disabled: true,
            retention: std::time::Duration::from_nanos(1),
            ..test_config()
        };
        let s = Storage::open(d.path(), cfg).unwrap();
        s.replay().unwrap();
        for t in 1..=2 {
            append_spans_of(&s, t, 0, 2).await;
            s.flush(true).unwrap();
        }
        let ids: Vec<String> = s.catalog.snapshot().segments.iter().map(|s| s.meta.id.clone()).collect();
        assert_eq!(ids.len(), 2);
        // Past retention, but retention is the compactor's job.
        assert_eq!(s.enforce_retention().unwrap(), 0);
        assert!(bucket.path().join("segments").join(&ids[0]).exists());
        std::fs::remove_dir_all(bucket.path().join("segments").join(&ids[0])).unwrap();
        assert_eq!(s.enforce_retention().unwrap(), 1);
        let left: Vec<String> = s.catalog.snapshot().segments.iter().map(|s| s.meta.id.clone()).collect();
        assert_eq!(left, [ids[1].clone()]);
        assert!(!d.path().join("segments").join(&ids[0]).exists(), "its cached files go too");
        assert!(bucket.path().join("segments").join(&ids[1]).exists());
        assert_eq!(s.enforce_retention().unwrap(), 0);
    }
}
