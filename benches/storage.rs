//! Criterion micro-benchmarks of the storage hot paths (issue 3): request
//! decoding and conversion, WAL append, head insert, segment write, trace
//! lookup by ID and search.
//!
//! Input is a deterministic synthetic workload built here (seeded, no files,
//! no network): one trace export request is 512 spans across 35 traces from
//! 3 services (HTTP server, gRPC server, database client spans with the
//! semantic-convention attributes, 6 per span, 11 resource attributes, some
//! exception events), and the matching logs request holds 0-3 log records
//! per span with bodies of a few words, plus a few without trace context.
//! If a real workload file exists (`SKEIN_BENCH_TRACES`, default
//! `/tmp/wl70k/traces-00005.pb`), decoding and conversion are measured on it
//! as well.
//!
//! ```sh
//! cargo bench --bench storage -- --quick
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLog, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use prost::Message;
use skein_otlp::decode as convert;
use skein_storage::filter::{analyzer, tokenize, LogFilter, SpanFilter};
use skein_storage::head::{CutPolicy, Head, TraceEntry};
use skein_storage::model::TraceId;
use skein_storage::segment::{self, SegmentConfig};
use skein_storage::{Storage, StorageConfig};
use std::hint::black_box;

// ---------------------------------------------------------------------------
// Synthetic workload
// ---------------------------------------------------------------------------

const SPANS_PER_REQUEST: usize = 512;
const TRACES_PER_REQUEST: usize = 35;
const BASE_TIME_NS: u64 = 1_763_700_000_000_000_000;

/// splitmix64: small, seeded, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for c in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        out[0] |= 1; // never all zeroes
        out
    }
}

fn kv_str(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
        ..Default::default()
    }
}

const SERVICES: [&str; 3] = ["frontend", "checkout", "inventory"];

/// 11 resource attributes per service.
fn resource(svc: usize) -> Resource {
    let name = SERVICES[svc];
    Resource {
        attributes: vec![
            kv_str("service.name", name),
            kv_str("service.namespace", "shop"),
            kv_str("service.version", format!("1.{}.3", 4 + svc)),
            kv_str("service.instance.id", format!("{name}-7d9f8c6b5-{:05x}", 0x1a2b3 + svc * 77)),
            kv_str("deployment.environment.name", "production"),
            kv_str("host.name", format!("ip-10-0-{}-{}.ec2.internal", 12 + svc, 40 + svc * 3)),
            kv_str("host.arch", "amd64"),
            kv_str("os.type", "linux"),
            kv_str("process.runtime.name", ["node", "go", "java"][svc]),
            kv_str("telemetry.sdk.name", "opentelemetry"),
            kv_str("telemetry.sdk.language", ["nodejs", "go", "java"][svc]),
        ],
        ..Default::default()
    }
}

fn scope(svc: usize) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: ["@opentelemetry/instrumentation-http", "go.opentelemetry.io/grpc", "io.opentelemetry.jdbc"]
            [svc]
            .into(),
        version: "0.52.1".into(),
        ..Default::default()
    })
}

const ROUTES: [&str; 6] =
    ["/api/cart", "/api/checkout", "/api/products/{id}", "/api/recommendations", "/api/currency", "/"];
const RPC_METHODS: [&str; 5] = ["PlaceOrder", "GetCart", "AddItem", "ConvertCurrency", "ListProducts"];
const TABLES: [&str; 4] = ["products", "orders", "order_items", "stock"];
const DB_OPS: [&str; 3] = ["SELECT", "UPDATE", "INSERT"];

/// One generated trace request, its logs request and the trace IDs in them.
struct Generated {
    traces: ExportTraceServiceRequest,
    logs: ExportLogsServiceRequest,
    trace_ids: Vec<TraceId>,
}

