//! `/jaeger/api/metrics/...`: the API behind Jaeger UI's Monitor tab
//! (service performance monitoring), answered from the same per-minute
//! rollups as `/api/v1/metrics/red`, never from raw spans.
//!
//! Parameters and shapes follow Jaeger's query service
//! (jaegertracing/jaeger `cmd/query/app/http_handler.go` and
//! `query_parser.go`; the response is the `MetricFamily` of
//! `proto-gen/api_v2/metrics` in its protobuf JSON form): `service`
//! (repeatable, required), `groupByOperation`, `quantile` (latencies only,
//! in (0, 1]), `endTs` (Unix ms, default now), `lookback` (ms, default 1
//! h), `step` (ms, default 5 s), `ratePer` (ms, default 10 min), `spanKind`
//! (repeatable, default `server`). Differences from Jaeger with a metrics
//! store behind it: `step` and `ratePer` are rounded up to whole minutes
//! (the rollups' resolution, which `/metrics/minstep` reports), and a
//! latency is read from merged DDSketches (within 1%) rather than
//! interpolated from histogram buckets.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use skein_storage::model::kind;
use skein_storage::rollup::{LatencySketch, BUCKET_NS};
use skein_storage::tenant::TenantId;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::engine::{MinuteMetrics, SpanMetricsQuery};
use crate::error::{Error, Result};
use crate::params::{Params, TimeUnit};
use crate::{ApiState, Tenant};

/// Jaeger's defaults (`cmd/query/app/default_params.go`), in ms.
const DEFAULT_LOOKBACK_MS: u64 = 3_600_000;
const DEFAULT_STEP_MS: u64 = 5_000;
const DEFAULT_RATE_PER_MS: u64 = 600_000;
/// At most this many points per series.
const MAX_POINTS: u64 = 10_000;
const MS: u64 = 1_000_000;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/jaeger/api/metrics/latencies", get(latencies))
        .route("/jaeger/api/metrics/calls", get(calls))
        .route("/jaeger/api/metrics/errors", get(errors))
        .route("/jaeger/api/metrics/minstep", get(minstep))
}

/// The metric a request asks for.
#[derive(Debug, Clone, Copy)]
enum Metric {
    Latencies(f64),
    Calls,
    Errors,
}

/// The parsed parameters of a metrics request, in ns.
#[derive(Debug)]
struct MetricsParams {
    query: SpanMetricsQuery,
    start_ns: u64,
    end_ns: u64,
    step_ns: u64,
    rate_per_ns: u64,
}

/// A duration parameter in integer milliseconds, as Jaeger's
/// `newDurationUnitsParser(time.Millisecond)` reads it.
fn millis(p: &Params, key: &str, default: u64) -> Result<u64> {
    let Some(v) = p.get(key) else { return Ok(default) };
    let ms: u64 = v.parse().map_err(|_| {
        Error::bad(format!("unable to parse param '{key}': {v:?} is not a whole number of milliseconds"))
    })?;
    if ms == 0 {
        return Err(Error::bad(format!("unable to parse param '{key}': must be larger than zero")));
    }
    Ok(ms)
}

/// Go's `strconv.ParseBool`, which Jaeger uses for `groupByOperation`.
fn go_bool(p: &Params, key: &str) -> Result<bool> {
    match p.get(key) {
        None => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(Error::bad(format!("unable to parse param '{key}': {v:?} is not a boolean"))),
    }
}

/// Jaeger's span kind names (`jaegerToOtelSpanKind`).
fn span_kind(v: &str) -> Result<u8> {
    Ok(match v {
        "unspecified" => kind::UNSPECIFIED,
        "internal" => kind::INTERNAL,
        "server" => kind::SERVER,
        "client" => kind::CLIENT,
        "producer" => kind::PRODUCER,
        "consumer" => kind::CONSUMER,
        _ => {
            return Err(Error::bad(format!(
                "unable to parse param 'spanKind': unsupported span kind: '{v}' (one of unspecified, \
                 internal, server, client, producer, consumer)"
            )))
        }
    })
}

