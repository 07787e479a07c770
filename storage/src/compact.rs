//! Compaction: merges small segments into bigger ones in the background.
//!
//! Flushes write one segment per flush, often small; many small segments
//! cost a lookup one trace-ID index probe and a search one tantivy query
//! each, and compress worse. Compaction picks the oldest small segments,
//! reads every trace they hold, groups the traces' rows by trace ID across
//! the inputs and writes them as one segment, which replaces the inputs in
//! the catalog in one step.
//!
//! Crash safety: the output is written under `tmp-*` and renamed into place
//! (like a flush), and its `meta.json` lists the inputs it replaces. The
//! inputs are deleted only after the output is in the catalog, so after a
//! crash at any point the disk holds the inputs, or the output, or both;
//! opening the storage then drops every segment another one replaces.
//!
//! WAL replay: per trace, the output records the highest WAL position any
//! input recorded for it, so replay skips exactly what it skipped before.
//!
//! Copies: a span sent twice (a retried batch) may sit in two inputs, one
//! copy each; the output keeps the first received (the oldest input's)
//! and its counts and rollups count it once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::head::TraceEntry;
use crate::model::{LogRecord, Span, TraceId};
use crate::segment::{self, Segment};
use crate::{Error, Result, Storage};

/// Compaction settings (`[compaction]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Whether the background compactor runs ([`Storage::run_maintenance`]).
    pub enabled: bool,
    /// How often the background compactor looks for segments to merge.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A compaction runs only when at least this many segments qualify.
    pub min_inputs: usize,
    /// At most this many segments are merged at once.
    pub max_inputs: usize,
    /// The output of one compaction is at most this many bytes on disk
    /// (the inputs' total). Only segments of at most a `min_inputs`-th of
    /// it are merged (size-tiered: flushed segments merge into bigger
    /// ones, which are then left alone), so each record is rewritten by
    /// compaction about once.
    pub max_segment_bytes: u64,
    /// The output of one compaction holds at most this many rows (spans
    /// and log records), and only segments of at most a `min_inputs`-th
    /// of it are merged. Bounds the memory of a compaction, which holds
    /// every input row decoded (about the records' size in the head, far
    /// more than on disk), whatever the on-disk layout. Like Tempo's
    /// `max_compaction_objects`, in rows rather than traces.
    pub max_rows: u64,
    /// The compact role (`--role compact`): how long the compactor lease
    /// lives without renewal ([`crate::lease::LeaseConfig::lease_duration`]).
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// The compact role: how often a waiting compactor reads the lease
    /// ([`crate::lease::LeaseConfig::lease_retry_interval`]).
    #[serde(with = "humantime_serde")]
    pub lease_retry_interval: Duration,
    /// The compact role: a compaction's inputs are deleted from the bucket
    /// this long after its output was committed (Tempo's
    /// `compacted_block_retention`). Until then a query node that has not
    /// polled since, or a query that started before its poll, still reads
    /// them; so it must be longer than `cluster.catalog_poll_interval` plus
    /// `query.timeout`. Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub deletion_delay: Duration,
    /// The compact role: an ingest node's segment is compacted (or expired)
    /// only once it is this old, by when it was received. An ingest node's
    /// WAL replay skips the records its own segments hold; a segment moved
    /// out of its prefix while its records are still in its WAL would be
    /// replayed, and stored twice, after a crash. WAL files are deleted once
    /// every record before them is flushed, so records stay in the WAL at
    /// most about `head.max_trace_age` plus a flush after their segment was
    /// written, far less than the default 10 minutes.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
}

impl CompactionConfig {
    /// The lease settings among these ([`crate::lease::LeaseConfig`]).
    pub fn lease(&self) -> crate::lease::LeaseConfig {
        crate::lease::LeaseConfig {
            lease_duration: self.lease_duration,
            lease_retry_interval: self.lease_retry_interval,
        }
    }
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval: Duration::from_secs(30),
            min_inputs: 2,
            max_inputs: 8,
            max_segment_bytes: 64 << 20,
            max_rows: 1_000_000,
            lease_duration: crate::lease::LeaseConfig::default().lease_duration,
            lease_retry_interval: crate::lease::LeaseConfig::default().lease_retry_interval,
            deletion_delay: Duration::from_secs(5 * 60),
            min_age: Duration::from_secs(10 * 60),
        }
    }
}

