//! Evaluation of a parsed query on one trace, as Tempo's engine does it
//! (`pkg/traceql/ast_conditions.go`, `ast_stringer.go`, `enum_operators.go`):
//! a pipeline turns the trace's spansets into spansets, starting from one
//! spanset holding every span; the trace matches when spansets remain.
//!
//! Structural operators use the trace's parent index, built once per
//! trace; each operator costs O(spans) (descendants and ancestors walk
//! the tree with a memo), never O(spans²).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use skein_storage::model::{AttrValue, Span, SpanId};

use super::ast::*;
use super::parser::normalize_id;
use super::FieldValue;

/// A value met during evaluation. `Nil` is a missing attribute (or an
/// `Empty` one); `Opaque` a present value that compares with nothing
/// (bytes, maps); `Arr` an array, which compares element by element.
#[derive(Debug, Clone)]
pub(super) enum Val<'a> {
    Nil,
    Opaque,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(i64),
    Status(u8),
    Kind(u8),
    Arr(&'a [AttrValue]),
}

impl<'a> Val<'a> {
    fn of_attr(v: &'a AttrValue) -> Val<'a> {
        match v {
            AttrValue::Str(s) => Val::Str(Cow::Borrowed(s)),
            AttrValue::Int(i) => Val::Int(*i),
            AttrValue::Double(d) => Val::Float(*d),
            AttrValue::Bool(b) => Val::Bool(*b),
            AttrValue::Array(a) => Val::Arr(a),
            AttrValue::Empty => Val::Nil,
            AttrValue::Bytes(_) | AttrValue::KvList(_) => Val::Opaque,
        }
    }

    fn of_static(s: &'a Static) -> Val<'a> {
        match s {
            Static::Nil => Val::Nil,
            Static::Str(s) => Val::Str(Cow::Borrowed(s)),
            Static::Int(i) => Val::Int(*i),
            Static::Float(f) => Val::Float(*f),
            Static::Bool(b) => Val::Bool(*b),
            Static::Dur(d) => Val::Dur(*d),
            Static::Status(x) => Val::Status(*x),
            Static::Kind(x) => Val::Kind(*x),
        }
    }

    fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    fn is_nil(&self) -> bool {
        matches!(self, Val::Nil)
    }

    /// The value as the API returns it; `None` for nil.
    pub(super) fn to_field(&self) -> Option<FieldValue> {
        Some(match self {
            Val::Nil => return None,
            Val::Opaque => FieldValue::Str(String::new()),
            Val::Str(s) => FieldValue::Str(s.to_string()),
            Val::Int(i) => FieldValue::Int(*i),
            Val::Float(f) => FieldValue::Float(*f),
            Val::Bool(b) => FieldValue::Bool(*b),
            Val::Dur(d) => FieldValue::Duration(*d),
            Val::Status(s) => FieldValue::Status(*s),
            Val::Kind(k) => FieldValue::Kind(*k),
            Val::Arr(a) => FieldValue::Array(a.to_vec()),
        })
    }
}

/// Orders an integer against a float exactly (no rounding of large ints).
pub(super) fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // [-2^63, 2^63) holds every float that converts to i64 exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let t = f.trunc() as i64;
    match i.cmp(&t) {
        Ordering::Equal if f.fract() > 0.0 => Some(Ordering::Less),
        Ordering::Equal if f.fract() < 0.0 => Some(Ordering::Greater),
        o => Some(o),
    }
}

/// How two scalars order, `None` when they do not compare (other types,
/// nil, NaN). Ints, floats and durations form one numeric family, as in
/// Tempo (a duration is its nanoseconds).
fn order(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let int = |v: &Val<'_>| match v {
        Val::Int(i) | Val::Dur(i) => Some(*i),
        _ => None,
    };
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Status(x), Val::Status(y)) | (Val::Kind(x), Val::Kind(y)) => Some(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y),
        (Val::Float(x), y) => int(y).and_then(|i| cmp_int_float(i, *x)).map(Ordering::reverse),
        (x, Val::Float(y)) => int(x).and_then(|i| cmp_int_float(i, *y)),
        (x, y) => Some(int(x)?.cmp(&int(y)?)),
    }
}

