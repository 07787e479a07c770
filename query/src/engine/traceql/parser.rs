//! Recursive descent over the tokens, one function per precedence level of
//! Tempo's grammar (`pkg/traceql/expr.y`, lowest first):
//!
//! | level | operators | grouping |
//! | --- | --- | --- |
//! | pipeline | `\|` | stages in order |
//! | logical | `&&` `\|\|` (fields and spansets alike) | equal precedence, left to right |
//! | comparison / structural | `= != < <= > >= =~ !~`; `> < >> << ~ !> !< !>> !<< !~ &> &< &>> &<< &~` | left to right |
//! | additive | `+ -` | left to right |
//! | unary | `!`, unary `-` (their operand takes `* / % ^` only) | |
//! | multiplicative | `* / %` | left to right |
//! | power | `^` | right to left |
//!
//! So `{A} || {B} && {C}` is `({A} || {B}) && {C}`, `{ !.a = b }` is
//! `{ (!.a) = b }` (a type error unless `.a` is boolean), and `-2 ^ 2` is
//! `-(2 ^ 2)`. Types are checked as the tree is built, as Tempo checks them
//! when it parses.

use regex::RegexBuilder;

use skein_storage::model::{kind, status};

use super::ast::*;
use super::lexer::{Tok, Token};
use super::PErr;

/// The deepest nesting (parentheses, braces, unary operators, operator
/// chains of one level) a query may have: bounds the parser's and the
/// evaluator's recursion.
const MAX_DEPTH: usize = 100;

/// The most compiled program size one regex may take (the `regex` crate's
/// `size_limit`): queries come from any client.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const METRICS_FNS: &[&str] = &[
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
];

const AGGREGATES: &[&str] = &["count", "avg", "min", "max", "sum"];

pub(super) struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

type R<T> = Result<T, PErr>;

