//! The query engine: plans and runs every read the APIs offer over one
//! [`Storage`], and knows no HTTP. The native, Jaeger and Tempo adapters in
//! [`crate::api`] parse their parameters into the input types here and
//! render the results in their own JSON; they never touch storage.
//!
//! Every call takes a slot of the concurrency limit ([`Guards`]), runs on
//! the blocking pool (storage reads block on files and object storage)
//! under a [`ReadCtx`] with the deadline `query.timeout`, and is answered
//! with [`Error::Deadline`] at the deadline: the context is cancelled and
//! the work stops at its next check, between segments and between traces,
//! in storage's loops and in the engine's. The slot is held until the
//! work has stopped, so work cut by the deadline still counts against the
//! limit while it winds down.

mod conditions;
pub mod critical_path;
pub mod logql;
mod metrics;
mod search;
mod stats;
mod summary;
mod tags;
pub mod traceql;
#[cfg(test)]
mod workload_tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein_storage::filter::LogFilter;
use skein_storage::model::{LogRecord, Span, TraceId};
use skein_storage::{ReadCtx, ReadStats, Reader, Storage};

pub use conditions::SpanCondition;
pub use metrics::{Exemplar, MetricSeries, MetricsAnswer, MetricsQuery};
pub use search::{TraceHit, TraceQuery, TraceSearch, TraceSort};
pub use stats::{
    Edge, MinuteMetrics, Operation, RedPoint, RedQuery, RedSeries, ServiceStat, SpanMetrics, SpanMetricsQuery,
};
pub use summary::{summarize, ServiceCount, TraceSummary};
pub use tags::{TagScope, TagValue, TagValueType, MAX_TAG_RESULTS};

use crate::error::{Error, Result};
use crate::guard::{Guards, Pool};
use crate::QueryConfig;

/// What a search did, so a slow one explains itself (the `metrics` object
/// of search answers, after Tempo's `SearchMetrics`): the work counted as
/// it was done, the segments the range covers, and the time it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Segments, bytes, traces, spans and log records read.
    pub read: ReadStats,
    /// Segments whose time range meets the query's (Tempo's
    /// `totalBlocks`).
    pub total_segments: u64,
    /// Their size on disk, bytes (Tempo's `totalBlockBytes`).
    pub total_segment_bytes: u64,
    /// From taking a slot to the answer.
    pub elapsed: Duration,
}

impl Work {
    /// The work of a read of `[start, end]` (open when `None`) that began
    /// at `started` and counted into `r`'s context.
    fn of(r: &Reader<'_>, start: Option<u64>, end: Option<u64>, started: Instant) -> Work {
        let snap = r.storage().snapshot();
        let segs = snap.segments.iter().filter(|s| s.overlaps(start, end));
        let (n, bytes) = segs.fold((0, 0), |(n, b), s| (n + 1, b + s.meta.bytes));
        Work {
            read: r.ctx().stats(),
            total_segments: n,
            total_segment_bytes: bytes,
            elapsed: started.elapsed(),
        }
    }
}

/// Cancels a query's reads when the query is dropped: at its deadline, or
/// when the client goes away and the server drops the request.
struct CancelOnDrop(ReadCtx);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One trace as stored: every span and every log record with its trace ID,
/// from the head and every segment holding part of it.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The trace's ID.
    pub id: TraceId,
    /// Its spans, in storage order.
    pub spans: Vec<Span>,
    /// Its log records, in storage order.
    pub logs: Vec<LogRecord>,
    /// Why the trace may be incomplete: one line per quarantined segment
    /// that may hold part of it ([`Storage::damage_for_trace`]). Empty when
    /// the trace is whole.
    pub warnings: Vec<String>,
}

impl Trace {
    /// A trace read whole (no warnings).
    pub fn new(id: TraceId, spans: Vec<Span>, logs: Vec<LogRecord>) -> Self {
        Trace { id, spans, logs, warnings: Vec::new() }
    }
}

/// Log records found, and why the answer may be missing some: one line
/// per quarantined segment whose time range meets the search's (empty
/// when the answer is whole).
#[derive(Debug, Clone, Default)]
pub struct LogSearch {
    /// The records, latest first.
    pub logs: Vec<LogRecord>,
    /// See [`TraceSearch::warnings`].
    pub warnings: Vec<String>,
    /// What the search did.
    pub work: Work,
}

/// The query engine over one storage, with the limits of `[query]`.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    storage: Arc<Storage>,
    cfg: QueryConfig,
    guards: Guards,
}