fn parse(p: &Params) -> Result<MetricsParams> {
    let services: Vec<String> = p.all("service").map(String::from).collect();
    if services.is_empty() {
        return Err(Error::bad("unable to parse param 'service': please provide at least one service name"));
    }
    let group_by_operation = go_bool(p, "groupByOperation")?;
    let mut kinds: Vec<u8> = p.all("spanKind").map(span_kind).collect::<Result<_>>()?;
    if kinds.is_empty() {
        kinds.push(kind::SERVER);
    }
    let end_ns = p.time_in("endTs", TimeUnit::Millis)?.unwrap_or_else(skein_storage::now_unix_nano);
    let lookback = millis(p, "lookback", DEFAULT_LOOKBACK_MS)?.saturating_mul(MS);
    // The rollups hold whole minutes: finer steps and windows would
    // repeat or split them.
    let step_ns = millis(p, "step", DEFAULT_STEP_MS)?.saturating_mul(MS).div_ceil(BUCKET_NS) * BUCKET_NS;
    let rate_per_ns =
        millis(p, "ratePer", DEFAULT_RATE_PER_MS)?.saturating_mul(MS).div_ceil(BUCKET_NS) * BUCKET_NS;
    let start_ns = end_ns.saturating_sub(lookback);
    if (end_ns - start_ns) / step_ns > MAX_POINTS {
        return Err(Error::bad(format!(
            "lookback/step gives more than {MAX_POINTS} points; use a larger step"
        )));
    }
    let query = SpanMetricsQuery {
        start_ns: start_ns.saturating_sub(rate_per_ns),
        end_ns,
        services,
        kinds,
        group_by_operation,
    };
    Ok(MetricsParams { query, start_ns, end_ns, step_ns, rate_per_ns })
}

