//! Skein's HTTP API: the native JSON API, health, readiness and metrics.
//!
//! Every handler parses its parameters strictly (a bad value is a 400 that
//! says which parameter and why), runs the read on the blocking pool with a
//! timeout, and answers JSON in snake_case as `API.md` fixes it.

mod jaeger;
mod params;
mod summary;
mod tempo;
pub mod traceql;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{json, Value};
use skein_storage::filter::{analyzer, parse_severity, tokenize, LogFilter, SpanFilter, StatusFilter};
use skein_storage::model::{kind, TraceId};
use skein_storage::rollup::{quantile, BUCKET_NS};
use skein_storage::Storage;

pub use params::{parse_duration_ns, parse_time, Params};
pub use summary::{summarize, TraceSummary};

/// Query settings (`[query]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Results returned when a request gives no `limit`.
    pub default_limit: usize,
    /// The largest `limit` honoured; bigger requests are capped.
    pub max_limit: usize,
    /// A query still running after this is abandoned with 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Traces a TraceQL search evaluates at most (newest first among those
    /// the index selects); bounds the cost of a broad query.
    pub max_traceql_candidates: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            default_limit: 20,
            max_limit: 1000,
            timeout: Duration::from_secs(30),
            max_traceql_candidates: 5000,
        }
    }
}

/// Shared state of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub storage: Arc<Storage>,
    pub registry: Arc<Registry>,
    pub cfg: QueryConfig,
}

/// An API error: the status and a message for `{error}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn bad(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: m.into() }
    }
    fn not_found(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: m.into() }
    }
    fn unavailable(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: m.into() }
    }
}

impl From<skein_storage::Error> for ApiError {
    fn from(e: skein_storage::Error) -> Self {
        tracing::error!(error = %e, "query failed");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Runs a blocking read on the blocking pool, bounded by the query timeout.
async fn blocking<T: Send + 'static>(
    st: &ApiState,
    f: impl FnOnce(&Storage) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let storage = st.storage.clone();
    let task = tokio::task::spawn_blocking(move || f(&storage));
    match tokio::time::timeout(st.cfg.timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }),
        Err(_) => Err(ApiError::unavailable(format!(
            "query did not finish within {:?}; narrow the time range or add conditions",
            st.cfg.timeout
        ))),
    }
}

/// The native API plus `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: ApiState) -> Router {
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
        .route("/api/v1/openapi.json", get(openapi))
        .merge(jaeger::routes())
        .merge(tempo::routes())
        .route("/api/{*rest}", get(api_not_found).post(api_not_found))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API endpoint; see /api/v1/openapi.json")
}

async fn readyz(State(st): State<ApiState>) -> Response {
    if st.storage.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replaying WAL\n").into_response()
    }
}

async fn metrics(State(st): State<ApiState>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &st.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

async fn flush(State(st): State<ApiState>) -> ApiResult {
    // Not bounded by the query timeout: a flush is not abandoned halfway,
    // and the caller wants to know when the data is in segments.
    let storage = st.storage.clone();
    let stats = tokio::task::spawn_blocking(move || storage.flush(true))
        .await
        .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() })??;
    Ok(Json(json!({"traces": stats.traces, "spans": stats.spans, "logs": stats.logs})).into_response())
}

fn parse_trace_id(s: &str) -> Result<TraceId, ApiError> {
    TraceId::parse_hex(s).ok_or_else(|| ApiError::bad(format!("trace_id {s:?} is not 1-32 hex digits")))
}

async fn get_trace(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let tid = parse_trace_id(&id)?;
    let found = blocking(&st, move |s| Ok(s.get_trace(&tid)?)).await?;
    match found {
        None => Err(ApiError::not_found(format!("trace {} not found", tid.to_hex()))),
        Some((spans, logs)) => Ok(Json(json!({
            "trace_id": tid.to_hex(),
            "spans": spans,
            "logs": logs,
        }))
        .into_response()),
    }
}

