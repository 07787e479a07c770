//! TraceQL, Grafana Tempo's trace query language, as Tempo documents it
//! (grafana/tempo `docs/sources/tempo/traceql/`, grammar
//! `pkg/traceql/expr.y`), evaluated one trace at a time. `docs/traceql.md`
//! lists every construct and where Skein differs from Tempo.
//!
//! - `lexer`: tokens;
//! - [`ast`]: the tree, printable back to TraceQL;
//! - `parser`: precedence and type checks, as Tempo's grammar;
//! - `eval`: spanset pipelines on one trace;
//! - `plan`: the conditions that pick candidate traces from the indexes.
//!
//! Entry points: [`TraceQl::parse`] (search queries; a metrics query is
//! refused), [`TraceQl::parse_metrics`] (the metrics API; the AST is
//! [`TraceQl::root`]), [`TraceQl::matching_spans`] and
//! [`TraceQl::spansets`] (evaluation), [`TraceQl::candidate_filter`] and
//! [`TraceQl::required_filters`] (planning).

pub mod ast;
mod eval;
mod lexer;
mod parser;
mod plan;
#[cfg(test)]
mod tests;

use skein_storage::filter::SpanFilter;
use skein_storage::model::{AttrValue, Span};

use self::ast::{FieldExpr, Root, SpansetExpr, Stage};
use self::eval::{Ctx, Needs, SpanSet};

/// A parsed TraceQL query.
#[derive(Debug, Clone)]
pub struct TraceQl {
    root: Root,
    needs: Needs,
    /// The fields of every `select(...)` stage.
    select: Vec<FieldExpr>,
}

/// Why a TraceQL query was refused (answered as 400 by every API).
#[derive(Debug, thiserror::Error)]
pub enum TraceQlError {
    /// The query does not parse or does not type-check.
    #[error("TraceQL: {msg} at line {line}, column {col}")]
    Parse {
        /// What was expected or found.
        msg: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        col: usize,
    },
}

/// A parse error at a byte offset (turned into line and column once).
#[derive(Debug)]
pub(crate) struct PErr {
    pos: usize,
    msg: String,
}

impl PErr {
    fn new(pos: usize, msg: impl Into<String>) -> PErr {
        PErr { pos, msg: msg.into() }
    }

    fn at(self, q: &str) -> TraceQlError {
        let pos = self.pos.min(q.len());
        let pos = (0..=pos).rev().find(|&p| q.is_char_boundary(p)).unwrap_or(0);
        let before = &q[..pos];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        TraceQlError::Parse { msg: self.msg, line, col }
    }
}

/// A value of a span field or of a spanset label, as the APIs return it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A duration, nanoseconds.
    Duration(i64),
    /// A status code (`skein_storage::model::status`).
    Status(u8),
    /// A span kind (`skein_storage::model::kind`).
    Kind(u8),
    /// An array attribute.
    Array(Vec<AttrValue>),
    /// No value: a metrics series label naming a field without a value
    /// (`compare()`'s totals, Tempo's nil).
    Nil,
}

/// One spanset a query returned for a trace (Tempo returns several per
/// trace after `by(...)`).
#[derive(Debug, Clone, Default)]
pub struct MatchedSpanset {
    /// Indices into the trace's span slice, in trace order.
    pub spans: Vec<usize>,
    /// Labels the pipeline gave the spanset: `by(...)` values and
    /// aggregates (`count()`), keyed as Tempo keys them.
    pub attributes: Vec<(String, FieldValue)>,
    /// Per span of `spans`, the `select(...)` fields it has (key: the
    /// attribute's name, or the intrinsic's without its scope).
    pub span_attributes: Vec<Vec<(String, FieldValue)>>,
}

/// A spanset as a search hit carries it: the first spans, the count.
#[derive(Debug, Clone, Default)]
pub struct HitSpanset {
    /// The first matched spans, at most the search's `keep_matched`.
    pub spans: Vec<Span>,
    /// Per span of `spans`, its `select(...)` fields.
    pub span_attributes: Vec<Vec<(String, FieldValue)>>,
    /// How many spans the spanset holds.
    pub matched: usize,
    /// The spanset's labels ([`MatchedSpanset::attributes`]).
    pub attributes: Vec<(String, FieldValue)>,
}

/// One span a metrics query observes ([`TraceQl::metric_observations`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricObservation {
    /// Index of the span in the trace's span slice.
    pub span: usize,
    /// The span's value of each `by(...)` field, in order (`None`: nil).
    pub by: Vec<Option<FieldValue>>,
    /// The function's argument on the span (`duration` of
    /// `quantile_over_time(duration, .9)`; for `compare`, its filter);
    /// `None` for `rate()` and `count_over_time()` or when nil.
    pub value: Option<FieldValue>,
}

