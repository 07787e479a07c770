//! Services, operations, dependencies and RED, from the segments' catalog
//! stats and rollups plus the spans still in memory.

use std::collections::BTreeMap;

use skein_storage::rollup::{service_graph, ConnectionType, LatencySketch, BUCKET_NS};
use skein_storage::Storage;

/// How much earlier than a range's start a call's parent span may start
/// and still be paired with a child in the range: rollups of segments
/// ending up to this long before the range are joined too (1 h, a call
/// longer than any request timeout).
const PAIRING_SLACK_NS: u64 = 3_600_000_000_000;

/// A service and how many spans (and error spans) it has sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStat {
    /// `service.name`.
    pub name: String,
    /// Spans of the service.
    pub span_count: u64,
    /// Those with status ERROR.
    pub error_count: u64,
}

/// An operation (span name) of a service, per span kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// The service's name.
    pub service: String,
    /// The span name.
    pub name: String,
    /// The span kind (`skein_storage::model::kind`).
    pub kind: u8,
    /// Spans with this service, name and kind.
    pub span_count: u64,
}

/// A call edge of the service graph (see
/// [`skein_storage::rollup::EdgeBucket`] for what counts as a call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The calling service.
    pub parent: String,
    /// The called service, or the database or virtual peer.
    pub child: String,
    /// Calls in the range.
    pub call_count: u64,
    /// Calls that ended in an error.
    pub error_count: u64,
    /// Database, messaging or virtual-node edge; `Service` for a call
    /// between two instrumented services.
    pub connection_type: ConnectionType,
    /// Latency percentiles of the calls, ns, from the merged sketches
    /// (within 1%); `None` when every call came from a rollup written
    /// before sketches (issue 12).
    pub p50_ns: Option<u64>,
    /// 95th percentile, ns.
    pub p95_ns: Option<u64>,
    /// 99th percentile, ns.
    pub p99_ns: Option<u64>,
}

/// A RED query over the per-minute rollups. Rate, errors and latency are
/// those of the service's entry spans (SERVER, CONSUMER, and roots of any
/// kind: see [`skein_storage::rollup::RedBucket::is_entry`]), so a service
/// that records client and internal spans around each request still
/// counts one request per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedQuery {
    /// Range start, Unix ns (minute precision).
    pub start_ns: u64,
    /// Range end, Unix ns, inclusive (minute precision).
    pub end_ns: u64,
    /// Bucket width, ns: a positive multiple of one minute.
    pub step_ns: u64,
    /// Only this service; with it, a series per operation is added.
    pub service: Option<String>,
    /// Only this operation.
    pub operation: Option<String>,
}

/// One step of a RED series.
#[derive(Debug, Clone, PartialEq)]
pub struct RedPoint {
    /// Bucket start, Unix ns, a multiple of the step.
    pub time_unix_nano: u64,
    /// Entry spans (requests).
    pub request_count: u64,
    /// Those with status ERROR.
    pub error_count: u64,
    /// Latency percentiles of the entry spans, ns, from the rollups'
    /// merged DDSketches: within 1% of the exact value (the sample of rank
    /// `floor(q * (n - 1))`). Minutes stored before issue 12 contribute
    /// their histogram buckets' upper bounds (up to 25% above).
    pub p50_ns: u64,
    /// 95th percentile, ns.
    pub p95_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
}

/// RED points of one service, or of one of its operations.
#[derive(Debug, Clone, PartialEq)]
pub struct RedSeries {
    /// The service.
    pub service: String,
    /// The operation, or `None` for the service as a whole.
    pub operation: Option<String>,
    /// Points in time order; steps without spans are absent.
    pub points: Vec<RedPoint>,
}