/// `a op b` for a comparison operator. An array on either side compares
/// element by element: `=` and the orderings hold when any element does,
/// `!=` when no element equals (Tempo, "Find traces with arrays").
fn compare(op: BinOp, a: &Val<'_>, b: &Val<'_>) -> bool {
    if let Val::Arr(xs) = a {
        return match op {
            BinOp::Ne => !xs.iter().any(|x| compare(BinOp::Eq, &Val::of_attr(x), b)),
            _ => xs.iter().any(|x| compare(op, &Val::of_attr(x), b)),
        };
    }
    if let Val::Arr(ys) = b {
        return match op {
            BinOp::Ne => !ys.iter().any(|y| compare(BinOp::Eq, a, &Val::of_attr(y))),
            _ => ys.iter().any(|y| compare(op, a, &Val::of_attr(y))),
        };
    }
    let Some(o) = order(a, b) else { return false };
    let unordered = matches!(a, Val::Bool(_) | Val::Status(_) | Val::Kind(_));
    match op {
        BinOp::Eq => o == Ordering::Equal,
        BinOp::Ne => o != Ordering::Equal,
        BinOp::Lt => !unordered && o == Ordering::Less,
        BinOp::Le => !unordered && o != Ordering::Greater,
        BinOp::Gt => !unordered && o == Ordering::Greater,
        BinOp::Ge => !unordered && o != Ordering::Less,
        _ => false,
    }
}

fn as_f64(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) | Val::Dur(i) => Some(*i as f64),
        Val::Float(f) => Some(*f),
        _ => None,
    }
}

/// Arithmetic: ints stay ints (nil on overflow or division by zero),
/// anything else with a float or duration is computed in floats (a
/// duration as nanoseconds), as Tempo does.
fn arith<'a>(op: BinOp, a: &Val<'a>, b: &Val<'a>) -> Val<'a> {
    match (a, b) {
        // A negative power of an int is a fraction: computed in floats.
        (Val::Int(_), Val::Int(y)) if op == BinOp::Pow && *y < 0 => {}
        (Val::Int(x), Val::Int(y)) => return int_arith(op, *x, *y),
        _ => {}
    }
    let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) else { return Val::Nil };
    Val::Float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Mod => x % y,
        BinOp::Pow => x.powf(y),
        _ => return Val::Nil,
    })
}

/// Int arithmetic: nil on overflow or division by zero.
fn int_arith(op: BinOp, x: i64, y: i64) -> Val<'static> {
    let r = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div => x.checked_div(y),
        BinOp::Mod => x.checked_rem(y),
        BinOp::Pow => u32::try_from(y).ok().and_then(|e| x.checked_pow(e)),
        _ => None,
    };
    r.map_or(Val::Nil, Val::Int)
}

/// The event and link a filter is evaluated against (one at a time: a
/// filter on `event.` fields holds when it holds for one event).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bind {
    event: Option<usize>,
    link: Option<usize>,
}

/// What a query needs computed per trace beyond the spans.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Needs {
    /// Parent index (structural operators, `parent.`, `childCount`).
    pub(super) tree: bool,
    /// Nested-set numbers.
    pub(super) nested: bool,
}

/// Per-trace facts: the tree and the trace-level intrinsics.
pub(super) struct Ctx<'a> {
    pub(super) spans: &'a [Span],
    root: Option<usize>,
    duration: i64,
    /// Each span's parent within the trace.
    pub(super) parent: Vec<Option<usize>>,
    child_count: Vec<u32>,
    /// (left, right, parent's left; -1 for roots) per span reached from a
    /// root.
    nested: Vec<Option<(i64, i64, i64)>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(spans: &'a [Span], needs: Needs) -> Ctx<'a> {
        let root = spans.iter().position(|s| s.parent_span_id.is_none_or(|p| p.is_zero()));
        let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0);
        let mut cx = Ctx {
            spans,
            root,
            duration: i64::try_from(end.saturating_sub(start)).unwrap_or(i64::MAX),
            parent: Vec::new(),
            child_count: Vec::new(),
            nested: Vec::new(),
        };
        if needs.tree || needs.nested {
            let mut index: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
            for (i, s) in spans.iter().enumerate() {
                index.entry(s.span_id).or_insert(i);
            }
            cx.parent = spans
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let p = s.parent_span_id.filter(|p| !p.is_zero())?;
                    index.get(&p).copied().filter(|&j| j != i)
                })
                .collect();
            cx.child_count = vec![0; spans.len()];
            for p in cx.parent.iter().flatten() {
                cx.child_count[*p] += 1;
            }
        }
        if needs.nested {
            cx.nested = nested_sets(spans, &cx.parent);
        }
        cx
    }

    fn parent_of(&self, i: usize) -> Option<usize> {
        self.parent.get(i).copied().flatten()
    }
}

