//! Rollups computed when a segment is written (and on the fly for the head):
//! service-to-service edges and per-operation request/error/latency counts,
//! in one-minute buckets, so the service map and RED queries never read spans.
//!
//! Latencies are DDSketches (`sketches-ddsketch`, relative error 1%), stored
//! in DataDog's binary sketch encoding, base64 in `rollup.json`.
//!
//! Edges whose two spans are in different segments (or one in a segment and
//! one in memory) are paired at query time: each rollup keeps its unpaired
//! halves ([`OpenChild`], [`OpenParent`]) and [`service_graph`] joins them
//! across every rollup by (trace ID, span ID). See [`EdgeBucket`] for what
//! counts as an edge.
//!
//! Rollups written before [`ROLLUP_VERSION`] 2 (issue 12) still read: their
//! RED latencies come from their 25%-wide histograms (a percentile is its
//! bucket's upper bound), their edges have no latency, and they keep no
//! unpaired halves, so a call whose two spans were flushed apart with one
//! of them into such a segment is not counted, as before.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sketches_ddsketch::{Config, DDSketch};

use crate::model::{kind, AttrValue, Span, SpanId, TraceId};

/// Width of a rollup bucket: one minute, in ns.
pub const BUCKET_NS: u64 = 60_000_000_000;

/// The rollup format this build writes: 2 adds latency sketches,
/// connection types and unpaired halves (issue 12). Rollups without the
/// field read as 0.
pub const ROLLUP_VERSION: u32 = 2;

/// The sketches' relative accuracy: a quantile read from a sketch is
/// within 1% of the sample at that rank ([`LatencySketch::quantile`]).
pub const SKETCH_RELATIVE_ERROR: f64 = 0.01;

/// A mergeable latency sketch (DDSketch, relative error
/// [`SKETCH_RELATIVE_ERROR`]) of durations in ns. Serialized as base64 of
/// the DataDog binary sketch encoding (`DDSketch::to_java_bytes`), a few
/// hundred bytes for a minute of one operation.
#[derive(Clone)]
pub struct LatencySketch(DDSketch);

impl Default for LatencySketch {
    fn default() -> Self {
        LatencySketch(DDSketch::new(Config::defaults()))
    }
}

impl LatencySketch {
    /// Adds one duration, ns.
    pub fn add(&mut self, ns: u64) {
        self.0.add(ns as f64);
    }

    /// Adds `count` durations of `ns` each.
    pub fn add_n(&mut self, ns: u64, count: u64) {
        self.0.add_with_count(ns as f64, count);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencySketch) {
        // Every sketch here has the default config, so this cannot fail;
        // one decoded from a foreign encoding would be refused at read.
        let _ = self.0.merge(&other.0);
    }

    /// Samples added.
    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// Quantile `q` (0..=1), ns: within 1% of the sample of rank
    /// `floor(q * (count - 1))` in sorted order (DDSketch's rank rule);
    /// `None` when empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.0.quantile(q).ok().flatten().map(|v| v.round().max(0.0) as u64)
    }

    fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0.to_java_bytes())
    }
}

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LatencySketch(count={}, p50={:?})", self.count(), self.quantile(0.5))
    }
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_java_bytes() == other.0.to_java_bytes()
    }
}

impl Serialize for LatencySketch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for LatencySketch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(D::Error::custom)?;
        let sketch =
            DDSketch::from_java_bytes(&bytes).map_err(|e| D::Error::custom(format!("sketch: {e}")))?;
        // Only sketches this build can merge with its own are accepted.
        let mut probe = DDSketch::new(Config::defaults());
        probe.merge(&sketch).map_err(|_| D::Error::custom("sketch of another accuracy"))?;
        Ok(LatencySketch(sketch))
    }
}