impl Engine {
    /// An engine reading `storage` under the limits of `cfg`, with a
    /// concurrency limit of its own (see [`Engine::with_guards`]).
    pub fn new(storage: Arc<Storage>, cfg: QueryConfig) -> Self {
        let guards = Guards::new(&cfg);
        Engine { storage, cfg, guards }
    }

    /// This engine sharing `guards`' concurrency limit and counters (a
    /// server's engines share one).
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
    }

    /// The limits the engine applies.
    pub fn config(&self) -> &QueryConfig {
        &self.cfg
    }

    /// Runs a blocking read of `pool` on the blocking pool under a
    /// [`ReadCtx`] with the query deadline, once a slot is free. At the
    /// deadline the answer is [`Error::Deadline`] and the context is
    /// cancelled, so the read stops at its next check; it keeps its slot
    /// until then.
    ///
    /// # Errors
    /// [`Error::TooBusy`] when no slot came free in time,
    /// [`Error::Deadline`] at the deadline, and the read's own.
    async fn run<T: Send + 'static>(
        &self,
        pool: Pool,
        f: impl FnOnce(&Reader<'_>, &QueryConfig, Instant) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        // Self-tracing (src/self_tracing.rs): the wait for a slot, then
        // the read with the work it counted. Numbers are recorded as i64:
        // tracing-opentelemetry turns a u64 into a string.
        let admit = tracing::info_span!("engine.admit", pool = ?pool);
        let slot = tracing::Instrument::instrument(self.guards.admit(pool), admit).await?;
        let started = Instant::now();
        let timeout = self.cfg.timeout;
        let ctx = ReadCtx::with_deadline(started + timeout);
        let _cancel = CancelOnDrop(ctx.clone());
        let (storage, cfg) = (self.storage.clone(), self.cfg.clone());
        let span = tracing::info_span!(
            "engine.read",
            segments_read = tracing::field::Empty,
            bytes_read = tracing::field::Empty,
            traces_read = tracing::field::Empty,
            spans_read = tracing::field::Empty,
            logs_read = tracing::field::Empty,
        );
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _in = span.enter();
            let r = f(&storage.reader(&ctx), &cfg, started);
            let st = ctx.stats();
            span.record("segments_read", st.segments as i64);
            span.record("bytes_read", st.bytes as i64);
            span.record("traces_read", st.traces as i64);
            span.record("spans_read", st.spans as i64);
            span.record("logs_read", st.logs as i64);
            r
        });
        let r = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Internal(e.to_string())),
            Err(_) => Err(Error::Deadline(timeout)),
        };
        match r {
            Err(Error::Deadline(_)) => {
                self.guards.metrics().deadline_exceeded(pool);
                Err(Error::Deadline(timeout))
            }
            r => r,
        }
    }

    /// Traces matching `q`, newest first or longest first as `q.sort` says
    /// (see [`TraceQuery`] for how the index and TraceQL share the work).
    #[tracing::instrument(name = "engine.search_traces", skip_all, fields(limit = q.limit as i64, traceql = q.traceql.is_some(), sort = ?q.sort))]
    pub async fn search_traces(&self, q: TraceQuery) -> Result<TraceSearch> {
        self.run(Pool::Search, move |r, cfg, started| {
            let mut out = search::run(r, cfg, &q)?;
            out.work = Work::of(r, q.filter.start_ns, q.filter.end_ns, started);
            Ok(out)
        })
        .await
    }

    /// Every span and log record of trace `id`, with warnings when a
    /// quarantined segment may hold part of it; `None` when storage holds
    /// nothing of it and no quarantined segment may (with one that may, an
    /// empty trace with its warnings: the answer is partial, not "absent").
    /// A trace of more than `query.max_spans_per_trace` spans is answered
    /// with its first spans by start time and a warning that says so.
    #[tracing::instrument(name = "engine.trace", skip_all, fields(trace_id = %id))]
    pub async fn trace(&self, id: TraceId) -> Result<Option<Trace>> {
        self.run(Pool::Trace, move |r, cfg, _| {
            let mut found = r.get_trace(&id)?;
            // Asked after the read, so a segment it quarantined is named.
            let mut warnings = r.storage().damage_for_trace(&id);
            if let Some((spans, _)) = &mut found {
                if spans.len() > cfg.max_spans_per_trace {
                    warnings.push(format!(
                        "trace has {} spans; only the first {} by start time are answered \
                         (query.max_spans_per_trace)",
                        spans.len(),
                        cfg.max_spans_per_trace
                    ));
                    spans.truncate(cfg.max_spans_per_trace);
                }
            }
            Ok(match found {
                Some((spans, logs)) => Some(Trace { id, spans, logs, warnings }),
                None if !warnings.is_empty() => Some(Trace { id, warnings, ..Default::default() }),
                None => None,
            })
        })
        .await
    }

    /// Log records matching `f`, latest first, at most `limit`.
    #[tracing::instrument(name = "engine.search_logs", skip_all, fields(limit = limit as i64))]
    pub async fn search_logs(&self, f: LogFilter, limit: usize) -> Result<LogSearch> {
        self.run(Pool::Search, move |r, _, started| {
            let logs = r.search_logs(&f, limit)?;
            let work = Work::of(r, f.start_ns, f.end_ns, started);
            Ok(LogSearch { logs, warnings: log_damage(r.storage(), &f), work })
        })
        .await
    }

    /// Counts of log records matching `f` per bucket of `step_ns`, keyed by
    /// bucket start (Unix ns, a multiple of `step_ns`); `f` must carry the
    /// time range. Buckets without a match are absent. With them, the
    /// warnings of a partial answer (as [`LogSearch::warnings`]).
    #[tracing::instrument(name = "engine.log_histogram", skip_all)]
    pub async fn log_histogram(
        &self,
        f: LogFilter,
        step_ns: u64,
    ) -> Result<(HashMap<u64, u64>, Vec<String>)> {
        let start = f.start_ns.unwrap_or(0);
        self.run(Pool::Search, move |r, _, _| {
            let counts = r.log_histogram(&f, start, step_ns)?;
            Ok((counts, log_damage(r.storage(), &f)))
        })
        .await
    }

    /// Every service with its span and error counts, sorted by name.
    #[tracing::instrument(name = "engine.services", skip_all)]
    pub async fn services(&self) -> Result<Vec<ServiceStat>> {
        self.run(Pool::Search, |r, _, _| Ok(stats::services(r.storage()))).await
    }

    /// The operations of `service` (of every service with `None`), one per
    /// (service, name, span kind) with its span count, sorted.
    #[tracing::instrument(name = "engine.operations", skip_all)]
    pub async fn operations(&self, service: Option<String>) -> Result<Vec<Operation>> {
        self.run(Pool::Search, move |r, _, _| Ok(stats::operations(r.storage(), service.as_deref()))).await
    }

    /// Service-to-service call edges from the rollups, with calls and errors
    /// summed over the minutes from `start_ns` to `end_ns` (each optional,
    /// at one-minute precision), sorted by (parent, child).
    #[tracing::instrument(name = "engine.dependencies", skip_all)]
    pub async fn dependencies(&self, start_ns: Option<u64>, end_ns: Option<u64>) -> Result<Vec<Edge>> {
        self.run(Pool::Search, move |r, _, _| Ok(stats::dependencies(r.storage(), start_ns, end_ns))).await
    }

    /// Per-minute span counts, errors and latency sketches of some
    /// services and span kinds (see [`SpanMetricsQuery`]).
    #[tracing::instrument(name = "engine.span_metrics", skip_all)]
    pub async fn span_metrics(&self, q: SpanMetricsQuery) -> Result<SpanMetrics> {
        self.run(Pool::Search, move |r, _, _| Ok(stats::span_metrics(r.storage(), &q))).await
    }

    /// Rate, errors and latency percentiles per step (see [`RedQuery`]).
    #[tracing::instrument(name = "engine.red", skip_all)]
    pub async fn red(&self, q: RedQuery) -> Result<Vec<RedSeries>> {
        self.run(Pool::Search, move |r, _, _| Ok(stats::red(r.storage(), &q))).await
    }

    /// A TraceQL metrics query (see [`MetricsQuery`]): from the RED rollups
    /// where they answer it, else from the spans of the range.
    ///
    /// # Errors
    /// 400 when `q` has no metrics stage, a `compare()` with a count below
    /// 1 or a bad window, or exceeds
    /// `query.max_points_per_series` or `query.max_series`; and the
    /// engine's own ([`Error::Deadline`], [`Error::TooBusy`]).
    #[tracing::instrument(name = "engine.metrics", skip_all)]
    pub async fn metrics(&self, q: MetricsQuery) -> Result<MetricsAnswer> {
        metrics::validate(&q, &self.cfg)?;
        self.run(Pool::Search, move |r, cfg, started| {
            let mut out = metrics::run(r, cfg, &q)?;
            out.work = Work::of(r, Some(q.start_ns), Some(q.end_ns), started);
            Ok(out)
        })
        .await
    }

    /// Names of scalar attributes: (span attribute names, resource attribute
    /// names), each capped at [`MAX_TAG_RESULTS`].
    #[tracing::instrument(name = "engine.tag_names", skip_all)]
    pub async fn tag_names(&self) -> Result<(Vec<String>, Vec<String>)> {
        self.run(Pool::Search, |r, _, _| tags::tag_names(r.storage(), r.ctx())).await
    }

    /// Values of scalar attribute `key` in `scope` (or of an intrinsic),
    /// sorted by (type, value), capped at [`MAX_TAG_RESULTS`].
    #[tracing::instrument(name = "engine.tag_values", skip_all, fields(key = %key))]
    pub async fn tag_values(&self, scope: TagScope, key: String) -> Result<Vec<TagValue>> {
        self.run(Pool::Search, move |r, _, _| tags::tag_values(r.storage(), r.ctx(), scope, &key)).await
    }
}