/// The span filter of trace search, from `service`, `operation`, `attr`,
/// `min_duration`, `max_duration`, `status`, `start`, `end`.
fn span_filter(p: &Params) -> Result<SpanFilter, ApiError> {
    let mut attrs = Vec::new();
    for a in p.all("attr") {
        let (k, v) =
            a.split_once('=').ok_or_else(|| ApiError::bad(format!("attr {a:?} must be key=value")))?;
        if k.is_empty() {
            return Err(ApiError::bad(format!("attr {a:?} has an empty key")));
        }
        attrs.push((k.to_string(), v.to_string()));
    }
    let status = match p.get("status") {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("error") => Some(StatusFilter::Error),
        Some(s) if s.eq_ignore_ascii_case("ok") => Some(StatusFilter::Ok),
        Some(s) => return Err(ApiError::bad(format!("status {s:?} must be error or ok"))),
    };
    let f = SpanFilter {
        service: p.get("service").map(String::from),
        operation: p.get("operation").map(String::from),
        attrs,
        min_duration_ns: p.duration("min_duration")?,
        max_duration_ns: p.duration("max_duration")?,
        status,
        start_ns: p.time("start")?,
        end_ns: p.time("end")?,
    };
    if let (Some(a), Some(b)) = (f.start_ns, f.end_ns) {
        if a > b {
            return Err(ApiError::bad("start is after end"));
        }
    }
    if let (Some(a), Some(b)) = (f.min_duration_ns, f.max_duration_ns) {
        if a > b {
            return Err(ApiError::bad("min_duration is larger than max_duration"));
        }
    }
    Ok(f)
}

/// Longest TraceQL query accepted.
const MAX_TRACEQL_LEN: usize = 4096;

async fn search_traces(State(st): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let f = span_filter(&p)?;
    let limit = p.limit(st.cfg.default_limit, st.cfg.max_limit)?;
    let traceql = match p.get("q") {
        None => None,
        Some(q) if q.len() > MAX_TRACEQL_LEN => {
            return Err(ApiError::bad(format!("q is longer than {MAX_TRACEQL_LEN} bytes")));
        }
        Some(q) => Some(traceql::TraceQl::parse(q).map_err(|e| ApiError::bad(e.to_string()))?),
    };
    let max_candidates = st.cfg.max_traceql_candidates;
    let traces = blocking(&st, move |s| {
        let Some(tq) = traceql else {
            let ids = s.search_traces(&f, limit)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(spans) = s.get_trace_spans(&id)? {
                    out.push(summarize(id, &spans));
                }
            }
            return Ok(out);
        };
        // TraceQL: the index narrows the candidates with the conditions
        // every match must meet (the query's own, and the span parameters
        // if given), then each candidate trace is evaluated whole, newest
        // first, until `limit` match or the candidate budget is spent.
        let span_params_given = f.service.is_some()
            || f.operation.is_some()
            || !f.attrs.is_empty()
            || f.min_duration_ns.is_some()
            || f.max_duration_ns.is_some()
            || f.status.is_some();
        let mut cand = if span_params_given { f.clone() } else { tq.candidate_filter() };
        cand.start_ns = f.start_ns;
        cand.end_ns = f.end_ns;
        let mut out = Vec::new();
        for id in s.search_traces(&cand, max_candidates)? {
            if out.len() >= limit {
                break;
            }
            if let Some(spans) = s.get_trace_spans(&id)? {
                let in_range = spans.iter().any(|sp| f.matches(sp));
                if in_range && !tq.matching_spans(&spans).is_empty() {
                    out.push(summarize(id, &spans));
                }
            }
        }
        Ok(out)
    })
    .await?;
    let mut traces = traces;
    traces.sort_by_key(|t| std::cmp::Reverse(t.start_time_unix_nano));
    Ok(Json(json!({ "traces": traces })).into_response())
}

