//! Where a trace's time went: its critical path and each span's self
//! time, computed from the spans alone.
//!
//! The critical path is Jaeger's (the UI's `criticalPath` and the
//! `jaeger_mcp` extension's `get_critical_path`): start at the root; a
//! span's last-finishing child is on the path, and the parent's time
//! after that child ended is the parent's own; then, going back in time,
//! the child that finished last before the previous one started, and so
//! on, each child walked the same way. Children are first clipped to their
//! parent's time (clock skew, fire-and-forget work), and those wholly
//! outside it dropped with their subtrees, as Jaeger's
//! `removeOverflowingChildren` does. The sections tile the root's time
//! exactly: their lengths add up to the root's duration.
//!
//! Both walks are loops, not recursion, so a trace 50,000 spans deep does
//! not exhaust the stack.

use std::collections::HashMap;

use skein_storage::model::{Span, SpanId};

/// One stretch of the critical path: the span at index `span` (into the
/// slice given to [`critical_path`]) was the one doing the work from
/// `start_ns` to `end_ns` (Unix ns, `start_ns < end_ns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriticalSection {
    /// Index of the span in the input slice.
    pub span: usize,
    /// Start of the stretch, Unix ns.
    pub start_ns: u64,
    /// End of the stretch, Unix ns.
    pub end_ns: u64,
}

impl CriticalSection {
    /// The stretch's length, ns.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// The span a trace's critical path starts from: the earliest-starting
/// span without a parent (the lower span ID among equals, as
/// [`summarize`](crate::summarize) picks it), else, for a trace
/// whose root never arrived, the earliest-starting span whose parent is
/// not in the trace. `None` for no spans.
pub fn root_index(spans: &[Span]) -> Option<usize> {
    let ids: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let earliest = |orphans_too: bool| {
        spans
            .iter()
            .enumerate()
            .filter(|(_, s)| match s.parent_span_id {
                None => true,
                Some(p) => orphans_too && !ids.contains_key(&p),
            })
            .min_by_key(|(_, s)| (s.start_time_unix_nano, s.span_id))
            .map(|(i, _)| i)
    };
    earliest(false).or_else(|| earliest(true))
}

/// `(start, end)` of a span, Unix ns, with an end before the start taken
/// as the start (as [`Span::duration_ns`] does).
fn interval(s: &Span) -> (u64, u64) {
    (s.start_time_unix_nano, s.start_time_unix_nano.saturating_add(s.duration_ns()))
}

/// The children of each span by index (a span whose parent is not in the
/// trace is nobody's child), each list sorted by start time.
fn children(spans: &[Span]) -> Vec<Vec<usize>> {
    let ids: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut out = vec![Vec::new(); spans.len()];
    for (i, s) in spans.iter().enumerate() {
        if let Some(p) = s.parent_span_id.and_then(|p| ids.get(&p)) {
            if *p != i {
                out[*p].push(i);
            }
        }
    }
    for c in &mut out {
        c.sort_by_key(|&i| (spans[i].start_time_unix_nano, i));
    }
    out
}

/// The critical path of the trace `spans`, in time order (see the module
/// documentation); empty for no spans. Spans outside the root's subtree
/// are not on it.
pub fn critical_path(spans: &[Span]) -> Vec<CriticalSection> {
    let Some(root) = root_index(spans) else { return Vec::new() };
    let kids = children(spans);
    // Clip top-down; a span outside its (clipped) parent is dropped with
    // its subtree, which is then never reached. A span reached twice (a
    // parent cycle) keeps its first clip.
    let mut clipped: Vec<Option<(u64, u64)>> = vec![None; spans.len()];
    clipped[root] = Some(interval(&spans[root]));
    let mut parent_of = vec![usize::MAX; spans.len()];
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        let Some((ps, pe)) = clipped[p] else { continue };
        for &c in &kids[p] {
            if clipped[c].is_some() || c == root {
                continue;
            }
            let (cs, ce) = interval(&spans[c]);
            if cs >= pe || ce <= ps {
                continue;
            }
            clipped[c] = Some((cs.max(ps), ce.min(pe)));
            parent_of[c] = p;
            todo.push(c);
        }
    }
    // The walk: at `cur` with `bound` (None: its own end; Some(t): the
    // start of the child just walked), the child on the path is the one
    // ending last before the bound.
    let mut out = Vec::new();
    let (mut cur, mut bound) = (root, None::<u64>);
    while let Some((start, end)) = clipped[cur] {
        let until = bound.unwrap_or(end);
        let lfc = kids[cur]
            .iter()
            .filter(|&&c| parent_of[c] == cur)
            .filter_map(|&c| clipped[c].map(|(_, e)| (e, c)))
            .filter(|&(e, _)| match bound {
                None => true,
                Some(t) => e < t,
            })
            .max_by_key(|&(e, c)| (e, std::cmp::Reverse(c)));
        match lfc {
            Some((child_end, child)) => {
                if child_end < until {
                    out.push(CriticalSection { span: cur, start_ns: child_end, end_ns: until });
                }
                (cur, bound) = (child, None);
            }
            None => {
                if start < until {
                    out.push(CriticalSection { span: cur, start_ns: start, end_ns: until });
                }
                if cur == root {
                    break;
                }
                (cur, bound) = (parent_of[cur], Some(start));
            }
        }
    }
    out.reverse();
    out
}

