//! `skein loadgen`: replays a workload written by
//! `shared/workload/gen_workload.py` (its `traces-*.pb` / `logs-*.pb`
//! files) against an OTLP endpoint over gRPC or HTTP, with several
//! connections, flat out or at a set rate, and reports accepted spans/s,
//! refusals (retried with backoff, as OTLP exporters do), latency
//! percentiles and, given the server's PID, the server's
//! CPU time per span and peak memory. Optionally it then flushes the head,
//! waits for compaction to settle, and times queries on the HTTP API:
//! trace by ID (warm, and cold with the page cache dropped before each),
//! search by service + attribute + duration, full-text log search, and the
//! logs of one trace, with IDs from the workload's `truth.jsonl` and search
//! terms taken from the workload's spans and log templates.
//!
//! Requests are sent as the pre-encoded bytes of the files, so the
//! generator spends no CPU re-encoding on the machine it shares with the
//! server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[derive(clap::Args, Debug)]
pub(crate) struct LoadgenArgs {
    /// Directory written by gen_workload.py.
    #[arg(long)]
    data: PathBuf,
    /// OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    grpc: String,
    /// Send over OTLP/HTTP to this address (host:port) instead of gRPC.
    #[arg(long)]
    http: Option<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Target spans per second (0 = flat out).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stop after this long (default: one pass over the files).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many spans.
    #[arg(long)]
    spans: Option<u64>,
    /// Skip the log files.
    #[arg(long)]
    no_logs: bool,
    /// PID of the server, to report its CPU time per span and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// After ingest: POST /api/v1/flush and time this many trace-by-ID
    /// lookups on this HTTP API address (host:port).
    #[arg(long)]
    api: Option<String>,
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// After the flush, wait until no compaction has run for this long
    /// (polling `/metrics`), so sizes and latencies are those of compacted
    /// segments. 0 = do not wait.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    settle: Duration,
    /// Give up waiting for compaction after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
    settle_max: Duration,
    /// Searches by service + attribute + duration (limit 20), cycling over
    /// probes taken from the workload's spans.
    #[arg(long, default_value_t = 0)]
    searches: usize,
    /// Full-text log searches (limit 100), cycling over words of the
    /// workload's log templates.
    #[arg(long, default_value_t = 0)]
    log_searches: usize,
    /// Lookups of the logs of one trace (`search/logs?trace_id=`).
    #[arg(long, default_value_t = 0)]
    trace_logs: usize,
    /// Trace-by-ID lookups with the page cache dropped before each
    /// (`sync; echo 3 > /proc/sys/vm/drop_caches`; needs root).
    #[arg(long, default_value_t = 0)]
    cold_lookups: usize,
    /// Only run the queries against a server that already holds the
    /// workload: no ingest, no flush.
    #[arg(long)]
    queries_only: bool,
}

/// How a request went: accepted, refused as retryable, or failed.
enum Outcome {
    Ok,
    Retry,
    Fail,
}

/// Attempts per request before a retryable refusal counts as a failure.
const MAX_ATTEMPTS: u32 = 100;

struct Item {
    traces: bool,
    body: Vec<u8>,
    records: u64,
}

/// A trace search that at least the span it was taken from matches:
/// service, one attribute of the span, and a minimum duration rounded down
/// to a round figure.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Probe {
    service: String,
    key: String,
    value: String,
    min_duration: String,
}

/// Span attributes a user filters on (low cardinality, not IDs or URLs).
const PROBE_KEYS: &[&str] = &[
    "rpc.method",
    "http.route",
    "db.operation.name",
    "http.response.status_code",
    "db.system",
    "http.request.method",
    "messaging.operation.type",
    "app.payment.card_type",
    "app.loyalty.level",
];

/// Minimum durations a probe uses: the largest one not above the span's.
const THRESHOLDS: &[(u64, &str)] = &[
    (1_000_000_000, "1s"),
    (500_000_000, "500ms"),
    (200_000_000, "200ms"),
    (100_000_000, "100ms"),
    (50_000_000, "50ms"),
    (20_000_000, "20ms"),
    (10_000_000, "10ms"),
    (5_000_000, "5ms"),
    (2_000_000, "2ms"),
    (1_000_000, "1ms"),
    (100_000, "100us"),
];

