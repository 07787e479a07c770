//! `/jaeger/api/...`: Jaeger's query-service HTTP API, so Grafana's Jaeger
//! data source and Jaeger-API clients work against Skein. Shapes follow
//! Jaeger's `model/json` (µs timestamps, typed tags, processes per trace);
//! a trace's log records appear as logs on the span that wrote them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use skein_storage::filter::SpanFilter;
use skein_storage::model::{kind, status, AttrValue, Attributes, LogRecord, Span, TraceId};

use super::native::json::attr_value;
use crate::engine::{SpanCondition, Trace, TraceQuery, TraceSearch};
use crate::error::{Error, Result};
use crate::params::{parse_trace_id, Params, TimeUnit};
use crate::{ApiState, Tenant};

/// Range of `/dependencies` without `lookback`: one day, in ms.
const DEFAULT_LOOKBACK_MS: u64 = 86_400_000;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route("/jaeger/api/services/{service}/operations", get(service_operations))
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(find_traces))
        .route("/jaeger/api/traces/{trace_id}", get(get_trace))
        .route("/jaeger/api/dependencies", get(dependencies))
        .layer(axum::middleware::map_response(jaeger_errors))
}

/// Every error in Jaeger's envelope, as Jaeger's query service answers
/// them (`{"data": null, "errors": [{"code", "msg"}], ...}` with the same
/// status, `Retry-After` kept on 429 and 503), so Jaeger clients show the
/// message; `error` stays beside it, as on every Skein API. Answers that
/// are already envelopes (the trace lookup's 404) pass unchanged.
async fn jaeger_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let msg = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|v| v.get("errors").is_none())
        .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from));
    let Some(msg) = msg else { return Response::from_parts(parts, axum::body::Body::from(bytes)) };
    let v = json!({"data": null, "total": 0, "limit": 0, "offset": 0,
        "errors": [{"code": status.as_u16(), "msg": msg}], "error": msg});
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

/// Jaeger's response envelope, with `errors` listing why the answer is partial (a
/// quarantined segment may hold data it lacks), each as Jaeger's
/// structured error `{code, msg[, traceID]}` with code 206 (Partial
/// Content): the status stays 200, as Jaeger's own multi-trace lookup
/// answers 200 with an `errors` entry per trace it could not load.
fn envelope_partial(data: Value, errors: Vec<Value>) -> Response {
    let total = data.as_array().map_or(0, |a| a.len());
    let errors = if errors.is_empty() { Value::Null } else { Value::Array(errors) };
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors})).into_response()
}

/// The structured errors of a partial answer, for `envelope_partial`.
fn partial_errors(warnings: &[String], trace: Option<TraceId>) -> Vec<Value> {
    warnings
        .iter()
        .map(|w| match trace {
            Some(id) => json!({"code": 206, "msg": w, "traceID": id.to_hex()}),
            None => json!({"code": 206, "msg": w}),
        })
        .collect()
}

/// A trace in Jaeger's JSON model, its `warnings` naming the quarantined
/// segments that may hold part of it; `None` when it has no span (only
/// warnings: nothing of it could be read).
fn trace_value(t: &Trace) -> Option<Value> {
    if t.spans.is_empty() && t.logs.is_empty() {
        return None;
    }
    let mut v = trace_json(t.id, &t.spans, &t.logs);
    if !t.warnings.is_empty() {
        v["warnings"] = json!(t.warnings);
    }
    Some(v)
}

/// The largest integer a JavaScript number holds exactly (2^53 - 1).
const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

fn tag(key: &str, v: &AttrValue) -> Value {
    let (ty, value) = match v {
        AttrValue::Str(s) => ("string", json!(s)),
        AttrValue::Bool(b) => ("bool", json!(b)),
        // Beyond 2^53 the Jaeger UI (JavaScript) would round the number, so
        // Jaeger sends it as decimal text (`uimodel/converter/v1/json`,
        // fixture `ui_01.json`, tag `javascript_limit`).
        AttrValue::Int(i) if i.unsigned_abs() > JS_MAX_SAFE_INTEGER as u64 => ("int64", json!(i.to_string())),
        AttrValue::Int(i) => ("int64", json!(i)),
        AttrValue::Double(d) => ("float64", super::native::json::double(*d)),
        AttrValue::Bytes(_) => ("binary", attr_value(v)),
        // Jaeger has no composite tag type: render as JSON text.
        other => ("string", json!(attr_value(other).to_string())),
    };
    json!({"key": key, "type": ty, "value": value})
}

