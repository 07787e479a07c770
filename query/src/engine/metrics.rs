//! TraceQL metrics (`{...} | rate() by (...)`), as Grafana Tempo computes
//! them (grafana/tempo `docs/sources/tempo/traceql/metrics-queries/`,
//! `pkg/traceql/engine_metrics.go`): the spans a query selects are counted
//! or measured per series (the `by(...)` values) and per interval of the
//! step, by span start time.
//!
//! Two ways to the same numbers:
//! - **rollups**: a query whose filter is only service name, span name,
//!   span kind and `status = error` conditions, grouped by those fields,
//!   counting spans (`rate`, `count_over_time`) or taking duration
//!   quantiles, at a step of whole minutes, is answered from the
//!   per-minute RED rollups ([`skein_storage::rollup::RedBucket`], which
//!   count every span per service, operation, kind and root flag, with a
//!   DDSketch of durations). [`Storage::rollups`] gives the segments'
//!   rollups and one built on the spot for the spans still in memory, so
//!   each span counts once.
//! - **spans**: anything else reads the candidate traces the indexes pick
//!   for the query within the range (segments outside it are pruned),
//!   evaluates the whole TraceQL pipeline on each, and buckets the
//!   selected spans; the answer then carries exemplars.
//!
//! Intervals are `[t, t + step)` from `start` rounded down to the step
//! (and `end` rounded up), each sample stamped with its interval's start;
//! see docs/traceql.md for where this differs from Tempo.

use std::collections::{BTreeMap, HashMap};

use skein_storage::model::{AttrValue, Span, SpanId, TraceId};
use skein_storage::rollup::{LatencySketch, BUCKET_NS};
use skein_storage::{Reader, SpanPresence, Storage};

use super::traceql::ast::{
    AttrScope, BinOp, FieldExpr, Intrinsic, MetricsFn, SecondStage, SpansetExpr, Stage, Static,
};
use super::traceql::{FieldValue, MetricObservation, TraceQl};
use super::Work;
use crate::error::{Error, Result};
use crate::QueryConfig;

/// How much earlier (and later) than the range a structural query's other
/// spans may start: candidates are picked by any span the query needs,
/// which need not itself lie in the range (1 h, longer than any request).
const STRUCTURAL_SLACK_NS: u64 = 3_600_000_000_000;

/// Exemplars kept per series and interval, as Tempo's
/// `maxExemplarsPerBucket`.
const EXEMPLARS_PER_INTERVAL: usize = 2;

/// A TraceQL metrics query over a time range.
#[derive(Debug, Clone)]
pub struct MetricsQuery {
    /// The query; it has a metrics stage ([`TraceQl::is_metrics`]).
    pub query: TraceQl,
    /// Range start, Unix ns.
    pub start_ns: u64,
    /// Range end, Unix ns (exclusive).
    pub end_ns: u64,
    /// Interval width, ns (> 0). Ignored by an instant query.
    pub step_ns: u64,
    /// One value per series over the whole `[start_ns, end_ns)`
    /// (`/api/metrics/query`), without rounding the range to the step.
    pub instant: bool,
    /// Exemplars per series at most (0: none).
    pub exemplars: usize,
}

/// A span shown as an example of a series' value.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// The span's trace.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// The span's start, Unix ns.
    pub time_unix_nano: u64,
    /// The value the span contributed: the function's argument (durations
    /// in seconds), or its duration in seconds for `rate` and
    /// `count_over_time`.
    pub value: f64,
}

/// One series of a metrics answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// Its labels, as Tempo names them: the `by(...)` fields as written
    /// (nil values left out), `p` for a quantile, `__bucket` for a
    /// histogram bucket, `__name__` = the function for an ungrouped query.
    pub labels: Vec<(String, FieldValue)>,
    /// (interval start, Unix ns; value), in time order; intervals without a
    /// value are absent (a count is 0, not absent).
    pub samples: Vec<(u64, f64)>,
    /// Example spans (only when the answer was computed from spans).
    pub exemplars: Vec<Exemplar>,
}

/// The answer of a metrics query.
#[derive(Debug, Clone, Default)]
pub struct MetricsAnswer {
    /// Series, sorted by labels.
    pub series: Vec<MetricSeries>,
    /// Whether the rollups answered (no span was read).
    pub from_rollups: bool,
    /// Traces read and evaluated.
    pub inspected_traces: u64,
    /// Why the answer may be missing spans (quarantined segments).
    pub warnings: Vec<String>,
    /// What the query did.
    pub work: Work,
}

/// The intervals of a query: `n` of `step` from `start`.
#[derive(Debug, Clone, Copy)]
struct Grid {
    start: u64,
    step: u64,
    n: usize,
}

impl Grid {
    /// The grid of `q`, refused when it has more than `max_points` points.
    fn of(q: &MetricsQuery, max_points: usize) -> Result<Grid> {
        if q.end_ns <= q.start_ns {
            return Err(Error::bad("end must be after start"));
        }
        if q.instant {
            return Ok(Grid { start: q.start_ns, step: q.end_ns - q.start_ns, n: 1 });
        }
        if q.step_ns == 0 {
            return Err(Error::bad("step must be a positive duration"));
        }
        let start = q.start_ns - q.start_ns % q.step_ns;
        let n = (q.end_ns - start).div_ceil(q.step_ns);
        if n > max_points as u64 {
            return Err(Error::bad(format!(
                "the query asks for {n} points per series, more than {max_points} \
                 (query.max_points_per_series); raise step or narrow the range"
            )));
        }
        Ok(Grid { start, step: q.step_ns, n: n as usize })
    }

    fn end(&self) -> u64 {
        self.start.saturating_add(self.step.saturating_mul(self.n as u64))
    }