/// One trace export request of [`SPANS_PER_REQUEST`] spans and the logs
/// request that goes with it. Different seeds give different traces.
fn generate(seed: u64) -> Generated {
    let mut r = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let mut spans: [Vec<OtlpSpan>; 3] = Default::default();
    let mut logs: [Vec<OtlpLog>; 3] = Default::default();
    let mut trace_ids = Vec::with_capacity(TRACES_PER_REQUEST);
    let per_trace = SPANS_PER_REQUEST / TRACES_PER_REQUEST;
    let extra = SPANS_PER_REQUEST % TRACES_PER_REQUEST;
    for t in 0..TRACES_PER_REQUEST {
        let trace_id = r.bytes::<16>();
        trace_ids.push(TraceId(trace_id));
        let n = per_trace + usize::from(t < extra);
        let trace_start = BASE_TIME_NS + seed * 10_000_000_000 + t as u64 * 25_000_000;
        let failed_trace = r.below(100) < 3;
        let ids: Vec<[u8; 8]> = (0..n).map(|_| r.bytes::<8>()).collect();
        for j in 0..n {
            // Root on the frontend; children alternate between checkout
            // (gRPC) and inventory (database), with some frontend clients.
            let svc = if j == 0 { 0 } else { [1, 2, 2, 0, 1][j % 5] };
            let start = trace_start + j as u64 * (1 + r.below(2_000_000));
            let dur = if j == 0 { 80_000_000 + r.below(320_000_000) } else { 100_000 + r.below(120_000_000) };
            let failed = failed_trace && (j == 0 || r.below(4) == 0);
            let (name, kind, attributes) = match svc {
                0 => {
                    let route = r.pick(&ROUTES);
                    let method = if route == "/api/checkout" { "POST" } else { "GET" };
                    (
                        format!("{method} {route}"),
                        if j == 0 { span::SpanKind::Server } else { span::SpanKind::Client },
                        vec![
                            kv_str("http.request.method", method),
                            kv_str("http.route", route),
                            kv_str("url.path", route.replace("{id}", &format!("{:08X}", r.below(1 << 32)))),
                            kv_int("http.response.status_code", if failed { 500 } else { 200 }),
                            kv_str(
                                "user_agent.original",
                                r.pick(&[
                                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
                                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
                                    "python-requests/2.32.3",
                                ]),
                            ),
                            kv_str("client.address", format!("10.1.{}.{}", r.below(256), r.below(256))),
                        ],
                    )
                }
                1 => {
                    let m = r.pick(&RPC_METHODS);
                    (
                        format!("oteldemo.CheckoutService/{m}"),
                        span::SpanKind::Server,
                        vec![
                            kv_str("rpc.system", "grpc"),
                            kv_str("rpc.service", "oteldemo.CheckoutService"),
                            kv_str("rpc.method", m),
                            kv_str("server.address", "checkout"),
                            kv_int("server.port", 5050),
                            kv_int("rpc.grpc.status_code", if failed { 14 } else { 0 }),
                        ],
                    )
                }
                _ => {
                    let (op, table) = (r.pick(&DB_OPS), r.pick(&TABLES));
                    let stmt = match op {
                        "SELECT" => format!(
                            "SELECT id, qty, price FROM {table} WHERE id = $1 LIMIT {}",
                            1 + r.below(50)
                        ),
                        "UPDATE" => format!("UPDATE {table} SET qty = qty - $1 WHERE id = $2"),
                        _ => format!("INSERT INTO {table} (id, qty, price) VALUES ($1, $2, $3)"),
                    };
                    (
                        format!("{op} shop.{table}"),
                        span::SpanKind::Client,
                        vec![
                            kv_str("db.system", "postgresql"),
                            kv_str("db.operation.name", op),
                            kv_str("db.collection.name", table),
                            kv_str("db.namespace", "shop"),
                            kv_str("db.statement", stmt),
                            kv_str("server.address", "postgres.shop.svc.cluster.local"),
                        ],
                    )
                }
            };
            let mut events = Vec::new();
            if failed {
                events.push(span::Event {
                    time_unix_nano: start + dur / 2,
                    name: "exception".into(),
                    attributes: vec![
                        kv_str("exception.type", "io.grpc.StatusRuntimeException"),
                        kv_str("exception.message", "UNAVAILABLE: upstream connect error or disconnect"),
                        kv_str(
                            "exception.stacktrace",
                            "io.grpc.StatusRuntimeException: UNAVAILABLE\n\tat io.grpc.stub.ClientCalls.toStatusRuntimeException(ClientCalls.java:268)",
                        ),
                    ],
                    ..Default::default()
                });
            } else if r.below(10) == 0 {
                events.push(span::Event {
                    time_unix_nano: start + dur / 3,
                    name: "cache.miss".into(),
                    attributes: vec![kv_str("cache.key", format!("product:{}", r.below(10_000)))],
                    ..Default::default()
                });
            }
            spans[svc].push(OtlpSpan {
                trace_id: trace_id.to_vec(),
                span_id: ids[j].to_vec(),
                parent_span_id: if j == 0 { Vec::new() } else { ids[(j - 1) / 2].to_vec() },
                flags: 0x100 | 1,
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes,
                events,
                status: Some(Status {
                    code: if failed { 2 } else { 0 },
                    message: if failed { "upstream unavailable".into() } else { String::new() },
                }),
                ..Default::default()
            });
            // 0-3 logs per span, ~0.85 on average.
            let nlogs = match r.below(100) {
                0..40 => 0,
                40..80 => 1,
                80..95 => 2,
                _ => 3,
            };
            for k in 0..nlogs {
                logs[svc].push(log_record(&mut r, start + k * 1_000, Some((trace_id, ids[j])), failed));
            }
        }
    }
    for l in &mut logs {
        for _ in 0..2 {
            l.push(log_record(&mut r, BASE_TIME_NS + seed * 10_000_000_000, None, false));
        }
    }
    let traces = ExportTraceServiceRequest {
        resource_spans: spans
            .into_iter()
            .enumerate()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(resource(svc)),
                scope_spans: vec![ScopeSpans { scope: scope(svc), spans, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: logs
            .into_iter()
            .enumerate()
            .map(|(svc, log_records)| ResourceLogs {
                resource: Some(resource(svc)),
                scope_logs: vec![ScopeLogs { scope: scope(svc), log_records, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    };
    Generated { traces, logs, trace_ids }
}

fn log_record(r: &mut Rng, time: u64, ctx: Option<([u8; 16], [u8; 8])>, failed: bool) -> OtlpLog {
    let (severity, text, body) = if failed || r.below(100) < 3 {
        (
            17,
            "ERROR",
            format!("upstream timeout after {} ms calling {}", 100 + r.below(900), r.pick(&SERVICES)),
        )
    } else if r.below(100) < 7 {
        (13, "WARN", format!("slow query on {} took {} ms", r.pick(&TABLES), 50 + r.below(500)))
    } else {
        let verb = r.pick(&["loaded", "updated", "validated", "reserved", "priced"]);
        let what = r.pick(&["cart", "order", "product", "stock level", "quote"]);
        (9, "INFO", format!("{verb} {what} {} for user {}", r.below(100_000), r.below(10_000)))
    };
    OtlpLog {
        time_unix_nano: time,
        observed_time_unix_nano: time + 150_000,
        severity_number: severity,
        severity_text: text.into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        attributes: vec![
            kv_str("code.function", r.pick(&["handle", "placeOrder", "getCart", "query"])),
            kv_str("thread.name", format!("worker-{}", r.below(16))),
        ],
        trace_id: ctx.map(|c| c.0.to_vec()).unwrap_or_default(),
        span_id: ctx.map(|c| c.1.to_vec()).unwrap_or_default(),
        flags: u32::from(ctx.is_some()),
        ..Default::default()
    }
}

fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

fn log_count(req: &ExportLogsServiceRequest) -> usize {
    req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
}

fn storage_config(fsync: bool) -> StorageConfig {
    let mut c = StorageConfig::default().with_retention(Duration::from_secs(365 * 86_400));
    c.wal.fsync = fsync;
    // The benchmarks trim the head themselves; never refuse ingest.
    c.head.max_bytes = 1 << 40;
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn cut_all(head: &Head) -> Vec<(TraceId, TraceEntry)> {
    head.cut(CutPolicy { now_ms: head.now_ms(), idle_ms: 0, max_age_ms: 0, target_bytes: 0, all: true })
}

/// A storage on `dir` holding `segments` flushed segments of
/// `requests_per_segment` trace and logs requests each; returns the trace
/// IDs it holds.
fn filled_storage(dir: &Path, segments: u64, requests_per_segment: u64) -> (Arc<Storage>, Vec<TraceId>) {
    let rt = runtime();
    let s = Storage::open(dir, storage_config(false)).expect("open storage");
    s.replay().expect("replay");
    let mut ids = Vec::new();
    for seg in 0..segments {
        for i in 0..requests_per_segment {
            let g = generate(1_000 + seg * requests_per_segment + i);
            ids.extend(g.trace_ids);
            let spans = convert::spans(&g.traces).records;
            let logs = convert::logs(&g.logs).records;
            rt.block_on(async {
                s.append_spans(spans).await.expect("append spans");
                s.append_logs(logs).await.expect("append logs");
            });
        }
        s.flush(true).expect("flush");
    }
    (s, ids)
}

// ---------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------

fn decode(c: &mut Criterion) {
    let g = generate(1);
    let (nspans, nlogs) = (span_count(&g.traces), log_count(&g.logs));
    let tbytes = g.traces.encode_to_vec();
    let lbytes = g.logs.encode_to_vec();
    eprintln!(
        "synthetic request: {nspans} spans in {} bytes ({:.0} B/span); {nlogs} logs in {} bytes ({:.0} B/log)",
        tbytes.len(),
        tbytes.len() as f64 / nspans as f64,
        lbytes.len(),
        lbytes.len() as f64 / nlogs as f64
    );
    let mut grp = c.benchmark_group("decode");
    grp.throughput(Throughput::Elements(nspans as u64));
    grp.bench_function("prost_traces", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&tbytes[..])).expect("decode"))
    });
    grp.bench_function("convert_spans", |b| b.iter(|| convert::spans(black_box(&g.traces))));
    grp.throughput(Throughput::Elements(nlogs as u64));
    grp.bench_function("prost_logs", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(black_box(&lbytes[..])).expect("decode"))
    });
    grp.bench_function("convert_logs", |b| b.iter(|| convert::logs(black_box(&g.logs))));

    // Optionally, one file of the real workload (gen_workload.py).
    let real = std::env::var("SKEIN_BENCH_TRACES").unwrap_or_else(|_| "/tmp/wl70k/traces-00005.pb".into());
    if let Ok(bytes) = std::fs::read(&real) {
        if let Ok(req) = ExportTraceServiceRequest::decode(&bytes[..]) {
            let n = span_count(&req);
            eprintln!(
                "real request {real}: {n} spans in {} bytes ({:.0} B/span)",
                bytes.len(),
                bytes.len() as f64 / n as f64
            );
            grp.throughput(Throughput::Elements(n as u64));
            grp.bench_function("real_prost_traces", |b| {
                b.iter(|| ExportTraceServiceRequest::decode(black_box(&bytes[..])).expect("decode"))
            });
            grp.bench_function("real_convert_spans", |b| b.iter(|| convert::spans(black_box(&req))));
        }
    }
    grp.finish();
}

fn wal_append(c: &mut Criterion) {
    let rt = runtime();
    let g = generate(2);
    let spans = convert::spans(&g.traces).records;
    let mut grp = c.benchmark_group("wal_append");
    grp.throughput(Throughput::Elements(spans.len() as u64));
    for fsync in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), storage_config(fsync)).expect("open storage");
        s.replay().expect("replay");
        let name = if fsync { "append_traces_fsync" } else { "append_traces_nofsync" };
        grp.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || {
                    // Keep the head and the WAL small (untimed): drop what
                    // the head holds, then let a flush reclaim WAL files.
                    if s.head().bytes() > 64 << 20 {
                        drop(cut_all(s.head()));
                        s.flush(true).expect("flush");
                    }
                    spans.clone()
                },
                |sp| {
                    let s = s.clone();
                    async move { s.append_spans(sp).await.expect("append") }
                },
                BatchSize::NumIterations(16),
            )
        });
    }
    grp.finish();
}

