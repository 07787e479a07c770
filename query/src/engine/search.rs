//! Trace search: the index picks candidate traces, each candidate is then
//! read whole and checked against the span conditions, the TraceQL query
//! and the trace-duration bounds. Results come newest first, or longest
//! first ([`TraceSort`]).

use std::cmp::Reverse;
use std::str::FromStr;

use skein_storage::filter::SpanFilter;
use skein_storage::model::{Span, TraceId};
use skein_storage::{Reader, SpanPresence};

use super::conditions::{self, SpanCondition};
use super::summary::{summarize, TraceSummary};
use super::traceql::{HitSpanset, TraceQl};
use super::{Trace, Work};
use crate::error::{Error, Result};
use crate::QueryConfig;

/// A trace search, as every adapter builds it from its own parameters.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Conditions one span of a returned trace meets (Jaeger semantics), and
    /// the range of that span's start time.
    pub filter: SpanFilter,
    /// Conditions on status, kind and scope that the span meeting `filter`
    /// also meets (Jaeger's synthesised tags).
    pub conditions: Vec<SpanCondition>,
    /// A TraceQL query every returned trace matches as a whole.
    pub traceql: Option<TraceQl>,
    /// Least duration of the whole trace (first span start to last span
    /// end), ns.
    pub min_trace_duration_ns: Option<u64>,
    /// Greatest duration of the whole trace, ns.
    pub max_trace_duration_ns: Option<u64>,
    /// Traces returned at most.
    pub limit: usize,
    /// Matched spans kept per hit in [`TraceHit::matched`]; the rest are
    /// only counted.
    pub keep_matched: usize,
    /// Whether each hit carries the whole trace with its log records.
    pub with_trace: bool,
    /// Which `limit` traces are returned, and in which order.
    pub sort: TraceSort,
}

/// The order of a trace search's answer, which also decides which traces
/// make the limit (the native API's `sort=start|duration`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceSort {
    /// Newest first: by the start of the trace's newest matching span, the
    /// order in which the index hands out candidates (so the search stops
    /// after the newest segments); the answer is then ordered by trace
    /// start, newest first.
    #[default]
    Start,
    /// Longest first: matching traces of the whole range by trace duration
    /// (first span start to last span end), ties newest first. Candidates
    /// come from each segment's index, the traces with the longest
    /// matching spans ([`Storage::longest_traces`], no rows read), and only
    /// those are read and ranked by their real duration. A trace's
    /// duration is at least its longest span's and equal to it when one
    /// span (its root, in nearly every trace) covers the trace, so the
    /// answer is exact for such traces; a trace whose spans leave its
    /// extent uncovered ranks by what its longest span lets it be found.
    Duration,
}

impl FromStr for TraceSort {
    type Err = Error;

    /// `start` or `duration`; anything else is a 400 naming both.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "start" => Ok(TraceSort::Start),
            "duration" => Ok(TraceSort::Duration),
            _ => Err(Error::bad(format!(
                "sort {s:?} must be start (newest first) or duration (longest first)"
            ))),
        }
    }
}

impl TraceQuery {
    /// Whether span `s` meets the filter and every condition.
    fn span_matches(&self, s: &Span) -> bool {
        self.filter.matches(s) && self.conditions.iter().all(|c| c.matches(s))
    }

    /// Whether the filter holds span conditions besides the time range.
    fn has_span_conditions(&self) -> bool {
        let f = &self.filter;
        !self.conditions.is_empty()
            || f.service.is_some()
            || f.operation.is_some()
            || !f.attrs.is_empty()
            || f.min_duration_ns.is_some()
            || f.max_duration_ns.is_some()
            || f.status.is_some()
    }

    /// Whether a candidate's stored summary answers it without reading its
    /// spans: nothing to check or return beyond what the index checked
    /// exactly and the summary holds. An attribute with `=` in its key or
    /// value is not exact in the index (its `key=value` term could come
    /// from another split of the same text), so it is checked on the spans.
    fn summary_answers(&self) -> bool {
        let f = conditions::narrowed(&self.filter, &self.conditions);
        self.traceql.is_none()
            && self.keep_matched == 0
            && !self.with_trace
            && self.conditions.iter().all(|c| c.exact_in_index(f.status))
            && !f.attrs.iter().any(|(k, v)| k.contains('=') || v.contains('='))
    }