impl MatchedSpanset {
    /// The hit form over the trace's `spans`, keeping the first `keep`.
    pub fn to_hit(&self, spans: &[Span], keep: usize) -> HitSpanset {
        HitSpanset {
            spans: self.spans.iter().take(keep).map(|&i| spans[i].clone()).collect(),
            span_attributes: self.span_attributes.iter().take(keep).cloned().collect(),
            matched: self.spans.len(),
            attributes: self.attributes.clone(),
        }
    }
}

fn walk_field(e: &FieldExpr, needs: &mut Needs) {
    use self::ast::Intrinsic as I;
    match e {
        FieldExpr::Attr(a) => needs.tree |= a.parent,
        FieldExpr::Intrinsic(I::ChildCount) => needs.tree = true,
        FieldExpr::Intrinsic(I::NestedSetLeft | I::NestedSetRight | I::NestedSetParent) => {
            needs.nested = true
        }
        FieldExpr::Static(_) | FieldExpr::Intrinsic(_) => {}
        FieldExpr::Not(e) | FieldExpr::Neg(e) | FieldExpr::Exists(e, _) => walk_field(e, needs),
        FieldExpr::Regex { lhs, .. } => walk_field(lhs, needs),
        FieldExpr::Binary(_, l, r) => {
            walk_field(l, needs);
            walk_field(r, needs);
        }
        FieldExpr::Logic(first, rest) => {
            walk_field(first, needs);
            rest.iter().for_each(|(_, e)| walk_field(e, needs));
        }
    }
}

fn walk_scalar(e: &ast::ScalarExpr, needs: &mut Needs) {
    match e {
        ast::ScalarExpr::Aggregate(_, Some(f)) => walk_field(f, needs),
        ast::ScalarExpr::Binary(_, l, r) => {
            walk_scalar(l, needs);
            walk_scalar(r, needs);
        }
        _ => {}
    }
}

fn walk_pipeline(stages: &[Stage], needs: &mut Needs, select: &mut Vec<FieldExpr>) {
    for s in stages {
        match s {
            Stage::Spanset(e) => walk_spanset(e, needs, select),
            Stage::ScalarFilter(l, _, r) => {
                walk_scalar(l, needs);
                walk_scalar(r, needs);
            }
            Stage::By(e) => walk_field(e, needs),
            Stage::Coalesce => {}
            Stage::Select(v) => {
                v.iter().for_each(|e| walk_field(e, needs));
                select.extend(v.iter().cloned());
            }
        }
    }
}

fn walk_spanset(e: &SpansetExpr, needs: &mut Needs, select: &mut Vec<FieldExpr>) {
    match e {
        SpansetExpr::Filter(f) => walk_field(f, needs),
        SpansetExpr::Pipeline(stages) => walk_pipeline(stages, needs, select),
        SpansetExpr::Chain(first, rest) => {
            walk_spanset(first, needs, select);
            for (op, s) in rest {
                needs.tree |= op.is_structural();
                walk_spanset(s, needs, select);
            }
        }
    }
}

/// The key a selected field is returned under.
fn select_key(e: &FieldExpr) -> String {
    match e {
        FieldExpr::Attr(a) => a.name.clone(),
        FieldExpr::Intrinsic(i) => {
            let s = i.as_str();
            s.split_once(':').map_or(s, |(_, n)| n).to_string()
        }
        e => e.to_string(),
    }
}

impl TraceQl {
    /// Parses a search query. Errors name the line and column of the
    /// problem; a metrics query (`{} | rate()`) is refused here, as it is
    /// answered by the metrics API ([`TraceQl::parse_metrics`]).
    pub fn parse(q: &str) -> Result<TraceQl, TraceQlError> {
        let tq = Self::parse_any(q)?;
        if tq.is_metrics() {
            let pos = q.find('|').map_or(0, |p| p + 1);
            let pos = pos + q[pos..].len() - q[pos..].trim_start().len();
            return Err(PErr::new(
                pos,
                "TraceQL metrics functions (rate(), count_over_time(), ...) are answered by \
                 /tempo/api/metrics/query_range, not by search",
            )
            .at(q));
        }
        Ok(tq)
    }

    /// Parses any query, metrics queries included (their AST is
    /// [`TraceQl::root`]'s `metrics` and `second`).
    pub fn parse_metrics(q: &str) -> Result<TraceQl, TraceQlError> {
        Self::parse_any(q)
    }

