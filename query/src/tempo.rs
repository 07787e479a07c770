//! `/tempo/api/...`: Grafana Tempo's HTTP API, so Grafana's Tempo data
//! source works against Skein. Traces are Tempo's `tempopb.Trace` (OTLP
//! `ResourceSpans` as `batches`) in OTLP/JSON or, when the client accepts
//! `application/protobuf`, in protobuf; search takes TraceQL (`q`) or
//! logfmt tags (`tags`), and tag names and values come from the head and
//! the segments' indexes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use prost::Message as _;
use serde_json::{json, Value};
use skein_storage::filter::{SpanFilter, StatusFilter};
use skein_storage::model::{AttrValue, Attributes, Resource, Scope, Span, TraceId};
use skein_storage::Storage;

use crate::{blocking, parse_duration_ns, summarize, traceql, ApiError, ApiResult, ApiState, Params};

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/tempo/api/echo", get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "echo") }))
        .route("/tempo/api/traces/{trace_id}", get(trace_v1))
        .route("/tempo/api/v2/traces/{trace_id}", get(trace_v2))
        .route("/tempo/api/search", get(search))
        .route("/tempo/api/search/tags", get(tags_v1))
        .route("/tempo/api/v2/search/tags", get(tags_v2))
        .route("/tempo/api/search/tag/{tag}/values", get(values_v1))
        .route("/tempo/api/v2/search/tag/{tag}/values", get(values_v2))
}

/// Tempo's `tempopb.Trace`: the trace's spans as OTLP batches.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    pub batches: Vec<ResourceSpans>,
}

/// Tempo's `tempopb.TraceByIDResponse` (v2 API).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<TempoTrace>,
}

fn any_value(v: &AttrValue) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        AttrValue::Empty => None,
        AttrValue::Str(s) => Some(V::StringValue(s.clone())),
        AttrValue::Int(i) => Some(V::IntValue(*i)),
        AttrValue::Double(d) => Some(V::DoubleValue(*d)),
        AttrValue::Bool(b) => Some(V::BoolValue(*b)),
        AttrValue::Bytes(b) => Some(V::BytesValue(b.clone())),
        AttrValue::Array(a) => Some(V::ArrayValue(ArrayValue { values: a.iter().map(any_value).collect() })),
        AttrValue::KvList(kv) => Some(V::KvlistValue(KeyValueList { values: key_values(kv) })),
    };
    AnyValue { value }
}

fn key_values(a: &Attributes) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| KeyValue { key: k.clone(), value: Some(any_value(v)), ..Default::default() })
        .collect()
}

fn otlp_span(s: &Span) -> OtlpSpan {
    OtlpSpan {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.name.clone(),
        kind: i32::from(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: key_values(&s.attributes),
        events: s
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.0.to_vec(),
                span_id: l.span_id.0.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: key_values(&l.attributes),
                ..Default::default()
            })
            .collect(),
        status: Some(Status { message: s.status_message.clone(), code: i32::from(s.status_code) }),
        ..Default::default()
    }
}

/// The spans as OTLP batches: one per resource (the same `Arc` or equal
/// attributes), one scope group per instrumentation scope within it.
pub(crate) fn batches(spans: &[Span]) -> Vec<ResourceSpans> {
    type Group<'a> = (&'a Arc<Resource>, Vec<(&'a Arc<Scope>, Vec<&'a Span>)>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for s in spans {
        let gi = match groups.iter().position(|(r, _)| Arc::ptr_eq(r, &s.resource) || ***r == *s.resource) {
            Some(i) => i,
            None => {
                groups.push((&s.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].1;
        match scopes.iter_mut().find(|(sc, _)| Arc::ptr_eq(sc, &s.scope) || ***sc == *s.scope) {
            Some((_, v)) => v.push(s),
            None => scopes.push((&s.scope, vec![s])),
        }
    }
    groups
        .into_iter()
        .map(|(r, scopes)| {
            let mut attributes = key_values(&r.attributes);
            if !r.attributes.iter().any(|(k, _)| k == "service.name") {
                attributes.insert(
                    0,
                    KeyValue {
                        key: "service.name".into(),
                        value: Some(any_value(&AttrValue::Str(r.service_name.clone()))),
                        ..Default::default()
                    },
                );
            }
            ResourceSpans {
                resource: Some(OtlpResource { attributes, ..Default::default() }),
                scope_spans: scopes
                    .into_iter()
                    .map(|(sc, spans)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: sc.name.clone(),
                            version: sc.version.clone(),
                            ..Default::default()
                        }),
                        spans: spans.into_iter().map(otlp_span).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            }
        })
        .collect()
}

fn wants_protobuf(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("application/protobuf")))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], bytes).into_response()
}