    /// The index query that picks candidates, and how many to take. Only
    /// the filter goes to the index, so a query that checks more (TraceQL,
    /// trace duration) takes up to `max_candidates`, newest first, to still
    /// find `limit` matches; TraceQL's own conditions narrow the index
    /// query when the filter has no span conditions of its own.
    fn plan(&self, max_candidates: usize) -> (SpanFilter, usize) {
        let f = &conditions::narrowed(&self.filter, &self.conditions);
        // Conditions the index checks only in part are checked on the
        // spans read, so they may reject candidates as TraceQL does.
        let exact = self.conditions.iter().all(|c| c.exact_in_index(f.status));
        match &self.traceql {
            Some(tq) => {
                let mut cand = if self.has_span_conditions() { f.clone() } else { tq.candidate_filter() };
                cand.start_ns = f.start_ns;
                cand.end_ns = f.end_ns;
                (cand, max_candidates)
            }
            None if !exact
                || self.min_trace_duration_ns.is_some()
                || self.max_trace_duration_ns.is_some() =>
            {
                (f.clone(), max_candidates)
            }
            None => (f.clone(), self.limit),
        }
    }
}

/// One trace found.
#[derive(Debug, Clone)]
pub struct TraceHit {
    /// The trace's summary.
    pub summary: TraceSummary,
    /// How many spans matched (the TraceQL selection, or the spans meeting
    /// the filter); counted only when [`TraceQuery::keep_matched`] is
    /// above 0, 0 otherwise (the answer then comes from stored summaries
    /// where it can, without reading spans).
    pub matched_count: usize,
    /// The first [`TraceQuery::keep_matched`] matched spans, in trace order.
    pub matched: Vec<Span>,
    /// The TraceQL query's spansets for this trace (several after
    /// `by(...)`), each with its first [`TraceQuery::keep_matched`] spans,
    /// their `select(...)` fields and its labels; empty without TraceQL or
    /// when `keep_matched` is 0.
    pub spansets: Vec<HitSpanset>,
    /// The whole trace, when [`TraceQuery::with_trace`] asked for it.
    pub trace: Option<Trace>,
}

/// The answer of a trace search.
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    /// Matching traces in [`TraceQuery::sort`] order, at most the limit.
    pub traces: Vec<TraceHit>,
    /// Candidate traces read and evaluated.
    pub inspected: u64,
    /// Why the answer may be missing traces: one line per quarantined
    /// segment whose time range meets the search's
    /// ([`skein_storage::Storage::damage_in_range`]). Empty when the
    /// answer is whole.
    pub warnings: Vec<String>,
    /// What the search did.
    pub work: Work,
}