fn head_insert(c: &mut Criterion) {
    let g = generate(3);
    let spans = convert::spans(&g.traces).records;
    let logs = convert::logs(&g.logs).records;
    let mut grp = c.benchmark_group("head_insert");
    grp.throughput(Throughput::Elements(spans.len() as u64));
    grp.bench_function("insert_spans", |b| {
        b.iter_batched(
            || (Head::default(), spans.clone()),
            |(h, sp)| {
                h.insert_spans(1, sp);
                h
            },
            BatchSize::SmallInput,
        )
    });
    grp.throughput(Throughput::Elements(logs.len() as u64));
    grp.bench_function("insert_logs", |b| {
        b.iter_batched(
            || (Head::default(), logs.clone()),
            |(h, l)| {
                h.insert_logs(1, l);
                h
            },
            BatchSize::SmallInput,
        )
    });
    grp.finish();
}

fn segment_write(c: &mut Criterion) {
    // ~5,000 spans with their logs: 10 requests, 350 traces.
    let head = Head::default();
    for seed in 100..110 {
        let g = generate(seed);
        head.insert_spans(seed, convert::spans(&g.traces).records);
        head.insert_logs(seed, convert::logs(&g.logs).records);
    }
    let mut traces = cut_all(&head);
    segment::sort_for_segment(&mut traces);
    let nspans: usize = traces.iter().map(|t| t.1.spans.len()).sum();
    let nlogs: usize = traces.iter().map(|t| t.1.logs.len()).sum();
    let mut spans_only = traces.clone();
    spans_only.retain_mut(|t| {
        t.1.logs.clear();
        !t.1.spans.is_empty()
    });
    eprintln!("segment_write input: {} traces, {nspans} spans, {nlogs} logs", traces.len());
    let cfg = SegmentConfig::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut grp = c.benchmark_group("segment_write");
    grp.throughput(Throughput::Elements(nspans as u64));
    grp.bench_function("spans_and_logs", |b| {
        b.iter(|| segment::write_segment(dir.path(), &cfg, &traces, BASE_TIME_NS).expect("write"))
    });
    grp.bench_function("spans_only", |b| {
        b.iter(|| segment::write_segment(dir.path(), &cfg, &spans_only, BASE_TIME_NS).expect("write"))
    });
    grp.finish();
}