fn log_filter(p: &Params) -> Result<LogFilter, ApiError> {
    let mut words = Vec::new();
    if let Some(q) = p.get("q") {
        tokenize(&mut analyzer(), q, &mut words);
        if words.is_empty() {
            return Err(ApiError::bad(format!("q {q:?} has no searchable words")));
        }
    }
    let min_severity = p
        .get("severity")
        .map(|s| {
            parse_severity(s).ok_or_else(|| {
                ApiError::bad(format!("severity {s:?}: use TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 1-24"))
            })
        })
        .transpose()?;
    let f = LogFilter {
        words,
        service: p.get("service").map(String::from),
        min_severity,
        trace_id: p.get("trace_id").map(parse_trace_id).transpose()?,
        start_ns: p.time("start")?,
        end_ns: p.time("end")?,
    };
    if let (Some(a), Some(b)) = (f.start_ns, f.end_ns) {
        if a > b {
            return Err(ApiError::bad("start is after end"));
        }
    }
    Ok(f)
}

async fn search_logs(State(st): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let f = log_filter(&p)?;
    let limit = p.limit(100.min(st.cfg.max_limit), st.cfg.max_limit)?;
    let logs = blocking(&st, move |s| Ok(s.search_logs(&f, limit)?)).await?;
    Ok(Json(json!({ "logs": logs })).into_response())
}

/// `step` for bucketed series: a duration, defaulting to range/60, never
/// finer than the one-minute rollup buckets.
fn step_ns(p: &Params, start: u64, end: u64) -> Result<u64, ApiError> {
    let step = match p.duration("step")? {
        Some(s) => s,
        None => (end.saturating_sub(start) / 60).max(1),
    };
    if step == 0 {
        return Err(ApiError::bad("step must be positive"));
    }
    Ok(step.div_ceil(BUCKET_NS).max(1) * BUCKET_NS)
}

fn default_range(p: &Params) -> Result<(u64, u64), ApiError> {
    let end = p.time("end")?.unwrap_or_else(skein_storage::now_unix_nano);
    let start = p.time("start")?.unwrap_or(end.saturating_sub(3600 * 1_000_000_000));
    if start > end {
        return Err(ApiError::bad("start is after end"));
    }
    Ok((start, end))
}

async fn log_histogram(State(st): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let mut f = log_filter(&p)?;
    let (start, end) = default_range(&p)?;
    f.start_ns = Some(start);
    f.end_ns = Some(end);
    let step = step_ns(&p, start, end)?;
    let max_buckets = 10_000u64;
    if (end - start) / step > max_buckets {
        return Err(ApiError::bad(format!(
            "range/step gives more than {max_buckets} buckets; use a larger step"
        )));
    }
    let counts = blocking(&st, move |s| Ok(s.log_histogram(&f, start, step)?)).await?;
    let first = start - start % step;
    let n = (end - first) / step + 1;
    let buckets: Vec<Value> = (0..n)
        .map(|i| {
            let t = first + i * step;
            json!({"time_unix_nano": t.to_string(), "count": counts.get(&t).copied().unwrap_or(0)})
        })
        .collect();
    Ok(Json(json!({"step_ns": step, "buckets": buckets})).into_response())
}

async fn services(State(st): State<ApiState>) -> ApiResult {
    let list = blocking(&st, |s| {
        let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let snap = s.snapshot();
        for seg in &snap.segments {
            for svc in &seg.meta.services {
                let e = m.entry(svc.name.clone()).or_default();
                e.0 += svc.span_count;
                e.1 += svc.error_count;
            }
        }
        s.for_each_memory_span(|sp| {
            let e = m.entry(sp.service_name().to_string()).or_default();
            e.0 += 1;
            e.1 += u64::from(sp.is_error());
        });
        Ok(m)
    })
    .await?;
    let services: Vec<Value> = list
        .into_iter()
        .map(|(name, (span_count, error_count))| json!({"name": name, "span_count": span_count, "error_count": error_count}))
        .collect();
    Ok(Json(json!({ "services": services })).into_response())
}

