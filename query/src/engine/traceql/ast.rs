//! The syntax tree of a TraceQL query, shaped as Tempo's grammar
//! (`pkg/traceql/expr.y`): a root is a spanset pipeline, optionally
//! followed by a metrics stage (parsed only; answered by the metrics API)
//! and `with (...)` hints. `Display` prints each node back as TraceQL
//! that parses to the same tree (fully parenthesised).

use std::fmt;

use regex::Regex;

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrScope {
    /// `.x`: the span's attributes, then its resource's.
    Unscoped,
    /// `span.x`
    Span,
    /// `resource.x`
    Resource,
    /// `event.x`: any of the span's events.
    Event,
    /// `link.x`: any of the span's links.
    Link,
    /// `instrumentation.x`: the instrumentation scope's attributes.
    Instrumentation,
}

/// An attribute reference: scope, whether it is read on the parent span
/// (`parent.x`), and the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// The scope.
    pub scope: AttrScope,
    /// `parent.`: read on the span's parent.
    pub parent: bool,
    /// The attribute's key.
    pub name: String,
}

impl Attribute {
    pub(super) fn new(scope: AttrScope, parent: bool, name: String) -> Attribute {
        Attribute { scope, parent, name }
    }
}

/// Whether `name` prints unquoted and lexes back as one name.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| {
            !c.is_whitespace()
                && !matches!(
                    c,
                    '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"' | '`'
                )
        })
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent {
            f.write_str("parent.")?;
        }
        f.write_str(match self.scope {
            AttrScope::Unscoped if self.parent => "",
            AttrScope::Unscoped => ".",
            AttrScope::Span => "span.",
            AttrScope::Resource => "resource.",
            AttrScope::Event => "event.",
            AttrScope::Link => "link.",
            AttrScope::Instrumentation => "instrumentation.",
        })?;
        if plain_name(&self.name) {
            f.write_str(&self.name)
        } else {
            write!(f, "\"{}\"", self.name.replace('\\', "\\\\").replace('"', "\\\""))
        }
    }
}

/// Tempo's intrinsics that Skein's span model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    /// `duration`, `span:duration`
    Duration,
    /// `name`, `span:name`
    Name,
    /// `status`, `span:status`
    Status,
    /// `statusMessage`, `span:statusMessage`
    StatusMessage,
    /// `kind`, `span:kind`
    Kind,
    /// `span:childCount`, `childCount`
    ChildCount,
    /// `span:id`
    SpanId,
    /// `span:parentID`
    ParentId,
    /// `trace:id`
    TraceId,
    /// `trace:rootName`, `rootName`
    RootName,
    /// `trace:rootService`, `rootServiceName`
    RootService,
    /// `trace:duration`, `traceDuration`
    TraceDuration,
    /// `nestedSetLeft`
    NestedSetLeft,
    /// `nestedSetRight`
    NestedSetRight,
    /// `nestedSetParent`
    NestedSetParent,
    /// `event:name`
    EventName,
    /// `event:timeSinceStart`
    EventTimeSinceStart,
    /// `link:traceID`
    LinkTraceId,
    /// `link:spanID`
    LinkSpanId,
    /// `instrumentation:name`
    InstrumentationName,
    /// `instrumentation:version`
    InstrumentationVersion,
}

