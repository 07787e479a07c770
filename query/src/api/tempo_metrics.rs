//! `/tempo/api/metrics/query_range` and `/tempo/api/metrics/query`: TraceQL
//! metrics as Grafana Tempo answers them (grafana/tempo
//! `docs/sources/tempo/api_docs/_index.md`, "TraceQL Metrics"), so
//! Grafana's Tempo data source and its Traces Drilldown app chart them.
//!
//! Parameters, as Tempo's `ParseQueryRangeRequest` reads them:
//! - `q` (or `query`, Prometheus's name, which Grafana sends): the
//!   TraceQL metrics query;
//! - `start`, `end`: Unix seconds (10 digits or fewer), Unix nanoseconds
//!   (more digits), fractional seconds, or RFC 3339; default `end` = now,
//!   `start` = `end` - `since` (a duration, default 1 h);
//! - `step` (range query only): a duration (`30s`, `1m`) or seconds;
//!   default Tempo's `DefaultQueryRangeStep` (about 240 points, a
//!   multiple of 5 s, at least 1 s);
//! - `exemplars`: exemplars per series at most (default and cap 100, as
//!   Tempo's `max_exemplars`); the query's `with (exemplars = false)` or
//!   `with (exemplars = N)` hint overrides it, as in Tempo.
//!
//! The answer is Tempo's `QueryRangeResponse` (or `QueryInstantResponse`)
//! in proto3 JSON: 64-bit integers as strings, labels as OTLP `KeyValue`s.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::native::MAX_TRACEQL_LEN;
use super::tempo::key_value;
use crate::engine::traceql::{FieldValue, TraceQl};
use crate::engine::{MetricsAnswer, MetricsQuery};
use crate::error::{Error, Result};
use crate::params::{parse_duration_ns, Params, TimeRange};
use crate::{ApiState, Tenant};

/// Exemplars per series when the request does not say, and at most
/// (Tempo's query frontend `max_exemplars`).
pub(crate) const MAX_EXEMPLARS: usize = 100;

/// How far back `start` defaults to from `end` (Tempo's `defaultSince`).
const DEFAULT_SINCE_NS: u64 = 3_600_000_000_000;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/tempo/api/metrics/query_range", get(query_range))
        .route("/tempo/api/metrics/query", get(query_instant))
}

/// A point in time as Tempo's metrics API reads it (`parseTimestamp`):
/// fractional seconds, Unix seconds (up to 10 digits), Unix nanoseconds,
/// or RFC 3339.
fn tempo_time(key: &str, v: &str) -> Result<u64> {
    let bad =
        || Error::bad(format!("{key}: {v:?} is not Unix seconds, Unix nanoseconds or an RFC 3339 time"));
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = v.parse().map_err(|_| bad())?;
        return if v.len() <= 10 { n.checked_mul(1_000_000_000).ok_or_else(bad) } else { Ok(n) };
    }
    if v.contains('.') && !v.contains('T') {
        let f: f64 = v.parse().map_err(|_| bad())?;
        if !(0.0..=1.8e10).contains(&f) {
            return Err(bad());
        }
        return Ok((f * 1e9).round() as u64);
    }
    crate::params::parse_time(v).map_err(|_| bad())
}

/// A step as Tempo reads it: seconds (`15`, `0.5`) or a duration (`1m`).
fn tempo_step(v: &str) -> Result<u64> {
    let ns = match v.parse::<f64>() {
        Ok(s) if (0.0..1.8e10).contains(&s) => (s * 1e9).round() as u64,
        Ok(_) => return Err(Error::bad(format!("step: {v:?} is out of range"))),
        Err(_) => parse_duration_ns(v).map_err(|e| Error::bad(format!("step: {e}")))?,
    };
    if ns == 0 {
        return Err(Error::bad("step: zero or negative query resolution step widths are not accepted"));
    }
    Ok(ns)
}

/// Tempo's `DefaultQueryRangeStep`: the range over 240 points, rounded
/// down to 5 s (to 1 s below 5 s), at least 1 s.
pub(crate) fn default_step(start_ns: u64, end_ns: u64) -> u64 {
    const S: u64 = 1_000_000_000;
    let base = end_ns.saturating_sub(start_ns) / 240;
    let five = base / (5 * S) * (5 * S);
    let step = if five < 5 * S { base / S * S } else { five };
    step.max(S)
}