impl Parser {
    pub(super) fn new(toks: Vec<Token>) -> Parser {
        Parser { toks, i: 0, depth: 0 }
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i].pos
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &Tok) -> R<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(self.unexpected(&t.describe()))
        }
    }

    fn unexpected(&self, what: &str) -> PErr {
        PErr::new(self.pos(), format!("expected {what}, found {}", self.peek().describe()))
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(PErr::new(
                self.pos(),
                format!("query nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    /// Runs `f` one level deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.enter()?;
        let r = f(self);
        self.depth -= 1;
        r
    }

    // -----------------------------------------------------------------
    // Root and pipelines

    pub(super) fn root(&mut self) -> R<Root> {
        let pipeline = self.pipeline()?;
        let mut metrics = None;
        let mut second = None;
        if *self.peek() == Tok::Pipe {
            self.bump();
            metrics = Some(self.metrics_stage()?);
            if *self.peek() == Tok::Pipe {
                self.bump();
                second = Some(self.second_stage()?);
            }
        }
        let mut hints = Vec::new();
        if self.is_word("with") {
            self.bump();
            self.expect(&Tok::LParen)?;
            loop {
                let t = self.bump();
                let Tok::Word(name) = t.tok else {
                    return Err(PErr::new(
                        t.pos,
                        format!("expected a hint name, found {}", t.tok.describe()),
                    ));
                };
                self.expect(&Tok::Eq)?;
                let value = self.static_value()?;
                hints.push(Hint { name, value });
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(&Tok::RParen)?;
        }
        if *self.peek() != Tok::Eof {
            return Err(PErr::new(
                self.pos(),
                format!("unexpected {} after the query", self.peek().describe()),
            ));
        }
        Ok(Root { pipeline, metrics, second, hints })
    }

    /// Stages joined by `|`, up to a metrics function.
    fn pipeline(&mut self) -> R<Vec<Stage>> {
        let mut v = vec![self.stage()?];
        while *self.peek() == Tok::Pipe
            && !matches!(self.peek_at(1), Tok::Word(w) if METRICS_FNS.contains(&w.as_str()))
        {
            self.bump();
            v.push(self.stage()?);
        }
        Ok(v)
    }

    fn stage(&mut self) -> R<Stage> {
        let word = match self.peek() {
            Tok::Word(w) => Some(w.clone()),
            _ => None,
        };
        match word.as_deref() {
            Some("by") => {
                self.bump();
                self.expect(&Tok::LParen)?;
                let e = self.field()?;
                self.expect(&Tok::RParen)?;
                return Ok(Stage::By(e));
            }
            Some("coalesce") => {
                self.bump();
                self.expect(&Tok::LParen)?;
                self.expect(&Tok::RParen)?;
                return Ok(Stage::Coalesce);
            }
            Some("select") => {
                self.bump();
                self.expect(&Tok::LParen)?;
                let v = self.attribute_list()?;
                self.expect(&Tok::RParen)?;
                return Ok(Stage::Select(v));
            }
            Some(w) if METRICS_FNS.contains(&w) => {
                return Err(PErr::new(
                    self.pos(),
                    format!("a metrics function (`{w}`) must follow a spanset and `|`"),
                ))
            }
            _ => {}
        }
        if self.starts_scalar() {
            let lhs = self.scalar()?;
            let pos = self.pos();
            let op = match self.peek() {
                Tok::Eq => BinOp::Eq,
                Tok::Ne => BinOp::Ne,
                Tok::Lt => BinOp::Lt,
                Tok::Le => BinOp::Le,
                Tok::Gt => BinOp::Gt,
                Tok::Ge => BinOp::Ge,
                _ => return Err(self.unexpected("a comparison after the aggregate (`count() > 2`)")),
            };
            self.bump();
            let rhs = self.scalar()?;
            if !has_aggregate(&lhs) && !has_aggregate(&rhs) {
                return Err(PErr::new(pos, "a scalar filter compares an aggregate (`count()`, `avg(...)`)"));
            }
            return Ok(Stage::ScalarFilter(lhs, op, rhs));
        }
        Ok(Stage::Spanset(self.ss_logic()?))
    }

    /// Whether a scalar filter starts here: an aggregate or a number,
    /// possibly behind parentheses.
    fn starts_scalar(&self) -> bool {
        let mut n = 0;
        while *self.peek_at(n) == Tok::LParen {
            n += 1;
        }
        match self.peek_at(n) {
            Tok::Word(w) => AGGREGATES.contains(&w.as_str()) && *self.peek_at(n + 1) == Tok::LParen,
            Tok::Int(_) | Tok::Float(_) | Tok::Dur(_) | Tok::Sub => true,
            _ => false,
        }
    }

    // -----------------------------------------------------------------
    // Spanset expressions

    fn ss_logic(&mut self) -> R<SpansetExpr> {
        let first = self.ss_struct()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::And => SpansetOp::And,
                Tok::Or => SpansetOp::Union,
                _ => break,
            };
            self.bump();
            rest.push((op, self.ss_struct()?));
        }
        Ok(if rest.is_empty() { first } else { SpansetExpr::Chain(Box::new(first), rest) })
    }

    fn ss_struct(&mut self) -> R<SpansetExpr> {
        let first = self.ss_primary()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Gt => SpansetOp::Child,
                Tok::Lt => SpansetOp::Parent,
                Tok::Desc => SpansetOp::Descendant,
                Tok::Ance => SpansetOp::Ancestor,
                Tok::Sibl => SpansetOp::Sibling,
                Tok::NotChild => SpansetOp::NotChild,
                Tok::NotParent => SpansetOp::NotParent,
                Tok::NotDesc => SpansetOp::NotDescendant,
                Tok::NotAnce => SpansetOp::NotAncestor,
                Tok::NRe => SpansetOp::NotSibling,
                Tok::UChild => SpansetOp::UnionChild,
                Tok::UParent => SpansetOp::UnionParent,
                Tok::UDesc => SpansetOp::UnionDescendant,
                Tok::UAnce => SpansetOp::UnionAncestor,
                Tok::USibl => SpansetOp::UnionSibling,
                t @ (Tok::Ge | Tok::Le | Tok::Eq | Tok::Ne | Tok::Re) => {
                    return Err(PErr::new(
                        self.pos(),
                        format!("unexpected {} between spansets", t.describe()),
                    ))
                }
                _ => break,
            };
            self.bump();
            rest.push((op, self.ss_primary()?));
        }
        Ok(if rest.is_empty() { first } else { SpansetExpr::Chain(Box::new(first), rest) })
    }

    fn ss_primary(&mut self) -> R<SpansetExpr> {
        match self.peek() {
            Tok::LBrace => self.nested(|p| {
                p.bump();
                if p.eat(&Tok::RBrace) {
                    return Ok(SpansetExpr::Filter(FieldExpr::Static(Static::Bool(true))));
                }
                let pos = p.pos();
                let e = p.field()?;
                let ty = ty(&e);
                if !matches!(ty, Ty::Bool | Ty::Attr) {
                    return Err(PErr::new(
                        pos,
                        format!("a spanset filter must be a condition, not {}", ty.describe()),
                    ));
                }
                p.expect(&Tok::RBrace)?;
                Ok(SpansetExpr::Filter(e))
            }),
            Tok::LParen => self.nested(|p| {
                p.bump();
                let mut stages = p.pipeline()?;
                p.expect(&Tok::RParen)?;
                Ok(match (stages.len(), stages.first()) {
                    (1, Some(Stage::Spanset(_))) => match stages.pop() {
                        Some(Stage::Spanset(s)) => s,
                        _ => unreachable!("checked"),
                    },
                    _ => SpansetExpr::Pipeline(stages),
                })
            }),
            _ => Err(self.unexpected("`{` or `(`")),
        }
    }

    // -----------------------------------------------------------------
    // Scalar expressions (pipeline filters)

    fn scalar(&mut self) -> R<ScalarExpr> {
        self.nested(|p| {
            let mut l = p.scalar_mul()?;
            while let Some(op) = match p.peek() {
                Tok::Add => Some(BinOp::Add),
                Tok::Sub => Some(BinOp::Sub),
                _ => None,
            } {
                p.bump();
                p.enter()?;
                l = ScalarExpr::Binary(op, Box::new(l), Box::new(p.scalar_mul()?));
            }
            Ok(l)
        })
    }

    fn scalar_mul(&mut self) -> R<ScalarExpr> {
        let mut l = self.scalar_pow()?;
        while let Some(op) = match self.peek() {
            Tok::Mul => Some(BinOp::Mul),
            Tok::Div => Some(BinOp::Div),
            Tok::Mod => Some(BinOp::Mod),
            _ => None,
        } {
            self.bump();
            self.enter()?;
            l = ScalarExpr::Binary(op, Box::new(l), Box::new(self.scalar_pow()?));
        }
        Ok(l)
    }

    fn scalar_pow(&mut self) -> R<ScalarExpr> {
        let l = self.scalar_primary()?;
        if self.eat(&Tok::Pow) {
            let r = self.nested(|p| p.scalar_pow())?;
            return Ok(ScalarExpr::Binary(BinOp::Pow, Box::new(l), Box::new(r)));
        }
        Ok(l)
    }

    fn scalar_primary(&mut self) -> R<ScalarExpr> {
        let t = self.bump();
        Ok(match t.tok {
            Tok::LParen => {
                let e = self.scalar()?;
                self.expect(&Tok::RParen)?;
                e
            }
            Tok::Int(i) => ScalarExpr::Static(Static::Int(i)),
            Tok::Float(f) => ScalarExpr::Static(Static::Float(f)),
            Tok::Dur(d) => ScalarExpr::Static(Static::Dur(d)),
            Tok::Sub => match self.bump().tok {
                Tok::Int(i) => ScalarExpr::Static(Static::Int(-i)),
                Tok::Float(f) => ScalarExpr::Static(Static::Float(-f)),
                Tok::Dur(d) => ScalarExpr::Static(Static::Dur(-d)),
                _ => return Err(PErr::new(t.pos, "`-` must precede a number or a duration")),
            },
            Tok::Word(w) if AGGREGATES.contains(&w.as_str()) => {
                self.expect(&Tok::LParen)?;
                let op = match w.as_str() {
                    "count" => {
                        self.expect(&Tok::RParen)?;
                        return Ok(ScalarExpr::Aggregate(AggOp::Count, None));
                    }
                    "avg" => AggOp::Avg,
                    "min" => AggOp::Min,
                    "max" => AggOp::Max,
                    _ => AggOp::Sum,
                };
                let pos = self.pos();
                let e = self.field()?;
                if !ty(&e).numeric() {
                    return Err(PErr::new(
                        pos,
                        format!("`{w}` needs a number or a duration, not {}", ty(&e).describe()),
                    ));
                }
                self.expect(&Tok::RParen)?;
                ScalarExpr::Aggregate(op, Some(e))
            }
            tok => {
                return Err(PErr::new(
                    t.pos,
                    format!(
                        "expected an aggregate (`count()`, `avg(duration)`) or a number, found {}",
                        tok.describe()
                    ),
                ))
            }
        })
    }

    // -----------------------------------------------------------------
    // Field expressions

    /// A field expression (the `&&`/`||` level).
    pub(super) fn field(&mut self) -> R<FieldExpr> {
        self.nested(|p| {
            let pos = p.pos();
            let first = p.cmp()?;
            let mut rest = Vec::new();
            loop {
                let op = match p.peek() {
                    Tok::And => BinOp::And,
                    Tok::Or => BinOp::Or,
                    _ => break,
                };
                let opos = p.pos();
                p.bump();
                let rpos = p.pos();
                let e = p.cmp()?;
                if rest.is_empty() {
                    check_cond(&first, pos, op)?;
                }
                check_cond(&e, rpos, op)?;
                let _ = opos;
                rest.push((op, e));
            }
            Ok(if rest.is_empty() { first } else { FieldExpr::Logic(Box::new(first), rest) })
        })
    }

    fn cmp(&mut self) -> R<FieldExpr> {
        let saved = self.depth;
        let lpos = self.pos();
        let mut l = self.add()?;
        loop {
            let op_pos = self.pos();
            let (op, re) = match self.peek() {
                Tok::Eq => (BinOp::Eq, None),
                Tok::Ne => (BinOp::Ne, None),
                Tok::Lt => (BinOp::Lt, None),
                Tok::Le => (BinOp::Le, None),
                Tok::Gt => (BinOp::Gt, None),
                Tok::Ge => (BinOp::Ge, None),
                Tok::Re => (BinOp::Eq, Some(false)),
                Tok::NRe => (BinOp::Eq, Some(true)),
                _ => break,
            };
            self.bump();
            self.enter()?;
            let rpos = self.pos();
            let r = self.add()?;
            l = match re {
                Some(negated) => regex_match(l, negated, r, lpos, rpos)?,
                None => comparison(op, l, r, op_pos, rpos)?,
            };
        }
        self.depth = saved;
        Ok(l)
    }

    fn add(&mut self) -> R<FieldExpr> {
        let saved = self.depth;
        let mut l = self.unary()?;
        while let Some(op) = match self.peek() {
            Tok::Add => Some(BinOp::Add),
            Tok::Sub => Some(BinOp::Sub),
            _ => None,
        } {
            let pos = self.pos();
            self.bump();
            self.enter()?;
            let r = self.unary()?;
            l = arithmetic(op, l, r, pos)?;
        }
        self.depth = saved;
        Ok(l)
    }

    fn unary(&mut self) -> R<FieldExpr> {
        match self.peek() {
            Tok::Not => self.nested(|p| {
                p.bump();
                let pos = p.pos();
                let e = p.unary()?;
                check_cond(&e, pos, BinOp::And).map_err(|_| {
                    PErr::new(pos, format!("`!` needs a condition, not {} (`!` binds tighter than comparisons: write `!(a = b)`)", ty(&e).describe()))
                })?;
                Ok(match e {
                    FieldExpr::Static(Static::Bool(b)) => FieldExpr::Static(Static::Bool(!b)),
                    e => FieldExpr::Not(Box::new(e)),
                })
            }),
            Tok::Sub => self.nested(|p| {
                p.bump();
                let pos = p.pos();
                let e = p.unary()?;
                if !ty(&e).numeric() {
                    return Err(PErr::new(pos, format!("unary `-` needs a number, not {}", ty(&e).describe())));
                }
                Ok(match e {
                    FieldExpr::Static(Static::Int(i)) => FieldExpr::Static(Static::Int(i.wrapping_neg())),
                    FieldExpr::Static(Static::Float(f)) => FieldExpr::Static(Static::Float(-f)),
                    FieldExpr::Static(Static::Dur(d)) => FieldExpr::Static(Static::Dur(d.wrapping_neg())),
                    e => FieldExpr::Neg(Box::new(e)),
                })
            }),
            _ => self.mul(),
        }
    }

    fn mul(&mut self) -> R<FieldExpr> {
        let saved = self.depth;
        let mut l = self.pow()?;
        while let Some(op) = match self.peek() {
            Tok::Mul => Some(BinOp::Mul),
            Tok::Div => Some(BinOp::Div),
            Tok::Mod => Some(BinOp::Mod),
            _ => None,
        } {
            let pos = self.pos();
            self.bump();
            self.enter()?;
            let r = self.pow()?;
            l = arithmetic(op, l, r, pos)?;
        }
        self.depth = saved;
        Ok(l)
    }

    fn pow(&mut self) -> R<FieldExpr> {
        let l = self.primary()?;
        if *self.peek() == Tok::Pow {
            let pos = self.pos();
            self.bump();
            let r =
                self.nested(|p| if matches!(p.peek(), Tok::Sub | Tok::Not) { p.unary() } else { p.pow() })?;
            return arithmetic(BinOp::Pow, l, r, pos);
        }
        Ok(l)
    }

    fn primary(&mut self) -> R<FieldExpr> {
        if *self.peek() == Tok::LParen {
            return self.nested(|p| {
                p.bump();
                let e = p.field()?;
                p.expect(&Tok::RParen)?;
                Ok(e)
            });
        }
        let t = self.bump();
        let pos = t.pos;
        Ok(match t.tok {
            Tok::Str(s) => FieldExpr::Static(Static::Str(s)),
            Tok::Int(i) => FieldExpr::Static(Static::Int(i)),
            Tok::Float(f) => FieldExpr::Static(Static::Float(f)),
            Tok::Dur(d) => FieldExpr::Static(Static::Dur(d)),
            Tok::Attr(a) => FieldExpr::Attr(a),
            Tok::Scoped(scope, name) => match Intrinsic::from_scoped(&scope, &name) {
                Some(i) => FieldExpr::Intrinsic(i),
                None => {
                    return Err(PErr::new(pos, format!("unknown intrinsic `{scope}:{name}`")));
                }
            },
            Tok::Word(w) => {
                if let Some(s) = word_static(&w) {
                    FieldExpr::Static(s)
                } else if let Some(i) = Intrinsic::from_word(&w) {
                    FieldExpr::Intrinsic(i)
                } else if w == "parent" {
                    return Err(PErr::new(
                        pos,
                        "not supported: the `parent` intrinsic (use `span:parentID` or `parent.` attributes)",
                    ));
                } else {
                    return Err(PErr::new(
                        pos,
                        format!(
                            "unknown intrinsic `{w}` (an attribute needs a scope: `.{w}`, `span.{w}` or `resource.{w}`)"
                        ),
                    ));
                }
            }
            tok => {
                return Err(PErr::new(
                    pos,
                    format!("expected a value, an attribute or an intrinsic, found {}", tok.describe()),
                ))
            }
        })
    }

    /// A literal (hint values): strings, numbers, durations, booleans,
    /// statuses and kinds, with an optional sign.
    fn static_value(&mut self) -> R<Static> {
        let t = self.bump();
        Ok(match t.tok {
            Tok::Str(s) => Static::Str(s),
            Tok::Int(i) => Static::Int(i),
            Tok::Float(f) => Static::Float(f),
            Tok::Dur(d) => Static::Dur(d),
            Tok::Sub => match self.bump().tok {
                Tok::Int(i) => Static::Int(-i),
                Tok::Float(f) => Static::Float(-f),
                Tok::Dur(d) => Static::Dur(-d),
                _ => return Err(PErr::new(t.pos, "`-` must precede a number")),
            },
            Tok::Word(w) => match word_static(&w) {
                Some(s) => s,
                None => return Err(PErr::new(t.pos, format!("expected a value, found `{w}`"))),
            },
            tok => return Err(PErr::new(t.pos, format!("expected a value, found {}", tok.describe()))),
        })
    }

    /// `a, b, c`: attributes and intrinsics (`select`, metrics `by`).
    fn attribute_list(&mut self) -> R<Vec<FieldExpr>> {
        let mut v = vec![self.attribute()?];
        while self.eat(&Tok::Comma) {
            v.push(self.attribute()?);
        }
        Ok(v)
    }

    /// The argument of a function over values (`quantile_over_time(a)`,
    /// ...): an attribute, whose type is known per span only, or a numeric
    /// intrinsic (`duration`); `name` or `status` is a type error before
    /// any data is read.
    fn numeric_attribute(&mut self) -> R<FieldExpr> {
        let pos = self.pos();
        let e = self.attribute()?;
        match ty(&e) {
            Ty::Attr | Ty::Int | Ty::Float | Ty::Dur => Ok(e),
            t => Err(PErr::new(pos, format!("expected a number or a duration, found {}", t.describe()))),
        }
    }

    fn attribute(&mut self) -> R<FieldExpr> {
        let pos = self.pos();
        match self.primary()? {
            e @ (FieldExpr::Attr(_) | FieldExpr::Intrinsic(_)) => Ok(e),
            _ => Err(PErr::new(pos, "expected an attribute or an intrinsic")),
        }
    }

    // -----------------------------------------------------------------
    // Metrics (parsed for the metrics API)

    fn metrics_stage(&mut self) -> R<MetricsStage> {
        let t = self.bump();
        let Tok::Word(w) = t.tok else {
            return Err(PErr::new(t.pos, format!("expected a metrics function, found {}", t.tok.describe())));
        };
        self.expect(&Tok::LParen)?;
        let func = match w.as_str() {
            "rate" => MetricsFn::Rate,
            "count_over_time" => MetricsFn::CountOverTime,
            "min_over_time" => MetricsFn::MinOverTime(self.numeric_attribute()?),
            "max_over_time" => MetricsFn::MaxOverTime(self.numeric_attribute()?),
            "avg_over_time" => MetricsFn::AvgOverTime(self.numeric_attribute()?),
            "sum_over_time" => MetricsFn::SumOverTime(self.numeric_attribute()?),
            "histogram_over_time" => MetricsFn::HistogramOverTime(self.numeric_attribute()?),
            "quantile_over_time" => {
                let a = self.numeric_attribute()?;
                let mut qs = Vec::new();
                while self.eat(&Tok::Comma) {
                    let t = self.bump();
                    qs.push(match t.tok {
                        Tok::Float(f) => f,
                        Tok::Int(i) => i as f64,
                        tok => {
                            return Err(PErr::new(
                                t.pos,
                                format!("expected a quantile, found {}", tok.describe()),
                            ))
                        }
                    });
                }
                if qs.is_empty() {
                    return Err(self.unexpected("`,` and a quantile (`quantile_over_time(duration, .95)`)"));
                }
                // One series per quantile: a repeated one would be a second
                // series with the same labels.
                let mut seen = Vec::with_capacity(qs.len());
                qs.retain(|q| {
                    let new = !seen.contains(q);
                    seen.push(*q);
                    new
                });
                MetricsFn::QuantileOverTime(a, qs)
            }
            "compare" => {
                let SpansetExpr::Filter(e) = self.ss_primary()? else {
                    return Err(PErr::new(t.pos, "compare needs a spanset filter `{ ... }`"));
                };
                let mut ints = Vec::new();
                while self.eat(&Tok::Comma) {
                    let t = self.bump();
                    match t.tok {
                        Tok::Int(i) => ints.push(i),
                        tok => {
                            return Err(PErr::new(
                                t.pos,
                                format!("expected an integer, found {}", tok.describe()),
                            ))
                        }
                    }
                }
                match ints[..] {
                    [] => MetricsFn::Compare(e, 10, 0, 0),
                    [n] => MetricsFn::Compare(e, n, 0, 0),
                    [n, s, x] => MetricsFn::Compare(e, n, s, x),
                    _ => return Err(PErr::new(t.pos, "compare takes a filter and 1 or 3 integers")),
                }
            }
            _ => return Err(PErr::new(t.pos, format!("unknown metrics function `{w}`"))),
        };
        self.expect(&Tok::RParen)?;
        let mut by = Vec::new();
        if self.is_word("by") {
            self.bump();
            self.expect(&Tok::LParen)?;
            by = self.attribute_list()?;
            self.expect(&Tok::RParen)?;
        }
        Ok(MetricsStage { func, by })
    }

    fn second_stage(&mut self) -> R<SecondStage> {
        let t = self.bump();
        let top = match &t.tok {
            Tok::Word(w) if w == "topk" => true,
            Tok::Word(w) if w == "bottomk" => false,
            tok => {
                return Err(PErr::new(
                    t.pos,
                    format!("expected `topk` or `bottomk`, found {}", tok.describe()),
                ))
            }
        };
        self.expect(&Tok::LParen)?;
        let n = match self.bump() {
            Token { tok: Tok::Int(n), .. } if n > 0 => n,
            t => return Err(PErr::new(t.pos, "expected a positive integer")),
        };
        self.expect(&Tok::RParen)?;
        Ok(if top { SecondStage::TopK(n) } else { SecondStage::BottomK(n) })
    }
}

