//! Attribute names and values for tag autocompletion (Tempo's tag API),
//! from the head and the segments' indexes and resource tables.

use std::collections::BTreeSet;

use skein_storage::model::{AttrValue, Attributes};
use skein_storage::{ReadCtx, Storage};

use super::stats;
use crate::error::Result;

/// Names or values returned by one listing at most (Tempo caps them by
/// size); a listing that hits it is incomplete.
pub const MAX_TAG_RESULTS: usize = 1_000;
/// Index terms walked per segment at most while listing tag names.
const MAX_TERMS_WALKED: usize = 100_000;

/// Where a tag's values are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagScope {
    /// Span attributes.
    Span,
    /// Resource attributes.
    Resource,
    /// Span and resource attributes.
    Any,
    /// An intrinsic: `status`, `kind`, `name`, `rootName`,
    /// `rootServiceName`.
    Intrinsic,
}

impl TagScope {
    /// The scope and key of a TraceQL-style tag name: an intrinsic,
    /// `span.x`, `resource.x`, `.x` or `x`.
    pub fn parse(tag: &str) -> (TagScope, &str) {
        if matches!(tag, "status" | "kind" | "name" | "rootName" | "rootServiceName") {
            (TagScope::Intrinsic, tag)
        } else if let Some(k) = tag.strip_prefix("span.") {
            (TagScope::Span, k)
        } else if let Some(k) = tag.strip_prefix("resource.") {
            (TagScope::Resource, k)
        } else {
            (TagScope::Any, tag.strip_prefix('.').unwrap_or(tag))
        }
    }
}

/// The type of a tag value, as Tempo names them. Ordered by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagValueType {
    /// `bool`.
    Bool,
    /// `float`.
    Float,
    /// `int`.
    Int,
    /// `keyword`: an enumerated intrinsic value (`status`, `kind`).
    Keyword,
    /// `string`.
    String,
}

impl TagValueType {
    /// Tempo's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            TagValueType::Bool => "bool",
            TagValueType::Float => "float",
            TagValueType::Int => "int",
            TagValueType::Keyword => "keyword",
            TagValueType::String => "string",
        }
    }

    fn of(v: &AttrValue) -> Self {
        match v {
            AttrValue::Int(_) => TagValueType::Int,
            AttrValue::Double(_) => TagValueType::Float,
            AttrValue::Bool(_) => TagValueType::Bool,
            _ => TagValueType::String,
        }
    }

    /// The type of an indexed value, whose original type the index does
    /// not keep.
    fn of_text(v: &str) -> Self {
        if v.parse::<i64>().is_ok() {
            TagValueType::Int
        } else if v == "true" || v == "false" {
            TagValueType::Bool
        } else if v.parse::<f64>().is_ok() {
            TagValueType::Float
        } else {
            TagValueType::String
        }
    }
}

/// One value of a tag, with its type; listings sort by (type, value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagValue {
    /// The value's type.
    pub ty: TagValueType,
    /// The value as text.
    pub value: String,
}

fn scalar(v: &AttrValue) -> bool {
    v.as_search_text().is_some()
}

/// Tag names from memory and every segment, stopping between segments when
/// `ctx` is.
pub(super) fn tag_names(s: &Storage, ctx: &ReadCtx) -> Result<(Vec<String>, Vec<String>)> {
    let mut span_keys = BTreeSet::new();
    let mut res_keys = BTreeSet::new();
    s.for_each_memory_span(|sp| {
        if span_keys.len() < MAX_TAG_RESULTS {
            span_keys.extend(sp.attributes.iter().filter(|a| scalar(&a.1)).map(|a| a.0.clone()));
        }
        if res_keys.len() < MAX_TAG_RESULTS {
            res_keys.extend(sp.resource.attributes.iter().filter(|a| scalar(&a.1)).map(|a| a.0.clone()));
        }
    });
    for seg in &s.snapshot().segments {
        ctx.check()?;
        ctx.add_segment(&seg.meta.id);
        for r in seg.resources() {
            if res_keys.len() < MAX_TAG_RESULTS {
                res_keys.extend(r.iter().filter(|a| scalar(&a.1)).map(|a| a.0.clone()));
            }
        }
        let mut walked = 0;
        s.guarded(seg, |g| {
            g.for_each_attr_term("", |t| {
                walked += 1;
                if let Some((k, _)) = t.split_once('=') {
                    if !span_keys.contains(k) {
                        span_keys.insert(k.to_string());
                    }
                }
                span_keys.len() < MAX_TAG_RESULTS && walked < MAX_TERMS_WALKED
            })
        })?;
    }
    Ok((span_keys.into_iter().collect(), res_keys.into_iter().collect()))
}