/// The request's query and range, shared by both endpoints.
fn common(p: &Params, st: &ApiState) -> Result<(TraceQl, u64, u64, usize)> {
    // Tempo reads `query` first, then lets `q` override it.
    let q = p
        .get("q")
        .or_else(|| p.get("query"))
        .ok_or_else(|| Error::bad("q: a TraceQL metrics query is required"))?;
    if q.len() > MAX_TRACEQL_LEN {
        return Err(Error::bad(format!("q is longer than {MAX_TRACEQL_LEN} bytes")));
    }
    let tq = TraceQl::parse_metrics(q).map_err(|e| Error::bad(e.to_string()))?;
    let end = match p.get("end") {
        Some(v) => tempo_time("end", v)?,
        None => skein_storage::now_unix_nano(),
    };
    let start = match (p.get("start"), p.get("since")) {
        (Some(v), _) => tempo_time("start", v)?,
        (None, Some(s)) => {
            end.saturating_sub(parse_duration_ns(s).map_err(|e| Error::bad(format!("since: {e}")))?)
        }
        (None, None) => end.saturating_sub(DEFAULT_SINCE_NS),
    };
    if end <= start {
        return Err(Error::bad(format!("end must be after start (start={start}, end={end} in Unix ns)")));
    }
    TimeRange { start_ns: Some(start), end_ns: Some(end) }.within(st.cfg.max_range, "start", "end")?;
    let exemplars = match p.get("exemplars") {
        None => MAX_EXEMPLARS,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Error::bad(format!("exemplars: {v:?} is not a non-negative integer")))?
            .min(MAX_EXEMPLARS),
    };
    // The query's own `with (exemplars = false | N)` wins, as in Tempo's
    // `CompileMetricsQueryRange`.
    use crate::engine::traceql::ast::Static;
    let exemplars = match tq.root().hints.iter().rev().find(|h| h.name == "exemplars").map(|h| &h.value) {
        Some(Static::Bool(false)) => 0,
        Some(Static::Int(n)) => usize::try_from(*n).unwrap_or(0).min(MAX_EXEMPLARS),
        _ => exemplars,
    };
    Ok((tq, start, end, exemplars))
}

/// Tempo's Prometheus-style text of a series' labels (`Labels.String()`):
/// sorted by name, integers as `int(5)`, the empty string as `<empty>`.
fn prom_labels(labels: &[(String, FieldValue)]) -> String {
    let mut parts: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| {
            let text = match key_value(k, v)["value"].as_object().and_then(|o| o.values().next().cloned()) {
                Some(Value::String(s)) if s.is_empty() => "<empty>".to_string(),
                Some(Value::String(s)) => s,
                Some(x) => x.to_string(),
                None => "<nil>".to_string(),
            };
            let text = if matches!(v, FieldValue::Int(_)) { format!("int({text})") } else { text };
            (k.clone(), text)
        })
        .collect();
    parts.sort();
    let body: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={}", json!(v))).collect();
    format!("{{{}}}", body.join(", "))
}

fn labels_json(labels: &[(String, FieldValue)]) -> Vec<Value> {
    labels.iter().map(|(k, v)| key_value(k, v)).collect()
}

/// Tempo's `SearchMetrics` of a metrics answer (zero fields left out, as
/// proto3 JSON does), and the partial status when segments were skipped.
fn with_metrics(mut v: Value, a: &MetricsAnswer) -> Value {
    let mut m = json!({
        "inspectedTraces": a.inspected_traces,
        "inspectedSpans": a.work.read.spans.to_string(),
        "inspectedBytes": a.work.read.bytes.to_string(),
        "totalBlocks": a.work.total_segments,
        "totalBlockBytes": a.work.total_segment_bytes.to_string(),
        "completedJobs": 1,
        "totalJobs": 1 + a.warnings.len(),
    });
    if let Some(m) = m.as_object_mut() {
        m.retain(|_, v| *v != json!(0) && *v != json!("0"));
    }
    v["metrics"] = m;
    if !a.warnings.is_empty() {
        v["status"] = json!("PARTIAL");
        v["message"] = json!(a.warnings.join("; "));
    }
    v
}