    fn interval(&self, t: u64) -> Option<usize> {
        (t >= self.start && t < self.end()).then(|| ((t - self.start) / self.step) as usize)
    }

    fn time(&self, i: usize) -> u64 {
        self.start + self.step * i as u64
    }
}

/// What is kept per series and interval.
#[derive(Debug, Clone, Default)]
struct Cell {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Durations, ns (`quantile_over_time(duration, ...)`).
    sketch: Option<LatencySketch>,
    /// Other values a quantile is taken of, exactly.
    values: Vec<f64>,
}

impl Cell {
    fn observe(&mut self, v: f64) {
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
    }
}

/// A series being accumulated: sparse cells by interval.
#[derive(Debug, Clone, Default)]
struct Acc {
    labels: Vec<(String, FieldValue)>,
    cells: BTreeMap<usize, Cell>,
    exemplars: Vec<(usize, Exemplar)>,
}

/// Series by a key of their labels.
#[derive(Debug, Default)]
struct Series {
    map: HashMap<String, Acc>,
    max: usize,
}

impl Series {
    fn get(&mut self, labels: Vec<(String, FieldValue)>) -> Result<&mut Acc> {
        let key = format!("{labels:?}");
        let n = self.map.len();
        if !self.map.contains_key(&key) && n >= self.max {
            return Err(too_many_series(self.max));
        }
        Ok(self.map.entry(key).or_insert_with(|| Acc { labels, ..Default::default() }))
    }
}

fn too_many_series(max: usize) -> Error {
    Error::bad(format!(
        "the query answers more than {max} series (query.max_series); group by fewer fields or add conditions"
    ))
}

/// Tempo's name of a `by(...)` field: an attribute as written, an
/// intrinsic without its scope (`name`, `status`, `rootServiceName`).
fn label_name(e: &FieldExpr) -> String {
    match e {
        FieldExpr::Intrinsic(Intrinsic::RootService) => "rootServiceName".into(),
        FieldExpr::Intrinsic(Intrinsic::TraceDuration) => "traceDuration".into(),
        FieldExpr::Intrinsic(i) => {
            let s = i.as_str();
            match s.split_once(':') {
                Some(("span" | "trace", n)) => n.to_string(),
                _ => s.to_string(),
            }
        }
        e => e.to_string(),
    }
}

/// A field's value as a number: durations in seconds, as Tempo's metrics
/// report them; `None` for anything not numeric.
fn number(v: &FieldValue) -> Option<f64> {
    match v {
        FieldValue::Int(i) => Some(*i as f64),
        FieldValue::Float(f) if f.is_finite() => Some(*f),
        FieldValue::Duration(d) => Some(*d as f64 / 1e9),
        _ => None,
    }
}

/// Tempo's `Log2Bucketize`: the power of two at or above `v` (`-1` below 2).
fn log2_bucket(v: u64) -> f64 {
    if v < 2 {
        return -1.0;
    }
    (1u128 << (64 - (v - 1).leading_zeros())) as f64
}

/// The labels of a series: `by` values with nils left out; all nil gives
/// the first field with nil (Tempo's `labelsFor`), and an ungrouped query
/// `__name__` = the function.
fn series_labels(by: &[FieldExpr], vals: &[Option<FieldValue>], func: &str) -> Vec<(String, FieldValue)> {
    if by.is_empty() {
        return vec![("__name__".into(), FieldValue::Str(func.into()))];
    }
    let mut out: Vec<(String, FieldValue)> =
        by.iter().zip(vals).filter_map(|(e, v)| v.clone().map(|v| (label_name(e), v))).collect();
    if out.is_empty() {
        out.push((label_name(&by[0]), FieldValue::Str("nil".into())));
    }
    out
}

fn func_name(f: &MetricsFn) -> &'static str {
    match f {
        MetricsFn::Rate => "rate",
        MetricsFn::CountOverTime => "count_over_time",
        MetricsFn::MinOverTime(_) => "min_over_time",
        MetricsFn::MaxOverTime(_) => "max_over_time",
        MetricsFn::AvgOverTime(_) => "avg_over_time",
        MetricsFn::SumOverTime(_) => "sum_over_time",
        MetricsFn::QuantileOverTime(..) => "quantile_over_time",
        MetricsFn::HistogramOverTime(_) => "histogram_over_time",
        MetricsFn::Compare(..) => "compare",
    }
}

/// Checks `q` before any work: a metrics stage, a grid within limits.
pub(super) fn validate(q: &MetricsQuery, cfg: &QueryConfig) -> Result<()> {
    let Some(m) = &q.query.root().metrics else {
        return Err(Error::bad(
            "not a metrics query: add a metrics function, e.g. `{ } | rate()`; \
             /tempo/api/search answers spanset queries",
        ));
    };
    if let MetricsFn::Compare(_, n, from, to) = m.func {
        if n <= 0 {
            return Err(Error::bad("compare() top number of values must be an integer greater than 0"));
        }
        if (from, to) != (0, 0) && (from <= 0 || to <= from) {
            return Err(Error::bad(
                "compare() start and end must be Unix nanoseconds with end after start (or both 0)",
            ));
        }
    }
    if let MetricsFn::QuantileOverTime(_, qs) = &m.func {
        if let Some(x) = qs.iter().find(|x| !(0.0..=1.0).contains(*x)) {
            return Err(Error::bad(format!("quantile {x} must be between 0 and 1")));
        }
    }
    if let Some(SecondStage::TopK(k) | SecondStage::BottomK(k)) = q.query.root().second {
        if k <= 0 {
            return Err(Error::bad(format!("topk/bottomk takes a positive count, not {k}")));
        }
    }
    Grid::of(q, cfg.max_points_per_series).map(|_| ())
}