async fn load(st: &ApiState, id: &str) -> Result<Vec<ResourceSpans>, ApiError> {
    let tid = TraceId::parse_hex(id).ok_or_else(|| ApiError::bad(format!("trace ID {id:?} is not hex")))?;
    match blocking(st, move |s| Ok(s.get_trace(&tid)?)).await? {
        Some((spans, _)) if !spans.is_empty() => Ok(batches(&spans)),
        _ => Err(ApiError::not_found(format!("trace {} not found", tid.to_hex()))),
    }
}

async fn trace_v1(State(st): State<ApiState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let batches = load(&st, &id).await?;
    if wants_protobuf(&headers) {
        return Ok(protobuf(TempoTrace { batches }.encode_to_vec()));
    }
    Ok(Json(json!({ "batches": batches })).into_response())
}

async fn trace_v2(State(st): State<ApiState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let batches = load(&st, &id).await?;
    if wants_protobuf(&headers) {
        return Ok(protobuf(TraceByIdResponse { trace: Some(TempoTrace { batches }) }.encode_to_vec()));
    }
    Ok(Json(json!({ "trace": { "resourceSpans": batches } })).into_response())
}

/// Splits logfmt (`k=v k2="v 2"`) into pairs.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(ApiError::bad(format!("tags {s:?} must be logfmt key=value pairs")));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(ApiError::bad(format!("tags {s:?} has an unterminated quote"))),
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// Unix seconds, as Tempo takes `start` and `end`.
fn seconds(p: &Params, key: &str) -> Result<Option<u64>, ApiError> {
    p.get(key)
        .map(|v| {
            v.parse::<u64>()
                .map(|s| s.saturating_mul(1_000_000_000))
                .map_err(|_| ApiError::bad(format!("{key}: {v:?} is not Unix seconds")))
        })
        .transpose()
}

fn go_duration(p: &Params, key: &str) -> Result<Option<u64>, ApiError> {
    p.get(key).map(|v| parse_duration_ns(v).map_err(|e| ApiError::bad(format!("{key}: {e}")))).transpose()
}

/// Spans listed per trace in `spanSet`, as Tempo's default `spss`.
const SPANS_PER_SPANSET: usize = 3;

fn span_set(matched: &[&Span]) -> Value {
    let spans: Vec<Value> = matched
        .iter()
        .take(SPANS_PER_SPANSET)
        .map(|s| {
            json!({
                "spanID": s.span_id.to_hex(),
                "name": s.name,
                "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                "durationNanos": s.duration_ns().to_string(),
                "attributes": [],
            })
        })
        .collect();
    json!({ "spans": spans, "matched": matched.len() })
}

