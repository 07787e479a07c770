//! The head: live traces in memory, keyed by trace ID.
//!
//! Records enter the head on the WAL thread, after their WAL record is
//! durable and in WAL order, so for each trace the head holds a contiguous
//! run of its WAL records. That is what lets a segment record, per trace, the
//! last WAL position it contains (`max_pos`) and lets replay skip exactly the
//! records already flushed.
//!
//! Copies of a span (a batch an exporter sent again) are dropped on insert,
//! the first copy kept ([`crate::model::dedup_spans`] states the rule); the
//! WAL positions of the dropped copy's record still count, so a segment
//! tells replay that the copy needs no replaying either.
//!
//! A trace holds at most `head.max_bytes_per_trace` of spans in the head
//! (Tempo's `max_bytes_per_trace`, 5 MB by default there too): spans past
//! it are dropped and counted (`skein_trace_limit_dropped_spans_total`),
//! so one runaway trace cannot take the head. The cap is per stay in the
//! head: a trace flushed to a segment starts again from zero.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use crate::model::{attrs_heap_size, LogRecord, Resource, Scope, Span, SpanId, TraceId};

/// Bytes one trace's slot in the head's map takes beside its records: the
/// `(TraceId, TraceEntry)` bucket, its control byte, and the map's spare
/// buckets (hashbrown keeps at most 7/8 of them full and doubles when it
/// grows, so a table is on average about 2/3 full).
pub const MAP_SLOT_BYTES: usize = (std::mem::size_of::<(TraceId, TraceEntry)>() + 1) * 3 / 2;

/// Heap bytes a resource and a scope take: their `Arc` allocations (two
/// counters and the value) and what those own. The records of one request
/// share them; [`Head`] counts them once per sharing, as a share per record
/// (see [`Head::memory_bytes`]).
pub fn shared_bytes(resource: &Resource, scope: &Scope) -> usize {
    2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Resource>()
        + resource.service_name.capacity()
        + attrs_heap_size(&resource.attributes)
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Scope>()
        + scope.name.capacity()
        + scope.version.capacity()
}

/// Heap bytes of a `HashSet<SpanId>` of this capacity (hashbrown: a power
/// of two of buckets, at most 7/8 full, each one `SpanId` and one control
/// byte, plus one group of control bytes).
fn span_id_set_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<SpanId>() + 1) + 16
}

/// One trace's records in the head. Log records without trace context are
/// kept under [`TraceId::ZERO`] and flushed by age.
#[derive(Debug, Clone, Default)]
pub struct TraceEntry {
    /// The trace's spans, in arrival order, each span ID once when added
    /// through [`TraceEntry::add_span`].
    pub spans: Vec<Span>,
    /// The span IDs of `spans` added through [`TraceEntry::add_span`]: what
    /// finds a copy of a span in O(1). Not counted in `bytes`.
    pub span_ids: HashSet<SpanId>,
    /// The trace's log records, in arrival order.
    pub logs: Vec<LogRecord>,
    /// Milliseconds on the head's clock ([`Head::now_ms`]) when the first
    /// record came.
    pub first_seen_ms: u64,
    /// Milliseconds on the head's clock when the latest record came.
    pub last_seen_ms: u64,
    /// Lowest WAL position of the records held: WAL files from it on are
    /// kept.
    pub min_pos: u64,
    /// Highest WAL position of the records held: what a segment records
    /// for replay to skip.
    pub max_pos: u64,
    /// Bytes of the records themselves ([`Span::heap_size`],
    /// [`LogRecord::heap_size`]): what `head.max_bytes_per_trace` caps.
    pub bytes: usize,
    /// Bytes the entry takes beside its records: the spare capacity of
    /// `spans` and `logs`, `span_ids`, its map slot ([`MAP_SLOT_BYTES`]) and
    /// its records' shares of their resources and scopes. With `bytes`, the
    /// entry's real memory ([`Head::memory_bytes`]).
    pub overhead: usize,
}

impl TraceEntry {
    /// Bytes of the entry's containers beyond their records: spare `Vec`
    /// capacity and the span-ID set.
    fn container_bytes(&self) -> usize {
        (self.spans.capacity() - self.spans.len()) * std::mem::size_of::<Span>()
            + (self.logs.capacity() - self.logs.len()) * std::mem::size_of::<LogRecord>()
            + span_id_set_bytes(self.span_ids.capacity())
    }