/// Runs `q` (already [`validate`]d) through `r`.
pub(super) fn run(r: &Reader<'_>, cfg: &QueryConfig, q: &MetricsQuery) -> Result<MetricsAnswer> {
    let grid = Grid::of(q, cfg.max_points_per_series)?;
    let mut series = Series { map: HashMap::new(), max: cfg.max_series };
    let mut out = MetricsAnswer::default();
    match RollupPlan::of(q, &grid) {
        Some(plan) => {
            plan.run(r.storage(), &grid, &mut series)?;
            out.from_rollups = true;
        }
        None if matches!(q.query.root().metrics.as_ref().map(|m| &m.func), Some(MetricsFn::Compare(..))) => {
            let mut c = Compare::default();
            out.inspected_traces = scan(r, q, &grid, &mut |sp, o, i| {
                c.observe(q, sp, o, i);
                Ok(())
            })?;
            out.series = c.finish(q, &grid, cfg.max_series)?;
            out.warnings = r.storage().damage_in_range(Some(grid.start), Some(grid.end().saturating_sub(1)));
            return Ok(out);
        }
        None => {
            out.inspected_traces = scan(r, q, &grid, &mut |sp, o, i| observe(q, &mut series, sp, o, i))?;
        }
    }
    out.series = finish(q, &grid, series, cfg.max_series)?;
    out.warnings = r.storage().damage_in_range(Some(grid.start), Some(grid.end().saturating_sub(1)));
    Ok(out)
}

/// Reads the candidate traces and hands each span the query selects in
/// the grid to `observe` with its interval.
fn scan(
    r: &Reader<'_>,
    q: &MetricsQuery,
    grid: &Grid,
    observe: &mut dyn FnMut(&Span, MetricObservation, usize) -> Result<()>,
) -> Result<u64> {
    let tq = &q.query;
    let simple = matches!(tq.root().pipeline[..], [Stage::Spanset(SpansetExpr::Filter(_))]);
    let slack = if simple { 0 } else { STRUCTURAL_SLACK_NS };
    let (lo, hi) = (grid.start.saturating_sub(slack), grid.end().saturating_sub(1).saturating_add(slack));
    let mut cand = tq.candidate_filter();
    cand.start_ns = Some(lo);
    cand.end_ns = Some(hi);
    // Every trace of the range may match: as many candidates as traces
    // the range's segments and memory hold.
    let s = r.storage();
    let snap = s.snapshot();
    let held: u64 =
        snap.segments.iter().filter(|x| x.overlaps(Some(lo), Some(hi))).map(|x| x.meta.trace_count).sum();
    let limit = usize::try_from(held).unwrap_or(usize::MAX).saturating_add(s.head().trace_count()).max(1);
    drop(snap);
    let mut required: Vec<SpanPresence> = tq.required_filters().into_iter().map(SpanPresence::new).collect();
    let mut inspected = 0;
    for id in r.search_traces(&cand, limit)? {
        r.ctx().check()?;
        let mut possible = true;
        for p in &mut required {
            if !r.trace_has_span(&id, p)? {
                possible = false;
                break;
            }
        }
        if !possible {
            continue;
        }
        let Some(spans) = r.get_trace_spans(&id)? else { continue };
        inspected += 1;
        r.ctx().add_trace(spans.len());
        for o in tq.metric_observations(&spans) {
            let sp = &spans[o.span];
            if let Some(i) = grid.interval(sp.start_time_unix_nano) {
                observe(sp, o, i)?;
            }
        }
    }
    Ok(inspected)
}

/// Adds one selected span in interval `i` to its series.
fn observe(q: &MetricsQuery, series: &mut Series, sp: &Span, o: MetricObservation, i: usize) -> Result<()> {
    let m = q.query.root().metrics.as_ref().expect("validated");
    let name = func_name(&m.func);
    let dur_s = sp.duration_ns() as f64 / 1e9;
    let mut labels = series_labels(&m.by, &o.by, name);
    let mut ex_value = dur_s;
    let mut ex_labels = labels.clone();
    match &m.func {
        MetricsFn::Rate | MetricsFn::CountOverTime => {
            series.get(labels)?.cells.entry(i).or_default().count += 1;
        }
        MetricsFn::QuantileOverTime(FieldExpr::Intrinsic(Intrinsic::Duration), _) => {
            let cell = series.get(labels)?.cells.entry(i).or_default();
            cell.sketch.get_or_insert_with(LatencySketch::default).add(sp.duration_ns());
            cell.count += 1;
        }
        MetricsFn::HistogramOverTime(_) => {
            let Some(v) = o.value.as_ref() else { return Ok(()) };
            // Durations bucket by nanoseconds and are labelled in seconds,
            // as Tempo's `histogram_over_time(duration)`.
            let bucket = match v {
                FieldValue::Duration(d) => log2_bucket(u64::try_from(*d).unwrap_or(0)) / 1e9,
                v => match number(v) {
                    Some(x) if x >= 0.0 => log2_bucket(x as u64),
                    _ => return Ok(()),
                },
            };
            ex_value = number(v).unwrap_or(dur_s);
            labels.retain(|(k, _)| k != "__name__");
            labels.push(("__bucket".into(), FieldValue::Float(bucket)));
            ex_labels = labels.clone();
            series.get(labels)?.cells.entry(i).or_default().count += 1;
        }
        _ => {
            let Some(v) = o.value.as_ref().and_then(number) else { return Ok(()) };
            ex_value = v;
            let cell = series.get(labels)?.cells.entry(i).or_default();
            cell.observe(v);
            if matches!(m.func, MetricsFn::QuantileOverTime(..)) {
                cell.values.push(v);
            }
        }
    }
    if q.exemplars > 0 {
        let acc = series.get(ex_labels)?;
        let here = acc.exemplars.iter().filter(|(j, _)| *j == i).count();
        if acc.exemplars.len() < q.exemplars && here < EXEMPLARS_PER_INTERVAL {
            let e = Exemplar {
                trace_id: sp.trace_id,
                span_id: sp.span_id,
                time_unix_nano: sp.start_time_unix_nano,
                value: ex_value,
            };
            acc.exemplars.push((i, e));
        }
    }
    Ok(())
}