fn has_aggregate(e: &ScalarExpr) -> bool {
    match e {
        ScalarExpr::Aggregate(..) => true,
        ScalarExpr::Static(_) => false,
        ScalarExpr::Binary(_, l, r) => has_aggregate(l) || has_aggregate(r),
    }
}

/// Keywords that are literals.
fn word_static(w: &str) -> Option<Static> {
    Some(match w {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "error" => Static::Status(status::ERROR),
        "ok" => Static::Status(status::OK),
        "unset" => Static::Status(status::UNSET),
        "server" => Static::Kind(kind::SERVER),
        "client" => Static::Kind(kind::CLIENT),
        "internal" => Static::Kind(kind::INTERNAL),
        "producer" => Static::Kind(kind::PRODUCER),
        "consumer" => Static::Kind(kind::CONSUMER),
        "unspecified" => Static::Kind(kind::UNSPECIFIED),
        "minInt" => Static::Int(i64::MIN),
        "maxInt" => Static::Int(i64::MAX),
        _ => return None,
    })
}

/// The static type of `e`.
pub(super) fn ty(e: &FieldExpr) -> Ty {
    match e {
        FieldExpr::Static(s) => match s {
            Static::Nil => Ty::Nil,
            Static::Str(_) => Ty::Str,
            Static::Int(_) => Ty::Int,
            Static::Float(_) => Ty::Float,
            Static::Bool(_) => Ty::Bool,
            Static::Dur(_) => Ty::Dur,
            Static::Status(_) => Ty::Status,
            Static::Kind(_) => Ty::Kind,
        },
        FieldExpr::Attr(_) => Ty::Attr,
        FieldExpr::Intrinsic(i) => i.ty(),
        FieldExpr::Neg(e) => ty(e),
        FieldExpr::Binary(op, l, r) if op.is_arith() => match (ty(l), ty(r)) {
            (Ty::Int, Ty::Int) => Ty::Int,
            (Ty::Attr, _) | (_, Ty::Attr) => Ty::Attr,
            _ => Ty::Float,
        },
        FieldExpr::Not(_)
        | FieldExpr::Binary(..)
        | FieldExpr::Logic(..)
        | FieldExpr::Regex { .. }
        | FieldExpr::Exists(..) => Ty::Bool,
    }
}