/// Probes from the spans of one decoded request (every 7th span).
fn probes_of(r: &ExportTraceServiceRequest, out: &mut std::collections::BTreeSet<Probe>) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    for rs in &r.resource_spans {
        let service =
            rs.resource.iter().flat_map(|r| &r.attributes).find(|a| a.key == "service.name").and_then(|a| {
                match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                }
            });
        let Some(service) = service else { continue };
        for sp in rs.scope_spans.iter().flat_map(|s| &s.spans).step_by(7) {
            let dur = sp.end_time_unix_nano.saturating_sub(sp.start_time_unix_nano);
            let Some(&(_, min_duration)) = THRESHOLDS.iter().find(|(t, _)| dur >= *t) else { continue };
            for a in &sp.attributes {
                if !PROBE_KEYS.contains(&a.key.as_str()) {
                    continue;
                }
                let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    _ => continue,
                };
                out.insert(Probe {
                    service: service.clone(),
                    key: a.key.clone(),
                    value,
                    min_duration: min_duration.to_string(),
                });
            }
        }
    }
}

/// The requests to send, and trace-search probes from every 50th trace
/// request.
fn load(dir: &Path, logs: bool) -> Result<(Vec<Item>, Vec<Probe>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .collect();
    names.sort();
    let mut items = Vec::new();
    let mut probes = std::collections::BTreeSet::new();
    let mut trace_files = 0usize;
    // Interleave as the generator numbered them: traces-00001, logs-00001, ...
    names.sort_by_key(|p| {
        let n = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let num = n.rsplit('-').next().unwrap_or_default().to_string();
        (num, n)
    });
    for p in names {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let traces = name.starts_with("traces-");
        let wanted = traces || (logs && name.starts_with("logs-"));
        if !wanted {
            continue;
        }
        let body = std::fs::read(&p)?;
        let records = if traces {
            let r = ExportTraceServiceRequest::decode(&body[..])?;
            if trace_files.is_multiple_of(50) {
                probes_of(&r, &mut probes);
            }
            trace_files += 1;
            r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
        } else {
            let r = ExportLogsServiceRequest::decode(&body[..])?;
            r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len() as u64).sum()
        };
        items.push(Item { traces, body, records });
    }
    if items.is_empty() {
        bail!("no traces-*.pb / logs-*.pb files in {}", dir.display());
    }
    Ok((items, probes.into_iter().collect()))
}

/// Sends bytes as they are; decodes nothing of the answer but its status.
#[derive(Debug, Default, Clone, Copy)]
struct RawCodec;
#[derive(Debug)]
struct RawEncoder;
#[derive(Debug)]
struct SkipDecoder;

impl Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for SkipDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = SkipDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> SkipDecoder {
        SkipDecoder
    }
}

