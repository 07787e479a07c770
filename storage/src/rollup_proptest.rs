//! Property tests: the service graph counts each call once however a
//! trace's spans are split across segments, the head, compactions and
//! restarts, and equals the graph computed from each whole trace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;

use crate::model::{kind, status, AttrValue, Resource, Scope, Span, SpanId, TraceId};
use crate::rollup::{service_graph, ConnectionType, Rollup, RollupBuilder, BUCKET_NS};
use crate::testsuite::test_config;
use crate::Storage;

const SERVICES: &[&str] = &["a", "b", "c", "d"];

/// What a generated span is.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// The root: a SERVER span.
    Root,
    /// A span of the parent's service: INTERNAL, CLIENT without peer,
    /// CLIENT to an uninstrumented peer, database CLIENT, PRODUCER.
    Local(u8),
    /// Under a CLIENT or PRODUCER: a SERVER or CONSUMER span of the given
    /// service (which may be the parent's own).
    Callee(usize),
}

/// One generated span: its parent (an earlier index), role, error flag and
/// start minute offset.
type Gen = (usize, Role, bool, u64);

fn gen_span() -> impl Strategy<Value = (usize, u8, usize, bool, u64)> {
    (0usize..64, 0u8..5, 0..SERVICES.len(), prop::bool::weighted(0.2), 0u64..3)
}

/// A trace of 1..12 spans as [`Gen`]s, valid by construction: a callee is
/// only under a CLIENT/PRODUCER (not a database call) that has no callee
/// yet (a call pairs one client span with one server span).
fn trace() -> impl Strategy<Value = (usize, Vec<Gen>)> {
    (0..SERVICES.len(), prop::collection::vec(gen_span(), 0..11)).prop_map(|(root_svc, raw)| {
        let mut out: Vec<Gen> = vec![(0, Role::Root, false, 0)];
        let mut has_callee = vec![false];
        for (p, local, svc, err, dm) in raw {
            let parent = p % out.len();
            let is_caller = matches!(out[parent].1, Role::Local(1 | 2 | 4));
            let role = if is_caller && !has_callee[parent] {
                has_callee[parent] = true;
                Role::Callee(svc)
            } else {
                Role::Local(local)
            };
            out.push((parent, role, err, dm));
            has_callee.push(false);
        }
        (root_svc, out)
    })
}

fn str_attr(k: &str, v: &str) -> (String, AttrValue) {
    (k.to_string(), AttrValue::Str(v.to_string()))
}

/// The spans of trace `t` starting at `base` ns.
fn spans_of(t: u32, root_svc: usize, gens: &[Gen], base: u64) -> Vec<Span> {
    let mut services: Vec<usize> = Vec::new();
    let mut out: Vec<Span> = Vec::new();
    for (i, (parent, role, err, dm)) in gens.iter().enumerate() {
        let (svc, k, attributes) = match role {
            Role::Root => (root_svc, kind::SERVER, Vec::new()),
            Role::Local(0) => (services[*parent], kind::INTERNAL, Vec::new()),
            Role::Local(1) => (services[*parent], kind::CLIENT, Vec::new()),
            Role::Local(2) => {
                (services[*parent], kind::CLIENT, vec![str_attr("server.address", "ext.example")])
            }
            Role::Local(3) => (services[*parent], kind::CLIENT, vec![str_attr("db.system", "postgresql")]),
            Role::Local(_) => {
                (services[*parent], kind::PRODUCER, vec![str_attr("messaging.destination.name", "orders")])
            }
            Role::Callee(s) => {
                let producer = out[*parent].kind == kind::PRODUCER;
                (*s, if producer { kind::CONSUMER } else { kind::SERVER }, Vec::new())
            }
        };
        services.push(svc);
        let mut id = [0u8; 8];
        id[..4].copy_from_slice(&t.to_be_bytes());
        id[7] = i as u8 + 1;
        let mut tid = [7u8; 16];
        tid[..4].copy_from_slice(&t.to_be_bytes());
        let start = base + dm * BUCKET_NS + i as u64 * 1_000;
        out.push(Span {
            trace_id: TraceId(tid),
            span_id: SpanId(id),
            parent_span_id: (i > 0).then(|| out[*parent].span_id),
            trace_state: String::new(),
            flags: 0,
            name: format!("op{i}"),
            kind: k,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000 * (1 + i as u64),
            status_code: if *err { status::ERROR } else { status::UNSET },
            status_message: String::new(),
            attributes,
            resource: Arc::new(Resource { service_name: SERVICES[svc].into(), attributes: Vec::new() }),
            scope: Arc::new(Scope::default()),
            events: Vec::new(),
            links: Vec::new(),
        });
    }
    out
}

type Graph = BTreeMap<(String, String, ConnectionType), (u64, u64)>;

