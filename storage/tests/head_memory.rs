//! Issue 11 item 2: the head's memory figure ([`Head::memory_bytes`], what
//! `head.max_bytes` limits) is within a fifth of what the allocator really
//! handed out for realistic spans and logs. A binary of its own, so that
//! its counting global allocator sees this test's allocations only.

use std::alloc::System;
use std::sync::Arc;

use skein_storage::head::Head;
use skein_storage::model::{AttrValue, Event, LogRecord, Resource, Scope, Span, SpanId, TraceId};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts the bytes requested from the allocator (sizes as asked, which is
/// what capacities can tell; the allocator's own rounding is not counted).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn s(v: &str) -> String {
    v.to_string()
}

/// `format!` reserves by an estimate, more than the text needs; strings
/// decoded from a request are allocated at their length, as here.
macro_rules! exact {
    ($($t:tt)*) => { s(&format!($($t)*)) };
}

/// A resource as the collector builds one per `ResourceSpans`: the
/// service name and a handful of attributes.
fn resource(svc: usize) -> Arc<Resource> {
    let name = exact!("service-{svc}");
    Arc::new(Resource {
        service_name: name.clone(),
        attributes: vec![
            (s("service.name"), AttrValue::Str(name)),
            (s("service.version"), AttrValue::Str(s("1.4.2"))),
            (s("deployment.environment"), AttrValue::Str(s("production"))),
            (s("host.name"), AttrValue::Str(exact!("node-{svc}-a1b2c3"))),
            (s("k8s.pod.name"), AttrValue::Str(exact!("svc-{svc}-7d9f8b6c5-x2x4z"))),
        ],
    })
}

/// A span like the shared workload's: name, 6-8 attributes of mixed
/// types, sometimes an event.
fn span(t: u64, i: u64, res: &Arc<Resource>, scope: &Arc<Scope>) -> Span {
    let mut tid = [0u8; 16];
    tid[..8].copy_from_slice(&t.to_be_bytes());
    tid[15] = 1;
    let mut attributes = vec![
        (s("http.request.method"), AttrValue::Str(s("GET"))),
        (s("http.route"), AttrValue::Str(exact!("/api/v1/items/{}", i % 7))),
        (s("http.response.status_code"), AttrValue::Int(200)),
        (s("url.full"), AttrValue::Str(exact!("https://shop.example.com/api/v1/items/{i}?page=2"))),
        (s("server.address"), AttrValue::Str(s("shop.example.com"))),
        (s("net.peer.port"), AttrValue::Int(443)),
    ];
    if i.is_multiple_of(3) {
        attributes.push((s("db.system"), AttrValue::Str(s("postgresql"))));
        attributes.push((s("db.statement"), AttrValue::Str(s("SELECT id, name FROM items WHERE id = $1"))));
    }
    let events = if i.is_multiple_of(5) {
        vec![Event {
            time_unix_nano: 5,
            name: s("exception"),
            attributes: vec![(s("exception.message"), AttrValue::Str(s("connection reset by peer")))],
        }]
    } else {
        Vec::new()
    };
    Span {
        trace_id: TraceId(tid),
        span_id: SpanId((i + 1).to_be_bytes()),
        parent_span_id: (i > 0).then(|| SpanId(i.to_be_bytes())),
        trace_state: String::new(),
        flags: 1,
        name: exact!("GET /api/v1/items/{}", i % 7),
        kind: 2,
        start_time_unix_nano: 1_000 + i,
        end_time_unix_nano: 9_000 + i,
        status_code: 0,
        status_message: String::new(),
        attributes,
        events,
        links: Vec::new(),
        resource: res.clone(),
        scope: scope.clone(),
    }
}

fn log(t: u64, i: u64, res: &Arc<Resource>, scope: &Arc<Scope>) -> LogRecord {
    let mut tid = [0u8; 16];
    tid[..8].copy_from_slice(&t.to_be_bytes());
    tid[15] = 1;
    LogRecord {
        time_unix_nano: 1_000 + i,
        observed_time_unix_nano: 1_001 + i,
        severity_number: 9,
        severity_text: s("INFO"),
        body: AttrValue::Str(exact!(
            "order {i} confirmed for customer 4711 after 3 retries (timeout 250 ms)"
        )),
        attributes: vec![
            (s("code.function"), AttrValue::Str(s("confirm_order"))),
            (s("thread.id"), AttrValue::Int(17)),
        ],
        trace_id: TraceId(tid),
        span_id: Some(SpanId((i + 1).to_be_bytes())),
        flags: 1,
        event_name: String::new(),
        resource: res.clone(),
        scope: scope.clone(),
    }
}

#[test]
#[ignore = "open (issue 11): the head counts about 64% of what the allocator hands out here \
            (4.5 of 7.1 MB); run with --ignored while closing the gap"]
fn the_head_counts_what_the_allocator_hands_out() {
    let head = Head::default();
    let region = Region::new(GLOBAL);
    // 100 requests of each signal, each with 2 resources of 5 traces; each
    // trace gets 3 spans and 2 logs per request, over 4 requests.
    let mut pos = 0;
    for req in 0..100u64 {
        let scope = Arc::new(Scope { name: s("io.opentelemetry.http"), version: s("1.30.0") });
        let (mut spans, mut logs) = (Vec::new(), Vec::new());
        for r in 0..2u64 {
            let res = resource((req % 10 + r) as usize);
            for k in 0..5u64 {
                let t = (req / 4) * 10 + r * 5 + k;
                for j in 0..3u64 {
                    spans.push(span(t, (req % 4) * 3 + j, &res, &scope));
                    logs.push(log(t, (req % 4) * 3 + j, &res, &scope));
                }
            }
        }
        pos += 1;
        head.insert_spans(pos, spans);
        pos += 1;
        head.insert_logs(pos, logs);
    }
    let c = region.change();
    let real = (c.bytes_allocated as f64) - (c.bytes_deallocated as f64) + (c.bytes_reallocated as f64);
    let counted = head.memory_bytes() as f64;
    let records_only = head.bytes() as f64;
    eprintln!("real {real} counted {counted} records only {records_only} traces {}", head.trace_count());
    assert!((counted - real).abs() <= real * 0.2, "counted {counted} bytes, allocated {real}");
}