/// `&&`, `||` and `!` take conditions; a bare attribute counts as
/// `attr = true` (Tempo's "boolean attributes as operands").
fn check_cond(e: &FieldExpr, pos: usize, op: BinOp) -> R<()> {
    match ty(e) {
        Ty::Bool | Ty::Attr => Ok(()),
        t => Err(PErr::new(pos, format!("`{}` needs conditions, not {}", op.symbol(), t.describe()))),
    }
}

/// Lowercase hex without leading zeroes: how ID intrinsics compare (Tempo
/// trims a trace ID's leading zeroes before comparing).
pub(super) fn normalize_id(s: &str) -> String {
    let t = s.trim_start_matches('0').to_ascii_lowercase();
    t
}

fn comparison(op: BinOp, l: FieldExpr, r: FieldExpr, op_pos: usize, rpos: usize) -> R<FieldExpr> {
    let (lt, rt) = (ty(&l), ty(&r));
    if lt == Ty::Nil || rt == Ty::Nil {
        if op.is_ordering() {
            return Err(PErr::new(op_pos, "nil can only be compared with = or !="));
        }
        if lt == Ty::Nil && rt == Ty::Nil {
            return Ok(FieldExpr::Static(Static::Bool(false)));
        }
        let e = if lt == Ty::Nil { r } else { l };
        return Ok(FieldExpr::Exists(Box::new(e), op == BinOp::Ne));
    }
    if !lt.matches(rt) {
        return Err(PErr::new(rpos, format!("cannot compare {} with {}", lt.describe(), rt.describe())));
    }
    if op.is_ordering() {
        for t in [lt, rt] {
            if matches!(t, Ty::Bool | Ty::Status | Ty::Kind) {
                return Err(PErr::new(
                    op_pos,
                    format!("`{}` does not apply to {}", op.symbol(), t.describe()),
                ));
            }
        }
    }
    let norm = |e: FieldExpr, other: &FieldExpr| match (e, other) {
        (FieldExpr::Static(Static::Str(s)), FieldExpr::Intrinsic(i)) if i.is_id() => {
            FieldExpr::Static(Static::Str(normalize_id(&s)))
        }
        (e, _) => e,
    };
    let l = norm(l, &r);
    let r = norm(r, &l);
    Ok(FieldExpr::Binary(op, Box::new(l), Box::new(r)))
}