    /// The entry's real memory: records and overhead.
    pub fn memory(&self) -> usize {
        self.bytes + self.overhead
    }

    /// Adds `span` unless the entry already holds a span with its span ID
    /// (a copy: the first one stays, see [`crate::model::dedup_spans`]);
    /// returns whether it was added. The entry's WAL positions and `bytes`
    /// are the caller's.
    pub fn add_span(&mut self, span: Span) -> bool {
        let added = self.span_ids.insert(span.span_id);
        if added {
            self.spans.push(span);
        }
        added
    }
}

/// Why traces are cut from the head.
#[derive(Debug, Clone, Copy)]
pub struct CutPolicy {
    /// Now, on the head's clock ([`Head::now_ms`]).
    pub now_ms: u64,
    /// Cut traces with no new record for this many ms.
    pub idle_ms: u64,
    /// Cut traces whose first record came this many ms ago.
    pub max_age_ms: u64,
    /// Cut the least recently updated traces until the head is under this.
    pub target_bytes: usize,
    /// Cut everything (shutdown, explicit flush).
    pub all: bool,
}

/// Live traces in memory, keyed by trace ID (concurrent: a sharded map).
#[derive(Debug)]
pub struct Head {
    traces: DashMap<TraceId, TraceEntry>,
    bytes: AtomicI64,
    /// Sum of the entries' `overhead`.
    overhead: AtomicI64,
    /// Bytes of traces cut by [`Head::cut`] whose flush has not ended
    /// ([`Head::flush_ended`]): still in memory, with the flush's own
    /// buffers beside them.
    flushing_bytes: AtomicI64,
    /// Their overhead.
    flushing_overhead: AtomicI64,
    epoch: Instant,
    /// Span bytes one trace may hold ([`Head::limit_trace_bytes`]).
    max_bytes_per_trace: AtomicUsize,
    /// Spans dropped for that limit.
    over_trace_limit: prometheus_client::metrics::counter::Counter,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            traces: DashMap::new(),
            bytes: AtomicI64::new(0),
            overhead: AtomicI64::new(0),
            flushing_bytes: AtomicI64::new(0),
            flushing_overhead: AtomicI64::new(0),
            epoch: Instant::now(),
            max_bytes_per_trace: AtomicUsize::new(usize::MAX),
            over_trace_limit: Default::default(),
        }
    }
}

