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
//!
//! The crate is the body of that one command, called by the `skein`
//! binary; its errors end the process with a message, so they are
//! `anyhow` errors with context rather than an enum to match on.

#![warn(missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use queries::DROP_CACHES;
use stats::{pct, proc_usage};

mod queries;
mod send;
mod stats;
mod workload;

/// The flags of `skein loadgen`; the binary flattens them into its CLI.
/// Field docs are the `--help` text.
#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
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
    /// Searches over the whole range that match nothing (service +
    /// attribute + duration, limit 20), from the same probes.
    #[arg(long, default_value_t = 0)]
    empty_searches: usize,
    /// Structural TraceQL searches on Tempo's API (limit 20), whole range:
    /// `{span.http.route="/api/checkout"} >> {status=error}`.
    #[arg(long, default_value_t = 0)]
    traceql_searches: usize,
    /// Service maps over the workload's whole time range
    /// (`/api/v1/dependencies`), each answer's call counts checked against
    /// the edges of the workload's `summary.json`.
    #[arg(long, default_value_t = 0)]
    service_map_queries: usize,
    /// RED queries over the workload's whole time range
    /// (`/api/v1/metrics/red` for the workload's edge service, 1 m steps).
    #[arg(long, default_value_t = 0)]
    red_queries: usize,
    /// TraceQL metrics queries over the workload's whole time range on
    /// Tempo's API (`/tempo/api/metrics/query_range`, step 1 m):
    /// `{} | rate() by (resource.service.name)`.
    #[arg(long, default_value_t = 0)]
    traceql_metrics_queries: usize,
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

/// Runs one `skein loadgen` invocation to the end: sends the workload (or,
/// with `--queries-only`, skips that), then with `--api` flushes, settles
/// and times the queries. The report goes to stdout as `key=value` lines
/// that `scripts/bench.sh` greps; progress goes to stderr.
///
/// # Errors
/// A workload directory that cannot be read or holds no request files, an
/// endpoint that cannot be reached, an HTTP API answer that is not the JSON
/// expected, or `--cold-lookups` without write access to
/// `/proc/sys/vm/drop_caches` (checked before any load is sent). A request
/// the server refuses is counted in the report, not an error.
pub async fn run(a: LoadgenArgs) -> Result<()> {
    if a.cold_lookups > 0 {
        // Fail before the load, not after it.
        std::fs::OpenOptions::new().write(true).open(DROP_CACHES).with_context(|| {
            format!("--cold-lookups drops the page cache through {DROP_CACHES}, which is not writable (run as root)")
        })?;
    }
    if a.queries_only {
        let api = a.api.as_deref().context("--queries-only needs --api")?;
        let probes = workload::probes_only(&a.data)?;
        return queries::queries(api, &a, &probes).await;
    }
    let (items, probes) = workload::load(&a.data, !a.no_logs)?;
    let items = Arc::new(items);
    let total_spans: u64 = items.iter().filter(|i| i.traces).map(|i| i.records).sum();
    let total_logs: u64 = items.iter().filter(|i| !i.traces).map(|i| i.records).sum();
    eprintln!(
        "loaded {} requests: {total_spans} spans, {total_logs} logs, {:.1} MB",
        items.len(),
        items.iter().map(|i| i.body.len()).sum::<usize>() as f64 / 1e6
    );
    let tally = Arc::new(send::Tally::default());
    let cpu0 = a.pid.and_then(proc_usage);
    let start = Instant::now();
    let plan = send::Plan {
        grpc: a.grpc.clone(),
        http: a.http.clone(),
        rate: a.rate,
        connections: a.connections.max(1) as u64,
        deadline: a.duration.map(|d| start + d),
        span_cap: a.spans.unwrap_or(u64::MAX),
    };
    let tasks: Vec<_> = (0..plan.connections)
        .map(|_| tokio::spawn(send::connection(items.clone(), tally.clone(), plan.clone())))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    // The request bodies (the whole workload) are no longer needed.
    drop(items);
    lat.sort_unstable();
    let spans = tally.spans_ok.load(Ordering::Relaxed);
    let logs = tally.logs_ok.load(Ordering::Relaxed);
    println!("elapsed_s={secs:.2}");
    println!(
        "spans_accepted={spans} logs_accepted={logs} requests_refused={} requests_failed={}",
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    println!(
        "refused_requests={} longest_refused_ms={:.0}",
        tally.refused_requests.load(Ordering::Relaxed),
        tally.longest_refused_us.load(Ordering::Relaxed) as f64 / 1e3
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
            queries::settle(api, a.settle, a.settle_max).await?;
            report_cpu("ingest+flush+compaction");
        }
        queries::queries(api, &a, &probes).await?;
    }
    Ok(())
}