/// Nested-set numbering (Tempo's `nestedSetLeft/Right/Parent`): a
/// depth-first walk from each root, children by start time, numbering
/// from 1 on entry and exit. Spans in a parent cycle are not reached.
fn nested_sets(spans: &[Span], parent: &[Option<usize>]) -> Vec<Option<(i64, i64, i64)>> {
    let n = spans.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match *p {
            Some(p) => children[p].push(i),
            None => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_time_unix_nano, i));
    children.iter_mut().for_each(by_start);
    by_start(&mut roots);
    let mut out = vec![None; n];
    let mut next = 1i64;
    // (span, parent's left, next child to visit)
    let mut stack: Vec<(usize, i64, usize)> = Vec::new();
    for r in roots {
        out[r] = Some((next, 0, -1));
        next += 1;
        stack.push((r, -1, 0));
        while let Some(top) = stack.last_mut() {
            let (i, _, k) = *top;
            if let Some(&c) = children[i].get(k) {
                top.2 += 1;
                let left = out[i].map_or(-1, |x| x.0);
                out[c] = Some((next, 0, left));
                next += 1;
                stack.push((c, left, 0));
            } else {
                if let Some(x) = out[i].as_mut() {
                    x.1 = next;
                }
                next += 1;
                stack.pop();
            }
        }
    }
    out
}

fn lookup<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<Val<'a>> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| Val::of_attr(v))
}

fn resource_attr<'a>(s: &'a Span, key: &str) -> Option<Val<'a>> {
    if key == "service.name" {
        return Some(Val::Str(Cow::Borrowed(s.service_name())));
    }
    lookup(&s.resource.attributes, key)
}

fn hex_id(bytes: &[u8]) -> Val<'static> {
    Val::Str(Cow::Owned(normalize_id(&hex::encode(bytes))))
}

fn non_empty(s: &str) -> Val<'_> {
    if s.is_empty() {
        Val::Nil
    } else {
        Val::Str(Cow::Borrowed(s))
    }
}