/// What kind of connection an edge is, as Tempo's service-graph processor
/// labels it (`connection_type`: unset, `database`, `messaging_system`,
/// `virtual_node`; grafana/tempo `docs/sources/tempo/metrics-generator/
/// service_graphs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    /// A call between two instrumented services (Tempo: unset).
    #[default]
    Service,
    /// A CLIENT span with `db.system` (or `db.name`): a call to a database,
    /// whose node is named from the span's peer attributes.
    Database,
    /// A PRODUCER span and the CONSUMER span under it, or a PRODUCER span
    /// whose consumer is not instrumented.
    MessagingSystem,
    /// A CLIENT span with no child in another service, to a peer named by
    /// its attributes (an uninstrumented service).
    VirtualNode,
}

impl ConnectionType {
    /// Whether this is [`ConnectionType::Service`].
    pub fn is_service(&self) -> bool {
        *self == ConnectionType::Service
    }

    /// Tempo's label value; `None` for a plain service call.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            ConnectionType::Service => None,
            ConnectionType::Database => Some("database"),
            ConnectionType::MessagingSystem => Some("messaging_system"),
            ConnectionType::VirtualNode => Some("virtual_node"),
        }
    }
}

/// Calls from one service to another (or to a database or virtual peer)
/// within one minute.
///
/// An edge is a span whose parent span is in another service: the call
/// from the parent's service to the child's, counted once per child span
/// (Jaeger's dependency rule; the generator's `summary.json` counts the
/// same), at the child's minute, with the child's status and duration (the
/// latency as the callee saw it). A CLIENT span with `db.system` or
/// `db.name` is a database call: unless a span of another service is under
/// it in the same write (an instrumented database, whose edge to its real
/// service name is the call's edge, as Jaeger counts it), its edge goes to
/// the database node (see [`peer_name`]) with the client's status and
/// duration, as Tempo records a database request from its client span
/// alone. A database call whose instrumented callee landed in another
/// segment counts once, as the database edge (the callee's half finds no
/// caller half to pair with: database calls keep none, since nearly all of
/// them have no callee and keeping them would grow every rollup). A CLIENT or PRODUCER span
/// with no child in another service, anywhere, and a peer attribute makes
/// an edge to that peer ([`ConnectionType::VirtualNode`], or
/// [`ConnectionType::MessagingSystem`] for a PRODUCER).
///
/// Across segments, a child pairs with a parent of kind CLIENT or PRODUCER
/// (the caller side of an instrumented call; see [`OpenParent`]); a child
/// under a SERVER or INTERNAL span of another service (a caller without
/// client instrumentation) counts only when both spans are written
/// together (one segment, or both in memory), or once compaction merges
/// their segments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeBucket {
    /// The minute: Unix ns / [`BUCKET_NS`].
    pub minute: u64,
    /// The calling service.
    pub parent: String,
    /// The called service, or the database or virtual peer.
    pub child: String,
    /// Calls.
    pub calls: u64,
    /// Of those, calls whose child span (the client span for a database
    /// or virtual peer) has status ERROR.
    pub errors: u64,
    /// The kind of connection. Absent in JSON for a plain service call
    /// and in rollups before version 2.
    #[serde(default, skip_serializing_if = "ConnectionType::is_service")]
    pub connection_type: ConnectionType,
    /// Durations of the calls. Absent in rollups before version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySketch>,
}

/// Spans of one operation within one minute, with a latency sketch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RedBucket {
    /// The minute: Unix ns / [`BUCKET_NS`].
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
    /// Rollups before version 2: sparse latency histogram, (bucket index,
    /// count); see [`hist_bucket`]. Empty (and absent in JSON) since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hist: Vec<(u16, u32)>,
    /// Durations of the spans (rollups since version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySketch>,
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

    /// Adds the bucket's durations to `into`: its sketch, or for a rollup
    /// before version 2 each histogram bucket's upper bound (so within 25%
    /// above the true value, as those rollups always answered).
    pub fn add_latency_to(&self, into: &mut LatencySketch) {
        match &self.latency {
            Some(l) => into.merge(l),
            None => {
                for (b, c) in &self.hist {
                    into.add_n(bucket_upper(*b), u64::from(*c));
                }
            }
        }
    }
}

