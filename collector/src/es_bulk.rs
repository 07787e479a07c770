//! The Elasticsearch `_bulk` API on the OTLP/HTTP listener, for log
//! shippers with a stock Elasticsearch output (Fluentd, Logstash, Fluent
//! Bit, Vector, the Elasticsearch clients): `POST|PUT /es/_bulk` and
//! `/es/{index}/_bulk`, plus the few read endpoints those clients probe
//! before they send (`GET /es/` for the version, `_license`, `_xpack`,
//! `_cluster/health`, index and template checks).
//!
//! A bulk request takes the OTLP/HTTP logs path: the same admission
//! (counted as signal `logs`, protocol `http`), authentication and tenant,
//! body limits and decompression, and [`Ingest::export`] for the records,
//! which answers once they are in the WAL. Its documents become one OTLP
//! logs request ([`mapping`]); a document that cannot be stored fails as
//! its own item, as Elasticsearch answers, and the others are stored.
//! Every answer under `/es/` carries `X-Elastic-Product: Elasticsearch`,
//! which the official clients (7.14 and later) require, and refusals come
//! in Elasticsearch's error envelope.

pub mod mapping;
pub mod parse;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{json, Value};
use skein_storage::tenant::TenantId;

use crate::error::{Refused, RETRY_AFTER_SECS};
use crate::memory::Reservation;
use crate::{Ingest, IngestError, Logs, Protocol, Signal as _};

/// Where the API is mounted on the OTLP/HTTP listener: clients are given
/// `http://host:4318/es` as their Elasticsearch URL.
pub const PREFIX: &str = "/es";

/// The Elasticsearch version Skein answers as: a current 8.x, which every
/// supported shipper version accepts (Logstash 8 and the 8.x clients
/// refuse a 7.x server without the product header, and 9.x clients speak
/// to 8.x in compatibility mode).
pub const VERSION: &str = "8.17.0";

/// Whether `path` is a bulk endpoint (admitted and counted as logs).
pub(crate) fn is_bulk_path(path: &str) -> bool {
    path.strip_prefix(PREFIX).and_then(|p| p.strip_suffix("/_bulk")).is_some_and(|idx| {
        idx.is_empty() || (idx.len() > 1 && idx.starts_with('/') && !idx[1..].contains('/'))
    })
}

/// Whether `path` is under [`PREFIX`], so refusals take Elasticsearch's
/// shape.
pub(crate) fn is_es_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/es/")
}

/// The `/es` routes, each answer with the product header.
pub(crate) fn routes() -> Router<Ingest> {
    Router::new()
        .route("/es", get(info).head(info_head))
        .route("/es/", get(info).head(info_head))
        .route("/es/_bulk", post(bulk_default).put(bulk_default))
        .route("/es/{index}/_bulk", post(bulk_index).put(bulk_index))
        .route("/es/_license", get(license))
        .route("/es/_xpack", get(xpack))
        .route("/es/_cluster/health", get(cluster_health))
        .route(
            "/es/_index_template/{name}",
            put(acknowledged).post(acknowledged).get(not_found).head(not_found),
        )
        .route("/es/_template/{name}", put(acknowledged).post(acknowledged).get(not_found).head(not_found))
        .route("/es/_ilm/policy/{name}", put(acknowledged).get(not_found))
        .route("/es/_data_stream/{name}", put(acknowledged).get(not_found))
        .route("/es/{index}", get(index_get).head(index_head).put(index_put))
        .layer(axum::middleware::map_response(with_product_header))
}

/// Adds the product header; the router's own 405 gets Elasticsearch's
/// envelope (its `Allow` kept).
async fn with_product_header(method: axum::http::Method, uri: axum::http::Uri, mut r: Response) -> Response {
    if r.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = r.headers().get(header::ALLOW).cloned();
        let reason = format!(
            "Incorrect HTTP method for uri [{}] and method [{method}], allowed: [{}]",
            uri.path(),
            allow.as_ref().and_then(|a| a.to_str().ok()).unwrap_or_default()
        );
        r = error_envelope(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &reason);
        if let Some(a) = allow {
            r.headers_mut().insert(header::ALLOW, a);
        }
    }
    r.headers_mut().insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    r
}