impl CompactionConfig {
    /// Refuses settings that cannot work, saying which and why.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn check(&self) -> Result<()> {
        if self.min_inputs < 2 {
            return Err(Error::Config("compaction.min_inputs must be at least 2".into()));
        }
        if self.max_inputs < self.min_inputs {
            return Err(Error::Config(format!(
                "compaction.max_inputs ({}) is smaller than compaction.min_inputs ({})",
                self.max_inputs, self.min_inputs
            )));
        }
        if self.max_rows == 0 {
            return Err(Error::Config("compaction.max_rows must be larger than zero".into()));
        }
        if self.max_segment_bytes == 0 {
            return Err(Error::Config("compaction.max_segment_bytes must be larger than zero".into()));
        }
        if self.enabled && self.interval.is_zero() {
            return Err(Error::Config("compaction.interval must be longer than zero".into()));
        }
        // Below a second the lease's renewals (a third of it) would be
        // requests back to back, and the holder's margin shorter than one.
        if self.lease_duration < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "compaction.lease_duration ({:?}) must be at least 1s",
                self.lease_duration
            )));
        }
        if self.lease_retry_interval.is_zero() {
            return Err(Error::Config("compaction.lease_retry_interval must be longer than zero".into()));
        }
        Ok(())
    }
}

/// What one compaction did (all zero when nothing qualified).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Segments merged.
    pub inputs: usize,
    /// Their bytes.
    pub bytes_in: u64,
    /// Bytes of the output segment.
    pub bytes_out: u64,
    /// Traces in the output.
    pub traces: u64,
    /// Spans in the output.
    pub spans: u64,
    /// Log records in the output.
    pub logs: u64,
    /// Copies of a span dropped: spans whose (trace ID, span ID) an older
    /// input (or the same one) already held.
    pub duplicate_spans: u64,
}

/// Chooses the segments to merge from `sizes` (segment bytes, oldest
/// first), bounded by bytes only: [`pick_inputs_by`] with no row bound.
pub fn pick_inputs(sizes: &[u64], cfg: &CompactionConfig) -> Option<Vec<usize>> {
    let segs: Vec<(u64, u64)> = sizes.iter().map(|&b| (b, 0)).collect();
    pick_inputs_by(&segs, cfg)
}

/// Chooses the segments to merge from `segs` ((bytes, rows) per segment,
/// oldest first): up to `max_inputs` segments, each at most a
/// `min_inputs`-th of `max_segment_bytes` and of `max_rows` (so that
/// `min_inputs` of them fit, and the outputs, larger, are not merged
/// again), together at most `max_segment_bytes` and `max_rows`, starting
/// from the oldest segment for which at least `min_inputs` fit. Returns
/// indices into `segs`, oldest first.
pub fn pick_inputs_by(segs: &[(u64, u64)], cfg: &CompactionConfig) -> Option<Vec<usize>> {
    let (max, max_rows) = (cfg.max_segment_bytes, cfg.max_rows);
    let k = cfg.min_inputs.max(1) as u64;
    let small: Vec<usize> =
        (0..segs.len()).filter(|&i| segs[i].0 <= max / k && segs[i].1 <= max_rows / k).collect();
    for start in 0..small.len() {
        if small.len() - start < cfg.min_inputs {
            break;
        }
        let mut chosen = Vec::new();
        let (mut total, mut rows) = (0u64, 0u64);
        for &i in &small[start..] {
            if chosen.len() == cfg.max_inputs {
                break;
            }
            if total + segs[i].0 <= max && rows + segs[i].1 <= max_rows {
                total += segs[i].0;
                rows += segs[i].1;
                chosen.push(i);
            }
        }
        if chosen.len() >= cfg.min_inputs {
            return Some(chosen);
        }
    }
    None
}