impl Head {
    /// Milliseconds since the head was created (a monotonic clock).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes of every record held ([`Span::heap_size`]), without the
    /// head's own structures ([`Head::memory_bytes`] has those).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed).max(0) as usize
    }

    /// Approximate heap bytes of every record in memory: those in the head
    /// and those cut from it for a flush that has not ended. What the
    /// head's memory limit (`head.max_bytes * head.overload_factor`) is
    /// checked against, so that a long flush does not let the head fill
    /// again beside the traces it is still writing.
    pub fn held_bytes(&self) -> usize {
        (self.bytes.load(Ordering::Relaxed) + self.flushing_bytes.load(Ordering::Relaxed)).max(0) as usize
    }

    /// Real memory of the head: [`Head::held_bytes`] plus every entry's
    /// overhead (spare capacity, span-ID sets, map slots, resource and
    /// scope shares), in the head and in unfinished flushes. Within about
    /// a fifth of what the allocator hands out for realistic spans and
    /// logs (`storage/tests/head_memory.rs`); what `head.max_bytes` and
    /// the overload limit are checked against.
    pub fn memory_bytes(&self) -> usize {
        (self.bytes.load(Ordering::Relaxed)
            + self.flushing_bytes.load(Ordering::Relaxed)
            + self.overhead.load(Ordering::Relaxed)
            + self.flushing_overhead.load(Ordering::Relaxed))
        .max(0) as usize
    }

    /// Real memory of the traces in the head only (not those being
    /// flushed): what a flush cuts down.
    pub fn head_memory_bytes(&self) -> usize {
        (self.bytes.load(Ordering::Relaxed) + self.overhead.load(Ordering::Relaxed)).max(0) as usize
    }

    /// Ends the accounting of a flush's traces in [`Head::held_bytes`]
    /// (written or not: a failed flush puts them back with
    /// [`Head::restore`], which counts them in the head again).
    pub fn flush_ended(&self, flushing: &Flushing) {
        let b: usize = flushing.traces.iter().map(|t| t.1.bytes).sum();
        let o: usize = flushing.traces.iter().map(|t| t.1.overhead).sum();
        self.flushing_bytes.fetch_sub(b as i64, Ordering::Relaxed);
        self.flushing_overhead.fetch_sub(o as i64, Ordering::Relaxed);
    }

    /// Traces held (the bucket of logs without trace context counts as one).
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Caps the span bytes ([`Span::heap_size`]) one trace holds at
    /// `max` (the first span of a trace is always kept), and counts the
    /// spans dropped for it in `dropped`.
    pub fn limit_trace_bytes(&mut self, max: usize, dropped: prometheus_client::metrics::counter::Counter) {
        self.max_bytes_per_trace.store(max, Ordering::Relaxed);
        self.over_trace_limit = dropped;
    }

    /// Adds the spans of one WAL record at position `pos`, dropping copies
    /// of spans the trace's entry already holds (a retried batch) and
    /// spans past the trace's byte limit ([`Head::limit_trace_bytes`],
    /// counted there). Returns the number of copies dropped.
    pub fn insert_spans(&self, pos: u64, spans: Vec<Span>) -> usize {
        let max = self.max_bytes_per_trace.load(Ordering::Relaxed);
        let over = std::cell::Cell::new(0usize);
        let refused = self.insert(
            pos,
            spans,
            |s| s.trace_id,
            Span::heap_size,
            |s| (&s.resource, &s.scope),
            |e, s| {
                let copy = e.span_ids.contains(&s.span_id);
                if !copy && !e.spans.is_empty() && e.bytes.saturating_add(s.heap_size()) > max {
                    over.set(over.get() + 1);
                    return false;
                }
                e.add_span(s)
            },
        );
        self.over_trace_limit.inc_by(over.get() as u64);
        refused - over.get()
    }

    /// Adds the log records of one WAL record at position `pos`. Logs have
    /// no ID: every record is kept as sent, so this returns 0 (the count
    /// only mirrors [`Head::insert_spans`] for the signal-generic append).
    pub fn insert_logs(&self, pos: u64, logs: Vec<LogRecord>) -> usize {
        self.insert(
            pos,
            logs,
            |l| l.trace_id,
            LogRecord::heap_size,
            |l| (&l.resource, &l.scope),
            |e, l| {
                e.logs.push(l);
                true
            },
        )
    }

    /// Adds the records of one WAL record at `pos` to their traces' entries
    /// (the one insert path behind both signals) and returns how many `add`
    /// refused. A refused record still moves the entry's WAL positions
    /// (its record is in the WAL like any other, and a segment must tell
    /// replay to skip it) but adds no bytes.
    ///
    /// Overhead: each added record carries its share of its resource and
    /// scope (their bytes over the `Arc`'s holder count at insert, so the
    /// records of one request together count them about once), and the
    /// entry's container growth and map slot are counted as they happen.
    fn insert<T>(
        &self,
        pos: u64,
        records: Vec<T>,
        trace_id: impl Fn(&T) -> TraceId,
        heap_size: impl Fn(&T) -> usize,
        shared: impl Fn(&T) -> (&Arc<Resource>, &Arc<Scope>),
        add: impl Fn(&mut TraceEntry, T) -> bool,
    ) -> usize {
        let now = self.now_ms();
        let (mut added, mut overhead, mut refused) = (0usize, 0i64, 0usize);
        // The shared bytes of the last resource seen: a request's records
        // come grouped by resource, so this is computed once per group.
        let mut last: Option<(*const Resource, *const Scope, usize)> = None;
        for r in records {
            let size = heap_size(&r);
            let share = {
                let (res, scope) = shared(&r);
                let key = (Arc::as_ptr(res), Arc::as_ptr(scope));
                let b = match last {
                    Some((a, b, n)) if (a, b) == key => n,
                    _ => {
                        let n = shared_bytes(res, scope);
                        last = Some((key.0, key.1, n));
                        n
                    }
                };
                b / Arc::strong_count(res).max(1)
            };
            let mut e = match self.traces.entry(trace_id(&r)) {
                dashmap::Entry::Occupied(o) => o.into_ref(),
                dashmap::Entry::Vacant(v) => {
                    overhead += MAP_SLOT_BYTES as i64;
                    v.insert(TraceEntry {
                        first_seen_ms: now,
                        last_seen_ms: now,
                        min_pos: pos,
                        max_pos: pos,
                        overhead: MAP_SLOT_BYTES,
                        ..TraceEntry::default()
                    })
                }
            };
            e.last_seen_ms = now;
            e.min_pos = e.min_pos.min(pos);
            e.max_pos = e.max_pos.max(pos);
            let before = e.container_bytes();
            if add(&mut e, r) {
                let after = e.container_bytes();
                let delta = after as i64 - before as i64 + share as i64;
                e.overhead = (e.overhead as i64 + delta).max(0) as usize;
                overhead += delta;
                e.bytes += size;
                added += size;
            } else {
                refused += 1;
            }
        }
        self.bytes.fetch_add(added as i64, Ordering::Relaxed);
        self.overhead.fetch_add(overhead, Ordering::Relaxed);
        refused
    }

    /// Puts back a trace cut by [`Head::cut`] whose flush failed, merging it
    /// with whatever arrived for that trace meanwhile. Both WAL positions
    /// are kept exactly: `min_pos` keeps WAL reclamation from deleting
    /// records that now live only in memory, `max_pos` lets a later
    /// segment tell replay that every record up to it is flushed.
    ///
    /// Spans that arrived meanwhile and are copies of the restored ones are
    /// dropped: the restored copies came first.
    pub fn restore(&self, id: TraceId, t: TraceEntry) {
        let mut added = t.bytes as i64;
        // Approximate on a merge: both entries' overhead is kept.
        self.overhead.fetch_add(t.overhead as i64, Ordering::Relaxed);
        match self.traces.entry(id) {
            dashmap::Entry::Vacant(v) => {
                v.insert(t);
            }
            dashmap::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                let mut dropped = 0usize;
                e.spans.retain(|s| {
                    let copy = t.span_ids.contains(&s.span_id);
                    if copy {
                        dropped += s.heap_size();
                    }
                    !copy
                });
                e.bytes -= dropped;
                added -= dropped as i64;
                e.span_ids.extend(t.span_ids);
                e.spans.splice(0..0, t.spans);
                e.logs.splice(0..0, t.logs);
                e.first_seen_ms = e.first_seen_ms.min(t.first_seen_ms);
                e.last_seen_ms = e.last_seen_ms.max(t.last_seen_ms);
                e.min_pos = e.min_pos.min(t.min_pos);
                e.max_pos = e.max_pos.max(t.max_pos);
                e.bytes += t.bytes;
                e.overhead += t.overhead;
            }
        }
        self.bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// Removes and returns the traces the policy selects
    /// ([`Head::select`]).
    pub fn cut(&self, p: CutPolicy) -> Vec<(TraceId, TraceEntry)> {
        let ids: Vec<TraceId> = self.select(p).into_iter().map(|t| t.0).collect();
        self.cut_ids(&ids)
    }

    /// The traces the policy selects, with their real memory
    /// ([`TraceEntry::memory`]) at selection, without removing them: those
    /// due (idle, old, or every one with `all`), least recently updated
    /// first, then the least recently updated others until what stays is
    /// at most `target_bytes` of real memory. A flush cuts them in bounded
    /// blocks ([`Head::cut_ids`]).
    pub fn select(&self, p: CutPolicy) -> Vec<(TraceId, usize)> {
        let mut due: Vec<(u64, TraceId, usize)> = Vec::new();
        let mut rest: Vec<(u64, TraceId, usize)> = Vec::new();
        let mut kept_bytes = 0usize;
        for e in self.traces.iter() {
            let t = e.value();
            let m = t.memory();
            if p.all
                || p.now_ms.saturating_sub(t.last_seen_ms) >= p.idle_ms
                || p.now_ms.saturating_sub(t.first_seen_ms) >= p.max_age_ms
            {
                due.push((t.last_seen_ms, *e.key(), m));
            } else {
                kept_bytes += m;
                rest.push((t.last_seen_ms, *e.key(), m));
            }
        }
        due.sort_unstable();
        let mut chosen: Vec<(TraceId, usize)> = due.into_iter().map(|(_, id, b)| (id, b)).collect();
        if kept_bytes > p.target_bytes {
            rest.sort_unstable();
            for (_, id, b) in rest {
                if kept_bytes <= p.target_bytes {
                    break;
                }
                kept_bytes -= b;
                chosen.push((id, b));
            }
        }
        chosen
    }

    /// Removes and returns the traces `ids` names that the head holds;
    /// their bytes count in [`Head::held_bytes`] until
    /// [`Head::flush_ended`].
    pub fn cut_ids(&self, ids: &[TraceId]) -> Vec<(TraceId, TraceEntry)> {
        let mut out = Vec::with_capacity(ids.len());
        let (mut freed, mut freed_overhead) = (0usize, 0usize);
        for id in ids {
            if let Some((id, e)) = self.traces.remove(id) {
                freed += e.bytes;
                freed_overhead += e.overhead;
                out.push((id, e));
            }
        }
        self.bytes.fetch_sub(freed as i64, Ordering::Relaxed);
        self.flushing_bytes.fetch_add(freed as i64, Ordering::Relaxed);
        self.overhead.fetch_sub(freed_overhead as i64, Ordering::Relaxed);
        self.flushing_overhead.fetch_add(freed_overhead as i64, Ordering::Relaxed);
        out
    }

    /// The lowest WAL position still only in the head, if any.
    pub fn min_pos(&self) -> Option<u64> {
        self.traces.iter().map(|e| e.min_pos).min()
    }

    /// Calls `f` with trace `id`'s entry, if the head holds it, under its
    /// shard lock; `f` must not call back into the head.
    pub fn with_trace(&self, id: &TraceId, f: impl FnOnce(&TraceEntry)) {
        if let Some(e) = self.traces.get(id) {
            f(e.value());
        }
    }

    /// Calls `f` with every trace in the head. Holds one shard lock at a
    /// time; `f` must not call back into the head.
    pub fn for_each(&self, mut f: impl FnMut(&TraceId, &TraceEntry)) {
        for e in self.traces.iter() {
            f(e.key(), e.value());
        }
    }
}

