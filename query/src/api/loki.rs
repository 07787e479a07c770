//! The Loki read API, as much as Grafana's Loki data source uses to show
//! logs: `/loki/api/v1/labels`, `/loki/api/v1/label/{name}/values`,
//! `/loki/api/v1/series`, `/loki/api/v1/query_range` and
//! `/loki/api/v1/query`, with LogQL log
//! queries ([`crate::engine::logql`]), answered in Loki's JSON (Loki's
//! HTTP API documentation, "Query logs within a range of time"). Errors
//! are plain text with the status, as Loki answers them (and as Grafana
//! shows them).
//!
//! Every endpoint takes `GET`, or `POST` with a form body. Times (`start`,
//! `end`, `time`) are Unix seconds (at most 10 digits), Unix nanoseconds,
//! Unix seconds with a fraction (`1700000000.5`) or RFC 3339, as Loki
//! takes them; `end`
//! defaults to now and `start` to `since` (default 1h) before `end`.
//! `step` and `interval` are accepted and ignored (they only shape metric
//! queries, which are refused). An instant query (`/query`) of a log
//! query answers the range of `since` before `time`.
//!
//! With the header `X-Loki-Response-Encoding-Flags: categorize-labels`
//! (Grafana sends it), each stream is keyed by its stream labels only and
//! each value carries `{structuredMetadata, parsed}` as a third element;
//! without it, as Loki does, a stream's labels are all three kinds merged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::engine::logql::{Direction, Entry, LogQuery, LogqlResult};
use crate::error::{Error, RETRY_AFTER_SECS};
use crate::params::{parse_duration_ns, parse_time, Params, TimeRange};
use crate::{ApiState, Tenant};

/// The lookback when a request gives no `start` (Loki's `since` default).
const DEFAULT_SINCE_NS: u64 = 3_600 * 1_000_000_000;
/// Entries answered when a request gives no `limit` (Loki's default).
const DEFAULT_LIMIT: usize = 100;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route("/loki/api/v1/label", get(labels).post(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values).post(label_values))
        .route("/loki/api/v1/query_range", get(query_range).post(query_range))
        .route("/loki/api/v1/query", get(query).post(query))
        .route("/loki/api/v1/series", get(series).post(series))
}

/// The largest form body a `POST` query takes (Loki reads the same
/// parameters from an `application/x-www-form-urlencoded` body as from the
/// query string; Grafana posts long queries that way).
const MAX_FORM_BYTES: usize = 1 << 20;

/// A request's parameters: the query string, then, for a `POST` with an
/// `application/x-www-form-urlencoded` body, the body's (a key in both
/// takes the body's value, as [`Params::get`] reads the last one). Another
/// body type, or a body over [`MAX_FORM_BYTES`], is a 400.
struct LokiParams(Params);

impl<S: Send + Sync> FromRequest<S> for LokiParams {
    type Rejection = LokiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut raw = req.uri().query().unwrap_or_default().to_owned();
        if req.method() == Method::POST {
            let form = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
            let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
                .await
                .map_err(|_| Error::bad(format!("the form body is over {MAX_FORM_BYTES} bytes")))?;
            if !body.is_empty() {
                if form != Some(true) {
                    return Err(Error::bad("a POST body must be application/x-www-form-urlencoded").into());
                }
                let body =
                    std::str::from_utf8(&body).map_err(|_| Error::bad("the form body is not UTF-8"))?;
                if !raw.is_empty() {
                    raw.push('&');
                }
                raw.push_str(body);
            }
        }
        let _ = state;
        Ok(LokiParams(Params::parse(Some(&raw))))
    }
}

/// An error as Loki answers it: plain text, the status of [`Error`], and
/// `Retry-After` when retryable.
#[derive(Debug)]
struct LokiError(Error);

impl From<Error> for LokiError {
    fn from(e: Error) -> Self {
        LokiError(e)
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let mut r = (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.0.to_string())
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        r
    }
}

type LokiResult = std::result::Result<Response, LokiError>;