impl Storage {
    /// Merges small segments into one when enough qualify (see
    /// [`CompactionConfig`]). Blocking; at most one compaction should run
    /// at a time (a second call waits for the first).
    ///
    /// Compaction takes `maintenance_lock`, shared with retention, and not
    /// `flush_lock`: a compaction may read and write hundreds of MiB, and
    /// holding the flush lock that long would stall flushing and let the
    /// head grow into overload. It does not need to exclude flushes: a
    /// flush only adds new segments, compaction only replaces segments
    /// already in the catalog, and each changes the catalog under one
    /// step ([`crate::catalog::Catalog::edit_segments`]; compaction removes
    /// exactly its inputs by ID).
    /// WAL reclaim depends only on the head and in-flight flushes, not on
    /// segments. Retention, which also removes segments, must not delete an
    /// input while it is being merged (the output would bring the data
    /// back), hence the shared lock.
    ///
    /// When it returns, the output is in the catalog (and the object store)
    /// and the inputs are out of it; their files go once no query reads them.
    ///
    /// # Errors
    /// An input cannot be read or the output cannot be written or published;
    /// the catalog is then unchanged.
    pub fn compact(&self) -> Result<CompactStats> {
        if self.cfg.mirror {
            return Ok(CompactStats::default());
        }
        let _maint = self.maintenance_lock.lock();
        // Inputs of an earlier compaction a query was still reading.
        self.bury(Vec::new());
        let cfg = &self.cfg.compaction;
        let mut segs = self.snapshot().segments;
        segs.sort_by(|a, b| {
            (a.meta.created_unix_nano, &a.meta.id).cmp(&(b.meta.created_unix_nano, &b.meta.id))
        });
        let Some(inputs) = pick_segments(&segs, cfg) else { return Ok(CompactStats::default()) };
        drop(segs);
        let t0 = std::time::Instant::now();
        // Self-tracing: only a compaction with work makes a span (numbers
        // as i64: tracing-opentelemetry turns a u64 into a string).
        let span = tracing::info_span!(
            parent: None,
            "storage.compact",
            inputs = inputs.len() as i64,
            bytes_in = inputs.iter().map(|s| s.meta.bytes).sum::<u64>() as i64,
            rows_in = inputs.iter().map(|s| s.meta.span_count + s.meta.log_count).sum::<u64>() as i64,
            output = tracing::field::Empty,
            bytes_out = tracing::field::Empty,
            duplicate_spans = tracing::field::Empty,
        );
        let _in = span.enter();

        // An input found damaged is quarantined, and the next turn picks
        // inputs without it.
        let (traces, duplicate_spans) = merge(&inputs, |seg| {
            self.guarded(seg, read_all)?.ok_or_else(|| {
                Error::Corrupt(format!("compaction input {} is damaged and was quarantined", seg.meta.id))
            })
        })?;
        let mut stats = CompactStats::of_merge(&inputs, &traces, duplicate_spans);
        // Retention counts from when Skein received the data: the oldest
        // input's time (so merged data may go up to the inputs' spread
        // earlier than its own age alone would say, never later).
        let created = inputs.iter().map(|s| s.meta.created_unix_nano).min().unwrap_or(0);
        let replaces: Vec<String> = inputs.iter().map(|s| s.meta.id.clone()).collect();
        let root = self.segments_dir();
        let (meta, _) =
            segment::write_segment_replacing(&root, &self.cfg.segment, &traces, created, replaces)?;
        drop(traces);
        // On failure the output is removed, or the next start would prefer it.
        let out = Arc::new(self.publish_segment(&meta.id)?);
        stats.bytes_out = out.meta.bytes;
        span.record("output", out.meta.id.as_str());
        span.record("bytes_out", stats.bytes_out as i64);
        span.record("duplicate_spans", stats.duplicate_spans as i64);

        let ids: HashSet<&str> = inputs.iter().map(|s| s.meta.id.as_str()).collect();
        let swapped = self.catalog.edit_segments(|segments| {
            let present = segments.iter().filter(|s| ids.contains(s.meta.id.as_str())).count();
            if present != inputs.len() {
                return Err(out);
            }
            segments.retain(|s| !ids.contains(s.meta.id.as_str()));
            segments.push(out);
            self.gauges.segments.set(&self.metrics.segments, segments.len() as i64);
            Ok(())
        });
        if let Err(out) = swapped {
            // Cannot happen while retention shares our lock; if an input
            // left the catalog anyway, the output would bring it back.
            self.bury(vec![out]);
            return Err(Error::Corrupt("compaction: an input left the catalog during the merge".into()));
        }
        self.metrics.segment_bytes.inc_by(stats.bytes_out as i64 - stats.bytes_in as i64);
        self.count_compaction(&stats);
        tracing::info!(
            output = %meta.id,
            inputs = stats.inputs,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            traces = stats.traces,
            duplicate_spans = stats.duplicate_spans,
            seconds = t0.elapsed().as_secs_f64(),
            "compacted segments"
        );
        self.bury(inputs);
        self.trim_cache();
        Ok(stats)
    }
}

