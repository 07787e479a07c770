//! Rollups computed when a segment is written (and on the fly for the head):
//! service-to-service edges and per-operation request/error/latency counts,
//! in one-minute buckets, so the service map and RED queries never read spans.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{kind, Span, SpanId};

/// Width of a rollup bucket: one minute, in ns.
pub const BUCKET_NS: u64 = 60_000_000_000;

/// Calls from one service to another within one minute. A call is a
/// parent/child pair of spans in two services: the caller's CLIENT (or
/// PRODUCER) span and the callee's SERVER (or CONSUMER) span under it, as
/// Tempo's service graphs pair them; one request counts once however many
/// spans either side records around it. A callee span under a caller span
/// of another kind (a caller without client instrumentation) counts too.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeBucket {
    /// Start of the minute, Unix ns (a multiple of [`BUCKET_NS`]).
    pub minute: u64,
    /// The calling service.
    pub parent: String,
    /// The called service.
    pub child: String,
    /// Calls: child spans whose parent span is in `parent`.
    pub calls: u64,
    /// Of those, calls whose child span has status ERROR.
    pub errors: u64,
}

/// Spans of one operation within one minute, with a latency histogram.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RedBucket {
    /// Start of the minute, Unix ns (a multiple of [`BUCKET_NS`]).
    pub minute: u64,
    /// The span's service.
    pub service: String,
    /// The span's name.
    pub operation: String,
    /// The span's kind ([`crate::model::kind`]).
    pub kind: u8,
    /// Whether the spans are trace roots (no parent span). Rollups written
    /// before this field read it as `false`.
    #[serde(default)]
    pub root: bool,
    /// Spans.
    pub count: u64,
    /// Spans with status ERROR.
    pub errors: u64,
    /// Sparse latency histogram: (bucket index, count); see [`hist_bucket`].
    pub hist: Vec<(u16, u32)>,
}

impl RedBucket {
    /// Whether the bucket's spans are entry spans, the ones a service's
    /// request rate, error rate and latency come from (as in Jaeger's
    /// service performance monitoring and Tempo's service graphs): SERVER
    /// and CONSUMER spans, and a trace's root of any other kind (a job or
    /// a request whose server side is not instrumented). The CLIENT and
    /// INTERNAL spans a request makes inside a service are not requests to
    /// it. In rollups written before [`RedBucket::root`] existed only the
    /// kinds count.
    pub fn is_entry(&self) -> bool {
        is_entry_kind(self.kind) || self.root
    }
}

/// SERVER and CONSUMER: the kinds whose spans are requests to their
/// service (see [`RedBucket::is_entry`]).
pub fn is_entry_kind(k: u8) -> bool {
    k == kind::SERVER || k == kind::CONSUMER
}

/// The rollups of a segment (or of the head).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollup {
    /// Service-to-service calls per minute.
    pub edges: Vec<EdgeBucket>,
    /// Rate, errors and duration per operation and minute.
    pub red: Vec<RedBucket>,
}

/// Log-linear latency buckets: four per power of two of nanoseconds. A
/// percentile read from them is its bucket's upper bound, at most 25%
/// above the true value (bucket bounds grow by 5/4 at most).
pub fn hist_bucket(ns: u64) -> u16 {
    if ns < 4 {
        return ns as u16;
    }
    let log = 63 - ns.leading_zeros() as u64; // floor(log2)
    let frac = (ns >> (log - 2)) & 3; // next two bits
    (log * 4 + frac) as u16
}

/// The upper bound, in ns, of a histogram bucket.
pub fn bucket_upper(b: u16) -> u64 {
    if b < 4 {
        return b as u64;
    }
    let log = (b / 4) as u32;
    let frac = (b % 4) as u64;
    ((4 + frac + 1) << log) >> 2
}

/// Estimates quantile `q` (0..1) from a merged histogram.
pub fn quantile(hist: &HashMap<u16, u64>, q: f64) -> u64 {
    let total: u64 = hist.values().sum();
    if total == 0 {
        return 0;
    }
    let mut keys: Vec<_> = hist.keys().copied().collect();
    keys.sort_unstable();
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for k in keys {
        seen += hist[&k];
        if seen >= rank {
            return bucket_upper(k);
        }
    }
    0
}

/// (minute, service, operation, kind, root) -> (count, errors, latency
/// histogram).
type RedMap = HashMap<(u64, String, String, u8, bool), (u64, u64, HashMap<u16, u32>)>;

/// Accumulates rollups from traces.
#[derive(Debug, Default)]
pub struct RollupBuilder {
    edges: HashMap<(u64, String, String), (u64, u64)>,
    red: RedMap,
}

