//! The query engine: plans and runs every read the APIs offer over one
//! [`Storage`], and knows no HTTP. The native, Jaeger and Tempo adapters in
//! [`crate::api`] parse their parameters into the input types here and
//! render the results in their own JSON; they never touch storage.
//!
//! Every call runs on the blocking pool (storage reads block on files and
//! object storage) and is abandoned with [`Error::Deadline`] after
//! `query.timeout`.

mod conditions;
mod search;
mod stats;
mod summary;
mod tags;
pub mod traceql;
#[cfg(test)]
mod workload_tests;

use std::collections::HashMap;
use std::sync::Arc;

use skein_storage::filter::LogFilter;
use skein_storage::model::{LogRecord, Span, TraceId};
use skein_storage::Storage;

pub use conditions::SpanCondition;
pub use search::{TraceHit, TraceQuery, TraceSearch, TraceSort};
pub use stats::{
    Edge, MinuteMetrics, Operation, RedPoint, RedQuery, RedSeries, ServiceStat, SpanMetrics, SpanMetricsQuery,
};
pub use summary::{summarize, ServiceCount, TraceSummary};
pub use tags::{TagScope, TagValue, TagValueType, MAX_TAG_RESULTS};

use crate::error::{Error, Result};
use crate::QueryConfig;

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
}

/// The query engine over one storage, with the limits of `[query]`.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    storage: Arc<Storage>,
    cfg: QueryConfig,
}

impl Engine {
    /// An engine reading `storage` under the limits of `cfg`.
    pub fn new(storage: Arc<Storage>, cfg: QueryConfig) -> Self {
        Engine { storage, cfg }
    }

    /// The limits the engine applies.
    pub fn config(&self) -> &QueryConfig {
        &self.cfg
    }

    /// Runs a blocking read on the blocking pool, bounded by the query
    /// timeout. A read still running at the deadline is left to finish in
    /// the background and its answer is dropped; trace search, the one read
    /// whose work grows with the range, checks the deadline itself between
    /// candidates and stops.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Storage, &QueryConfig) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let storage = self.storage.clone();
        let cfg = self.cfg.clone();
        let task = tokio::task::spawn_blocking(move || f(&storage, &cfg));
        match tokio::time::timeout(self.cfg.timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Internal(e.to_string())),
            Err(_) => Err(Error::Deadline(self.cfg.timeout)),
        }
    }

    /// Traces matching `q`, newest first or longest first as `q.sort` says
    /// (see [`TraceQuery`] for how the index and TraceQL share the work).
    pub async fn search_traces(&self, q: TraceQuery) -> Result<TraceSearch> {
        self.run(move |s, cfg| search::run(s, cfg, &q)).await
    }

    /// Every span and log record of trace `id`, with warnings when a
    /// quarantined segment may hold part of it; `None` when storage holds
    /// nothing of it and no quarantined segment may (with one that may, an
    /// empty trace with its warnings: the answer is partial, not "absent").
    pub async fn trace(&self, id: TraceId) -> Result<Option<Trace>> {
        self.run(move |s, _| {
            let found = s.get_trace(&id)?;
            // Asked after the read, so a segment it quarantined is named.
            let warnings = s.damage_for_trace(&id);
            Ok(match found {
                Some((spans, logs)) => Some(Trace { id, spans, logs, warnings }),
                None if !warnings.is_empty() => Some(Trace { id, warnings, ..Default::default() }),
                None => None,
            })
        })
        .await
    }

    /// Log records matching `f`, latest first, at most `limit`.
    pub async fn search_logs(&self, f: LogFilter, limit: usize) -> Result<LogSearch> {
        self.run(move |s, _| {
            let logs = s.search_logs(&f, limit)?;
            Ok(LogSearch { logs, warnings: log_damage(s, &f) })
        })
        .await
    }

    /// Counts of log records matching `f` per bucket of `step_ns`, keyed by
    /// bucket start (Unix ns, a multiple of `step_ns`); `f` must carry the
    /// time range. Buckets without a match are absent. With them, the
    /// warnings of a partial answer (as [`LogSearch::warnings`]).
    pub async fn log_histogram(
        &self,
        f: LogFilter,
        step_ns: u64,
    ) -> Result<(HashMap<u64, u64>, Vec<String>)> {
        let start = f.start_ns.unwrap_or(0);
        self.run(move |s, _| {
            let counts = s.log_histogram(&f, start, step_ns)?;
            Ok((counts, log_damage(s, &f)))
        })
        .await
    }

    /// Every service with its span and error counts, sorted by name.
    pub async fn services(&self) -> Result<Vec<ServiceStat>> {
        self.run(|s, _| Ok(stats::services(s))).await
    }

    /// The operations of `service` (of every service with `None`), one per
    /// (service, name, span kind) with its span count, sorted.
    pub async fn operations(&self, service: Option<String>) -> Result<Vec<Operation>> {
        self.run(move |s, _| Ok(stats::operations(s, service.as_deref()))).await
    }

    /// Service-to-service call edges from the rollups, with calls and errors
    /// summed over the minutes from `start_ns` to `end_ns` (each optional,
    /// at one-minute precision), sorted by (parent, child).
    pub async fn dependencies(&self, start_ns: Option<u64>, end_ns: Option<u64>) -> Result<Vec<Edge>> {
        self.run(move |s, _| Ok(stats::dependencies(s, start_ns, end_ns))).await
    }

    /// Per-minute span counts, errors and latency sketches of some
    /// services and span kinds (see [`SpanMetricsQuery`]).
    pub async fn span_metrics(&self, q: SpanMetricsQuery) -> Result<SpanMetrics> {
        self.run(move |s, _| Ok(stats::span_metrics(s, &q))).await
    }

    /// Rate, errors and latency percentiles per step (see [`RedQuery`]).
    pub async fn red(&self, q: RedQuery) -> Result<Vec<RedSeries>> {
        self.run(move |s, _| Ok(stats::red(s, &q))).await
    }

    /// Names of scalar attributes: (span attribute names, resource attribute
    /// names), each capped at [`MAX_TAG_RESULTS`].
    pub async fn tag_names(&self) -> Result<(Vec<String>, Vec<String>)> {
        self.run(|s, _| tags::tag_names(s)).await
    }

    /// Values of scalar attribute `key` in `scope` (or of an intrinsic),
    /// sorted by (type, value), capped at [`MAX_TAG_RESULTS`].
    pub async fn tag_values(&self, scope: TagScope, key: String) -> Result<Vec<TagValue>> {
        self.run(move |s, _| tags::tag_values(s, scope, &key)).await
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

    use super::testutil::{append, engine, storage, three_traces};
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
            .run(|_, _| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(Error::Deadline(d)) if d == Duration::from_millis(20)), "{r:?}");
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