impl Intrinsic {
    /// The canonical (scoped, where Tempo has one) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Intrinsic::Duration => "span:duration",
            Intrinsic::Name => "span:name",
            Intrinsic::Status => "span:status",
            Intrinsic::StatusMessage => "span:statusMessage",
            Intrinsic::Kind => "span:kind",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::RootName => "trace:rootName",
            Intrinsic::RootService => "trace:rootService",
            Intrinsic::TraceDuration => "trace:duration",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
        }
    }

    /// Unscoped spellings (`name`, `rootServiceName`, ...).
    pub(super) fn from_word(w: &str) -> Option<Intrinsic> {
        Some(match w {
            "duration" => Intrinsic::Duration,
            "name" => Intrinsic::Name,
            "status" => Intrinsic::Status,
            "statusMessage" => Intrinsic::StatusMessage,
            "kind" => Intrinsic::Kind,
            "childCount" => Intrinsic::ChildCount,
            "rootName" => Intrinsic::RootName,
            "rootServiceName" => Intrinsic::RootService,
            "traceDuration" => Intrinsic::TraceDuration,
            "nestedSetLeft" => Intrinsic::NestedSetLeft,
            "nestedSetRight" => Intrinsic::NestedSetRight,
            "nestedSetParent" => Intrinsic::NestedSetParent,
            _ => return None,
        })
    }

    /// Scoped spellings (`span:name`, `trace:id`, ...), as Tempo's grammar
    /// lists them (plus `trace:rootServiceName`, an alias some clients send).
    pub(super) fn from_scoped(scope: &str, name: &str) -> Option<Intrinsic> {
        Some(match (scope, name) {
            ("span", "duration") => Intrinsic::Duration,
            ("span", "name") => Intrinsic::Name,
            ("span", "status") => Intrinsic::Status,
            ("span", "statusMessage") => Intrinsic::StatusMessage,
            ("span", "kind") => Intrinsic::Kind,
            ("span", "childCount") => Intrinsic::ChildCount,
            ("span", "id") => Intrinsic::SpanId,
            ("span", "parentID") => Intrinsic::ParentId,
            ("trace", "id") => Intrinsic::TraceId,
            ("trace", "rootName") => Intrinsic::RootName,
            ("trace", "rootService" | "rootServiceName") => Intrinsic::RootService,
            ("trace", "duration") => Intrinsic::TraceDuration,
            ("event", "name") => Intrinsic::EventName,
            ("event", "timeSinceStart") => Intrinsic::EventTimeSinceStart,
            ("link", "traceID") => Intrinsic::LinkTraceId,
            ("link", "spanID") => Intrinsic::LinkSpanId,
            ("instrumentation", "name") => Intrinsic::InstrumentationName,
            ("instrumentation", "version") => Intrinsic::InstrumentationVersion,
            _ => return None,
        })
    }

    /// The static type of the intrinsic's value.
    pub(super) fn ty(self) -> Ty {
        match self {
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => Ty::Dur,
            Intrinsic::Status => Ty::Status,
            Intrinsic::Kind => Ty::Kind,
            Intrinsic::ChildCount
            | Intrinsic::NestedSetLeft
            | Intrinsic::NestedSetRight
            | Intrinsic::NestedSetParent => Ty::Int,
            _ => Ty::Str,
        }
    }

    /// Whether the value is a hex ID (compared as lowercase hex without
    /// leading zeroes, as Tempo normalises trace IDs).
    pub(super) fn is_id(self) -> bool {
        matches!(
            self,
            Intrinsic::SpanId
                | Intrinsic::ParentId
                | Intrinsic::TraceId
                | Intrinsic::LinkTraceId
                | Intrinsic::LinkSpanId
        )
    }
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    /// `nil`
    Nil,
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// `true` / `false`
    Bool(bool),
    /// A duration, nanoseconds (may be negative: `-5s`).
    Dur(i64),
    /// `error`, `ok`, `unset` (OTLP numbering, `skein_storage::model::status`).
    Status(u8),
    /// `server`, `client`, ... (OTLP numbering, `skein_storage::model::kind`).
    Kind(u8),
}

impl fmt::Display for Static {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use skein_storage::model::{kind, status};
        match self {
            Static::Nil => f.write_str("nil"),
            Static::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        '\r' => f.write_str("\\r")?,
                        // A lone backslash that the lexer keeps as is
                        // (a regex escape) prints back the same way.
                        '\\' => f.write_str("\\\\")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Static::Int(i64::MIN) => f.write_str("minInt"),
            Static::Int(i) => write!(f, "{i}"),
            Static::Float(x) => {
                if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
                    write!(f, "{x:.1}")
                } else {
                    write!(f, "{x}")
                }
            }
            Static::Bool(b) => write!(f, "{b}"),
            Static::Dur(d) => write!(f, "{d}ns"),
            Static::Status(s) => f.write_str(match *s {
                status::ERROR => "error",
                status::OK => "ok",
                _ => "unset",
            }),
            Static::Kind(k) => f.write_str(match *k {
                kind::INTERNAL => "internal",
                kind::SERVER => "server",
                kind::CLIENT => "client",
                kind::PRODUCER => "producer",
                kind::CONSUMER => "consumer",
                _ => "unspecified",
            }),
        }
    }
}

