//! `/api/v1/...`: Skein's own JSON API (API.md), snake_case, times as Unix
//! ns strings, IDs as hex. Parameters are parsed here into the engine's
//! input types; [`json`] renders the model.

pub mod json;
#[cfg(test)]
mod sort_tests;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use skein_storage::filter::{analyzer, parse_severity, tokenize, LogFilter, SpanFilter, StatusFilter};
use skein_storage::model::kind;
use skein_storage::rollup::BUCKET_NS;

use crate::engine::traceql::TraceQl;
use crate::engine::{RedQuery, TraceQuery, TraceSearch, Work};
use crate::error::{Error, Result};
use crate::params::{parse_trace_id, Limit, Params, TimeRange, TimeUnit};
use crate::{ApiState, Tenant};

/// Longest TraceQL query accepted.
pub const MAX_TRACEQL_LEN: usize = 4096;
/// Most buckets a histogram or RED series may have.
const MAX_BUCKETS: u64 = 10_000;
/// Range of a histogram or RED query without `start`: the last hour.
const DEFAULT_LOOKBACK_NS: u64 = 3600 * 1_000_000_000;

type ApiResult = Result<Response>;

// The parameters each endpoint accepts; any other is a 400 naming these
// (see `Params::only`).
const SEARCH_TRACES_PARAMS: &[&str] = &[
    "service",
    "operation",
    "attr",
    "min_duration",
    "max_duration",
    "status",
    "q",
    "start",
    "end",
    "limit",
    "sort",
];
const SEARCH_LOGS_PARAMS: &[&str] = &["q", "service", "severity", "trace_id", "start", "end", "limit"];
const LOG_HISTOGRAM_PARAMS: &[&str] = &["q", "service", "severity", "trace_id", "start", "end", "step"];
const DEPENDENCIES_PARAMS: &[&str] = &["start", "end"];
const RED_PARAMS: &[&str] = &["service", "operation", "start", "end", "step"];

/// 400 if an endpoint that takes no parameters was given one.
fn no_params(q: Option<&str>) -> Result<()> {
    Params::parse(q).only(&[])
}

/// `limit` as applied, added to a search answer: `limit` (the number of
/// results asked for at most) and `limit_capped` (whether the request
/// asked for more than `query.max_limit`, which then applies).
fn with_limit(mut v: Value, l: Limit) -> Value {
    v["limit"] = json!(l.value);
    v["limit_capped"] = json!(l.capped);
    v
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/traces/{trace_id}", get(get_trace))
        .route("/api/v1/search/traces", get(search_traces))
        .route("/api/v1/search/logs", get(search_logs))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{service}/operations", get(operations))
        .route("/api/v1/dependencies", get(dependencies))
        .route("/api/v1/metrics/red", get(red))
        .route("/api/v1/logs/histogram", get(log_histogram))
        .route("/api/v1/flush", post(flush))
        .route("/api/v1/status", get(status))
        .route("/api/v1/openapi.json", get(openapi))
}

async fn openapi(RawQuery(q): RawQuery) -> ApiResult {
    no_params(q.as_deref())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json")).into_response())
}

/// Refuses a state-changing request a browser sends for another site (a
/// cross-site request forgery): one whose `Sec-Fetch-Site` is `cross-site`
/// or `same-site`, whose `Origin` is not this host, or whose body type is
/// one an HTML form can send (`application/x-www-form-urlencoded`,
/// `multipart/form-data`, `text/plain`). Scripts and `curl` send none of
/// these, so they are unaffected. Rules from the OWASP CSRF Prevention
/// Cheat Sheet ("Fetch Metadata headers", "Verifying origin with standard
/// headers") and the Fetch standard's CORS-safelisted request headers.
fn refuse_cross_site(headers: &HeaderMap) -> Result<()> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(site) = get("sec-fetch-site") {
        if matches!(site, "cross-site" | "same-site") {
            return Err(Error::Forbidden(format!("refused: a {site} request may not change state")));
        }
    }
    if let (Some(origin), Some(host)) = (get("origin"), get("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |x| x.1);
        if origin == "null" || !origin_host.eq_ignore_ascii_case(host) {
            return Err(Error::Forbidden(format!("refused: Origin {origin} is not this host ({host})")));
        }
    }
    if let Some(ct) = get("content-type") {
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(mime.as_str(), "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain")
        {
            return Err(Error::Forbidden(format!(
                "refused: Content-Type {mime} is what an HTML form sends; send no body or application/json"
            )));
        }
    }
    Ok(())
}