/// SERVER and CONSUMER: the kinds whose spans are requests to their
/// service (see [`RedBucket::is_entry`]).
pub fn is_entry_kind(k: u8) -> bool {
    k == kind::SERVER || k == kind::CONSUMER
}

/// A span whose parent span was not written with it: the child half of a
/// call that [`service_graph`] pairs with an [`OpenParent`] of another
/// rollup. Every span with a parent ID not in its segment is one (the
/// parent may be in the same service: then the pair makes no edge).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenChild {
    /// The trace.
    #[serde(rename = "t", with = "hex_trace")]
    pub trace_id: TraceId,
    /// The parent span's ID.
    #[serde(rename = "p", with = "hex_span")]
    pub parent_span_id: SpanId,
    /// The child's service.
    #[serde(rename = "s")]
    pub service: String,
    /// The child's start minute (Unix ns / [`BUCKET_NS`]).
    #[serde(rename = "m")]
    pub minute: u64,
    /// Whether the child has status ERROR.
    #[serde(rename = "e", default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// The child's duration, ns.
    #[serde(rename = "d")]
    pub duration_ns: u64,
    /// Whether the child is a CONSUMER span.
    #[serde(rename = "c", default, skip_serializing_if = "std::ops::Not::not")]
    pub consumer: bool,
}

/// A CLIENT or PRODUCER span (not a database call) with no child in
/// another service written with it: the caller half of a call whose
/// callee may be in another rollup, or a call to an uninstrumented peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenParent {
    /// The trace.
    #[serde(rename = "t", with = "hex_trace")]
    pub trace_id: TraceId,
    /// The span's ID.
    #[serde(rename = "i", with = "hex_span")]
    pub span_id: SpanId,
    /// The span's service.
    #[serde(rename = "s")]
    pub service: String,
    /// The span's start minute (Unix ns / [`BUCKET_NS`]).
    #[serde(rename = "m")]
    pub minute: u64,
    /// Whether the span has status ERROR.
    #[serde(rename = "e", default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// The span's duration, ns.
    #[serde(rename = "d")]
    pub duration_ns: u64,
    /// Whether the span is a PRODUCER span.
    #[serde(rename = "k", default, skip_serializing_if = "std::ops::Not::not")]
    pub producer: bool,
    /// The peer named by its attributes ([`peer_name`]), if any: the
    /// virtual node it calls when no child in another service turns up.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

mod hex_trace {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::TraceId;

    pub(super) fn serialize<S: Serializer>(t: &TraceId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TraceId, D::Error> {
        let text = String::deserialize(d)?;
        TraceId::parse_hex(&text).ok_or_else(|| serde::de::Error::custom("bad trace ID"))
    }
}

mod hex_span {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::SpanId;

    pub(super) fn serialize<S: Serializer>(t: &SpanId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SpanId, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 8];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(SpanId(out))
    }
}

/// The rollups of a segment (or of the head).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollup {
    /// Format version ([`ROLLUP_VERSION`] when written by this build; 0
    /// for rollups before the field).
    #[serde(default)]
    pub version: u32,
    /// Calls per minute whose two spans were written together, and
    /// database calls.
    pub edges: Vec<EdgeBucket>,
    /// Rate, errors and duration per operation and minute.
    pub red: Vec<RedBucket>,
    /// Spans whose parent was not written with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_children: Vec<OpenChild>,
    /// Calling spans with no callee written with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_parents: Vec<OpenParent>,
}

/// Log-linear latency buckets of rollups before version 2: four per power
/// of two of nanoseconds. A percentile read from them is its bucket's
/// upper bound, at most 25% above the true value.
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

fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    s.attributes.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
        AttrValue::Str(x) if !x.is_empty() => Some(x.as_str()),
        _ => None,
    })
}

/// Whether `s` is a database call: a CLIENT span with `db.system` or
/// `db.name` (Tempo's rule for database requests).
pub fn is_database_call(s: &Span) -> bool {
    s.kind == kind::CLIENT && (str_attr(s, "db.system").is_some() || str_attr(s, "db.name").is_some())
}