/// Protobuf JSON of a `google.protobuf.Timestamp`: RFC 3339 in UTC.
fn timestamp(ns: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The value of one series at `t`, over the window `[t - ratePer, t)`:
/// `None` where Prometheus would have no sample (no spans for a rate of
/// errors or a latency).
fn point(minutes: &BTreeMap<u64, MinuteMetrics>, t: u64, rate_per_ns: u64, metric: Metric) -> Option<f64> {
    let lo = t.saturating_sub(rate_per_ns) / BUCKET_NS;
    let hi = t / BUCKET_NS; // exclusive: the minute starting at t is after it
    let window = minutes.range(lo..hi).map(|(_, m)| m);
    match metric {
        Metric::Calls => {
            let calls: u64 = window.map(|m| m.count).sum();
            Some(calls as f64 / (rate_per_ns as f64 / 1e9))
        }
        Metric::Errors => {
            let (calls, errs) = window.fold((0u64, 0u64), |(c, e), m| (c + m.count, e + m.errors));
            (calls > 0).then(|| errs as f64 / calls as f64)
        }
        Metric::Latencies(q) => {
            let mut sketch = LatencySketch::default();
            window.for_each(|m| sketch.merge(&m.latency));
            sketch.quantile(q).map(|ns| ns as f64 / 1e6)
        }
    }
}

async fn metric(
    st: ApiState,
    tenant: TenantId,
    q: Option<String>,
    which: fn(&Params) -> Result<Metric>,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    let metric = which(&p)?;
    let mp = parse(&p)?;
    let group = mp.query.group_by_operation;
    let series = st.engine(&tenant).await?.span_metrics(mp.query).await?;
    let by = if group { "grouped by service & operation" } else { "grouped by service" };
    let (name, help) = match metric {
        Metric::Latencies(q) => ("service_latencies", format!("{}th quantile latency, {by}", q)),
        Metric::Calls => ("service_call_rate", format!("calls/sec, {by}")),
        Metric::Errors => (
            "service_error_rate",
            format!("error rate, computed as a fraction of errors/sec over calls/sec, {by}"),
        ),
    };
    let first = mp.start_ns.div_ceil(mp.step_ns) * mp.step_ns;
    let metrics: Vec<Value> = series
        .iter()
        .map(|((service, operation), minutes)| {
            let mut labels = Vec::new();
            if let Some(op) = operation {
                labels.push(json!({"name": "operation", "value": op}));
            }
            labels.push(json!({"name": "service_name", "value": service}));
            let points: Vec<Value> = (0..)
                .map(|i| first + i * mp.step_ns)
                .take_while(|t| *t <= mp.end_ns)
                .filter_map(|t| {
                    point(minutes, t, mp.rate_per_ns, metric)
                        .map(|v| json!({"gaugeValue": {"doubleValue": v}, "timestamp": timestamp(t)}))
                })
                .collect();
            json!({"labels": labels, "metricPoints": points})
        })
        .collect();
    Ok(Json(json!({"name": name, "type": "GAUGE", "help": help, "metrics": metrics})).into_response())
}

/// `quantile` in (0, 1], required.
fn latency_metric(p: &Params) -> Result<Metric> {
    let v =
        p.get("quantile").ok_or_else(|| Error::bad("unable to parse param 'quantile': it is required"))?;
    match v.parse::<f64>() {
        Ok(q) if q > 0.0 && q <= 1.0 => Ok(Metric::Latencies(q)),
        _ => Err(Error::bad(format!("unable to parse param 'quantile': {v:?} is not a number in (0, 1]"))),
    }
}

async fn latencies(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    metric(st, tenant, q, latency_metric).await
}

async fn calls(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    metric(st, tenant, q, |_| Ok(Metric::Calls)).await
}

async fn errors(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    metric(st, tenant, q, |_| Ok(Metric::Errors)).await
}

/// The finest step the rollups answer, in ms, in Jaeger's envelope.
async fn minstep() -> Response {
    let ms = BUCKET_NS / MS;
    Json(json!({"data": ms, "total": 0, "limit": 0, "offset": 0, "errors": null})).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use skein_storage::model::Span;

    use super::*;
    use crate::api::tests::get;
    use crate::engine::testutil::{append, span, storage};
    use crate::QueryConfig;

    fn app(s: &Arc<skein_storage::Storage>) -> axum::Router {
        crate::api::tests::app_with(s, QueryConfig::default())
    }

    /// 2025-01-01T00:00:00Z, Unix ns.
    const T0: u64 = 1_735_689_600_000_000_000;

    /// `cart` serves 100 requests in the minute after [`T0`] (durations 1..=100 ms, every
    /// tenth failing) under `frontend`'s 10 roots, and one CLIENT span.
    fn requests() -> Vec<Span> {
        let min = T0 + BUCKET_NS;
        let mut v = Vec::new();
        for i in 1..=100u64 {
            let t = (i % 10) as u8 + 1;
            let mut sp =
                span(t, i as u8 + 1, Some(1), "cart", "cart.Get", min + i, i * 1_000_000, i % 10 == 0);
            sp.kind = kind::SERVER;
            v.push(sp);
        }
        for t in 1..=10u8 {
            v.push(span(t, 1, None, "frontend", "GET /", min, 200_000_000, false));
        }
        let mut client = span(1, 200, Some(2), "cart", "db", min + 5, 1_000_000, false);
        client.kind = kind::CLIENT;
        v.push(client);
        v
    }

    /// Each endpoint answers Jaeger's `MetricFamily` shape from the
    /// rollups, in the head and from a segment alike.
    #[tokio::test]
    async fn monitor_tab_endpoints_answer_metric_families() {
        let (_d, s) = storage();
        append(&s, requests()).await;
        let app = app(&s);
        // A window of one minute ending two minutes after T0: exactly the
        // minute of the requests.
        let base = format!(
            "service=cart&endTs={}&lookback=60000&step=60000&ratePer=60000",
            (T0 + 2 * BUCKET_NS) / MS
        );
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let (st, v) = get(&app, &format!("/jaeger/api/metrics/calls?{base}")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            assert_eq!((&v["name"], &v["type"]), (&json!("service_call_rate"), &json!("GAUGE")), "{v}");
            assert_eq!(v["metrics"][0]["labels"], json!([{"name": "service_name", "value": "cart"}]));
            // Points at both ends of the range, as a Prometheus range
            // query gives; the first window (the minute before) is empty.
            let pts = v["metrics"][0]["metricPoints"].as_array().unwrap();
            assert_eq!(pts.len(), 2, "{v}");
            assert_eq!(pts[0]["gaugeValue"]["doubleValue"], json!(0.0));
            assert_eq!(pts[1]["timestamp"], "2025-01-01T00:02:00Z");
            let rate = pts[1]["gaugeValue"]["doubleValue"].as_f64().unwrap();
            assert!((rate - 100.0 / 60.0).abs() < 1e-9, "{rate}");

            // No rate of errors nor latency where there were no calls.
            let (_, v) = get(&app, &format!("/jaeger/api/metrics/errors?{base}")).await;
            assert_eq!(v["name"], "service_error_rate");
            assert_eq!(v["metrics"][0]["metricPoints"].as_array().map(Vec::len), Some(1), "{v}");
            assert_eq!(v["metrics"][0]["metricPoints"][0]["gaugeValue"]["doubleValue"], json!(0.1), "{v}");

            let (_, v) = get(&app, &format!("/jaeger/api/metrics/latencies?{base}&quantile=0.95")).await;
            assert_eq!(v["name"], "service_latencies");
            let ms = v["metrics"][0]["metricPoints"][0]["gaugeValue"]["doubleValue"].as_f64().unwrap();
            // Rank floor(0.95 * 99) = 94: the 95th duration, 95 ms.
            assert!((ms - 95.0).abs() <= 0.95, "{ms}");

            // CLIENT spans only, grouped by operation.
            let (_, v) =
                get(&app, &format!("/jaeger/api/metrics/calls?{base}&spanKind=client&groupByOperation=true"))
                    .await;
            assert_eq!(
                v["metrics"][0]["labels"],
                json!([{"name": "operation", "value": "db"}, {"name": "service_name", "value": "cart"}])
            );
            let (st, v) = get(&app, "/jaeger/api/metrics/minstep").await;
            assert_eq!((st, &v["data"]), (StatusCode::OK, &json!(60000)));
        }
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_the_parameter() {
        let (_d, s) = storage();
        let app = app(&s);
        for (uri, says) in [
            ("/jaeger/api/metrics/calls", "please provide at least one service name"),
            ("/jaeger/api/metrics/latencies?service=a", "'quantile': it is required"),
            ("/jaeger/api/metrics/latencies?service=a&quantile=1.5", "not a number in (0, 1]"),
            ("/jaeger/api/metrics/latencies?service=a&quantile=x", "'quantile'"),
            ("/jaeger/api/metrics/errors?service=a&groupByOperation=yes", "'groupByOperation'"),
            ("/jaeger/api/metrics/calls?service=a&spanKind=serverr", "unsupported span kind: 'serverr'"),
            ("/jaeger/api/metrics/calls?service=a&step=5s", "'step': \"5s\" is not a whole number"),
            ("/jaeger/api/metrics/calls?service=a&lookback=0", "'lookback': must be larger than zero"),
            ("/jaeger/api/metrics/calls?service=a&ratePer=-1", "'ratePer'"),
            ("/jaeger/api/metrics/calls?service=a&endTs=abc", "endTs"),
            (
                "/jaeger/api/metrics/calls?service=a&lookback=100000000000&step=60000",
                "more than 10000 points",
            ),
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
            let e = v["error"].as_str().unwrap_or_default();
            assert!(e.contains(says), "{uri}: {e:?} lacks {says:?}");
        }
    }

    /// `/api/v1/dependencies` and `/jaeger/api/dependencies` over a call
    /// whose client span was flushed before its server span arrived, and a
    /// database call: each counted once, with latency percentiles and the
    /// connection type.
    #[tokio::test]
    async fn dependencies_answer_split_calls_and_database_edges() {
        use skein_storage::model::AttrValue;
        let (_d, s) = storage();
        let app = app(&s);
        let at = T0 + BUCKET_NS;
        let mut root = span(1, 1, None, "frontend", "GET /", at, 50_000_000, false);
        root.kind = kind::SERVER;
        let mut client = span(1, 2, Some(1), "frontend", "cart.Get", at + 1, 40_000_000, false);
        client.attributes.push(("server.address".into(), AttrValue::Str("cart".into())));
        append(&s, vec![root, client]).await;
        s.flush(true).unwrap();
        let mut server = span(1, 3, Some(2), "cart", "cart.Get", at + 2, 30_000_000, true);
        server.kind = kind::SERVER;
        let mut db = span(1, 4, Some(3), "cart", "HGET", at + 3, 2_000_000, false);
        db.attributes.push(("db.system".into(), AttrValue::Str("redis".into())));
        append(&s, vec![server, db]).await;
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let (st, v) = get(&app, "/api/v1/dependencies").await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let edges = v["edges"].as_array().unwrap();
            assert_eq!(edges.len(), 2, "{v}");
            assert_eq!(
                (
                    &edges[0]["parent"],
                    &edges[0]["child"],
                    &edges[0]["connection_type"],
                    &edges[0]["call_count"]
                ),
                (&json!("cart"), &json!("redis"), &json!("database"), &json!(1)),
                "{v}"
            );
            let call = &edges[1];
            assert_eq!(
                (&call["parent"], &call["child"], &call["call_count"], &call["error_count"]),
                (&json!("frontend"), &json!("cart"), &json!(1), &json!(1)),
                "{v}"
            );
            assert!(call.get("connection_type").is_none(), "{v}");
            // The server span's 30 ms, within 1%.
            let p95 = call["p95_ns"].as_f64().unwrap();
            assert!((p95 - 30e6).abs() <= 0.3e6, "{v}");

            let end = (T0 + 10 * BUCKET_NS) / MS;
            let (st, v) = get(&app, &format!("/jaeger/api/dependencies?endTs={end}&lookback=3600000")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            assert_eq!(
                v["data"],
                json!([
                    {"parent": "cart", "child": "redis", "callCount": 1},
                    {"parent": "frontend", "child": "cart", "callCount": 1},
                ])
            );
        }
        let (st, v) = get(&app, "/api/v1/dependencies?start=yesterday").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains("start"), "{v}");
    }
}
