//! Router tests of the Elasticsearch API: the OTLP/HTTP listener's router
//! over real storage, requests sent with `oneshot`.

use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use skein_storage::filter::LogFilter;
use skein_storage::model::{AttrValue, LogRecord};
use skein_storage::Storage;
use tower::ServiceExt as _;

use crate::{CollectorConfig, Ingest};

struct App {
    router: Router,
    storage: Arc<Storage>,
    ingest: Ingest,
    _dir: tempfile::TempDir,
}

fn app_with(cfg: CollectorConfig, replay: bool) -> App {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
    if replay {
        storage.replay().unwrap();
    }
    let ingest = Ingest::new(skein_storage::tenant::Tenants::from_storage(storage.clone()), cfg);
    App { router: crate::router(ingest.clone()), storage, ingest, _dir: dir }
}

fn app() -> App {
    app_with(CollectorConfig::default(), true)
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

async fn send(app: &App, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = app.router.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn bulk(app: &App, path: &str, content_type: &str, body: &str) -> Answer {
    send(app, Method::POST, path, &[("content-type", content_type)], body.as_bytes().to_vec()).await
}

fn logs(app: &App) -> Vec<LogRecord> {
    let mut v = app.storage.search_logs(&LogFilter::default(), 1000).unwrap();
    v.sort_by_key(|l| l.time_unix_nano);
    v
}

fn attr<'a>(l: &'a LogRecord, k: &str) -> Option<&'a AttrValue> {
    l.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

fn product(a: &Answer) -> bool {
    a.headers.get("x-elastic-product").is_some_and(|v| v == "Elasticsearch")
}

/// Items of every kind in one request: the good documents are stored
/// with their fields mapped, each bad one fails alone with
/// Elasticsearch's per-item error, and `errors` says some did.
#[tokio::test]
async fn test_bulk_items_and_mapping() {
    let app = app();
    let body = [
        r#"{"index":{"_index":"app-logs","_id":"given-1"}}"#,
        r#"{"@timestamp":"2024-05-01T12:00:00.5Z","message":"card declined","level":"error","service":{"name":"checkout"},"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","http":{"status":402}}"#,
        r#"{"create":{}}"#,
        r#"{"@timestamp":1714564801000,"log":"second","kubernetes":{"labels":{"app":"web"}}}"#,
        r#"{"index":{}}"#,
        r#"{"@timestamp":"yesterday","message":"bad time"}"#,
        r#"{"index":{}}"#,
        r#"["not","an","object"]"#,
        r#"{"delete":{"_id":"given-1"}}"#,
        r#"{"update":{"_id":"given-1"}}"#,
        r#"{"doc":{"message":"x"}}"#,
        r#"{"index":{"_index":"UPPER"}}"#,
        r#"{"message":"bad index"}"#,
        "",
    ]
    .join("\n");
    let a = bulk(&app, "/es/default-idx/_bulk", "application/x-ndjson", &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(product(&a));
    assert_eq!(a.body["errors"], true);
    let items = a.body["items"].as_array().unwrap();
    let shape: Vec<(String, u64, String)> = items
        .iter()
        .map(|i| {
            let (action, v) = i.as_object().unwrap().iter().next().unwrap();
            let kind = v["error"]["type"].as_str().unwrap_or(v["result"].as_str().unwrap_or_default());
            (action.clone(), v["status"].as_u64().unwrap(), kind.to_string())
        })
        .collect();
    let want = [
        ("index", 201, "created"),
        ("create", 201, "created"),
        ("index", 400, "document_parsing_exception"),
        ("index", 400, "document_parsing_exception"),
        ("delete", 400, "illegal_argument_exception"),
        ("update", 400, "illegal_argument_exception"),
        ("index", 400, "invalid_index_name_exception"),
    ];
    let want: Vec<_> = want.iter().map(|(a, s, k)| (a.to_string(), *s, k.to_string())).collect();
    assert_eq!(shape, want);
    let first = &items[0]["index"];
    assert_eq!((first["_index"].as_str(), first["_id"].as_str()), (Some("app-logs"), Some("given-1")));
    assert_eq!(first["_shards"]["successful"], 1);
    assert_eq!(items[1]["create"]["_index"], "default-idx");
    assert_eq!(items[1]["create"]["_id"].as_str().unwrap().len(), 26, "a generated ID");
    assert!(items[2]["index"]["error"]["reason"].as_str().unwrap().contains("[@timestamp]"));

    let stored = logs(&app);
    assert_eq!(stored.len(), 2);
    let l = &stored[0];
    assert_eq!(l.time_unix_nano, 1_714_564_800_500_000_000);
    assert_eq!(l.body, AttrValue::Str("card declined".into()));
    assert_eq!((l.severity_text.as_str(), l.severity_number), ("error", 17));
    assert_eq!(l.resource.service_name, "checkout");
    assert_eq!(l.trace_id.to_hex(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(l.span_id.unwrap().to_hex(), "eee19b7ec3c1b174");
    assert_eq!(attr(l, "http.status"), Some(&AttrValue::Int(402)));
    assert_eq!(attr(l, "elasticsearch.index"), Some(&AttrValue::Str("app-logs".into())));
    let l = &stored[1];
    assert_eq!(l.resource.service_name, "web");
    assert_eq!(l.body, AttrValue::Str("second".into()));
    assert_eq!(attr(l, "elasticsearch.index"), Some(&AttrValue::Str("default-idx".into())));

    // Counted as logs over HTTP: 2 stored, 5 left out as invalid.
    let m = &app.ingest.metrics;
    let l = vec![("signal", "logs"), ("protocol", "http")];
    assert_eq!(m.stored_records.get_or_create(&l).get(), 2);
    assert_eq!(m.accepted_records.get_or_create(&l).get(), 7);
    assert_eq!(m.received_requests.get_or_create(&l).get(), 1);
}

/// Every content type the shippers and clients send, and gzip; anything
/// else is a 415 in Elasticsearch's envelope, with nothing stored.
#[tokio::test]
async fn test_content_types_and_gzip() {
    let app = app();
    let doc = "{\"index\":{}}\n{\"message\":\"hello\"}\n";
    for ct in [
        "application/x-ndjson",
        "application/json; charset=UTF-8",
        "application/vnd.elasticsearch+x-ndjson; compatible-with=8",
        "application/vnd.elasticsearch+json;compatible-with=7",
    ] {
        let a = bulk(&app, "/es/x/_bulk", ct, doc).await;
        assert_eq!((a.status, a.body["errors"].clone()), (StatusCode::OK, json!(false)), "{ct}");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(doc.as_bytes()).unwrap();
    let a = send(
        &app,
        Method::PUT,
        "/es/_bulk",
        &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "no index anywhere: {}", a.body);
    assert!(a.body["error"]["reason"].as_str().unwrap().contains("index is missing"));
    let body = "{\"index\":{\"_index\":\"gz\"}}\n{\"message\":\"hello\"}\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let a = send(
        &app,
        Method::PUT,
        "/es/_bulk",
        &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(logs(&app).len(), 5);

    for ct in ["text/plain", ""] {
        let a = bulk(&app, "/es/x/_bulk", ct, doc).await;
        assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert!(product(&a));
        assert_eq!(a.body["error"]["type"], "media_type_header_exception");
        assert_eq!(a.body["status"], 415);
    }
    let a = send(
        &app,
        Method::POST,
        "/es/x/_bulk",
        &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error"]["reason"].as_str().unwrap().contains("gzip"), "{}", a.body);
    assert_eq!(logs(&app).len(), 5, "refusals store nothing");
}

/// A malformed action line refuses the whole request, with the line
/// named, in Elasticsearch's envelope; nothing of it is stored.
#[tokio::test]
async fn test_malformed_body_is_refused_whole() {
    let app = app();
    for (path, body, want) in [
        ("/es/x/_bulk", "{\"index\":{}}\n{\"message\":\"kept?\"}\n{\"index\":\n", "line [3]"),
        ("/es/x/_bulk", "{\"upsert\":{}}\n{}\n", "found [upsert]"),
        ("/es/x/_bulk", "", "no requests added"),
        ("/es/_x/_bulk", "{\"index\":{}}\n{}\n", "must not start with '_'"),
    ] {
        let a = bulk(&app, path, "application/x-ndjson", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!(product(&a));
        assert_eq!(a.body["status"], 400);
        let reason = a.body["error"]["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{reason}");
        assert_eq!(a.body["error"]["root_cause"][0]["reason"], reason);
    }
    assert!(logs(&app).is_empty());
    let refused = app
        .ingest
        .metrics
        .refused_requests
        .get_or_create(&vec![("signal", "logs"), ("protocol", "http"), ("reason", "malformed")])
        .get();
    assert_eq!(refused, 4);
}

/// Admission and durability refusals take Elasticsearch's shape with the
/// OTLP table's status and retry hint: too large (413, no retry), storage
/// not ready (503 + `Retry-After`), with nothing stored.
#[tokio::test]
async fn test_admission_refusals() {
    let cfg = CollectorConfig { max_request_bytes: 64, ..CollectorConfig::default() };
    let app = app_with(cfg, true);
    let big = format!("{{\"index\":{{}}}}\n{{\"message\":\"{}\"}}\n", "x".repeat(100));
    let a = bulk(&app, "/es/x/_bulk", "application/x-ndjson", &big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(product(&a) && a.headers.get(header::RETRY_AFTER).is_none());
    assert_eq!(a.body["error"]["type"], "content_too_long_exception");

    let app = app_with(CollectorConfig::default(), false);
    let a = bulk(&app, "/es/x/_bulk", "application/x-ndjson", "{\"index\":{}}\n{}\n").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers.get(header::RETRY_AFTER).unwrap(), "1");
    assert!(product(&a));
    app.storage.replay().unwrap();
    assert!(logs(&app).is_empty());
}

/// What clients ask before they send: the node's identity (`GET /es/`,
/// with the fields the 8.x clients and Logstash check), license, xpack,
/// health, index checks and template installs; every answer with the
/// product header, unknown paths a 404 in Elasticsearch's envelope.
#[tokio::test]
async fn test_probes() {
    let app = app();
    for path in ["/es", "/es/"] {
        let a = send(&app, Method::GET, path, &[], vec![]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(product(&a));
        assert_eq!(a.body["tagline"], "You Know, for Search");
        assert_eq!(a.body["version"]["build_flavor"], "default");
        assert!(a.body["version"]["number"].as_str().unwrap().starts_with("8."));
        for k in
            ["lucene_version", "minimum_wire_compatibility_version", "minimum_index_compatibility_version"]
        {
            assert!(a.body["version"][k].is_string(), "{k}");
        }
        assert!(a.body["cluster_uuid"].is_string() && a.body["cluster_name"].is_string());
    }
    for (method, path, status) in [
        (Method::HEAD, "/es/", 200),
        (Method::HEAD, "/es/logs-2024.05.01", 200),
        (Method::HEAD, "/es/Bad", 400),
        (Method::GET, "/es/logs", 200),
        (Method::PUT, "/es/logs", 200),
        (Method::GET, "/es/_license", 200),
        (Method::GET, "/es/_xpack", 200),
        (Method::GET, "/es/_cluster/health", 200),
        (Method::PUT, "/es/_index_template/logstash", 200),
        (Method::PUT, "/es/_template/fluentd", 200),
        (Method::GET, "/es/_index_template/logstash", 404),
        (Method::HEAD, "/es/_template/fluentd", 404),
        (Method::PUT, "/es/_ilm/policy/p", 200),
        (Method::GET, "/es/_bulk", 405),
        (Method::GET, "/es/a/b/c", 404),
        (Method::POST, "/es/_search", 405),
    ] {
        let a = send(&app, method.clone(), path, &[], vec![]).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {}", a.body);
        assert!(product(&a), "{method} {path}");
    }
    let a = send(&app, Method::GET, "/es/_license", &[], vec![]).await;
    assert_eq!(a.body["license"]["status"], "active");
    let a = send(&app, Method::PUT, "/es/_index_template/x", &[], b"{}".to_vec()).await;
    assert_eq!(a.body, json!({"acknowledged": true}));
    let a = send(&app, Method::GET, "/es/_bulk", &[], vec![]).await;
    assert_eq!(a.body["status"], 405);
    assert!(a.headers.get(header::ALLOW).is_some());
    let a = send(&app, Method::GET, "/es/a/b/c", &[], vec![]).await;
    assert_eq!(a.body["status"], 404);
    assert!(a.body["error"]["reason"].as_str().unwrap().contains("/es/a/b/c"));
    // The OTLP paths are untouched.
    let a = send(&app, Method::GET, "/v1/nothing", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(!product(&a));
}

#[test]
fn test_bulk_paths() {
    for p in ["/es/_bulk", "/es/idx/_bulk"] {
        assert!(super::is_bulk_path(p), "{p}");
    }
    for p in ["/es", "/es/_bulkx", "/es/a/b/_bulk", "/v1/logs", "/es//_bulk", "/esx/_bulk"] {
        assert!(!super::is_bulk_path(p), "{p}");
    }
    assert!(super::is_es_path("/es") && super::is_es_path("/es/x") && !super::is_es_path("/esx"));
}