/// Turns accumulated cells into the answer's series.
fn finish(q: &MetricsQuery, grid: &Grid, series: Series, max: usize) -> Result<Vec<MetricSeries>> {
    let m = q.query.root().metrics.as_ref().expect("validated");
    let secs = grid.step as f64 / 1e9;
    let accs: Vec<Acc> = series.map.into_values().collect();
    let mut out = Vec::new();
    for a in accs {
        let exemplars: Vec<Exemplar> = a.exemplars.iter().map(|(_, e)| e.clone()).collect();
        let dense = |f: &dyn Fn(&Cell) -> f64| -> Vec<(u64, f64)> {
            (0..grid.n).map(|i| (grid.time(i), a.cells.get(&i).map_or(0.0, f))).collect()
        };
        let sparse = |f: &dyn Fn(&Cell) -> f64| -> Vec<(u64, f64)> {
            a.cells.iter().filter(|(_, c)| c.count > 0).map(|(i, c)| (grid.time(*i), f(c))).collect()
        };
        match &m.func {
            MetricsFn::Rate => out.push(MetricSeries {
                labels: a.labels,
                samples: dense(&|c| c.count as f64 / secs),
                exemplars,
            }),
            MetricsFn::CountOverTime => {
                out.push(MetricSeries { labels: a.labels, samples: dense(&|c| c.count as f64), exemplars })
            }
            MetricsFn::MinOverTime(_) => {
                out.push(MetricSeries { labels: a.labels, samples: sparse(&|c| c.min), exemplars })
            }
            MetricsFn::MaxOverTime(_) => {
                out.push(MetricSeries { labels: a.labels, samples: sparse(&|c| c.max), exemplars })
            }
            MetricsFn::SumOverTime(_) => {
                out.push(MetricSeries { labels: a.labels, samples: sparse(&|c| c.sum), exemplars })
            }
            MetricsFn::AvgOverTime(_) => out.push(MetricSeries {
                labels: a.labels,
                samples: sparse(&|c| c.sum / c.count as f64),
                exemplars,
            }),
            MetricsFn::QuantileOverTime(_, qs) => {
                let mut base = a.labels.clone();
                base.retain(|(k, _)| k != "__name__");
                // Each exemplar goes to the quantile closest to its value in
                // its interval, as Tempo assigns them.
                let closest = |(i, e): &(usize, Exemplar)| -> usize {
                    let Some(c) = a.cells.get(i) else { return 0 };
                    (0..qs.len())
                        .min_by(|x, y| {
                            let d = |k: usize| (quantile(c, qs[k]) - e.value).abs();
                            d(*x).total_cmp(&d(*y))
                        })
                        .unwrap_or(0)
                };
                let owner: Vec<usize> = a.exemplars.iter().map(closest).collect();
                for (k, &p) in qs.iter().enumerate() {
                    let mut labels = base.clone();
                    labels.push(("p".into(), FieldValue::Float(p)));
                    // Tempo answers 0 for an interval without spans.
                    let samples = dense(&|c| quantile(c, p));
                    let exemplars = a
                        .exemplars
                        .iter()
                        .zip(&owner)
                        .filter(|(_, o)| **o == k)
                        .map(|((_, e), _)| e.clone())
                        .collect();
                    out.push(MetricSeries { labels, samples, exemplars });
                }
            }
            MetricsFn::HistogramOverTime(_) => {
                out.push(MetricSeries { labels: a.labels, samples: dense(&|c| c.count as f64), exemplars })
            }
            MetricsFn::Compare(..) => unreachable!("answered by Compare"),
        }
    }
    if out.len() > max {
        return Err(too_many_series(max));
    }
    out.sort_by_cached_key(|s| format!("{:?}", s.labels));
    if let Some(second) = q.query.root().second {
        out = top_k(out, grid, second);
    }
    Ok(out)
}

/// The quantile `p` of a cell: from its sketch (within 1%), or exactly
/// (the sample of rank `floor(p * (n - 1))`, as the sketch's).
fn quantile(c: &Cell, p: f64) -> f64 {
    if let Some(s) = &c.sketch {
        return s.quantile(p).map_or(0.0, |ns| ns as f64 / 1e9);
    }
    if c.values.is_empty() {
        return 0.0;
    }
    let mut v = c.values.clone();
    let k = ((p * (v.len() - 1) as f64).floor() as usize).min(v.len() - 1);
    let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *x
}

