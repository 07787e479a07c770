//! Candidate planning: the span conditions every trace a query matches
//! meets on at least one of its spans, for the indexes to pick candidate
//! traces from. The filters must keep a superset of the answer, so only
//! conditions the index answers exactly for every form the query's
//! operator matches are pushed down:
//!
//! - `resource.service.name = "s"`, `name = "n"`, `status = ...` and
//!   `duration` bounds on the span itself;
//! - `=` on a span, resource or unscoped attribute with a string, integer
//!   or boolean literal, as a `key=value` text condition: the index keeps
//!   that term for scalar values and for each scalar element of an array
//!   (which `=` matches when any element does, as in Tempo), and a span's
//!   condition may be met by its resource's attribute too, so the filter
//!   keeps every span the comparison can match. (Floats are not pushed:
//!   `1.0` and the integer `1` compare equal but are other text.)
//! - not regexes, `!=`, `nil`, parent, event or link conditions, nor
//!   anything under `||` or `!`.
//!
//! Segments written before arrays were indexed by element hold no
//! element terms, so there an array attribute is found only by a
//! condition that is not pushed down (documented in docs/traceql.md).

use skein_storage::filter::{SpanFilter, StatusFilter};
use skein_storage::model::status;

use super::ast::*;

/// How many conditions a filter holds (0: prunes nothing).
pub(super) fn score(f: &SpanFilter) -> usize {
    usize::from(f.service.is_some())
        + usize::from(f.operation.is_some())
        + f.attrs.len()
        + usize::from(f.min_duration_ns.is_some())
        + usize::from(f.max_duration_ns.is_some())
        + usize::from(f.status.is_some())
}

/// One filter per spanset filter that every match needs a span for.
pub(super) fn required(root: &Root) -> Vec<SpanFilter> {
    let mut out = Vec::new();
    of_pipeline(&root.pipeline, &mut out);
    out
}

/// Every spanset stage of a pipeline selects spans of the trace, so a
/// match has spans meeting each (scalar filters, `by`, `coalesce` and
/// `select` only drop or regroup spansets).
fn of_pipeline(stages: &[Stage], out: &mut Vec<SpanFilter>) {
    for s in stages {
        if let Stage::Spanset(e) = s {
            of_spanset(e, out);
        }
    }
}

fn of_spanset(e: &SpansetExpr, out: &mut Vec<SpanFilter>) {
    match e {
        SpansetExpr::Filter(f) => {
            let f = of_field(f);
            if score(&f) > 0 {
                out.push(f);
            }
        }
        SpansetExpr::Pipeline(stages) => of_pipeline(stages, out),
        SpansetExpr::Chain(first, rest) => {
            // `((first op1 s1) op2 s2)`: from the last operator back, each
            // right operand of a non-union operator is required, and so is
            // the left part; a `||` ends what is required.
            for (op, s) in rest.iter().rev() {
                if *op == SpansetOp::Union {
                    return;
                }
                of_spanset(s, out);
            }
            of_spanset(first, out);
        }
    }
}

/// The conjuncts of a field expression (`a && b`, respecting that `&&`
/// and `||` group left to right at one level).
fn conjuncts<'e>(e: &'e FieldExpr, out: &mut Vec<&'e FieldExpr>) {
    match e {
        FieldExpr::Logic(first, rest) => {
            for (op, x) in rest.iter().rev() {
                if *op != BinOp::And {
                    return;
                }
                conjuncts(x, out);
            }
            conjuncts(first, out);
        }
        e => out.push(e),
    }
}