async fn flush(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    refuse_cross_site(&headers)?;
    no_params(q.as_deref())?;
    // Not bounded by the query timeout: a flush is not abandoned halfway,
    // and the caller wants to know when the data is in segments.
    let storage = st.storage(&tenant).await?;
    let stats = tokio::task::spawn_blocking(move || storage.flush(true))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Json(json!({"traces": stats.traces, "spans": stats.spans, "logs": stats.logs})).into_response())
}

async fn get_trace(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let tid = parse_trace_id(&id)?;
    no_params(q.as_deref())?;
    match st.engine(&tenant).await?.trace(tid).await? {
        None => Err(Error::not_found(format!("trace {} not found", tid.to_hex()))),
        Some(t) => Ok(Json(with_warnings(
            json!({
                "trace_id": tid.to_hex(),
                "spans": t.spans.iter().map(json::span).collect::<Vec<_>>(),
                "logs": t.logs.iter().map(json::log).collect::<Vec<_>>(),
            }),
            &t.warnings,
        ))
        .into_response()),
    }
}

/// A TraceQL query from `q`, bounded in length; `None` without `q`.
pub(crate) fn traceql(p: &Params) -> Result<Option<TraceQl>> {
    match p.get("q") {
        None => Ok(None),
        Some(q) if q.len() > MAX_TRACEQL_LEN => {
            Err(Error::bad(format!("q is longer than {MAX_TRACEQL_LEN} bytes")))
        }
        Some(q) => TraceQl::parse(q).map(Some).map_err(|e| Error::bad(e.to_string())),
    }
}

/// `status=error|ok`.
pub(crate) fn status_filter(s: &str) -> Result<StatusFilter> {
    if s.eq_ignore_ascii_case("error") {
        Ok(StatusFilter::Error)
    } else if s.eq_ignore_ascii_case("ok") {
        Ok(StatusFilter::Ok)
    } else {
        Err(Error::bad(format!("status {s:?} must be error or ok")))
    }
}

/// The span filter of trace search, from `service`, `operation`, `attr`,
/// `min_duration`, `max_duration`, `status`, `start`, `end`; the range at
/// most `max_range` long.
fn span_filter(p: &Params, max_range: std::time::Duration) -> Result<SpanFilter> {
    let mut attrs = Vec::new();
    for a in p.all("attr") {
        let (k, v) = a.split_once('=').ok_or_else(|| Error::bad(format!("attr {a:?} must be key=value")))?;
        if k.is_empty() {
            return Err(Error::bad(format!("attr {a:?} has an empty key")));
        }
        attrs.push((k.to_string(), v.to_string()));
    }
    let range = p.range("start", "end", TimeUnit::NanosOrRfc3339)?;
    range.within(max_range, "start", "end")?;
    let f = SpanFilter {
        service: p.get("service").map(String::from),
        operation: p.get("operation").map(String::from),
        attrs,
        min_duration_ns: p.duration("min_duration")?,
        max_duration_ns: p.duration("max_duration")?,
        status: p.get("status").map(status_filter).transpose()?,
        start_ns: range.start_ns,
        end_ns: range.end_ns,
    };
    if let (Some(a), Some(b)) = (f.min_duration_ns, f.max_duration_ns) {
        if a > b {
            return Err(Error::bad("min_duration is larger than max_duration"));
        }
    }
    Ok(f)
}

/// The native answer of a trace search: `{"traces": [TraceSummary],
/// "metrics": {...}}`, with `warnings` when partial.
pub(crate) fn search_json(r: &TraceSearch) -> Value {
    let mut metrics = work_json(&r.work);
    metrics["inspected_traces"] = json!(r.work.read.traces);
    metrics["inspected_spans"] = json!(r.work.read.spans);
    with_warnings(
        json!({
            "traces": r.traces.iter().map(|t| json::summary(&t.summary)).collect::<Vec<_>>(),
            "metrics": metrics,
        }),
        &r.warnings,
    )
}

/// The `metrics` object of a search answer, the work it did as counted
/// while doing it (after Tempo's `SearchMetrics`, in snake_case): segments
/// read and the Parquet bytes of their rows read, the segments the range
/// covers and their bytes, and the time from taking a slot to the answer
/// (`elapsed_ns`). Trace search adds traces and spans read, log search
/// log records read.
pub(crate) fn work_json(w: &Work) -> Value {
    json!({
        "inspected_segments": w.read.segments,
        "inspected_bytes": w.read.bytes,
        "total_segments": w.total_segments,
        "total_segment_bytes": w.total_segment_bytes,
        "elapsed_ns": u64::try_from(w.elapsed.as_nanos()).unwrap_or(u64::MAX),
    })
}