/// The peer a calling span names: the first of `peer.service`,
/// `db.system`, `server.address`, `messaging.destination.name`,
/// `messaging.system`, `db.name` present (Tempo's `peer_attributes` and
/// Jaeger's peer-service naming, with the database system before the
/// host so that every PostgreSQL client meets at `postgresql`).
pub fn peer_name(s: &Span) -> Option<&str> {
    [
        "peer.service",
        "db.system",
        "server.address",
        "messaging.destination.name",
        "messaging.system",
        "db.name",
    ]
    .iter()
    .find_map(|k| str_attr(s, k))
}

fn is_caller_kind(k: u8) -> bool {
    k == kind::CLIENT || k == kind::PRODUCER
}

fn connection(parent_producer: bool, child_consumer: bool) -> ConnectionType {
    if parent_producer || child_consumer {
        ConnectionType::MessagingSystem
    } else {
        ConnectionType::Service
    }
}

type EdgeKey = (u64, String, String, ConnectionType);

/// Calls, errors and latencies of one edge.
#[derive(Debug, Default, Clone)]
struct EdgeAcc {
    calls: u64,
    errors: u64,
    latency: LatencySketch,
}

impl EdgeAcc {
    fn add(&mut self, error: bool, ns: u64) {
        self.calls += 1;
        self.errors += u64::from(error);
        self.latency.add(ns);
    }
}

/// (minute, service, operation, kind, root) -> (count, errors, latency).
type RedMap = HashMap<(u64, String, String, u8, bool), (u64, u64, LatencySketch)>;

/// Accumulates rollups from traces.
#[derive(Debug, Default)]
pub struct RollupBuilder {
    edges: HashMap<EdgeKey, EdgeAcc>,
    red: RedMap,
    open_children: Vec<OpenChild>,
    open_parents: Vec<OpenParent>,
}

fn minute_of(ns: u64) -> u64 {
    ns / BUCKET_NS
}

impl RollupBuilder {
    /// Adds one trace's spans (or the part of it at hand). Pairs found
    /// within `spans` become edges; the halves left over are paired with
    /// those of other calls to `add_trace` at [`RollupBuilder::build`].
    pub fn add_trace(&mut self, spans: &[Span]) {
        let by_id: HashMap<SpanId, &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
        let mut called: HashSet<SpanId> = HashSet::new();
        for s in spans {
            let minute = minute_of(s.start_time_unix_nano);
            let key =
                (minute, s.service_name().to_string(), s.name.clone(), s.kind, s.parent_span_id.is_none());
            let r = self.red.entry(key).or_default();
            r.0 += 1;
            r.1 += u64::from(s.is_error());
            r.2.add(s.duration_ns());
            let Some(pid) = s.parent_span_id else { continue };
            match by_id.get(&pid) {
                Some(p) if p.service_name() != s.service_name() => {
                    called.insert(pid);
                    let ct = connection(p.kind == kind::PRODUCER, s.kind == kind::CONSUMER);
                    let k = (minute, p.service_name().to_string(), s.service_name().to_string(), ct);
                    self.edges.entry(k).or_default().add(s.is_error(), s.duration_ns());
                }
                Some(_) => {}
                None => self.open_children.push(OpenChild {
                    trace_id: s.trace_id,
                    parent_span_id: pid,
                    service: s.service_name().to_string(),
                    minute,
                    error: s.is_error(),
                    duration_ns: s.duration_ns(),
                    consumer: s.kind == kind::CONSUMER,
                }),
            }
        }
        for s in spans.iter().filter(|s| is_caller_kind(s.kind) && !called.contains(&s.span_id)) {
            let minute = minute_of(s.start_time_unix_nano);
            if is_database_call(s) {
                let peer = peer_name(s).unwrap_or("database").to_string();
                let k = (minute, s.service_name().to_string(), peer, ConnectionType::Database);
                self.edges.entry(k).or_default().add(s.is_error(), s.duration_ns());
            } else {
                self.open_parents.push(OpenParent {
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    service: s.service_name().to_string(),
                    minute,
                    error: s.is_error(),
                    duration_ns: s.duration_ns(),
                    producer: s.kind == kind::PRODUCER,
                    peer: peer_name(s).map(String::from),
                });
            }
        }
    }