fn tags(a: &Attributes) -> Vec<Value> {
    a.iter().map(|(k, v)| tag(k, v)).collect()
}

fn us(ns: u64) -> u64 {
    ns / 1_000
}

/// One trace in Jaeger's JSON model.
pub(crate) fn trace_json(id: TraceId, spans: &[Span], logs: &[LogRecord]) -> Value {
    let mut processes: BTreeMap<String, Value> = BTreeMap::new();
    // One process per distinct resource, as Jaeger's processHashtable keys
    // them by content: spans of one process arrive in several batches (and
    // come back from several segments), each with its own `Arc`.
    let mut process_of: Vec<(&std::sync::Arc<skein_storage::model::Resource>, String)> = Vec::new();
    let mut logs_by_span: HashMap<_, Vec<&LogRecord>> = HashMap::new();
    for l in logs {
        if let Some(s) = l.span_id {
            logs_by_span.entry(s).or_default().push(l);
        }
    }
    let jspans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let known = process_of
                .iter()
                .find(|(r, _)| std::sync::Arc::ptr_eq(r, &s.resource) || ***r == *s.resource)
                .map(|(_, pid)| pid.clone());
            let pid = known.unwrap_or_else(|| {
                let pid = format!("p{}", processes.len() + 1);
                let ptags: Vec<Value> = s
                    .resource
                    .attributes
                    .iter()
                    .filter(|(k, _)| k != "service.name")
                    .map(|(k, v)| tag(k, v))
                    .collect();
                processes.insert(pid.clone(), json!({"serviceName": s.service_name(), "tags": ptags}));
                process_of.push((&s.resource, pid.clone()));
                pid
            });
            let mut t = tags(&s.attributes);
            if s.kind != kind::UNSPECIFIED {
                t.push(json!({"key": "span.kind", "type": "string", "value": kind::name(s.kind).to_lowercase()}));
            }
            if s.status_code != status::UNSET {
                t.push(json!({"key": "otel.status_code", "type": "string", "value": status::name(s.status_code)}));
            }
            if s.is_error() {
                t.push(json!({"key": "error", "type": "bool", "value": true}));
                if !s.status_message.is_empty() {
                    t.push(json!({"key": "otel.status_description", "type": "string", "value": s.status_message}));
                }
            }
            if !s.scope.name.is_empty() {
                t.push(json!({"key": "otel.scope.name", "type": "string", "value": s.scope.name}));
            }
            if !s.scope.version.is_empty() {
                t.push(json!({"key": "otel.scope.version", "type": "string", "value": s.scope.version}));
            }
            let mut jlogs: Vec<Value> = s
                .events
                .iter()
                .map(|e| {
                    // As Jaeger's OTLP translator (`spanEventsToJaegerProtoLogs`):
                    // no `event` field for an unnamed event, nor over an
                    // attribute of that name.
                    let mut fields = Vec::with_capacity(e.attributes.len() + 1);
                    if !e.name.is_empty() && !e.attributes.iter().any(|(k, _)| k == "event") {
                        fields.push(json!({"key": "event", "type": "string", "value": e.name}));
                    }
                    fields.extend(tags(&e.attributes));
                    json!({"timestamp": us(e.time_unix_nano), "fields": fields})
                })
                .collect();
            for l in logs_by_span.get(&s.span_id).into_iter().flatten() {
                let body = match &l.body {
                    AttrValue::Str(b) => b.clone(),
                    other => attr_value(other).to_string(),
                };
                let mut fields = vec![
                    json!({"key": "message", "type": "string", "value": body}),
                    json!({"key": "level", "type": "string", "value": l.severity_text}),
                ];
                fields.extend(tags(&l.attributes));
                jlogs.push(json!({"timestamp": us(l.effective_time()), "fields": fields}));
            }
            jlogs.sort_by_key(|l| l["timestamp"].as_u64());
            let mut refs: Vec<Value> = Vec::new();
            if let Some(p) = s.parent_span_id {
                refs.push(json!({"refType": "CHILD_OF", "traceID": id.to_hex(), "spanID": p.to_hex()}));
            }
            for l in &s.links {
                // A link is FOLLOWS_FROM unless its `opentracing.ref_type` says
                // `child_of` (Jaeger's translator, `refTypeFromLink`), which is
                // how a Jaeger span's second CHILD_OF reference travels in OTLP.
                let child_of = l
                    .attributes
                    .iter()
                    .any(|(k, v)| k == "opentracing.ref_type" && matches!(v, AttrValue::Str(t) if t == "child_of"));
                let ref_type = if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" };
                refs.push(json!({"refType": ref_type, "traceID": l.trace_id.to_hex(), "spanID": l.span_id.to_hex()}));
            }
            let mut span = json!({
                "traceID": id.to_hex(),
                "spanID": s.span_id.to_hex(),
                "operationName": s.name,
                "references": refs,
                "startTime": us(s.start_time_unix_nano),
                "duration": us(s.duration_ns()),
                "tags": t,
                "logs": jlogs,
                "processID": pid,
                "warnings": null,
            });
            // Jaeger's `uimodel.Span.Flags` is `omitempty`.
            if s.flags & 0xff != 0 {
                span["flags"] = json!(s.flags & 0xff);
            }
            span
        })
        .collect();
    json!({"traceID": id.to_hex(), "spans": jspans, "processes": processes, "warnings": null})
}