/// `topk(k)` / `bottomk(k)`, as Tempo's `processTopK`: at each interval
/// the `k` series with the highest (lowest) values keep that sample;
/// series that never make it are dropped. Ties go to the series whose
/// labels sort first.
fn top_k(series: Vec<MetricSeries>, grid: &Grid, second: SecondStage) -> Vec<MetricSeries> {
    let (k, top) = match second {
        SecondStage::TopK(k) => (k, true),
        SecondStage::BottomK(k) => (k, false),
    };
    let k = usize::try_from(k).unwrap_or(0);
    let mut keep: Vec<Vec<(u64, f64)>> = vec![Vec::new(); series.len()];
    let mut index: Vec<HashMap<u64, f64>> =
        series.iter().map(|s| s.samples.iter().copied().collect()).collect();
    for i in 0..grid.n {
        let t = grid.time(i);
        let mut here: Vec<(usize, f64)> =
            index.iter().enumerate().filter_map(|(j, m)| m.get(&t).map(|v| (j, *v))).collect();
        here.sort_by(|a, b| {
            let o = if top { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) };
            o.then(a.0.cmp(&b.0))
        });
        for (j, v) in here.into_iter().take(k) {
            keep[j].push((t, v));
        }
    }
    index.clear();
    series
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| !k.is_empty())
        .map(|(mut s, k)| {
            s.samples = k;
            s
        })
        .collect()
}

/// Spans per interval.
type Cells = BTreeMap<usize, u64>;

/// Attribute -> value key -> (value, spans per interval).
type ValueCells = HashMap<String, HashMap<String, (FieldValue, Cells)>>;

/// `compare({filter}, n, start, end)`, as Tempo's `MetricsCompare`: the
/// spans the query selects split into the selection (those meeting the
/// filter, and starting within `[start, end)` unless both are 0) and the
/// baseline (the rest); for every attribute of those spans (span and
/// resource attributes, `name`, `status`, `kind`), the spans per value and
/// interval of the `n` values with the most spans
/// (`{__meta_type="baseline"|"selection", <attr>=<value>}`), and the spans
/// having the attribute at all (`{__meta_type="baseline_total"|
/// "selection_total", <attr>=nil}`).
#[derive(Debug, Default)]
struct Compare {
    /// [baseline, selection]: attribute -> value key -> (value, cells).
    values: [ValueCells; 2],
    /// [baseline, selection]: attribute -> cells.
    totals: [HashMap<String, Cells>; 2],
}

impl Compare {
    fn observe(&mut self, q: &MetricsQuery, sp: &Span, o: MetricObservation, i: usize) {
        let Some(MetricsFn::Compare(_, _, from, to)) = q.query.root().metrics.as_ref().map(|m| &m.func)
        else {
            return;
        };
        let t = sp.start_time_unix_nano;
        let in_window = (*from, *to) == (0, 0)
            || (u64::try_from(*from).is_ok_and(|f| t >= f) && u64::try_from(*to).is_ok_and(|e| t < e));
        let side = usize::from(in_window && o.value == Some(FieldValue::Bool(true)));
        let scalar = |v: &AttrValue| match v {
            AttrValue::Str(x) => Some(FieldValue::Str(x.clone())),
            AttrValue::Int(x) => Some(FieldValue::Int(*x)),
            AttrValue::Double(x) => Some(FieldValue::Float(*x)),
            AttrValue::Bool(x) => Some(FieldValue::Bool(*x)),
            _ => None,
        };
        let mut add = |attr: String, v: FieldValue| {
            let key = format!("{v:?}");
            let e = self.values[side].entry(attr.clone()).or_default();
            *e.entry(key).or_insert_with(|| (v, BTreeMap::new())).1.entry(i).or_default() += 1;
            *self.totals[side].entry(attr).or_default().entry(i).or_default() += 1;
        };
        for (k, v) in &sp.attributes {
            if let Some(v) = scalar(v) {
                add(format!("span.{k}"), v);
            }
        }
        add("resource.service.name".into(), FieldValue::Str(sp.service_name().to_string()));
        for (k, v) in sp.resource.attributes.iter().filter(|(k, _)| k != "service.name") {
            if let Some(v) = scalar(v) {
                add(format!("resource.{k}"), v);
            }
        }
        add("name".into(), FieldValue::Str(sp.name.clone()));
        add("status".into(), FieldValue::Status(sp.status_code));
        add("kind".into(), FieldValue::Kind(sp.kind));
    }

    fn finish(self, q: &MetricsQuery, grid: &Grid, max: usize) -> Result<Vec<MetricSeries>> {
        let Some(MetricsFn::Compare(_, n, ..)) = q.query.root().metrics.as_ref().map(|m| &m.func) else {
            return Ok(Vec::new());
        };
        let n = usize::try_from(*n).unwrap_or(1);
        let dense = |cells: &BTreeMap<usize, u64>| -> Vec<(u64, f64)> {
            (0..grid.n).map(|i| (grid.time(i), cells.get(&i).copied().unwrap_or(0) as f64)).collect()
        };
        let mut out = Vec::new();
        for (side, (values, totals)) in self.values.into_iter().zip(self.totals).enumerate() {
            let (kind, total) =
                if side == 1 { ("selection", "selection_total") } else { ("baseline", "baseline_total") };
            for (attr, vals) in values {
                let mut vals: Vec<(FieldValue, BTreeMap<usize, u64>, u64)> = vals
                    .into_values()
                    .map(|(v, cells)| {
                        let sum = cells.values().sum();
                        (v, cells, sum)
                    })
                    .collect();
                vals.sort_by(|a, b| {
                    b.2.cmp(&a.2).then_with(|| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
                });
                for (v, cells, _) in vals.into_iter().take(n) {
                    out.push(MetricSeries {
                        labels: vec![("__meta_type".into(), FieldValue::Str(kind.into())), (attr.clone(), v)],
                        samples: dense(&cells),
                        exemplars: Vec::new(),
                    });
                }
            }
            for (attr, cells) in totals {
                out.push(MetricSeries {
                    labels: vec![
                        ("__meta_type".into(), FieldValue::Str(total.into())),
                        (attr, FieldValue::Nil),
                    ],
                    samples: dense(&cells),
                    exemplars: Vec::new(),
                });
            }
        }
        if out.len() > max {
            return Err(too_many_series(max));
        }
        out.sort_by_cached_key(|s| format!("{:?}", s.labels));
        Ok(out)
    }
}

/// A field the rollups are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollupField {
    Service,
    Name,
    Kind,
}