    /// The rollup of everything added: halves of one call added in
    /// separate `add_trace` calls are paired here; the rest are kept.
    pub fn build(mut self) -> Rollup {
        let mut parents: HashMap<(TraceId, SpanId), (usize, bool)> = self
            .open_parents
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.trace_id, p.span_id), (i, false)))
            .collect();
        let mut children = Vec::new();
        for c in std::mem::take(&mut self.open_children) {
            match parents.get_mut(&(c.trace_id, c.parent_span_id)) {
                Some((i, called)) => {
                    let p = &self.open_parents[*i];
                    if p.service != c.service {
                        *called = true;
                        let k = (
                            c.minute,
                            p.service.clone(),
                            c.service.clone(),
                            connection(p.producer, c.consumer),
                        );
                        self.edges.entry(k).or_default().add(c.error, c.duration_ns);
                    }
                }
                None => children.push(c),
            }
        }
        let mut open_parents: Vec<OpenParent> = std::mem::take(&mut self.open_parents)
            .into_iter()
            .filter(|p| !parents.get(&(p.trace_id, p.span_id)).is_some_and(|x| x.1))
            .collect();
        parents.clear();
        open_parents.sort_by_key(|a| (a.trace_id, a.span_id));
        children.sort_by_key(|a| (a.trace_id, a.parent_span_id));

        let mut edges: Vec<EdgeBucket> = self
            .edges
            .into_iter()
            .map(|((minute, parent, child, connection_type), acc)| EdgeBucket {
                minute,
                parent,
                child,
                calls: acc.calls,
                errors: acc.errors,
                connection_type,
                latency: Some(acc.latency),
            })
            .collect();
        edges.sort_by(|a, b| {
            (a.minute, &a.parent, &a.child, a.connection_type).cmp(&(
                b.minute,
                &b.parent,
                &b.child,
                b.connection_type,
            ))
        });
        let mut red: Vec<RedBucket> = self
            .red
            .into_iter()
            .map(|((minute, service, operation, kind, root), (count, errors, latency))| RedBucket {
                minute,
                service,
                operation,
                kind,
                root,
                count,
                errors,
                hist: Vec::new(),
                latency: Some(latency),
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
        Rollup { version: ROLLUP_VERSION, edges, red, open_children: children, open_parents }
    }
}

/// One edge of the service graph over a range: calls, errors and latency.
#[derive(Debug, Clone, Default)]
pub struct GraphEdge {
    /// Calls.
    pub calls: u64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// Durations of the calls (empty when every call came from a rollup
    /// before version 2).
    pub latency: LatencySketch,
}