/// Runs trace search `q` through `r`, whose context stops it between
/// candidates (before each is read and evaluated, TraceQL included) and
/// between segments.
pub(super) fn run(r: &Reader<'_>, cfg: &QueryConfig, q: &TraceQuery) -> Result<TraceSearch> {
    let (cand, budget) = q.plan(cfg.max_traceql_candidates);
    let mut out = TraceSearch::default();
    // A TraceQL candidate lacking a span some part of the query needs
    // (e.g. the error span of `{A} >> {status = error}` when candidates
    // come from `A`) is skipped from the span indexes, without reading it.
    let mut required: Vec<SpanPresence> =
        q.traceql.iter().flat_map(|tq| tq.required_filters()).map(SpanPresence::new).collect();
    let mut possible = |id: &TraceId| -> Result<bool> {
        for p in &mut required {
            if !r.trace_has_span(id, p)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    // Self-tracing: the index's candidates, then their reads and their
    // evaluation (TraceQL included) as one span, not one per candidate.
    let eval = tracing::info_span!(
        "search.evaluate",
        traceql = q.traceql.is_some(),
        candidates = tracing::field::Empty,
        inspected = tracing::field::Empty,
        matched = tracing::field::Empty,
    );
    match q.sort {
        TraceSort::Start => {
            let ids = tracing::info_span!("search.candidates", budget = budget as i64)
                .in_scope(|| r.search_traces(&cand, budget))?;
            eval.record("candidates", ids.len() as i64);
            let _in = eval.enter();
            for id in ids {
                if out.traces.len() >= q.limit {
                    break;
                }
                r.ctx().check()?;
                if !possible(&id)? {
                    continue;
                }
                if let Some(hit) = evaluate(r, q, id, q.with_trace, &mut out.inspected)? {
                    out.traces.push(hit);
                }
            }
            out.traces.sort_by_key(|t| Reverse(t.summary.start_time_unix_nano));
        }
        TraceSort::Duration => {
            // Spans only while ranking; logs only for the traces returned.
            let rank = |hits: &mut Vec<TraceHit>| {
                hits.sort_by_key(|t| {
                    (
                        Reverse(t.summary.duration_ns),
                        Reverse(t.summary.start_time_unix_nano),
                        t.summary.trace_id,
                    )
                });
                hits.truncate(q.limit);
            };
            // Candidates come longest span first, and a trace lasts at least
            // as long as its longest span: once `limit` hits are at least as
            // long as the next candidate's longest span, no later candidate
            // can rank higher (for traces one span covers). Twice the limit
            // of candidates at first, more while too few of them match
            // (TraceQL or conditions the index cannot check).
            let mut n = q.limit.saturating_mul(2).max(1);
            let mut read = std::collections::HashSet::new();
            let _in = eval.enter();
            'rounds: loop {
                let cands = r.longest_traces(&cand, n)?;
                let exhausted = cands.len() < n;
                for (id, longest) in cands {
                    if kth_longest(&out.traces, q.limit).is_some_and(|k| k >= longest) {
                        break 'rounds;
                    }
                    if !read.insert(id) {
                        continue;
                    }
                    r.ctx().check()?;
                    if !possible(&id)? {
                        continue;
                    }
                    if let Some(hit) = evaluate(r, q, id, false, &mut out.inspected)? {
                        out.traces.push(hit);
                        if out.traces.len() >= q.limit.saturating_mul(2).max(64) {
                            rank(&mut out.traces);
                        }
                    }
                }
                if exhausted {
                    break;
                }
                n = n.saturating_mul(4);
            }
            eval.record("candidates", read.len() as i64);
            rank(&mut out.traces);
            if q.with_trace {
                for hit in &mut out.traces {
                    let id = hit.summary.trace_id;
                    hit.trace = r.get_trace(&id)?.map(|(spans, logs)| Trace::new(id, spans, logs));
                }
            }
        }
    }
    eval.record("inspected", out.inspected as i64);
    eval.record("matched", out.traces.len() as i64);
    // Asked last, so segments quarantined by this very search are named.
    out.warnings = r.storage().damage_in_range(q.filter.start_ns, q.filter.end_ns);
    Ok(out)
}

/// The `k`-th longest trace duration among `hits` (`None` with fewer).
fn kth_longest(hits: &[TraceHit], k: usize) -> Option<u64> {
    if k == 0 || hits.len() < k {
        return None;
    }
    let mut d: Vec<u64> = hits.iter().map(|h| h.summary.duration_ns).collect();
    let (_, kth, _) = d.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    Some(*kth)
}

/// Reads candidate `id` (counting it in `inspected` and in `r`'s context
/// when it is still stored) and checks it against `q`: `None` when it is
/// gone or does not match.
fn evaluate(
    r: &Reader<'_>,
    q: &TraceQuery,
    id: TraceId,
    with_trace: bool,
    inspected: &mut u64,
) -> Result<Option<TraceHit>> {
    let within = |sum: &TraceSummary| {
        !(q.min_trace_duration_ns.is_some_and(|m| sum.duration_ns < m)
            || q.max_trace_duration_ns.is_some_and(|m| sum.duration_ns > m))
    };
    // The index matched one of the candidate's spans exactly, so when the
    // trace lives whole in one segment its stored summary is the answer.
    if !with_trace && q.summary_answers() {
        if let Some(summary) = r.stored_trace_summary(&id)? {
            *inspected += 1;
            r.ctx().add_trace(summary.span_count as usize);
            let hit = TraceHit {
                summary,
                matched_count: 0,
                matched: Vec::new(),
                spansets: Vec::new(),
                trace: None,
            };
            return Ok(within(&hit.summary).then_some(hit));
        }
    }
    let (spans, logs) = if with_trace {
        let Some(t) = r.get_trace(&id)? else { return Ok(None) };
        t
    } else {
        let Some(spans) = r.get_trace_spans(&id)? else { return Ok(None) };
        (spans, Vec::new())
    };
    *inspected += 1;
    r.ctx().add_trace(spans.len());
    // The span conditions hold on some span in every case (they carry
    // the time range); TraceQL then selects the spans it matches.
    let mut spansets = Vec::new();
    let matched: Vec<&Span> = match &q.traceql {
        Some(tq) => {
            if !spans.iter().any(|sp| q.span_matches(sp)) {
                return Ok(None);
            }
            let sets = tq.spansets(&spans);
            let mut m = vec![false; spans.len()];
            sets.iter().flat_map(|s| &s.spans).for_each(|&i| m[i] = true);
            if q.keep_matched > 0 {
                spansets = sets.iter().map(|s| s.to_hit(&spans, q.keep_matched)).collect();
            }
            spans.iter().zip(m).filter(|(_, b)| *b).map(|(s, _)| s).collect()
        }
        None => spans.iter().filter(|sp| q.span_matches(sp)).collect(),
    };
    if matched.is_empty() {
        return Ok(None);
    }
    let summary = summarize(id, &spans);
    if !within(&summary) {
        return Ok(None);
    }
    let matched_count = if q.keep_matched == 0 { 0 } else { matched.len() };
    let matched = matched.into_iter().take(q.keep_matched).cloned().collect();
    let trace = with_trace.then_some(Trace::new(id, spans, logs));
    Ok(Some(TraceHit { summary, matched_count, matched, spansets, trace }))
}

#[cfg(test)]
mod tests {
    use skein_storage::filter::StatusFilter;
    use skein_storage::model::TraceId;

    use super::*;
    use crate::engine::testutil::{append, engine, storage, three_traces};

    fn ids(r: &TraceSearch) -> Vec<TraceId> {
        r.traces.iter().map(|t| t.summary.trace_id).collect()
    }

    #[tokio::test]
    async fn filters_and_traceql_find_the_same_traces_in_head_and_segments() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let all = e.search_traces(TraceQuery { limit: 10, ..Default::default() }).await.unwrap();
            assert_eq!(ids(&all), [TraceId([3; 16]), TraceId([2; 16]), TraceId([1; 16])], "newest first");

            let mut q = TraceQuery { limit: 10, keep_matched: 3, ..Default::default() };
            q.filter.service = Some("cart".into());
            q.filter.status = Some(StatusFilter::Error);
            let r = e.search_traces(q).await.unwrap();
            assert_eq!(ids(&r), [TraceId([1; 16])]);
            let hit = &r.traces[0];
            assert_eq!((hit.matched_count, hit.matched[0].name.as_str()), (1, "cart.Get"));
            assert_eq!((hit.summary.root_service.as_str(), hit.summary.span_count), ("frontend", 2));
            assert!(hit.trace.is_none());

            let tq = TraceQl::parse(r#"{ resource.service.name = "cart" } > { name = "SELECT" }"#).unwrap();
            let q = TraceQuery { traceql: Some(tq), limit: 10, keep_matched: 3, ..Default::default() };
            let r = e.search_traces(q).await.unwrap();
            assert_eq!(ids(&r), [TraceId([3; 16])]);
            assert_eq!(r.traces[0].matched[0].name, "SELECT");
        }
    }

    #[tokio::test]
    async fn trace_duration_bounds_limit_and_whole_traces() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        let q = TraceQuery { min_trace_duration_ns: Some(60_000_000), limit: 10, ..Default::default() };
        assert_eq!(ids(&e.search_traces(q).await.unwrap()), [TraceId([1; 16])]);
        let q = TraceQuery { max_trace_duration_ns: Some(60_000_000), limit: 1, ..Default::default() };
        let r = e.search_traces(q).await.unwrap();
        assert_eq!(ids(&r), [TraceId([3; 16])]);
        let q = TraceQuery { limit: 1, with_trace: true, ..Default::default() };
        let r = e.search_traces(q).await.unwrap();
        assert_eq!(r.traces[0].trace.as_ref().unwrap().spans.len(), 2);
    }

    /// The longest traces of the whole range, not the longest of the
    /// newest page: an old long trace in a segment beats newer short ones
    /// in the head, and a trace's duration counts its spans in every part
    /// of storage.
    #[tokio::test]
    async fn sort_by_duration_is_an_exact_top_n_over_head_and_segments() {
        use crate::engine::testutil::span;
        let (_d, s) = storage();
        let e = engine(&s);
        let sec = 1_000_000_000;
        // trace 1: old and long (300 ms), then flushed to a segment
        append(&s, three_traces().into_iter().filter(|sp| sp.trace_id == TraceId([1; 16])).collect()).await;
        // trace 4: a 10 ms root in the same segment whose 900 ms child
        // arrives later, into the head
        append(&s, vec![span(4, 1, None, "frontend", "GET /slow", 4 * sec, 10_000_000, false)]).await;
        s.flush(true).unwrap();
        append(&s, three_traces().into_iter().filter(|sp| sp.trace_id != TraceId([1; 16])).collect()).await;
        append(&s, vec![span(4, 2, Some(1), "worker", "job", 4 * sec + 100, 900_000_000, false)]).await;

        let q = |limit, sort| TraceQuery { limit, sort, ..Default::default() };
        let r = e.search_traces(q(1, TraceSort::Start)).await.unwrap();
        assert_eq!(ids(&r), [TraceId([4; 16])], "newest first");
        let r = e.search_traces(q(2, TraceSort::Duration)).await.unwrap();
        assert_eq!(ids(&r), [TraceId([4; 16]), TraceId([1; 16])], "longest first");
        assert_eq!(r.traces[0].summary.duration_ns, 900_000_100);
        let r = e.search_traces(q(10, TraceSort::Duration)).await.unwrap();
        assert_eq!(ids(&r), [4, 1, 3, 2].map(|b| TraceId([b; 16])));

        // The filter picks spans, the sort ranks whole traces: only the
        // 10 ms root of trace 4 is from frontend.
        let mut fq = q(1, TraceSort::Duration);
        fq.filter.service = Some("frontend".into());
        fq.filter.start_ns = Some(2 * sec);
        let r = e.search_traces(fq).await.unwrap();
        assert_eq!(ids(&r), [TraceId([4; 16])], "trace 1 starts before the range");

        // TraceQL the index only narrows, with the smallest candidate
        // budget: still the longest matching trace.
        let cfg = crate::QueryConfig { max_traceql_candidates: 1, ..Default::default() };
        let small = crate::engine::Engine::new(s.clone(), cfg);
        for (q, want) in [(r#"{ duration > 5ms }"#, 4), (r#"{ resource.service.name = "cart" }"#, 1)] {
            let traceql = Some(TraceQl::parse(q).unwrap());
            let query = TraceQuery { traceql, limit: 1, sort: TraceSort::Duration, ..Default::default() };
            let r = small.search_traces(query).await.unwrap();
            assert_eq!(ids(&r), [TraceId([want; 16])], "{q}");
        }
        assert_eq!("duration".parse::<TraceSort>().unwrap(), TraceSort::Duration);
        assert!("longest".parse::<TraceSort>().is_err());
    }

    /// More matches than the hits kept while ranking: the longest still win.
    #[tokio::test]
    async fn sort_by_duration_ranks_many_traces_in_bounded_memory() {
        use crate::engine::testutil::span;
        let (_d, s) = storage();
        // trace n (10..=209) lasts n µs, except that trace 20 is the longest
        let spans = (10u8..210)
            .map(|n| {
                let dur = if n == 20 { 1_000_000 } else { u64::from(n) * 1_000 };
                span(n, 1, None, "svc", "op", u64::from(n) * 1_000_000_000, dur, false)
            })
            .collect();
        append(&s, spans).await;
        let r = engine(&s)
            .search_traces(TraceQuery { limit: 3, sort: TraceSort::Duration, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(ids(&r), [20, 209, 208].map(|b| TraceId([b; 16])));
        // Candidates come from the index's longest spans: a few traces are
        // read, not every trace of the range (issue 9 review: reading all
        // 20,000 traces of a range took 27 s).
        assert!(r.inspected <= 4, "read {} traces for a top 3", r.inspected);
    }

    /// A search past `query.timeout` stops itself instead of reading on
    /// for nobody after the API answered 504.
    #[tokio::test]
    async fn a_search_past_its_deadline_stops() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let cfg = crate::QueryConfig::default();
        let past = skein_storage::ReadCtx::with_deadline(std::time::Instant::now());
        for sort in [TraceSort::Start, TraceSort::Duration] {
            let q = TraceQuery { limit: 10, sort, ..Default::default() };
            let r = run(&s.reader(&past), &cfg, &q);
            assert!(matches!(r, Err(Error::Deadline(_))), "{sort:?}: {r:?}");
        }
    }

    /// A structural query reads only candidates that have a span for
    /// every part of it: of the frontend traces, only trace 1 has an error
    /// span, so trace 2 is never read, in the head or in a segment.
    #[tokio::test]
    async fn structural_traceql_reads_only_candidates_with_every_part() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let tq =
                TraceQl::parse(r#"{ resource.service.name = "frontend" } >> { status = error }"#).unwrap();
            assert_eq!(tq.required_filters().len(), 2);
            let q = TraceQuery { traceql: Some(tq), limit: 10, keep_matched: 3, ..Default::default() };
            let r = e.search_traces(q).await.unwrap();
            assert_eq!(ids(&r), [TraceId([1; 16])]);
            assert_eq!(r.traces[0].matched[0].name, "cart.Get");
            assert_eq!(r.inspected, 1, "flushed: {flushed}");
        }
        assert!(TraceQl::parse(r#"{ name = "a" } || { name = "b" }"#).unwrap().required_filters().is_empty());
    }

    /// A search that needs only summaries gives the same answer whether a
    /// trace is in the head, in one segment (its stored summary) or split
    /// over a segment and the head (read from its spans).
    #[tokio::test]
    async fn stored_summaries_answer_as_the_spans_do() {
        let (_d, s) = storage();
        let e = engine(&s);
        let q = || TraceQuery { limit: 10, ..Default::default() };
        let split =
            |first: bool| three_traces().into_iter().filter(move |sp| (sp.span_id.0[7] == 1) == first);
        append(&s, split(true).collect()).await;
        append(&s, split(false).filter(|sp| sp.trace_id == TraceId([1; 16])).collect()).await;
        let sums = |r: &TraceSearch| r.traces.iter().map(|t| t.summary.clone()).collect::<Vec<_>>();
        let from_spans = |r: &TraceSearch| {
            r.traces
                .iter()
                .map(|t| {
                    summarize(t.summary.trace_id, &s.get_trace_spans(&t.summary.trace_id).unwrap().unwrap())
                })
                .collect::<Vec<_>>()
        };
        let in_head = e.search_traces(q()).await.unwrap();
        assert_eq!(in_head.traces.len(), 3);
        s.flush(true).unwrap();
        assert!(s.stored_trace_summary(&TraceId([1; 16])).unwrap().is_some());
        let stored = e.search_traces(q()).await.unwrap();
        assert_eq!(sums(&stored), sums(&in_head));
        // Trace 3's child arrives after the flush: split over segment and head.
        append(&s, split(false).filter(|sp| sp.trace_id == TraceId([3; 16])).collect()).await;
        assert!(s.stored_trace_summary(&TraceId([3; 16])).unwrap().is_none());
        let mixed = e.search_traces(q()).await.unwrap();
        assert_eq!(sums(&mixed), from_spans(&mixed));
        s.flush(true).unwrap();
        let two_segments = e.search_traces(q()).await.unwrap();
        assert_eq!(sums(&two_segments), sums(&mixed));
        assert_eq!(two_segments.traces[0].summary.services.len(), 2, "trace 3: cart and db");
    }

    #[test]
    fn plan_narrows_by_traceql_only_without_span_conditions() {
        let tq = TraceQl::parse(r#"{ name = "x" }"#).unwrap();
        let mut q = TraceQuery { traceql: Some(tq), limit: 5, ..Default::default() };
        q.filter.start_ns = Some(7);
        let (c, budget) = q.plan(100);
        assert_eq!((c.operation.as_deref(), c.start_ns, budget), (Some("x"), Some(7), 100));
        q.filter.service = Some("a".into());
        let (c, _) = q.plan(100);
        assert_eq!((c.operation, c.service.as_deref()), (None, Some("a")));
        q.traceql = None;
        assert_eq!(q.plan(100).1, 5);
    }
}