async fn search(State(st): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let limit = p.limit(st.cfg.default_limit, st.cfg.max_limit)?;
    let mut f =
        SpanFilter { start_ns: seconds(&p, "start")?, end_ns: seconds(&p, "end")?, ..Default::default() };
    if let (Some(a), Some(b)) = (f.start_ns, f.end_ns) {
        if a > b {
            return Err(ApiError::bad("start is after end"));
        }
    }
    // Tempo's minDuration and maxDuration bound the trace's duration.
    let min_duration = go_duration(&p, "minDuration")?;
    let max_duration = go_duration(&p, "maxDuration")?;
    if let Some(tags) = p.get("tags") {
        for (k, v) in logfmt(tags)? {
            match k.as_str() {
                "service.name" => f.service = Some(v),
                "name" => f.operation = Some(v),
                "status" if v.eq_ignore_ascii_case("error") => f.status = Some(StatusFilter::Error),
                "status" if v.eq_ignore_ascii_case("ok") => f.status = Some(StatusFilter::Ok),
                _ => f.attrs.push((k, v)),
            }
        }
    }
    let tq = match p.get("q") {
        None => None,
        Some(q) if q.len() > crate::MAX_TRACEQL_LEN => {
            return Err(ApiError::bad(format!("q is longer than {} bytes", crate::MAX_TRACEQL_LEN)));
        }
        Some(q) => Some(traceql::TraceQl::parse(q).map_err(|e| ApiError::bad(e.to_string()))?),
    };
    let max_candidates = st.cfg.max_traceql_candidates;
    let (found, inspected) = blocking(&st, move |s| {
        let span_params_given =
            f.service.is_some() || f.operation.is_some() || !f.attrs.is_empty() || f.status.is_some();
        // As the native search: the index picks candidate traces, newest
        // first; each is then evaluated whole.
        let (cand, budget) = match &tq {
            Some(tq) if !span_params_given => {
                let mut c = tq.candidate_filter();
                c.start_ns = f.start_ns;
                c.end_ns = f.end_ns;
                (c, max_candidates)
            }
            Some(_) => (f.clone(), max_candidates),
            None if min_duration.is_some() || max_duration.is_some() => (f.clone(), max_candidates),
            None => (f.clone(), limit),
        };
        let mut out = Vec::new();
        let mut inspected = 0u64;
        for id in s.search_traces(&cand, budget)? {
            if out.len() >= limit {
                break;
            }
            let Some(spans) = s.get_trace_spans(&id)? else { continue };
            inspected += 1;
            let matched: Vec<&Span> = match &tq {
                Some(tq) => {
                    if !spans.iter().any(|sp| f.matches(sp)) {
                        continue;
                    }
                    tq.matching_spans(&spans)
                }
                None => spans.iter().filter(|sp| f.matches(sp)).collect(),
            };
            if matched.is_empty() {
                continue;
            }
            let sum = summarize(id, &spans);
            if min_duration.is_some_and(|m| sum.duration_ns < m)
                || max_duration.is_some_and(|m| sum.duration_ns > m)
            {
                continue;
            }
            let set = span_set(&matched);
            out.push((
                sum.start_time_unix_nano,
                json!({
                    "traceID": id.to_hex(),
                    "rootServiceName": sum.root_service,
                    "rootTraceName": sum.root_name,
                    "startTimeUnixNano": sum.start_time_unix_nano.to_string(),
                    "durationMs": sum.duration_ns / 1_000_000,
                    "spanSet": set,
                    "spanSets": [set],
                }),
            ));
        }
        Ok((out, inspected))
    })
    .await?;
    let mut found = found;
    found.sort_by_key(|t| std::cmp::Reverse(t.0));
    let traces: Vec<Value> = found.into_iter().map(|t| t.1).collect();
    Ok(Json(json!({ "traces": traces, "metrics": { "inspectedTraces": inspected } })).into_response())
}

/// Results of one tag-name or tag-value listing are capped at this many
/// (Tempo caps them by size); a listing that hits it is incomplete.
const MAX_TAG_RESULTS: usize = 1_000;
/// Index terms walked per segment at most while listing tag names.
const MAX_TERMS_WALKED: usize = 100_000;

/// (span attribute names, resource attribute names).
fn tag_names(s: &Storage) -> Result<(BTreeSet<String>, BTreeSet<String>), ApiError> {
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
        for r in seg.resources() {
            if res_keys.len() < MAX_TAG_RESULTS {
                res_keys.extend(r.iter().filter(|a| scalar(&a.1)).map(|a| a.0.clone()));
            }
        }
        let mut walked = 0;
        seg.for_each_attr_term("", |t| {
            walked += 1;
            if let Some((k, _)) = t.split_once('=') {
                if !span_keys.contains(k) {
                    span_keys.insert(k.to_string());
                }
            }
            span_keys.len() < MAX_TAG_RESULTS && walked < MAX_TERMS_WALKED
        })?;
    }
    Ok((span_keys, res_keys))
}

fn scalar(v: &AttrValue) -> bool {
    v.as_search_text().is_some()
}

fn type_of(v: &AttrValue) -> &'static str {
    match v {
        AttrValue::Int(_) => "int",
        AttrValue::Double(_) => "float",
        AttrValue::Bool(_) => "bool",
        _ => "string",
    }
}

/// The type of an indexed value, whose original type the index does not keep.
fn type_of_text(v: &str) -> &'static str {
    if v.parse::<i64>().is_ok() {
        "int"
    } else if v == "true" || v == "false" {
        "bool"
    } else if v.parse::<f64>().is_ok() {
        "float"
    } else {
        "string"
    }
}

const INTRINSICS: [&str; 8] =
    ["duration", "kind", "name", "status", "statusMessage", "rootServiceName", "rootName", "traceDuration"];