/// The service graph of `rollups` over the minutes `[lo, hi]` (Unix ns /
/// [`BUCKET_NS`]; open when `None`), keyed by (parent, child, connection
/// type): each rollup's edges, plus the calls whose two halves are in
/// different rollups (an [`OpenChild`] joined with the [`OpenParent`] of
/// its parent span by a hash join on (trace ID, span ID)), plus virtual
/// edges for the open parents no child of another service joined. Each
/// call counts once however its spans were split, provided every rollup
/// holding a half is passed (callers widen the range so parents that
/// started earlier are in).
pub fn service_graph<'a>(
    rollups: impl IntoIterator<Item = &'a Rollup>,
    lo: Option<u64>,
    hi: Option<u64>,
) -> HashMap<(String, String, ConnectionType), GraphEdge> {
    let in_range = |m: u64| lo.is_none_or(|l| m >= l) && hi.is_none_or(|h| m <= h);
    let mut out: HashMap<(String, String, ConnectionType), GraphEdge> = HashMap::new();
    let mut children: Vec<&OpenChild> = Vec::new();
    let mut parents: HashMap<(TraceId, SpanId), (&OpenParent, bool)> = HashMap::new();
    for r in rollups {
        for e in r.edges.iter().filter(|e| in_range(e.minute)) {
            let g = out.entry((e.parent.clone(), e.child.clone(), e.connection_type)).or_default();
            g.calls += e.calls;
            g.errors += e.errors;
            if let Some(l) = &e.latency {
                g.latency.merge(l);
            }
        }
        children.extend(&r.open_children);
        parents.extend(r.open_parents.iter().map(|p| ((p.trace_id, p.span_id), (p, false))));
    }
    for c in children {
        let Some((p, called)) = parents.get_mut(&(c.trace_id, c.parent_span_id)) else { continue };
        if p.service == c.service {
            continue;
        }
        *called = true;
        if in_range(c.minute) {
            let ct = connection(p.producer, c.consumer);
            let g = out.entry((p.service.clone(), c.service.clone(), ct)).or_default();
            g.calls += 1;
            g.errors += u64::from(c.error);
            g.latency.add(c.duration_ns);
        }
    }
    for (p, _) in parents.into_values().filter(|(p, called)| !called && in_range(p.minute)) {
        let Some(peer) = &p.peer else { continue };
        let ct = if p.producer { ConnectionType::MessagingSystem } else { ConnectionType::VirtualNode };
        let g = out.entry((p.service.clone(), peer.clone(), ct)).or_default();
        g.calls += 1;
        g.errors += u64::from(p.error);
        g.latency.add(p.duration_ns);
    }
    out
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Resource, Scope};

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

    /// A rollup written before version 2 (no version, histograms, edges
    /// without latency) still answers: its edges count with no latency,
    /// its RED latency is the histogram buckets' upper bounds.
    #[test]
    fn version_one_rollups_answer_less_precisely() {
        let old = r#"{"edges":[{"minute":3,"parent":"a","child":"b","calls":2,"errors":1}],"red":[
            {"minute":3,"service":"b","operation":"x","kind":2,"count":3,"errors":0,"hist":[[80,3]]}]}"#;
        let r: Rollup = serde_json::from_str(old).unwrap();
        assert_eq!((r.version, r.open_children.len(), r.open_parents.len()), (0, 0, 0));
        let g = service_graph([&r], None, None);
        let e = &g[&("a".to_string(), "b".to_string(), ConnectionType::Service)];
        assert_eq!((e.calls, e.errors, e.latency.quantile(0.5)), (2, 1, None));
        let mut l = LatencySketch::default();
        r.red[0].add_latency_to(&mut l);
        let p50 = l.quantile(0.5).unwrap() as f64;
        let upper = bucket_upper(80) as f64;
        assert!((p50 - upper).abs() <= upper * 0.01, "{p50} vs {upper}");
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

    /// Acceptance (issue 12): p50/p95/p99 from a sketch are within 1% of
    /// the exact sample at the same rank, for durations spread over six
    /// orders of magnitude, and still after merging sketches built apart
    /// and reading them back from JSON.
    #[test]
    fn sketch_quantiles_are_within_one_percent_of_exact() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut durations: Vec<u64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Log-uniform from 1 µs to 1 s.
                (1_000.0 * 1e6f64.powf((x % 1_000_000) as f64 / 1e6)) as u64
            })
            .collect();
        let mut parts = vec![LatencySketch::default(); 4];
        for (i, d) in durations.iter().enumerate() {
            parts[i % 4].add(*d);
        }
        let mut merged = LatencySketch::default();
        for p in &parts {
            let back: LatencySketch = serde_json::from_str(&serde_json::to_string(p).unwrap()).unwrap();
            merged.merge(&back);
        }
        durations.sort_unstable();
        assert_eq!(merged.count(), durations.len() as u64);
        for q in [0.5, 0.95, 0.99] {
            let exact = durations[(q * (durations.len() - 1) as f64) as usize] as f64;
            let got = merged.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() <= exact * SKETCH_RELATIVE_ERROR, "q={q}: {got} vs {exact}");
        }
        assert_eq!(LatencySketch::default().quantile(0.5), None);
    }

    fn with_attr(mut s: Span, k: &str, v: &str) -> Span {
        s.attributes.push((k.into(), AttrValue::Str(v.into())));
        s
    }

    /// Item 2: a database CLIENT span makes a database edge named from
    /// `db.system`, unless a span of another service is under it; a PRODUCER and the CONSUMER under it a messaging edge;
    /// a CLIENT span whose callee never shows up a virtual-node edge named
    /// from `peer.service` first; a CLIENT span with no peer attribute
    /// none.
    #[test]
    fn database_messaging_and_virtual_edges() {
        let mut b = RollupBuilder::default();
        b.add_trace(&[
            span(1, None, "web", "GET /", kind::SERVER),
            with_attr(
                with_attr(span(2, Some(1), "web", "SELECT", kind::CLIENT), "db.system", "postgresql"),
                "server.address",
                "db-1",
            ),
            with_attr(span(3, Some(1), "web", "orders publish", kind::PRODUCER), "messaging.system", "kafka"),
            span(4, Some(3), "fraud", "orders process", kind::CONSUMER),
            with_attr(
                with_attr(span(5, Some(1), "web", "charge", kind::CLIENT), "server.address", "api.example"),
                "peer.service",
                "stripe",
            ),
            span(6, Some(1), "web", "mystery", kind::CLIENT),
            // An instrumented database: the edge goes to its service.
            with_attr(span(7, Some(1), "web", "SELECT", kind::CLIENT), "db.system", "postgresql"),
            span(8, Some(7), "pg", "query", kind::SERVER),
        ]);
        let r = b.build();
        // Kept for pairing: the calls whose callee may still turn up.
        let open: Vec<_> = r.open_parents.iter().map(|p| (p.span_id, p.peer.as_deref())).collect();
        assert_eq!(open, [(SpanId([5; 8]), Some("stripe")), (SpanId([6; 8]), None)]);
        let mut g: Vec<_> = service_graph([&r], None, None)
            .into_iter()
            .map(|((p, c, ct), e)| (p, c, ct.label(), e.calls, e.latency.count()))
            .collect();
        g.sort();
        let s = |x: &str| x.to_string();
        assert_eq!(
            g,
            [
                (s("web"), s("fraud"), Some("messaging_system"), 1, 1),
                (s("web"), s("pg"), None, 1, 1),
                (s("web"), s("postgresql"), Some("database"), 1, 1),
                (s("web"), s("stripe"), Some("virtual_node"), 1, 1),
            ]
        );
    }

    /// A call flushed apart: the client half in one rollup, the server
    /// half in another, each read back from JSON. It counts once, with
    /// the server's latency; the client makes no virtual edge.
    #[test]
    fn halves_in_two_rollups_pair_once() {
        let mut parent = RollupBuilder::default();
        parent.add_trace(&[
            span(1, None, "web", "GET /", kind::SERVER),
            with_attr(span(2, Some(1), "web", "api.Get", kind::CLIENT), "server.address", "api"),
        ]);
        let mut child = RollupBuilder::default();
        let mut server = span(3, Some(2), "api", "api.Get", kind::SERVER);
        server.end_time_unix_nano = server.start_time_unix_nano + 7_000_000;
        server.status_code = crate::model::status::ERROR;
        child.add_trace(&[server, span(4, Some(3), "api", "SELECT", kind::CLIENT)]);
        let rollups: Vec<Rollup> = [parent.build(), child.build()]
            .iter()
            .map(|r| serde_json::from_slice(&serde_json::to_vec(r).unwrap()).unwrap())
            .collect();
        assert!(rollups.iter().all(|r| r.edges.is_empty() && r.version == ROLLUP_VERSION));
        let g = service_graph(&rollups, None, None);
        assert_eq!(g.len(), 1, "{g:?}");
        let e = &g[&("web".to_string(), "api".to_string(), ConnectionType::Service)];
        assert_eq!((e.calls, e.errors), (1, 1));
        let p50 = e.latency.quantile(0.5).unwrap() as f64;
        assert!((p50 - 7e6).abs() <= 7e6 * 0.01, "{p50}");
        // Out of the minute range: not counted.
        assert!(service_graph(&rollups, Some(5), None).is_empty());
    }
}