/// The warnings of a log read with filter `f`: by trace when it names
/// one, else by time range.
fn log_damage(s: &Storage, f: &LogFilter) -> Vec<String> {
    match &f.trace_id {
        Some(id) => s.damage_for_trace(id),
        None => s.damage_in_range(f.start_ns, f.end_ns),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testutil::{append, engine, many_traces, storage, three_traces, until_idle};
    use super::*;

    #[tokio::test]
    async fn lookup_finds_a_trace_in_head_and_segments() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let t = e.trace(TraceId([1; 16])).await.unwrap().unwrap();
            let names: Vec<_> = t.spans.iter().map(|s| s.name.as_str()).collect();
            assert_eq!((t.id, names.len()), (TraceId([1; 16]), 2));
            assert!(names.contains(&"cart.Get"));
            assert!(e.trace(TraceId([9; 16])).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_slow_read_is_abandoned_at_the_deadline() {
        let (_d, s) = storage();
        let e = Engine::new(s, QueryConfig { timeout: Duration::from_millis(20), ..Default::default() });
        let r = e
            .run(Pool::Search, |_, _, _| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(Error::Deadline(d)) if d == Duration::from_millis(20)), "{r:?}");
    }

    /// Issue 12: the deadline cancels the work instead of leaving it to
    /// run for nobody. A work that cannot finish (it loops until stopped,
    /// counting units) is answered 504; its slot comes free once it has
    /// stopped, and its count then stays where it was.
    #[tokio::test]
    async fn the_deadline_cancels_the_work_and_frees_its_slot() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (_d, s) = storage();
        let cfg = QueryConfig { timeout: Duration::from_millis(30), max_concurrent: 1, ..Default::default() };
        let e = Engine::new(s, cfg);
        let units = Arc::new(AtomicU64::new(0));
        let counted = units.clone();
        let r: Result<()> = e
            .run(Pool::Search, move |r, _, _| loop {
                r.ctx().check()?;
                counted.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            })
            .await;
        assert!(matches!(r, Err(Error::Deadline(_))), "{r:?}");
        until_idle(&e.guards, Pool::Search).await;
        let stopped_at = units.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(units.load(Ordering::Relaxed), stopped_at, "the work goes on after the answer");
        assert_eq!(e.guards.metrics().deadlines(Pool::Search), 1);
        // The slot is free again.
        e.run(Pool::Search, |_, _, _| Ok(())).await.unwrap();
    }

    /// A trace search over more traces than the deadline lets it read
    /// stops between candidates: it answers 504 and its work ends (its
    /// slot comes free). Without the deadline it reads every trace, and
    /// says so in its work.
    #[tokio::test]
    async fn a_search_cut_by_the_deadline_stops_between_traces() {
        let (_d, s) = storage();
        let traces = many_traces(&s, 400, 4).await;
        let cfg = QueryConfig { timeout: Duration::from_millis(1), ..Default::default() };
        let e = Engine::new(s.clone(), cfg);
        // The trace duration is checked on every candidate, whose spans are
        // read for its matched spans.
        let q =
            TraceQuery { min_trace_duration_ns: Some(1), limit: 1000, keep_matched: 1, ..Default::default() };
        let r = e.search_traces(q).await;
        assert!(matches!(r, Err(Error::Deadline(_))), "{r:?}");
        until_idle(&e.guards, Pool::Search).await;
        // The same search without a deadline reads them all.
        let all = engine(&s)
            .search_traces(TraceQuery {
                min_trace_duration_ns: Some(1),
                limit: 1000,
                keep_matched: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!((all.traces.len(), all.work.read.traces), (traces, traces as u64));
        assert_eq!(all.work.read.segments, 4);
        assert_eq!(all.work.total_segments, 4);
        assert!(all.work.read.bytes > 0 && all.work.total_segment_bytes > 0, "{:?}", all.work);
        assert_eq!(all.work.read.spans, 2 * traces as u64);
    }

    /// A trace larger than `query.max_spans_per_trace` is answered with its
    /// first spans and a warning.
    #[tokio::test]
    async fn a_huge_trace_is_cut_with_a_warning() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let cfg = QueryConfig { max_spans_per_trace: 1, ..Default::default() };
        let t = Engine::new(s, cfg).trace(TraceId([1; 16])).await.unwrap().unwrap();
        assert_eq!(t.spans.len(), 1);
        assert_eq!(t.spans[0].name, "GET /");
        assert!(t.warnings[0].contains("query.max_spans_per_trace"), "{:?}", t.warnings);
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A small storage in a tempdir, and spans to fill it.

    use std::sync::Arc;
    use std::time::Duration;

    use skein_storage::model::{kind, status, AttrValue, Resource, Scope, Span, SpanId, TraceId};
    use skein_storage::{Storage, StorageConfig};

    use super::Engine;
    use crate::QueryConfig;

    /// An open, replayed storage in a fresh tempdir (kept alive by the guard).
    pub(crate) fn storage() -> (tempfile::TempDir, Arc<Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StorageConfig::default().with_retention(Duration::from_secs(3600));
        cfg.wal.fsync = false;
        let s = Storage::open(dir.path(), cfg).unwrap();
        s.replay().unwrap();
        (dir, s)
    }

    /// The one way tests put spans into storage.
    pub(crate) async fn append(s: &Arc<Storage>, spans: Vec<Span>) {
        s.append_spans(spans).await.unwrap();
    }

    /// An engine over `s` with default limits.
    pub(crate) fn engine(s: &Arc<Storage>) -> Engine {
        Engine::new(s.clone(), QueryConfig::default())
    }

    /// A span of `service` named `name`, trace `trace` (its byte repeated),
    /// span ID `id`, child of `parent`, from `start` lasting `dur_ns`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn span(
        trace: u8,
        id: u8,
        parent: Option<u8>,
        service: &str,
        name: &str,
        start: u64,
        dur_ns: u64,
        error: bool,
    ) -> Span {
        Span {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: if parent.is_some() { kind::CLIENT } else { kind::SERVER },
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur_ns,
            status_code: if error { status::ERROR } else { status::UNSET },
            status_message: String::new(),
            attributes: vec![("http.status".into(), AttrValue::Int(if error { 500 } else { 200 }))],
            resource: Arc::new(Resource {
                service_name: service.into(),
                attributes: vec![("service.name".into(), AttrValue::Str(service.into()))],
            }),
            scope: Arc::new(Scope { name: "test".into(), version: "1".into() }),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Waits until no query of `pool` holds a slot: its blocking work has
    /// returned. Bounded, so a work that never stops fails the test.
    pub(crate) async fn until_idle(g: &crate::Guards, pool: crate::Pool) {
        for _ in 0..2000 {
            if g.metrics().running(pool) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the query's work did not stop after its deadline");
    }

    /// `n` traces of two spans (frontend → cart), written to `segments`
    /// segments; returns `n`. Trace `i` starts at `i` ms.
    pub(crate) async fn many_traces(s: &Arc<Storage>, n: usize, segments: usize) -> usize {
        let per = n.div_ceil(segments);
        for chunk in (0..n).collect::<Vec<_>>().chunks(per) {
            let spans = chunk
                .iter()
                .flat_map(|&i| {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                    let start = (i as u64 + 1) * 1_000_000;
                    let mut a = span(0, 1, None, "frontend", "GET /", start, 5_000_000, false);
                    let mut b = span(0, 2, Some(1), "cart", "cart.Get", start + 10, 1_000_000, false);
                    a.trace_id = TraceId(id);
                    b.trace_id = TraceId(id);
                    [a, b]
                })
                .collect();
            append(s, spans).await;
            s.flush(true).unwrap();
        }
        n
    }

    /// Three traces: 1 = frontend → cart (error), 2 = frontend only, 3 =
    /// cart → db; trace `n` starts at `n` seconds.
    pub(crate) fn three_traces() -> Vec<Span> {
        let s = 1_000_000_000;
        vec![
            span(1, 1, None, "frontend", "GET /", s, 300_000_000, false),
            span(1, 2, Some(1), "cart", "cart.Get", s + 10, 100_000_000, true),
            span(2, 1, None, "frontend", "GET /health", 2 * s, 1_000_000, false),
            span(3, 1, None, "cart", "cart.Put", 3 * s, 50_000_000, false),
            span(3, 2, Some(1), "db", "SELECT", 3 * s + 10, 20_000_000, false),
        ]
    }
}
