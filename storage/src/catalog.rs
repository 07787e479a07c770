//! The catalog: where every stored record is, as one of three places that
//! a record moves through in order: the head (in memory), an in-flight
//! flush (cut from the head, being written), a segment (on disk or in the
//! object store).
//!
//! This is the only place that takes the catalog lock, and the locking
//! reasoning lives here once:
//!
//! - A flush cuts traces from the head and publishes them as in-flight in
//!   one step under the write lock ([`Catalog::cut`]), and later swaps the
//!   in-flight batch for its segment (or puts it back in the head) in one
//!   step under the write lock ([`Catalog::finish_flush`]).
//! - A reader ([`Catalog::walk`]) visits the head and takes its list of
//!   in-flight flushes and segments under one read lock. No cut and no
//!   swap can fall between those reads, so every record is in exactly one
//!   of the places it sees: seen once, never twice, never missed.
//! - Records enter the head on the WAL thread without the catalog lock:
//!   a reader sees a new record or not, never half of the move.
//!
//! Lock order: catalog lock, then the head's shard locks (never the other
//! way round), so a walk's visitor must not call back into the catalog.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::head::{CutPolicy, Flushing, Head, TraceEntry};
use crate::model::TraceId;
use crate::segment::{self, Segment};
use crate::Snapshot;

#[derive(Debug, Default)]
struct State {
    segments: Vec<Arc<Segment>>,
    flushing: Vec<Arc<Flushing>>,
    /// A query node's copy of its ingest nodes' memory
    /// ([`Catalog::set_remote`]), visited as in-flight flushes are.
    remote: Vec<Arc<Flushing>>,
    /// Segments left out of reads: their records are in `remote`.
    hidden: std::collections::HashSet<String>,
}

impl State {
    fn view(&self) -> Snapshot {
        let segments = if self.hidden.is_empty() {
            self.segments.clone()
        } else {
            self.segments.iter().filter(|s| !self.hidden.contains(&s.meta.id)).cloned().collect()
        };
        Snapshot { segments, flushing: self.flushing.iter().chain(&self.remote).cloned().collect() }
    }
}

/// The head, the in-flight flushes and the segments, behind one lock.
#[derive(Debug, Default)]
pub struct Catalog {
    head: Head,
    state: RwLock<State>,
}

impl Catalog {
    /// A catalog over `head` (configured by the caller), with no segments.
    pub fn with_head(head: Head) -> Self {
        Catalog { head, state: RwLock::default() }
    }

    /// The head, for inserting (WAL thread) and for its statistics. Reads
    /// of records go through [`Catalog::walk`].
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The segments and in-flight flushes as of now. Records still in the
    /// head are not in it: use [`Catalog::walk`] to see every record.
    pub fn snapshot(&self) -> Snapshot {
        self.state.read().view()
    }

    /// Makes `remote` (records other nodes hold in memory, as of one
    /// instant) part of every read, as in-flight flushes are, in place of
    /// what the last call set; the segments `hidden` names are left out of
    /// reads meanwhile (their records are in `remote`).
    pub fn set_remote(&self, remote: Vec<Arc<Flushing>>, hidden: std::collections::HashSet<String>) {
        let mut st = self.state.write();
        st.remote = remote;
        st.hidden = hidden;
    }

    /// Visits every trace in memory (head, then in-flight flushes), or only
    /// trace `only`, and returns the segments that hold the rest: together,
    /// every record exactly once (see the module comment). The head is
    /// visited under the catalog lock, so `visit` must be quick and must
    /// not call back into the catalog; in-flight flushes are visited after
    /// the lock is released.
    pub fn walk(
        &self,
        only: Option<&TraceId>,
        mut visit: impl FnMut(&TraceId, &TraceEntry),
    ) -> Vec<Arc<Segment>> {
        let snap = {
            let st = self.state.read();
            match only {
                None => self.head.for_each(&mut visit),
                Some(id) => self.head.with_trace(id, |t| visit(id, t)),
            }
            st.view()
        };
        for f in &snap.flushing {
            match only {
                None => f.traces.iter().for_each(|(id, t)| visit(id, t)),
                Some(id) => {
                    if let Ok(i) = f.traces.binary_search_by(|t| t.0.cmp(id)) {
                        visit(id, &f.traces[i].1);
                    }
                }
            }
        }
        snap.segments
    }

    /// Cuts the traces `policy` selects from the head and publishes them,
    /// in segment order, as one in-flight flush; `None` when nothing is
    /// selected. The caller writes the batch, then calls
    /// [`Catalog::finish_flush`].
    pub fn cut(&self, policy: CutPolicy) -> Option<Arc<Flushing>> {
        let mut st = self.state.write();
        let traces = self.head.cut(policy);
        publish(&mut st, traces)
    }

    /// [`Catalog::cut`] of the traces `ids` names (those still in the
    /// head): one bounded block of a flush ([`crate::head::Head::select`]
    /// chose them).
    pub fn cut_ids(&self, ids: &[TraceId]) -> Option<Arc<Flushing>> {
        let mut st = self.state.write();
        let traces = self.head.cut_ids(ids);
        publish(&mut st, traces)
    }

