//! The table-driven TraceQL test: every construct against a fixed,
//! hand-built dataset of four traces with known trees, events, links,
//! arrays and resources, with the spans each query must select; the
//! malformed queries with the line and column each error names; and
//! property tests of the parser.

use std::sync::Arc;

use skein_storage::model::{kind, status, AttrValue, Event, Link, Resource, Scope, Span, SpanId, TraceId};

use super::{FieldValue, TraceQl, TraceQlError};

fn res(svc: &str, attrs: Vec<(&str, AttrValue)>) -> Arc<Resource> {
    let mut attributes: Vec<(String, AttrValue)> = vec![("service.name".into(), AttrValue::Str(svc.into()))];
    attributes.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
    Arc::new(Resource { service_name: svc.into(), attributes })
}

fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.into())
}

fn arr(v: Vec<AttrValue>) -> AttrValue {
    AttrValue::Array(v)
}

/// A span of trace `t` (its ID is 16 bytes of `t`) with ID 8 bytes of
/// `id` and parent 8 bytes of `parent`; times in ms.
#[allow(clippy::too_many_arguments)]
fn span(
    t: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    k: u8,
    (code, msg): (u8, &str),
    (start_ms, end_ms): (u64, u64),
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
    attrs: Vec<(&str, AttrValue)>,
) -> Span {
    Span {
        trace_id: TraceId([t; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        trace_state: String::new(),
        flags: 0,
        name: name.into(),
        kind: k,
        start_time_unix_nano: start_ms * 1_000_000,
        end_time_unix_nano: end_ms * 1_000_000,
        status_code: code,
        status_message: msg.into(),
        attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        events: Vec::new(),
        links: Vec::new(),
        resource: resource.clone(),
        scope: scope.clone(),
    }
}

fn event(sp: &Span, after_ms: u64, name: &str, attrs: Vec<(&str, AttrValue)>) -> Event {
    Event {
        time_unix_nano: sp.start_time_unix_nano + after_ms * 1_000_000,
        name: name.into(),
        attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn link(t: u8, id: u8, attrs: Vec<(&str, AttrValue)>) -> Link {
    Link {
        trace_id: TraceId([t; 16]),
        span_id: SpanId([id; 8]),
        trace_state: String::new(),
        attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

const UNSET: (u8, &str) = (status::UNSET, "");
const OK: (u8, &str) = (status::OK, "");

/// The dataset, one `Vec<Span>` per trace:
///
/// ```text
/// A (0a..): a1 GET /orders    frontend SERVER unset 0-1000ms  route=/orders/{id} code=200 tags=[red,green] flag=true
///           ├─ a2 cart.get    frontend CLIENT ok    10-300    code=200 retry=1.5
///           │  └─ a3 GET /cart cart    SERVER unset 20-290    route=/cart code=200 ports=[8080,9090]
///           │     └─ a4 SELECT cart postgres CLIENT error "timeout after 5s" 30-250 db.system=postgresql db.rows=10
///           │            event exception (+5ms) {exception.message="connection reset", exception.type=IOError}
///           └─ a5 render      frontend INTERNAL unset 400-950 flag=false
///                  events cache.miss (+1ms), log (+100ms) {level=info}
/// B (0b..): b1 POST /orders   frontend SERVER error "bad gateway" 0-2000 route=/orders code=502 tags=[blue]
///                  event exception (+1500ms) {exception.message="upstream 503"}
///           └─ b2 cart.put    frontend CLIENT error "upstream" 100-1900 code=503
///              └─ b3 PUT /cart cart    SERVER error "upstream" 200-1800 route=/cart
///                 ├─ b4 INSERT cart postgres CLIENT error "upstream" 300-1700 db.system=postgresql db.rows=0
///                 └─ b5 UPDATE stock postgres CLIENT ok 300-400 db.system=mysql
/// C (0c..): c1 process batch  batch CONSUMER unset 0-500 messaging.system=kafka, link -> (A, a1) {ref=follows}
///           ├─ c2 handle      batch INTERNAL ok 10-100 count=3, link -> (B, b1)
///           ├─ c3 handle      batch INTERNAL ok 110-200 count=5
///           └─ c4 handle      batch INTERNAL error "boom" 210-480 count=7
/// D (0d..): d2 orphan (parent d1 not stored) cart SERVER unset 0-50 "a b"=x route=/a-b/c
///           └─ d3 child       cart INTERNAL unset 5-40
/// ```
/// Resources: frontend {cloud.region=us-east-1, deployment.env=prod},
/// cart {cloud.region=us-west-2}, postgres {cloud.region=us-east-2,
/// db.version=14}, batch {cloud.region=eu-west-1, cores=[4,8]}. Scopes:
/// A and B otel.http 0.9, C io.kafka 1.2.0, D none.
fn dataset() -> Vec<Vec<Span>> {
    let fe = res("frontend", vec![("cloud.region", s("us-east-1")), ("deployment.env", s("prod"))]);
    let cart = res("cart", vec![("cloud.region", s("us-west-2"))]);
    let pg = res("postgres", vec![("cloud.region", s("us-east-2")), ("db.version", AttrValue::Int(14))]);
    let batch = res(
        "batch",
        vec![("cloud.region", s("eu-west-1")), ("cores", arr(vec![AttrValue::Int(4), AttrValue::Int(8)]))],
    );
    let http = Arc::new(Scope { name: "otel.http".into(), version: "0.9".into() });
    let kafka = Arc::new(Scope { name: "io.kafka".into(), version: "1.2.0".into() });
    let none = Arc::new(Scope::default());
    let err = |m| (status::ERROR, m);
    use kind::*;

    let mut a = vec![
        span(
            0xa,
            0xa1,
            None,
            "GET /orders",
            SERVER,
            UNSET,
            (0, 1000),
            &fe,
            &http,
            vec![
                ("http.route", s("/orders/{id}")),
                ("http.status_code", AttrValue::Int(200)),
                ("tags", arr(vec![s("red"), s("green")])),
                ("flag", AttrValue::Bool(true)),
            ],
        ),
        span(
            0xa,
            0xa2,
            Some(0xa1),
            "cart.get",
            CLIENT,
            OK,
            (10, 300),
            &fe,
            &http,
            vec![("http.status_code", AttrValue::Int(200)), ("retry", AttrValue::Double(1.5))],
        ),
        span(
            0xa,
            0xa3,
            Some(0xa2),
            "GET /cart",
            SERVER,
            UNSET,
            (20, 290),
            &cart,
            &http,
            vec![
                ("http.route", s("/cart")),
                ("http.status_code", AttrValue::Int(200)),
                ("ports", arr(vec![AttrValue::Int(8080), AttrValue::Int(9090)])),
            ],
        ),
        span(
            0xa,
            0xa4,
            Some(0xa3),
            "SELECT cart",
            CLIENT,
            err("timeout after 5s"),
            (30, 250),
            &pg,
            &http,
            vec![("db.system", s("postgresql")), ("db.rows", AttrValue::Int(10))],
        ),
        span(
            0xa,
            0xa5,
            Some(0xa1),
            "render",
            INTERNAL,
            UNSET,
            (400, 950),
            &fe,
            &http,
            vec![("flag", AttrValue::Bool(false))],
        ),
    ];
    a[3].events = vec![event(
        &a[3],
        5,
        "exception",
        vec![("exception.message", s("connection reset")), ("exception.type", s("IOError"))],
    )];
    a[4].events =
        vec![event(&a[4], 1, "cache.miss", vec![]), event(&a[4], 100, "log", vec![("level", s("info"))])];

    let mut b = vec![
        span(
            0xb,
            0xb1,
            None,
            "POST /orders",
            SERVER,
            err("bad gateway"),
            (0, 2000),
            &fe,
            &http,
            vec![
                ("http.route", s("/orders")),
                ("http.status_code", AttrValue::Int(502)),
                ("tags", arr(vec![s("blue")])),
            ],
        ),
        span(
            0xb,
            0xb2,
            Some(0xb1),
            "cart.put",
            CLIENT,
            err("upstream"),
            (100, 1900),
            &fe,
            &http,
            vec![("http.status_code", AttrValue::Int(503))],
        ),
        span(
            0xb,
            0xb3,
            Some(0xb2),
            "PUT /cart",
            SERVER,
            err("upstream"),
            (200, 1800),
            &cart,
            &http,
            vec![("http.route", s("/cart"))],
        ),
        span(
            0xb,
            0xb4,
            Some(0xb3),
            "INSERT cart",
            CLIENT,
            err("upstream"),
            (300, 1700),
            &pg,
            &http,
            vec![("db.system", s("postgresql")), ("db.rows", AttrValue::Int(0))],
        ),
        span(
            0xb,
            0xb5,
            Some(0xb3),
            "UPDATE stock",
            CLIENT,
            OK,
            (300, 400),
            &pg,
            &http,
            vec![("db.system", s("mysql"))],
        ),
    ];
    b[0].events = vec![event(&b[0], 1500, "exception", vec![("exception.message", s("upstream 503"))])];

    let mut c = vec![
        span(
            0xc,
            0xc1,
            None,
            "process batch",
            CONSUMER,
            UNSET,
            (0, 500),
            &batch,
            &kafka,
            vec![("messaging.system", s("kafka"))],
        ),
        span(
            0xc,
            0xc2,
            Some(0xc1),
            "handle",
            INTERNAL,
            OK,
            (10, 100),
            &batch,
            &kafka,
            vec![("count", AttrValue::Int(3))],
        ),
        span(
            0xc,
            0xc3,
            Some(0xc1),
            "handle",
            INTERNAL,
            OK,
            (110, 200),
            &batch,
            &kafka,
            vec![("count", AttrValue::Int(5))],
        ),
        span(
            0xc,
            0xc4,
            Some(0xc1),
            "handle",
            INTERNAL,
            err("boom"),
            (210, 480),
            &batch,
            &kafka,
            vec![("count", AttrValue::Int(7))],
        ),
    ];
    c[0].links = vec![link(0xa, 0xa1, vec![("ref", s("follows"))])];
    c[1].links = vec![link(0xb, 0xb1, vec![])];

    let d = vec![
        span(
            0xd,
            0xd2,
            Some(0xd1),
            "orphan",
            SERVER,
            UNSET,
            (0, 50),
            &cart,
            &none,
            vec![("a b", s("x")), ("http.route", s("/a-b/c"))],
        ),
        span(0xd, 0xd3, Some(0xd2), "child", INTERNAL, UNSET, (5, 40), &cart, &none, vec![]),
    ];
    vec![a, b, c, d]
}

/// The spans `q` selects over the dataset, as their IDs' first byte in
/// hex ("a1 a4 b2"), trace by trace.
fn run(q: &str) -> String {
    let tq = TraceQl::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    let mut out = Vec::new();
    for t in dataset() {
        for sp in tq.matching_spans(&t) {
            out.push(format!("{:x}", sp.span_id.0[0]));
        }
    }
    out.join(" ")
}

const ALL: &str = "a1 a2 a3 a4 a5 b1 b2 b3 b4 b5 c1 c2 c3 c4 d2 d3";

/// (query, the spans it selects).
const CASES: &[(&str, &str)] = &[
    // Spanset filters and intrinsics.
    ("{}", ALL),
    ("{ true }", ALL),
    ("{ false }", ""),
    ("{ status = error }", "a4 b1 b2 b3 b4 c4"),
    ("{ status = ok }", "a2 b5 c2 c3"),
    ("{ status = unset }", "a1 a3 a5 c1 d2 d3"),
    ("{ span:status != error }", "a1 a2 a3 a5 b5 c1 c2 c3 d2 d3"),
    ("{ kind = server }", "a1 a3 b1 b3 d2"),
    ("{ span:kind = client }", "a2 a4 b2 b4 b5"),
    ("{ kind = consumer }", "c1"),
    ("{ kind = internal }", "a5 c2 c3 c4 d3"),
    ("{ kind = producer || kind = unspecified }", ""),
    (r#"{ name = "handle" }"#, "c2 c3 c4"),
    (r#"{ span:name != "handle" }"#, "a1 a2 a3 a4 a5 b1 b2 b3 b4 b5 c1 d2 d3"),
    (r#"{ name > "h" }"#, "a5 c1 c2 c3 c4 d2"),
    (r#"{ statusMessage = "timeout after 5s" }"#, "a4"),
    (r#"{ span:statusMessage =~ ".*upstream.*" }"#, "b2 b3 b4"),
    ("{ duration > 1s }", "b1 b2 b3 b4"),
    ("{ duration >= 1s }", "a1 b1 b2 b3 b4"),
    ("{ span:duration < 100ms }", "c2 c3 d2 d3"),
    ("{ duration <= 0.1s }", "b5 c2 c3 d2 d3"),
    ("{ duration = 90ms }", "c2 c3"),
    ("{ duration > 1000000000 }", "b1 b2 b3 b4"),
    ("{ trace:duration > 1s }", "b1 b2 b3 b4 b5"),
    ("{ traceDuration < 100ms }", "d2 d3"),
    (r#"{ trace:rootService = "batch" }"#, "c1 c2 c3 c4"),
    (r#"{ rootServiceName = "frontend" }"#, "a1 a2 a3 a4 a5 b1 b2 b3 b4 b5"),
    (r#"{ trace:rootName = "GET /orders" }"#, "a1 a2 a3 a4 a5"),
    (r#"{ rootName != "GET /orders" }"#, "b1 b2 b3 b4 b5 c1 c2 c3 c4"),
    ("{ trace:rootName = nil }", "d2 d3"),
    (r#"{ trace:id = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b" }"#, "b1 b2 b3 b4 b5"),
    (r#"{ trace:id = "B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B" }"#, "b1 b2 b3 b4 b5"),
    (r#"{ span:id = "a4a4a4a4a4a4a4a4" }"#, "a4"),
    (r#"{ span:parentID = "c1c1c1c1c1c1c1c1" }"#, "c2 c3 c4"),
    ("{ span:parentID = nil }", "a1 b1 c1"),
    ("{ span:childCount = 0 }", "a4 a5 b4 b5 c2 c3 c4 d3"),
    ("{ childCount > 1 }", "a1 b3 c1"),
    ("{ nestedSetParent = -1 }", "a1 b1 c1 d2"),
    ("{ nestedSetLeft = 1 }", "a1 b1 c1 d2"),
    ("{ nestedSetRight - nestedSetLeft = 1 }", "a4 a5 b4 b5 c2 c3 c4 d3"),
    (r#"{ instrumentation:name = "io.kafka" }"#, "c1 c2 c3 c4"),
    (r#"{ instrumentation:version = "0.9" }"#, "a1 a2 a3 a4 a5 b1 b2 b3 b4 b5"),
    ("{ instrumentation:name = nil }", "d2 d3"),
    ("{ instrumentation.language = nil }", ALL),
    // Attributes: scopes, quoted keys, regexes with `/` and `-`.
    (r#"{ span.http.route =~ "/orders.*" }"#, "a1 b1"),
    (r#"{ resource.cloud.region =~ "us-east-.*" }"#, "a1 a2 a4 a5 b1 b2 b4 b5"),
    (r#"{ span.http.route = "/a-b/c" }"#, "d2"),
    (r#"{ .http.route =~ "/a-b/.*" }"#, "d2"),
    ("{ span.http.status_code >= 500 }", "b1 b2"),
    ("{ span.http.status_code = 200 }", "a1 a2 a3"),
    ("{ .http.status_code >= 200 && .http.status_code < 300 }", "a1 a2 a3"),
    ("{ span.http.status_code != 200 }", "b1 b2"),
    (r#"{ span.http.status_code >= "500" }"#, ""),
    ("{ span.retry = 1.5 }", "a2"),
    ("{ span.retry > 1 }", "a2"),
    ("{ span.db.rows = 0 }", "b4"),
    ("{ span.db.rows > 5 }", "a4"),
    ("{ resource.db.version = 14 }", "a4 b4 b5"),
    (r#"{ resource.service.name = "cart" }"#, "a3 b3 d2 d3"),
    (r#"{ .service.name = "postgres" }"#, "a4 b4 b5"),
    (r#"{ span.service.name = "cart" }"#, ""),
    (r#"{ .deployment.env = "prod" }"#, "a1 a2 a5 b1 b2"),
    (r#"{ span."a b" = "x" }"#, "d2"),
    (r#"{ ."a b" = "x" }"#, "d2"),
    ("{ span.flag }", "a1"),
    ("{ !span.flag }", "a5"),
    ("{ span.flag = false }", "a5"),
    ("{ span.flag || span.db.rows = 0 }", "a1 b4"),
    ("{ span.missing = nil }", ALL),
    ("{ span.db.system != nil }", "a4 b4 b5"),
    ("{ resource.cloud.region != nil && span.db.system = nil }", "a1 a2 a3 a5 b1 b2 b3 c1 c2 c3 c4 d2 d3"),
    (r#"{ span.db.system =~ "postgresql|mysql" }"#, "a4 b4 b5"),
    (r#"{ span.db.system !~ "post.*" }"#, "b5"),
    (r#"{ name =~ "GET" }"#, ""),
    (r#"{ name =~ "(?i)get /.*" }"#, "a1 a3"),
    (r#"{ name =~ "[A-Z]+ /cart" }"#, "a3 b3"),
    (r#"{ name =~ "\\w+ cart" }"#, "a4 b4"),
    (r#"{ name =~ "\w+ cart" }"#, "a4 b4"),
    (r#"{ span.http.route =~ "/orders/\\{id\\}" }"#, "a1"),
    (r#"{ span.http.route =~ `/orders/\{id\}` }"#, "a1"),
    // Arrays: `=`, `=~` and orderings when any element does; `!=`, `!~` when none does.
    (r#"{ span.tags = "red" }"#, "a1"),
    (r#"{ span.tags = "blue" }"#, "b1"),
    (r#"{ span.tags != "red" }"#, "b1"),
    (r#"{ span.tags =~ "gr.*" }"#, "a1"),
    (r#"{ span.tags !~ "gr.*" }"#, "b1"),
    ("{ span.ports = 9090 }", "a3"),
    ("{ span.ports > 9000 }", "a3"),
    ("{ resource.cores = 8 }", "c1 c2 c3 c4"),
    ("{ span.tags != nil }", "a1 b1"),
    // Arithmetic.
    ("{ span.db.rows * 2 + 1 = 21 }", "a4"),
    ("{ span.http.status_code / 100 = 5 }", "b1 b2"),
    ("{ span.http.status_code % 100 = 2 }", "b1"),
    ("{ 2 ^ 3 = span.count + 1 }", "c4"),
    ("{ span.count - 10 < -4 }", "c2 c3"),
    ("{ -span.count = -5 }", "c3"),
    ("{ span.retry * 2 = 3 }", "a2"),
    ("{ duration - 50ms > 1900ms }", "b1"),
    ("{ duration * 2 > 3s }", "b1 b2 b3"),
    ("{ span.count = minInt || span.count != maxInt }", "c2 c3 c4"),
    // && and || in fields: equal precedence, left to right.
    (r#"{ name = "render" || name = "handle" && status = error }"#, "c4"),
    (r#"{ (name = "render" || name = "handle") && status = ok }"#, "c2 c3"),
    (r#"{ name = "render" || (name = "handle" && status = error) }"#, "a5 c4"),
    ("{ status = error && kind = server || kind = consumer }", "b1 b3 c1"),
    // Events (one event meets the whole filter).
    (r#"{ event:name = "exception" }"#, "a4 b1"),
    (r#"{ event.exception.message =~ ".*reset.*" }"#, "a4"),
    (r#"{ event:name = "exception" && event.exception.type = "IOError" }"#, "a4"),
    (r#"{ event:name = "log" && event.level = "info" }"#, "a5"),
    (r#"{ event:name = "cache.miss" && event.level = "info" }"#, ""),
    ("{ event:timeSinceStart > 1s }", "b1"),
    ("{ event:timeSinceStart < 10ms }", "a4 a5"),
    ("{ event.exception.message = nil && event:name != nil }", "a5"),
    // Links.
    (r#"{ link:traceID = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a" }"#, "c1"),
    (r#"{ link:spanID = "b1b1b1b1b1b1b1b1" }"#, "c2"),
    (r#"{ link.ref = "follows" }"#, "c1"),
    ("{ link:spanID != nil }", "c1 c2"),
    // The parent scope.
    (r#"{ parent.resource.service.name = "frontend" && resource.service.name != "frontend" }"#, "a3 b3"),
    (r#"{ parent.span.http.route = "/cart" }"#, "a4 b4 b5"),
    ("{ parent.http.status_code = 200 }", "a2 a3 a4 a5"),
    // Structural operators.
    (r#"{ name = "GET /orders" } > { }"#, "a2 a5"),
    (r#"{ resource.service.name = "frontend" } >> { status = error }"#, "a4 b2 b3 b4"),
    ("{ status = error } < { }", "a3 b1 b2 b3 c1"),
    ("{ status = error } << { kind = server }", "a1 a3 b1 b3"),
    (r#"{ name = "handle" && status = ok } ~ { }"#, "c2 c3 c4"),
    ("{ kind = client } ~ { kind = client }", "b4 b5"),
    (r#"{ } !< { resource.service.name = "postgres" }"#, "a4 b4 b5"),
    ("{ status = error } !< { status = error }", "a4 b4 c4"),
    ("{ kind = server } !> { }", "a1 a3 b1 b3 d2"),
    ("{ kind = server } !>> { status = error }", "b1"),
    ("{ status = error } !<< { }", "a4 a5 b4 b5 c2 c3 c4"),
    (r#"{ name = "handle" } !~ { }"#, "c1"),
    (r#"{ name = "GET /orders" } &> { kind = client }"#, "a1 a2"),
    (r#"{ resource.service.name = "cart" } &>> { status = error }"#, "a3 a4 b3 b4"),
    ("{ status = error } &< { kind = server }", "a3 a4 b1 b2 b3 b4"),
    ("{ status = error } &<< { kind = server }", "a1 a3 a4 b1 b2 b3 b4"),
    (r#"{ name = "handle" && status = ok } &~ { status = error }"#, "c2 c3 c4"),
    (r#"{ name = "GET /orders" } > { } > { }"#, "a3"),
    (r#"{ name = "GET /orders" } >> { kind = server } > { }"#, "a4"),
    // && and || between spansets: equal precedence, left to right.
    (r#"{ name = "render" } || { name = "orphan" } && { status = error }"#, "a4 a5"),
    (r#"{ name = "render" } || ({ name = "orphan" } && { status = error })"#, "a5"),
    (r#"{ status = error } && { name = "render" }"#, "a4 a5"),
    (r#"{ resource.service.name = "cart" } && { kind = server } > { status = error }"#, "a3 a4 b2 b3 b4"),
    (r#"({ kind = server } > { status = error }) || { name = "orphan" }"#, "a4 b2 b4 d2"),
    // Pipelines.
    ("{ status = error } | count() > 2", "b1 b2 b3 b4"),
    ("{ } | count() = 2", "d2 d3"),
    (r#"{ name = "handle" } | avg(span.count) = 5"#, "c2 c3 c4"),
    (r#"{ name = "handle" } | sum(span.count) > 14"#, "c2 c3 c4"),
    (r#"{ name = "handle" } | max(duration) > 200ms"#, "c2 c3 c4"),
    ("{ } | max(duration) < 100ms", "d2 d3"),
    ("{ } | min(span.count) < 4", "c1 c2 c3 c4"),
    ("{ status = error } | by(resource.service.name) | count() > 1", "b1 b2"),
    ("{ } | by(resource.service.name) | count() > 2 | coalesce()", "a1 a2 a5 c1 c2 c3 c4"),
    ("{ kind = server } | { status = error }", "b1 b3"),
    ("{ status = error } | select(span.http.route)", "a4 b1 b2 b3 b4 c4"),
    ("count() > 4", "a1 a2 a3 a4 a5 b1 b2 b3 b4 b5"),
    ("{ } | count() + 1 > 5", "a1 a2 a3 a4 a5 b1 b2 b3 b4 b5"),
    (r#"({ status = error } | count() > 1) && { name = "UPDATE stock" }"#, "b1 b2 b3 b4 b5"),
    ("{ status = error } | avg(duration) > 1s", "b1 b2 b3 b4"),
    ("{ duration > 1s } | 3 < count()", "b1 b2 b3 b4"),
    // Hints are accepted and ignored.
    ("{ } with (most_recent = true)", ALL),
    ("{ status = ok } with (most_recent = true, sample = 0.5)", "a2 b5 c2 c3"),
    // Multi-line queries.
    ("{\n  resource.service.name = \"batch\" &&\n  status = error\n}", "c4"),
];

#[test]
fn table_of_queries_selects_the_expected_spans() {
    assert!(CASES.len() >= 100, "{} cases", CASES.len());
    let mut failures = Vec::new();
    for (q, want) in CASES {
        let got = run(q);
        if got != *want {
            failures.push(format!("{q}\n    want: {want}\n    got:  {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// Whatever the planner pushes to the indexes, every trace a query
/// matches passes each required filter on some span (a superset).
#[test]
fn candidate_filters_keep_every_match() {
    let data = dataset();
    for (q, _) in CASES {
        let tq = TraceQl::parse(q).unwrap();
        for t in &data {
            if tq.matching_spans(t).is_empty() {
                continue;
            }
            for f in tq.required_filters() {
                assert!(t.iter().any(|sp| f.matches(sp)), "{q}: {f:?} would drop trace {:?}", t[0].trace_id);
            }
        }
    }
}

fn trace(letter: usize) -> Vec<Span> {
    dataset().swap_remove(letter)
}

#[test]
fn spansets_carry_group_and_aggregate_labels() {
    let b = trace(1);
    let tq = TraceQl::parse("{ status = error } | by(resource.service.name)").unwrap();
    let sets = tq.spansets(&b);
    type Labelled = (Vec<usize>, Vec<(String, FieldValue)>);
    let got: Vec<Labelled> = sets.into_iter().map(|s| (s.spans, s.attributes)).collect();
    let by = |v: &str| vec![("by(resource.service.name)".to_string(), FieldValue::Str(v.into()))];
    assert_eq!(got, vec![(vec![0, 1], by("frontend")), (vec![2], by("cart")), (vec![3], by("postgres"))]);

    let tq = TraceQl::parse("{ } | count() > 4").unwrap();
    let sets = tq.spansets(&b);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].attributes, vec![("count()".to_string(), FieldValue::Int(5))]);
    let tq = TraceQl::parse("{ status = error } | by(resource.service.name) | coalesce()").unwrap();
    let sets = tq.spansets(&b);
    assert_eq!((sets.len(), sets[0].spans.clone(), sets[0].attributes.len()), (1, vec![0, 1, 2, 3], 0));
}

#[test]
fn select_adds_fields_to_the_returned_spans() {
    let a = trace(0);
    let tq = TraceQl::parse(r#"{ name = "GET /orders" } | select(span.http.route, duration, resource.cloud.region, span.nope, span:id)"#)
        .unwrap();
    let sets = tq.spansets(&a);
    assert_eq!(sets[0].spans, vec![0]);
    assert_eq!(
        sets[0].span_attributes,
        vec![vec![
            ("http.route".to_string(), FieldValue::Str("/orders/{id}".into())),
            ("duration".to_string(), FieldValue::Duration(1_000_000_000)),
            ("cloud.region".to_string(), FieldValue::Str("us-east-1".into())),
            ("id".to_string(), FieldValue::Str("a1a1a1a1a1a1a1a1".into())),
        ]]
    );
    let hit = sets[0].to_hit(&a, 3);
    assert_eq!((hit.matched, hit.spans.len(), hit.span_attributes.len()), (1, 1, 1));
    // Without select, nothing is added.
    assert!(TraceQl::parse("{ }").unwrap().spansets(&a)[0].span_attributes.is_empty());
}

#[test]
fn structure_is_safe_with_cycles_and_missing_parents() {
    let mut spans = trace(0);
    // a1 -> a5 (cycle through a1 <- a5), a2 self-parented.
    spans[0].parent_span_id = Some(SpanId([0xa5; 8]));
    spans[1].parent_span_id = Some(SpanId([0xa2; 8]));
    for q in [
        "{} >> {}",
        "{} << {}",
        "{} ~ {}",
        "{} !>> {}",
        "{} &<< {}",
        "{ nestedSetLeft > 0 }",
        "{ childCount > 0 }",
    ] {
        let _ = TraceQl::parse(q).unwrap().matching_spans(&spans);
    }
    let got: Vec<u8> = TraceQl::parse(r#"{ name = "render" } >> {}"#)
        .unwrap()
        .matching_spans(&spans)
        .iter()
        .map(|s| s.span_id.0[0])
        .collect();
    // In the cycle a1 <-> a5 each is the other's ancestor, and so its own.
    assert_eq!(got, vec![0xa1, 0xa5]);
    assert!(TraceQl::parse("{}").unwrap().matching_spans(&[]).is_empty());
}

/// (query, fragment of the message, line, column).
const MALFORMED: &[(&str, &str, usize, usize)] = &[
    (r#"{ name = "abc }"#, "unterminated string", 1, 10),
    ("{ foo = 1 }", "unknown intrinsic `foo`", 1, 3),
    ("{ span:bogus = 1 }", "unknown intrinsic `span:bogus`", 1, 3),
    ("{ trace:name = 1 }", "unknown intrinsic `trace:name`", 1, 3),
    ("{ foo:bar = 1 }", "unknown intrinsic scope `foo:`", 1, 3),
    ("{ name = 1 }", "cannot compare a string with a number", 1, 10),
    ("{ status > error }", "`>` does not apply to a status", 1, 10),
    ("{ status = server }", "cannot compare a status with a kind", 1, 12),
    ("{ name }", "must be a condition, not a string", 1, 3),
    (r#"{ name = "a" "#, "expected `}`, found end of query", 1, 14),
    ("{ .a = 1 } {", "unexpected `{` after the query", 1, 12),
    ("{ .a = nil && name > nil }", "nil can only be compared with = or !=", 1, 20),
    ("", "expected `{` or `(`, found end of query", 1, 1),
    ("{ .a = 1 } ~", "expected `{` or `(`, found end of query", 1, 13),
    ("{ 99999999999999999999 = .a }", "out of range", 1, 3),
    (r#"{ name =~ "(" }"#, "invalid regular expression", 1, 11),
    ("{ name =~ .x }", "must be a string", 1, 11),
    (r#"{ !name = "a" }"#, "`!` needs a condition, not a string", 1, 4),
    ("{ .a = 1 } | count() >", "expected an aggregate", 1, 23),
    ("{ } | avg(name) > 1", "`avg` needs a number", 1, 11),
    ("{ } | select(1)", "expected an attribute or an intrinsic", 1, 14),
    ("{ } | by(.a", "expected `)`, found end of query", 1, 12),
    ("{ .a == 1 }", "unexpected `==`", 1, 6),
    ("{ } | rate()", "answered by /tempo/api/metrics/query_range", 1, 7),
    ("{ } with (most_recent)", "expected `=`", 1, 22),
    ("{\n  name = \"a\" &&\n  status = bogus\n}", "unknown intrinsic `bogus`", 3, 12),
    ("{ kind = server } >= { }", "unexpected `>=` between spansets", 1, 19),
    (r#"{ duration + "a" > 1 }"#, "`+` needs numbers or durations, not a string", 1, 12),
    ("{ } | coalesce(1)", "expected `)`, found number 1", 1, 16),
    ("{ } | count()", "expected a comparison after the aggregate", 1, 14),
    ("{ .a = 1 } | 1 > 2", "a scalar filter compares an aggregate", 1, 16),
    ("{ span. = 1 }", "expected an attribute name", 1, 3),
    ("{ .a = 1 } |", "expected `{` or `(`, found end of query", 1, 13),
    ("{ parent = nil }", "not supported: the `parent` intrinsic", 1, 3),
    ("{ .a = 1 } } ", "unexpected `}` after the query", 1, 12),
    ("{ .a = 1 ) ", "expected `}`, found `)`", 1, 10),
    ("{ .a = # }", "unexpected character '#'", 1, 8),
    ("{ name = \"é\" && ñ = 1 }", "unexpected character 'ñ'", 1, 17),
];

#[test]
fn malformed_queries_name_line_and_column() {
    assert!(MALFORMED.len() >= 20);
    let mut failures = Vec::new();
    for (q, frag, line, col) in MALFORMED {
        match TraceQl::parse(q) {
            Ok(_) => failures.push(format!("{q:?}: parsed")),
            Err(e @ TraceQlError::Parse { .. }) => {
                let TraceQlError::Parse { msg, line: l, col: c } = &e;
                let text = e.to_string();
                if !msg.contains(frag)
                    || (l, c) != (line, col)
                    || !text.ends_with(&format!("at line {line}, column {col}"))
                {
                    failures.push(format!("{q:?}: want {frag:?} at {line}:{col}, got {text}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nesting_depth_is_capped() {
    let a = trace(0);
    let n = |q: &str| TraceQl::parse(q).map(|t| t.matching_spans(&a).len());
    assert_eq!(n(&format!("{}{{ true }}{}", "(".repeat(60), ")".repeat(60))).unwrap(), 5);
    for deep in [
        format!("{}{{ true }}{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("{{ {}.a = 1{} }}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("{{ {}.flag }}", "!".repeat(100_000)),
        format!("{{ {}.a = 1 }}", "-".repeat(100_000)),
        format!("{{ .a = {} }}", vec!["1"; 100_000].join(" ^ ")),
        format!("{{ .a = {} }}", vec!["1"; 100_000].join(" + ")),
    ] {
        let e = TraceQl::parse(&deep).unwrap_err().to_string();
        assert!(e.contains("nested too deeply"), "{e}");
    }
    // Long flat chains of && / || and of spanset operators are not nesting.
    assert_eq!(n(&vec![r#"{ name != "x" }"#; 5_000].join(" && ")).unwrap(), 5);
    assert_eq!(n(&format!("{{ {} }}", vec!["span.flag"; 5_000].join(" && "))).unwrap(), 1);
    assert_eq!(n(&vec!["{}"; 2_000].join(" >> ")).unwrap(), 0);
}

#[test]
fn printed_queries_parse_back_to_the_same_tree() {
    for (q, _) in CASES {
        let printed = TraceQl::parse(q).unwrap().root().to_string();
        let again = TraceQl::parse(&printed).unwrap_or_else(|e| panic!("{q} printed as {printed}: {e}"));
        assert_eq!(again.root().to_string(), printed, "{q}");
        assert_eq!(run(&printed), run(q), "{q} printed as {printed}");
    }
}

proptest::proptest! {
    /// Any text is parsed or refused with an error: never a panic, a hang
    /// or a stack overflow (`q` comes from any client).
    #[test]
    fn parse_never_panics_on_any_text(q in "\\PC{0,300}") {
        let _ = TraceQl::parse(&q);
    }

    /// Text made of TraceQL's own tokens reaches every branch of the
    /// parser; what parses also evaluates, and prints back to a query
    /// that parses to the same tree.
    #[test]
    fn token_soup_never_panics_and_round_trips(toks in proptest::collection::vec(proptest::sample::select(vec![
        "{", "}", "(", ")", "&&", "||", "!", "=", "!=", "=~", "!~", ">", "<", ">=", "<=", ">>", "<<", "~",
        "!>", "!<", "!>>", "!<<", "&>", "&<", "&>>", "&<<", "&~", "+", "-", "*", "/", "%", "^", " ", ",", "|",
        "span.", "resource.", "event.", "link.", "parent.", "instrumentation.", ".", "http.status_code",
        "duration", "name", "status", "kind", "error", "ok", "server", "statusMessage", "span:name",
        "trace:id", "event:name", "link:spanID", "nestedSetLeft", "childCount", "\"x\"", "\"a.*\"", "\"(\"",
        "5ms", "1.5", "3", "true", "nil", "count()", "avg(duration)", "select(", "by(", "coalesce()",
        "with", "most_recent", "rate()", "topk(2)", "minInt",
    ]), 0..60)) {
        let q: String = toks.concat();
        if let Ok(tq) = TraceQl::parse(&q) {
            for t in dataset() {
                let _ = tq.spansets(&t);
            }
            let printed = tq.root().to_string();
            let again = TraceQl::parse(&printed);
            proptest::prop_assert!(again.is_ok(), "{} printed as {}: {:?}", q, printed, again.err());
            proptest::prop_assert_eq!(again.unwrap().root().to_string(), printed);
        }
    }
}

/// Through the engine's search, in the head and after a flush to a
/// segment: matches through array elements and regexes are found, as the
/// candidate planning never relies on what the index does not hold.
#[tokio::test]
async fn search_finds_array_and_regex_matches_in_head_and_segments() {
    use crate::engine::testutil::{append, engine, storage, three_traces};
    use crate::engine::TraceQuery;

    let (_d, st) = storage();
    let mut spans = three_traces();
    spans[1].attributes.push(("tags".into(), arr(vec![s("a"), s("b")])));
    append(&st, spans).await;
    let e = engine(&st);
    for flushed in [false, true] {
        if flushed {
            st.flush(true).unwrap();
        }
        for q in [
            r#"{ span.tags = "b" }"#,
            r#"{ span.tags =~ "[bc]" && status = error }"#,
            r#"{ resource.service.name = "cart" && span.tags != "z" }"#,
            r#"{ name =~ "cart\.G.*" }"#,
            r#"{ resource.service.name = "frontend" } > { span.tags = "a" }"#,
        ] {
            let tq = TraceQl::parse(q).unwrap();
            let r = e
                .search_traces(TraceQuery {
                    traceql: Some(tq),
                    limit: 10,
                    keep_matched: 3,
                    ..Default::default()
                })
                .await
                .unwrap();
            let ids: Vec<TraceId> = r.traces.iter().map(|t| t.summary.trace_id).collect();
            assert_eq!(ids, vec![TraceId([1; 16])], "{q} (flushed: {flushed})");
            assert_eq!(r.traces[0].spansets[0].spans[0].name, "cart.Get", "{q}");
        }
    }
}

/// A trace 20,000 spans deep: every structural operator, the nested-set
/// numbers and `childCount` walk it without recursion (no stack overflow)
/// and in linear time per operator.
#[test]
fn deep_traces_evaluate_without_recursion() {
    let base = trace(3).swap_remove(1);
    let n = 20_000u32;
    let id = |i: u32| {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(i + 1).to_be_bytes());
        SpanId(b)
    };
    let spans: Vec<Span> = (0..n)
        .map(|i| {
            let mut sp = base.clone();
            sp.span_id = id(i);
            sp.parent_span_id = i.checked_sub(1).map(id);
            sp
        })
        .collect();
    for (q, want) in [
        ("{} >> {}", n - 1),
        ("{} << {}", n - 1),
        ("{} !>> {}", 1),
        ("{} &<< {}", n),
        ("{} ~ {}", 0),
        ("{ nestedSetRight - nestedSetLeft = 1 }", 1),
        ("{ childCount = 1 }", n - 1),
        ("{ nestedSetParent = -1 } >> { span:childCount = 0 }", 1),
    ] {
        let got = TraceQl::parse(q).unwrap().matching_spans(&spans).len();
        assert_eq!(got, want as usize, "{q}");
    }
}
