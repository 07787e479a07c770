//! The head: live traces in memory, keyed by trace ID.
//!
//! Records enter the head on the WAL thread, after their WAL record is
//! durable and in WAL order, so for each trace the head holds a contiguous
//! run of its WAL records. That is what lets a segment record, per trace, the
//! last WAL position it contains (`max_pos`) and lets replay skip exactly the
//! records already flushed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use crate::model::{LogRecord, Span, TraceId};

/// One trace's records in the head. Log records without trace context are
/// kept under [`TraceId::ZERO`] and flushed by age.
#[derive(Debug, Clone)]
pub struct TraceEntry {
    /// The trace's spans, in arrival order.
    pub spans: Vec<Span>,
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
    /// Approximate heap bytes of the records ([`Span::heap_size`]).
    pub bytes: usize,
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
    epoch: Instant,
}

impl Default for Head {
    fn default() -> Self {
        Head { traces: DashMap::new(), bytes: AtomicI64::new(0), epoch: Instant::now() }
    }
}

impl Head {
    /// Milliseconds since the head was created (a monotonic clock).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Approximate heap bytes of every record held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed).max(0) as usize
    }

    /// Traces held (the bucket of logs without trace context counts as one).
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Adds the spans of one WAL record at position `pos`.
    pub fn insert_spans(&self, pos: u64, spans: Vec<Span>) {
        self.insert(pos, spans, |s| s.trace_id, Span::heap_size, |e| &mut e.spans);
    }

    /// Adds the log records of one WAL record at position `pos`.
    pub fn insert_logs(&self, pos: u64, logs: Vec<LogRecord>) {
        self.insert(pos, logs, |l| l.trace_id, LogRecord::heap_size, |e| &mut e.logs);
    }

    /// Adds the records of one WAL record at `pos` to their traces' entries
    /// (the one insert path behind both signals).
    fn insert<T>(
        &self,
        pos: u64,
        records: Vec<T>,
        trace_id: impl Fn(&T) -> TraceId,
        heap_size: impl Fn(&T) -> usize,
        list: impl Fn(&mut TraceEntry) -> &mut Vec<T>,
    ) {
        let now = self.now_ms();
        let mut added = 0usize;
        for r in records {
            let size = heap_size(&r);
            added += size;
            let mut e = self.traces.entry(trace_id(&r)).or_insert_with(|| TraceEntry {
                spans: Vec::new(),
                logs: Vec::new(),
                first_seen_ms: now,
                last_seen_ms: now,
                min_pos: pos,
                max_pos: pos,
                bytes: 0,
            });
            e.last_seen_ms = now;
            e.min_pos = e.min_pos.min(pos);
            e.max_pos = e.max_pos.max(pos);
            e.bytes += size;
            list(&mut e).push(r);
        }
        self.bytes.fetch_add(added as i64, Ordering::Relaxed);
    }

    /// Puts back a trace cut by [`Head::cut`] whose flush failed, merging it
    /// with whatever arrived for that trace meanwhile. Both WAL positions
    /// are kept exactly: `min_pos` keeps WAL reclamation from deleting
    /// records that now live only in memory, `max_pos` lets a later
    /// segment tell replay that every record up to it is flushed.
    pub fn restore(&self, id: TraceId, t: TraceEntry) {
        let added = t.bytes;
        match self.traces.entry(id) {
            dashmap::Entry::Vacant(v) => {
                v.insert(t);
            }
            dashmap::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                e.spans.splice(0..0, t.spans);
                e.logs.splice(0..0, t.logs);
                e.first_seen_ms = e.first_seen_ms.min(t.first_seen_ms);
                e.last_seen_ms = e.last_seen_ms.max(t.last_seen_ms);
                e.min_pos = e.min_pos.min(t.min_pos);
                e.max_pos = e.max_pos.max(t.max_pos);
                e.bytes += t.bytes;
            }
        }
        self.bytes.fetch_add(added as i64, Ordering::Relaxed);
    }

    /// Removes and returns the traces the policy selects.
    pub fn cut(&self, p: CutPolicy) -> Vec<(TraceId, TraceEntry)> {
        let mut chosen = Vec::new();
        let mut rest: Vec<(u64, TraceId, usize)> = Vec::new();
        let mut kept_bytes = 0usize;
        for e in self.traces.iter() {
            let t = e.value();
            if p.all
                || p.now_ms.saturating_sub(t.last_seen_ms) >= p.idle_ms
                || p.now_ms.saturating_sub(t.first_seen_ms) >= p.max_age_ms
            {
                chosen.push(*e.key());
            } else {
                kept_bytes += t.bytes;
                rest.push((t.last_seen_ms, *e.key(), t.bytes));
            }
        }
        if kept_bytes > p.target_bytes {
            rest.sort_unstable();
            for (_, id, b) in rest {
                if kept_bytes <= p.target_bytes {
                    break;
                }
                kept_bytes -= b;
                chosen.push(id);
            }
        }
        let mut out = Vec::with_capacity(chosen.len());
        let mut freed = 0usize;
        for id in chosen {
            if let Some((id, e)) = self.traces.remove(&id) {
                freed += e.bytes;
                out.push((id, e));
            }
        }
        self.bytes.fetch_sub(freed as i64, Ordering::Relaxed);
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