/// Jaeger's answer of a trace search: the whole traces, in the engine's
/// order (newest start first).
pub(crate) fn search_json(r: &TraceSearch) -> Vec<Value> {
    r.traces.iter().filter_map(|t| t.trace.as_ref()).filter_map(trace_value).collect()
}

async fn services(State(st): State<ApiState>, Tenant(tenant): Tenant) -> Result<Response> {
    let names: Vec<String> =
        st.engine(&tenant).await?.services().await?.into_iter().map(|s| s.name).collect();
    Ok(envelope_partial(json!(names), partial_errors(&st.damage(&tenant, None, None), None)))
}

async fn service_operations(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(service): Path<String>,
) -> Result<Response> {
    let names: BTreeSet<String> =
        st.engine(&tenant).await?.operations(Some(service)).await?.into_iter().map(|o| o.name).collect();
    Ok(envelope_partial(json!(names), partial_errors(&st.damage(&tenant, None, None), None)))
}

async fn operations(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    let service = p.get("service").ok_or_else(|| Error::bad("service is required"))?.to_string();
    // An empty `spanKind` asks for every kind, as in Jaeger.
    let want_kind = p.get("spanKind").filter(|k| !k.is_empty()).map(|k| k.to_ascii_lowercase());
    let ops: Vec<Value> = st
        .engine(&tenant)
        .await?
        .operations(Some(service))
        .await?
        .into_iter()
        // A span without a kind has no `span.kind` tag in Jaeger, whose
        // operations then answer `spanKind: ""`.
        .map(|o| {
            (
                o.name,
                if o.kind == kind::UNSPECIFIED {
                    String::new()
                } else {
                    kind::name(o.kind).to_ascii_lowercase()
                },
            )
        })
        .filter(|(_, k)| want_kind.as_ref().is_none_or(|w| w == k))
        .map(|(name, k)| json!({"name": name, "spanKind": k}))
        .collect();
    Ok(envelope_partial(json!(ops), partial_errors(&st.damage(&tenant, None, None), None)))
}