/// Binary operators of field expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `&&`
    And,
    /// `||`
    Or,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::And => "&&",
            BinOp::Or => "||",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
        }
    }

    pub(super) fn is_ordering(self) -> bool {
        matches!(self, BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
    }

    pub(super) fn is_arith(self) -> bool {
        matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Pow)
    }

    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub(super) fn flip(self) -> BinOp {
        match self {
            BinOp::Lt => BinOp::Gt,
            BinOp::Le => BinOp::Ge,
            BinOp::Gt => BinOp::Lt,
            BinOp::Ge => BinOp::Le,
            o => o,
        }
    }
}

/// A compiled regular expression and the pattern as written.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern as written in the query.
    pub text: String,
    /// `^(?:text)$`: Tempo anchors every pattern at both ends.
    pub(super) re: Regex,
}

/// An expression evaluated on one span (inside `{ }`, and the argument of
/// aggregates, `by` and `select`).
#[derive(Debug, Clone)]
pub enum FieldExpr {
    /// A literal.
    Static(Static),
    /// An attribute.
    Attr(Attribute),
    /// An intrinsic.
    Intrinsic(Intrinsic),
    /// `!e`
    Not(Box<FieldExpr>),
    /// `-e`
    Neg(Box<FieldExpr>),
    /// `l op r` for comparison and arithmetic operators.
    Binary(BinOp, Box<FieldExpr>, Box<FieldExpr>),
    /// `a && b || c ...`: `&&` and `||` have equal precedence and group
    /// left to right (Tempo's grammar), so this is `((a && b) || c)`,
    /// kept flat so that long chains need no deep recursion.
    Logic(Box<FieldExpr>, Vec<(BinOp, FieldExpr)>),
    /// `e =~ "re"` (`negated`: `!~`).
    Regex {
        /// The text matched.
        lhs: Box<FieldExpr>,
        /// `!~`
        negated: bool,
        /// The pattern.
        pattern: Pattern,
    },
    /// `e != nil` (`exists`) or `e = nil`.
    Exists(Box<FieldExpr>, bool),
}

impl fmt::Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldExpr::Static(s) => write!(f, "{s}"),
            FieldExpr::Attr(a) => write!(f, "{a}"),
            FieldExpr::Intrinsic(i) => f.write_str(i.as_str()),
            FieldExpr::Not(e) => write!(f, "!({e})"),
            FieldExpr::Neg(e) => write!(f, "-({e})"),
            FieldExpr::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            FieldExpr::Logic(first, rest) => {
                write!(f, "({first}")?;
                for (op, e) in rest {
                    write!(f, " {} {e}", op.symbol())?;
                }
                f.write_str(")")
            }
            FieldExpr::Regex { lhs, negated, pattern } => {
                write!(
                    f,
                    "({lhs} {} {})",
                    if *negated { "!~" } else { "=~" },
                    Static::Str(pattern.text.clone())
                )
            }
            FieldExpr::Exists(e, true) => write!(f, "({e} != nil)"),
            FieldExpr::Exists(e, false) => write!(f, "({e} = nil)"),
        }
    }
}

/// The static type of a field expression, for the checks Tempo makes when
/// it parses (`{ name = 1 }` is an error, not a query that matches
/// nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    /// An attribute: known per span only.
    Attr,
    Int,
    Float,
    Dur,
    Str,
    Bool,
    Nil,
    Status,
    Kind,
}

impl Ty {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Ty::Attr => "an attribute",
            Ty::Int | Ty::Float => "a number",
            Ty::Dur => "a duration",
            Ty::Str => "a string",
            Ty::Bool => "a boolean",
            Ty::Nil => "nil",
            Ty::Status => "a status",
            Ty::Kind => "a kind",
        }
    }

    /// Tempo's numeric family: ints, floats and durations compare and
    /// combine with each other.
    pub(super) fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Dur | Ty::Attr)
    }

    /// Tempo's `isMatchingOperand`.
    pub(super) fn matches(self, o: Ty) -> bool {
        self == Ty::Attr || o == Ty::Attr || self == o || (self.numeric() && o.numeric())
    }
}

/// Structural and logical operators between spansets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    /// `&&`: both sides match; their spans.
    And,
    /// `||`: either side matches; their spans.
    Union,
    /// `>`
    Child,
    /// `<`
    Parent,
    /// `>>`
    Descendant,
    /// `<<`
    Ancestor,
    /// `~`
    Sibling,
    /// `!>`
    NotChild,
    /// `!<`
    NotParent,
    /// `!>>`
    NotDescendant,
    /// `!<<`
    NotAncestor,
    /// `!~`
    NotSibling,
    /// `&>`
    UnionChild,
    /// `&<`
    UnionParent,
    /// `&>>`
    UnionDescendant,
    /// `&<<`
    UnionAncestor,
    /// `&~`
    UnionSibling,
}