/// A refusal of a whole request in Elasticsearch's error envelope
/// (`{"error": {"root_cause": [...], "type", "reason"}, "status"}`), with
/// the status, `Retry-After` and refusal reason of [`IngestError`]'s one
/// table, so that shippers retry exactly what OTLP clients retry.
pub(crate) fn refusal(err: &IngestError) -> Response {
    let wire = err.wire();
    let kind = match err {
        IngestError::Malformed(_) | IngestError::UnsupportedEncoding(_) => "illegal_argument_exception",
        IngestError::TooLarge { .. } => "content_too_long_exception",
        IngestError::UnsupportedMediaType(_) => "media_type_header_exception",
        IngestError::UnknownPath(_) => "resource_not_found_exception",
        IngestError::Overloaded => "es_rejected_execution_exception",
        IngestError::MemoryLimit { .. } => "circuit_breaking_exception",
        IngestError::BodyTimeout(_) => "timeout_exception",
        IngestError::NotReady => "cluster_block_exception",
        IngestError::Unavailable(_) => "unavailable_shards_exception",
        IngestError::Unauthenticated(_) | IngestError::Forbidden(_) => "security_exception",
    };
    let reason = match err {
        IngestError::UnsupportedMediaType(ct) => format!(
            "Content-Type header [{ct}] is not supported; use application/x-ndjson, application/json or application/vnd.elasticsearch+x-ndjson; compatible-with=8"
        ),
        e => e.to_string(),
    };
    let mut resp = error_envelope(wire.http, kind, &reason);
    if wire.retryable {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if wire.http == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"skein\""));
    }
    resp.extensions_mut().insert(Refused(err.reason()));
    resp
}

fn error_envelope(status: StatusCode, kind: &str, reason: &str) -> Response {
    let cause = json!({"type": kind, "reason": reason});
    let body =
        json!({"error": {"root_cause": [cause], "type": kind, "reason": reason}, "status": status.as_u16()});
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    resp
}

/// The bulk content types: NDJSON, JSON (Logstash and Fluentd send it),
/// and the versioned types the 8.x clients send in compatibility mode
/// (`application/vnd.elasticsearch+x-ndjson; compatible-with=8`).
pub(crate) fn bulk_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match base.as_str() {
        "application/x-ndjson"
        | "application/json"
        | "application/vnd.elasticsearch+x-ndjson"
        | "application/vnd.elasticsearch+json" => Ok(()),
        _ => Err(IngestError::UnsupportedMediaType(ct.to_string())),
    }
}

async fn bulk_default(
    State(ing): State<Ingest>,
    tenant: Option<Extension<TenantId>>,
    reservation: Option<Extension<Arc<Reservation>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bulk(ing, tenant, reservation, None, headers, body).await
}

async fn bulk_index(
    State(ing): State<Ingest>,
    tenant: Option<Extension<TenantId>>,
    reservation: Option<Extension<Arc<Reservation>>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bulk(ing, tenant, reservation, Some(index), headers, body).await
}

/// Sequence numbers of the items answered, process-wide (Elasticsearch's
/// `_seq_no`, which clients only log).
static SEQ_NO: AtomicU64 = AtomicU64::new(0);