/// Each span's self time, ns, by index: its duration less the time at
/// least one of its children was running (children clipped to it), as
/// Jaeger's trace statistics count "self time".
pub fn self_times(spans: &[Span]) -> Vec<u64> {
    let kids = children(spans);
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (ps, pe) = interval(s);
            // Children are sorted by start: merge their clipped intervals.
            let mut covered = 0u64;
            let mut open: Option<(u64, u64)> = None;
            for &c in &kids[i] {
                let (cs, ce) = interval(&spans[c]);
                let (cs, ce) = (cs.max(ps), ce.min(pe));
                if cs >= ce {
                    continue;
                }
                open = match open {
                    Some((os, oe)) if cs <= oe => Some((os, oe.max(ce))),
                    Some((os, oe)) => {
                        covered += oe - os;
                        Some((cs, ce))
                    }
                    None => Some((cs, ce)),
                };
            }
            if let Some((os, oe)) = open {
                covered += oe - os;
            }
            (pe - ps).saturating_sub(covered)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use skein_storage::model::TraceId;

    use super::*;
    use crate::engine::testutil::span;

    /// A span `id` (child of `parent`) from `start` to `end`, in µs-like
    /// small units.
    fn sp(id: u8, parent: Option<u8>, start: u64, end: u64) -> Span {
        span(1, id, parent, "svc", &format!("op{id}"), start, end - start, false)
    }

    /// The path as `(span id byte, start, end)`.
    fn path(spans: &[Span]) -> Vec<(u8, u64, u64)> {
        critical_path(spans).iter().map(|c| (spans[c.span].span_id.0[0], c.start_ns, c.end_ns)).collect()
    }

    /// Jaeger's own example: A [0,10] with B [1,4] and C [5,9]: A after C,
    /// C, A between B and C, B, A before B.
    #[test]
    fn jaegers_example() {
        let spans = vec![sp(1, None, 0, 10), sp(2, Some(1), 1, 4), sp(3, Some(1), 5, 9)];
        assert_eq!(path(&spans), vec![(1, 0, 1), (2, 1, 4), (1, 4, 5), (3, 5, 9), (1, 9, 10)]);
    }

    /// Parallel children: only the one finishing last is on the path, and
    /// one that overlaps it is skipped; the walk goes down and back up
    /// through several levels.
    #[test]
    fn parallel_and_nested_children() {
        let spans = vec![
            sp(1, None, 0, 100),
            sp(2, Some(1), 10, 60), // overlaps 3, ends before it: skipped
            sp(3, Some(1), 20, 90), // last-finishing
            sp(4, Some(3), 30, 50), // 3's child
            sp(5, Some(4), 35, 45), // 4's child
            sp(6, Some(1), 2, 8),   // ends before 3 starts: on the path
        ];
        assert_eq!(
            path(&spans),
            vec![
                (1, 0, 2),
                (6, 2, 8),
                (1, 8, 20),
                (3, 20, 30),
                (4, 30, 35),
                (5, 35, 45),
                (4, 45, 50),
                (3, 50, 90),
                (1, 90, 100),
            ]
        );
    }

    /// A child running past its parent is clipped to the parent's end; one
    /// wholly after it is dropped with its children.
    #[test]
    fn overflowing_children_are_clipped_or_dropped() {
        let spans = vec![
            sp(1, None, 0, 10),
            sp(2, Some(1), 6, 15),  // clipped to [6,10]
            sp(3, Some(1), 12, 20), // wholly after: dropped
            sp(4, Some(3), 13, 14),
        ];
        assert_eq!(path(&spans), vec![(1, 0, 6), (2, 6, 10)]);
    }

    /// The root that never arrived: the earliest orphan is the root; no
    /// spans, no path; a zero-length trace has no section.
    #[test]
    fn roots_orphans_and_empty_traces() {
        let spans = vec![sp(2, Some(9), 5, 10), sp(3, Some(9), 1, 4)];
        assert_eq!(path(&spans), vec![(3, 1, 4)]);
        assert!(critical_path(&[]).is_empty());
        assert!(critical_path(&[sp(1, None, 5, 5)]).is_empty());
        // Two parentless spans: the earliest is the root.
        let spans = vec![sp(1, None, 5, 10), sp(2, None, 0, 3)];
        assert_eq!(root_index(&spans), Some(1));
    }

    /// A chain 50,000 deep walks without recursion.
    #[test]
    fn a_very_deep_trace_does_not_overflow_the_stack() {
        let n = 50_000u64;
        let spans: Vec<Span> = (0..n)
            .map(|i| {
                let mut s = sp(0, None, i, 2 * n - i);
                s.span_id = SpanId((i + 1).to_be_bytes());
                s.parent_span_id = (i > 0).then(|| SpanId(i.to_be_bytes()));
                s
            })
            .collect();
        let p = critical_path(&spans);
        assert_eq!(p.iter().map(CriticalSection::duration_ns).sum::<u64>(), 2 * n);
        assert_eq!(p.len() as u64, 2 * n - 1);
    }

    #[test]
    fn self_time_subtracts_the_union_of_children() {
        let spans = vec![
            sp(1, None, 0, 100),
            sp(2, Some(1), 10, 40),
            sp(3, Some(1), 30, 50),  // overlaps 2: union [10,50]
            sp(4, Some(1), 90, 120), // clipped to [90,100]
        ];
        assert_eq!(self_times(&spans), vec![100 - 40 - 10, 30, 20, 30]);
    }

    fn arb_trace() -> impl Strategy<Value = Vec<Span>> {
        // Up to 40 spans; span i's parent is some earlier span (or none for
        // the first); times anywhere in [0, 1000].
        prop::collection::vec((0usize..40, 0u64..1000, 0u64..500), 1..40).prop_map(|raw| {
            raw.iter()
                .enumerate()
                .map(|(i, &(p, start, len))| {
                    let parent = (i > 0).then(|| (p % i) as u8 + 1);
                    let mut s = span(1, i as u8 + 1, parent, "svc", "op", start, len, false);
                    s.trace_id = TraceId([1; 16]);
                    s
                })
                .collect()
        })
    }

    proptest! {
        /// The sections tile the root: in order, each starting where the
        /// last ended, from the root's start to its end.
        #[test]
        fn sections_tile_the_root(spans in arb_trace()) {
            let p = critical_path(&spans);
            let root = &spans[root_index(&spans).unwrap()];
            let (rs, re) = interval(root);
            let mut at = rs;
            for c in &p {
                prop_assert_eq!(c.start_ns, at);
                prop_assert!(c.end_ns > c.start_ns);
                at = c.end_ns;
            }
            prop_assert_eq!(at, if p.is_empty() { rs } else { re });
            prop_assert_eq!(p.iter().map(CriticalSection::duration_ns).sum::<u64>(), re - rs);
            let st = self_times(&spans);
            for (s, t) in spans.iter().zip(&st) {
                prop_assert!(*t <= s.duration_ns());
            }
        }
    }
}
