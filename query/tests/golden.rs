//! Golden tests: Skein's Jaeger and Tempo answers against the anchors' own
//! published fixtures (`tests/fixtures/golden/`, each with its source in the
//! README there). Each test loads the fixture's spans into Skein, asks the
//! endpoint the fixture answers, and compares the two JSON documents path
//! by path: every key missing or extra, every JSON type and every value that
//! differs is a failure unless the test's allow list names it with a reason
//! (those reasons are also in `docs/api.md`, "Compatibility"). `insta`
//! snapshots of our answers keep them from drifting silently.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde_json::{json, Map, Value};
use skein_query::{ApiState, QueryConfig};
use skein_storage::model::{
    kind, status, AttrValue, Attributes, Event, Link, Resource, Scope, Span, SpanId, TraceId,
};
use skein_storage::tenant::Tenants;
use skein_storage::Storage;
use tower::ServiceExt as _;

// ---------------------------------------------------------------------------
// The comparison

/// How our answer differs from the fixture at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Diff {
    /// The fixture has the key, we do not.
    Missing,
    /// We have a key the fixture does not.
    Extra,
    /// We have a key the fixture does not, at its proto3 default (`0`,
    /// `""`, `false`, `[]`, `{}`), which proto3's JSON mapping lets a writer
    /// send or leave out alike.
    ExtraDefault,
    /// Both have it with different JSON types (string vs number, null vs array...).
    Type,
    /// Same type, different value (for arrays: a different length).
    Value,
}

/// A difference that is not a defect: `path` is a `/`-separated pattern
/// where `*` stands for one segment and `**` for any number of them.
#[derive(Debug)]
struct Allow {
    path: &'static str,
    diff: Diff,
    why: &'static str,
}