/// A query the RED rollups answer exactly (see the module comment).
#[derive(Debug, Default)]
struct RollupPlan {
    service: Option<String>,
    name: Option<String>,
    kind: Option<u8>,
    errors_only: bool,
    by: Vec<(String, RollupField)>,
    quantiles: Option<Vec<f64>>,
    func: &'static str,
}

impl RollupPlan {
    fn of(q: &MetricsQuery, grid: &Grid) -> Option<RollupPlan> {
        let root = q.query.root();
        let m = root.metrics.as_ref()?;
        // Whole minutes, from a whole minute.
        if !grid.step.is_multiple_of(BUCKET_NS) || !grid.start.is_multiple_of(BUCKET_NS) {
            return None;
        }
        let mut plan = RollupPlan { func: func_name(&m.func), ..Default::default() };
        match &m.func {
            MetricsFn::Rate | MetricsFn::CountOverTime => {}
            MetricsFn::QuantileOverTime(FieldExpr::Intrinsic(Intrinsic::Duration), qs) => {
                plan.quantiles = Some(qs.clone())
            }
            _ => return None,
        }
        let [Stage::Spanset(SpansetExpr::Filter(f))] = &root.pipeline[..] else { return None };
        plan.conditions(f)?;
        // The sketches hold every span's duration, errors or not.
        if plan.errors_only && plan.quantiles.is_some() {
            return None;
        }
        for e in &m.by {
            plan.by.push((label_name(e), rollup_field(e)?));
        }
        Some(plan)
    }

    /// Takes the conjunction `f` apart; `None` for anything else.
    fn conditions(&mut self, f: &FieldExpr) -> Option<()> {
        match f {
            FieldExpr::Static(Static::Bool(true)) => Some(()),
            FieldExpr::Logic(first, rest) => {
                self.conditions(first)?;
                for (op, e) in rest {
                    if *op != BinOp::And {
                        return None;
                    }
                    self.conditions(e)?;
                }
                Some(())
            }
            FieldExpr::Binary(BinOp::Eq, l, r)
                if matches!(
                    (&**l, &**r),
                    (FieldExpr::Intrinsic(Intrinsic::Status), FieldExpr::Static(Static::Status(s)))
                    | (FieldExpr::Static(Static::Status(s)), FieldExpr::Intrinsic(Intrinsic::Status))
                    if *s == skein_storage::model::status::ERROR
                ) =>
            {
                self.errors_only = true;
                Some(())
            }
            FieldExpr::Binary(BinOp::Eq, l, r) => {
                let (field, value) = match (&**l, &**r) {
                    (FieldExpr::Static(v), e) | (e, FieldExpr::Static(v)) => (e, v),
                    _ => return None,
                };
                match (rollup_field(field)?, value) {
                    (RollupField::Service, Static::Str(s)) if self.service.is_none() => {
                        self.service = Some(s.clone())
                    }
                    (RollupField::Name, Static::Str(s)) if self.name.is_none() => self.name = Some(s.clone()),
                    (RollupField::Kind, Static::Kind(k)) if self.kind.is_none() => self.kind = Some(*k),
                    _ => return None,
                }
                Some(())
            }
            _ => None,
        }
    }

    fn run(&self, s: &Storage, grid: &Grid, series: &mut Series) -> Result<()> {
        let (lo, hi) = (grid.start / BUCKET_NS, grid.end() / BUCKET_NS);
        for r in s.rollups(Some(grid.start), Some(grid.end().saturating_sub(1))) {
            for b in &r.red {
                if b.minute < lo || b.minute >= hi {
                    continue;
                }
                if self.service.as_ref().is_some_and(|x| *x != b.service)
                    || self.name.as_ref().is_some_and(|x| *x != b.operation)
                    || self.kind.is_some_and(|k| k != b.kind)
                {
                    continue;
                }
                let count = if self.errors_only { b.errors } else { b.count };
                if count == 0 {
                    continue;
                }
                let Some(i) = grid.interval(b.minute * BUCKET_NS) else { continue };
                let labels = if self.by.is_empty() {
                    vec![("__name__".to_string(), FieldValue::Str(self.func.into()))]
                } else {
                    self.by
                        .iter()
                        .map(|(n, f)| {
                            let v = match f {
                                RollupField::Service => FieldValue::Str(b.service.clone()),
                                RollupField::Name => FieldValue::Str(b.operation.clone()),
                                RollupField::Kind => FieldValue::Kind(b.kind),
                            };
                            (n.clone(), v)
                        })
                        .collect()
                };
                let cell = series.get(labels)?.cells.entry(i).or_default();
                cell.count += count;
                if self.quantiles.is_some() {
                    b.add_latency_to(cell.sketch.get_or_insert_with(LatencySketch::default));
                }
            }
        }
        Ok(())
    }
}