/// Evaluates a field expression on span `i` (with event/link binding `b`).
pub(super) fn eval<'a>(e: &'a FieldExpr, i: usize, b: Bind, cx: &Ctx<'a>) -> Val<'a> {
    let s = &cx.spans[i];
    match e {
        FieldExpr::Static(x) => Val::of_static(x),
        FieldExpr::Attr(a) => {
            let (s, i) = if a.parent {
                match cx.parent_of(i) {
                    Some(p) => (&cx.spans[p], p),
                    None => return Val::Nil,
                }
            } else {
                (s, i)
            };
            let _ = i;
            let k = a.name.as_str();
            let v = match a.scope {
                AttrScope::Unscoped => lookup(&s.attributes, k).or_else(|| resource_attr(s, k)),
                AttrScope::Span => lookup(&s.attributes, k),
                AttrScope::Resource => resource_attr(s, k),
                AttrScope::Event => b.event.and_then(|j| lookup(&s.events[j].attributes, k)),
                AttrScope::Link => b.link.and_then(|j| lookup(&s.links[j].attributes, k)),
                // Skein does not keep instrumentation scope attributes.
                AttrScope::Instrumentation => None,
            };
            v.unwrap_or(Val::Nil)
        }
        FieldExpr::Intrinsic(x) => match x {
            Intrinsic::Duration => Val::Dur(i64::try_from(s.duration_ns()).unwrap_or(i64::MAX)),
            Intrinsic::Name => Val::Str(Cow::Borrowed(&s.name)),
            Intrinsic::Status => Val::Status(s.status_code),
            Intrinsic::StatusMessage => Val::Str(Cow::Borrowed(&s.status_message)),
            Intrinsic::Kind => Val::Kind(s.kind),
            Intrinsic::ChildCount => cx.child_count.get(i).map_or(Val::Nil, |c| Val::Int(i64::from(*c))),
            Intrinsic::SpanId => hex_id(&s.span_id.0),
            Intrinsic::ParentId => {
                s.parent_span_id.filter(|p| !p.is_zero()).map_or(Val::Nil, |p| hex_id(&p.0))
            }
            Intrinsic::TraceId => hex_id(&s.trace_id.0),
            Intrinsic::RootName => cx.root.map_or(Val::Nil, |r| Val::Str(Cow::Borrowed(&cx.spans[r].name))),
            Intrinsic::RootService => {
                cx.root.map_or(Val::Nil, |r| Val::Str(Cow::Borrowed(cx.spans[r].service_name())))
            }
            Intrinsic::TraceDuration => Val::Dur(cx.duration),
            Intrinsic::NestedSetLeft => {
                cx.nested.get(i).copied().flatten().map_or(Val::Nil, |n| Val::Int(n.0))
            }
            Intrinsic::NestedSetRight => {
                cx.nested.get(i).copied().flatten().map_or(Val::Nil, |n| Val::Int(n.1))
            }
            Intrinsic::NestedSetParent => {
                cx.nested.get(i).copied().flatten().map_or(Val::Nil, |n| Val::Int(n.2))
            }
            Intrinsic::EventName => b.event.map_or(Val::Nil, |j| Val::Str(Cow::Borrowed(&s.events[j].name))),
            Intrinsic::EventTimeSinceStart => b.event.map_or(Val::Nil, |j| {
                let d = i128::from(s.events[j].time_unix_nano) - i128::from(s.start_time_unix_nano);
                Val::Dur(i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX }))
            }),
            Intrinsic::LinkTraceId => b.link.map_or(Val::Nil, |j| hex_id(&s.links[j].trace_id.0)),
            Intrinsic::LinkSpanId => b.link.map_or(Val::Nil, |j| hex_id(&s.links[j].span_id.0)),
            Intrinsic::InstrumentationName => non_empty(&s.scope.name),
            Intrinsic::InstrumentationVersion => non_empty(&s.scope.version),
        },
        FieldExpr::Not(e) => match eval(e, i, b, cx) {
            Val::Bool(x) => Val::Bool(!x),
            _ => Val::Nil,
        },
        FieldExpr::Neg(e) => match eval(e, i, b, cx) {
            Val::Int(x) => x.checked_neg().map_or(Val::Nil, Val::Int),
            Val::Float(x) => Val::Float(-x),
            Val::Dur(x) => x.checked_neg().map_or(Val::Nil, Val::Dur),
            _ => Val::Nil,
        },
        FieldExpr::Logic(first, rest) => {
            let mut v = eval(first, i, b, cx).truthy();
            for (op, e) in rest {
                v = match op {
                    BinOp::And => v && eval(e, i, b, cx).truthy(),
                    _ => v || eval(e, i, b, cx).truthy(),
                };
            }
            Val::Bool(v)
        }
        FieldExpr::Binary(op, l, r) => {
            let (x, y) = (eval(l, i, b, cx), eval(r, i, b, cx));
            if op.is_arith() {
                arith(*op, &x, &y)
            } else {
                Val::Bool(compare(*op, &x, &y))
            }
        }
        FieldExpr::Regex { lhs, negated, pattern } => {
            let is = |v: &Val<'_>| matches!(v, Val::Str(t) if pattern.re.is_match(t));
            Val::Bool(match eval(lhs, i, b, cx) {
                Val::Arr(xs) => {
                    let any = xs.iter().any(|x| is(&Val::of_attr(x)));
                    any != *negated
                }
                v @ Val::Str(_) => is(&v) != *negated,
                _ => false,
            })
        }
        FieldExpr::Exists(e, exists) => Val::Bool(eval(e, i, b, cx).is_nil() != *exists),
    }
}

/// Which per-item scopes a filter reads.
fn uses(e: &FieldExpr, out: &mut (bool, bool)) {
    match e {
        FieldExpr::Attr(a) => {
            out.0 |= a.scope == AttrScope::Event;
            out.1 |= a.scope == AttrScope::Link;
        }
        FieldExpr::Intrinsic(x) => {
            out.0 |= matches!(x, Intrinsic::EventName | Intrinsic::EventTimeSinceStart);
            out.1 |= matches!(x, Intrinsic::LinkTraceId | Intrinsic::LinkSpanId);
        }
        FieldExpr::Static(_) => {}
        FieldExpr::Not(e) | FieldExpr::Neg(e) | FieldExpr::Exists(e, _) => uses(e, out),
        FieldExpr::Regex { lhs, .. } => uses(lhs, out),
        FieldExpr::Binary(_, l, r) => {
            uses(l, out);
            uses(r, out);
        }
        FieldExpr::Logic(first, rest) => {
            uses(first, out);
            rest.iter().for_each(|(_, e)| uses(e, out));
        }
    }
}