fn regex_match(l: FieldExpr, negated: bool, r: FieldExpr, lpos: usize, rpos: usize) -> R<FieldExpr> {
    let lt = ty(&l);
    if !matches!(lt, Ty::Str | Ty::Attr) {
        return Err(PErr::new(
            lpos,
            format!("`=~` and `!~` need a string on the left, not {}", lt.describe()),
        ));
    }
    let FieldExpr::Static(Static::Str(text)) = r else {
        return Err(PErr::new(
            rpos,
            "the right side of `=~` and `!~` must be a string (the regular expression)",
        ));
    };
    let re =
        RegexBuilder::new(&format!("^(?:{text})$")).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
            PErr::new(rpos, format!("invalid regular expression {text:?}: {}", one_line(&e.to_string())))
        })?;
    Ok(FieldExpr::Regex { lhs: Box::new(l), negated, pattern: Pattern { text, re } })
}

/// The regex crate's multi-line error message on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn arithmetic(op: BinOp, l: FieldExpr, r: FieldExpr, pos: usize) -> R<FieldExpr> {
    for t in [ty(&l), ty(&r)] {
        if !t.numeric() {
            return Err(PErr::new(
                pos,
                format!("`{}` needs numbers or durations, not {}", op.symbol(), t.describe()),
            ));
        }
    }
    Ok(FieldExpr::Binary(op, Box::new(l), Box::new(r)))
}

