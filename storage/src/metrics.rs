//! The storage layer's own metrics, exposed on `/metrics`.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Counters and gauges of the storage layer; names and help texts are in
/// [`StorageMetrics::register`].
#[derive(Debug)]
pub struct StorageMetrics {
    /// Bytes written to the WAL.
    pub wal_bytes: Counter,
    /// Latency of one group-commit fsync, seconds.
    pub wal_fsync_seconds: Histogram,
    /// Traces in the head.
    pub head_traces: Gauge,
    /// Approximate bytes held by the head.
    pub head_bytes: Gauge,
    /// Segments in the catalog.
    pub segments: Gauge,
    /// Bytes of all segments in the catalog.
    pub segment_bytes: Gauge,
    /// Duration of one flush that wrote a segment, seconds.
    pub flush_seconds: Histogram,
    /// Spans written to segments by flushes.
    pub flushed_spans: Counter,
    /// Log records written to segments by flushes.
    pub flushed_logs: Counter,
    /// Copies of a span dropped (a retried batch; see
    /// [`crate::model::dedup_spans`]): on ingest and replay when the head
    /// holds the span, and by compaction across its inputs.
    pub duplicate_spans: Counter,
    /// Row reads from segment files: one per segment file opened for rows.
    pub segment_reads: Counter,
    /// WAL files deleted because their records are all in segments.
    pub wal_files_reclaimed: Counter,
    /// Damaged stretches of acknowledged WAL records that replay skipped
    /// (each holds one record or more; torn tails of a crash not counted).
    pub wal_corrupt_records: Counter,
    /// Bytes of those damaged stretches.
    pub wal_corrupt_bytes: Counter,
    /// Compactions done, and the segment bytes they read and wrote.
    pub compactions: Counter,
    /// Segment bytes read by compactions.
    pub compaction_bytes_in: Counter,
    /// Segment bytes written by compactions.
    pub compaction_bytes_out: Counter,
    /// Segments deleted by retention (age or total size).
    pub retention_deleted_segments: Counter,
    /// Requests to the object store (list, GET, PUT, HEAD, DELETE), and
    /// the bytes read from and written to it.
    pub remote_requests: Counter,
    /// Bytes read from the object store.
    pub remote_read_bytes: Counter,
    /// Bytes written to the object store.
    pub remote_written_bytes: Counter,
    /// Segments this process quarantined (found damaged at open or on a
    /// read); see `Storage::quarantined`.
    pub segments_quarantined: Counter,
    /// Segments in quarantine now, those of earlier runs included.
    pub quarantined_segments: Gauge,
    /// Spans dropped because their trace held `head.max_bytes_per_trace`.
    pub trace_limit_dropped_spans: Counter,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        StorageMetrics {
            wal_bytes: Counter::default(),
            wal_fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            head_traces: Gauge::default(),
            head_bytes: Gauge::default(),
            segments: Gauge::default(),
            segment_bytes: Gauge::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            flushed_spans: Counter::default(),
            flushed_logs: Counter::default(),
            duplicate_spans: Counter::default(),
            segment_reads: Counter::default(),
            wal_files_reclaimed: Counter::default(),
            wal_corrupt_records: Counter::default(),
            wal_corrupt_bytes: Counter::default(),
            compactions: Counter::default(),
            compaction_bytes_in: Counter::default(),
            compaction_bytes_out: Counter::default(),
            retention_deleted_segments: Counter::default(),
            remote_requests: Counter::default(),
            remote_read_bytes: Counter::default(),
            remote_written_bytes: Counter::default(),
            segments_quarantined: Counter::default(),
            quarantined_segments: Gauge::default(),
            trace_limit_dropped_spans: Counter::default(),
        }
    }
}

