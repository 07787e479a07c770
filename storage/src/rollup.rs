//! Rollups computed when a segment is written (and on the fly for the head):
//! service-to-service edges and per-operation request/error/latency counts,
//! in one-minute buckets, so the service map and RED queries never read spans.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{Span, SpanId};

/// Width of a rollup bucket: one minute, in ns.
pub const BUCKET_NS: u64 = 60_000_000_000;

/// Calls from one service to another within one minute.
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
    /// Spans (requests).
    pub count: u64,
    /// Spans with status ERROR.
    pub errors: u64,
    /// Sparse latency histogram: (bucket index, count); see [`hist_bucket`].
    pub hist: Vec<(u16, u32)>,
}

/// The rollups of a segment (or of the head).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollup {
    /// Service-to-service calls per minute.
    pub edges: Vec<EdgeBucket>,
    /// Rate, errors and duration per operation and minute.
    pub red: Vec<RedBucket>,
}

/// Log-linear latency buckets: four per power of two of nanoseconds, so a
/// percentile read from them is within about 19% of the true value.
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

/// (minute, service, operation, kind) -> (count, errors, latency histogram).
type RedMap = HashMap<(u64, String, String, u8), (u64, u64, HashMap<u16, u32>)>;

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
            let r =
                self.red.entry((minute, s.service_name().to_string(), s.name.clone(), s.kind)).or_default();
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
            .map(|((minute, service, operation, kind), (count, errors, hist))| {
                let mut hist: Vec<(u16, u32)> = hist.into_iter().collect();
                hist.sort_unstable();
                RedBucket { minute, service, operation, kind, count, errors, hist }
            })
            .collect();
        red.sort_by(|a, b| (a.minute, &a.service, &a.operation).cmp(&(b.minute, &b.service, &b.operation)));
        Rollup { edges, red }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