/// Whether span `i` meets filter `e`: for some event and some link when
/// the filter reads them (once with none when the span has none).
fn filter_holds(e: &FieldExpr, i: usize, scopes: (bool, bool), cx: &Ctx<'_>) -> bool {
    let s = &cx.spans[i];
    // Each item once, or a single pass with none bound.
    let items = |used: bool, n: usize| {
        let n = if used { n } else { 0 };
        (0..n.max(1)).map(move |j| (n > 0).then_some(j))
    };
    items(scopes.0, s.events.len())
        .any(|event| items(scopes.1, s.links.len()).any(|link| eval(e, i, Bind { event, link }, cx).truthy()))
}

/// A set of spans of the trace (indices, ascending) and the labels the
/// pipeline gave it (`by(...)` values, aggregate results).
#[derive(Debug, Clone, Default)]
pub(super) struct SpanSet {
    pub(super) spans: Vec<usize>,
    pub(super) attrs: Vec<(String, FieldValue)>,
}

fn union_of(sets: &[SpanSet], n: usize) -> Vec<bool> {
    let mut m = vec![false; n];
    for s in sets {
        for &i in &s.spans {
            m[i] = true;
        }
    }
    m
}

fn indices(m: &[bool]) -> Vec<usize> {
    m.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i).collect()
}

/// One spanset with `input`'s labels, unless `m` selects nothing.
fn one(m: &[bool], input: &SpanSet) -> Vec<SpanSet> {
    let spans = indices(m);
    if spans.is_empty() {
        Vec::new()
    } else {
        vec![SpanSet { spans, attrs: input.attrs.clone() }]
    }
}

/// Evaluates a spanset expression on one input spanset.
pub(super) fn eval_spanset(e: &SpansetExpr, input: &SpanSet, cx: &Ctx<'_>) -> Vec<SpanSet> {
    let n = cx.spans.len();
    match e {
        SpansetExpr::Filter(f) => {
            let mut scopes = (false, false);
            uses(f, &mut scopes);
            let spans: Vec<usize> =
                input.spans.iter().copied().filter(|&i| filter_holds(f, i, scopes, cx)).collect();
            if spans.is_empty() {
                Vec::new()
            } else {
                vec![SpanSet { spans, attrs: input.attrs.clone() }]
            }
        }
        SpansetExpr::Pipeline(stages) => eval_pipeline(stages, vec![input.clone()], cx),
        SpansetExpr::Chain(first, rest) => {
            let mut cur = eval_spanset(first, input, cx);
            for (op, rhs) in rest {
                if cur.is_empty() && *op != SpansetOp::Union {
                    return Vec::new();
                }
                let r = eval_spanset(rhs, input, cx);
                if r.is_empty() && *op != SpansetOp::Union {
                    return Vec::new();
                }
                let (l, r) = (union_of(&cur, n), union_of(&r, n));
                let m: Vec<bool> = match op {
                    SpansetOp::And | SpansetOp::Union => l.iter().zip(&r).map(|(a, b)| *a || *b).collect(),
                    op => structural(*op, &l, &r, &cx.parent),
                };
                cur = one(&m, input);
            }
            cur
        }
    }
}