/// `v` with `"warnings": [...]` added when the answer is partial (a
/// quarantined segment may hold data it lacks); a whole answer has no
/// `warnings` field.
pub(crate) fn with_warnings(mut v: Value, warnings: &[String]) -> Value {
    if !warnings.is_empty() {
        v["warnings"] = json!(warnings);
    }
    v
}

/// `GET /api/v1/status`: readiness, the live segments, and the segments in
/// quarantine (damaged, out of service: see `docs/operations.md`), of the
/// request's tenant.
async fn status(State(st): State<ApiState>, Tenant(tenant): Tenant, RawQuery(q): RawQuery) -> ApiResult {
    no_params(q.as_deref())?;
    let storage = st.storage(&tenant).await?;
    let quarantined: Vec<Value> = storage
        .quarantined()
        .into_iter()
        .map(|q| {
            json!({
                "id": q.id,
                "reason": q.reason,
                "time_unix_nano": q.time_unix_nano.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({
        "ready": storage.is_ready(),
        "segments": storage.snapshot().segments.len(),
        "quarantined_segments": quarantined,
    }))
    .into_response())
}

async fn search_traces(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref());
    p.only(SEARCH_TRACES_PARAMS)?;
    let limit = p.capped_limit(st.cfg.default_limit, st.cfg.max_limit)?;
    let q = TraceQuery {
        filter: span_filter(&p, st.cfg.max_range)?,
        limit: limit.value,
        traceql: traceql(&p)?,
        sort: p.get("sort").map(str::parse).transpose()?.unwrap_or_default(),
        ..Default::default()
    };
    let r = st.engine(&tenant).await?.search_traces(q).await?;
    Ok(Json(with_limit(search_json(&r), limit)).into_response())
}

/// The log filter of `q`, `service`, `severity`, `trace_id`, `start`,
/// `end`; the range at most `max_range` long.
pub(crate) fn log_filter(p: &Params, max_range: std::time::Duration) -> Result<LogFilter> {
    let mut words = Vec::new();
    if let Some(q) = p.get("q") {
        tokenize(&mut analyzer(), q, &mut words);
        if words.is_empty() {
            return Err(Error::bad(format!("q {q:?} has no searchable words")));
        }
    }
    let min_severity = p
        .get("severity")
        .map(|s| {
            parse_severity(s).ok_or_else(|| {
                Error::bad(format!("severity {s:?}: use TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 1-24"))
            })
        })
        .transpose()?;
    let range = p.range("start", "end", TimeUnit::NanosOrRfc3339)?;
    range.within(max_range, "start", "end")?;
    Ok(LogFilter {
        words,
        service: p.get("service").map(String::from),
        min_severity,
        trace_id: p.trace_id("trace_id")?,
        start_ns: range.start_ns,
        end_ns: range.end_ns,
    })
}

async fn search_logs(State(st): State<ApiState>, Tenant(tenant): Tenant, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    p.only(SEARCH_LOGS_PARAMS)?;
    let f = log_filter(&p, st.cfg.max_range)?;
    let limit = p.capped_limit(100.min(st.cfg.max_limit), st.cfg.max_limit)?;
    let r = st.engine(&tenant).await?.search_logs(f, limit.value).await?;
    let mut metrics = work_json(&r.work);
    metrics["inspected_logs"] = json!(r.work.read.logs);
    let v = with_warnings(
        json!({ "logs": r.logs.iter().map(json::log).collect::<Vec<_>>(), "metrics": metrics }),
        &r.warnings,
    );
    Ok(Json(with_limit(v, limit)).into_response())
}

/// `start`/`end` defaulting to the last hour, and `step`: a duration,
/// defaulting to range/60, never finer than the one-minute rollup buckets,
/// giving at most [`MAX_BUCKETS`] buckets.
fn bucketed(p: &Params) -> Result<(u64, u64, u64)> {
    let (start, end) = p.range("start", "end", TimeUnit::NanosOrRfc3339)?.or_last(DEFAULT_LOOKBACK_NS);
    if start > end {
        return Err(Error::bad("start is after end"));
    }
    let step = match p.duration("step")? {
        Some(s) => s,
        None => (end.saturating_sub(start) / 60).max(1),
    };
    if step == 0 {
        return Err(Error::bad("step must be positive"));
    }
    let step = step.div_ceil(BUCKET_NS).max(1) * BUCKET_NS;
    if (end - start) / step > MAX_BUCKETS {
        return Err(Error::bad(format!(
            "range/step gives more than {MAX_BUCKETS} buckets; use a larger step"
        )));
    }
    Ok((start, end, step))
}

async fn log_histogram(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref());
    p.only(LOG_HISTOGRAM_PARAMS)?;
    let mut f = log_filter(&p, st.cfg.max_range)?;
    let (start, end, step) = bucketed(&p)?;
    f.start_ns = Some(start);
    f.end_ns = Some(end);
    let (counts, warnings) = st.engine(&tenant).await?.log_histogram(f, step).await?;
    let first = start - start % step;
    let n = (end - first) / step + 1;
    let buckets: Vec<Value> = (0..n)
        .map(|i| {
            let t = first + i * step;
            json!({"time_unix_nano": t.to_string(), "count": counts.get(&t).copied().unwrap_or(0)})
        })
        .collect();
    Ok(Json(with_warnings(json!({"step_ns": step, "buckets": buckets}), &warnings)).into_response())
}