/// Values of tag `key` in `scope`, stopping between segments when `ctx` is.
pub(super) fn tag_values(s: &Storage, ctx: &ReadCtx, scope: TagScope, key: &str) -> Result<Vec<TagValue>> {
    if scope == TagScope::Intrinsic {
        return Ok(intrinsic_values(s, key).into_iter().take(MAX_TAG_RESULTS).collect());
    }
    let mut out: BTreeSet<TagValue> = BTreeSet::new();
    let add = |out: &mut BTreeSet<TagValue>, a: &Attributes| {
        for (k, v) in a {
            if k == key && out.len() < MAX_TAG_RESULTS {
                if let Some(t) = v.as_search_text() {
                    out.insert(TagValue { ty: TagValueType::of(v), value: t });
                }
            }
        }
    };
    let (want_span, want_res) = (scope != TagScope::Resource, scope != TagScope::Span);
    s.for_each_memory_span(|sp| {
        if want_span {
            add(&mut out, &sp.attributes);
        }
        if want_res {
            add(&mut out, &sp.resource.attributes);
        }
    });
    for seg in &s.snapshot().segments {
        ctx.check()?;
        ctx.add_segment(&seg.meta.id);
        if want_res {
            for r in seg.resources() {
                add(&mut out, r);
            }
        }
        if want_span {
            let prefix = format!("{key}=");
            s.guarded(seg, |g| {
                g.for_each_attr_term(&prefix, |t| {
                    let v = &t[prefix.len()..];
                    out.insert(TagValue { ty: TagValueType::of_text(v), value: v.to_string() });
                    out.len() < MAX_TAG_RESULTS
                })
            })?;
        }
    }
    Ok(out.into_iter().collect())
}

fn intrinsic_values(s: &Storage, tag: &str) -> BTreeSet<TagValue> {
    let keyword = |v: &str| TagValue { ty: TagValueType::Keyword, value: v.to_string() };
    let string = |v: String| TagValue { ty: TagValueType::String, value: v };
    match tag {
        "status" => ["error", "ok", "unset"].into_iter().map(keyword).collect(),
        "kind" => ["unspecified", "internal", "server", "client", "producer", "consumer"]
            .into_iter()
            .map(keyword)
            .collect(),
        "name" | "rootName" => stats::operations(s, None).into_iter().map(|o| string(o.name)).collect(),
        "rootServiceName" => stats::services(s).into_iter().map(|x| string(x.name)).collect(),
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testutil::{append, engine, storage, three_traces};

    #[test]
    fn tag_names_parse_to_scopes() {
        assert_eq!(TagScope::parse("span.http.method"), (TagScope::Span, "http.method"));
        assert_eq!(TagScope::parse("resource.host"), (TagScope::Resource, "host"));
        assert_eq!(TagScope::parse(".x"), (TagScope::Any, "x"));
        assert_eq!(TagScope::parse("rootServiceName"), (TagScope::Intrinsic, "rootServiceName"));
    }

    #[tokio::test]
    async fn names_and_values_from_head_and_segments() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let (span, res) = e.tag_names().await.unwrap();
            assert_eq!((span, res), (vec!["http.status".to_string()], vec!["service.name".to_string()]));
            let vals = e.tag_values(TagScope::Span, "http.status".into()).await.unwrap();
            let vals: Vec<_> = vals.iter().map(|v| (v.ty, v.value.as_str())).collect();
            assert_eq!(vals, [(TagValueType::Int, "200"), (TagValueType::Int, "500")]);
            let svcs = e.tag_values(TagScope::Intrinsic, "rootServiceName".into()).await.unwrap();
            assert_eq!(svcs.len(), 3);
        }
    }
}