/// The spans of `right` in relation `op` to `left` (both non-empty).
fn structural(op: SpansetOp, left: &[bool], right: &[bool], parent: &[Option<usize>]) -> Vec<bool> {
    use SpansetOp::*;
    let (base, negated, union) = match op {
        Child | Parent | Descendant | Ancestor | Sibling => (op, false, false),
        NotChild => (Child, true, false),
        NotParent => (Parent, true, false),
        NotDescendant => (Descendant, true, false),
        NotAncestor => (Ancestor, true, false),
        NotSibling => (Sibling, true, false),
        UnionChild => (Child, false, true),
        UnionParent => (Parent, false, true),
        UnionDescendant => (Descendant, false, true),
        UnionAncestor => (Ancestor, false, true),
        UnionSibling => (Sibling, false, true),
        And | Union => unreachable!("not structural"),
    };
    let rel = related(base, left, parent);
    if union {
        // The right spans in relation to a left span, and the left spans
        // those right spans relate to (the inverse relation).
        let inverse = match base {
            Child => Parent,
            Parent => Child,
            Descendant => Ancestor,
            Ancestor => Descendant,
            _ => Sibling,
        };
        let inv = related(inverse, right, parent);
        return (0..right.len()).map(|i| (right[i] && rel[i]) || (left[i] && inv[i])).collect();
    }
    (0..right.len()).map(|i| right[i] && rel[i] != negated).collect()
}

/// For every span, whether it stands in relation `op` to some span of
/// `left`: its parent is in `left` (child), it has a child in `left`
/// (parent), a proper ancestor (descendant), a proper descendant
/// (ancestor), or another span with its parent (sibling).
fn related(op: SpansetOp, left: &[bool], parent: &[Option<usize>]) -> Vec<bool> {
    let n = left.len();
    match op {
        SpansetOp::Child => (0..n).map(|i| parent[i].is_some_and(|p| left[p])).collect(),
        SpansetOp::Parent => {
            let mut m = vec![false; n];
            for i in 0..n {
                if let (true, Some(p)) = (left[i], parent[i]) {
                    m[p] = true;
                }
            }
            m
        }
        SpansetOp::Sibling => {
            let mut left_children = vec![0usize; n];
            for i in 0..n {
                if let (true, Some(p)) = (left[i], parent[i]) {
                    left_children[p] += 1;
                }
            }
            (0..n).map(|i| parent[i].is_some_and(|p| left_children[p] > usize::from(left[i]))).collect()
        }
        SpansetOp::Ancestor => {
            // Walk up from each left span, stopping at a span already
            // marked (its ancestors are marked too): O(n) in all, and safe
            // against parent cycles.
            let mut m = vec![false; n];
            for i in 0..n {
                if !left[i] {
                    continue;
                }
                let mut p = parent[i];
                while let Some(j) = p {
                    if m[j] {
                        break;
                    }
                    m[j] = true;
                    p = parent[j];
                }
            }
            m
        }
        _ => {
            // Descendant: has_anc[i], some proper ancestor of i is in
            // `left`, computed iteratively with a memo, safe against cycles.
            let mut memo: Vec<Option<bool>> = vec![None; n];
            let mut on_path = vec![false; n];
            let mut path = Vec::new();
            for i in 0..n {
                if memo[i].is_some() {
                    continue;
                }
                path.clear();
                let mut j = i;
                let mut v = loop {
                    path.push(j);
                    on_path[j] = true;
                    match parent[j] {
                        None => break false,
                        Some(p) if left[p] => break true,
                        Some(p) => {
                            if let Some(m) = memo[p] {
                                break m;
                            }
                            if on_path[p] {
                                break false;
                            }
                            j = p;
                        }
                    }
                };
                for &k in path.iter().rev() {
                    memo[k] = Some(v);
                    on_path[k] = false;
                    v = v || left[k];
                }
            }
            memo.into_iter().map(|m| m == Some(true)).collect()
        }
    }
}

/// A stable key for grouping by a value.
fn group_key(v: &Option<FieldValue>) -> String {
    format!("{v:?}")
}