/// The graph of whole traces, by the rule of [`crate::rollup::EdgeBucket`]
/// computed directly: a child under a parent of another service (not a
/// database call), a database call, a caller with no callee and a peer.
fn truth(traces: &[Vec<Span>]) -> Graph {
    let mut g = Graph::new();
    let mut add = |p: &str, c: &str, ct, err: bool| {
        let e = g.entry((p.to_string(), c.to_string(), ct)).or_default();
        e.0 += 1;
        e.1 += u64::from(err);
    };
    for spans in traces {
        let by_id: HashMap<SpanId, &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
        for s in spans {
            let db = s.attributes.iter().any(|(k, _)| k == "db.system");
            if db {
                add(s.service_name(), "postgresql", ConnectionType::Database, s.is_error());
            }
            if let Some(p) = s.parent_span_id.and_then(|p| by_id.get(&p)) {
                let p_db = p.attributes.iter().any(|(k, _)| k == "db.system");
                if p.service_name() != s.service_name() && !p_db {
                    let messaging = p.kind == kind::PRODUCER || s.kind == kind::CONSUMER;
                    let ct =
                        if messaging { ConnectionType::MessagingSystem } else { ConnectionType::Service };
                    add(p.service_name(), s.service_name(), ct, s.is_error());
                }
            }
            let caller = s.kind == kind::CLIENT || s.kind == kind::PRODUCER;
            let called = spans
                .iter()
                .any(|c| c.parent_span_id == Some(s.span_id) && c.service_name() != s.service_name());
            if caller && !db && !called {
                if let Some((_, AttrValue::Str(peer))) = s.attributes.first() {
                    let ct = if s.kind == kind::PRODUCER {
                        ConnectionType::MessagingSystem
                    } else {
                        ConnectionType::VirtualNode
                    };
                    add(s.service_name(), peer, ct, s.is_error());
                }
            }
        }
    }
    g
}

fn graph<'a>(rollups: impl IntoIterator<Item = &'a Rollup>) -> Graph {
    service_graph(rollups, None, None).into_iter().map(|(k, e)| (k, (e.calls, e.errors))).collect()
}

/// Spans grouped by trace, in order, as a segment writer hands them over.
fn by_trace(spans: Vec<&Span>) -> Vec<Vec<Span>> {
    let mut m: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for s in spans {
        m.entry(s.trace_id).or_default().push(s.clone());
    }
    m.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Rollup level: spans dealt to up to five parts (segments; the last
    /// one the head, whose builder sees each trace in two pieces, as a
    /// trace in the head and in an in-flight flush), some parts merged
    /// (compaction recomputes from their spans), every stored rollup read
    /// back from its JSON (a restart).
    #[test]
    fn calls_count_once_however_spans_are_split(
        traces in prop::collection::vec(trace(), 1..6),
        deal in prop::collection::vec(0usize..5, 64 * 6),
        merge in prop::option::of((0usize..4, 1usize..3)),
    ) {
        let traces: Vec<Vec<Span>> = traces
            .iter()
            .enumerate()
            .map(|(t, (root, gens))| spans_of(t as u32, *root, gens, 10 * BUCKET_NS))
            .collect();
        let all: Vec<&Span> = traces.iter().flatten().collect();
        let mut parts: Vec<Vec<&Span>> = vec![Vec::new(); 5];
        for (i, s) in all.iter().enumerate() {
            parts[deal[i]].push(s);
        }
        if let Some((first, n)) = merge {
            let last = (first + n).min(3);
            let merged: Vec<&Span> = parts[first..=last].iter().flatten().copied().collect();
            for p in &mut parts[first..=last] {
                p.clear();
            }
            parts[first] = merged;
        }
        let mut rollups: Vec<Rollup> = Vec::new();
        for (i, p) in parts.into_iter().enumerate() {
            let mut b = RollupBuilder::default();
            for t in by_trace(p) {
                if i == 4 {
                    let (a, z) = t.split_at(t.len() / 2);
                    b.add_trace(a);
                    b.add_trace(z);
                } else {
                    b.add_trace(&t);
                }
            }
            let r = b.build();
            let r = if i == 4 { r } else { serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap() };
            rollups.push(r);
        }
        prop_assert_eq!(graph(&rollups), truth(&traces));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Storage level: traces appended in blocks with a flush after some,
    /// then a compaction and a restart; the graph from
    /// [`Storage::rollups`] equals the truth at each stage.
    #[test]
    fn storage_counts_calls_once_across_flushes_compaction_and_restart(
        traces in prop::collection::vec(trace(), 1..5),
        deal in prop::collection::vec(0usize..4, 64 * 5),
        flush_after in prop::collection::vec(any::<bool>(), 4),
    ) {
        let base = crate::now_unix_nano() / BUCKET_NS * BUCKET_NS - 5 * BUCKET_NS;
        let traces: Vec<Vec<Span>> = traces
            .iter()
            .enumerate()
            .map(|(t, (root, gens))| spans_of(t as u32, *root, gens, base))
            .collect();
        let want = truth(&traces);
        let all: Vec<&Span> = traces.iter().flatten().collect();
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = |s: &Arc<Storage>| graph(s.rollups(None, None).iter().map(|r| r.as_ref()));
        let stages = rt.block_on(async {
            let s = Storage::open(dir.path(), test_config()).unwrap();
            s.replay().unwrap();
            for (block, flush) in flush_after.iter().enumerate() {
                let spans: Vec<Span> =
                    all.iter().enumerate().filter(|(i, _)| deal[*i] == block).map(|(_, s)| (*s).clone()).collect();
                if !spans.is_empty() {
                    s.append_spans(spans).await.unwrap();
                }
                if *flush {
                    s.flush(true).unwrap();
                }
            }
            let flushed = got(&s);
            s.compact().unwrap();
            let compacted = got(&s);
            drop(s);
            let s = Storage::open(dir.path(), test_config()).unwrap();
            s.replay().unwrap();
            [flushed, compacted, got(&s)]
        });
        for (stage, g) in ["flushes", "compaction", "restart"].iter().zip(&stages) {
            prop_assert_eq!(g, &want, "after the {}", stage);
        }
    }
}