async fn operations(State(st): State<ApiState>, Path(service): Path<String>) -> ApiResult {
    let svc = service.clone();
    let ops = blocking(&st, move |s| {
        let mut m: BTreeMap<(String, u8), u64> = BTreeMap::new();
        let snap = s.snapshot();
        for seg in &snap.segments {
            for op in seg.meta.operations.iter().filter(|o| o.service == svc) {
                *m.entry((op.name.clone(), op.kind)).or_default() += op.span_count;
            }
        }
        s.for_each_memory_span(|sp| {
            if sp.service_name() == svc {
                *m.entry((sp.name.clone(), sp.kind)).or_default() += 1;
            }
        });
        Ok(m)
    })
    .await?;
    if ops.is_empty() {
        return Err(ApiError::not_found(format!("service {service:?} not found")));
    }
    let operations: Vec<Value> = ops
        .into_iter()
        .map(|((name, k), n)| json!({"name": name, "span_kind": kind::name(k), "span_count": n}))
        .collect();
    Ok(Json(json!({ "operations": operations })).into_response())
}

async fn dependencies(State(st): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let start = p.time("start")?;
    let end = p.time("end")?;
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(ApiError::bad("start is after end"));
        }
    }
    let edges = blocking(&st, move |s| {
        let mut m: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let (lo, hi) = (start.map(|t| t / BUCKET_NS), end.map(|t| t / BUCKET_NS));
        for r in s.rollups(start, end) {
            for e in r.edges {
                if lo.is_some_and(|l| e.minute < l) || hi.is_some_and(|h| e.minute > h) {
                    continue;
                }
                let v = m.entry((e.parent, e.child)).or_default();
                v.0 += e.calls;
                v.1 += e.errors;
            }
        }
        Ok(m)
    })
    .await?;
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|((parent, child), (c, e))| json!({"parent": parent, "child": child, "call_count": c, "error_count": e}))
        .collect();
    Ok(Json(json!({ "edges": edges })).into_response())
}

/// Rate, errors and latency percentiles per step, from the rollups.
async fn red(State(st): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let (start, end) = default_range(&p)?;
    let step = step_ns(&p, start, end)?;
    if (end - start) / step > 10_000 {
        return Err(ApiError::bad("range/step gives more than 10000 points; use a larger step"));
    }
    let service = p.get("service").map(String::from);
    let operation = p.get("operation").map(String::from);
    type Acc = (u64, u64, HashMap<u16, u64>);
    let series = blocking(&st, move |s| {
        // (service, operation or None) -> bucket start -> accumulators
        let mut m: BTreeMap<(String, Option<String>), BTreeMap<u64, Acc>> = BTreeMap::new();
        let (lo, hi) = (start / BUCKET_NS, end / BUCKET_NS);
        for r in s.rollups(Some(start), Some(end)) {
            for b in r.red {
                if b.minute < lo || b.minute > hi {
                    continue;
                }
                if service.as_ref().is_some_and(|x| *x != b.service)
                    || operation.as_ref().is_some_and(|x| *x != b.operation)
                {
                    continue;
                }
                let t = b.minute * BUCKET_NS;
                let t = t - t % step;
                let mut keys = vec![(b.service.clone(), None)];
                if service.is_some() {
                    keys.push((b.service.clone(), Some(b.operation.clone())));
                }
                for k in keys {
                    let acc = m.entry(k).or_default().entry(t).or_default();
                    acc.0 += b.count;
                    acc.1 += b.errors;
                    for (i, c) in &b.hist {
                        *acc.2.entry(*i).or_default() += u64::from(*c);
                    }
                }
            }
        }
        Ok(m)
    })
    .await?;
    let series: Vec<Value> = series
        .into_iter()
        .map(|((svc, op), points)| {
            let points: Vec<Value> = points
                .into_iter()
                .map(|(t, (count, errors, hist))| {
                    json!({
                        "time_unix_nano": t.to_string(),
                        "request_count": count,
                        "error_count": errors,
                        "p50_ns": quantile(&hist, 0.50),
                        "p95_ns": quantile(&hist, 0.95),
                        "p99_ns": quantile(&hist, 0.99),
                    })
                })
                .collect();
            json!({"service": svc, "operation": op, "points": points})
        })
        .collect();
    Ok(Json(json!({"step_ns": step, "series": series})).into_response())
}