#[cfg(test)]
mod tests {
    use super::super::TraceQl;

    /// The parse tree, fully parenthesised.
    fn tree(q: &str) -> String {
        TraceQl::parse_metrics(q).unwrap_or_else(|e| panic!("{q}: {e}")).root.to_string()
    }

    #[test]
    fn precedence_and_associativity_follow_tempo() {
        // && and || have one precedence level, grouped left to right.
        assert_eq!(tree("{.a} || {.b} && {.c}"), "({ .a } || { .b } && { .c })");
        assert_eq!(tree("{ .a || .b && .c }"), "{ (.a || .b && .c) }");
        // Structural operators bind tighter than && / ||.
        assert_eq!(tree("{.a} && {.b} > {.c}"), "({ .a } && ({ .b } > { .c }))");
        assert_eq!(tree("{.a} > {.b} >> {.c}"), "({ .a } > { .b } >> { .c })");
        // Arithmetic: * over +, ^ right-associative, comparisons lowest.
        assert_eq!(tree("{ .a + 2 * 3 > 4 }"), "{ ((.a + (2 * 3)) > 4) }");
        assert_eq!(tree("{ .a ^ 2 ^ 3 = 1 }"), "{ ((.a ^ (2 ^ 3)) = 1) }");
        assert_eq!(tree("{ .a - 1 - 2 = 0 }"), "{ (((.a - 1) - 2) = 0) }");
        // Unary operators take only * / % ^.
        assert_eq!(tree("{ -.a * 2 = 1 }"), "{ (-((.a * 2)) = 1) }");
        assert_eq!(tree("{ !.a = false }"), "{ (!(.a) = false) }");
        assert_eq!(tree("{ -.a + 1 = 1 }"), "{ ((-(.a) + 1) = 1) }");
        assert_eq!(tree("{ .a = nil }"), "{ (.a = nil) }");
        assert_eq!(tree("{ nil != .a }"), "{ (.a != nil) }");
        assert_eq!(tree("{ -5s < event:timeSinceStart }"), "{ (-5000000000ns < event:timeSinceStart) }");
    }

