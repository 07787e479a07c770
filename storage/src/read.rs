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
//!
//! A query reads through a [`Reader`] ([`Storage::reader`]), which carries
//! its [`ReadCtx`]: every loop over segments (and over a trace's segments)
//! checks it between segments and stops with [`Error::Cancelled`] once the
//! query is cancelled or past its deadline, and tallies the work done
//! ([`ReadStats`]) so an answer can say what it cost. The `Storage`
//! methods of the same names read without a deadline.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::filter::{analyzer, LogFilter, SpanFilter};
use crate::model::{dedup_spans, LogRecord, Span, TraceId};
use crate::rollup::{Rollup, RollupBuilder};
use crate::segment::Segment;
use crate::{Error, Result, Snapshot, Storage};

/// The cancellation and the tally of one query's reads, shared by the
/// query's caller (which may cancel it) and the thread reading. Cheap to
/// clone: clones share one state. The default never stops by itself.
///
/// Reads check it between units of work (a segment, a trace), never in
/// the middle of one, so a cancelled read stops within one unit.
#[derive(Debug, Clone, Default)]
pub struct ReadCtx(Arc<CtxState>);

#[derive(Debug, Default)]
struct CtxState {
    deadline: Option<Instant>,
    cancelled: AtomicBool,
    segments: Mutex<HashSet<String>>,
    bytes: AtomicU64,
    traces: AtomicU64,
    spans: AtomicU64,
    logs: AtomicU64,
}

/// The work a query's reads did, as counted in its [`ReadCtx`] (each a
/// count of what was read, not an estimate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Distinct segments whose index or rows were read.
    pub segments: u64,
    /// Bytes of the Parquet pages holding the rows read (compressed, as
    /// stored: what a read fetches from disk or the object store); index
    /// lookups are not counted.
    pub bytes: u64,
    /// Traces read and evaluated.
    pub traces: u64,
    /// Spans of those traces.
    pub spans: u64,
    /// Log records read from segments, or checked in memory.
    pub logs: u64,
}

impl ReadCtx {
    /// A context that stops its reads at `deadline`, or earlier when
    /// [`ReadCtx::cancel`] is called.
    pub fn with_deadline(deadline: Instant) -> ReadCtx {
        ReadCtx(Arc::new(CtxState { deadline: Some(deadline), ..Default::default() }))
    }

