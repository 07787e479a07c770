//! `skein loadgen`: replays a workload written by
//! `shared/workload/gen_workload.py` (its `traces-*.pb` / `logs-*.pb`
//! files) against an OTLP endpoint over gRPC or HTTP, with several
//! connections, flat out or at a set rate, and reports accepted spans/s,
//! refusals, latency percentiles and, given the server's PID, the server's
//! CPU time per span and peak memory. Optionally it then times trace-by-ID
//! lookups on the HTTP API with IDs from the workload's `truth.jsonl`.
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
}

struct Item {
    traces: bool,
    body: Vec<u8>,
    records: u64,
}

fn load(dir: &Path, logs: bool) -> Result<Vec<Item>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .collect();
    names.sort();
    let mut items = Vec::new();
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
    Ok(items)
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
    let items = Arc::new(load(&a.data, !a.no_logs)?);
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
    let cpu0 = a.pid.and_then(proc_usage);
    let start = Instant::now();
    let deadline = a.duration.map(|d| start + d);
    let span_cap = a.spans.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for _ in 0..a.connections.max(1) {
        let (items, next, spans_ok, logs_ok, refused) =
            (items.clone(), next.clone(), spans_ok.clone(), logs_ok.clone(), refused.clone());
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
                let t = Instant::now();
                let ok = match (&mut g, &http) {
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
                        r.is_ok()
                    }
                    (None, Some(addr)) => {
                        let path = if item.traces { "v1/traces" } else { "v1/logs" };
                        let r = client
                            .post(format!("http://{addr}/{path}"))
                            .header("content-type", "application/x-protobuf")
                            .body(item.body.clone())
                            .send()
                            .await;
                        matches!(r, Ok(r) if r.status().is_success())
                    }
                    (None, None) => unreachable!("one transport is chosen"),
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
                    refused.fetch_add(1, Ordering::Relaxed);
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
    lat.sort_unstable();
    let spans = spans_ok.load(Ordering::Relaxed);
    let logs = logs_ok.load(Ordering::Relaxed);
    println!("elapsed_s={secs:.2}");
    println!(
        "spans_accepted={spans} logs_accepted={logs} requests_refused={}",
        refused.load(Ordering::Relaxed)
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
        lookups(api, &a.data, a.lookups).await?;
    }
    Ok(())
}

/// Times `n` trace-by-ID lookups, sequentially.
async fn lookups(api: &str, data: &Path, n: usize) -> Result<()> {
    let client = reqwest::Client::new();
    let truth = std::fs::read_to_string(data.join("truth.jsonl"))?;
    let ids: Vec<String> = truth
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["trace_id"].as_str().map(String::from))
        .collect();
    if ids.is_empty() {
        bail!("no trace IDs in truth.jsonl");
    }
    // A fixed stride over the IDs: spread over every segment, reproducible.
    let stride = (ids.len() / n.max(1)).max(1);
    let mut lat = Vec::with_capacity(n);
    let mut missing = 0;
    for k in 0..n {
        let id = &ids[(k * stride + k / ids.len()) % ids.len()];
        let t = Instant::now();
        let r = client.get(format!("http://{api}/api/v1/traces/{id}")).send().await?;
        let ok = r.status().is_success();
        let _ = r.bytes().await?;
        lat.push(t.elapsed().as_micros() as u64);
        if !ok {
            missing += 1;
        }
    }
    lat.sort_unstable();
    println!(
        "trace_by_id n={n} missing={missing} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        pct(&lat, 0.5) as f64 / 1e3,
        pct(&lat, 0.99) as f64 / 1e3,
        lat.last().copied().unwrap_or(0) as f64 / 1e3
    );
    Ok(())
}