impl StorageMetrics {
    /// Registers every metric in `r` under its `skein_` name.
    pub fn register(&self, r: &mut Registry) {
        r.register("skein_wal_written_bytes", "Bytes written to the WAL", self.wal_bytes.clone());
        r.register(
            "skein_wal_fsync_seconds",
            "Latency of one WAL group-commit fsync",
            self.wal_fsync_seconds.clone(),
        );
        r.register("skein_head_traces", "Traces held in the head (memory)", self.head_traces.clone());
        r.register(
            "skein_head_bytes",
            "Real memory of the head (records and its structures), bytes",
            self.head_bytes.clone(),
        );
        r.register("skein_segments", "Segments in the catalog", self.segments.clone());
        r.register("skein_segment_bytes", "Bytes of all segments on disk", self.segment_bytes.clone());
        r.register("skein_flush_seconds", "Time to write one segment", self.flush_seconds.clone());
        r.register("skein_flushed_spans", "Spans written to segments", self.flushed_spans.clone());
        r.register("skein_flushed_logs", "Log records written to segments", self.flushed_logs.clone());
        r.register(
            "skein_duplicate_spans_dropped",
            "Copies of a stored span dropped (retried batches), on ingest, replay and compaction",
            self.duplicate_spans.clone(),
        );
        r.register(
            "skein_segment_reads",
            "Segment row reads (one per segment file read for rows)",
            self.segment_reads.clone(),
        );
        r.register(
            "skein_wal_files_reclaimed",
            "WAL files deleted after their data reached segments",
            self.wal_files_reclaimed.clone(),
        );
        r.register(
            "skein_wal_corrupt_records",
            "Damaged stretches of acknowledged WAL records skipped at replay (one or more records each)",
            self.wal_corrupt_records.clone(),
        );
        r.register(
            "skein_wal_corrupt_bytes",
            "Bytes of damaged WAL records skipped at replay",
            self.wal_corrupt_bytes.clone(),
        );
        r.register("skein_compactions", "Segment compactions done", self.compactions.clone());
        r.register(
            "skein_compaction_read_bytes",
            "Bytes of segments merged by compaction (inputs)",
            self.compaction_bytes_in.clone(),
        );
        r.register(
            "skein_compaction_written_bytes",
            "Bytes of segments written by compaction (outputs)",
            self.compaction_bytes_out.clone(),
        );
        r.register(
            "skein_retention_deleted_segments",
            "Segments deleted by retention (age or total size)",
            self.retention_deleted_segments.clone(),
        );
        r.register(
            "skein_object_store_requests",
            "Requests to the object store (segments on S3 or file://)",
            self.remote_requests.clone(),
        );
        r.register(
            "skein_object_store_read_bytes",
            "Bytes read from the object store",
            self.remote_read_bytes.clone(),
        );
        r.register(
            "skein_object_store_written_bytes",
            "Bytes written to the object store",
            self.remote_written_bytes.clone(),
        );
        r.register(
            "skein_segments_quarantined",
            "Damaged segments moved to quarantine by this process (at open or on a failed read)",
            self.segments_quarantined.clone(),
        );
        r.register(
            "skein_quarantined_segments",
            "Segments in quarantine now (listed at /api/v1/status), earlier runs' included",
            self.quarantined_segments.clone(),
        );
        r.register(
            "skein_trace_limit_dropped_spans",
            "Spans dropped because their trace already held head.max_bytes_per_trace in the head",
            self.trace_limit_dropped_spans.clone(),
        );
    }
}

/// One storage's share of a gauge that several storages (one per tenant,
/// see [`crate::tenant`]) add to: setting the share moves the gauge by the
/// difference, so the gauge stays the sum over all of them.
#[derive(Debug, Default)]
pub(crate) struct GaugeShare(AtomicI64);

impl GaugeShare {
    /// Sets this storage's part of `g` to `v`.
    pub(crate) fn set(&self, g: &Gauge, v: i64) {
        let old = self.0.swap(v, Ordering::Relaxed);
        g.inc_by(v - old);
    }
}

/// The shares of [`StorageMetrics`]' gauges one storage holds.
#[derive(Debug, Default)]
pub(crate) struct GaugeShares {
    pub head_traces: GaugeShare,
    pub head_bytes: GaugeShare,
    pub segments: GaugeShare,
}