/// A bulk request: refused whole (an Elasticsearch error envelope, nothing
/// stored) when its headers, body or action lines are bad or storage
/// refuses; else `200` with one item per operation, in order, the stored
/// ones `201 created` once they are durable.
async fn bulk(
    ing: Ingest,
    tenant: Option<Extension<TenantId>>,
    reservation: Option<Extension<Arc<Reservation>>>,
    path_index: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let tenant = tenant.map(|Extension(t)| t).unwrap_or_default();
    if let Err(e) = bulk_content_type(&headers) {
        return refusal(&e);
    }
    if let Some(Err(e)) = path_index.as_deref().map(parse::index_name) {
        return refused_envelope(StatusCode::BAD_REQUEST, e.kind, &e.reason);
    }
    let res = reservation.as_ref().map(|r| &*r.0);
    let bytes = match crate::http_api::read_body(&headers, body, ing.config().max_request_bytes, res).await {
        Ok(b) => b,
        Err(e) => return refusal(&e),
    };
    let ops = match parse::parse(&bytes, path_index.as_deref(), ing.config().max_bulk_operations) {
        Ok(ops) => ops,
        Err(e) => return refused_envelope(StatusCode::BAD_REQUEST, e.kind, &e.reason),
    };
    drop(bytes);

    let now = skein_storage::now_unix_nano();
    let mut by_service: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let id = op.id.unwrap_or_else(|| ulid::Ulid::new().to_string().to_ascii_lowercase());
        let outcome = op.doc.and_then(|doc| {
            mapping::map_document(doc, &op.index, now)
                .map_err(|reason| parse::ItemError::bad("document_parsing_exception", reason))
        });
        let outcome = outcome.map(|m| by_service.entry(m.service).or_default().push(m.record));
        outcomes.push((op.action, op.index, id, outcome));
    }
    let failed = outcomes.iter().filter(|o| o.3.is_err()).count() as u64;
    if !by_service.is_empty() {
        let req = ExportLogsServiceRequest {
            resource_logs: by_service
                .into_iter()
                .map(|(service, log_records)| ResourceLogs {
                    resource: Some(Resource {
                        attributes: (!service.is_empty())
                            .then(|| {
                                mapping::kv("service.name".into(), mapping::any_value(Value::String(service)))
                            })
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
                    ..Default::default()
                })
                .collect(),
        };
        // Every ID was checked in the mapping, so the decoder rejects none.
        if let Err(e) = ing.export::<Logs>(&tenant, req, Protocol::Http).await {
            return refusal(&e);
        }
    }
    if failed > 0 {
        ing.metrics.records(Logs::RECORDS, Protocol::Http, 0, failed);
    }
    let items: Vec<Value> = outcomes
        .into_iter()
        .map(|(action, index, id, outcome)| {
            let item = match outcome {
                Ok(()) => json!({
                    "_index": index, "_id": id, "_version": 1, "result": "created",
                    "_shards": {"total": 1, "successful": 1, "failed": 0},
                    "_seq_no": SEQ_NO.fetch_add(1, Ordering::Relaxed), "_primary_term": 1, "status": 201,
                }),
                Err(e) => json!({
                    "_index": index, "_id": id, "status": e.status,
                    "error": {"type": e.kind, "reason": e.reason, "index": index},
                }),
            };
            json!({ action.name(): item })
        })
        .collect();
    let took = started.elapsed().as_millis() as u64;
    Json(json!({"errors": failed > 0, "took": took, "items": items})).into_response()
}

/// A request-level 400 of the bulk parser, counted as malformed.
fn refused_envelope(status: StatusCode, kind: &str, reason: &str) -> Response {
    let mut resp = error_envelope(status, kind, reason);
    resp.extensions_mut().insert(Refused(IngestError::Malformed(String::new()).reason()));
    resp
}

/// `GET /es/`: the node's identity, as Elasticsearch 8 answers it. Clients
/// read `version.number` to pick their protocol, and the 7.14+ clients and
/// Logstash check `tagline` and `build_flavor` to know they talk to
/// Elasticsearch.
async fn info() -> Json<Value> {
    Json(json!({
        "name": "skein",
        "cluster_name": "skein",
        "cluster_uuid": "c2tlaW4tc2tlaW4tc2tlaW4",
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "docker",
            "build_hash": "0000000000000000000000000000000000000000",
            "build_date": "2024-12-11T12:08:05.663969764Z",
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }))
}

async fn info_head() -> StatusCode {
    StatusCode::OK
}

/// `GET /es/_license`: an active basic license (Logstash refuses to start
/// against an inactive one).
async fn license() -> Json<Value> {
    Json(json!({"license": {
        "status": "active", "uid": "c2tlaW4tbGljZW5zZQ", "type": "basic",
        "issue_date": "2024-01-01T00:00:00.000Z", "issue_date_in_millis": 1_704_067_200_000u64,
        "max_nodes": 1000, "max_resource_units": null, "issued_to": "skein", "issuer": "elasticsearch",
        "start_date_in_millis": -1,
    }}))
}

/// `GET /es/_xpack`: no features available, so shippers do not set up
/// index lifecycle policies (Logstash's `ilm_enabled => auto`).
async fn xpack() -> Json<Value> {
    let off = json!({"available": false, "enabled": false});
    Json(json!({
        "build": {"hash": "0000000000000000000000000000000000000000", "date": "2024-12-11T12:08:05.663969764Z"},
        "license": {"uid": "c2tlaW4tbGljZW5zZQ", "type": "basic", "mode": "basic", "status": "active"},
        "features": {"ilm": off, "security": off, "monitoring": off, "watcher": off, "ml": off},
        "tagline": "for the Elastic Stack",
    }))
}

/// `GET /es/_cluster/health`: green (Vector's health check).
async fn cluster_health() -> Json<Value> {
    Json(json!({
        "cluster_name": "skein", "status": "green", "timed_out": false,
        "number_of_nodes": 1, "number_of_data_nodes": 1, "active_primary_shards": 1,
        "active_shards": 1, "relocating_shards": 0, "initializing_shards": 0,
        "unassigned_shards": 0, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0,
    }))
}

/// Templates, lifecycle policies and data streams that shippers install
/// at start: acknowledged and not kept (every field is stored as sent;
/// there is no mapping to apply).
async fn acknowledged() -> Json<Value> {
    Json(json!({"acknowledged": true}))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error_envelope(
        StatusCode::NOT_FOUND,
        "resource_not_found_exception",
        &format!("[{}] not found: Skein keeps no templates, policies or data streams", uri.path()),
    )
}

/// `HEAD /es/{index}`: every valid index exists (writing to it creates it,
/// as with Elasticsearch's automatic index creation).
async fn index_head(Path(index): Path<String>) -> StatusCode {
    match parse::index_name(&index) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// `GET /es/{index}`: an empty index description.
async fn index_get(Path(index): Path<String>) -> Response {
    match parse::index_name(&index) {
        Ok(()) => Json(json!({ index.clone(): {
            "aliases": {}, "mappings": {},
            "settings": {"index": {"number_of_shards": "1", "number_of_replicas": "0", "provided_name": index}},
        }}))
        .into_response(),
        Err(e) => error_envelope(StatusCode::BAD_REQUEST, e.kind, &e.reason),
    }
}

/// `PUT /es/{index}`: acknowledged, as index creation.
async fn index_put(Path(index): Path<String>) -> Response {
    match parse::index_name(&index) {
        Ok(()) => {
            Json(json!({"acknowledged": true, "shards_acknowledged": true, "index": index})).into_response()
        }
        Err(e) => error_envelope(StatusCode::BAD_REQUEST, e.kind, &e.reason),
    }
}

/// Any other path under `/es/` (the listener's fallback sends it here).
pub(crate) fn unknown(method: &axum::http::Method, path: &str) -> Response {
    refusal(&IngestError::UnknownPath(format!(
        "no handler found for uri [{path}] and method [{method}]; Skein's Elasticsearch API takes POST|PUT /es/_bulk and /es/{{index}}/_bulk"
    )))
}

#[cfg(test)]
mod tests;
