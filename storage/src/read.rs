//! The public read API: a trace by ID, trace and log search, log counts
//! over time, rollups. Each read sees the head, in-flight flushes and
//! segments through one [`Catalog::walk`](crate::catalog::Catalog::walk),
//! so a record moving between them meanwhile is seen exactly once.
//!
//! Every read is blocking (segment reads touch disk or the object store):
//! call them off the async runtime.
//!
//! A segment read that shows damage quarantines the segment and the read
//! goes on without it ([`crate::quarantine`]); the caller learns of it from
//! [`Storage::damage_for_trace`] / [`Storage::damage_in_range`]. The errors
//! documented below are the faults that may pass (I/O, object store).

use std::collections::HashMap;
use std::sync::Arc;

use crate::filter::{analyzer, LogFilter, SpanFilter};
use crate::model::{dedup_spans, LogRecord, Span, TraceId};
use crate::rollup::{Rollup, RollupBuilder};
use crate::segment::Segment;
use crate::{Result, Snapshot, Storage};

/// A span filter and, per segment asked so far, which of its traces have a
/// span meeting it ([`Storage::trace_has_span`]); one per search.
#[derive(Debug)]
pub struct SpanPresence {
    filter: SpanFilter,
    /// By segment ID: bit per trace-ID index entry, `None` when the
    /// segment could not be asked.
    segments: HashMap<String, Option<Arc<Vec<u64>>>>,
}

impl SpanPresence {
    /// Presence of spans meeting `filter` (its time range included).
    pub fn new(filter: SpanFilter) -> SpanPresence {
        SpanPresence { filter, segments: HashMap::new() }
    }
}

impl Storage {
    /// The segments and in-flight flushes as of now (for listings over
    /// segment metadata). Holding it keeps its segments' files from being
    /// deleted by compaction or retention.
    pub fn snapshot(&self) -> Snapshot {
        self.catalog.snapshot()
    }

