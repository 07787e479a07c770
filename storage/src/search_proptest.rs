//! Property test: trace search over flushed segments and the head returns
//! exactly what a brute-force scan of the same spans returns (one-span
//! semantics: every condition holds on one span), and a stored trace
//! summary equals the one computed from the trace's spans.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;

use crate::filter::{SpanFilter, StatusFilter};
use crate::model::{dedup_spans, AttrValue, Resource, Scope, Span, SpanId, TraceId};
use crate::summary::summarize;
use crate::testsuite::test_config;
use crate::Storage;

const SERVICES: &[&str] = &["a", "b", "c"];
const NAMES: &[&str] = &["x", "y", "z"];
const KEYS: &[&str] = &["k1", "k2", "region"];
/// Filter values: the text of the generated values, and some never stored.
const TEXTS: &[&str] = &["v1", "v2", "1", "2", "1.5", "true", "false", "eu", "us", "nope", ""];
const DURATIONS: &[u64] = &[0, 5, 10, 100];

fn value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        prop::sample::select(vec!["v1", "v2", "eu", "1"]).prop_map(|s| AttrValue::Str(s.into())),
        (1i64..=2).prop_map(AttrValue::Int),
        Just(AttrValue::Double(1.5)),
        any::<bool>().prop_map(AttrValue::Bool),
        Just(AttrValue::Bytes(vec![1, 2])),
        Just(AttrValue::Array(vec![AttrValue::Str("v1".into())])),
        Just(AttrValue::Empty),
    ]
}

fn attrs() -> impl Strategy<Value = Vec<(String, AttrValue)>> {
    prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..3)
        .prop_map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// One generated span: trace number, service, name, own attributes,
/// resource attributes, duration, status, parent (an earlier span of the
/// trace, or none), and the batch it is sent in.
type Gen = (u8, usize, usize, Vec<(String, AttrValue)>, Vec<(String, AttrValue)>, u64, u8, Option<u8>, u8);

fn spans() -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (
            1u8..=6,
            0..SERVICES.len(),
            0..NAMES.len(),
            attrs(),
            attrs(),
            prop::sample::select(DURATIONS.to_vec()),
            0u8..=2,
            prop::option::of(0u8..4),
            0u8..4,
        ),
        1..40,
    )
}

fn filter(t_max: u64) -> impl Strategy<Value = (SpanFilter, usize)> {
    let opt = |v: &'static [&'static str]| prop::option::of(prop::sample::select(v.to_vec()));
    (
        opt(&["a", "b", "c", "nope"]),
        opt(&["x", "y", "z", "nope"]),
        prop::collection::vec(
            (prop::sample::select(KEYS.to_vec()), prop::sample::select(TEXTS.to_vec())),
            0..3,
        ),
        prop::option::of(prop::sample::select(DURATIONS.to_vec())),
        prop::option::of(prop::sample::select(DURATIONS.to_vec())),
        prop::option::of(prop_oneof![Just(StatusFilter::Error), Just(StatusFilter::Ok)]),
        prop::option::of(0..=t_max),
        prop::option::of(0..=t_max),
        1usize..10,
    )
        .prop_map(|(service, operation, attrs, min, max, status, start, end, limit)| {
            let f = SpanFilter {
                service: service.map(String::from),
                operation: operation.map(String::from),
                attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                min_duration_ns: min,
                max_duration_ns: max,
                status,
                start_ns: start,
                end_ns: end,
            };
            (f, limit)
        })
}

/// The spans as sent, batch by batch (each span ID unique per trace, start
/// times unique so that rankings have no ties).
fn build(gen: &[Gen]) -> Vec<Vec<Span>> {
    let scope = Arc::new(Scope::default());
    let mut batches: BTreeMap<u8, Vec<Span>> = BTreeMap::new();
    let mut per_trace: HashMap<u8, Vec<SpanId>> = HashMap::new();
    for (i, (t, svc, name, own, res, dur, status, parent, batch)) in gen.iter().enumerate() {
        let mut rattrs = vec![("service.name".to_string(), AttrValue::Str(SERVICES[*svc].into()))];
        rattrs.extend(res.iter().cloned());
        let resource = Arc::new(Resource { service_name: SERVICES[*svc].into(), attributes: rattrs });
        let ids = per_trace.entry(*t).or_default();
        let span_id = SpanId((i as u64 + 1).to_be_bytes());
        let parent_span_id = parent.and_then(|p| ids.get(p as usize).copied());
        ids.push(span_id);
        let start = 1_000 + (i as u64) * 7 % 97 * 100 + i as u64;
        batches.entry(*batch).or_default().push(Span {
            trace_id: TraceId([*t; 16]),
            span_id,
            parent_span_id,
            trace_state: String::new(),
            flags: 0,
            name: NAMES[*name].into(),
            kind: 0,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            status_code: *status,
            status_message: String::new(),
            attributes: own.clone(),
            events: Vec::new(),
            links: Vec::new(),
            resource,
            scope: scope.clone(),
        });
    }
    batches.into_values().collect()
}

/// What a scan of every span gives: traces with a matching span, the one
/// whose latest matching span starts last first, at most `limit`.
fn brute_force(all: &[Span], f: &SpanFilter, limit: usize) -> Vec<TraceId> {
    let mut best: HashMap<TraceId, u64> = HashMap::new();
    for s in all.iter().filter(|s| f.matches(s)) {
        let e = best.entry(s.trace_id).or_insert(s.start_time_unix_nano);
        *e = (*e).max(s.start_time_unix_nano);
    }
    let mut v: Vec<_> = best.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(limit).map(|x| x.0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn search_equals_a_brute_force_scan(
        gen in spans(),
        // Whether each batch but the last is flushed (the last stays in the head).
        flush in prop::collection::vec(any::<bool>(), 4),
        filters in prop::collection::vec(filter(12_000), 1..12),
        resend in any::<bool>(),
    ) {
        let batches = build(&gen);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let s = Storage::open(dir.path(), test_config()).unwrap();
            s.replay().unwrap();
            let last = batches.len() - 1;
            for (i, b) in batches.iter().enumerate() {
                s.append_spans(b.clone()).await.unwrap();
                if resend && i == 0 {
                    // A retried batch: its copies are one span each.
                    s.append_spans(b.clone()).await.unwrap();
                }
                if i < last && flush[i] {
                    s.flush(true).unwrap();
                }
            }
            let mut all: Vec<Span> = batches.concat();
            dedup_spans(&mut all);
            for (f, limit) in &filters {
                let got = s.search_traces(f, *limit).unwrap();
                prop_assert_eq!(&got, &brute_force(&all, f, *limit), "{:?} limit {}", f, limit);
                // Longest spans: exact over a limit past every trace.
                let mut longest = s.longest_traces(f, 100).unwrap();
                longest.sort();
                let mut want: BTreeMap<TraceId, u64> = BTreeMap::new();
                for sp in all.iter().filter(|sp| f.matches(sp)) {
                    let e = want.entry(sp.trace_id).or_insert(0);
                    *e = (*e).max(sp.duration_ns());
                }
                prop_assert_eq!(longest, want.into_iter().collect::<Vec<_>>(), "{:?}", f);
            }
            for t in 1..=6u8 {
                let id = TraceId([t; 16]);
                if let Some(stored) = s.stored_trace_summary(&id).unwrap() {
                    let spans = s.get_trace_spans(&id).unwrap().unwrap();
                    prop_assert_eq!(stored, summarize(id, &spans));
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