/// Evaluates a scalar expression over one spanset.
fn eval_scalar<'a>(e: &'a ScalarExpr, set: &SpanSet, cx: &Ctx<'a>) -> Val<'a> {
    match e {
        ScalarExpr::Static(s) => Val::of_static(s),
        ScalarExpr::Binary(op, l, r) => arith(*op, &eval_scalar(l, set, cx), &eval_scalar(r, set, cx)),
        ScalarExpr::Aggregate(AggOp::Count, _) => {
            Val::Int(i64::try_from(set.spans.len()).unwrap_or(i64::MAX))
        }
        ScalarExpr::Aggregate(op, Some(f)) => {
            let vals: Vec<Val<'a>> = set
                .spans
                .iter()
                .map(|&i| eval(f, i, Bind::default(), cx))
                .filter(|v| matches!(v, Val::Int(_) | Val::Float(_) | Val::Dur(_)))
                .collect();
            if vals.is_empty() {
                return Val::Nil;
            }
            match op {
                AggOp::Min | AggOp::Max => {
                    let want = if *op == AggOp::Min { Ordering::Less } else { Ordering::Greater };
                    let mut best = vals[0].clone();
                    for v in &vals[1..] {
                        if order(v, &best) == Some(want) {
                            best = v.clone();
                        }
                    }
                    best
                }
                _ => {
                    let all_int = vals.iter().all(|v| matches!(v, Val::Int(_)));
                    let all_dur = vals.iter().all(|v| matches!(v, Val::Dur(_)));
                    let sum: f64 = vals.iter().filter_map(as_f64).sum();
                    if *op == AggOp::Sum {
                        let exact = || {
                            vals.iter().try_fold(0i64, |acc, v| match v {
                                Val::Int(x) | Val::Dur(x) => acc.checked_add(*x),
                                _ => None,
                            })
                        };
                        match (all_int, all_dur, exact()) {
                            (true, _, Some(s)) => Val::Int(s),
                            (_, true, Some(s)) => Val::Dur(s),
                            _ => Val::Float(sum),
                        }
                    } else {
                        let avg = sum / vals.len() as f64;
                        if all_dur {
                            Val::Dur(avg as i64)
                        } else {
                            Val::Float(avg)
                        }
                    }
                }
            }
        }
        ScalarExpr::Aggregate(_, None) => Val::Nil,
    }
}

/// Runs pipeline stages over `input` spansets.
pub(super) fn eval_pipeline(stages: &[Stage], mut sets: Vec<SpanSet>, cx: &Ctx<'_>) -> Vec<SpanSet> {
    for stage in stages {
        if sets.is_empty() {
            break;
        }
        sets = match stage {
            Stage::Spanset(e) => sets.iter().flat_map(|s| eval_spanset(e, s, cx)).collect(),
            Stage::ScalarFilter(l, op, r) => sets
                .into_iter()
                .filter_map(|mut s| {
                    let (a, b) = (eval_scalar(l, &s, cx), eval_scalar(r, &s, cx));
                    if !compare(*op, &a, &b) {
                        return None;
                    }
                    for (e, v) in [(l, &a), (r, &b)] {
                        if let (ScalarExpr::Aggregate(..), Some(v)) = (e, v.to_field()) {
                            s.attrs.push((e.to_string(), v));
                        }
                    }
                    Some(s)
                })
                .collect(),
            Stage::By(e) => {
                let label = format!("by({e})");
                let mut out: Vec<SpanSet> = Vec::new();
                for s in &sets {
                    let mut groups: HashMap<String, usize> = HashMap::new();
                    let first = out.len();
                    for &i in &s.spans {
                        let v = eval(e, i, Bind::default(), cx).to_field();
                        let k = group_key(&v);
                        let g = *groups.entry(k).or_insert_with(|| {
                            let mut attrs = s.attrs.clone();
                            if let Some(v) = v.clone() {
                                attrs.push((label.clone(), v));
                            }
                            out.push(SpanSet { spans: Vec::new(), attrs });
                            out.len() - 1
                        });
                        out[g].spans.push(i);
                    }
                    let _ = first;
                }
                out
            }
            Stage::Coalesce => {
                let m = union_of(&sets, cx.spans.len());
                vec![SpanSet { spans: indices(&m), attrs: Vec::new() }]
            }
            Stage::Select(_) => sets,
        };
    }
    sets
}