/// Tempo's `QueryRangeResponse` as JSON.
pub(crate) fn range_json(a: &MetricsAnswer) -> Value {
    let series: Vec<Value> = a
        .series
        .iter()
        .map(|s| {
            let samples: Vec<Value> = s
                .samples
                .iter()
                .map(|(t, v)| json!({ "timestampMs": (t / 1_000_000).to_string(), "value": v }))
                .collect();
            let exemplars: Vec<Value> = s
                .exemplars
                .iter()
                .map(|e| {
                    json!({
                        "labels": [
                            { "key": "trace:id", "value": { "stringValue": e.trace_id.to_hex() } },
                            { "key": "span:id", "value": { "stringValue": e.span_id.to_hex() } },
                        ],
                        "value": e.value,
                        "timestampMs": (e.time_unix_nano / 1_000_000).to_string(),
                    })
                })
                .collect();
            let mut v = json!({
                "labels": labels_json(&s.labels),
                "samples": samples,
                "promLabels": prom_labels(&s.labels),
            });
            if !exemplars.is_empty() {
                v["exemplars"] = json!(exemplars);
            }
            v
        })
        .collect();
    with_metrics(json!({ "series": series }), a)
}

/// Tempo's `QueryInstantResponse` as JSON: one value per series.
pub(crate) fn instant_json(a: &MetricsAnswer) -> Value {
    let series: Vec<Value> = a
        .series
        .iter()
        .filter_map(|s| {
            let (_, value) = s.samples.first()?;
            Some(json!({
                "labels": labels_json(&s.labels),
                "value": value,
                "promLabels": prom_labels(&s.labels),
            }))
        })
        .collect();
    with_metrics(json!({ "series": series }), a)
}

async fn query_range(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    let (query, start_ns, end_ns, exemplars) = common(&p, &st)?;
    let step_ns = match p.get("step") {
        Some(v) => tempo_step(v)?,
        None => default_step(start_ns, end_ns),
    };
    let q = MetricsQuery { query, start_ns, end_ns, step_ns, instant: false, exemplars };
    let a = st.engine(&tenant).await?.metrics(q).await?;
    Ok(Json(range_json(&a)).into_response())
}