/// The condition a tag that Skein synthesises in the Jaeger view (see
/// [`trace_json`]) stands for, named as Jaeger's OTLP translator names
/// them (`otel.library.*` is their name before semantic conventions
/// 1.x); `None` for any other tag, which is an attribute. A value outside
/// the tag's vocabulary is a 400 naming it.
fn synthesized_tag(key: &str, value: &str) -> Result<Option<SpanCondition>> {
    let bad = |what: &str| Err(Error::bad(format!("tag {key}={value:?}: {key} is {what}")));
    Ok(Some(match key {
        "error" => match value.to_ascii_lowercase().as_str() {
            "true" => SpanCondition::Error(true),
            "false" => SpanCondition::Error(false),
            _ => return bad("true or false"),
        },
        "otel.status_code" => match value.to_ascii_uppercase().trim_start_matches("STATUS_CODE_") {
            "OK" => SpanCondition::StatusCode(status::OK),
            "ERROR" => SpanCondition::StatusCode(status::ERROR),
            "UNSET" => SpanCondition::StatusCode(status::UNSET),
            _ => return bad("OK, ERROR or UNSET"),
        },
        "otel.status_description" => SpanCondition::StatusMessage(value.to_string()),
        "span.kind" => match kind::parse(value) {
            Some(k) => SpanCondition::Kind(k),
            None => return bad("server, client, producer, consumer or internal"),
        },
        "otel.scope.name" | "otel.library.name" => SpanCondition::ScopeName(value.to_string()),
        "otel.scope.version" | "otel.library.version" => SpanCondition::ScopeVersion(value.to_string()),
        _ => return Ok(None),
    }))
}

async fn find_traces(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    // Jaeger's UI fetches traces by ID with repeated `traceID` (its search
    // form's "Lookup by Trace ID"); the other parameters are then ignored,
    // as Jaeger's query service does. Traces not stored are left out.
    let ids: Vec<&str> = p.all("traceID").collect();
    if !ids.is_empty() {
        let ids = ids.into_iter().map(parse_trace_id).collect::<Result<Vec<_>>>()?;
        let (mut data, mut errors) = (Vec::with_capacity(ids.len()), Vec::new());
        for id in ids {
            if let Some(t) = st.engine(&tenant).await?.trace(id).await? {
                errors.extend(partial_errors(&t.warnings, Some(t.id)));
                data.extend(trace_value(&t));
            }
        }
        return Ok(envelope_partial(Value::Array(data), errors));
    }
    let mut tags = Vec::new();
    if let Some(t) = p.get("tags") {
        let m: HashMap<String, Value> = serde_json::from_str(t)
            .map_err(|e| Error::bad(format!("tags must be a JSON object of key to value: {e}")))?;
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            tags.push((k, v));
        }
    }
    // Jaeger's UI also sends logfmt-style `tag=k:v` parameters.
    for t in p.all("tag") {
        let (k, v) = t.split_once(':').ok_or_else(|| Error::bad(format!("tag {t:?} must be key:value")))?;
        tags.push((k.to_string(), v.to_string()));
    }
    let (mut attrs, mut conditions) = (Vec::new(), Vec::new());
    for (k, v) in tags {
        match synthesized_tag(&k, &v)? {
            Some(c) => conditions.push(c),
            None => attrs.push((k, v)),
        }
    }
    let range = p.range("start", "end", TimeUnit::Micros)?;
    range.within(st.cfg.max_range, "start", "end")?;
    let filter = SpanFilter {
        service: p.get("service").map(String::from),
        operation: p.get("operation").map(String::from),
        attrs,
        min_duration_ns: p.duration("minDuration")?,
        max_duration_ns: p.duration("maxDuration")?,
        status: None,
        start_ns: range.start_ns,
        end_ns: range.end_ns,
    };
    let limit = p.limit(st.cfg.default_limit, st.cfg.max_limit)?;
    let q = TraceQuery { filter, conditions, limit, with_trace: true, ..Default::default() };
    let r = st.engine(&tenant).await?.search_traces(q).await?;
    Ok(envelope_partial(json!(search_json(&r)), partial_errors(&r.warnings, None)))
}

async fn get_trace(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response> {
    let tid = parse_trace_id(&id)?;
    match st.engine(&tenant).await?.trace(tid).await? {
        Some(t) => Ok(envelope_partial(
            Value::Array(trace_value(&t).into_iter().collect()),
            partial_errors(&t.warnings, Some(t.id)),
        )),
        None => Ok((
            axum::http::StatusCode::NOT_FOUND,
            Json(json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                "errors": [{"code": 404, "msg": "trace not found"}]})),
        )
            .into_response()),
    }
}