    /// Stops the reads of this context at their next check.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether reads must stop: cancelled, or past the deadline.
    pub fn is_stopped(&self) -> bool {
        self.0.cancelled.load(Ordering::Relaxed) || self.0.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The check between units of work.
    ///
    /// # Errors
    /// [`Error::Cancelled`] once [`ReadCtx::is_stopped`].
    pub fn check(&self) -> Result<()> {
        if self.is_stopped() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Counts segment `id` as read (once per segment).
    pub fn add_segment(&self, id: &str) {
        let mut seen = self.0.segments.lock();
        if !seen.contains(id) {
            seen.insert(id.to_string());
        }
    }

    /// Counts `n` bytes of Parquet pages read.
    pub fn add_bytes(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one trace read with its `spans` spans.
    pub fn add_trace(&self, spans: usize) {
        self.0.traces.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
    }

    /// Counts `n` log records read or checked.
    pub fn add_logs(&self, n: usize) {
        self.0.logs.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The work counted so far.
    pub fn stats(&self) -> ReadStats {
        ReadStats {
            segments: self.0.segments.lock().len() as u64,
            bytes: self.0.bytes.load(Ordering::Relaxed),
            traces: self.0.traces.load(Ordering::Relaxed),
            spans: self.0.spans.load(Ordering::Relaxed),
            logs: self.0.logs.load(Ordering::Relaxed),
        }
    }
}

/// The reads of one query: [`Storage`]'s read API under a [`ReadCtx`]
/// that can stop them and that counts their work. See [`Storage::reader`].
/// Besides the errors each method documents, every one fails with
/// [`Error::Cancelled`] once its context is stopped.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    s: &'a Storage,
    ctx: &'a ReadCtx,
}

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

    /// The read API under `ctx`: the same reads as the `Storage` methods
    /// of the same names, stopped with [`Error::Cancelled`] between
    /// segments (and traces) once `ctx` is cancelled or past its deadline,
    /// their work counted in `ctx`.
    pub fn reader<'a>(&'a self, ctx: &'a ReadCtx) -> Reader<'a> {
        Reader { s: self, ctx }
    }

    /// [`Reader::get_trace`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::get_trace`].
    pub fn get_trace(&self, id: &TraceId) -> Result<Option<(Vec<Span>, Vec<LogRecord>)>> {
        self.reader(&ReadCtx::default()).get_trace(id)
    }

    /// [`Reader::get_trace_spans`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::get_trace`].
    pub fn get_trace_spans(&self, id: &TraceId) -> Result<Option<Vec<Span>>> {
        self.reader(&ReadCtx::default()).get_trace_spans(id)
    }

    /// [`Reader::stored_trace_summary`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::get_trace`].
    pub fn stored_trace_summary(&self, id: &TraceId) -> Result<Option<crate::summary::TraceSummary>> {
        self.reader(&ReadCtx::default()).stored_trace_summary(id)
    }

    /// [`Reader::trace_has_span`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::trace_has_span`].
    pub fn trace_has_span(&self, id: &TraceId, p: &mut SpanPresence) -> Result<bool> {
        self.reader(&ReadCtx::default()).trace_has_span(id, p)
    }

    /// Calls `f` with every span held in memory: the head and in-flight
    /// flushes (for listings that add the segments' metadata to it). `f`
    /// runs under the catalog lock for the head's spans: keep it quick.
    pub fn for_each_memory_span(&self, mut f: impl FnMut(&Span)) {
        self.catalog.walk(None, |_, t| t.spans.iter().for_each(&mut f));
    }

    /// [`Reader::search_traces`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::search_traces`].
    pub fn search_traces(&self, f: &SpanFilter, limit: usize) -> Result<Vec<TraceId>> {
        self.reader(&ReadCtx::default()).search_traces(f, limit)
    }

    /// [`Reader::longest_traces`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::longest_traces`].
    pub fn longest_traces(&self, f: &SpanFilter, limit: usize) -> Result<Vec<(TraceId, u64)>> {
        self.reader(&ReadCtx::default()).longest_traces(f, limit)
    }

    /// [`Reader::search_logs`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::search_logs`].
    pub fn search_logs(&self, f: &LogFilter, limit: usize) -> Result<Vec<LogRecord>> {
        self.reader(&ReadCtx::default()).search_logs(f, limit)
    }

    /// [`Reader::log_histogram`] without a deadline.
    ///
    /// # Errors
    /// As [`Reader::log_histogram`].
    pub fn log_histogram(&self, f: &LogFilter, start: u64, step: u64) -> Result<HashMap<u64, u64>> {
        self.reader(&ReadCtx::default()).log_histogram(f, start, step)
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

impl<'a> Reader<'a> {
    /// The context these reads run under.
    pub fn ctx(&self) -> &'a ReadCtx {
        self.ctx
    }

    /// The storage read, for what this API does not cover (metadata,
    /// rollups, damage).
    pub fn storage(&self) -> &'a Storage {
        self.s
    }

    /// Counts the log rows of `f`'s trace in `seg`, which a log read by
    /// trace ID reads whole ([`Segment::search_logs`]).
    fn add_trace_log_bytes(&self, seg: &Segment, f: &LogFilter) {
        if let Some(e) = f.trace_id.as_ref().and_then(|t| seg.find(t)) {
            self.ctx.add_bytes(seg.log_read_bytes(&[e.log_rows()]));
        }
    }

    /// The check before reading `seg`, which it then counts as read.
    fn enter(&self, seg: &Segment) -> Result<()> {
        self.ctx.check()?;
        self.ctx.add_segment(&seg.meta.id);
        Ok(())
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
        let segments = self.s.catalog.walk(Some(id), |_, t| in_memory |= !t.spans.is_empty());
        if in_memory {
            return Ok(None);
        }
        let mut holding = segments.iter().filter(|s| s.find(id).is_some_and(|e| e.span_count > 0));
        let (Some(seg), None) = (holding.next(), holding.next()) else { return Ok(None) };
        self.enter(seg)?;
        Ok(self.s.guarded(seg, |g| g.trace_summary(id))?.flatten())
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
        let segments = self.s.catalog.walk(Some(id), |_, t| found |= t.spans.iter().any(|s| f.matches(s)));
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
                    self.enter(seg)?;
                    let b = self.s.guarded(seg, |g| g.traces_matching(&p.filter))?.map(Arc::new);
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
        // Self-tracing: a lookup by ID is a span; a search's reads of its
        // candidates (spans only) are DEBUG, which is not exported.
        // Numbers as i64: tracing-opentelemetry turns a u64 into a string.
        macro_rules! read_span {
            ($level:ident) => {
                tracing::$level!(
                    "storage.read_trace",
                    memory_spans = tracing::field::Empty,
                    segments_read = tracing::field::Empty,
                    segments_skipped = tracing::field::Empty,
                    spans = tracing::field::Empty,
                    logs = tracing::field::Empty,
                )
            };
        }
        let span = if with_logs { read_span!(info_span) } else { read_span!(debug_span) };
        let _in = span.enter();
        // Spans in the order they were received, so that dropping later
        // copies keeps the first: segments oldest first, then memory. The
        // walk visits the head before the in-flight flush (one runs at a
        // time), which holds older records, hence the reversal.
        let mut memory: Vec<Vec<Span>> = Vec::new();
        let mut logs = Vec::new();
        let segments = self.s.catalog.walk(Some(id), |_, t| {
            memory.push(t.spans.clone());
            logs.extend(t.logs.iter().cloned());
        });
        let mut holding: Vec<&Arc<Segment>> = segments.iter().filter(|s| s.find(id).is_some()).collect();
        span.record("memory_spans", memory.iter().map(Vec::len).sum::<usize>() as i64);
        span.record("segments_read", holding.len() as i64);
        span.record("segments_skipped", (segments.len() - holding.len()) as i64);
        holding.sort_by(|a, b| {
            (a.meta.created_unix_nano, &a.meta.id).cmp(&(b.meta.created_unix_nano, &b.meta.id))
        });
        let mut spans = Vec::new();
        // A trace spread over many segments stops between them.
        for seg in holding {
            self.enter(seg)?;
            self.ctx.add_bytes(seg.trace_read_bytes(id, with_logs));
            if let Some(Some((s, l))) = self.s.guarded(seg, |g| g.lookup(id, with_logs))? {
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
        span.record("spans", spans.len() as i64);
        span.record("logs", logs.len() as i64);
        Ok(Some((spans, logs)))
    }

    /// IDs of at most `limit` traces with a span matching `f`, the trace
    /// whose newest matching span is latest first.
    ///
    /// # Errors
    /// A segment whose index or rows cannot be read.
    pub fn search_traces(&self, f: &SpanFilter, limit: usize) -> Result<Vec<TraceId>> {
        let span = tracing::info_span!(
            "storage.search_spans",
            limit = limit as i64,
            memory_traces = tracing::field::Empty,
            segments = tracing::field::Empty,
            segments_read = tracing::field::Empty,
            segments_skipped = tracing::field::Empty,
            traces = tracing::field::Empty,
        );
        let _in = span.enter();
        let mut best: HashMap<TraceId, u64> = HashMap::new();
        let segments = self.s.catalog.walk(None, |id, t| {
            if let Some(m) = t.spans.iter().filter(|s| f.matches(s)).map(|s| s.start_time_unix_nano).max() {
                let e = best.entry(*id).or_insert(m);
                *e = (*e).max(m);
            }
        });
        // Newest segments first; stop once `limit` traces are known that
        // are newer than anything an older segment holds (a trace ranks by
        // its newest matching span, which lies within its segment's time
        // range), so a search usually reads one or two segments.
        span.record("memory_traces", best.len() as i64);
        span.record("segments", segments.len() as i64);
        let mut read = 0;
        for seg in newest_first(&segments, f.start_ns, f.end_ns) {
            if kth_newest(best.values().copied(), limit).is_some_and(|k| seg.meta.max_time_unix_nano < k) {
                break;
            }
            read += 1;
            self.enter(seg)?;
            for (id, t) in self.s.guarded(seg, |g| g.search_spans(f, limit))?.unwrap_or_default() {
                let e = best.entry(id).or_insert(t);
                *e = (*e).max(t);
            }
        }
        span.record("segments_read", read as i64);
        span.record("segments_skipped", (segments.len() - read) as i64);
        let mut v: Vec<_> = best.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        span.record("traces", v.len() as i64);
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
        let segments = self.s.catalog.walk(None, |id, t| {
            if let Some(m) = t.spans.iter().filter(|s| f.matches(s)).map(|s| s.duration_ns()).max() {
                keep(*id, m);
            }
        });
        for seg in segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
            self.enter(seg)?;
            for (id, d) in self.s.guarded(seg, |g| g.longest_spans(f, limit))?.unwrap_or_default() {
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
        let mut checked = 0;
        let segments = self.s.catalog.walk(f.trace_id.as_ref(), |_, t| {
            checked += t.logs.len();
            out.extend(t.logs.iter().filter(|l| f.matches(l, &mut an)).cloned());
            if out.len() > cap {
                out.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
                out.truncate(limit);
            }
        });
        self.ctx.add_logs(checked);
        if f.trace_id.is_some() {
            for seg in segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
                self.enter(seg)?;
                self.add_trace_log_bytes(seg, f);
                let found = self.s.guarded(seg, |g| g.search_logs(f, limit))?.unwrap_or_default();
                self.ctx.add_logs(found.len());
                out.extend(found);
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
                self.enter(seg)?;
                let rows = self.s.guarded(seg, |g| g.search_log_rows(f, limit))?.unwrap_or_default();
                picked.extend(rows.into_iter().map(|(t, r)| (t, i, r)));
                picked.sort_unstable_by(|a, b| b.cmp(a));
                picked.truncate(limit);
            }
            let mut by_segment: HashMap<usize, Vec<std::ops::Range<usize>>> = HashMap::new();
            for (_, i, r) in picked {
                by_segment.entry(i).or_default().push(r..r + 1);
            }
            for (i, ranges) in by_segment {
                self.ctx.check()?;
                self.ctx.add_bytes(segs[i].log_read_bytes(&ranges));
                let read = self.s.guarded(segs[i], |g| g.read_logs(ranges))?.unwrap_or_default();
                self.ctx.add_logs(read.len());
                out.extend(read);
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
        let segments = self.s.catalog.walk(f.trace_id.as_ref(), |_, t| {
            for l in t.logs.iter().filter(|l| f.matches(l, &mut an)) {
                count(l.effective_time(), 1);
            }
        });
        for seg in segments.iter().filter(|s| s.overlaps(f.start_ns, f.end_ns)) {
            self.enter(seg)?;
            if f.trace_id.is_some() {
                self.add_trace_log_bytes(seg, f);
                for l in self.s.guarded(seg, |g| g.search_logs(f, usize::MAX))?.unwrap_or_default() {
                    count(l.effective_time(), 1);
                }
            } else {
                // Bucket starts are multiples of `step` already.
                for (k, v) in self.s.guarded(seg, |g| g.count_logs(f, step))?.unwrap_or_default() {
                    count(k, v);
                }
            }
        }
        Ok(counts)
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::testsuite::{append_spans_of, test_config};

    /// A read under a stopped context stops before its next segment, and
    /// a read under a live one counts the segments and Parquet bytes read.
    #[tokio::test]
    async fn a_stopped_context_stops_reads_and_a_live_one_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        for t in 1..=3u8 {
            append_spans_of(&s, t, 0, 4).await;
            s.flush(true).unwrap();
        }
        let live = ReadCtx::default();
        let r = s.reader(&live);
        assert_eq!(r.search_traces(&SpanFilter::default(), 10).unwrap().len(), 3);
        let (spans, _) = r.get_trace(&TraceId([2; 16])).unwrap().unwrap();
        let st = live.stats();
        assert_eq!(st.segments, 3, "{st:?}");
        assert!(st.bytes > 0, "{st:?}");

        let past = ReadCtx::with_deadline(Instant::now());
        let r = s.reader(&past);
        assert!(matches!(r.search_traces(&SpanFilter::default(), 10), Err(Error::Cancelled)));
        assert!(matches!(r.get_trace(&TraceId([2; 16])), Err(Error::Cancelled)));
        assert!(matches!(r.search_logs(&LogFilter::default(), 10), Err(Error::Cancelled)));
        assert_eq!(past.stats().segments, 0, "nothing read after the deadline");
        let cancelled = ReadCtx::default();
        cancelled.cancel();
        assert!(s.reader(&cancelled).get_trace(&TraceId([2; 16])).is_err());
        // Without a context, as before.
        assert_eq!(s.get_trace(&TraceId([2; 16])).unwrap().unwrap().0, spans);
    }
}
