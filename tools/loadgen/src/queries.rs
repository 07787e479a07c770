//! The query half of a run: wait for compaction to settle, then time trace
//! lookups, trace searches and log searches on the HTTP API, one after
//! another, checking result counts against the workload's ground truth.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats::pct;
use crate::workload::{read_truth, Probe, Truth};
use crate::LoadgenArgs;

/// Written "3" to drop the page cache before a cold lookup (proc(5)).
pub(crate) const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// Waits until the server's compaction counter (`skein_compactions_total`
/// on `/metrics`) has not moved for `quiet`, or `max` has passed.
pub(crate) async fn settle(api: &str, quiet: Duration, max: Duration) -> Result<()> {
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
const LOG_QUERIES: &[&[(&str, &str)]] = &[
    &[("q", "timeout")],
    &[("q", "retry")],
    &[("q", "failed")],
    &[("q", "exceeded")],
    &[("q", "confirmation")],
    &[("q", "kafka")],
    &[("q", "GC")],
    &[("q", "health")],
    &[("q", "refresh")],
    &[("q", "transaction")],
    &[("q", "retry timeout")],
    &[("q", "timeout"), ("severity", "ERROR")],
];

/// `pairs` as a query string (`application/x-www-form-urlencoded`).
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// A search by service, one `key=value` attribute and a minimum duration.
fn trace_search(base: &str, service: &str, key: &str, value: &str, min_duration: &str) -> Query {
    let q = query_string([
        ("service", service),
        ("attr", &format!("{key}={value}")),
        ("min_duration", min_duration),
        ("limit", "20"),
    ]);
    Query { url: format!("{base}/api/v1/search/traces?{q}"), field: "traces", expect: None }
}

/// The structural TraceQL search issue 11 times: a checkout request with an
/// error somewhere below it (`>>`: descendant, Tempo's structural operator).
pub(crate) const TRACEQL_STRUCTURAL: &str = r#"{span.http.route="/api/checkout"} >> {status=error}"#;

/// The TraceQL metrics query issue 12 times over the whole range at a
/// 1-minute step (answered from the rollups).
pub(crate) const TRACEQL_METRICS: &str = "{} | rate() by (resource.service.name)";

/// Searches over the whole range that match nothing: half of them ask for
/// a probe's service and attribute with a minimum duration no span has
/// (every term is in the index; the conditions never meet on one span),
/// half for a value of the probe's attribute that no span carries.
fn empty_searches(base: &str, probes: &[Probe], n: usize) -> Vec<Query> {
    (0..n)
        .map(|k| {
            let p = &probes[pick(k / 2, n.div_ceil(2), probes.len())];
            let mut q = if k % 2 == 0 {
                trace_search(base, &p.service, &p.key, &p.value, "10h")
            } else {
                trace_search(
                    base,
                    &p.service,
                    &p.key,
                    &format!("{}-matches-nothing", p.value),
                    &p.min_duration,
                )
            };
            q.expect = Some(0);
            q
        })
        .collect()
}

/// The timed queries, each after the previous one.
pub(crate) async fn queries(api: &str, a: &LoadgenArgs, probes: &[Probe]) -> Result<()> {
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
                qs.push(trace_search(&base, svc, k, val, &format!("{ms}ms")));
            }
        }
        let n = a.searches.saturating_sub(qs.len()).max(1);
        for k in 0..n {
            let p = &probes[pick(k, n, probes.len())];
            qs.push(trace_search(&base, &p.service, &p.key, &p.value, &p.min_duration));
        }
        println!("search_probes: {} distinct from the workload's spans", probes.len());
        timed("search_traces", &qs, false).await?;
    }
    if a.empty_searches > 0 && !probes.is_empty() {
        timed("empty_search", &empty_searches(&base, probes, a.empty_searches), false).await?;
    }
    if a.traceql_searches > 0 {
        // Tempo's search API over the whole range (no start/end).
        let q = query_string([("q", TRACEQL_STRUCTURAL), ("limit", "20")]);
        let qs: Vec<Query> = (0..a.traceql_searches)
            .map(|_| Query { url: format!("{base}/tempo/api/search?{q}"), field: "traces", expect: None })
            .collect();
        timed("traceql_structural", &qs, false).await?;
    }
    if a.service_map_queries > 0 || a.red_queries > 0 || a.traceql_metrics_queries > 0 {
        let sum: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(a.data.join("summary.json"))
                .context("reading the workload's summary.json")?,
        )?;
        let (start, end) = whole_range(&sum)?;
        let range = format!("start={start}&end={end}");
        if a.service_map_queries > 0 {
            let url = format!("{base}/api/v1/dependencies?{range}");
            let qs: Vec<Query> = (0..a.service_map_queries)
                .map(|_| Query { url: url.clone(), field: "edges", expect: None })
                .collect();
            timed("service_map", &qs, false).await?;
            let got: serde_json::Value = serde_json::from_slice(&reqwest::get(&url).await?.bytes().await?)?;
            let (checked, wrong) = check_edges(&sum, &got);
            println!("service_map_edges checked={checked} wrong={wrong}");
        }
        if a.red_queries > 0 {
            let svc = sum["edge_service"].as_str().unwrap_or("frontend");
            let url = format!("{base}/api/v1/metrics/red?service={svc}&step=1m&{range}");
            let qs: Vec<Query> = (0..a.red_queries)
                .map(|_| Query { url: url.clone(), field: "series", expect: None })
                .collect();
            timed("red", &qs, false).await?;
        }
        if a.traceql_metrics_queries > 0 {
            let q = query_string([
                ("q", TRACEQL_METRICS),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
                ("step", "1m"),
            ]);
            let url = format!("{base}/tempo/api/metrics/query_range?{q}");
            let qs: Vec<Query> = (0..a.traceql_metrics_queries)
                .map(|_| Query { url: url.clone(), field: "series", expect: None })
                .collect();
            timed("traceql_metrics", &qs, false).await?;
        }
    }
    if a.log_searches > 0 {
        let n = a.log_searches;
        let log_queries: Vec<String> = LOG_QUERIES.iter().map(|q| query_string(q.iter().copied())).collect();
        let qs: Vec<Query> = (0..n)
            .map(|k| Query {
                url: format!("{base}/api/v1/search/logs?{}&limit=100", log_queries[k % log_queries.len()]),
                field: "logs",
                expect: None,
            })
            .collect();
        let stats = timed("log_search", &qs, false).await?;
        for (i, q) in log_queries.iter().enumerate() {
            let mut lat: Vec<u64> = stats.iter().skip(i).step_by(log_queries.len()).map(|s| s.0).collect();
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

/// The workload's whole time range as Unix ns, from its `summary.json`:
/// from a minute before its first trace to an hour after its last (the
/// generator sends a few traces' late spans far after their start).
fn whole_range(sum: &serde_json::Value) -> Result<(u64, u64)> {
    let start = sum["start_unix_nano"].as_u64().context("summary.json has no start_unix_nano")?;
    let traces = sum["traces"].as_f64().context("summary.json has no traces")?;
    let tps = sum["traces_per_second"]
        .as_f64()
        .filter(|t| *t > 0.0)
        .context("summary.json has no traces_per_second")?;
    let span_ns = (traces / tps * 1e9) as u64;
    Ok((start.saturating_sub(60_000_000_000), start + span_ns + 3_600_000_000_000))
}

/// Compares a `/api/v1/dependencies` answer with the workload's edges
/// (`summary.json` `edges: [{parent, child, count}]`): how many of the
/// workload's edges were checked and how many had another call count
/// (a missing edge counts as 0 calls). Edges the answer has beyond the
/// workload's (databases, messaging peers) are not counted as wrong.
fn check_edges(sum: &serde_json::Value, got: &serde_json::Value) -> (usize, usize) {
    let empty = Vec::new();
    let answered = got["edges"].as_array().unwrap_or(&empty);
    let want = sum["edges"].as_array().unwrap_or(&empty);
    let wrong = want
        .iter()
        .filter(|w| {
            let calls = answered
                .iter()
                .find(|e| e["parent"] == w["parent"] && e["child"] == w["child"])
                .and_then(|e| e["call_count"].as_u64())
                .unwrap_or(0);
            Some(calls) != w["count"].as_u64()
        })
        .count();
    (want.len(), wrong)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pick_spreads_then_cycles() {
        assert_eq!((0..4).map(|k| pick(k, 4, 100)).collect::<Vec<_>>(), [0, 25, 50, 75]);
        assert_eq!((0..5).map(|k| pick(k, 5, 3)).collect::<Vec<_>>(), [0, 1, 2, 0, 1]);
    }

    #[test]
    fn test_whole_range_covers_the_workload() {
        let sum = serde_json::json!({"start_unix_nano": 1_735_689_600_000_000_000u64, "traces": 100, "traces_per_second": 50.0});
        let (a, b) = whole_range(&sum).unwrap();
        assert_eq!(a, 1_735_689_540_000_000_000);
        assert_eq!(b, 1_735_689_600_000_000_000 + 2_000_000_000 + 3_600_000_000_000);
        assert!(whole_range(&serde_json::json!({"traces": 1})).is_err());
    }

    #[test]
    fn test_check_edges_counts_missing_and_different_calls() {
        let sum = serde_json::json!({"edges": [
            {"parent": "a", "child": "b", "count": 3},
            {"parent": "a", "child": "c", "count": 2},
            {"parent": "b", "child": "c", "count": 1},
        ]});
        let got = serde_json::json!({"edges": [
            {"parent": "a", "child": "b", "call_count": 3},
            {"parent": "a", "child": "c", "call_count": 5},
            {"parent": "b", "child": "postgresql", "call_count": 9},
        ]});
        assert_eq!(check_edges(&sum, &got), (3, 2));
    }

    #[test]
    fn test_log_queries_encode_as_before() {
        let qs: Vec<String> = LOG_QUERIES.iter().map(|q| query_string(q.iter().copied())).collect();
        assert_eq!(qs[0], "q=timeout");
        assert_eq!(qs[10], "q=retry+timeout");
        assert_eq!(qs[11], "q=timeout&severity=ERROR");
    }

    #[test]
    fn test_empty_searches_alternate_duration_and_absent_value() {
        let probes = vec![Probe {
            service: "checkout".into(),
            key: "rpc.method".into(),
            value: "PlaceOrder".into(),
            min_duration: "5ms".into(),
        }];
        let qs = empty_searches("http://h", &probes, 3);
        assert!(qs.iter().all(|q| q.expect == Some(0)));
        assert!(
            qs[0].url.ends_with("attr=rpc.method%3DPlaceOrder&min_duration=10h&limit=20"),
            "{}",
            qs[0].url
        );
        assert!(
            qs[1].url.contains("attr=rpc.method%3DPlaceOrder-matches-nothing&min_duration=5ms"),
            "{}",
            qs[1].url
        );
        assert!(qs[2].url.contains("min_duration=10h"));
    }

    #[test]
    fn test_trace_search_encodes_attribute_and_service() {
        let q = trace_search("http://h", "a b&c", "http.route", "/x?y=1", "20ms");
        assert_eq!(
            q.url,
            "http://h/api/v1/search/traces?service=a+b%26c&attr=http.route%3D%2Fx%3Fy%3D1&min_duration=20ms&limit=20"
        );
        let back: Vec<(String, String)> =
            form_urlencoded::parse(q.url.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        assert_eq!(back[0], ("service".into(), "a b&c".into()));
        assert_eq!(back[1], ("attr".into(), "http.route=/x?y=1".into()));
    }
}