/// CPU seconds (user + system) and peak RSS in bytes of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    // USER_HZ is 100 on Linux for every architecture this runs on.
    Some((ticks / 100.0, hwm))
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub(crate) async fn run(a: LoadgenArgs) -> Result<()> {
    if a.cold_lookups > 0 {
        // Fail before the load, not after it.
        std::fs::OpenOptions::new().write(true).open(DROP_CACHES).with_context(|| {
            format!("--cold-lookups drops the page cache through {DROP_CACHES}, which is not writable (run as root)")
        })?;
    }
    if a.queries_only {
        let api = a.api.as_deref().context("--queries-only needs --api")?;
        let probes = probes_only(&a.data)?;
        return queries(api, &a, &probes).await;
    }
    let (items, probes) = load(&a.data, !a.no_logs)?;
    let items = Arc::new(items);
    let total_spans: u64 = items.iter().filter(|i| i.traces).map(|i| i.records).sum();
    let total_logs: u64 = items.iter().filter(|i| !i.traces).map(|i| i.records).sum();
    eprintln!(
        "loaded {} requests: {total_spans} spans, {total_logs} logs, {:.1} MB",
        items.len(),
        items.iter().map(|i| i.body.len()).sum::<usize>() as f64 / 1e6
    );
    let next = Arc::new(AtomicUsize::new(0));
    let spans_ok = Arc::new(AtomicU64::new(0));
    let logs_ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = a.pid.and_then(proc_usage);
    let start = Instant::now();
    let deadline = a.duration.map(|d| start + d);
    let span_cap = a.spans.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for _ in 0..a.connections.max(1) {
        let (items, next, spans_ok, logs_ok, refused, failed) =
            (items.clone(), next.clone(), spans_ok.clone(), logs_ok.clone(), refused.clone(), failed.clone());
        let grpc = a.grpc.clone();
        let http = a.http.clone();
        let rate = a.rate;
        let conns = a.connections.max(1) as u64;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut g = match &http {
                None => {
                    let ch = tonic::transport::Endpoint::from_shared(grpc)?.connect().await?;
                    Some(tonic::client::Grpc::new(ch))
                }
                Some(_) => None,
            };
            let client = reqwest::Client::new();
            let t0 = Instant::now();
            let mut sent_spans = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i % items.len()) else { break };
                let passes_done = i >= items.len();
                if (deadline.is_none() && passes_done)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                    || spans_ok.load(Ordering::Relaxed) >= span_cap
                {
                    break;
                }
                if rate > 0 && item.traces {
                    // Pace this connection at its share of the rate.
                    let due = t0 + Duration::from_secs_f64(sent_spans as f64 / (rate as f64 / conns as f64));
                    tokio::time::sleep_until(due.into()).await;
                }
                // As OTLP exporters do: a refusal the server marks as
                // retryable (gRPC UNAVAILABLE, HTTP 429/503) is sent again
                // after a backoff, so the rate is what the server sustains.
                let t = Instant::now();
                let mut backoff = Duration::from_millis(10);
                let mut attempts = 0;
                let ok = loop {
                    attempts += 1;
                    let outcome = match (&mut g, &http) {
                        (Some(g), _) => {
                            g.ready().await?;
                            let path = if item.traces {
                                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                            } else {
                                "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
                            };
                            let r = g
                                .unary(
                                    tonic::Request::new(bytes::Bytes::from(item.body.clone())),
                                    http::uri::PathAndQuery::from_static(path),
                                    RawCodec,
                                )
                                .await;
                            match r {
                                Ok(_) => Outcome::Ok,
                                Err(e) if e.code() == tonic::Code::Unavailable => Outcome::Retry,
                                Err(_) => Outcome::Fail,
                            }
                        }
                        (None, Some(addr)) => {
                            let path = if item.traces { "v1/traces" } else { "v1/logs" };
                            let r = client
                                .post(format!("http://{addr}/{path}"))
                                .header("content-type", "application/x-protobuf")
                                .body(item.body.clone())
                                .send()
                                .await;
                            match r {
                                Ok(r) if r.status().is_success() => Outcome::Ok,
                                Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                                    Outcome::Retry
                                }
                                _ => Outcome::Fail,
                            }
                        }
                        (None, None) => unreachable!("one transport is chosen"),
                    };
                    match outcome {
                        Outcome::Ok => break true,
                        Outcome::Retry if attempts < MAX_ATTEMPTS => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        Outcome::Retry | Outcome::Fail => break false,
                    }
                };
                lat.push(t.elapsed().as_micros() as u64);
                if ok {
                    if item.traces {
                        sent_spans += item.records;
                        spans_ok.fetch_add(item.records, Ordering::Relaxed);
                    } else {
                        logs_ok.fetch_add(item.records, Ordering::Relaxed);
                    }
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    // The request bodies (the whole workload) are no longer needed.
    drop(items);
    lat.sort_unstable();
    let spans = spans_ok.load(Ordering::Relaxed);
    let logs = logs_ok.load(Ordering::Relaxed);
    println!("elapsed_s={secs:.2}");
    println!(
        "spans_accepted={spans} logs_accepted={logs} requests_refused={} requests_failed={}",
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!("spans_per_s={:.0} logs_per_s={:.0}", spans as f64 / secs, logs as f64 / secs);
    println!(
        "request_latency_ms p50={:.2} p99={:.2} max={:.2}",
        pct(&lat, 0.5) as f64 / 1e3,
        pct(&lat, 0.99) as f64 / 1e3,
        lat.last().copied().unwrap_or(0) as f64 / 1e3
    );
    let report_cpu = |label: &str| {
        if let (Some(pid), Some((c0, _))) = (a.pid, cpu0) {
            if let Some((c1, hwm)) = proc_usage(pid) {
                let cpu = c1 - c0;
                println!(
                    "{label}: server_cpu_s={cpu:.2} us_per_record={:.2} us_per_span_all_in={:.2} server_peak_rss_mb={:.0}",
                    cpu * 1e6 / (spans + logs).max(1) as f64,
                    cpu * 1e6 / spans.max(1) as f64,
                    hwm as f64 / 1e6
                );
            }
        }
    };
    report_cpu("ingest");
    if let Some(api) = &a.api {
        // Everything still in the head goes to segments: the rest of the
        // work that makes the data durable, indexed and compact.
        let client = reqwest::Client::new();
        let t = Instant::now();
        let r = client.post(format!("http://{api}/api/v1/flush")).send().await?;
        println!("flush_s={:.2} ({})", t.elapsed().as_secs_f64(), r.text().await?.trim());
        report_cpu("ingest+flush");
        if !a.settle.is_zero() {
            settle(api, a.settle, a.settle_max).await?;
            report_cpu("ingest+flush+compaction");
        }
        queries(api, &a, &probes).await?;
    }
    Ok(())
}

const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// The probes `load` would find, without loading the workload.
fn probes_only(dir: &Path) -> Result<Vec<Probe>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            n.starts_with("traces-") && n.ends_with(".pb")
        })
        .collect();
    names.sort();
    let mut probes = std::collections::BTreeSet::new();
    for p in names.iter().step_by(50) {
        probes_of(&ExportTraceServiceRequest::decode(&std::fs::read(p)?[..])?, &mut probes);
    }
    Ok(probes.into_iter().collect())
}