/// Traces cut from the head and being written to a segment: still visible
/// to queries until the segment is in the catalog.
#[derive(Debug)]
pub struct Flushing {
    /// The traces, in segment order ([`crate::segment::sort_for_segment`]:
    /// by trace ID), so a lookup by ID is a binary search.
    pub traces: Vec<(TraceId, TraceEntry)>,
}

/// A shared in-flight flush.
pub type FlushingRef = Arc<Flushing>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{spans_of_trace, trace_id};

    const CUT_ALL: CutPolicy = CutPolicy { now_ms: 0, idle_ms: 0, max_age_ms: 0, target_bytes: 0, all: true };

    fn entry(h: &Head, t: u8) -> TraceEntry {
        let mut out = None;
        h.with_trace(&trace_id(t), |e| out = Some(e.clone()));
        out.expect("trace in the head")
    }

    fn heap(spans: &[Span]) -> usize {
        spans.iter().map(Span::heap_size).sum()
    }

    /// Issue 10 item 8: a trace holds at most `max_bytes_per_trace` of
    /// spans; later spans of it are dropped and counted (not as copies),
    /// other traces are unaffected, and a lone span over the cap is kept.
    #[test]
    fn a_trace_over_its_byte_cap_drops_later_spans() {
        let one = heap(&spans_of_trace(1, 0, 1));
        let mut h = Head::default();
        let dropped = prometheus_client::metrics::counter::Counter::default();
        h.limit_trace_bytes(one * 3, dropped.clone());
        assert_eq!(h.insert_spans(1, spans_of_trace(1, 0, 10)), 0, "none of them are copies");
        assert_eq!(entry(&h, 1).spans.len(), 3);
        assert_eq!(dropped.get(), 7);
        assert_eq!(h.insert_spans(2, spans_of_trace(2, 0, 2)), 0);
        assert_eq!(entry(&h, 2).spans.len(), 2);
        assert_eq!(h.insert_spans(3, spans_of_trace(1, 0, 1)), 1, "a copy is still a copy");
        h.limit_trace_bytes(1, dropped.clone());
        assert_eq!(h.insert_spans(4, spans_of_trace(3, 0, 1)), 0);
        assert_eq!(entry(&h, 3).spans.len(), 1, "the first span of a trace is kept");
        assert_eq!(dropped.get(), 7, "copies are not counted as over the cap");
    }

    /// A batch sent again (an exporter's retry) adds no span and no bytes,
    /// but its WAL position counts: a segment must tell replay to skip it.
    #[test]
    fn a_resent_batch_adds_no_span_but_moves_the_wal_position() {
        let h = Head::default();
        assert_eq!(h.insert_spans(10, spans_of_trace(1, 0, 3)), 0);
        let bytes = h.bytes();
        assert_eq!(bytes, heap(&spans_of_trace(1, 0, 3)));
        assert_eq!(h.insert_spans(20, spans_of_trace(1, 0, 3)), 3);
        assert_eq!(h.bytes(), bytes, "dropped copies add no bytes");
        let e = entry(&h, 1);
        assert_eq!(e.spans.len(), 3);
        assert_eq!((e.min_pos, e.max_pos, e.bytes), (10, 20, bytes));
        // A batch overlapping the trace: only the new span is added.
        let mut later = spans_of_trace(1, 2, 2);
        later[0].name = "a different copy of span 3".into();
        assert_eq!(h.insert_spans(30, later.clone()), 1);
        let e = entry(&h, 1);
        let names: Vec<&str> = e.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["op0", "op1", "op2", "op3"], "the first copy received stays");
        assert_eq!(e.max_pos, 30);
        assert_eq!(h.bytes(), heap(&e.spans));
        // The same span ID in another trace is another span; logs have no ID.
        assert_eq!(h.insert_spans(40, spans_of_trace(2, 0, 3)), 0);
        let log = crate::testsuite::log_of_trace(1, "same log twice");
        assert_eq!(h.insert_logs(50, vec![log.clone(), log]), 0);
        assert_eq!(entry(&h, 1).logs.len(), 2);
    }

    /// A failed flush puts its traces back; copies that arrived meanwhile
    /// are dropped in favour of the restored (earlier) ones, and the bytes
    /// stay those of the spans held.
    #[test]
    fn restoring_a_trace_drops_copies_that_arrived_meanwhile() {
        let h = Head::default();
        h.insert_spans(1, spans_of_trace(1, 0, 2));
        let cut = h.cut(CUT_ALL);
        assert_eq!(h.bytes(), 0);
        let mut again = spans_of_trace(1, 0, 3); // spans 1 and 2 again, and 3
        again[0].name = "copy".into();
        h.insert_spans(2, again);
        for (id, t) in cut {
            h.restore(id, t);
        }
        let e = entry(&h, 1);
        let names: Vec<&str> = e.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["op0", "op1", "op2"]);
        assert_eq!((e.min_pos, e.max_pos), (1, 2));
        assert_eq!(e.bytes, heap(&e.spans));
        assert_eq!(h.bytes(), e.bytes);
        // Still one copy per span ID after the merge.
        assert_eq!(h.insert_spans(3, spans_of_trace(1, 0, 3)), 3);
        assert_eq!(h.bytes(), e.bytes);
    }

    /// Issue 10 item 2: traces cut for a flush still count in
    /// `held_bytes` (what the head's limit is checked against) until the
    /// flush ends, so the head cannot fill again beside a long flush.
    #[test]
    fn traces_being_flushed_count_until_the_flush_ends() {
        let h = Head::default();
        h.insert_spans(1, spans_of_trace(1, 0, 4));
        let b = h.bytes();
        let cut = Flushing { traces: h.cut(CUT_ALL) };
        assert_eq!((h.bytes(), h.held_bytes()), (0, b));
        h.insert_spans(2, spans_of_trace(2, 0, 4));
        assert_eq!(h.held_bytes(), 2 * b);
        h.flush_ended(&cut);
        assert_eq!(h.held_bytes(), b);
    }
}