/// A time as Loki takes it (Loki's `parseTimestamp`): seconds with a
/// fraction (`1700000000.5`), whole Unix seconds when the integer has at
/// most 10 digits, Unix ns when longer, or RFC 3339.
fn loki_time(p: &Params, key: &str) -> Result<Option<u64>, Error> {
    let Some(v) = p.get(key) else { return Ok(None) };
    let bad = || Error::bad(format!("{key}: {v:?} is not a time"));
    if let Some((secs, frac)) = v.split_once('.') {
        if !secs.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
        {
            let secs: u64 = secs.parse().map_err(|_| bad())?;
            // Digits past the ninth are below a nanosecond.
            let mut ns_digits: String = frac.chars().take(9).collect();
            while ns_digits.len() < 9 {
                ns_digits.push('0');
            }
            let ns: u64 = ns_digits.parse().map_err(|_| bad())?;
            return secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(ns)).map(Some).ok_or_else(bad);
        }
    }
    if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = v.parse().map_err(|_| bad())?;
        return Ok(Some(secs * 1_000_000_000));
    }
    parse_time(v).map(Some).map_err(|e| Error::bad(format!("{key}: {e}")))
}

/// `[start, end]` from `start`/`end`/`since` (or `time`/`since` for an
/// instant query), checked against `query.max_range`.
fn range(p: &Params, st: &ApiState, instant: bool) -> Result<(u64, u64), Error> {
    let since = match p.get("since") {
        Some(v) => parse_duration_ns(v).map_err(|e| Error::bad(format!("since: {e}")))?,
        None => DEFAULT_SINCE_NS,
    };
    let end_key = if instant { "time" } else { "end" };
    let end = loki_time(p, end_key)?.unwrap_or_else(skein_storage::now_unix_nano);
    let start = if instant { None } else { loki_time(p, "start")? }.unwrap_or(end.saturating_sub(since));
    if start > end {
        return Err(Error::bad(format!(
            "the query time range is invalid: start {start} is after {end_key} {end}"
        )));
    }
    TimeRange { start_ns: Some(start), end_ns: Some(end) }.within(st.cfg.max_range, "start", end_key)?;
    Ok((start, end))
}

fn parse_query(q: &str) -> Result<LogQuery, Error> {
    LogQuery::parse(q).map_err(|e| Error::bad(format!("parse error: {e}")))
}

/// `GET /loki/api/v1/labels` (and `/label`): stream label names seen in
/// the range, `{"status":"success","data":[...]}`.
async fn labels(State(st): State<ApiState>, Tenant(t): Tenant, LokiParams(p): LokiParams) -> LokiResult {
    let (start, end) = range(&p, &st, false)?;
    let sel = p.get("query").map(parse_query).transpose()?.map(Arc::new);
    let names = st.engine(&t).await?.loki_labels(start, end, None, sel).await?;
    Ok(Json(json!({"status": "success", "data": names})).into_response())
}

/// `GET /loki/api/v1/label/{name}/values`: the label's values in the
/// range, optionally among the streams of `query`'s selector.
async fn label_values(
    State(st): State<ApiState>,
    Tenant(t): Tenant,
    Path(name): Path<String>,
    LokiParams(p): LokiParams,
) -> LokiResult {
    let (start, end) = range(&p, &st, false)?;
    let sel = p.get("query").map(parse_query).transpose()?.map(Arc::new);
    let values = st.engine(&t).await?.loki_labels(start, end, Some(name), sel).await?;
    Ok(Json(json!({"status": "success", "data": values})).into_response())
}

/// `GET /loki/api/v1/series?match[]=SELECTOR&start=&end=`: the stream
/// label sets in the range (of the streams `match[]` selects, repeatable),
/// `{"status":"success","data":[{label: value}]}`; Grafana's label browser
/// asks it once a label is chosen.
async fn series(State(st): State<ApiState>, Tenant(t): Tenant, LokiParams(p): LokiParams) -> LokiResult {
    let (start, end) = range(&p, &st, false)?;
    let selectors = p
        .all("match[]")
        .chain(p.all("match"))
        .map(|m| parse_query(m).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let sets = st.engine(&t).await?.loki_series(start, end, selectors).await?;
    Ok(Json(json!({"status": "success", "data": sets.iter().map(obj).collect::<Vec<_>>()})).into_response())
}

async fn query_range(
    State(st): State<ApiState>,
    Tenant(t): Tenant,
    headers: HeaderMap,
    LokiParams(p): LokiParams,
) -> LokiResult {
    run(st, t, &headers, p, false).await
}

async fn query(
    State(st): State<ApiState>,
    Tenant(t): Tenant,
    headers: HeaderMap,
    LokiParams(p): LokiParams,
) -> LokiResult {
    run(st, t, &headers, p, true).await
}

async fn run(
    st: ApiState,
    tenant: skein_storage::tenant::TenantId,
    headers: &HeaderMap,
    p: Params,
    instant: bool,
) -> LokiResult {
    let text = p.get("query").ok_or_else(|| Error::bad("query: a LogQL query is required"))?;
    let lq = Arc::new(parse_query(text)?);
    let (start, end) = range(&p, &st, instant)?;
    let limit = match p.get("limit") {
        Some(v) => {
            v.parse::<usize>().map_err(|_| Error::bad(format!("limit: {v:?} is not a whole number")))?
        }
        None => DEFAULT_LIMIT,
    }
    .min(st.cfg.max_limit);
    let direction = match p.get("direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("backward") => Direction::Backward,
        Some("forward") => Direction::Forward,
        Some(o) => return Err(Error::bad(format!("direction: {o:?} is neither backward nor forward")).into()),
    };
    let categorize = headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "categorize-labels"));
    let r = st.engine(&tenant).await?.logql(lq, start, end, limit, direction).await?;
    Ok(Json(streams_json(&r, categorize)).into_response())
}