/// A query for per-minute span metrics of some services and span kinds,
/// as Jaeger's Monitor tab asks for them (every span of those kinds
/// counts, not only entry spans; Jaeger's default kind is SERVER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanMetricsQuery {
    /// Range start, Unix ns (minute precision).
    pub start_ns: u64,
    /// Range end, Unix ns, inclusive (minute precision).
    pub end_ns: u64,
    /// The services (at least one).
    pub services: Vec<String>,
    /// The span kinds ([`skein_storage::model::kind`]) counted.
    pub kinds: Vec<u8>,
    /// A series per (service, operation) rather than per service.
    pub group_by_operation: bool,
}

/// Spans, errors and durations of one series in one minute.
#[derive(Debug, Clone, Default)]
pub struct MinuteMetrics {
    /// Spans.
    pub count: u64,
    /// Spans with status ERROR.
    pub errors: u64,
    /// Their durations, ns.
    pub latency: LatencySketch,
}

/// (service, operation when grouped) -> minute (Unix ns / one minute) ->
/// metrics.
pub type SpanMetrics = BTreeMap<(String, Option<String>), BTreeMap<u64, MinuteMetrics>>;

pub(super) fn span_metrics(s: &Storage, q: &SpanMetricsQuery) -> SpanMetrics {
    let mut m = SpanMetrics::new();
    let (lo, hi) = (q.start_ns / BUCKET_NS, q.end_ns / BUCKET_NS);
    for r in s.rollups(Some(q.start_ns), Some(q.end_ns)) {
        for b in &r.red {
            if b.minute < lo
                || b.minute > hi
                || !q.kinds.contains(&b.kind)
                || !q.services.contains(&b.service)
            {
                continue;
            }
            let op = q.group_by_operation.then(|| b.operation.clone());
            let acc = m.entry((b.service.clone(), op)).or_default().entry(b.minute).or_default();
            acc.count += b.count;
            acc.errors += b.errors;
            b.add_latency_to(&mut acc.latency);
        }
    }
    m
}

pub(super) fn services(s: &Storage) -> Vec<ServiceStat> {
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for seg in &s.snapshot().segments {
        for svc in &seg.meta.services {
            let e = m.entry(svc.name.clone()).or_default();
            e.0 += svc.span_count;
            e.1 += svc.error_count;
        }
    }
    s.for_each_memory_span(|sp| {
        // Look up before inserting: most spans belong to a known service.
        match m.get_mut(sp.service_name()) {
            Some(e) => {
                e.0 += 1;
                e.1 += u64::from(sp.is_error());
            }
            None => {
                m.insert(sp.service_name().to_string(), (1, u64::from(sp.is_error())));
            }
        }
    });
    m.into_iter()
        .map(|(name, (span_count, error_count))| ServiceStat { name, span_count, error_count })
        .collect()
}

pub(super) fn operations(s: &Storage, service: Option<&str>) -> Vec<Operation> {
    let want = |svc: &str| service.is_none_or(|w| w == svc);
    let mut m: BTreeMap<(String, String, u8), u64> = BTreeMap::new();
    for seg in &s.snapshot().segments {
        for op in seg.meta.operations.iter().filter(|o| want(&o.service)) {
            *m.entry((op.service.clone(), op.name.clone(), op.kind)).or_default() += op.span_count;
        }
    }
    s.for_each_memory_span(|sp| {
        if want(sp.service_name()) {
            *m.entry((sp.service_name().to_string(), sp.name.clone(), sp.kind)).or_default() += 1;
        }
    });
    m.into_iter()
        .map(|((service, name, kind), span_count)| Operation { service, name, kind, span_count })
        .collect()
}

pub(super) fn dependencies(s: &Storage, start: Option<u64>, end: Option<u64>) -> Vec<Edge> {
    let (lo, hi) = (start.map(|t| t / BUCKET_NS), end.map(|t| t / BUCKET_NS));
    let rollups = s.rollups(start.map(|t| t.saturating_sub(PAIRING_SLACK_NS)), end);
    let graph = service_graph(rollups.iter().map(|r| r.as_ref()), lo, hi);
    let mut edges: Vec<Edge> = graph
        .into_iter()
        .map(|((parent, child, connection_type), g)| Edge {
            parent,
            child,
            call_count: g.calls,
            error_count: g.errors,
            connection_type,
            p50_ns: g.latency.quantile(0.50),
            p95_ns: g.latency.quantile(0.95),
            p99_ns: g.latency.quantile(0.99),
        })
        .collect();
    edges.sort_by(|a, b| {
        (&a.parent, &a.child, a.connection_type).cmp(&(&b.parent, &b.child, b.connection_type))
    });
    edges
}