async fn services(State(st): State<ApiState>, Tenant(tenant): Tenant, RawQuery(q): RawQuery) -> ApiResult {
    no_params(q.as_deref())?;
    let services: Vec<Value> = st
        .engine(&tenant)
        .await?
        .services()
        .await?
        .into_iter()
        .map(|s| json!({"name": s.name, "span_count": s.span_count, "error_count": s.error_count}))
        .collect();
    let warnings = st.damage(&tenant, None, None);
    Ok(Json(with_warnings(json!({ "services": services }), &warnings)).into_response())
}

async fn operations(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    no_params(q.as_deref())?;
    let ops = st.engine(&tenant).await?.operations(Some(service.clone())).await?;
    if ops.is_empty() {
        return Err(Error::not_found(format!("service {service:?} not found")));
    }
    let operations: Vec<Value> = ops
        .into_iter()
        .map(|o| json!({"name": o.name, "span_kind": kind::name(o.kind), "span_count": o.span_count}))
        .collect();
    let warnings = st.damage(&tenant, None, None);
    Ok(Json(with_warnings(json!({ "operations": operations }), &warnings)).into_response())
}

async fn dependencies(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref());
    p.only(DEPENDENCIES_PARAMS)?;
    let range = p.range("start", "end", TimeUnit::NanosOrRfc3339)?;
    range.within(st.cfg.max_range, "start", "end")?;
    let TimeRange { start_ns, end_ns } = range;
    let edges: Vec<Value> = st
        .engine(&tenant)
        .await?
        .dependencies(start_ns, end_ns)
        .await?
        .into_iter()
        .map(|e| {
            let mut v = json!({
                "parent": e.parent,
                "child": e.child,
                "call_count": e.call_count,
                "error_count": e.error_count,
                "p50_ns": e.p50_ns,
                "p95_ns": e.p95_ns,
                "p99_ns": e.p99_ns,
            });
            if let Some(ct) = e.connection_type.label() {
                v["connection_type"] = json!(ct);
            }
            v
        })
        .collect();
    let warnings = st.damage(&tenant, start_ns, end_ns);
    Ok(Json(with_warnings(json!({ "edges": edges }), &warnings)).into_response())
}

/// Rate, errors and latency percentiles of entry spans per step, from the
/// rollups (see [`RedQuery`]).
async fn red(State(st): State<ApiState>, Tenant(tenant): Tenant, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    p.only(RED_PARAMS)?;
    p.range("start", "end", TimeUnit::NanosOrRfc3339)?.within(st.cfg.max_range, "start", "end")?;
    let (start_ns, end_ns, step_ns) = bucketed(&p)?;
    let q = RedQuery {
        start_ns,
        end_ns,
        step_ns,
        service: p.get("service").map(String::from),
        operation: p.get("operation").map(String::from),
    };
    let series: Vec<Value> = st
        .engine(&tenant)
        .await?
        .red(q)
        .await?
        .into_iter()
        .map(|s| {
            let points: Vec<Value> = s
                .points
                .iter()
                .map(|pt| {
                    json!({
                        "time_unix_nano": pt.time_unix_nano.to_string(),
                        "request_count": pt.request_count,
                        "error_count": pt.error_count,
                        "p50_ns": pt.p50_ns,
                        "p95_ns": pt.p95_ns,
                        "p99_ns": pt.p99_ns,
                    })
                })
                .collect();
            json!({"service": s.service, "operation": s.operation, "points": points})
        })
        .collect();
    // Percentiles come from sketches (within 1%): say so, so no one reads
    // them as exact.
    let warnings = st.damage(&tenant, Some(start_ns), Some(end_ns));
    let v = json!({"step_ns": step_ns, "percentiles_approximate": true, "series": series});
    Ok(Json(with_warnings(v, &warnings)).into_response())
}