fn obj(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>())
}

/// The answer in Loki's shape: entries grouped into streams, each
/// stream's values in the query's direction, streams in the order of
/// their first entry.
pub(crate) fn streams_json(r: &LogqlResult, categorize: bool) -> Value {
    let mut order: Vec<BTreeMap<String, String>> = Vec::new();
    let mut values: BTreeMap<BTreeMap<String, String>, Vec<Value>> = BTreeMap::new();
    for Entry { time_ns, line, stream, metadata, parsed } in &r.entries {
        let (key, value) = if categorize {
            let mut v = vec![json!(time_ns.to_string()), json!(line)];
            if !metadata.is_empty() || !parsed.is_empty() {
                let mut extra = Map::new();
                if !metadata.is_empty() {
                    extra.insert("structuredMetadata".into(), obj(metadata));
                }
                if !parsed.is_empty() {
                    extra.insert("parsed".into(), obj(parsed));
                }
                v.push(Value::Object(extra));
            }
            (stream.clone(), Value::Array(v))
        } else {
            let mut all = stream.clone();
            all.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            all.extend(parsed.iter().map(|(k, v)| (k.clone(), v.clone())));
            (all, json!([time_ns.to_string(), line]))
        };
        let slot = values.entry(key.clone()).or_default();
        if slot.is_empty() {
            order.push(key);
        }
        slot.push(value);
    }
    let result: Vec<Value> = order
        .into_iter()
        .map(|k| {
            let v = values.remove(&k).unwrap_or_default();
            json!({"stream": obj(&k), "values": v})
        })
        .collect();
    let secs = r.work.elapsed.as_secs_f64();
    let mut data = json!({
        "resultType": "streams",
        "result": result,
        "stats": {"summary": {
            "totalEntriesReturned": r.entries.len(),
            "totalLinesProcessed": r.work.read.logs,
            "totalBytesProcessed": r.work.read.bytes,
            "execTime": secs,
        }},
    });
    if categorize {
        data["encodingFlags"] = json!(["categorize-labels"]);
    }
    let mut out = json!({"status": "success", "data": data});
    if !r.warnings.is_empty() {
        out["warnings"] = json!(r.warnings);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use skein_storage::model::{AttrValue, LogRecord, Resource, Scope, SpanId, TraceId};
    use tower::ServiceExt as _;

    use super::*;
    use crate::api::tests::app_with;
    use crate::engine::testutil::storage;
    use crate::QueryConfig;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    fn log(service: &str, t: u64, body: &str, trace: Option<&str>) -> LogRecord {
        LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: AttrValue::Str(body.into()),
            attributes: vec![("user".into(), AttrValue::Str("u1".into()))],
            trace_id: trace.map_or(TraceId::ZERO, |t| TraceId::parse_hex(t).unwrap()),
            span_id: trace.map(|_| SpanId([7; 8])),
            flags: 0,
            event_name: String::new(),
            resource: Arc::new(Resource {
                service_name: service.into(),
                attributes: vec![
                    ("service.name".into(), AttrValue::Str(service.into())),
                    ("deployment.environment".into(), AttrValue::Str("prod".into())),
                ],
            }),
            scope: Arc::new(Scope::default()),
        }
    }

    /// Five records a second apart from `base`: frontend's three (one of
    /// trace [`TRACE`], one JSON), cart's two.
    async fn fixture(s: &Arc<skein_storage::Storage>, base: u64) {
        let sec = 1_000_000_000;
        s.append_logs(vec![
            log("frontend", base, "GET /api/cart 200", Some(TRACE)),
            log("frontend", base + sec, r#"{"level":"error","msg":"cart down","status":503}"#, None),
            log("frontend", base + 2 * sec, "level=warn msg=\"slow\" took=1.5", None),
            log("cart", base + 3 * sec, "cart.Get ok", Some(TRACE)),
            log("cart", base + 4 * sec, "cart.Put failed", None),
        ])
        .await
        .unwrap();
    }

    async fn get(app: &Router, uri: &str, categorize: bool) -> (StatusCode, Value, String) {
        let mut req = Request::get(uri).header("X-Query-Tags", "Source=grafana");
        if categorize {
            req = req.header("X-Loki-Response-Encoding-Flags", "categorize-labels");
        }
        let r = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::OK {
            eprintln!("{uri}: {status} {text}");
        }
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null), text)
    }

    fn enc(q: &str) -> String {
        form_urlencoded::byte_serialize(q.as_bytes()).collect()
    }

    /// Loki takes its query parameters from a form body too (Grafana posts
    /// long queries): the same answer as the GET, the body's value winning
    /// over the query string's; another body type is refused.
    #[tokio::test]
    async fn post_form_bodies() {
        let (_d, s) = storage();
        let base = skein_storage::now_unix_nano() - 60_000_000_000;
        fixture(&s, base).await;
        let app = app_with(&s, QueryConfig::default());
        let (start, end) = (base - 1_000_000_000, base + 60_000_000_000);
        let form = format!("query={}&start={start}&end={end}&limit=10", enc(r#"{service_name="cart"}"#));
        let (st, got, _) = get(&app, &format!("/loki/api/v1/query_range?{form}"), false).await;
        assert_eq!(st, StatusCode::OK);
        for (uri, body) in [
            ("/loki/api/v1/query_range".to_owned(), form.clone()),
            (format!("/loki/api/v1/query_range?query={}", enc(r#"{service_name="frontend"}"#)), form.clone()),
        ] {
            let req = Request::post(uri.as_str())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            let r = app.clone().oneshot(req).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            let v: Value =
                serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(v["data"]["result"], got["data"]["result"], "{uri}");
        }
        let entries: usize = got["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["values"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(entries, 2, "{got}");
        let req = Request::post("/loki/api/v1/query_range")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"query":"{service_name=\"cart\"}"}"#))
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned();
        assert!(text.contains("x-www-form-urlencoded"), "{text}");
    }

    /// Times as Loki's `parseTimestamp` reads them: up to 10 digits are
    /// seconds, more are nanoseconds, a fraction is seconds, else RFC 3339.
    #[test]
    fn loki_times() {
        let t = |v: &str| loki_time(&Params::parse(Some(&format!("t={}", enc(v)))), "t");
        assert_eq!(t("1700000000").unwrap(), Some(1_700_000_000_000_000_000));
        assert_eq!(t("1700000000000000001").unwrap(), Some(1_700_000_000_000_000_001));
        assert_eq!(t("1700000000.5").unwrap(), Some(1_700_000_000_500_000_000));
        assert_eq!(t("1700000000.123456789123").unwrap(), Some(1_700_000_000_123_456_789));
        assert_eq!(t("2023-11-14T22:13:20Z").unwrap(), Some(1_700_000_000_000_000_000));
        for bad in ["soon", "1.2.3", "99999999999999999999.5", "-5"] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    /// The requests Grafana's Loki data source sends, with their exact
    /// query strings: the health check's and label browser's labels,
    /// label values, a logs panel's query_range (backward, limit 1000,
    /// step), and the trace-to-logs query the provisioning in
    /// deploy/grafana makes (`{service_name="frontend"} | trace_id="…"`).
    #[tokio::test]
    async fn grafana_shaped_requests() {
        let (_d, s) = storage();
        let base = skein_storage::now_unix_nano() - 60_000_000_000;
        fixture(&s, base).await;
        let app = app_with(&s, QueryConfig::default());
        let (start, end) = (base - 3_600_000_000_000, base + 60_000_000_000);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let (st, v, _) = get(&app, &format!("/loki/api/v1/labels?start={start}&end={end}"), false).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(v, json!({"status": "success", "data": ["deployment_environment", "service_name"]}));
            let (st, v, _) = get(&app, "/loki/api/v1/labels", false).await;
            assert_eq!((st, v["data"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)));

            let uri = format!("/loki/api/v1/label/service_name/values?start={start}&end={end}");
            let (_, v, _) = get(&app, &uri, false).await;
            assert_eq!(v, json!({"status": "success", "data": ["cart", "frontend"]}));
            let uri = format!(
                "/loki/api/v1/label/service_name/values?start={start}&end={end}&query={}",
                enc(r#"{service_name=~"front.*"}"#)
            );
            assert_eq!(get(&app, &uri, false).await.1["data"], json!(["frontend"]));

            // The label browser, once a label is chosen.
            let uri = format!(
                "/loki/api/v1/series?match%5B%5D={}&start={start}&end={end}",
                enc(r#"{service_name="cart"}"#)
            );
            assert_eq!(
                get(&app, &uri, false).await.1,
                json!({"status": "success", "data": [{"service_name": "cart", "deployment_environment": "prod"}]})
            );
            let (_, v, _) = get(&app, &format!("/loki/api/v1/series?start={start}&end={end}"), false).await;
            assert_eq!(v["data"].as_array().map(Vec::len), Some(2));

            // A logs panel.
            let uri = format!(
                "/loki/api/v1/query_range?direction=backward&end={end}&limit=1000&query={}&start={start}&step=2000ms",
                enc(r#"{service_name="frontend"}"#)
            );
            let (st, v, _) = get(&app, &uri, true).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            assert_eq!(v["status"], "success");
            assert_eq!(v["data"]["resultType"], "streams");
            assert_eq!(v["data"]["encodingFlags"], json!(["categorize-labels"]));
            let result = v["data"]["result"].as_array().unwrap();
            assert_eq!(result.len(), 1, "{v}");
            assert_eq!(
                result[0]["stream"],
                json!({"service_name": "frontend", "deployment_environment": "prod"})
            );
            let values = result[0]["values"].as_array().unwrap();
            assert_eq!(values.len(), 3);
            assert_eq!(values[0][0], json!((base + 2_000_000_000).to_string()), "newest first");
            assert_eq!(values[2][1], "GET /api/cart 200");
            assert_eq!(values[2][2]["structuredMetadata"]["trace_id"], TRACE);
            assert_eq!(values[2][2]["structuredMetadata"]["detected_level"], "info");

            // Trace to logs, exactly as the Tempo data source asks.
            let query = format!(r#"{{service_name="frontend"}} | trace_id="{TRACE}""#);
            let uri = format!(
                "/loki/api/v1/query_range?direction=backward&end={end}&limit=1000&query={}&start={start}&step=1s",
                enc(&query)
            );
            let (st, v, _) = get(&app, &uri, false).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let result = v["data"]["result"].as_array().unwrap();
            assert_eq!(result.len(), 1, "{v}");
            assert_eq!(result[0]["stream"]["trace_id"], TRACE);
            assert_eq!(result[0]["stream"]["span_id"], "0707070707070707");
            assert_eq!(result[0]["values"], json!([[base.to_string(), "GET /api/cart 200"]]));
        }
    }

    /// Line filters, parsers, limit and direction, instant queries, and
    /// Loki's plain-text 400s.
    #[tokio::test]
    async fn pipelines_limits_and_errors() {
        let (_d, s) = storage();
        let base = skein_storage::now_unix_nano() - 60_000_000_000;
        fixture(&s, base).await;
        let app = app_with(&s, QueryConfig::default());
        let lines = |v: &Value| -> Vec<String> {
            let mut out: Vec<(String, String)> = Vec::new();
            for st in v["data"]["result"].as_array().unwrap_or_else(|| panic!("{v}")) {
                for e in st["values"].as_array().unwrap() {
                    out.push((e[0].as_str().unwrap().into(), e[1].as_str().unwrap().into()));
                }
            }
            out.sort();
            out.into_iter().map(|x| x.1).collect()
        };
        let q = |query: &str, extra: &str| {
            format!("/loki/api/v1/query_range?query={}&start={}{extra}", enc(query), base - 1)
        };
        let (st, v, _) = get(&app, &q(r#"{service_name=~".+"} |= "cart" != "Put""#, ""), false).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            lines(&v),
            ["GET /api/cart 200", r#"{"level":"error","msg":"cart down","status":503}"#, "cart.Get ok"]
        );
        let (_, v, _) =
            get(&app, &q(r#"{service_name="frontend"} | json | level="error" and status >= 500"#, ""), false)
                .await;
        assert_eq!(lines(&v).len(), 1);
        assert_eq!(v["data"]["result"][0]["stream"]["msg"], "cart down");
        let (_, v, _) = get(&app, &q(r#"{service_name="frontend"} | logfmt | took > 1"#, ""), false).await;
        assert_eq!(lines(&v), ["level=warn msg=\"slow\" took=1.5"]);
        let (_, v, _) = get(&app, &q(r#"{service_name="cart"} |~ "cart\\.(Get|Put)""#, ""), false).await;
        assert_eq!(lines(&v).len(), 2);
        // limit from either end.
        let (_, v, _) = get(&app, &q(r#"{deployment_environment="prod"}"#, "&limit=2"), false).await;
        assert_eq!(lines(&v), ["cart.Get ok", "cart.Put failed"]);
        let (_, v, _) =
            get(&app, &q(r#"{deployment_environment="prod"}"#, "&limit=2&direction=FORWARD"), false).await;
        assert_eq!(lines(&v), ["GET /api/cart 200", r#"{"level":"error","msg":"cart down","status":503}"#]);
        // RFC 3339 and fractional seconds.
        let (st, v, _) = get(
            &app,
            &format!(
                "/loki/api/v1/query_range?query={}&start=2020-01-01T00:00:00Z&end={}.5",
                enc(r#"{service_name="cart"}"#),
                base / 1_000_000_000 + 10
            ),
            false,
        )
        .await;
        assert_eq!((st, lines(&v).len()), (StatusCode::OK, 2), "{v}");
        // An instant query looks back `since` from `time`.
        let (st, v, _) = get(
            &app,
            &format!("/loki/api/v1/query?query={}&limit=10", enc(r#"{service_name="cart"}"#)),
            false,
        )
        .await;
        assert_eq!((st, lines(&v).len()), (StatusCode::OK, 2));
        let (_, v, _) = get(
            &app,
            &format!(
                "/loki/api/v1/query?query={}&time={}&since=2s",
                enc(r#"{service_name="cart"}"#),
                base + 3_000_000_000
            ),
            false,
        )
        .await;
        assert_eq!(lines(&v), ["cart.Get ok"]);

        for (uri, msg) in [
            (q(r#"sum(count_over_time({service_name="cart"}[5m]))"#, ""), "metric queries"),
            (q(r#"{service_name="cart"} | line_format "{{.x}}""#, ""), "line_format"),
            (q(r#"{service_name="cart""#, ""), "parse error"),
            ("/loki/api/v1/query_range".to_string(), "query"),
            (q(r#"{service_name="cart"}"#, "&direction=sideways"), "direction"),
            (q(r#"{service_name="cart"}"#, "&end=1"), "end"),
            (q(r#"{service_name="cart"}"#, "&limit=x"), "limit"),
        ] {
            let (st, _, text) = get(&app, &uri, false).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {text}");
            assert!(text.contains(msg), "{uri}: {text}");
        }
    }

    /// A query whose matches are older than the first round's records
    /// finds them in a later round; past `query.max_logql_scan` the answer
    /// says it is partial.
    #[tokio::test]
    async fn the_scan_grows_and_stops_at_its_limit() {
        let (_d, s) = storage();
        let base = skein_storage::now_unix_nano() - 3_000_000_000_000;
        let mut logs: Vec<LogRecord> =
            (0..1000).map(|i| log("noise", base + 1_000 + i, "noise", None)).collect();
        logs.push(log("noise", base, "needle", None));
        s.append_logs(logs).await.unwrap();
        let uri = format!(
            "/loki/api/v1/query_range?query={}&start={}&limit=5",
            enc(r#"{service_name="noise"} |~ "need.e""#),
            base - 1
        );
        let (st, v, _) = get(&app_with(&s, QueryConfig::default()), &uri, false).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["data"]["result"][0]["values"][0][1], "needle", "{v}");
        assert!(v.get("warnings").is_none());
        let cfg = QueryConfig { max_logql_scan: 200, ..Default::default() };
        let (_, v, _) = get(&app_with(&s, cfg), &uri, false).await;
        assert_eq!(v["data"]["result"], json!([]));
        assert!(v["warnings"][0].as_str().unwrap().contains("query.max_logql_scan"), "{v}");
    }
}
