//! `/tempo/api/...`: Grafana Tempo's HTTP API, so Grafana's Tempo data
//! source works against Skein. Traces are Tempo's `tempopb.Trace` (OTLP
//! `ResourceSpans` as `batches`) in OTLP/JSON or, when the client accepts
//! `application/protobuf`, in protobuf; search takes TraceQL (`q`) or
//! logfmt tags (`tags`), and tag names and values come from the engine.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use serde_json::{json, Value};
use skein_storage::filter::SpanFilter;
use skein_storage::model::Span;
use skein_storage::tenant::TenantId;

use super::native::{status_filter, traceql};
use crate::engine::traceql::{FieldValue, HitSpanset};
use crate::engine::{TagScope, TraceQuery, TraceSearch};
use crate::error::{Error, Result};
use crate::params::{parse_trace_id, Params, TimeUnit};
use crate::{ApiState, Tenant};
use skein_otlp::encode::{any_value, batches};

type ApiResult = Result<Response>;

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

/// Tempo's `tempopb.TraceByIDResponse` (v2 API): the trace, and whether
/// it is whole (`status`: Tempo's `PartialStatus`, `COMPLETE` = 0,
/// `PARTIAL` = 1) with the reason in `message` (field 2, the metrics, is
/// not sent).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<TempoTrace>,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// Tempo's `PartialStatus.PARTIAL`.
const PARTIAL: i32 = 1;

fn wants_protobuf(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("application/protobuf")))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], bytes).into_response()
}

/// The trace's spans as OTLP batches, and the warnings of a partial
/// answer. 404 when no span is stored, unless `partial_ok` and a
/// quarantined segment may hold some (then empty batches and warnings).
async fn load(
    st: &ApiState,
    tenant: &TenantId,
    id: &str,
    partial_ok: bool,
) -> Result<(Vec<ResourceSpans>, Vec<String>)> {
    let tid = parse_trace_id(id)?;
    match st.engine(tenant).await?.trace(tid).await? {
        Some(t) if !t.spans.is_empty() || (partial_ok && !t.warnings.is_empty()) => {
            Ok((batches(&t.spans), t.warnings))
        }
        _ => Err(Error::not_found(format!("trace {} not found", tid.to_hex()))),
    }
}

/// v1 has no way to say "partial": it answers what could be read.
async fn trace_v1(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let (batches, _) = load(&st, &tenant, &id, false).await?;
    if wants_protobuf(&headers) {
        return Ok(protobuf(TempoTrace { batches }.encode_to_vec()));
    }
    Ok(Json(json!({ "batches": batches })).into_response())
}

async fn trace_v2(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let (batches, warnings) = load(&st, &tenant, &id, true).await?;
    let (status, message) =
        if warnings.is_empty() { (0, String::new()) } else { (PARTIAL, warnings.join("; ")) };
    if wants_protobuf(&headers) {
        let r = TraceByIdResponse { trace: Some(TempoTrace { batches }), status, message };
        return Ok(protobuf(r.encode_to_vec()));
    }
    let mut v = json!({ "trace": { "resourceSpans": batches } });
    if status == PARTIAL {
        v["status"] = json!("PARTIAL");
        v["message"] = json!(message);
    }
    Ok(Json(v).into_response())
}

/// Splits logfmt (`k=v k2="v 2"`) into pairs.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, Error> {
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
            return Err(Error::bad(format!("tags {s:?} must be logfmt key=value pairs")));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(Error::bad(format!("tags {s:?} has an unterminated quote"))),
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

/// Spans listed per trace in `spanSet`, as Tempo's default `spss`.
const SPANS_PER_SPANSET: usize = 3;

/// Go's `time.Duration` text (`1.5s`, `250ms`, `1h2m3s`), as Tempo
/// writes a duration it returns as an attribute.
fn go_duration(ns: i64) -> String {
    fn frac(whole: u128, rest: u128, digits: usize) -> String {
        let f = format!("{rest:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{f}")
        }
    }
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let n = u128::from(ns.unsigned_abs());
    let body = match n {
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", frac(n / 1_000, n % 1_000, 3)),
        n if n < 1_000_000_000 => format!("{}ms", frac(n / 1_000_000, n % 1_000_000, 6)),
        n => {
            let (h, m) = (n / 3_600_000_000_000, n / 60_000_000_000 % 60);
            let secs = frac(n / 1_000_000_000 % 60, n % 1_000_000_000, 9);
            match (h, m) {
                (0, 0) => format!("{secs}s"),
                (0, m) => format!("{m}m{secs}s"),
                (h, m) => format!("{h}h{m}m{secs}s"),
            }
        }
    };
    format!("{sign}{body}")
}