impl SpansetOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Union => "||",
            SpansetOp::Child => ">",
            SpansetOp::Parent => "<",
            SpansetOp::Descendant => ">>",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        }
    }

    /// Whether the operator relates spans through the trace's tree.
    pub(super) fn is_structural(self) -> bool {
        !matches!(self, SpansetOp::And | SpansetOp::Union)
    }
}

/// An expression over spansets.
#[derive(Debug, Clone)]
pub enum SpansetExpr {
    /// `{ e }`
    Filter(FieldExpr),
    /// `first op1 s1 op2 s2 ...`, grouped left to right: operators of one
    /// precedence level (`&&` and `||`; or the structural ones), kept flat
    /// so that long chains need no deep recursion.
    Chain(Box<SpansetExpr>, Vec<(SpansetOp, SpansetExpr)>),
    /// `( a | b ... )`: a pipeline used as an operand.
    Pipeline(Vec<Stage>),
}

impl fmt::Display for SpansetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(e) => write!(f, "{{ {e} }}"),
            SpansetExpr::Chain(first, rest) => {
                write!(f, "({first}")?;
                for (op, e) in rest {
                    write!(f, " {} {e}", op.symbol())?;
                }
                f.write_str(")")
            }
            SpansetExpr::Pipeline(stages) => write!(f, "({})", Pipeline(stages)),
        }
    }
}

/// Aggregates of the spans of a spanset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    /// `count()`
    Count,
    /// `avg(e)`
    Avg,
    /// `min(e)`
    Min,
    /// `max(e)`
    Max,
    /// `sum(e)`
    Sum,
}

impl AggOp {
    fn name(self) -> &'static str {
        match self {
            AggOp::Count => "count",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Sum => "sum",
        }
    }
}

/// A scalar computed per spanset: aggregates, literals and arithmetic.
#[derive(Debug, Clone)]
pub enum ScalarExpr {
    /// A numeric literal.
    Static(Static),
    /// `count()`, `avg(e)`, ...
    Aggregate(AggOp, Option<FieldExpr>),
    /// `l op r` with an arithmetic operator.
    Binary(BinOp, Box<ScalarExpr>, Box<ScalarExpr>),
}

impl fmt::Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Static(s) => write!(f, "{s}"),
            ScalarExpr::Aggregate(op, None) => write!(f, "{}()", op.name()),
            ScalarExpr::Aggregate(op, Some(e)) => write!(f, "{}({e})", op.name()),
            ScalarExpr::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
        }
    }
}

/// One stage of a spanset pipeline.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Keeps the spans the expression selects in each spanset.
    Spanset(SpansetExpr),
    /// `count() > 2`: keeps the spansets for which the comparison holds.
    ScalarFilter(ScalarExpr, BinOp, ScalarExpr),
    /// `by(e)`: splits each spanset by the value of `e`.
    By(FieldExpr),
    /// `coalesce()`: merges the spansets back into one.
    Coalesce,
    /// `select(a, b)`: adds these fields to the returned spans.
    Select(Vec<FieldExpr>),
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Spanset(s) => write!(f, "{s}"),
            Stage::ScalarFilter(l, op, r) => write!(f, "{l} {} {r}", op.symbol()),
            Stage::By(e) => write!(f, "by({e})"),
            Stage::Coalesce => f.write_str("coalesce()"),
            Stage::Select(v) => {
                f.write_str("select(")?;
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Prints stages joined by ` | `.
pub(super) struct Pipeline<'a>(pub(super) &'a [Stage]);

impl fmt::Display for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// A `with (name = value)` hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// The hint's name, e.g. `most_recent`.
    pub name: String,
    /// Its value.
    pub value: Static,
}