fn of_field(e: &FieldExpr) -> SpanFilter {
    let mut f = SpanFilter::default();
    let mut conj = Vec::new();
    conjuncts(e, &mut conj);
    for c in conj {
        let FieldExpr::Binary(op, l, r) = c else { continue };
        let (field, op, lit) = match (&**l, &**r) {
            (FieldExpr::Static(lit), field) if !matches!(field, FieldExpr::Static(_)) => {
                (field, op.flip(), lit)
            }
            (field, FieldExpr::Static(lit)) => (field, *op, lit),
            _ => continue,
        };
        match (field, op, lit) {
            (FieldExpr::Attr(a), BinOp::Eq, Static::Str(v))
                if a.scope == AttrScope::Resource && !a.parent && a.name == "service.name" =>
            {
                // The resource's service name is a string by construction
                // (`Resource::service_name`), never an array.
                f.service.get_or_insert_with(|| v.clone());
            }
            (FieldExpr::Attr(a), BinOp::Eq, lit)
                if !a.parent
                    && matches!(a.scope, AttrScope::Span | AttrScope::Resource | AttrScope::Unscoped) =>
            {
                let text = match lit {
                    Static::Str(v) => v.clone(),
                    // Beyond 2^53 an integer and the double it equals may
                    // print differently.
                    Static::Int(i) if i.unsigned_abs() < 1 << 53 => i.to_string(),
                    Static::Bool(b) => b.to_string(),
                    _ => continue,
                };
                if !f.attrs.iter().any(|(k, v)| *k == a.name && *v == text) {
                    f.attrs.push((a.name.clone(), text));
                }
            }
            (FieldExpr::Intrinsic(Intrinsic::Name), BinOp::Eq, Static::Str(v)) => {
                f.operation.get_or_insert_with(|| v.clone());
            }
            (FieldExpr::Intrinsic(Intrinsic::Duration), op, Static::Dur(d) | Static::Int(d)) if *d >= 0 => {
                let d = *d as u64;
                let (min, max) = match op {
                    BinOp::Gt => (Some(d.saturating_add(1)), None),
                    BinOp::Ge => (Some(d), None),
                    BinOp::Lt | BinOp::Le => (None, Some(d)),
                    BinOp::Eq => (Some(d), Some(d)),
                    _ => (None, None),
                };
                if let Some(m) = min {
                    f.min_duration_ns = Some(f.min_duration_ns.map_or(m, |x| x.max(m)));
                }
                if let Some(m) = max {
                    f.max_duration_ns = Some(f.max_duration_ns.map_or(m, |x| x.min(m)));
                }
            }
            (FieldExpr::Intrinsic(Intrinsic::Status), BinOp::Eq, Static::Status(status::ERROR)) => {
                f.status.get_or_insert(StatusFilter::Error);
            }
            (FieldExpr::Intrinsic(Intrinsic::Status), BinOp::Eq, Static::Status(_))
            | (FieldExpr::Intrinsic(Intrinsic::Status), BinOp::Ne, Static::Status(status::ERROR)) => {
                f.status.get_or_insert(StatusFilter::Ok);
            }
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::super::TraceQl;
    use super::*;

    fn cf(q: &str) -> SpanFilter {
        TraceQl::parse(q).unwrap().candidate_filter()
    }

    fn req(q: &str) -> Vec<SpanFilter> {
        TraceQl::parse(q).unwrap().required_filters()
    }

    #[test]
    fn pushes_down_exact_intrinsic_conditions() {
        let f = cf(r#"{ resource.service.name = "api" && name = "GET /x" && span.http.status_code = 500
            && duration > 100ms && duration <= 2s && status = error && .other =~ "a.*" }"#);
        assert_eq!(f.service.as_deref(), Some("api"));
        assert_eq!(f.operation.as_deref(), Some("GET /x"));
        assert_eq!(f.attrs, [("http.status_code".to_string(), "500".to_string())]);
        let mut g =
            cf(r#"{ .a = "x" && resource.b = true && span.c = -7 && span.d = 1.5 && parent.e = "p" }"#);
        g.attrs.sort();
        assert_eq!(
            g.attrs,
            [("a".into(), "x".into()), ("b".into(), "true".into()), ("c".into(), "-7".into())]
        );
        // The resource's own `service.name` attribute meets it too.
        assert_eq!(cf(r#"{ .service.name = "a" }"#).attrs, [("service.name".into(), "a".into())]);
        assert!(cf(r#"{ event.a = "x" && link.b = "y" && span.c != "z" && span.d =~ "w" }"#)
            .attrs
            .is_empty());
        assert_eq!(f.min_duration_ns, Some(100_000_001));
        assert_eq!(f.max_duration_ns, Some(2_000_000_000));
        assert_eq!(f.status, Some(StatusFilter::Error));
        let f = cf("{ 1s <= span:duration && duration < 5s && duration >= 2s && span:name = \"a\" }");
        assert_eq!((f.min_duration_ns, f.max_duration_ns), (Some(2_000_000_000), Some(5_000_000_000)));
        assert_eq!(cf("{ duration > 1000 }").min_duration_ns, Some(1001));
        assert_eq!(cf("{ status = ok }").status, Some(StatusFilter::Ok));
        assert_eq!(cf("{ status != error }").status, Some(StatusFilter::Ok));
    }

    #[test]
    fn never_narrows_under_or_not_or_other_scopes() {
        let empty = |q: &str| assert_eq!(score(&cf(q)), 0, "{q}");
        empty("{}");
        empty(r#"{ name = "a" || name = "b" }"#);
        empty(r#"{ name = "a" && status = error || name = "b" }"#);
        empty(r#"{ name = "a" } || { name = "b" }"#);
        empty(r#"{ name = "a" } && { status = error } || { name = "b" }"#);
        empty(r#"{ !(name = "a") }"#);
        empty(r#"{ name != "a" && duration != 1s }"#);
        empty(r#"{ parent.resource.service.name = "a" && trace:duration > 1s }"#);
        empty(r#"{ name =~ "a" && duration > -1s && duration > 1.5 }"#);
        empty(r#"by(name) | count() > 1"#);
        // (a || b) && c keeps c.
        let f = cf(r#"{ name = "a" || name = "b" && status = error }"#);
        assert_eq!((f.operation, f.status), (None, Some(StatusFilter::Error)));
        let f = cf(r#"{ name = "a" } || { name = "b" } && { status = error }"#);
        assert_eq!((f.operation, f.status), (None, Some(StatusFilter::Error)));
    }

    #[test]
    fn every_part_a_match_needs_is_required() {
        let r = req(r#"{ name = "a" } >> { status = error } !> { name = "c" }"#);
        assert_eq!(r.len(), 3);
        let r =
            req(r#"({ name = "a" } | count() > 1) && { resource.service.name = "s" } | { status = error }"#);
        assert_eq!(r.len(), 3);
        assert!(req(r#"{ name = "a" } || { name = "b" }"#).is_empty());
        // The candidate filter is the requirement with most conditions.
        let f = cf(r#"{ name = "a" } && { resource.service.name = "s" && status = error }"#);
        assert_eq!((f.service.as_deref(), f.operation.as_deref()), (Some("s"), None));
    }
}