/// Reads every trace of every input (given oldest first) and groups them
/// by trace ID, in segment order ([`segment::sort_for_segment`]), dropping
/// copies of a span after the first (the oldest input's); returns the
/// traces and the number of copies dropped. Each trace's WAL positions span
/// the inputs' (`max_pos` is what the output's trace-ID index records and
/// replay relies on).
impl CompactStats {
    /// The counts of merging `inputs` into `traces`, `duplicate_spans`
    /// copies dropped (`bytes_out` still 0: the output is not written).
    pub(crate) fn of_merge(
        inputs: &[Arc<Segment>],
        traces: &[(TraceId, TraceEntry)],
        duplicate_spans: u64,
    ) -> CompactStats {
        CompactStats {
            duplicate_spans,
            inputs: inputs.len(),
            bytes_in: inputs.iter().map(|s| s.meta.bytes).sum(),
            traces: traces.len() as u64,
            spans: traces.iter().map(|t| t.1.spans.len() as u64).sum(),
            logs: traces.iter().map(|t| t.1.logs.len() as u64).sum(),
            ..Default::default()
        }
    }
}

impl Storage {
    /// Counts one finished compaction in the compaction metrics
    /// (`skein_compactions`, copies dropped, bytes in and out).
    pub(crate) fn count_compaction(&self, stats: &CompactStats) {
        self.metrics.compactions.inc();
        self.metrics.duplicate_spans.inc_by(stats.duplicate_spans);
        self.metrics.compaction_bytes_in.inc_by(stats.bytes_in);
        self.metrics.compaction_bytes_out.inc_by(stats.bytes_out);
    }
}

/// The segments of `candidates` (oldest first) the size-tiered planner
/// merges next ([`pick_inputs_by`] on their bytes and rows); `None` when
/// too few qualify.
pub(crate) fn pick_segments(
    candidates: &[Arc<Segment>],
    cfg: &CompactionConfig,
) -> Option<Vec<Arc<Segment>>> {
    let sizes: Vec<(u64, u64)> =
        candidates.iter().map(|s| (s.meta.bytes, s.meta.span_count + s.meta.log_count)).collect();
    let picked = pick_inputs_by(&sizes, cfg)?;
    Some(picked.iter().map(|&i| candidates[i].clone()).collect())
}

/// Every span and log record of `seg`, as a compaction merges them.
pub(crate) fn read_all(seg: &Segment) -> Result<(Vec<Span>, Vec<LogRecord>)> {
    let all = |n: u64| std::iter::once(0..n as usize).collect::<Vec<_>>();
    Ok((seg.read_spans(all(seg.meta.span_count))?, seg.read_logs(all(seg.meta.log_count))?))
}