    /// Ends an in-flight flush: its segment replaces it, or, when there is
    /// none (the write failed), its traces go back to the head with both
    /// WAL positions ([`Head::restore`]). Returns the number of segments.
    pub fn finish_flush(&self, flushing: &Arc<Flushing>, written: Option<Arc<Segment>>) -> usize {
        let mut st = self.state.write();
        st.flushing.retain(|f| !Arc::ptr_eq(f, flushing));
        self.head.flush_ended(flushing);
        match written {
            Some(seg) => st.segments.push(seg),
            None => {
                for (id, t) in &flushing.traces {
                    self.head.restore(*id, t.clone());
                }
            }
        }
        st.segments.len()
    }

    /// The lowest WAL position of a record not yet in a segment (in the
    /// head or in flight), if any: WAL files before it may be deleted.
    pub fn oldest_unflushed_pos(&self) -> Option<u64> {
        let st = self.state.read();
        let flushing = st.flushing.iter().flat_map(|f| f.traces.iter().map(|t| t.1.min_pos)).min();
        [self.head.min_pos(), flushing].into_iter().flatten().min()
    }

    /// Changes the list of segments in one step (loading, compaction,
    /// retention): readers see the list before or after `f`, never during.
    pub fn edit_segments<R>(&self, f: impl FnOnce(&mut Vec<Arc<Segment>>) -> R) -> R {
        f(&mut self.state.write().segments)
    }
}

/// Publishes traces just cut from the head, in segment order, as one
/// in-flight flush (under the state lock the cut was taken under, so no
/// reader sees them in neither place); `None` when nothing was cut.
fn publish(st: &mut State, mut traces: Vec<(TraceId, TraceEntry)>) -> Option<Arc<Flushing>> {
    if traces.is_empty() {
        return None;
    }
    segment::sort_for_segment(&mut traces);
    let f = Arc::new(Flushing { traces });
    st.flushing.push(f.clone());
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StorageMetrics;
    use crate::segment::SegmentConfig;
    use crate::testsuite::{spans_of_trace, trace_id};

    const CUT_ALL: CutPolicy = CutPolicy { now_ms: 0, idle_ms: 0, max_age_ms: 0, target_bytes: 0, all: true };

    /// Spans of trace `t` the walk sees in memory, and segments listing it.
    fn seen(c: &Catalog, t: u8) -> (usize, usize) {
        let id = trace_id(t);
        let mut spans = 0;
        let segs = c.walk(Some(&id), |_, e| spans += e.spans.len());
        let mut all = 0;
        c.walk(None, |i, e| all += if *i == id { e.spans.len() } else { 0 });
        assert_eq!(all, spans, "walking one trace and walking all agree");
        (spans, segs.iter().filter(|s| s.find(&id).is_some()).count())
    }

    /// A trace cut to a flushing batch between two reads is seen once by
    /// each: in the head, then in flight, then in its segment.
    #[test]
    fn a_trace_moving_to_a_segment_is_seen_once_at_each_step() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::default();
        c.head().insert_spans(1, spans_of_trace(1, 0, 3));
        c.head().insert_spans(2, spans_of_trace(2, 0, 1));
        assert_eq!(seen(&c, 1), (3, 0));
        let f = c.cut(CUT_ALL).unwrap();
        assert_eq!(c.head().trace_count(), 0);
        assert_eq!(seen(&c, 1), (3, 0), "in flight");
        assert_eq!(c.oldest_unflushed_pos(), Some(1));
        let (meta, _) = segment::write_segment(dir.path(), &SegmentConfig::default(), &f.traces, 1).unwrap();
        let seg =
            Segment::open(&dir.path().join(&meta.id), Arc::new(StorageMetrics::default()), None).unwrap();
        assert_eq!(c.finish_flush(&f, Some(Arc::new(seg))), 1);
        assert_eq!(seen(&c, 1), (0, 1), "in its segment only");
        assert_eq!(c.oldest_unflushed_pos(), None);
        assert!(c.cut(CUT_ALL).is_none());
    }

    /// A failed flush puts the trace back; a walk racing with cuts and
    /// restores always sees each span exactly once.
    #[test]
    fn walks_racing_with_cuts_see_every_span_once() {
        let c = Arc::new(Catalog::default());
        c.head().insert_spans(1, spans_of_trace(1, 0, 4));
        c.head().insert_spans(2, spans_of_trace(7, 0, 2));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mover = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut moves = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || moves == 0 {
                    if let Some(f) = c.cut(CUT_ALL) {
                        std::thread::yield_now();
                        c.finish_flush(&f, None);
                        moves += 1;
                    }
                }
                moves
            })
        };
        for _ in 0..2_000 {
            assert_eq!(seen(&c, 1).0, 4);
            let mut total = 0;
            c.walk(None, |_, e| total += e.spans.len());
            assert_eq!(total, 6);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(mover.join().unwrap() > 0);
        assert_eq!(c.head().trace_count(), 2);
        assert_eq!(c.oldest_unflushed_pos(), Some(1));
    }
}