async fn tags_v1(State(st): State<ApiState>) -> ApiResult {
    let (span, res) = blocking(&st, tag_names).await?;
    let names: BTreeSet<String> = span.into_iter().chain(res).collect();
    Ok(Json(json!({ "tagNames": names })).into_response())
}

async fn tags_v2(State(st): State<ApiState>) -> ApiResult {
    let (span, res) = blocking(&st, tag_names).await?;
    Ok(Json(json!({ "scopes": [
        {"name": "span", "tags": span},
        {"name": "resource", "tags": res},
        {"name": "intrinsic", "tags": INTRINSICS},
    ] }))
    .into_response())
}

#[derive(Clone, Copy, PartialEq)]
enum TagScope {
    Span,
    Resource,
    Any,
}

/// Values of attribute `key` in `scope`, with their types.
fn attr_values(
    s: &Storage,
    scope: TagScope,
    key: &str,
) -> Result<BTreeSet<(&'static str, String)>, ApiError> {
    let mut out: BTreeSet<(&'static str, String)> = BTreeSet::new();
    let add = |out: &mut BTreeSet<(&'static str, String)>, a: &Attributes| {
        for (k, v) in a {
            if k == key && out.len() < MAX_TAG_RESULTS {
                if let Some(t) = v.as_search_text() {
                    out.insert((type_of(v), t));
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
        if want_res {
            for r in seg.resources() {
                add(&mut out, r);
            }
        }
        if want_span {
            let prefix = format!("{key}=");
            seg.for_each_attr_term(&prefix, |t| {
                let v = &t[prefix.len()..];
                out.insert((type_of_text(v), v.to_string()));
                out.len() < MAX_TAG_RESULTS
            })?;
        }
    }
    Ok(out)
}

/// Values of an intrinsic, or `None` when `tag` is not one listed here.
fn intrinsic_values(s: &Storage, tag: &str) -> Option<BTreeSet<(&'static str, String)>> {
    let mut out = BTreeSet::new();
    match tag {
        "status" => {
            out.extend(["error", "ok", "unset"].map(|v| ("keyword", v.to_string())));
        }
        "kind" => {
            out.extend(
                ["unspecified", "internal", "server", "client", "producer", "consumer"]
                    .map(|v| ("keyword", v.to_string())),
            );
        }
        "name" | "rootName" => {
            for seg in &s.snapshot().segments {
                out.extend(seg.meta.operations.iter().map(|o| ("string", o.name.clone())));
            }
            s.for_each_memory_span(|sp| {
                if out.len() < MAX_TAG_RESULTS {
                    out.insert(("string", sp.name.clone()));
                }
            });
        }
        "rootServiceName" => {
            for seg in &s.snapshot().segments {
                out.extend(seg.meta.services.iter().map(|x| ("string", x.name.clone())));
            }
            s.for_each_memory_span(|sp| {
                if out.len() < MAX_TAG_RESULTS {
                    out.insert(("string", sp.service_name().to_string()));
                }
            });
        }
        _ => return None,
    }
    Some(out.into_iter().take(MAX_TAG_RESULTS).collect())
}

async fn values_v1(State(st): State<ApiState>, Path(tag): Path<String>) -> ApiResult {
    let vals = blocking(&st, move |s| attr_values(s, TagScope::Any, &tag)).await?;
    let vals: BTreeSet<String> = vals.into_iter().map(|v| v.1).collect();
    Ok(Json(json!({ "tagValues": vals })).into_response())
}

async fn values_v2(State(st): State<ApiState>, Path(tag): Path<String>) -> ApiResult {
    let vals = blocking(&st, move |s| {
        if let Some(v) = intrinsic_values(s, &tag) {
            return Ok(v);
        }
        let (scope, key) = if let Some(k) = tag.strip_prefix("span.") {
            (TagScope::Span, k)
        } else if let Some(k) = tag.strip_prefix("resource.") {
            (TagScope::Resource, k)
        } else {
            (TagScope::Any, tag.strip_prefix('.').unwrap_or(&tag))
        };
        attr_values(s, scope, key)
    })
    .await?;
    // One entry per value: a value seen with two types keeps the first.
    let mut by_value: BTreeMap<String, &'static str> = BTreeMap::new();
    for (ty, v) in vals {
        by_value.entry(v).or_insert(ty);
    }
    let vals: Vec<Value> = by_value.into_iter().map(|(v, ty)| json!({"type": ty, "value": v})).collect();
    Ok(Json(json!({ "tagValues": vals })).into_response())
}