/// A TraceQL metrics function (the first metrics stage), parsed for the
/// metrics API (`/tempo/api/metrics/...`); trace search refuses it.
#[derive(Debug, Clone)]
pub enum MetricsFn {
    /// `rate()`
    Rate,
    /// `count_over_time()`
    CountOverTime,
    /// `min_over_time(a)`
    MinOverTime(FieldExpr),
    /// `max_over_time(a)`
    MaxOverTime(FieldExpr),
    /// `avg_over_time(a)`
    AvgOverTime(FieldExpr),
    /// `sum_over_time(a)`
    SumOverTime(FieldExpr),
    /// `quantile_over_time(a, q...)`
    QuantileOverTime(FieldExpr, Vec<f64>),
    /// `histogram_over_time(a)`
    HistogramOverTime(FieldExpr),
    /// `compare({filter}, topN, start, end)`: Tempo's defaults 10, 0, 0.
    Compare(FieldExpr, i64, i64, i64),
}

/// The metrics stage: a function and its `by (...)` fields.
#[derive(Debug, Clone)]
pub struct MetricsStage {
    /// The function.
    pub func: MetricsFn,
    /// `by (a, b)`
    pub by: Vec<FieldExpr>,
}

impl fmt::Display for MetricsStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.func {
            MetricsFn::Rate => f.write_str("rate()")?,
            MetricsFn::CountOverTime => f.write_str("count_over_time()")?,
            MetricsFn::MinOverTime(e) => write!(f, "min_over_time({e})")?,
            MetricsFn::MaxOverTime(e) => write!(f, "max_over_time({e})")?,
            MetricsFn::AvgOverTime(e) => write!(f, "avg_over_time({e})")?,
            MetricsFn::SumOverTime(e) => write!(f, "sum_over_time({e})")?,
            MetricsFn::QuantileOverTime(e, qs) => {
                write!(f, "quantile_over_time({e}")?;
                for q in qs {
                    write!(f, ", {}", Static::Float(*q))?;
                }
                f.write_str(")")?
            }
            MetricsFn::HistogramOverTime(e) => write!(f, "histogram_over_time({e})")?,
            MetricsFn::Compare(e, n, s, t) => write!(f, "compare({{ {e} }}, {n}, {s}, {t})")?,
        }
        if !self.by.is_empty() {
            f.write_str(" by (")?;
            for (i, e) in self.by.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The metrics second stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondStage {
    /// `topk(n)`
    TopK(i64),
    /// `bottomk(n)`
    BottomK(i64),
}

/// A whole query.
#[derive(Debug, Clone)]
pub struct Root {
    /// The spanset pipeline.
    pub pipeline: Vec<Stage>,
    /// `| rate() by (...)`: a metrics query.
    pub metrics: Option<MetricsStage>,
    /// `| topk(n)` after the metrics stage.
    pub second: Option<SecondStage>,
    /// `with (...)`
    pub hints: Vec<Hint>,
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Pipeline(&self.pipeline))?;
        if let Some(m) = &self.metrics {
            write!(f, " | {m}")?;
        }
        match self.second {
            Some(SecondStage::TopK(n)) => write!(f, " | topk({n})")?,
            Some(SecondStage::BottomK(n)) => write!(f, " | bottomk({n})")?,
            None => {}
        }
        if !self.hints.is_empty() {
            f.write_str(" with (")?;
            for (i, h) in self.hints.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{} = {}", h.name, h.value)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_print_quoted_when_they_must() {
        let a = |scope, parent, name: &str| Attribute::new(scope, parent, name.to_string()).to_string();
        assert_eq!(a(AttrScope::Span, false, "http.route"), "span.http.route");
        assert_eq!(a(AttrScope::Unscoped, false, "a-b/c"), ".a-b/c");
        assert_eq!(a(AttrScope::Resource, true, "x"), "parent.resource.x");
        assert_eq!(a(AttrScope::Unscoped, true, "x"), "parent.x");
        assert_eq!(a(AttrScope::Event, false, "a b"), "event.\"a b\"");
        assert_eq!(a(AttrScope::Link, false, "q\"\\"), "link.\"q\\\"\\\\\"");
        assert_eq!(a(AttrScope::Span, false, "1x"), "span.\"1x\"");
    }

    #[test]
    fn statics_print_as_literals() {
        assert_eq!(Static::Str("a\"b\\c\n".into()).to_string(), r#""a\"b\\c\n""#);
        assert_eq!(Static::Float(2.0).to_string(), "2.0");
        assert_eq!(Static::Int(i64::MIN).to_string(), "minInt");
        assert_eq!(Static::Dur(-5).to_string(), "-5ns");
        assert_eq!(Static::Status(skein_storage::model::status::ERROR).to_string(), "error");
        assert_eq!(Static::Kind(skein_storage::model::kind::CONSUMER).to_string(), "consumer");
    }
}