/// The rollup key a field is, if any: `resource.service.name`, `name`,
/// `kind`.
fn rollup_field(e: &FieldExpr) -> Option<RollupField> {
    match e {
        FieldExpr::Attr(a) if a.scope == AttrScope::Resource && !a.parent && a.name == "service.name" => {
            Some(RollupField::Service)
        }
        FieldExpr::Intrinsic(Intrinsic::Name) => Some(RollupField::Name),
        FieldExpr::Intrinsic(Intrinsic::Kind) => Some(RollupField::Kind),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use skein_storage::model::AttrValue;

    use super::*;
    use crate::engine::testutil::{append, engine, span, storage, three_traces};
    use crate::engine::Engine;

    const S: u64 = 1_000_000_000;

    fn q(text: &str, start_ns: u64, end_ns: u64, step_ns: u64) -> MetricsQuery {
        MetricsQuery {
            query: TraceQl::parse_metrics(text).unwrap(),
            start_ns,
            end_ns,
            step_ns,
            instant: false,
            exemplars: 10,
        }
    }

    /// (labels as `k=v`, samples) of each series.
    fn flat(a: &MetricsAnswer) -> Vec<(String, Vec<(u64, f64)>)> {
        a.series
            .iter()
            .map(|s| {
                let l: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| match v {
                        FieldValue::Str(x) => format!("{k}={x}"),
                        v => format!("{k}={v:?}"),
                    })
                    .collect();
                (l.join(","), s.samples.clone())
            })
            .collect()
    }

    /// The rollups and the spans give the same counts, in memory and in
    /// segments, and only the spans give exemplars.
    #[tokio::test]
    async fn rollups_and_spans_agree_before_and_after_a_flush() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            // 1 m from the rollups; 30 s from the spans.
            let by_minute = e
                .metrics(q("{ } | count_over_time() by (resource.service.name)", 0, 120 * S, 60 * S))
                .await
                .unwrap();
            assert!(by_minute.from_rollups);
            assert_eq!(
                flat(&by_minute),
                [
                    ("resource.service.name=cart".into(), vec![(0, 2.0), (60 * S, 0.0)]),
                    ("resource.service.name=db".into(), vec![(0, 1.0), (60 * S, 0.0)]),
                    ("resource.service.name=frontend".into(), vec![(0, 2.0), (60 * S, 0.0)]),
                ],
                "flushed: {flushed}"
            );
            assert!(by_minute.series.iter().all(|x| x.exemplars.is_empty()));
            let by_half = e
                .metrics(q("{ } | count_over_time() by (resource.service.name)", 0, 60 * S, 30 * S))
                .await
                .unwrap();
            assert!(!by_half.from_rollups);
            assert_eq!(by_half.inspected_traces, 3);
            let totals: Vec<f64> = by_half.series.iter().map(|x| x.samples[0].1).collect();
            assert_eq!(totals, [2.0, 1.0, 2.0]);
            assert_eq!(by_half.series[0].exemplars.len(), 2);
            // rate() is per second of the step.
            let rate = e.metrics(q("{ status = error } | rate()", 0, 60 * S, 60 * S)).await.unwrap();
            assert!(rate.from_rollups);
            assert_eq!(flat(&rate), [("__name__=rate".into(), vec![(0, 1.0 / 60.0)])]);
        }
    }

    /// Aggregates over a field: durations in seconds, as Tempo reports
    /// them; a series per quantile and per histogram bucket.
    #[tokio::test]
    async fn aggregates_over_a_field() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        let one = |text: &'static str| {
            let e = e.clone();
            async move { flat(&e.metrics(q(text, 0, 60 * S, 60 * S)).await.unwrap()) }
        };
        let ms = |x: f64| x / 1000.0;
        assert_eq!(
            one("{ resource.service.name = \"frontend\" } | max_over_time(duration)").await,
            [("__name__=max_over_time".into(), vec![(0, ms(300.0))])]
        );
        assert_eq!(
            one("{ } | min_over_time(duration) by (kind)").await,
            [("kind=Kind(2)".into(), vec![(0, ms(1.0))]), ("kind=Kind(3)".into(), vec![(0, ms(20.0))])]
        );
        assert_eq!(
            one("{ resource.service.name = \"cart\" } | sum_over_time(span.http.status)").await,
            [("__name__=sum_over_time".into(), vec![(0, 700.0)])]
        );
        let avg = one("{ resource.service.name = \"cart\" } | avg_over_time(duration)").await;
        assert_eq!(avg[0].0, "__name__=avg_over_time");
        assert!((avg[0].1[0].1 - ms(75.0)).abs() < 1e-12, "{avg:?}");
        // From the rollups' sketches: within 1%.
        let p = e
            .metrics(q(
                "{ resource.service.name = \"frontend\" } | quantile_over_time(duration, 0, 1)",
                0,
                60 * S,
                60 * S,
            ))
            .await
            .unwrap();
        assert!(p.from_rollups);
        let v: Vec<f64> = p.series.iter().map(|x| x.samples[0].1).collect();
        assert!((v[0] - ms(1.0)).abs() < ms(0.01) && (v[1] - ms(300.0)).abs() < ms(3.0), "{v:?}");
        assert_eq!(p.series[0].labels, [("p".to_string(), FieldValue::Float(0.0))]);
        // An attribute's quantile is exact.
        assert_eq!(
            one("{ } | quantile_over_time(span.http.status, .5)").await,
            [("p=Float(0.5)".into(), vec![(0, 200.0)])]
        );
        // Buckets: powers of two of the duration, in seconds.
        let h = one("{ resource.service.name = \"cart\" } | histogram_over_time(duration)").await;
        let b = |ns: u64| format!("__bucket=Float({:?})", (ns as f64) / 1e9);
        assert_eq!(
            h,
            [(b(1 << 26), vec![(0, 1.0)]), (b(1 << 27), vec![(0, 1.0)])],
            "50 ms and 100 ms: 2^26 and 2^27 ns"
        );
    }

    /// `by` a missing attribute: nils are dropped, all nil gives the first
    /// field as "nil" (Tempo's `labelsFor`); topk/bottomk keep the top
    /// series per interval.
    #[tokio::test]
    async fn nil_groups_and_topk() {
        let (_d, s) = storage();
        let mut spans = three_traces();
        spans[0].attributes.push(("team".into(), AttrValue::Str("a".into())));
        append(&s, spans).await;
        let e = engine(&s);
        let a = e.metrics(q("{ } | count_over_time() by (span.team)", 0, 60 * S, 60 * S)).await.unwrap();
        assert_eq!(
            flat(&a),
            [("span.team=a".into(), vec![(0, 1.0)]), ("span.team=nil".into(), vec![(0, 4.0)])]
        );
        let top = e
            .metrics(q("{ } | count_over_time() by (resource.service.name) | topk(2)", 0, 60 * S, 60 * S))
            .await
            .unwrap();
        let names: Vec<String> = flat(&top).into_iter().map(|x| x.0).collect();
        assert_eq!(names, ["resource.service.name=cart", "resource.service.name=frontend"]);
        let bottom = e
            .metrics(q("{ } | count_over_time() by (resource.service.name) | bottomk(1)", 0, 60 * S, 60 * S))
            .await
            .unwrap();
        assert_eq!(flat(&bottom), [("resource.service.name=db".into(), vec![(0, 1.0)])]);
    }

    /// An instant query is one value over exactly `[start, end)`, rounded
    /// to no step; structural queries count the spans they select.
    #[tokio::test]
    async fn instant_and_structural() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        let mut i = q("{ } | count_over_time()", S + 5, 3 * S + 5, 0);
        i.instant = true;
        let a = e.metrics(i).await.unwrap();
        assert!(!a.from_rollups, "not whole minutes");
        // Spans at 1 s + 10 ns, 2 s and 3 s; not the one at 1 s.
        assert_eq!(flat(&a), [("__name__=count_over_time".into(), vec![(S + 5, 3.0)])]);
        let a = e
            .metrics(q(
                r#"{ resource.service.name = "cart" } > { } | count_over_time() by (name)"#,
                0,
                60 * S,
                60 * S,
            ))
            .await
            .unwrap();
        assert_eq!(flat(&a), [("name=SELECT".into(), vec![(0, 1.0)])]);
    }

    /// Limits: points per series and series, each a 400 naming the
    /// setting; a query without a metrics stage and `compare()` with n = 0 are 400s.
    #[tokio::test]
    async fn limits_and_refusals() {
        let (_d, s) = storage();
        let mut spans = Vec::new();
        for i in 0..5u8 {
            spans.push(span(i + 1, 1, None, &format!("svc{i}"), "op", u64::from(i) * S, 1000, false));
        }
        append(&s, spans).await;
        let cfg = QueryConfig { max_series: 3, max_points_per_series: 10, ..Default::default() };
        let e = Engine::new(s.clone(), cfg);
        let err = |r: Result<MetricsAnswer>| match r {
            Err(Error::BadRequest(m)) => m,
            r => panic!("{r:?}"),
        };
        let m = err(e.metrics(q("{ } | rate()", 0, 11 * S, S)).await);
        assert!(m.contains("query.max_points_per_series"), "{m}");
        assert!(e.metrics(q("{ } | rate()", 0, 10 * S, S)).await.is_ok());
        for (text, step) in [
            ("{ } | rate() by (resource.service.name)", 60 * S),
            ("{ } | rate() by (.x, resource.service.name)", S),
        ] {
            let m = err(e.metrics(q(text, 0, 10 * S, step)).await);
            assert!(m.contains("query.max_series"), "{m}");
        }
        let m = err(e.metrics(q("{ }", 0, 10 * S, S)).await);
        assert!(m.contains("not a metrics query"), "{m}");
        let m = err(e.metrics(q("{ } | compare({ status = error }, 0)", 0, 10 * S, S)).await);
        assert!(m.contains("compare() top number"), "{m}");
        let m = err(e.metrics(q("{ } | rate()", 10 * S, 10 * S, S)).await);
        assert!(m.contains("end must be after start"), "{m}");
        let m = err(e.metrics(q("{ } | rate()", 0, 10 * S, 0)).await);
        assert!(m.contains("step"), "{m}");
    }

    /// `compare()`: the selection (error spans) against the baseline, per
    /// attribute value (top n by spans) and in total per attribute.
    #[tokio::test]
    async fn compare_splits_selection_and_baseline() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        let a = e.metrics(q("{ } | compare({ status = error }, 1)", 0, 60 * S, 60 * S)).await.unwrap();
        let got: Vec<(String, f64)> = flat(&a)
            .into_iter()
            .filter(|(l, _)| l.contains("resource.service.name") || l.contains("span.http.status"))
            .map(|(l, v)| (l, v[0].1))
            .collect();
        assert_eq!(
            got,
            [
                ("__meta_type=baseline,resource.service.name=frontend".to_string(), 2.0),
                ("__meta_type=baseline,span.http.status=Int(200)".to_string(), 4.0),
                ("__meta_type=baseline_total,resource.service.name=Nil".to_string(), 4.0),
                ("__meta_type=baseline_total,span.http.status=Nil".to_string(), 4.0),
                ("__meta_type=selection,resource.service.name=cart".to_string(), 1.0),
                ("__meta_type=selection,span.http.status=Int(500)".to_string(), 1.0),
                ("__meta_type=selection_total,resource.service.name=Nil".to_string(), 1.0),
                ("__meta_type=selection_total,span.http.status=Nil".to_string(), 1.0),
            ]
        );
    }

    #[test]
    fn tempo_log2_buckets() {
        assert_eq!(log2_bucket(0), -1.0);
        assert_eq!(log2_bucket(2), 2.0);
        assert_eq!(log2_bucket(3), 4.0);
        assert_eq!(log2_bucket(1024), 1024.0);
        assert_eq!(log2_bucket(1025), 2048.0);
    }
}