/// A TraceQL field as Tempo returns it in a search answer: an OTLP
/// `KeyValue` (durations as Go duration text, statuses and kinds by name,
/// as Tempo's `Static.asAnyValue`).
pub(crate) fn key_value(key: &str, v: &FieldValue) -> Value {
    use skein_storage::model::{kind, status, AttrValue};
    let v = match v {
        FieldValue::Nil => return json!({ "key": key, "value": {} }),
        FieldValue::Str(s) => AttrValue::Str(s.clone()),
        FieldValue::Int(i) => AttrValue::Int(*i),
        FieldValue::Float(f) => AttrValue::Double(*f),
        FieldValue::Bool(b) => AttrValue::Bool(*b),
        FieldValue::Duration(d) => AttrValue::Str(go_duration(*d)),
        FieldValue::Status(x) => AttrValue::Str(
            match *x {
                status::ERROR => "error",
                status::OK => "ok",
                _ => "unset",
            }
            .into(),
        ),
        FieldValue::Kind(k) => AttrValue::Str(
            match *k {
                kind::SERVER => "server",
                kind::CLIENT => "client",
                kind::PRODUCER => "producer",
                kind::CONSUMER => "consumer",
                kind::INTERNAL => "internal",
                _ => "unspecified",
            }
            .into(),
        ),
        FieldValue::Array(a) => AttrValue::Array(a.clone()),
    };
    json!({ "key": key, "value": any_value(&v) })
}

fn span_json(s: &Span, attributes: &[(String, FieldValue)]) -> Value {
    json!({
        "spanID": s.span_id.to_hex(),
        "name": s.name,
        "startTimeUnixNano": s.start_time_unix_nano.to_string(),
        "durationNanos": s.duration_ns().to_string(),
        "attributes": attributes.iter().map(|(k, v)| key_value(k, v)).collect::<Vec<_>>(),
    })
}

fn span_set(matched: &[Span], matched_count: usize) -> Value {
    let spans: Vec<Value> = matched.iter().take(SPANS_PER_SPANSET).map(|s| span_json(s, &[])).collect();
    json!({ "spans": spans, "matched": matched_count })
}

/// A TraceQL spanset: its spans with their `select(...)` fields, the
/// count, and its labels (`by(...)`, aggregates) as Tempo's `SpanSet`.
fn traceql_span_set(set: &HitSpanset) -> Value {
    let spans: Vec<Value> = set
        .spans
        .iter()
        .take(SPANS_PER_SPANSET)
        .enumerate()
        .map(|(i, s)| span_json(s, set.span_attributes.get(i).map_or(&[], Vec::as_slice)))
        .collect();
    let mut v = json!({ "spans": spans, "matched": set.matched });
    if !set.attributes.is_empty() {
        v["attributes"] = set.attributes.iter().map(|(k, x)| key_value(k, x)).collect();
    }
    v
}

/// Tempo's search answer: per trace its root, start, duration and up to
/// [`SPANS_PER_SPANSET`] matched spans per spanset (a TraceQL query's
/// spansets, with the fields `select(...)` asked for); `metrics` as Tempo's
/// `SearchMetrics` in its JSON form (proto3: 64-bit counts as strings):
/// `inspectedTraces`, `inspectedSpans`, `inspectedBytes` (Parquet pages of
/// the rows read), `totalBlocks` and `totalBlockBytes` (segments the range
/// covers), `completedJobs` and `totalJobs` (one job, plus one not done
/// per quarantined segment).
pub(crate) fn search_json(r: &TraceSearch) -> Value {
    let traces: Vec<Value> = r
        .traces
        .iter()
        .map(|t| {
            let sum = &t.summary;
            let sets: Vec<Value> = if t.spansets.is_empty() {
                vec![span_set(&t.matched, t.matched_count)]
            } else {
                t.spansets.iter().map(traceql_span_set).collect()
            };
            json!({
                "traceID": sum.trace_id.to_hex(),
                "rootServiceName": sum.root_service,
                "rootTraceName": sum.root_name,
                "startTimeUnixNano": sum.start_time_unix_nano.to_string(),
                "durationMs": sum.duration_ns / 1_000_000,
                "spanSet": sets[0],
                "spanSets": sets,
            })
        })
        .collect();
    // Tempo has no partial flag on search; its metrics say a search is
    // partial by completedJobs < totalJobs. Here one job is the search
    // itself, and each quarantined segment is a job not done.
    let mut metrics = json!({
        "inspectedTraces": r.inspected,
        "inspectedSpans": r.work.read.spans.to_string(),
        "inspectedBytes": r.work.read.bytes.to_string(),
        "totalBlocks": r.work.total_segments,
        "totalBlockBytes": r.work.total_segment_bytes.to_string(),
        "completedJobs": 1,
        "totalJobs": 1 + r.warnings.len(),
    });
    // Proto3's JSON mapping leaves fields at their default out, as Tempo's
    // answers do (its API documentation's examples have no zero counts).
    if let Some(m) = metrics.as_object_mut() {
        m.retain(|_, v| *v != json!(0) && *v != json!("0"));
    }
    json!({ "traces": traces, "metrics": metrics })
}