fn trace_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, ids) = filled_storage(dir.path(), 10, 3);
    eprintln!("trace_lookup: {} segments, {} traces", s.snapshot().segments.len(), ids.len());
    let mut grp = c.benchmark_group("trace_lookup");
    grp.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    grp.bench_function("get_trace_10_segments", |b| {
        b.iter(|| {
            // A stride through all traces, so every segment is visited.
            i = (i + 37) % ids.len();
            s.get_trace(black_box(&ids[i])).expect("lookup").expect("trace exists")
        })
    });
    let missing = TraceId([0xee; 16]);
    grp.bench_function("get_trace_missing", |b| {
        b.iter(|| s.get_trace(black_box(&missing)).expect("lookup").is_none())
    });
    grp.finish();
}

fn search(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = filled_storage(dir.path(), 10, 3);
    let spans = SpanFilter {
        service: Some("checkout".into()),
        attrs: vec![("rpc.method".into(), "PlaceOrder".into())],
        min_duration_ns: Some(50_000_000),
        ..Default::default()
    };
    let mut words = Vec::new();
    tokenize(&mut analyzer(), "timeout", &mut words);
    let logs = LogFilter { words, ..Default::default() };
    eprintln!(
        "search: {} traces match the span filter, {} logs (limit 100) the word",
        s.search_traces(&spans, 1_000).expect("search").len(),
        s.search_logs(&logs, 100).expect("search").len()
    );
    let mut grp = c.benchmark_group("search");
    grp.throughput(Throughput::Elements(1));
    grp.bench_function("traces_service_attr_duration", |b| {
        b.iter(|| s.search_traces(black_box(&spans), 20).expect("search"))
    });
    grp.bench_function("logs_word", |b| b.iter(|| s.search_logs(black_box(&logs), 100).expect("search")));
    grp.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, wal_append, head_insert, segment_write, trace_lookup, search
}
criterion_main!(benches);