/// Waits until the server's compaction counter has not moved for `quiet`.
async fn settle(api: &str, quiet: Duration, max: Duration) -> Result<()> {
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let mut last: Option<f64> = None;
    let mut changed = Instant::now();
    loop {
        let text = client.get(format!("http://{api}/metrics")).send().await?.text().await?;
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix("skein_compactions_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .context("no skein_compactions_total in /metrics")?;
        if last != Some(n) {
            last = Some(n);
            changed = Instant::now();
        }
        if changed.elapsed() >= quiet || t0.elapsed() >= max {
            println!(
                "compaction: {n} compactions in all; waited {:.0} s{}",
                t0.elapsed().as_secs_f64(),
                if changed.elapsed() >= quiet {
                    ", then none for the quiet period"
                } else {
                    " (gave up: still compacting)"
                }
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One trace of `truth.jsonl`.
struct Truth {
    id: String,
    spans: usize,
    logs: usize,
}

fn read_truth(data: &Path) -> Result<Vec<Truth>> {
    let truth = std::fs::read_to_string(data.join("truth.jsonl"))?;
    let out: Vec<Truth> = truth
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(Truth {
                id: v["trace_id"].as_str()?.to_string(),
                spans: v["span_count"].as_u64()? as usize,
                logs: v["log_count"].as_u64()? as usize,
            })
        })
        .collect();
    if out.is_empty() {
        bail!("no traces in truth.jsonl");
    }
    Ok(out)
}

/// Index of the `k`th of `n` picks spread over `len` items.
fn pick(k: usize, n: usize, len: usize) -> usize {
    if n <= len {
        k * len / n
    } else {
        k % len
    }
}

/// Words of the workload's log templates, from common to rare, and the
/// ClickHouse peer's query ("timeout" at ERROR).
const LOG_QUERIES: &[&str] = &[
    "q=timeout",
    "q=retry",
    "q=failed",
    "q=exceeded",
    "q=confirmation",
    "q=kafka",
    "q=GC",
    "q=health",
    "q=refresh",
    "q=transaction",
    "q=retry+timeout",
    "q=timeout&severity=ERROR",
];

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The timed queries, each after the previous one.
async fn queries(api: &str, a: &LoadgenArgs, probes: &[Probe]) -> Result<()> {
    let truth = read_truth(&a.data)?;
    let base = format!("http://{api}");
    // A fixed stride over the IDs: spread over every segment, reproducible.
    let by_id = |n: usize| -> Vec<Query> {
        (0..n)
            .map(|k| {
                let t = &truth[pick(k, n, truth.len())];
                Query { url: format!("{base}/api/v1/traces/{}", t.id), field: "spans", expect: Some(t.spans) }
            })
            .collect()
    };
    if a.lookups > 0 {
        timed("trace_by_id", &by_id(a.lookups), false).await?;
    }
    if a.searches > 0 && !probes.is_empty() {
        // The generator's own search probe (the ClickHouse peer's query)
        // first, then probes from the workload's spans.
        let mut qs = Vec::new();
        if let Ok(sum) = std::fs::read_to_string(a.data.join("summary.json")) {
            let v: serde_json::Value = serde_json::from_str(&sum)?;
            let s = &v["search"];
            if let (Some(svc), Some(k), Some(val), Some(ms)) = (
                s["service"].as_str(),
                s["attr"].as_str(),
                s["value"].as_str(),
                s["min_duration_ms"].as_f64(),
            ) {
                qs.push(format!(
                    "service={}&attr={}&min_duration={ms}ms",
                    urlenc(svc),
                    urlenc(&format!("{k}={val}"))
                ));
            }
        }
        let n = a.searches.saturating_sub(qs.len()).max(1);
        for k in 0..n {
            let p = &probes[pick(k, n, probes.len())];
            qs.push(format!(
                "service={}&attr={}&min_duration={}",
                urlenc(&p.service),
                urlenc(&format!("{}={}", p.key, p.value)),
                p.min_duration
            ));
        }
        println!("search_probes: {} distinct from the workload's spans", probes.len());
        let qs: Vec<Query> = qs
            .into_iter()
            .map(|q| Query {
                url: format!("{base}/api/v1/search/traces?{q}&limit=20"),
                field: "traces",
                expect: None,
            })
            .collect();
        timed("search_traces", &qs, false).await?;
    }
    if a.log_searches > 0 {
        let n = a.log_searches;
        let qs: Vec<Query> = (0..n)
            .map(|k| Query {
                url: format!("{base}/api/v1/search/logs?{}&limit=100", LOG_QUERIES[k % LOG_QUERIES.len()]),
                field: "logs",
                expect: None,
            })
            .collect();
        let stats = timed("log_search", &qs, false).await?;
        for (i, q) in LOG_QUERIES.iter().enumerate() {
            let mut lat: Vec<u64> = stats.iter().skip(i).step_by(LOG_QUERIES.len()).map(|s| s.0).collect();
            let results = stats.get(i).map_or(0, |s| s.1);
            lat.sort_unstable();
            println!(
                "  log_search {q:<26} n={} p50_ms={:.2} max_ms={:.2} results={results}",
                lat.len(),
                pct(&lat, 0.5) as f64 / 1e3,
                lat.last().copied().unwrap_or(0) as f64 / 1e3
            );
        }
    }
    if a.trace_logs > 0 {
        let with_logs: Vec<&Truth> = truth.iter().filter(|t| t.logs > 0).collect();
        let n = a.trace_logs;
        let qs: Vec<Query> = (0..n)
            .map(|k| {
                let t = with_logs[pick(k, n, with_logs.len())];
                Query {
                    url: format!("{base}/api/v1/search/logs?trace_id={}&limit=1000", t.id),
                    field: "logs",
                    expect: Some(t.logs),
                }
            })
            .collect();
        timed("logs_of_trace", &qs, false).await?;
    }
    if a.cold_lookups > 0 {
        // Other IDs than the warm lookups', at an offset stride.
        let mut qs = by_id(a.cold_lookups + 1);
        qs.remove(0);
        timed("trace_by_id_cold", &qs, true).await?;
    }
    Ok(())
}

struct Query {
    url: String,
    /// The array of the JSON answer whose length is the result count.
    field: &'static str,
    /// The result count the ground truth expects.
    expect: Option<usize>,
}

/// Runs the queries one after another and prints n, p50, p99, max, how
/// many failed, returned nothing, or returned another count than expected.
/// With `cold`, the page cache is dropped before each. Returns (latency in
/// µs, result count) per query.
async fn timed(name: &str, qs: &[Query], cold: bool) -> Result<Vec<(u64, usize)>> {
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(qs.len());
    let (mut errors, mut empty, mut wrong) = (0, 0, 0);
    let mut slowest: Vec<(u64, &str)> = Vec::new();
    for q in qs {
        if cold {
            let st = std::process::Command::new("sync").status()?;
            if !st.success() {
                bail!("sync failed: {st}");
            }
            std::fs::write(DROP_CACHES, "3").with_context(|| format!("writing 3 to {DROP_CACHES}"))?;
        }
        let t = Instant::now();
        let r = client.get(&q.url).send().await?;
        let ok = r.status().is_success();
        let body = r.bytes().await?;
        let us = t.elapsed().as_micros() as u64;
        let n = if ok {
            serde_json::from_slice::<serde_json::Value>(&body)?[q.field].as_array().map_or(0, |a| a.len())
        } else {
            errors += 1;
            0
        };
        if ok && n == 0 {
            empty += 1;
        }
        if ok && q.expect.is_some_and(|e| e != n) {
            wrong += 1;
        }
        out.push((us, n));
        slowest.push((us, &q.url));
    }
    let mut lat: Vec<u64> = out.iter().map(|o| o.0).collect();
    lat.sort_unstable();
    let results: usize = out.iter().map(|o| o.1).sum();
    println!(
        "{name} n={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={errors} nonempty={} empty={empty} wrong_count={wrong} mean_results={:.1}",
        qs.len(),
        pct(&lat, 0.5) as f64 / 1e3,
        pct(&lat, 0.99) as f64 / 1e3,
        lat.last().copied().unwrap_or(0) as f64 / 1e3,
        qs.len() - errors - empty,
        results as f64 / qs.len().max(1) as f64
    );
    slowest.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    for (us, url) in slowest.iter().take(3) {
        println!("  slowest {:.2} ms {}", *us as f64 / 1e3, url.split_once("/api/").map_or(*url, |u| u.1));
    }
    Ok(out)
}