/// `endTs` (Unix ms, default now) and `lookback` (ms, default a day).
async fn dependencies(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    let end = p.time_in("endTs", TimeUnit::Millis)?.unwrap_or_else(skein_storage::now_unix_nano);
    let lookback = p
        .get("lookback")
        .map(|v| v.parse::<u64>().map_err(|_| Error::bad(format!("lookback: {v:?} is not milliseconds"))))
        .transpose()?
        .unwrap_or(DEFAULT_LOOKBACK_MS);
    let start = end.saturating_sub(lookback.saturating_mul(1_000_000));
    crate::TimeRange { start_ns: Some(start), end_ns: Some(end) }.within(
        st.cfg.max_range,
        "endTs-lookback",
        "endTs",
    )?;
    // One link per (parent, child) whatever the connection type, as
    // Jaeger's `deduplicateDependencies` sums them.
    let mut links: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in st.engine(&tenant).await?.dependencies(Some(start), Some(end)).await? {
        *links.entry((e.parent, e.child)).or_default() += e.call_count;
    }
    let data: Vec<Value> = links
        .into_iter()
        .map(|((parent, child), n)| json!({"parent": parent, "child": child, "callCount": n}))
        .collect();
    Ok(envelope_partial(json!(data), partial_errors(&st.damage(&tenant, Some(start), Some(end)), None)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use skein_storage::model::{Scope, SpanId};

    use super::*;
    use crate::api::tests::get;
    use crate::engine::testutil::{append, span, storage};
    use crate::QueryConfig;

    fn app(s: &Arc<skein_storage::Storage>) -> axum::Router {
        crate::api::tests::app_with(s, QueryConfig::default())
    }

    /// Two requests as the workload sends them: `frontend` serves
    /// `GET /cart` (SERVER, HTTP instrumentation) and calls `cart` (CLIENT);
    /// in trace 1 `cart`'s SERVER span fails with a message, and a
    /// database CLIENT span sits under it; trace 2's root is marked OK and
    /// calls nothing.
    fn workload() -> Vec<Span> {
        let http = Arc::new(Scope { name: "io.opentelemetry.http".into(), version: "2.1.0".into() });
        let grpc = Arc::new(Scope { name: "io.opentelemetry.grpc".into(), version: "1.9.0".into() });
        let s = 1_000_000_000;
        let with = |mut sp: Span, k: u8, scope: &Arc<Scope>| {
            sp.kind = k;
            sp.scope = scope.clone();
            sp
        };
        let mut failed =
            with(span(1, 3, Some(2), "cart", "cart.Add", s + 20, 80_000_000, true), kind::SERVER, &grpc);
        failed.status_message = "connection refused".into();
        let mut ok_root =
            with(span(2, 1, None, "frontend", "GET /cart", 2 * s, 30_000_000, false), kind::SERVER, &http);
        ok_root.status_code = status::OK;
        vec![
            with(span(1, 1, None, "frontend", "GET /cart", s, 100_000_000, false), kind::SERVER, &http),
            with(span(1, 2, Some(1), "frontend", "cart.Add", s + 10, 90_000_000, false), kind::CLIENT, &grpc),
            failed,
            with(span(1, 4, Some(3), "cart", "SELECT", s + 30, 10_000_000, false), kind::CLIENT, &grpc),
            ok_root,
        ]
    }

    /// Issue 9 item 4: every tag Skein synthesises in the Jaeger view is
    /// searchable, on the same span as the other conditions, with `tags`
    /// JSON and the `tag=k:v` form, in the head and in segments.
    #[tokio::test]
    async fn synthesised_tags_are_searchable() {
        let (_d, s) = storage();
        append(&s, workload()).await;
        let app = app(&s);
        let t1 = TraceId([1; 16]).to_hex();
        let t2 = TraceId([2; 16]).to_hex();
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let find = |q: &'static str| {
                let app = app.clone();
                async move {
                    let q = q.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace(' ', "%20");
                    let (st, v) = get(&app, &format!("/jaeger/api/traces?{q}")).await;
                    assert_eq!(st, StatusCode::OK, "{q}: {v}");
                    let mut ids: Vec<String> = v["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["traceID"].as_str().unwrap().into())
                        .collect();
                    ids.sort();
                    ids
                }
            };
            let one = vec![t1.clone()];
            let both = vec![t1.clone(), t2.clone()];
            assert_eq!(find(r#"service=cart&tags={"error":"true"}"#).await, one);
            assert_eq!(find(r#"service=cart&tags={"error":true}"#).await, one);
            assert_eq!(find("service=cart&tag=error:true").await, one);
            // On the same span: no frontend span failed.
            assert!(find(r#"service=frontend&tags={"error":"true"}"#).await.is_empty());
            assert_eq!(find(r#"service=frontend&tags={"error":"false"}"#).await, both);
            assert_eq!(find(r#"service=cart&tags={"otel.status_code":"ERROR"}"#).await, one);
            assert_eq!(find(r#"tags={"otel.status_code":"OK"}"#).await, vec![t2.clone()]);
            assert_eq!(find(r#"tags={"otel.status_description":"connection refused"}"#).await, one);
            assert!(find(r#"tags={"otel.status_description":"timeout"}"#).await.is_empty());
            assert_eq!(find(r#"service=frontend&tags={"span.kind":"client"}"#).await, one);
            assert_eq!(find("service=frontend&tag=span.kind:server").await, both);
            assert!(find(r#"service=cart&tags={"span.kind":"consumer"}"#).await.is_empty());
            assert_eq!(find(r#"tags={"otel.scope.name":"io.opentelemetry.http"}"#).await, both);
            assert_eq!(
                find(r#"tags={"otel.scope.name":"io.opentelemetry.grpc","otel.scope.version":"1.9.0"}"#)
                    .await,
                one
            );
            // With an attribute and an operation, all on cart's SERVER span.
            assert_eq!(
                find(r#"service=cart&operation=cart.Add&tags={"span.kind":"server","error":"true","http.status":"500"}"#)
                    .await,
                one
            );
            assert!(find(r#"service=cart&tags={"span.kind":"client","error":"true"}"#).await.is_empty());
        }
        let (st, v) = get(&app, "/jaeger/api/traces?tag=span.kind:sideways").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("server, client, producer, consumer or internal"),
            "{v}"
        );

        // Each tag searched above is one the view shows on cart's span.
        let (_, v) = get(&app, &format!("/jaeger/api/traces/{t1}")).await;
        let cart = v["data"][0]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|sp| sp["spanID"] == SpanId([3; 8]).to_hex())
            .unwrap();
        let tags: HashMap<&str, &Value> = cart["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["key"].as_str().unwrap(), &t["value"]))
            .collect();
        assert_eq!(tags["error"], &json!(true));
        assert_eq!(tags["otel.status_code"], &json!("ERROR"));
        assert_eq!(tags["otel.status_description"], &json!("connection refused"));
        assert_eq!(tags["span.kind"], &json!("server"));
        assert_eq!(tags["otel.scope.name"], &json!("io.opentelemetry.grpc"));
        assert_eq!(tags["otel.scope.version"], &json!("1.9.0"));
    }

    /// Jaeger's UI looks traces up with repeated `traceID` on the search
    /// endpoint, which answered unrelated search results (issue 9 review).
    #[tokio::test]
    async fn trace_ids_on_the_search_endpoint_look_traces_up() {
        let (_d, s) = storage();
        append(&s, workload()).await;
        let app = app(&s);
        let (t1, t2) = (TraceId([1; 16]).to_hex(), TraceId([2; 16]).to_hex());
        let unknown = TraceId([9; 16]).to_hex();
        let (st, v) =
            get(&app, &format!("/jaeger/api/traces?traceID={t2}&traceID={t1}&traceID={unknown}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let ids: Vec<&str> =
            v["data"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap()).collect();
        assert_eq!(ids, [t2.as_str(), t1.as_str()]);
        for bad in ["0", "xyz"] {
            let (st, v) = get(&app, &format!("/jaeger/api/traces?traceID={bad}&service=frontend")).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        }
    }
}