/// The value of `e` on span `i`, for `select`.
pub(super) fn field_value(e: &FieldExpr, i: usize, cx: &Ctx<'_>) -> Option<FieldValue> {
    eval(e, i, Bind::default(), cx).to_field()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(v))
    }

    #[test]
    fn numbers_compare_as_one_family() {
        assert!(compare(BinOp::Eq, &Val::Int(3), &Val::Float(3.0)));
        assert!(compare(BinOp::Lt, &Val::Int(i64::MAX), &Val::Float(9.3e18)));
        assert!(compare(BinOp::Gt, &Val::Dur(1_000_001), &Val::Int(1_000_000)));
        assert!(compare(BinOp::Le, &Val::Float(2.5), &Val::Dur(3)));
        assert!(!compare(BinOp::Ne, &Val::Float(f64::NAN), &Val::Int(1)));
        assert!(!compare(BinOp::Ne, &st("1"), &Val::Int(1)), "another type is no match, != included");
        assert!(!compare(BinOp::Ne, &Val::Nil, &st("a")));
        assert!(!compare(BinOp::Gt, &Val::Bool(true), &Val::Bool(false)), "booleans do not order");
        assert_eq!(cmp_int_float(2, 2.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-2, -2.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(1, f64::NAN), None);
    }

    #[test]
    fn arrays_compare_by_element() {
        let a = [AttrValue::Str("x".into()), AttrValue::Int(5)];
        assert!(compare(BinOp::Eq, &Val::Arr(&a), &st("x")));
        assert!(compare(BinOp::Eq, &Val::Int(5), &Val::Arr(&a)));
        assert!(compare(BinOp::Gt, &Val::Arr(&a), &Val::Int(4)));
        assert!(!compare(BinOp::Ne, &Val::Arr(&a), &st("x")));
        assert!(compare(BinOp::Ne, &Val::Arr(&a), &st("y")));
        assert!(compare(BinOp::Ne, &Val::Arr(&[]), &st("y")));
    }

    #[test]
    fn arithmetic_keeps_ints_and_refuses_overflow() {
        assert!(matches!(arith(BinOp::Add, &Val::Int(2), &Val::Int(3)), Val::Int(5)));
        assert!(matches!(arith(BinOp::Pow, &Val::Int(2), &Val::Int(10)), Val::Int(1024)));
        assert!(matches!(arith(BinOp::Div, &Val::Int(7), &Val::Int(2)), Val::Int(3)));
        assert!(matches!(arith(BinOp::Div, &Val::Int(7), &Val::Int(0)), Val::Nil));
        assert!(matches!(arith(BinOp::Mul, &Val::Int(i64::MAX), &Val::Int(2)), Val::Nil));
        assert!(matches!(arith(BinOp::Mul, &Val::Dur(3), &Val::Int(2)), Val::Float(f) if f == 6.0));
        assert!(matches!(arith(BinOp::Pow, &Val::Int(2), &Val::Int(-1)), Val::Float(f) if f == 0.5));
        assert!(matches!(arith(BinOp::Add, &st("a"), &Val::Int(1)), Val::Nil));
    }

    #[test]
    fn relations_over_a_tree() {
        // 0 ─┬─ 1 ── 3
        //    └─ 2
        let parent = [None, Some(0), Some(0), Some(1)];
        let set = |v: &[usize]| (0..4).map(|i| v.contains(&i)).collect::<Vec<bool>>();
        let rel = |op, l: &[usize]| indices(&related(op, &set(l), &parent));
        assert_eq!(rel(SpansetOp::Child, &[0]), vec![1, 2]);
        assert_eq!(rel(SpansetOp::Parent, &[3]), vec![1]);
        assert_eq!(rel(SpansetOp::Descendant, &[0]), vec![1, 2, 3]);
        assert_eq!(rel(SpansetOp::Ancestor, &[3]), vec![0, 1]);
        assert_eq!(rel(SpansetOp::Sibling, &[1]), vec![2]);
        assert_eq!(rel(SpansetOp::Sibling, &[1, 2]), vec![1, 2]);
        let all = set(&[0, 1, 2, 3]);
        assert_eq!(indices(&structural(SpansetOp::NotParent, &all, &all, &parent)), vec![2, 3]);
        assert_eq!(indices(&structural(SpansetOp::UnionChild, &set(&[1]), &set(&[3]), &parent)), vec![1, 3]);
    }

    #[test]
    fn nested_sets_number_depth_first_by_start() {
        let span = |start: u64| {
            let mut s = crate::engine::testutil::span(1, 1, None, "s", "n", start, 1, false);
            s.start_time_unix_nano = start;
            s
        };
        // Children of 0 in start order: 2 (t=1) before 1 (t=5).
        let spans = [span(0), span(5), span(1)];
        let n = nested_sets(&spans, &[None, Some(0), Some(0)]);
        assert_eq!(n, vec![Some((1, 6, -1)), Some((4, 5, 1)), Some((2, 3, 1))]);
        // A cycle is never reached.
        assert_eq!(nested_sets(&spans[..2], &[Some(1), Some(0)]), vec![None, None]);
    }
}