pub(crate) fn merge(
    inputs: &[Arc<Segment>],
    mut read: impl FnMut(&Arc<Segment>) -> Result<(Vec<Span>, Vec<LogRecord>)>,
) -> Result<(Vec<(TraceId, TraceEntry)>, u64)> {
    let mut by_trace: HashMap<TraceId, TraceEntry> = HashMap::new();
    let mut copies = 0u64;
    for seg in inputs {
        let (spans, logs) = read(seg)?;
        if spans.len() as u64 != seg.meta.span_count || logs.len() as u64 != seg.meta.log_count {
            return Err(Error::Corrupt(format!(
                "segment {}: read {} spans and {} logs, meta says {} and {}",
                seg.meta.id,
                spans.len(),
                logs.len(),
                seg.meta.span_count,
                seg.meta.log_count
            )));
        }
        let (mut spans, mut logs) = (spans.into_iter(), logs.into_iter());
        let (mut span_row, mut log_row) = (0usize, 0usize);
        for e in seg.trace_index() {
            if e.span_row as usize != span_row || e.log_row as usize != log_row {
                return Err(Error::Corrupt(format!(
                    "segment {}: trace-ID index rows are not contiguous",
                    seg.meta.id
                )));
            }
            span_row += e.span_count as usize;
            log_row += e.log_count as usize;
            let t = by_trace.entry(e.trace_id).or_insert_with(|| TraceEntry {
                min_pos: e.wal_pos,
                max_pos: e.wal_pos,
                ..TraceEntry::default()
            });
            t.min_pos = t.min_pos.min(e.wal_pos);
            t.max_pos = t.max_pos.max(e.wal_pos);
            for s in spans.by_ref().take(e.span_count as usize) {
                copies += u64::from(!t.add_span(s));
            }
            t.logs.extend(logs.by_ref().take(e.log_count as usize));
        }
    }
    let mut traces: Vec<(TraceId, TraceEntry)> = by_trace.into_iter().collect();
    segment::sort_for_segment(&mut traces);
    Ok((traces, copies))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: usize, max: usize, bytes: u64) -> CompactionConfig {
        CompactionConfig { min_inputs: min, max_inputs: max, max_segment_bytes: bytes, ..Default::default() }
    }

    /// Issue 11: size-tiered by bytes and rows. Segments of up to a
    /// `min_inputs`-th of either bound merge; an output of several of them
    /// is past that and is not merged again; the rows bound caps an
    /// output's rows as the bytes bound caps its bytes.
    #[test]
    fn flushed_segments_merge_once_within_the_row_bound() {
        let c = CompactionConfig { max_rows: 400, ..cfg(4, 8, 1000) };
        // Four flushed segments of 100 rows each qualify (100 <= 400/4).
        assert_eq!(pick_inputs_by(&[(10, 100); 4], &c), Some(vec![0, 1, 2, 3]));
        // Their output (400 rows) is not merged again with newer ones.
        assert_eq!(pick_inputs_by(&[(40, 400), (10, 100), (10, 100), (10, 100)], &c), None);
        // The rows bound caps the output: five of 90 rows would be 450.
        assert_eq!(pick_inputs_by(&[(10, 90); 6], &c), Some(vec![0, 1, 2, 3]));
        // Segments over a quarter of the byte bound are left alone.
        assert_eq!(
            pick_inputs_by(&[(251, 1), (10, 1), (10, 1), (10, 1), (10, 1)], &c),
            Some(vec![1, 2, 3, 4])
        );
        assert!(CompactionConfig { max_rows: 0, ..Default::default() }.check().is_err());
    }

    #[test]
    fn picks_oldest_small_segments_within_bounds() {
        // Too few qualify.
        assert_eq!(pick_inputs(&[10, 10, 10], &cfg(4, 8, 100)), None);
        // Oldest first, capped at max_inputs.
        assert_eq!(pick_inputs(&[10; 10], &cfg(4, 8, 100)), Some((0..8).collect()));
        // Large segments are skipped; the total stays within the bound.
        assert_eq!(pick_inputs(&[100, 30, 30, 30, 30, 5], &cfg(2, 8, 100)), Some(vec![1, 2, 3, 5]));
        // An old segment that leaves no room for enough others is passed over.
        assert_eq!(pick_inputs(&[90, 20, 20, 20, 20], &cfg(4, 8, 100)), Some(vec![1, 2, 3, 4]));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(cfg(1, 8, 100).check().is_err());
        assert!(cfg(4, 3, 100).check().is_err());
        assert!(cfg(4, 8, 0).check().is_err());
        assert!(CompactionConfig::default().check().is_ok());
        let short = CompactionConfig { lease_duration: Duration::from_millis(500), ..Default::default() };
        assert!(short.check().unwrap_err().to_string().contains("compaction.lease_duration"));
        let zero = CompactionConfig { lease_retry_interval: Duration::ZERO, ..Default::default() };
        assert!(zero.check().unwrap_err().to_string().contains("compaction.lease_retry_interval"));
    }
}