    fn parse_any(q: &str) -> Result<TraceQl, TraceQlError> {
        let toks = lexer::tokens(q).map_err(|e| e.at(q))?;
        let root = parser::Parser::new(toks).root().map_err(|e| e.at(q))?;
        let mut needs = Needs::default();
        let mut select = Vec::new();
        walk_pipeline(&root.pipeline, &mut needs, &mut select);
        if let Some(m) = &root.metrics {
            m.by.iter().for_each(|e| walk_field(e, &mut needs));
            match &m.func {
                ast::MetricsFn::MinOverTime(e)
                | ast::MetricsFn::MaxOverTime(e)
                | ast::MetricsFn::AvgOverTime(e)
                | ast::MetricsFn::SumOverTime(e)
                | ast::MetricsFn::QuantileOverTime(e, _)
                | ast::MetricsFn::HistogramOverTime(e)
                | ast::MetricsFn::Compare(e, ..) => walk_field(e, &mut needs),
                ast::MetricsFn::Rate | ast::MetricsFn::CountOverTime => {}
            }
        }
        Ok(TraceQl { root, needs, select })
    }

    /// The syntax tree.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Whether this is a metrics query (`... | rate()`).
    pub fn is_metrics(&self) -> bool {
        self.root.metrics.is_some()
    }

    /// The spansets the query returns for one whole trace (`spans`), in
    /// pipeline order; empty when the trace does not match.
    pub fn spansets(&self, spans: &[Span]) -> Vec<MatchedSpanset> {
        if spans.is_empty() {
            return Vec::new();
        }
        let cx = Ctx::new(spans, self.needs);
        let all = SpanSet { spans: (0..spans.len()).collect(), attrs: Vec::new() };
        eval::eval_pipeline(&self.root.pipeline, vec![all], &cx)
            .into_iter()
            .filter(|s| !s.spans.is_empty())
            .map(|s| {
                let span_attributes = if self.select.is_empty() {
                    Vec::new()
                } else {
                    s.spans
                        .iter()
                        .map(|&i| {
                            self.select
                                .iter()
                                .filter_map(|e| eval::field_value(e, i, &cx).map(|v| (select_key(e), v)))
                                .collect()
                        })
                        .collect()
                };
                MatchedSpanset { spans: s.spans, attributes: s.attrs, span_attributes }
            })
            .collect()
    }

    /// The spans of `spans` (one whole trace) the query selects, in their
    /// order in `spans` (the union of its spansets); empty = the trace
    /// does not match.
    pub fn matching_spans<'a>(&self, spans: &'a [Span]) -> Vec<&'a Span> {
        let mut m = vec![false; spans.len()];
        for s in self.spansets(spans) {
            for i in s.spans {
                m[i] = true;
            }
        }
        spans.iter().zip(m).filter(|(_, b)| *b).map(|(s, _)| s).collect()
    }

    /// What a metrics query observes in one whole trace (`spans`): per
    /// span the spanset pipeline selects, in trace order, the values of the
    /// metrics stage's `by(...)` fields and of its function's argument
    /// (`None` where the span has no such field; Tempo's nil). Empty for a
    /// query without a metrics stage.
    pub fn metric_observations(&self, spans: &[Span]) -> Vec<MetricObservation> {
        let Some(m) = &self.root.metrics else { return Vec::new() };
        if spans.is_empty() {
            return Vec::new();
        }
        let cx = Ctx::new(spans, self.needs);
        let all = SpanSet { spans: (0..spans.len()).collect(), attrs: Vec::new() };
        let mut picked = vec![false; spans.len()];
        for s in eval::eval_pipeline(&self.root.pipeline, vec![all], &cx) {
            s.spans.iter().for_each(|&i| picked[i] = true);
        }
        let arg = match &m.func {
            ast::MetricsFn::MinOverTime(e)
            | ast::MetricsFn::MaxOverTime(e)
            | ast::MetricsFn::AvgOverTime(e)
            | ast::MetricsFn::SumOverTime(e)
            | ast::MetricsFn::QuantileOverTime(e, _)
            | ast::MetricsFn::HistogramOverTime(e)
            | ast::MetricsFn::Compare(e, ..) => Some(e),
            ast::MetricsFn::Rate | ast::MetricsFn::CountOverTime => None,
        };
        (0..spans.len())
            .filter(|&i| picked[i])
            .map(|i| MetricObservation {
                span: i,
                by: m.by.iter().map(|e| eval::field_value(e, i, &cx)).collect(),
                value: arg.and_then(|e| eval::field_value(e, i, &cx)),
            })
            .collect()
    }

    /// Conditions every matching trace meets on at least one span, to pick
    /// candidate traces from an index: a superset of the matches, never a
    /// subset. `SpanFilter::default()` when nothing can be pruned.
    pub fn candidate_filter(&self) -> SpanFilter {
        self.required_filters().into_iter().max_by_key(plan::score).unwrap_or_default()
    }

    /// Filters each of which every matching trace meets on at least one of
    /// its spans (one per spanset a match needs, e.g. both sides of
    /// `{A} >> {B}`): a trace without a span meeting one of them cannot
    /// match, so it need not be read. Empty when nothing prunes.
    pub fn required_filters(&self) -> Vec<SpanFilter> {
        plan::required(&self.root)
    }
}