pub(super) fn red(s: &Storage, q: &RedQuery) -> Vec<RedSeries> {
    type Acc = (u64, u64, LatencySketch);
    let step = q.step_ns.max(1);
    // (service, operation or None) -> bucket start -> accumulators
    let mut m: BTreeMap<(String, Option<String>), BTreeMap<u64, Acc>> = BTreeMap::new();
    let (lo, hi) = (q.start_ns / BUCKET_NS, q.end_ns / BUCKET_NS);
    for r in s.rollups(Some(q.start_ns), Some(q.end_ns)) {
        for b in &r.red {
            if !b.is_entry() || b.minute < lo || b.minute > hi {
                continue;
            }
            if q.service.as_ref().is_some_and(|x| *x != b.service)
                || q.operation.as_ref().is_some_and(|x| *x != b.operation)
            {
                continue;
            }
            let t = b.minute * BUCKET_NS;
            let t = t - t % step;
            let mut keys = vec![(b.service.clone(), None)];
            if q.service.is_some() {
                keys.push((b.service.clone(), Some(b.operation.clone())));
            }
            for k in keys {
                let acc = m.entry(k).or_default().entry(t).or_default();
                acc.0 += b.count;
                acc.1 += b.errors;
                b.add_latency_to(&mut acc.2);
            }
        }
    }
    m.into_iter()
        .map(|((service, operation), points)| RedSeries {
            service,
            operation,
            points: points
                .into_iter()
                .map(|(t, (count, errors, hist))| RedPoint {
                    time_unix_nano: t,
                    request_count: count,
                    error_count: errors,
                    p50_ns: hist.quantile(0.50).unwrap_or(0),
                    p95_ns: hist.quantile(0.95).unwrap_or(0),
                    p99_ns: hist.quantile(0.99).unwrap_or(0),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use skein_storage::model::kind;

    use super::*;
    use crate::engine::testutil::{append, engine, span, storage, three_traces};

    #[tokio::test]
    async fn services_and_operations_count_head_and_segments_alike() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        let e = engine(&s);
        let mut seen = Vec::new();
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let svcs = e.services().await.unwrap();
            let names: Vec<_> = svcs.iter().map(|x| (x.name.as_str(), x.span_count, x.error_count)).collect();
            assert_eq!(names, [("cart", 2, 1), ("db", 1, 0), ("frontend", 2, 0)]);
            let ops = e.operations(Some("cart".into())).await.unwrap();
            let ops: Vec<_> = ops.iter().map(|o| (o.name.as_str(), o.kind, o.span_count)).collect();
            assert_eq!(ops, [("cart.Get", kind::CLIENT, 1), ("cart.Put", kind::SERVER, 1)]);
            assert!(e.operations(Some("nope".into())).await.unwrap().is_empty());
            seen.push(e.operations(None).await.unwrap().len());
        }
        assert_eq!(seen, [5, 5]);
    }

    #[tokio::test]
    async fn dependencies_and_red_come_from_rollups() {
        let (_d, s) = storage();
        append(&s, three_traces()).await;
        s.flush(true).unwrap();
        let e = engine(&s);
        let edges = e.dependencies(None, None).await.unwrap();
        let edges: Vec<_> = edges
            .iter()
            .map(|x| (x.parent.as_str(), x.child.as_str(), x.call_count, x.error_count))
            .collect();
        assert_eq!(edges, [("cart", "db", 1, 0), ("frontend", "cart", 1, 1)]);
        // Minute bounds: the edges lie in the first minute after the epoch.
        assert!(e.dependencies(Some(120 * BUCKET_NS), None).await.unwrap().is_empty());

        let q = RedQuery {
            start_ns: 0,
            end_ns: BUCKET_NS,
            step_ns: BUCKET_NS,
            service: Some("cart".into()),
            operation: None,
        };
        let series = e.red(q).await.unwrap();
        let keys: Vec<_> = series.iter().map(|x| (x.service.as_str(), x.operation.as_deref())).collect();
        // `cart.Get` is a CLIENT span under another: not a request to cart.
        assert_eq!(keys, [("cart", None), ("cart", Some("cart.Put"))]);
        assert_eq!((series[0].points[0].request_count, series[0].points[0].error_count), (1, 0));
    }

    /// Issue 9 item 5: `frontend` serves 3 requests, each one SERVER span
    /// with INTERNAL and CLIENT spans inside it and two calls to `cart`;
    /// a root INTERNAL job runs once. RED counts requests (entry spans),
    /// not spans, in the head and in segments; edges count the calls.
    #[tokio::test]
    async fn red_counts_requests_from_entry_spans() {
        let (_d, s) = storage();
        let sec = 1_000_000_000;
        let mut spans = Vec::new();
        for t in 1..=3u8 {
            let at = u64::from(t) * sec;
            let failed = t == 3;
            let mut root = span(t, 1, None, "frontend", "GET /", at, 400_000_000, failed);
            root.kind = kind::SERVER;
            let mut render = span(t, 2, Some(1), "frontend", "render", at + 1, 10_000_000, false);
            render.kind = kind::INTERNAL;
            spans.extend([root, render]);
            for (c, srv) in [(3u8, 4u8), (5, 6)] {
                spans.push(span(t, c, Some(1), "frontend", "cart.Get", at + 2, 50_000_000, failed));
                let mut server = span(t, srv, Some(c), "cart", "cart.Get", at + 3, 40_000_000, failed);
                server.kind = kind::SERVER;
                let mut db = span(t, srv + 10, Some(srv), "cart", "SELECT", at + 4, 5_000_000, false);
                db.kind = kind::CLIENT;
                spans.extend([server, db]);
            }
        }
        let mut job = span(9, 1, None, "frontend", "sweep", 5 * sec, 1_000_000, false);
        job.kind = kind::INTERNAL;
        spans.push(job);
        append(&s, spans).await;
        let e = engine(&s);
        for flushed in [false, true] {
            if flushed {
                s.flush(true).unwrap();
            }
            let q = |service: &str| RedQuery {
                start_ns: 0,
                end_ns: BUCKET_NS,
                step_ns: BUCKET_NS,
                service: Some(service.into()),
                operation: None,
            };
            let got = |series: Vec<RedSeries>| -> Vec<(Option<String>, u64, u64)> {
                series
                    .into_iter()
                    .map(|x| (x.operation, x.points[0].request_count, x.points[0].error_count))
                    .collect()
            };
            assert_eq!(
                got(e.red(q("frontend")).await.unwrap()),
                [(None, 4, 1), (Some("GET /".into()), 3, 1), (Some("sweep".into()), 1, 0)],
                "flushed: {flushed}"
            );
            assert_eq!(got(e.red(q("cart")).await.unwrap()), [(None, 6, 2), (Some("cart.Get".into()), 6, 2)]);
            let frontend = &e.red(q("frontend")).await.unwrap()[1].points[0];
            // Latency of the requests (400 ms), not of the spans inside them.
            assert!((400_000_000..=500_000_000).contains(&frontend.p50_ns), "{frontend:?}");
            let edges = e.dependencies(None, None).await.unwrap();
            let edges: Vec<_> = edges
                .iter()
                .map(|x| (x.parent.as_str(), x.child.as_str(), x.call_count, x.error_count))
                .collect();
            assert_eq!(edges, [("frontend", "cart", 6, 2)]);
        }
    }
}