impl RollupBuilder {
    /// Adds one trace's spans (or the part of it at hand). An edge is a
    /// span whose parent, in the same batch, belongs to another service.
    pub fn add_trace(&mut self, spans: &[Span]) {
        let by_id: HashMap<SpanId, &str> = spans.iter().map(|s| (s.span_id, s.service_name())).collect();
        for s in spans {
            let minute = s.start_time_unix_nano / BUCKET_NS;
            let key =
                (minute, s.service_name().to_string(), s.name.clone(), s.kind, s.parent_span_id.is_none());
            let r = self.red.entry(key).or_default();
            r.0 += 1;
            r.1 += u64::from(s.is_error());
            *r.2.entry(hist_bucket(s.duration_ns())).or_default() += 1;
            if let Some(parent) = s.parent_span_id.and_then(|p| by_id.get(&p)) {
                if *parent != s.service_name() {
                    let e = self
                        .edges
                        .entry((minute, parent.to_string(), s.service_name().to_string()))
                        .or_default();
                    e.0 += 1;
                    e.1 += u64::from(s.is_error());
                }
            }
        }
    }

    /// The rollup of everything added.
    pub fn build(self) -> Rollup {
        let mut edges: Vec<EdgeBucket> = self
            .edges
            .into_iter()
            .map(|((minute, parent, child), (calls, errors))| EdgeBucket {
                minute,
                parent,
                child,
                calls,
                errors,
            })
            .collect();
        edges.sort_by(|a, b| (a.minute, &a.parent, &a.child).cmp(&(b.minute, &b.parent, &b.child)));
        let mut red: Vec<RedBucket> = self
            .red
            .into_iter()
            .map(|((minute, service, operation, kind, root), (count, errors, hist))| {
                let mut hist: Vec<(u16, u32)> = hist.into_iter().collect();
                hist.sort_unstable();
                RedBucket { minute, service, operation, kind, root, count, errors, hist }
            })
            .collect();
        red.sort_by(|a, b| {
            (a.minute, &a.service, &a.operation, a.kind, a.root).cmp(&(
                b.minute,
                &b.service,
                &b.operation,
                b.kind,
                b.root,
            ))
        });
        Rollup { edges, red }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Resource, Scope, TraceId};

    fn span(id: u8, parent: Option<u8>, service: &str, name: &str, k: u8) -> Span {
        Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: k,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            status_code: 0,
            status_message: String::new(),
            attributes: Vec::new(),
            resource: Arc::new(Resource { service_name: service.into(), attributes: Vec::new() }),
            scope: Arc::new(Scope::default()),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    /// One request to `web`: its SERVER span, INTERNAL and CLIENT spans
    /// inside it, two calls to `api` (SERVER each); and a root INTERNAL
    /// job. Entries are the SERVER spans and the job; edges the two calls.
    #[test]
    fn buckets_know_entry_spans_and_edges_pair_calls() {
        let mut b = RollupBuilder::default();
        b.add_trace(&[
            span(1, None, "web", "GET /", kind::SERVER),
            span(2, Some(1), "web", "render", kind::INTERNAL),
            span(3, Some(1), "web", "api.Get", kind::CLIENT),
            span(4, Some(3), "api", "api.Get", kind::SERVER),
            span(5, Some(1), "web", "api.Get", kind::CLIENT),
            span(6, Some(5), "api", "api.Get", kind::SERVER),
            span(7, Some(6), "api", "SELECT", kind::CLIENT),
            span(8, None, "web", "sweep", kind::INTERNAL),
        ]);
        let r = b.build();
        let entries: Vec<_> = r
            .red
            .iter()
            .filter(|b| b.is_entry())
            .map(|b| (b.service.as_str(), b.operation.as_str(), b.count))
            .collect();
        assert_eq!(entries, [("api", "api.Get", 2), ("web", "GET /", 1), ("web", "sweep", 1)]);
        let edges: Vec<_> = r.edges.iter().map(|e| (e.parent.as_str(), e.child.as_str(), e.calls)).collect();
        assert_eq!(edges, [("web", "api", 2)]);
    }

    /// A rollup written before `root` existed still reads; its SERVER and
    /// CONSUMER buckets are entries, the rest not.
    #[test]
    fn rollups_without_root_read_as_kind_only() {
        let old = r#"{"edges":[],"red":[
            {"minute":1,"service":"s","operation":"a","kind":2,"count":3,"errors":0,"hist":[[8,3]]},
            {"minute":1,"service":"s","operation":"b","kind":5,"count":1,"errors":0,"hist":[]},
            {"minute":1,"service":"s","operation":"c","kind":1,"count":4,"errors":0,"hist":[]}]}"#;
        let r: Rollup = serde_json::from_str(old).unwrap();
        let entries: Vec<_> = r.red.iter().map(|b| (b.operation.as_str(), b.root, b.is_entry())).collect();
        assert_eq!(entries, [("a", false, true), ("b", false, true), ("c", false, false)]);
    }

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in [1u64, 3, 4, 5, 7, 8, 100, 1_000, 1_000_000, 123_456_789, 10_000_000_000] {
            let b = hist_bucket(ns);
            assert!(b >= last);
            last = b;
            let up = bucket_upper(b);
            assert!(up >= ns, "{ns} -> {b} -> {up}");
            assert!(up as f64 <= ns as f64 * 1.26 + 1.0, "{ns} -> {up}");
        }
    }
}