    /// Every span and log of a trace, from the head, in-flight flushes and
    /// the segments whose trace-ID index lists it. Spans by start time,
    /// each span ID once: copies of a span (a retried batch) stored in
    /// several of those places are dropped here, the first received kept
    /// ([`crate::model::dedup_spans`]), so every API and the search summary
    /// see one copy. Logs by time, as sent (they have no ID). `None` when
    /// nothing of the trace is stored.
    ///
    /// # Errors
    /// A segment that cannot be read (I/O, object store, corrupt file).
    pub fn get_trace(&self, id: &TraceId) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        self.read_trace(id, true)
    }

    /// The spans of a trace without its logs (what a search summary needs):
    /// segments' log rows are not read. `None` when no span is stored.
    ///
    /// # Errors
    /// As [`Storage::get_trace`].
    pub fn get_trace_spans(&self, id: &TraceId) -> Result<Option<Vec<Span>>> {
        Ok(self.read_trace(id, false)?.map(|x| x.0).filter(|s| !s.is_empty()))
    }

    /// The summary of trace `id` as [`crate::summary::summarize`] gives it
    /// over [`Storage::get_trace_spans`], when one segment's summaries.bin
    /// answers it alone: its spans are all in that one segment, none in
    /// memory. `None` otherwise (also when no span is stored): the caller
    /// then reads the spans. No Parquet is read.
    ///
    /// # Errors
    /// As [`Storage::get_trace`].
    pub fn stored_trace_summary(&self, id: &TraceId) -> Result<Option<crate::summary::TraceSummary>> {
        let mut in_memory = false;
        let segments = self.catalog.walk(Some(id), |_, t| in_memory |= !t.spans.is_empty());
        if in_memory {
            return Ok(None);
        }
        let mut holding = segments.iter().filter(|s| s.find(id).is_some_and(|e| e.span_count > 0));
        let (Some(seg), None) = (holding.next(), holding.next()) else { return Ok(None) };
        Ok(self.guarded(seg, |g| g.trace_summary(id))?.flatten())
    }

    /// Whether trace `id` has a span meeting `p`'s filter anywhere: in
    /// memory (checked exactly) or in a segment holding it (through the
    /// segment's span index, computed once per segment and kept in `p`, so
    /// checking many traces costs one index pass per segment, no Parquet).
    /// `true` also when a holding segment cannot be asked (quarantined):
    /// callers use it to skip traces that cannot match, never to accept.
    ///
    /// # Errors
    /// A segment whose index cannot be read.
    pub fn trace_has_span(&self, id: &TraceId, p: &mut SpanPresence) -> Result<bool> {
        let f = &p.filter;
        let mut found = false;
        let segments = self.catalog.walk(Some(id), |_, t| found |= t.spans.iter().any(|s| f.matches(s)));
        if found {
            return Ok(true);
        }
        for seg in &segments {
            let Ok(i) = seg.trace_index().binary_search_by(|e| e.trace_id.cmp(id)) else { continue };
            if seg.trace_index()[i].span_count == 0 {
                continue;
            }
            let bits = match p.segments.get(&seg.meta.id) {
                Some(b) => b.clone(),
                None => {
                    let b = self.guarded(seg, |g| g.traces_matching(&p.filter))?.map(Arc::new);
                    p.segments.insert(seg.meta.id.clone(), b.clone());
                    b
                }
            };
            match bits {
                Some(b) if b.get(i / 64).is_some_and(|w| (w >> (i % 64)) & 1 == 0) => {}
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    fn read_trace(&self, id: &TraceId, with_logs: bool) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        // Spans in the order they were received, so that dropping later
        // copies keeps the first: segments oldest first, then memory. The
        // walk visits the head before the in-flight flush (one runs at a
        // time), which holds older records, hence the reversal.
        let mut memory: Vec<Vec<Span>> = Vec::new();
        let mut logs = Vec::new();
        let segments = self.catalog.walk(Some(id), |_, t| {
            memory.push(t.spans.clone());
            logs.extend(t.logs.iter().cloned());
        });
        let mut holding: Vec<&Arc<Segment>> = segments.iter().filter(|s| s.find(id).is_some()).collect();
        holding.sort_by(|a, b| {
            (a.meta.created_unix_nano, &a.meta.id).cmp(&(b.meta.created_unix_nano, &b.meta.id))
        });
        let mut spans = Vec::new();
        for seg in holding {
            if let Some(Some((s, l))) = self.guarded(seg, |g| g.lookup(id, with_logs))? {
                spans.extend(s);
                logs.extend(l);
            }
        }
        spans.extend(memory.into_iter().rev().flatten());
        if spans.is_empty() && logs.is_empty() {
            return Ok(None);
        }
        dedup_spans(&mut spans);
        spans.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
        logs.sort_by_key(|l| l.effective_time());
        Ok(Some((spans, logs)))
    }

    /// Calls `f` with every span held in memory: the head and in-flight
    /// flushes (for listings that add the segments' metadata to it). `f`
    /// runs under the catalog lock for the head's spans: keep it quick.
    pub fn for_each_memory_span(&self, mut f: impl FnMut(&Span)) {
        self.catalog.walk(None, |_, t| t.spans.iter().for_each(&mut f));
    }

    /// IDs of at most `limit` traces with a span matching `f`, the trace
    /// whose newest matching span is latest first.
    ///
    /// # Errors
    /// A segment whose index or rows cannot be read.
    pub fn search_traces(&self, f: &SpanFilter, limit: usize) -> Result<Vec<TraceId>> {
        let mut best: HashMap<TraceId, u64> = HashMap::new();
        let segments = self.catalog.walk(None, |id, t| {
            if let Some(m) = t.spans.iter().filter(|s| f.matches(s)).map(|s| s.start_time_unix_nano).max() {
                let e = best.entry(*id).or_insert(m);
                *e = (*e).max(m);
            }
        });
        // Newest segments first; stop once `limit` traces are known that
        // are newer than anything an older segment holds (a trace ranks by
        // its newest matching span, which lies within its segment's time
        // range), so a search usually reads one or two segments.
        for seg in newest_first(&segments, f.start_ns, f.end_ns) {
            if kth_newest(best.values().copied(), limit).is_some_and(|k| seg.meta.max_time_unix_nano < k) {
                break;
            }
            for (id, t) in self.guarded(seg, |g| g.search_spans(f, limit))?.unwrap_or_default() {
                let e = best.entry(id).or_insert(t);
                *e = (*e).max(t);
            }
        }
        let mut v: Vec<_> = best.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        Ok(v.into_iter().map(|x| x.0).collect())
    }

    /// IDs of at most `limit` traces with a span matching `f`, the trace
    /// whose longest matching span is longest first (ties: lower trace ID
    /// first), with that span's duration in ns. From the head, in-flight
    /// flushes and each segment's span index (a top-k by duration, no rows
    /// read); every segment in the time range is asked, since none records
    /// how long its traces are. A trace's own duration is at least its
    /// longest span's: callers rank candidates by reading them.
    ///
    /// # Errors
    /// A segment whose index cannot be read.
    pub fn longest_traces(&self, f: &SpanFilter, limit: usize) -> Result<Vec<(TraceId, u64)>> {
        let mut best: HashMap<TraceId, u64> = HashMap::new();
        let mut keep = |id: TraceId, d: u64| {
            let e = best.entry(id).or_insert(d);
            *e = (*e).max(d);
        };
        let segments = self.catalog.walk(None, |id, t| {
            if let Some(m) = t.spans.iter().filter(|s| f.matches(s)).map(|s| s.duration_ns()).max() {
                keep(*id, m);
            }
        });
        for seg in segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
            for (id, d) in self.guarded(seg, |g| g.longest_spans(f, limit))?.unwrap_or_default() {
                keep(id, d);
            }
        }
        let mut v: Vec<_> = best.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        Ok(v)
    }

    /// At most `limit` log records matching `f`, latest first.
    ///
    /// # Errors
    /// A segment whose index or rows cannot be read.
    pub fn search_logs(&self, f: &LogFilter, limit: usize) -> Result<Vec<LogRecord>> {
        let mut an = analyzer();
        let mut out: Vec<LogRecord> = Vec::new();
        // Keep at most ~2x limit candidates while scanning memory, so a
        // broad query over a large head stays bounded.
        let cap = limit.saturating_mul(2).max(1024);
        let segments = self.catalog.walk(f.trace_id.as_ref(), |_, t| {
            out.extend(t.logs.iter().filter(|l| f.matches(l, &mut an)).cloned());
            if out.len() > cap {
                out.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
                out.truncate(limit);
            }
        });
        if f.trace_id.is_some() {
            for seg in segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
                out.extend(self.guarded(seg, |g| g.search_logs(f, limit))?.unwrap_or_default());
            }
        } else {
            // The newest `limit` matches over all segments are chosen from
            // the indexes first (newest segments first, stopping as trace
            // search does); only their rows are then read.
            let segs = newest_first(&segments, f.start_ns, f.end_ns);
            let mut picked: Vec<(u64, usize, usize)> = Vec::new(); // (time, segment, row)
            for (i, seg) in segs.iter().enumerate() {
                let times = out.iter().map(LogRecord::effective_time).chain(picked.iter().map(|p| p.0));
                if kth_newest(times, limit).is_some_and(|k| seg.meta.max_time_unix_nano < k) {
                    break;
                }
                let rows = self.guarded(seg, |g| g.search_log_rows(f, limit))?.unwrap_or_default();
                picked.extend(rows.into_iter().map(|(t, r)| (t, i, r)));
                picked.sort_unstable_by(|a, b| b.cmp(a));
                picked.truncate(limit);
            }
            let mut by_segment: HashMap<usize, Vec<std::ops::Range<usize>>> = HashMap::new();
            for (_, i, r) in picked {
                by_segment.entry(i).or_default().push(r..r + 1);
            }
            for (i, ranges) in by_segment {
                out.extend(self.guarded(segs[i], |g| g.read_logs(ranges))?.unwrap_or_default());
            }
        }
        out.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
        out.truncate(limit);
        Ok(out)
    }

    /// Counts of logs matching `f` per `step`-wide bucket (in ns, at least
    /// 1), keyed by bucket start (a multiple of `step`, in Unix ns).
    ///
    /// # Errors
    /// A segment whose index or rows cannot be read.
    pub fn log_histogram(&self, f: &LogFilter, _start: u64, step: u64) -> Result<HashMap<u64, u64>> {
        let step = step.max(1);
        let mut an = analyzer();
        let mut counts: HashMap<u64, u64> = HashMap::new();
        let mut count = |ts: u64, n: u64| *counts.entry(ts - ts % step).or_insert(0) += n;
        let segments = self.catalog.walk(f.trace_id.as_ref(), |_, t| {
            for l in t.logs.iter().filter(|l| f.matches(l, &mut an)) {
                count(l.effective_time(), 1);
            }
        });
        for seg in segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
            if f.trace_id.is_some() {
                for l in self.guarded(seg, |g| g.search_logs(f, usize::MAX))?.unwrap_or_default() {
                    count(l.effective_time(), 1);
                }
            } else {
                // Bucket starts are multiples of `step` already.
                for (k, v) in self.guarded(seg, |g| g.count_logs(f, step))?.unwrap_or_default() {
                    count(k, v);
                }
            }
        }
        Ok(counts)
    }

    /// Rollups covering `[start, end]` (Unix ns, open when `None`): those
    /// stored with segments (shared, not copied), plus one computed now
    /// from the head and in-flight flushes.
    pub fn rollups(&self, start: Option<u64>, end: Option<u64>) -> Vec<Arc<Rollup>> {
        let mut b = RollupBuilder::default();
        let segments = self.catalog.walk(None, |_, t| b.add_trace(&t.spans));
        let mut out: Vec<Arc<Rollup>> =
            segments.iter().filter(|s| s.overlaps(start, end)).map(|s| Arc::clone(&s.rollup)).collect();
        out.push(Arc::new(b.build()));
        out
    }
}

/// The segments overlapping `[start, end]`, newest data first.
fn newest_first(segments: &[Arc<Segment>], start: Option<u64>, end: Option<u64>) -> Vec<&Arc<Segment>> {
    let mut segs: Vec<&Arc<Segment>> = segments.iter().filter(|s| s.overlaps(start, end)).collect();
    segs.sort_by_key(|s| std::cmp::Reverse(s.meta.max_time_unix_nano));
    segs
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
