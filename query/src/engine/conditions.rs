//! Conditions on what a span is rather than what it carries: its status,
//! kind and instrumentation scope. Jaeger's view shows these as tags Skein
//! synthesises (`error`, `otel.status_code`, `span.kind`, ...), so a Jaeger
//! tag search on them lands here rather than on attributes.

use skein_storage::filter::{SpanFilter, StatusFilter};
use skein_storage::model::{status, Span};

/// One condition on a span's intrinsic fields. A search holds them on the
/// same span as its [`SpanFilter`] (Jaeger semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanCondition {
    /// The status is ERROR (`true`) or not (`false`).
    Error(bool),
    /// The status code is this ([`status`]).
    StatusCode(u8),
    /// The span is an ERROR span with this status message (Jaeger's view
    /// shows the message only on those).
    StatusMessage(String),
    /// The kind is this ([`skein_storage::model::kind`]).
    Kind(u8),
    /// The instrumentation scope's name is this.
    ScopeName(String),
    /// The instrumentation scope's version is this.
    ScopeVersion(String),
}

impl SpanCondition {
    /// Whether span `s` meets the condition.
    pub fn matches(&self, s: &Span) -> bool {
        match self {
            SpanCondition::Error(e) => s.is_error() == *e,
            SpanCondition::StatusCode(c) => s.status_code == *c,
            SpanCondition::StatusMessage(m) => s.is_error() && s.status_message == *m,
            SpanCondition::Kind(k) => s.kind == *k,
            SpanCondition::ScopeName(n) => s.scope.name == *n,
            SpanCondition::ScopeVersion(v) => s.scope.version == *v,
        }
    }

    /// Whether an index query whose status condition is `status` selects
    /// exactly the spans meeting this condition.
    pub(super) fn exact_in_index(&self, status: Option<StatusFilter>) -> bool {
        matches!(self, SpanCondition::Error(_) | SpanCondition::StatusCode(status::ERROR))
            && status == self.status_filter()
    }

    /// The status condition the index can check for this one, if any:
    /// candidates are narrowed by it before spans are read.
    pub(super) fn status_filter(&self) -> Option<StatusFilter> {
        match self {
            SpanCondition::Error(true) | SpanCondition::StatusMessage(_) => Some(StatusFilter::Error),
            SpanCondition::Error(false) => Some(StatusFilter::Ok),
            SpanCondition::StatusCode(c) if *c == status::ERROR => Some(StatusFilter::Error),
            SpanCondition::StatusCode(_) => Some(StatusFilter::Ok),
            _ => None,
        }
    }
}

/// `filter` with its status narrowed by the first of `conds` that the
/// index can check, when it has no status condition of its own.
pub(super) fn narrowed(filter: &SpanFilter, conds: &[SpanCondition]) -> SpanFilter {
    let mut f = filter.clone();
    if f.status.is_none() {
        f.status = conds.iter().find_map(SpanCondition::status_filter);
    }
    f
}

#[cfg(test)]
mod tests {
    use skein_storage::model::{kind, Scope};

    use super::*;
    use crate::engine::testutil::span;

    #[test]
    fn conditions_match_status_kind_and_scope() {
        let mut s = span(1, 2, Some(1), "cart", "cart.Get", 5, 10, true);
        s.status_message = "boom".into();
        s.scope = std::sync::Arc::new(Scope { name: "io.otel.http".into(), version: "1.2".into() });
        let yes = [
            SpanCondition::Error(true),
            SpanCondition::StatusCode(status::ERROR),
            SpanCondition::StatusMessage("boom".into()),
            SpanCondition::Kind(kind::CLIENT),
            SpanCondition::ScopeName("io.otel.http".into()),
            SpanCondition::ScopeVersion("1.2".into()),
        ];
        assert!(yes.iter().all(|c| c.matches(&s)));
        let no = [
            SpanCondition::Error(false),
            SpanCondition::StatusCode(status::OK),
            SpanCondition::StatusMessage("boo".into()),
            SpanCondition::Kind(kind::SERVER),
            SpanCondition::ScopeName("io.otel".into()),
        ];
        assert!(!no.iter().any(|c| c.matches(&s)));
        s.status_code = status::OK;
        assert!(!SpanCondition::StatusMessage("boom".into()).matches(&s), "shown only on errors");
    }

    #[test]
    fn status_conditions_narrow_the_index_query() {
        let f = narrowed(
            &SpanFilter::default(),
            &[SpanCondition::Kind(kind::SERVER), SpanCondition::Error(true)],
        );
        assert_eq!(f.status, Some(StatusFilter::Error));
        let f = narrowed(&SpanFilter::default(), &[SpanCondition::StatusCode(status::OK)]);
        assert_eq!(f.status, Some(StatusFilter::Ok));
        assert_eq!(narrowed(&SpanFilter::default(), &[SpanCondition::ScopeName("x".into())]).status, None);
    }
}
