//! End-to-end tests of the whole `skein` binary with real OTLP clients.

mod support;

/// Alert rules: a webhook receiver told of firing and resolved, across a restart.
mod alerts;

/// Admission before the body is read, read timeouts, and every refusal
/// counted as clients saw it.
mod admission;
/// Bearer tokens for ingest and query.
mod auth;
/// Malformed, oversized and partially invalid requests.
mod bad_input;
/// The terminal clients: `skein trace`, `search`, `logs`, `import`.
mod cli;
/// Damaged segments: quarantine, partial answers, status and metrics.
mod damage;
/// Retried batches: one copy of each span in every answer and count.
mod dedup;
/// A full disk: retryable refusals, no leftovers, recovery without a restart.
mod disk_full;
/// Restart and crash recovery.
mod durability;
/// The Elasticsearch bulk API: the Python client and the log shippers' bodies.
mod es_bulk;
/// The Jaeger-compatible query API.
mod jaeger;
/// Content limits: hostile attributes, values and events cut and counted.
mod limits;
/// Connection caps, header-read and idle timeouts, HTTP/2 stream limits.
mod listeners;
/// The Loki push API (protobuf+snappy, JSON) read back through the Loki read API; deploy/grafana.
mod loki;
/// The MCP server at /mcp through rmcp's own client.
mod mcp;
/// `/metrics`, log output and listen addresses.
mod ops;
/// Flat out against a small memory limit: under it, nothing lost, refusals counted.
mod overload;
/// Segments in S3 (a moto server), read back by a node with an empty cache.
mod s3;
/// Scale-out (issue 14): ingest, query and compact nodes over one bucket.
mod scale;
/// The Rust OpenTelemetry SDK over gRPC, HTTP/protobuf and HTTP/JSON.
mod sdk;
/// Search by span conditions and time, log search, traces split over segments.
mod search;
/// Self-telemetry: Skein's own query and flush spans, to itself or another Skein.
mod self_tracing;
/// Live tail of logs: the SSE stream with filters, limits and shutdown.
mod tail;
/// The Tempo-compatible query API.
mod tempo;
/// Tenants stored and queried apart, through every API.
mod tenants;
/// TLS on every listener, certificate reload, plain-text refusals.
mod tls;
/// The Zipkin v2 receiver with real Zipkin clients (Python exporter, protobuf, Envoy's spans).
mod zipkin;