    #[test]
    fn pipelines_hints_and_metrics() {
        assert_eq!(tree("{} | count() > 2"), "{ true } | count() > 2");
        assert_eq!(
            tree("{} | by(resource.service.name) | avg(duration) >= 1s | coalesce()"),
            "{ true } | by(resource.service.name) | avg(span:duration) >= 1000000000ns | coalesce()"
        );
        assert_eq!(tree("{ } | select(span.a, name)"), "{ true } | select(span.a, span:name)");
        assert_eq!(tree("({.a} | count() > 1) && {.b}"), "(({ .a } | count() > 1) && { .b })");
        assert_eq!(tree("count() > 1"), "count() > 1");
        assert_eq!(tree("{} with (most_recent = true)"), "{ true } with (most_recent = true)");
        assert_eq!(
            tree("{ status = error } | rate() by (resource.service.name, name) | topk(5)"),
            "{ (span:status = error) } | rate() by (resource.service.name, span:name) | topk(5)"
        );
        assert_eq!(
            tree("{} | quantile_over_time(duration, .5, 0.95, 1) by (span.a)"),
            "{ true } | quantile_over_time(span:duration, 0.5, 0.95, 1.0) by (span.a)"
        );
        assert_eq!(
            tree("{} | compare({status = error})"),
            "{ true } | compare({ (span:status = error) }, 10, 0, 0)"
        );
        assert_eq!(
            tree("{} | histogram_over_time(duration) | bottomk(2)"),
            "{ true } | histogram_over_time(span:duration) | bottomk(2)"
        );
        for f in [
            "count_over_time()",
            "min_over_time(duration)",
            "max_over_time(.a)",
            "avg_over_time(.a)",
            "sum_over_time(.a)",
        ] {
            assert!(TraceQl::parse_metrics(&format!("{{}} | {f} by (.x)")).unwrap().is_metrics(), "{f}");
        }
        // Functions over values take numbers (a report: these answered an
        // empty 200); a repeated quantile is one series.
        for f in ["quantile_over_time(name, .5)", "histogram_over_time(status)", "sum_over_time(kind)"] {
            let e = TraceQl::parse_metrics(&format!("{{}} | {f}")).unwrap_err().to_string();
            assert!(e.contains("expected a number or a duration, found"), "{f}: {e}");
        }
        assert_eq!(
            tree("{} | quantile_over_time(duration, .5, .9, .5)"),
            "{ true } | quantile_over_time(span:duration, 0.5, 0.9)"
        );
    }
}