async fn search(State(st): State<ApiState>, Tenant(tenant): Tenant, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let limit = p.limit(st.cfg.default_limit, st.cfg.max_limit)?;
    let range = p.range("start", "end", TimeUnit::Seconds)?;
    range.within(st.cfg.max_range, "start", "end")?;
    let mut f = SpanFilter { start_ns: range.start_ns, end_ns: range.end_ns, ..Default::default() };
    if let Some(tags) = p.get("tags") {
        for (k, v) in logfmt(tags)? {
            match k.as_str() {
                "service.name" => f.service = Some(v),
                "name" => f.operation = Some(v),
                "status" if status_filter(&v).is_ok() => f.status = status_filter(&v).ok(),
                _ => f.attrs.push((k, v)),
            }
        }
    }
    let q = TraceQuery {
        filter: f,
        conditions: Vec::new(),
        traceql: traceql(&p)?,
        // Tempo's minDuration and maxDuration bound the trace's duration.
        min_trace_duration_ns: p.duration("minDuration")?,
        max_trace_duration_ns: p.duration("maxDuration")?,
        limit,
        keep_matched: SPANS_PER_SPANSET,
        with_trace: false,
        ..Default::default()
    };
    let r = st.engine(&tenant).await?.search_traces(q).await?;
    Ok(Json(search_json(&r)).into_response())
}

const INTRINSICS: [&str; 8] =
    ["duration", "kind", "name", "status", "statusMessage", "rootServiceName", "rootName", "traceDuration"];

async fn tags_v1(State(st): State<ApiState>, Tenant(tenant): Tenant) -> ApiResult {
    let (span, res) = st.engine(&tenant).await?.tag_names().await?;
    let names: BTreeSet<String> = span.into_iter().chain(res).collect();
    Ok(Json(json!({ "tagNames": names })).into_response())
}

async fn tags_v2(State(st): State<ApiState>, Tenant(tenant): Tenant) -> ApiResult {
    let (span, res) = st.engine(&tenant).await?.tag_names().await?;
    Ok(Json(json!({ "scopes": [
        {"name": "span", "tags": span},
        {"name": "resource", "tags": res},
        {"name": "intrinsic", "tags": INTRINSICS},
    ] }))
    .into_response())
}

async fn values_v1(State(st): State<ApiState>, Tenant(tenant): Tenant, Path(tag): Path<String>) -> ApiResult {
    let vals = st.engine(&tenant).await?.tag_values(TagScope::Any, tag).await?;
    let vals: BTreeSet<String> = vals.into_iter().map(|v| v.value).collect();
    Ok(Json(json!({ "tagValues": vals })).into_response())
}

async fn values_v2(State(st): State<ApiState>, Tenant(tenant): Tenant, Path(tag): Path<String>) -> ApiResult {
    let (scope, key) = TagScope::parse(&tag);
    let vals = st.engine(&tenant).await?.tag_values(scope, key.to_string()).await?;
    // One entry per value: a value seen with two types keeps the first.
    let mut by_value: BTreeMap<String, &'static str> = BTreeMap::new();
    for v in vals {
        by_value.entry(v.value).or_insert(v.ty.as_str());
    }
    let vals: Vec<Value> = by_value.into_iter().map(|(v, ty)| json!({"type": ty, "value": v})).collect();
    Ok(Json(json!({ "tagValues": vals })).into_response())
}
