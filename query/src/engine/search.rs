//! Trace search: the index picks candidate traces, each candidate is then
//! read whole and checked against the span conditions, the TraceQL query
//! and the trace-duration bounds.

use skein_storage::filter::SpanFilter;
use skein_storage::model::Span;
use skein_storage::Storage;

use super::conditions::{self, SpanCondition};
use super::summary::{summarize, TraceSummary};
use super::traceql::TraceQl;
use super::Trace;
use crate::error::Result;
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
    /// the filter).
    pub matched_count: usize,
    /// The first [`TraceQuery::keep_matched`] matched spans, in trace order.
    pub matched: Vec<Span>,
    /// The whole trace, when [`TraceQuery::with_trace`] asked for it.
    pub trace: Option<Trace>,
}

/// The answer of a trace search.
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    /// Matching traces, newest trace start first, at most the limit.
    pub traces: Vec<TraceHit>,
    /// Candidate traces read and evaluated.
    pub inspected: u64,
}

pub(super) fn run(s: &Storage, cfg: &QueryConfig, q: &TraceQuery) -> Result<TraceSearch> {
    let (cand, budget) = q.plan(cfg.max_traceql_candidates);
    let mut out = TraceSearch::default();
    for id in s.search_traces(&cand, budget)? {
        if out.traces.len() >= q.limit {
            break;
        }
        let (spans, logs) = if q.with_trace {
            let Some(t) = s.get_trace(&id)? else { continue };
            t
        } else {
            let Some(spans) = s.get_trace_spans(&id)? else { continue };
            (spans, Vec::new())
        };
        out.inspected += 1;
        // The span conditions hold on some span in every case (they carry
        // the time range); TraceQL then selects the spans it matches.
        let matched: Vec<&Span> = match &q.traceql {
            Some(tq) => {
                if !spans.iter().any(|sp| q.span_matches(sp)) {
                    continue;
                }
                tq.matching_spans(&spans)
            }
            None => spans.iter().filter(|sp| q.span_matches(sp)).collect(),
        };
        if matched.is_empty() {
            continue;
        }
        let summary = summarize(id, &spans);
        if q.min_trace_duration_ns.is_some_and(|m| summary.duration_ns < m)
            || q.max_trace_duration_ns.is_some_and(|m| summary.duration_ns > m)
        {
            continue;
        }
        let matched_count = matched.len();
        let matched = matched.into_iter().take(q.keep_matched).cloned().collect();
        let trace = q.with_trace.then_some(Trace { id, spans, logs });
        out.traces.push(TraceHit { summary, matched_count, matched, trace });
    }
    out.traces.sort_by_key(|t| std::cmp::Reverse(t.summary.start_time_unix_nano));
    Ok(out)
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