const fn allow(path: &'static str, diff: Diff, why: &'static str) -> Allow {
    Allow { path, diff, why }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every path where `ours` and `theirs` differ, depth first.
fn differences(ours: &Value, theirs: &Value) -> Vec<(String, Diff, String)> {
    fn walk(ours: &Value, theirs: &Value, path: &str, out: &mut Vec<(String, Diff, String)>) {
        match (ours, theirs) {
            (Value::Object(o), Value::Object(t)) => {
                for (k, tv) in t {
                    let p = format!("{path}/{k}");
                    match o.get(k) {
                        Some(ov) => walk(ov, tv, &p, out),
                        None => out.push((p, Diff::Missing, format!("the fixture has {tv}"))),
                    }
                }
                for (k, ov) in o {
                    if !t.contains_key(k) {
                        let d = if is_proto3_default(ov) { Diff::ExtraDefault } else { Diff::Extra };
                        out.push((format!("{path}/{k}"), d, format!("we answer {ov}")));
                    }
                }
            }
            (Value::Array(o), Value::Array(t)) => {
                if o.len() != t.len() {
                    let what = format!("we answer {} elements, the fixture {}", o.len(), t.len());
                    out.push((path.to_string(), Diff::Value, what));
                }
                for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                    walk(ov, tv, &format!("{path}/{i}"), out);
                }
            }
            _ if json_type(ours) != json_type(theirs) => {
                let what = format!(
                    "we answer {} {ours}, the fixture {} {theirs}",
                    json_type(ours),
                    json_type(theirs)
                );
                out.push((path.to_string(), Diff::Type, what));
            }
            _ if ours != theirs => {
                out.push((path.to_string(), Diff::Value, format!("we answer {ours}, the fixture {theirs}")))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(ours, theirs, "", &mut out);
    out
}

fn is_proto3_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[&str], s: &[&str]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&"**", rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((seg, rest)) => !s.is_empty() && (*seg == "*" || *seg == s[0]) && go(rest, &s[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    go(&p, &s)
}

/// Panics listing every difference between `ours` and `theirs` that
/// `allowed` does not explain.
fn agree(name: &str, ours: &Value, theirs: &Value, allowed: &[Allow]) {
    let mut unexplained = Vec::new();
    for (path, diff, what) in differences(ours, theirs) {
        match allowed.iter().find(|a| a.diff == diff && path_matches(a.path, &path)) {
            // Shown with `--nocapture`.
            Some(a) => eprintln!("{name}: allowed {path}: {diff:?}: {what} ({})", a.why),
            None => unexplained.push(format!("  {path}: {diff:?}: {what}")),
        }
    }
    assert!(
        unexplained.is_empty(),
        "{name}: our answer differs from the fixture:\n{}\nours: {ours:#}",
        unexplained.join("\n")
    );
    for a in allowed {
        assert!(!a.why.is_empty(), "{name}: {} is allowed without a reason", a.path);
    }
}

#[test]
fn the_comparison_reports_each_kind_of_difference_and_honours_the_allow_list() {
    let theirs = json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": [], "n": null});
    let ours = json!({"a": "1", "b": {"c": "y", "d": [1], "z": true, "zero": 0}, "e": null});
    let mut got: Vec<(String, Diff)> =
        differences(&ours, &theirs).into_iter().map(|(p, d, _)| (p, d)).collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    let want = [
        ("/a", Diff::Type),
        ("/b/c", Diff::Value),
        ("/b/d", Diff::Value),
        ("/b/z", Diff::Extra),
        ("/b/zero", Diff::ExtraDefault),
        ("/e", Diff::Type),
        ("/n", Diff::Missing),
    ];
    assert_eq!(got, want.map(|(p, d)| (p.to_string(), d)));
    assert!(path_matches("/spans/*/tags", "/spans/3/tags"));
    assert!(path_matches("/metrics/**", "/metrics/additionalMetrics/cacheHits"));
    assert!(path_matches("/**/traceId", "/a/0/b/traceId"));
    assert!(!path_matches("/spans/*", "/spans/3/tags"));
    let allowed = [
        allow("/a", Diff::Type, "test"),
        allow("/b/*", Diff::Value, "test"),
        allow("/b/z", Diff::Extra, "test"),
        allow("/b/zero", Diff::ExtraDefault, "test"),
        allow("/e", Diff::Type, "test"),
        allow("/n", Diff::Missing, "test"),
    ];
    agree("self-test", &ours, &theirs, &allowed);
    let r = std::panic::catch_unwind(|| agree("self-test", &ours, &theirs, &allowed[1..]));
    assert!(r.is_err(), "an unexplained type difference must fail");
}

// ---------------------------------------------------------------------------
// Fixtures, storage, requests

fn fixture(path: &str) -> Value {
    let file = format!("{}/tests/fixtures/golden/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// An open, replayed storage in a fresh tempdir (kept alive by the guard).
fn storage() -> (tempfile::TempDir, Arc<Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
    s.replay().unwrap();
    (dir, s)
}

fn app(s: &Arc<Storage>) -> axum::Router {
    skein_query::router(ApiState::new(
        Tenants::from_storage(s.clone()),
        Default::default(),
        QueryConfig::default(),
    ))
}

async fn get_raw(app: &axum::Router, uri: &str) -> (StatusCode, Vec<u8>) {
    let r = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = r.status();
    (status, r.into_body().collect().await.unwrap().to_bytes().to_vec())
}

/// GETs `uri`, asserting a 200 with a JSON body.
async fn get(app: &axum::Router, uri: &str) -> Value {
    let (status, body) = get_raw(app, uri).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{uri}: {text}");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri}: {e}: {text}"))
}

fn hex_id<const N: usize>(h: &str) -> [u8; N] {
    let mut padded = "0".repeat((2 * N).saturating_sub(h.len()));
    padded.push_str(h);
    hex::decode(&padded).unwrap().try_into().unwrap()
}

fn resource(service: &str, mut attributes: Attributes) -> Arc<Resource> {
    attributes.insert(0, ("service.name".into(), AttrValue::Str(service.into())));
    Arc::new(Resource { service_name: service.into(), attributes })
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: [u8; 16],
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    res: &Arc<Resource>,
    name: &str,
    span_kind: u8,
    start: u64,
    dur_ns: u64,
) -> Span {
    Span {
        trace_id: TraceId(trace),
        span_id: SpanId(id),
        parent_span_id: parent.map(SpanId),
        trace_state: String::new(),
        flags: 0,
        name: name.into(),
        kind: span_kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ns,
        status_code: status::UNSET,
        status_message: String::new(),
        attributes: Vec::new(),
        resource: res.clone(),
        scope: Arc::new(Scope::default()),
        events: Vec::new(),
        links: Vec::new(),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

// ---------------------------------------------------------------------------
// Jaeger

/// Jaeger's UI-model trace (`ui_01.json`) as Skein spans, converted as
/// Jaeger's own Jaeger-to-OTLP translator does: the first CHILD_OF reference
/// within the trace is the parent, every other reference a link carrying
/// `opentracing.ref_type`; the tag `error=true` is the ERROR status; a log's
/// `event` field is the event's name. Each span gets its own `Resource`
/// (`Arc`), as spans of one process arriving in separate batches do.
fn jaeger_ui_to_spans(t: &Value) -> Vec<Span> {
    let attr = |tag: &Value| -> (String, AttrValue) {
        let key = tag["key"].as_str().unwrap().to_string();
        let v = &tag["value"];
        let value = match tag["type"].as_str().unwrap() {
            "string" => AttrValue::Str(v.as_str().unwrap().into()),
            "bool" => AttrValue::Bool(v.as_bool().unwrap()),
            "int64" => AttrValue::Int(v.as_i64().unwrap_or_else(|| v.as_str().unwrap().parse().unwrap())),
            "float64" => AttrValue::Double(v.as_f64().unwrap()),
            "binary" => AttrValue::Bytes(
                base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap(),
            ),
            other => panic!("tag type {other}"),
        };
        (key, value)
    };
    t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|js| {
            let trace: [u8; 16] = hex_id(js["traceID"].as_str().unwrap());
            let process = &t["processes"][js["processID"].as_str().unwrap()];
            let ptags = process["tags"].as_array().unwrap().iter().map(attr).collect();
            let res = resource(process["serviceName"].as_str().unwrap(), ptags);
            let start = js["startTime"].as_u64().unwrap() * 1_000;
            let dur = js["duration"].as_u64().unwrap() * 1_000;
            let mut s = span(
                trace,
                hex_id(js["spanID"].as_str().unwrap()),
                None,
                &res,
                "",
                kind::UNSPECIFIED,
                start,
                dur,
            );
            s.name = js["operationName"].as_str().unwrap().into();
            for r in js["references"].as_array().unwrap() {
                let (rt, rs): ([u8; 16], [u8; 8]) =
                    (hex_id(r["traceID"].as_str().unwrap()), hex_id(r["spanID"].as_str().unwrap()));
                let child_of = r["refType"] == "CHILD_OF";
                if child_of && rt == trace && s.parent_span_id.is_none() {
                    s.parent_span_id = Some(SpanId(rs));
                    continue;
                }
                let ref_type = if child_of { "child_of" } else { "follows_from" };
                s.links.push(Link {
                    trace_id: TraceId(rt),
                    span_id: SpanId(rs),
                    trace_state: String::new(),
                    attributes: vec![("opentracing.ref_type".into(), AttrValue::Str(ref_type.into()))],
                });
            }
            for tag in js["tags"].as_array().unwrap() {
                match attr(tag) {
                    (k, AttrValue::Bool(true)) if k == "error" => s.status_code = status::ERROR,
                    kv => s.attributes.push(kv),
                }
            }
            for l in js["logs"].as_array().unwrap() {
                let mut e = Event {
                    time_unix_nano: l["timestamp"].as_u64().unwrap() * 1_000,
                    name: String::new(),
                    attributes: Vec::new(),
                };
                for f in l["fields"].as_array().unwrap() {
                    match attr(f) {
                        (k, AttrValue::Str(v)) if k == "event" => e.name = v,
                        kv => e.attributes.push(kv),
                    }
                }
                s.events.push(e);
            }
            s
        })
        .collect()
}

/// The fixture has two spans with span ID 2 (Jaeger keeps both); Skein
/// stores one span per (trace, span) ID, the first received (an exporter's
/// retry), so the second is loaded, and expected, as span 6.
fn renumber_duplicate_span(t: &mut Value) {
    let spans = t["spans"].as_array_mut().unwrap();
    assert_eq!(spans[0]["spanID"], spans[1]["spanID"], "the fixture changed");
    spans[1]["spanID"] = json!("0000000000000006");
}

/// Both traces in a comparable form: spans ordered by ID, tags keyed by
/// name (their order carries no meaning: Jaeger's translator puts the
/// synthesised ones after the attributes), references sorted (the UI reads
/// `references[0]` as the parent; checked separately), `processID` replaced
/// by its process and the processes listed by service (the IDs `pN` are per
/// answer).
fn normalize_jaeger_trace(t: &Value) -> Value {
    fn by_key(tags: &Value) -> Value {
        let mut m = Map::new();
        for tag in tags.as_array().unwrap() {
            let prev = m.insert(
                tag["key"].as_str().unwrap().to_string(),
                json!({"type": tag["type"], "value": tag["value"]}),
            );
            assert!(prev.is_none(), "tag {} twice: {tags}", tag["key"]);
        }
        Value::Object(m)
    }
    let mut t = t.clone();
    let processes = t["processes"].as_object().unwrap().clone();
    let mut spans = t["spans"].as_array().unwrap().clone();
    for s in &mut spans {
        let p = &processes[s["processID"].as_str().unwrap()];
        s["processID"] = p["serviceName"].clone();
        s["tags"] = by_key(&s["tags"]);
        let mut refs = s["references"].as_array().unwrap().clone();
        refs.sort_by_key(|r| r.to_string());
        s["references"] = Value::Array(refs);
    }
    spans.sort_by_key(|s| s["spanID"].as_str().unwrap().to_string());
    t["spans"] = Value::Array(spans);
    let mut ps: Vec<Value> = processes
        .values()
        .map(|p| json!({"serviceName": p["serviceName"], "tags": by_key(&p["tags"])}))
        .collect();
    ps.sort_by_key(|p| p.to_string());
    t["processes"] = Value::Array(ps);
    t
}

/// What Skein answers differently from `ui_01.json`, and why.
const JAEGER_TRACE_ALLOWED: &[Allow] = &[
    allow(
        "/data/0/warnings",
        Diff::Type,
        "Skein has no warnings for a whole trace (Jaeger's come from its adjusters, e.g. clock skew); \
         Jaeger too answers null when there are none",
    ),
    allow("/data/0/spans/*/warnings", Diff::Type, "the same for span warnings"),
    allow(
        "/data/0/spans/*/tags/otel.status_code",
        Diff::Extra,
        "the span's OTLP status, which Jaeger's OTLP translator adds beside `error` (the fixture predates OTLP)",
    ),
];

/// `GET /jaeger/api/traces/{id}` answers `ui_01.json` for its spans: field
/// names, types, µs units, hex IDs, typed tags (a 64-bit integer beyond
/// 2^53 as text), logs, references and processes shared by spans of one
/// process, whether the spans sit in the head or in a segment and however
/// they were batched.
#[tokio::test]
async fn jaeger_trace_agrees_with_ui_01() {
    let mut want = fixture("jaeger/ui_01.json");
    renumber_duplicate_span(&mut want);
    let (_d, s) = storage();
    for sp in jaeger_ui_to_spans(&want) {
        s.append_spans(vec![sp]).await.unwrap();
    }
    let app = app(&s);
    let uri = format!("/jaeger/api/traces/{}", want["traceID"].as_str().unwrap());
    let head = get(&app, &uri).await;
    insta::assert_json_snapshot!("jaeger_trace_ui_01", head);
    s.flush(true).unwrap();
    let flushed = get(&app, &uri).await;
    for ours in [&head, &flushed] {
        // The envelope is Jaeger's `structuredResponse` (cmd/query/app/http_handler.go).
        let mut ours_n = ours.clone();
        ours_n["data"][0] = normalize_jaeger_trace(&ours["data"][0]);
        let theirs = json!({"data": [normalize_jaeger_trace(&want)], "total": 1, "limit": 0, "offset": 0, "errors": null});
        agree("jaeger trace ui_01", &ours_n, &theirs, JAEGER_TRACE_ALLOWED);

        let t = &ours["data"][0];
        let ids: Vec<&str> = t["processes"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(ids, ["p1", "p2"], "one process per service: {t:#}");
        // The Jaeger UI takes `references[0]` for the parent.
        let s4 = t["spans"].as_array().unwrap().iter().find(|s| s["spanID"] == "0000000000000004").unwrap();
        assert_eq!(s4["references"][0]["spanID"], "0000000000000002", "{s4:#}");
        assert_eq!(s4["references"][0]["refType"], "CHILD_OF", "{s4:#}");
    }
}

/// `GET /jaeger/api/services` is Jaeger's envelope around the service names.
#[tokio::test]
async fn jaeger_services_agree_with_the_envelope() {
    let want = fixture("jaeger/envelope_services.json");
    let (_d, s) = storage();
    s.append_spans(jaeger_ui_to_spans(&fixture("jaeger/ui_01.json"))).await.unwrap();
    let ours = get(&app(&s), "/jaeger/api/services").await;
    insta::assert_json_snapshot!("jaeger_services", ours);
    agree("jaeger services", &ours, &want, &[]);
}

/// `GET /jaeger/api/dependencies` answers Jaeger's `DependencyLink`s
/// (`parent`, `child`, `callCount`) for the links of Jaeger's own
/// `TestDependenciesFromDomain`: 123 calls from someParent to someChild and
/// 456 from anotherParent to anotherChild, each a CLIENT span calling a
/// SERVER span.
#[tokio::test]
async fn jaeger_dependencies_agree_with_dependency_links() {
    let want = fixture("jaeger/dependencies.json");
    let (_d, s) = storage();
    let start = now_ns() - 3_600_000_000_000;
    let mut spans = Vec::new();
    let mut trace = 0u64;
    for link in want["data"].as_array().unwrap() {
        let parent = resource(link["parent"].as_str().unwrap(), Vec::new());
        let child = resource(link["child"].as_str().unwrap(), Vec::new());
        for _ in 0..link["callCount"].as_u64().unwrap() {
            trace += 1;
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&trace.to_be_bytes());
            let at = start + trace * 1_000_000;
            spans.push(span(t, [1; 8], None, &parent, "call", kind::CLIENT, at, 2_000_000));
            spans.push(span(t, [2; 8], Some([1; 8]), &child, "serve", kind::SERVER, at + 1_000, 1_000_000));
        }
    }
    s.append_spans(spans).await.unwrap();
    let mut ours = get(&app(&s), "/jaeger/api/dependencies").await;
    // Links are a set: Jaeger's order is its storage's.
    ours["data"].as_array_mut().unwrap().sort_by_key(|l| l["parent"].as_str().map(String::from));
    insta::assert_json_snapshot!("jaeger_dependencies", ours);
    let mut want = want;
    want["data"].as_array_mut().unwrap().sort_by_key(|l| l["parent"].as_str().map(String::from));
    agree("jaeger dependencies", &ours, &want, &[]);
}

// ---------------------------------------------------------------------------
// OTLP/JSON (Tempo's trace by ID, Jaeger's api_v3)

fn otlp_attrs(v: &Value) -> Attributes {
    let Some(a) = v.as_array() else { return Vec::new() };
    a.iter()
        .map(|kv| {
            let v = &kv["value"];
            let value = if let Some(s) = v.get("stringValue") {
                AttrValue::Str(s.as_str().unwrap().into())
            } else if let Some(i) = v.get("intValue") {
                AttrValue::Int(i.as_str().map_or_else(|| i.as_i64().unwrap(), |s| s.parse().unwrap()))
            } else if let Some(b) = v.get("boolValue") {
                AttrValue::Bool(b.as_bool().unwrap())
            } else if let Some(d) = v.get("doubleValue") {
                AttrValue::Double(d.as_f64().unwrap())
            } else {
                panic!("attribute value {v}")
            };
            (kv["key"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

/// An OTLP/JSON `resourceSpans` list as Skein spans; `id` decodes a trace
/// or span ID (hex per the OTLP/JSON spec, base64 in Tempo's gogo/jsonpb).
fn otlp_to_spans(resource_spans: &Value, id: fn(&str) -> Vec<u8>) -> Vec<Span> {
    let num = |v: &Value| v.as_str().map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap());
    let mut out = Vec::new();
    for rs in resource_spans.as_array().unwrap() {
        let attributes = otlp_attrs(&rs["resource"]["attributes"]);
        let service = attributes
            .iter()
            .find_map(|(k, v)| match v {
                AttrValue::Str(s) if k == "service.name" => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        let res = Arc::new(Resource { service_name: service, attributes });
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for js in ss["spans"].as_array().unwrap() {
                let parent =
                    js["parentSpanId"].as_str().filter(|p| !p.is_empty()).map(|p| id(p).try_into().unwrap());
                let start = num(&js["startTimeUnixNano"]);
                let mut s = span(
                    id(js["traceId"].as_str().unwrap()).try_into().unwrap(),
                    id(js["spanId"].as_str().unwrap()).try_into().unwrap(),
                    parent,
                    &res,
                    js["name"].as_str().unwrap(),
                    js["kind"].as_u64().unwrap_or(0) as u8,
                    start,
                    num(&js["endTimeUnixNano"]) - start,
                );
                s.attributes = otlp_attrs(&js["attributes"]);
                s.status_code = js["status"]["code"].as_u64().unwrap_or(0) as u8;
                for e in js["events"].as_array().into_iter().flatten() {
                    s.events.push(Event {
                        time_unix_nano: num(&e["timeUnixNano"]),
                        name: e["name"].as_str().unwrap_or_default().into(),
                        attributes: otlp_attrs(&e["attributes"]),
                    });
                }
                out.push(s);
            }
        }
    }
    out
}

fn from_hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn from_base64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Tempo's JSON trace with its base64 IDs in hex, as OTLP/JSON and Skein
/// write them (see `TEMPO_TRACE_ALLOWED`).
fn ids_to_hex(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), x.as_str()) {
                    ("traceId" | "spanId" | "parentSpanId", Some(b64)) => {
                        *x = json!(hex::encode(from_base64(b64)))
                    }
                    _ => ids_to_hex(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(ids_to_hex),
        _ => {}
    }
}

/// The spans of each `scopeSpans` ordered by ID: a trace's spans are a
/// set, listed in the order each backend reads them.
fn sort_otlp_spans(v: &mut Value) {
    for rs in v.as_array_mut().unwrap() {
        for ss in rs["scopeSpans"].as_array_mut().unwrap() {
            ss["spans"].as_array_mut().unwrap().sort_by_key(|s| s["spanId"].as_str().map(String::from));
        }
    }
}

/// What Skein's OTLP/JSON trace has beyond Tempo's and Jaeger's, and why.
const OTLP_TRACE_ALLOWED: &[Allow] = &[allow(
    "/**",
    Diff::ExtraDefault,
    "proto3 JSON: a field at its default value may be written or left out, and readers take both; \
     Skein writes every field (opentelemetry-proto's serde form)",
)];

/// `GET /tempo/api/v2/traces/{id}` and `/tempo/api/traces/{id}` answer
/// Tempo's trace JSON (`tempo-vulture/testdata/trace.json`, an excerpt) for
/// its spans.
#[tokio::test]
async fn tempo_trace_agrees_with_tempo_vulture_trace() {
    let mut want = fixture("tempo/trace_vulture_excerpt.json");
    let (_d, s) = storage();
    let spans = otlp_to_spans(&want["resourceSpans"], from_base64);
    let id = spans[0].trace_id.to_hex();
    s.append_spans(spans).await.unwrap();
    ids_to_hex(&mut want);
    sort_otlp_spans(&mut want["resourceSpans"]);
    let app = app(&s);
    let mut v2 = get(&app, &format!("/tempo/api/v2/traces/{id}")).await;
    insta::assert_json_snapshot!("tempo_trace_v2", v2);
    sort_otlp_spans(&mut v2["trace"]["resourceSpans"]);
    agree("tempo trace v2", &v2, &json!({"trace": want}), TEMPO_TRACE_ALLOWED);
    let mut v1 = get(&app, &format!("/tempo/api/traces/{id}")).await;
    insta::assert_json_snapshot!("tempo_trace_v1", v1);
    // v1 names the list `batches`: `tempopb.Trace`'s field before Tempo
    // renamed it `resourceSpans` (the name the fixture and v2 use).
    let mut batches = v1.as_object_mut().unwrap().remove("batches").expect("v1 answers batches");
    sort_otlp_spans(&mut batches);
    agree("tempo trace v1", &json!({"resourceSpans": batches}), &want, TEMPO_TRACE_ALLOWED);
}

/// Where Skein's trace JSON differs from Tempo's, and why: as
/// [`OTLP_TRACE_ALLOWED`]; and the IDs, which `ids_to_hex` turns from
/// Tempo's base64 (gogo/jsonpb's form of `bytes`) into the hex of the
/// OTLP/JSON specification that Skein (and Jaeger's api_v3) write: Grafana
/// reads Tempo traces as protobuf (`Accept: application/protobuf`), which
/// carries raw bytes.
const TEMPO_TRACE_ALLOWED: &[Allow] = OTLP_TRACE_ALLOWED;

/// Tempo's v2 trace's `resourceSpans` agree with Jaeger's api_v3 `GetTrace`
/// snapshot, the OTLP/JSON both anchors answer (hex IDs, enums as numbers,
/// 64-bit times as strings).
#[tokio::test]
async fn tempo_trace_agrees_with_jaeger_api_v3_get_trace() {
    let want = fixture("jaeger/api_v3_GetTrace.json");
    let (_d, s) = storage();
    let spans = otlp_to_spans(&want["result"]["resourceSpans"], from_hex);
    let id = spans[0].trace_id.to_hex();
    s.append_spans(spans).await.unwrap();
    let ours = get(&app(&s), &format!("/tempo/api/v2/traces/{id}")).await;
    insta::assert_json_snapshot!("tempo_trace_v2_api_v3", ours);
    agree("api_v3 GetTrace", &json!({"result": ours["trace"]}), &want, OTLP_TRACE_ALLOWED);
}

// ---------------------------------------------------------------------------
// Tempo search and tags (examples of docs/sources/tempo/api_docs/_index.md)

/// Tempo trims a trace ID's leading zeroes in search results; Skein answers
/// all 32 digits (both forms are accepted back by `/api/traces/{id}`), so
/// ours are trimmed before comparing.
fn trim_trace_ids(v: &mut Value) {
    for t in v["traces"].as_array_mut().unwrap() {
        let id = t["traceID"].as_str().unwrap().trim_start_matches('0').to_string();
        t["traceID"] = json!(id);
    }
}

/// A search answer without its `metrics`, for the snapshot: they count
/// work done, which changes with how the engine searches; `agree` still
/// checks the type of each count the example has.
fn without_metrics(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("metrics");
    v
}

/// Fields of Tempo's `SearchMetrics` Skein does not count (yet), and the
/// counts themselves, which differ with the corpus.
const SEARCH_METRICS_ALLOWED: [Allow; 3] = [
    allow(
        "/metrics/**",
        Diff::Missing,
        "a count Skein does not keep (a `SearchMetrics` field, optional in proto3 JSON)",
    ),
    allow("/metrics/**", Diff::Extra, "a `SearchMetrics` field the example leaves out"),
    allow("/metrics/*", Diff::Value, "counts of the example's corpus, not of these spans"),
];

/// `GET /tempo/api/search?q={ status=error }` answers the example of the
/// TraceQL search for the example's trace.
#[tokio::test]
async fn tempo_traceql_search_agrees_with_the_docs_example() {
    let want = fixture("tempo/search_traceql.json");
    let (_d, s) = storage();
    let t = &want["traces"][0];
    let m = &t["spanSets"][0]["spans"][0];
    let trace: [u8; 16] = hex_id(t["traceID"].as_str().unwrap());
    let start: u64 = t["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let root = span(
        trace,
        [1; 8],
        None,
        &resource("shop-backend", Vec::new()),
        "update-billing",
        kind::SERVER,
        start,
        557_000_000,
    );
    let mut failed = span(
        trace,
        hex_id(m["spanID"].as_str().unwrap()),
        Some([1; 8]),
        &resource("billing-service", Vec::new()),
        "charge",
        kind::SERVER,
        m["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        m["durationNanos"].as_str().unwrap().parse().unwrap(),
    );
    failed.status_code = status::ERROR;
    s.append_spans(vec![root, failed]).await.unwrap();
    let ours = get(&app(&s), "/tempo/api/search?q=%7B%20status%3Derror%20%7D").await;
    insta::assert_json_snapshot!("tempo_search_traceql", without_metrics(&ours));
    let mut allowed = vec![
        allow(
            "/traces/*/spanSet",
            Diff::Extra,
            "the deprecated single span set (`TraceSearchMetadata.spanSet`), which older Grafana reads",
        ),
        allow(
            "/traces/*/spanSets/*/spans/*/name",
            Diff::Extra,
            "the span's name (`tempopb.Span.name`), which the example leaves out",
        ),
        allow(
            "/traces/*/spanSets/*/spans/*/attributes",
            Diff::Value,
            "Skein lists no attributes of a matched span; Tempo lists those the query's conditions read",
        ),
    ];
    allowed.extend(SEARCH_METRICS_ALLOWED);
    agree("tempo TraceQL search", &ours, &want, &allowed);
}

/// `GET /tempo/api/search?tags=service.name=cartservice&minDuration=600ms`
/// answers the example of the tags search for the example's two traces.
#[tokio::test]
async fn tempo_tags_search_agrees_with_the_docs_example() {
    let want = fixture("tempo/search_tags_based.json");
    let (_d, s) = storage();
    let (frontend, cart) = (resource("frontend", Vec::new()), resource("cartservice", Vec::new()));
    for t in want["traces"].as_array().unwrap() {
        let trace: [u8; 16] = hex_id(t["traceID"].as_str().unwrap());
        let start: u64 = t["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let dur = t["durationMs"].as_u64().unwrap() * 1_000_000;
        s.append_spans(vec![
            span(trace, [1; 8], None, &frontend, "/cart", kind::SERVER, start, dur),
            span(trace, [2; 8], Some([1; 8]), &cart, "GetCart", kind::SERVER, start + 1_000_000, 5_000_000),
        ])
        .await
        .unwrap();
    }
    // A shorter trace that minDuration leaves out.
    let short =
        span([7; 16], [1; 8], None, &frontend, "/cart", kind::SERVER, 1_634_727_800_000_000_000, 1_000_000);
    s.append_spans(vec![short]).await.unwrap();
    let mut ours = get(&app(&s), "/tempo/api/search?tags=service.name%3Dcartservice&minDuration=600ms").await;
    insta::assert_json_snapshot!("tempo_search_tags", without_metrics(&ours));
    trim_trace_ids(&mut ours);
    let mut allowed = vec![
        allow(
            "/traces/*/spanSet",
            Diff::Extra,
            "the matched spans (`TraceSearchMetadata.spanSet`), which this older example predates",
        ),
        allow(
            "/traces/*/spanSets",
            Diff::Extra,
            "the matched spans (`TraceSearchMetadata.spanSets`), which this older example predates",
        ),
    ];
    allowed.extend(SEARCH_METRICS_ALLOWED);
    agree("tempo tags search", &ours, &want, &allowed);
}

/// Tag names of the example, as span attributes except `service.name`.
const V1_TAG_NAMES: [&str; 13] = [
    "host.name",
    "http.method",
    "http.status_code",
    "http.url",
    "ip",
    "load_generator.seq_num",
    "name",
    "region",
    "root_cause_error",
    "sampler.param",
    "sampler.type",
    "starter",
    "version",
];

const TAG_LIST_METRICS_ALLOWED: Allow = allow(
    "/metrics",
    Diff::Missing,
    "Skein does not count the bytes a tag lookup reads (`metrics.inspectedBytes`)",
);

/// `GET /tempo/api/search/tags` answers the example's tag names.
#[tokio::test]
async fn tempo_tag_names_v1_agree_with_the_docs_example() {
    let want = fixture("tempo/search_tags_v1.json");
    let (_d, s) = storage();
    let mut sp = span([1; 16], [1; 8], None, &resource("svc", Vec::new()), "op", kind::SERVER, 1_000, 1_000);
    sp.attributes = V1_TAG_NAMES.iter().map(|k| (k.to_string(), AttrValue::Str("v".into()))).collect();
    s.append_spans(vec![sp]).await.unwrap();
    let ours = get(&app(&s), "/tempo/api/search/tags").await;
    insta::assert_json_snapshot!("tempo_tag_names_v1", ours);
    agree("tempo tag names v1", &ours, &want, &[TAG_LIST_METRICS_ALLOWED]);
}

/// Tempo's `scopes` keyed by name: their order carries no meaning.
fn scopes_by_name(v: &Value) -> Value {
    let mut m = Map::new();
    for sc in v["scopes"].as_array().unwrap() {
        m.insert(sc["name"].as_str().unwrap().to_string(), sc["tags"].clone());
    }
    let mut out = v.clone();
    out["scopes"] = Value::Object(m);
    out
}

/// `GET /tempo/api/v2/search/tags` answers the example's scopes and names.
#[tokio::test]
async fn tempo_tag_names_v2_agree_with_the_docs_example() {
    let want = fixture("tempo/search_tags_v2.json");
    let names = |scope: &str| -> Vec<String> {
        let sc = want["scopes"].as_array().unwrap().iter().find(|s| s["name"] == scope).unwrap();
        sc["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    };
    let strs = |keys: Vec<String>| -> Attributes {
        keys.into_iter().map(|k| (k, AttrValue::Str("v".into()))).collect()
    };
    let (_d, s) = storage();
    let res_attrs: Attributes =
        strs(names("resource")).into_iter().filter(|(k, _)| k != "service.name").collect();
    let mut sp = span([1; 16], [1; 8], None, &resource("svc", res_attrs), "op", kind::SERVER, 1_000, 1_000);
    sp.attributes = strs(names("span"));
    sp.events.push(Event {
        time_unix_nano: 1_500,
        name: "exception".into(),
        attributes: strs(names("event")),
    });
    sp.links.push(Link {
        trace_id: TraceId([2; 16]),
        span_id: SpanId([2; 8]),
        trace_state: String::new(),
        attributes: strs(names("link")),
    });
    s.append_spans(vec![sp]).await.unwrap();
    let ours = get(&app(&s), "/tempo/api/v2/search/tags").await;
    insta::assert_json_snapshot!("tempo_tag_names_v2", ours);
    let allowed = [
        TAG_LIST_METRICS_ALLOWED,
        allow(
            "/scopes/event",
            Diff::Missing,
            "Skein's tag index holds span and resource attribute names, not those of events",
        ),
        allow(
            "/scopes/link",
            Diff::Missing,
            "Skein's tag index holds span and resource attribute names, not those of links",
        ),
        allow(
            "/scopes/intrinsic/**",
            Diff::Value,
            "Skein lists the intrinsics its TraceQL accepts (docs/traceql.md), not Tempo's",
        ),
    ];
    agree("tempo tag names v2", &scopes_by_name(&ours), &scopes_by_name(&want), &allowed);
}

/// `GET /tempo/api/search/tag/service.name/values` answers the example's
/// services.
#[tokio::test]
async fn tempo_tag_values_v1_agree_with_the_docs_example() {
    let want = fixture("tempo/tag_values_v1.json");
    let (_d, s) = storage();
    for (i, svc) in want["tagValues"].as_array().unwrap().iter().enumerate() {
        let res = resource(svc.as_str().unwrap(), Vec::new());
        s.append_spans(vec![span([i as u8 + 1; 16], [1; 8], None, &res, "op", kind::SERVER, 1_000, 1_000)])
            .await
            .unwrap();
    }
    let ours = get(&app(&s), "/tempo/api/search/tag/service.name/values").await;
    insta::assert_json_snapshot!("tempo_tag_values_v1", ours);
    agree("tempo tag values v1", &ours, &want, &[TAG_LIST_METRICS_ALLOWED]);
}

/// `GET /tempo/api/v2/search/tag/.service.name/values` answers the
/// example's typed values (compared as a set: the order is Tempo's).
#[tokio::test]
async fn tempo_tag_values_v2_agree_with_the_docs_example() {
    let mut want = fixture("tempo/tag_values_v2.json");
    let (_d, s) = storage();
    for (i, v) in want["tagValues"].as_array().unwrap().iter().enumerate() {
        let res = resource(v["value"].as_str().unwrap(), Vec::new());
        s.append_spans(vec![span([i as u8 + 1; 16], [1; 8], None, &res, "op", kind::SERVER, 1_000, 1_000)])
            .await
            .unwrap();
    }
    let mut ours = get(&app(&s), "/tempo/api/v2/search/tag/.service.name/values").await;
    insta::assert_json_snapshot!("tempo_tag_values_v2", ours);
    for v in [&mut ours, &mut want] {
        v["tagValues"].as_array_mut().unwrap().sort_by_key(|t| t["value"].as_str().unwrap().to_string());
    }
    agree("tempo tag values v2", &ours, &want, &[TAG_LIST_METRICS_ALLOWED]);
}

/// `GET /tempo/api/echo` answers 200 and the body `echo`, which Grafana's
/// "Save & test" checks.
#[tokio::test]
async fn tempo_echo_agrees_with_the_docs() {
    let file = format!("{}/tests/fixtures/golden/tempo/echo.txt", env!("CARGO_MANIFEST_DIR"));
    let want = std::fs::read(file).unwrap();
    let (_d, s) = storage();
    let (status, body) = get_raw(&app(&s), "/tempo/api/echo").await;
    assert_eq!((status, body), (StatusCode::OK, want));
}

/// The rules the fixture checks, at their edges: integers are numbers up
/// to 2^53 - 1 and text beyond (either sign); an event's `event` attribute
/// is not repeated by its name; a link without `opentracing.ref_type` is
/// FOLLOWS_FROM; `flags` appears when set.
#[tokio::test]
async fn jaeger_rules_hold_at_their_edges() {
    let (_d, s) = storage();
    let res = resource("svc", Vec::new());
    let mut sp = span([1; 16], [1; 8], None, &res, "op", kind::SERVER, 1_000_000, 1_000);
    sp.flags = 0x101;
    let max = (1i64 << 53) - 1;
    sp.attributes = vec![
        ("safe".into(), AttrValue::Int(max)),
        ("big".into(), AttrValue::Int(max + 1)),
        ("small".into(), AttrValue::Int(-max - 1)),
    ];
    sp.events.push(Event {
        time_unix_nano: 1_000_500,
        name: "named".into(),
        attributes: vec![("event".into(), AttrValue::Str("from the attribute".into()))],
    });
    sp.links.push(Link {
        trace_id: TraceId([2; 16]),
        span_id: SpanId([2; 8]),
        trace_state: String::new(),
        attributes: Vec::new(),
    });
    s.append_spans(vec![sp]).await.unwrap();
    let v = get(&app(&s), &format!("/jaeger/api/traces/{}", TraceId([1; 16]).to_hex())).await;
    let js = &v["data"][0]["spans"][0];
    let tag =
        |k: &str| js["tags"].as_array().unwrap().iter().find(|t| t["key"] == k).unwrap()["value"].clone();
    assert_eq!(tag("safe"), json!(max));
    assert_eq!(tag("big"), json!((max + 1).to_string()));
    assert_eq!(tag("small"), json!((-max - 1).to_string()));
    assert_eq!(
        js["logs"][0]["fields"],
        json!([{"key": "event", "type": "string", "value": "from the attribute"}])
    );
    assert_eq!(js["references"][0]["refType"], "FOLLOWS_FROM");
    assert_eq!(js["flags"], 1);
}

/// `GET /jaeger/api/operations?service=` answers Jaeger's `Operation`s
/// (`name`, `spanKind`) in its envelope: `ui_01.json`'s spans have no kind,
/// so `spanKind` is `""`, and an empty `spanKind` parameter asks for all.
#[tokio::test]
async fn jaeger_operations_agree_with_the_operation_model() {
    let want = fixture("jaeger/operations.json");
    let (_d, s) = storage();
    let mut spans = jaeger_ui_to_spans(&fixture("jaeger/ui_01.json"));
    spans.truncate(1);
    let res = spans[0].resource.clone();
    let mut other = span([1; 16], [9; 8], None, &res, "some-operation", kind::UNSPECIFIED, 1_000, 1_000);
    other.trace_id = spans[0].trace_id;
    let server = span([3; 16], [1; 8], None, &res, "serve", kind::SERVER, 2_000, 1_000);
    spans.extend([other, server]);
    s.append_spans(spans).await.unwrap();
    let app = app(&s);
    let mut ours = get(&app, "/jaeger/api/operations?service=service-x").await;
    assert_eq!(ours["total"], 3, "{ours}");
    ours["data"].as_array_mut().unwrap().retain(|o| o["spanKind"] == "");
    ours["total"] = json!(2);
    let by_name = |v: &mut Value| {
        v["data"].as_array_mut().unwrap().sort_by_key(|o| o["name"].as_str().map(String::from))
    };
    by_name(&mut ours);
    insta::assert_json_snapshot!("jaeger_operations", ours);
    let mut want = want;
    by_name(&mut want);
    agree("jaeger operations", &ours, &want, &[]);
    let all = get(&app, "/jaeger/api/operations?service=service-x&spanKind=").await;
    assert_eq!(all["total"], 3, "{all}");
    let server = get(&app, "/jaeger/api/operations?service=service-x&spanKind=server").await;
    assert_eq!(server["data"], json!([{"name": "serve", "spanKind": "server"}]));
}