async fn query_instant(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    let (query, start_ns, end_ns, _) = common(&p, &st)?;
    let q = MetricsQuery { query, start_ns, end_ns, step_ns: end_ns - start_ns, instant: true, exemplars: 0 };
    let a = st.engine(&tenant).await?.metrics(q).await?;
    Ok(Json(instant_json(&a)).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::api::tests::{app_with, get};
    use crate::engine::testutil::{append, storage, three_traces};
    use crate::QueryConfig;

    fn enc(q: &str) -> String {
        form_urlencoded::byte_serialize(q.as_bytes()).collect()
    }

    /// Tempo's `QueryRangeResponse` and `QueryInstantResponse` shapes: the
    /// labels as OTLP `KeyValue`s, 64-bit integers as strings, exemplars
    /// (from spans) with `trace:id` and `span:id`.
    #[tokio::test]
    async fn answers_in_tempos_shapes() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let app = app_with(&s, QueryConfig::default());
        let q = enc("{ } | rate() by (resource.service.name)");
        let (st, rollups) =
            get(&app, &format!("/tempo/api/metrics/query_range?q={q}&start=0&end=120&step=1m")).await;
        assert_eq!(st, StatusCode::OK, "{rollups}");
        insta::assert_json_snapshot!("tempo_metrics_query_range_rollups", rollups);
        // From the spans (a 30 s step): exemplars; `query` is also read.
        let q = enc(r#"{ resource.service.name = "cart" } | quantile_over_time(duration, .5, .9)"#);
        let (st, spans) =
            get(&app, &format!("/tempo/api/metrics/query_range?query={q}&start=0&end=60&step=30")).await;
        assert_eq!(st, StatusCode::OK, "{spans}");
        insta::assert_json_snapshot!("tempo_metrics_query_range_spans", spans);
        for (hint, n) in [("with (exemplars = false)", 0), ("with (exemplars = 1)", 1), ("", 2)] {
            let q = enc(&format!("{{ resource.service.name = \"cart\" }} | count_over_time() {hint}"));
            let (_, v) =
                get(&app, &format!("/tempo/api/metrics/query_range?q={q}&start=0&end=60&step=30")).await;
            let got = v["series"][0]["exemplars"].as_array().map_or(0, Vec::len);
            assert_eq!(got, n, "{hint}: {v}");
        }
        let q = enc("{ } | count_over_time() by (name, span.http.status)");
        let (st, instant) =
            get(&app, &format!("/tempo/api/metrics/query?q={q}&start=0&end=1800000000000")).await;
        assert_eq!(st, StatusCode::OK, "{instant}");
        insta::assert_json_snapshot!("tempo_metrics_query_instant", instant);
        // compare(): totals are labelled with the attribute and no value.
        let q = enc("{ } | compare({ status = error })");
        let (st, cmp) =
            get(&app, &format!("/tempo/api/metrics/query_range?q={q}&start=0&end=60&step=60")).await;
        assert_eq!(st, StatusCode::OK, "{cmp}");
        let total = cmp["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["promLabels"] == r#"{__meta_type="selection_total", name="<nil>"}"#)
            .unwrap_or_else(|| panic!("{cmp}"));
        assert_eq!(total["labels"][1], json!({"key": "name", "value": {}}));
        assert_eq!(total["samples"][0]["value"], 1.0);
    }

    /// Malformed requests are 400s that say what is wrong.
    #[tokio::test]
    async fn bad_requests_are_400s() {
        let (_d, s) = storage();
        let app = app_with(&s, QueryConfig::default());
        let rate = enc("{ } | rate()");
        for (uri, says) in [
            (
                "/tempo/api/metrics/query_range?start=0&end=60".to_string(),
                "q: a TraceQL metrics query is required",
            ),
            (format!("/tempo/api/metrics/query_range?q={}&start=0&end=60", enc("{ .a = }")), "column"),
            (
                format!("/tempo/api/metrics/query_range?q={}&start=0&end=60", enc("{ }")),
                "not a metrics query",
            ),
            (
                format!("/tempo/api/metrics/query?q={}&start=0&end=60", enc("{ } | rate() | topk(0)")),
                "positive integer",
            ),
            (format!("/tempo/api/metrics/query_range?q={rate}&start=0&end=60&step=0"), "step"),
            (format!("/tempo/api/metrics/query_range?q={rate}&start=0&end=60&step=1x"), "step"),
            (
                format!("/tempo/api/metrics/query_range?q={rate}&start=0&end=3600&step=100ms"),
                "max_points_per_series",
            ),
            (format!("/tempo/api/metrics/query_range?q={rate}&start=60&end=30"), "end must be after start"),
            (format!("/tempo/api/metrics/query?q={rate}&start=60&end=60"), "end must be after start"),
            (format!("/tempo/api/metrics/query_range?q={rate}&start=yesterday"), "start"),
            (format!("/tempo/api/metrics/query_range?q={rate}&start=0&end=60&exemplars=-1"), "exemplars"),
            (
                format!(
                    "/tempo/api/metrics/query_range?q={}&start=0&end=60",
                    enc("{ } | compare({ status = error }, 0)")
                ),
                "compare() top number",
            ),
        ] {
            let (st, v) = get(&app, &uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(says), "{uri}: {msg}");
        }
        // The range limit applies as to search.
        let app =
            app_with(&s, QueryConfig { max_range: std::time::Duration::from_secs(60), ..Default::default() });
        let (st, v) = get(&app, &format!("/tempo/api/metrics/query_range?q={rate}&start=0&end=120")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains("query.max_range"), "{v}");
    }

    #[test]
    fn times_and_steps_as_tempo_reads_them() {
        assert_eq!(tempo_time("t", "1700000000").unwrap(), 1_700_000_000 * 1_000_000_000);
        assert_eq!(tempo_time("t", "1700000000123456789").unwrap(), 1_700_000_000_123_456_789);
        assert_eq!(tempo_time("t", "1700000000.5").unwrap(), 1_700_000_000_500_000_000);
        assert_eq!(tempo_time("t", "2023-11-14T22:13:20Z").unwrap(), 1_700_000_000 * 1_000_000_000);
        assert!(tempo_time("t", "soon").is_err());
        assert_eq!(tempo_step("15").unwrap(), 15_000_000_000);
        assert_eq!(tempo_step("0.5").unwrap(), 500_000_000);
        assert_eq!(tempo_step("1m30s").unwrap(), 90_000_000_000);
        assert!(tempo_step("0s").is_err());
        let s = 1_000_000_000;
        // Tempo's DefaultQueryRangeStep: 1 h gives 15 s, 10 min 2 s, 1 min 1 s.
        assert_eq!(default_step(0, 3600 * s), 15 * s);
        assert_eq!(default_step(0, 600 * s), 2 * s);
        assert_eq!(default_step(0, 60 * s), s);
        assert_eq!(default_step(0, 24 * 3600 * s), 360 * s);
    }

    #[test]
    fn prom_labels_as_tempo_writes_them() {
        let l = vec![
            ("resource.service.name".to_string(), FieldValue::Str("cart".into())),
            ("span.http.status".to_string(), FieldValue::Int(200)),
            ("name".to_string(), FieldValue::Str(String::new())),
        ];
        assert_eq!(
            prom_labels(&l),
            r#"{name="<empty>", resource.service.name="cart", span.http.status="int(200)"}"#
        );
    }
}
