//! `GET /api/v1/tail/logs`: live tail of log records as server-sent events
//! (the WHATWG HTML standard's `text/event-stream`, which a browser's
//! `EventSource` reads), with the filters of `GET /api/v1/search/logs`.
//!
//! The stream follows the storage's tail broadcast ([`skein_storage::tail`]):
//! each record of the request's tenant that matches the filters is one
//! unnamed (`message`) event whose data is the `Log` JSON of
//! `/api/v1/search/logs`. Before following, `limit` (or `start`) asks for
//! the newest matching records already stored, sent oldest first. Other
//! events: `ready` once the backfill is sent (`{"backfilled": N}`),
//! `lagged` when the client fell behind and records were dropped
//! (`{"dropped": N}`, in records of its tenant before filtering), and
//! `closed` when the server stops. A comment line is sent every
//! `query.tail.keepalive` so proxies keep the connection open and a
//! vanished client is noticed. Like Loki's `/loki/api/v1/tail` (a
//! websocket there), it bounds the clients (`query.tail.max_clients`,
//! 429 beyond) and the backfill (`query.tail.max_backfill`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use skein_storage::filter::analyzer;
use skein_storage::model::LogRecord;
use skein_storage::tail::{TailEvent, TailSubscription, DEFAULT_TAIL_CAPACITY};

use super::native::{json as render, log_filter};
use crate::error::{Error, Result};
use crate::params::Params;
use crate::{ApiState, Tenant};

/// `[query.tail]`: limits of live tail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Tail streams open at once (all tenants together); one more is
    /// refused with 429 and `Retry-After`.
    pub max_clients: usize,
    /// Batches (one ingest request's log records each) the broadcast holds
    /// for its slowest subscriber; a client further behind loses the
    /// oldest and gets a `lagged` event. Memory is bounded by this many
    /// batches of at most the collector's request size.
    pub channel_capacity: usize,
    /// Most stored records a stream sends before following (`limit` is
    /// capped to it).
    pub max_backfill: usize,
    /// How often a keep-alive comment is sent on a quiet stream.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            max_clients: 64,
            channel_capacity: DEFAULT_TAIL_CAPACITY,
            max_backfill: 1000,
            keepalive: Duration::from_secs(15),
        }
    }
}

impl TailConfig {
    /// Settings that cannot work, named.
    ///
    /// # Errors
    /// The first such setting.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, zero) in [
            ("max_clients", self.max_clients == 0),
            ("channel_capacity", self.channel_capacity == 0),
            ("keepalive", self.keepalive.is_zero()),
        ] {
            if zero {
                return Err(format!("query.tail.{name} must be more than 0"));
            }
        }
        Ok(())
    }
}

const TAIL_LOGS_PARAMS: &[&str] = &["q", "service", "severity", "trace_id", "start", "limit"];

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/tail/logs", get(tail_logs))
}

/// How many stored records to send first: `limit` (0 for none), else
/// `max_backfill` when `start` is given, else none; at most `max_backfill`.
fn backfill_count(p: &Params, max_backfill: usize) -> Result<usize> {
    let n = match p.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Error::bad(format!("limit: {v:?} is not a non-negative integer")))?,
        None if p.get("start").is_some() => max_backfill,
        None => 0,
    };
    Ok(n.min(max_backfill))
}

async fn tail_logs(
    State(st): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    p.only(TAIL_LOGS_PARAMS)?;
    let mut filter = log_filter(&p, st.cfg.max_range)?;
    let cfg = &st.cfg.tail;
    let backfill = backfill_count(&p, cfg.max_backfill)?;
    let tail = st.tenants.tail_with_capacity(cfg.channel_capacity).clone();
    // Subscribed before the backfill is read, so nothing appended
    // meanwhile is missed; what both see is sent once (`seen`).
    let sub = tail
        .subscribe(tenant.clone(), cfg.max_clients)
        .map_err(|e| Error::TooBusy(format!("{e}; retry later, or raise query.tail.max_clients")))?;
    if let Some(fanout) = st.fanout.clone() {
        return relay(&st, &tenant, fanout, sub, filter, backfill, q.as_deref().unwrap_or_default()).await;
    }
    let mut queue = VecDeque::new();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut overlap_end = 0;
    if backfill > 0 {
        let r = st.engine(&tenant).await?.search_logs(filter.clone(), backfill).await?;
        for l in r.logs.iter().rev() {
            *seen.entry(fingerprint(l)).or_default() += 1;
            queue.push_back(log_event(l));
        }
        // Only records published before the backfill was read can be in
        // it; a later record alike to a backfilled one is a new record
        // (a shipper's retry, say) and is sent.
        overlap_end = tail.next_seq(&tenant);
    }
    queue.push_back(Event::default().event("ready").data(json!({"backfilled": queue.len()}).to_string()));
    // `start` bounded the backfill; live records are new whatever their
    // timestamps say.
    filter.start_ns = None;
    filter.end_ns = None;
    let mut an = analyzer();
    let matches = Box::new(move |l: &LogRecord| filter.matches(l, &mut an));
    let follow = Follow { sub, matches, queue, seen, overlap_end, done: false };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let e = f.next().await?;
        Some((Ok::<_, Infallible>(e), f))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(cfg.keepalive));
    // Proxies such as nginx would otherwise buffer the stream.
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// A query node's live tail: records are appended on the ingest nodes, so
/// it opens every ingest node's tail with the request's filters (no
/// backfill: `limit=0`), reads the backfill itself (through the fan-out, so from
/// every node and the bucket), then relays the nodes' events as they
/// come. A live record alike to a backfilled one is dropped only when it
/// arrived before the backfill was read (it was in both); the nodes'
/// own `ready` events are not relayed. A node whose tail does not open
/// or ends gets a `warning` event naming it; the stream ends when every
/// node's has. `sub` holds this client's place under `max_clients`.
async fn relay(
    st: &ApiState,
    tenant: &skein_storage::tenant::TenantId,
    fanout: std::sync::Arc<crate::fanout::Fanout>,
    sub: TailSubscription,
    filter: skein_storage::filter::LogFilter,
    backfill: usize,
    raw_query: &str,
) -> Result<Response> {
    // The same filters, no backfill (`limit=0`): that comes from here.
    let mut node_query: Vec<&str> =
        raw_query.split('&').filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("limit")).collect();
    node_query.push("limit=0");
    let (streams, warnings) = fanout.tail_streams(tenant, &node_query.join("&")).await;
    // Read from now on, so that what arrives while the backfill is read is
    // told apart from what comes after.
    let (tx, rx) = tokio::sync::mpsc::channel::<(Option<String>, Event)>(st.cfg.tail.channel_capacity.max(1));
    let backfill_read = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let open = streams.len();
    for mut n in streams {
        let (tx, after) = (tx.clone(), backfill_read.clone());
        tokio::spawn(async move {
            use futures::StreamExt as _;
            let end = loop {
                // The client may leave while a node's stream is quiet.
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    e = n.events.next() => e,
                };
                match next {
                    None => break "its stream ended".to_string(),
                    Some(Err(e)) => break e,
                    Some(Ok(e)) => {
                        let Some(data) = e.data else { continue };
                        // A log record that came before the backfill was
                        // read keeps its data, to be matched against it.
                        let early = !after.load(std::sync::atomic::Ordering::SeqCst);
                        let item = match e.event.as_deref() {
                            None | Some("message") => {
                                (early.then(|| data.clone()), Event::default().data(data))
                            }
                            Some("ready") => continue,
                            Some(other) => (None, Event::default().event(other).data(data)),
                        };
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let msg = format!(
                "ingest node {}: live tail stopped ({end}); its new records are not followed",
                n.node
            );
            let _ = tx
                .send((None, Event::default().event("warning").data(json!({"message": msg}).to_string())))
                .await;
        });
    }
    drop(tx);
    let mut queue: VecDeque<Event> = warnings
        .into_iter()
        .map(|w| Event::default().event("warning").data(json!({"message": w}).to_string()))
        .collect();
    let mut seen: HashMap<String, u32> = HashMap::new();
    if backfill > 0 {
        let r = st.engine(tenant).await?.search_logs(filter, backfill).await?;
        for l in r.logs.iter().rev() {
            let data = render::log(l).to_string();
            *seen.entry(data.clone()).or_default() += 1;
            queue.push_back(Event::default().data(data));
        }
    }
    backfill_read.store(true, std::sync::atomic::Ordering::SeqCst);
    queue.push_back(
        Event::default()
            .event("ready")
            .data(json!({"backfilled": seen.values().sum::<u32>(), "ingest_nodes": open}).to_string()),
    );
    // `sub` stays with the stream: the client's place under max_clients.
    let state = (queue, rx, seen, sub);
    let stream = futures::stream::unfold(state, |(mut queue, mut rx, mut seen, sub)| async move {
        loop {
            if let Some(e) = queue.pop_front() {
                return Some((Ok::<_, Infallible>(e), (queue, rx, seen, sub)));
            }
            let (early, e) = rx.recv().await?;
            if let Some(n) = early.as_ref().and_then(|d| seen.get_mut(d)) {
                *n -= 1;
                if *n == 0 {
                    seen.remove(early.as_deref().unwrap_or_default());
                }
                continue;
            }
            queue.push_back(e);
        }
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(st.cfg.tail.keepalive));
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// One stream's state.
struct Follow {
    sub: TailSubscription,
    /// The request's filters, without its time bounds.
    matches: Box<dyn FnMut(&LogRecord) -> bool + Send>,
    /// Events ready to send.
    queue: VecDeque<Event>,
    /// Fingerprints of backfilled records (with their counts) not seen
    /// live yet: a record appended while the backfill was read comes both
    /// ways.
    seen: HashMap<u64, u32>,
    /// The tenant's record sequence number after the backfill: live
    /// records from it on are all new.
    overlap_end: u64,
    done: bool,
}

impl Follow {
    /// The next event, or `None` once the tail closed.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            match self.sub.recv().await {
                TailEvent::Records(b) => {
                    for (seq, l) in (b.first_seq..).zip(&b.logs) {
                        if seq >= self.overlap_end && !self.seen.is_empty() {
                            self.seen = HashMap::new();
                        }
                        if !(self.matches)(l) {
                            continue;
                        }
                        if let Some(n) = self.seen.get_mut(&fingerprint(l)) {
                            *n -= 1;
                            if *n == 0 {
                                self.seen.remove(&fingerprint(l));
                            }
                            continue;
                        }
                        self.queue.push_back(log_event(l));
                    }
                }
                TailEvent::Lagged(n) => self
                    .queue
                    .push_back(Event::default().event("lagged").data(json!({"dropped": n}).to_string())),
                TailEvent::Closed => {
                    self.done = true;
                    self.queue.push_back(
                        Event::default()
                            .event("closed")
                            .data(json!({"reason": "server stopping"}).to_string()),
                    );
                }
            }
        }
    }
}

fn log_event(l: &LogRecord) -> Event {
    Event::default().data(render::log(l).to_string())
}

/// Identifies a record well enough to drop the live copy of a backfilled
/// one; two records alike in all of these are one record to a reader.
fn fingerprint(l: &LogRecord) -> u64 {
    let mut h = DefaultHasher::new();
    (l.time_unix_nano, l.observed_time_unix_nano, l.severity_number, &l.severity_text).hash(&mut h);
    (l.trace_id.0, l.span_id.map(|s| s.0), l.service_name()).hash(&mut h);
    format!("{:?}{:?}", l.body, l.attributes).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use serde_json::Value;
    use skein_storage::model::{AttrValue, LogRecord, Resource, Scope, TraceId};
    use skein_storage::tenant::TenantId;
    use tower::ServiceExt as _;

    use super::*;
    use crate::api::tests::app_with;
    use crate::engine::testutil::storage;
    use crate::QueryConfig;

    fn log(service: &str, severity: i32, body: &str, t: u64) -> LogRecord {
        LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            severity_number: severity,
            severity_text: String::new(),
            body: AttrValue::Str(body.into()),
            attributes: Vec::new(),
            trace_id: TraceId([7; 16]),
            span_id: None,
            flags: 0,
            event_name: String::new(),
            resource: Arc::new(Resource { service_name: service.into(), attributes: Vec::new() }),
            scope: Arc::new(Scope::default()),
        }
    }

    /// Reads SSE events (name, data) from `body` until `n` arrived; each
    /// must come within a few seconds.
    async fn events(body: &mut Body, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut buf = String::new();
        while out.len() < n {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
                .await
                .expect("an event in time")
                .expect("the stream goes on")
                .unwrap();
            let Ok(data) = frame.into_data() else { continue };
            buf.push_str(std::str::from_utf8(&data).unwrap());
            while let Some(i) = buf.find("\n\n") {
                let block: String = buf.drain(..i + 2).collect();
                let (mut name, mut data) = ("message".to_string(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    out.push((name, data));
                }
            }
        }
        out
    }

    fn open(app: &Router, uri: &str, tenant: Option<&str>) -> impl std::future::Future<Output = Response> {
        let mut req = Request::get(uri);
        if let Some(t) = tenant {
            req = req.extension(TenantId::parse(t).unwrap());
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap()).map(|r| r.unwrap())
    }

    use futures::FutureExt as _;

    /// The stream sends the backfill oldest first, then `ready`, then only
    /// new records that match, each as the search/logs `Log` JSON.
    #[tokio::test]
    async fn test_tail_backfills_then_follows_matching_records() {
        let (_d, s) = storage();
        s.append_logs(vec![
            log("cart", 17, "old disk failure", 1_000),
            log("cart", 17, "old disk again", 2_000),
        ])
        .await
        .unwrap();
        let app = app_with(&s, QueryConfig::default());
        let r = open(&app, "/api/v1/tail/logs?q=disk&service=cart&severity=ERROR&limit=5", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut body = r.into_body();
        let first = events(&mut body, 3).await;
        let bodies: Vec<_> = first.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        assert_eq!(bodies[2], ("ready", r#"{"backfilled":2}"#.to_string()));
        let v: Value = serde_json::from_str(&bodies[0].1).unwrap();
        assert_eq!(v["body"], "old disk failure");
        assert_eq!(v["trace_id"], "07".repeat(16));
        assert_eq!(v["time_unix_nano"], "1000");
        s.append_logs(vec![
            log("cart", 9, "disk info, too low", 3_000),
            log("web", 17, "disk on another service", 3_001),
            log("cart", 17, "network down", 3_002),
            log("cart", 21, "DISK gone", 3_003),
        ])
        .await
        .unwrap();
        let next = events(&mut body, 1).await;
        assert_eq!(next[0].0, "message");
        let v: Value = serde_json::from_str(&next[0].1).unwrap();
        assert_eq!(v["body"], "DISK gone");
        assert_eq!(v["service_name"], "cart");
    }

    /// A record sent again after the backfill, alike in every field to a
    /// backfilled one (a shipper's retry), is a new record: it is sent.
    #[tokio::test]
    async fn test_tail_sends_a_repeat_of_a_backfilled_record() {
        let (_d, s) = storage();
        let same = || log("dup", 9, "same line", 5_000);
        s.append_logs(vec![same()]).await.unwrap();
        let app = app_with(&s, QueryConfig::default());
        let r = open(&app, "/api/v1/tail/logs?service=dup&limit=5", None).await;
        let mut body = r.into_body();
        let first = events(&mut body, 2).await;
        assert_eq!(first[1], ("ready".to_string(), r#"{"backfilled":1}"#.to_string()));
        s.append_logs(vec![same()]).await.unwrap();
        s.append_logs(vec![same(), log("dup", 9, "end", 5_001)]).await.unwrap();
        let next = events(&mut body, 3).await;
        let got: Vec<Value> =
            next.iter().map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["body"].clone()).collect();
        assert_eq!(got, ["same line", "same line", "end"]);
    }

    /// A tenant's stream carries only that tenant's records.
    #[tokio::test]
    async fn test_tail_is_scoped_to_the_tenant() {
        let (_d, s) = storage();
        let app = app_with(&s, QueryConfig::default());
        let st = ApiState::new(
            skein_storage::tenant::Tenants::from_storage(s.clone()),
            Default::default(),
            QueryConfig::default(),
        );
        let mut other = open(&app, "/api/v1/tail/logs", Some("other")).await.into_body();
        let mut mine = open(&app, "/api/v1/tail/logs", None).await.into_body();
        assert_eq!(events(&mut mine, 1).await[0].0, "ready");
        assert_eq!(events(&mut other, 1).await[0].0, "ready");
        s.append_logs(vec![log("cart", 9, "for the default tenant", 1)]).await.unwrap();
        let got = events(&mut mine, 1).await;
        assert!(got[0].1.contains("for the default tenant"));
        let other_tenant = st.tenants.get(&TenantId::parse("other").unwrap()).unwrap();
        other_tenant.append_logs(vec![log("cart", 9, "for the other tenant", 1)]).await.unwrap();
        let got = events(&mut other, 1).await;
        assert!(got[0].1.contains("for the other tenant"), "{got:?}");
    }

    /// A query node relays every ingest node's new records after its own
    /// backfill (read through the fan-out), once each, and says when a
    /// node's tail cannot be opened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_a_query_node_relays_every_ingest_nodes_tail() {
        use skein_storage::cluster::node_storage_url;
        use skein_storage::tenant::Tenants;
        use skein_storage::{Storage, StorageConfig};

        use crate::fanout::{Fanout, IngestNodes};
        let bucket = tempfile::tempdir().unwrap();
        let url = format!("file://{}", bucket.path().display());
        let cfg = |url: String, mirror: bool| StorageConfig {
            storage_url: Some(url),
            mirror,
            ..skein_storage::testsuite::test_config()
        };
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for id in ["n1", "n2"] {
            let d = tempfile::tempdir().unwrap();
            let n = Storage::open(d.path(), cfg(node_storage_url(&url, id), false)).unwrap();
            n.replay().unwrap();
            let tenants = Tenants::from_storage(n.clone());
            let st = ApiState::new(tenants.clone(), Default::default(), QueryConfig::default())
                .with_node_id(id.into());
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(l, crate::router(st)).await });
            nodes.push((n, base, tenants));
            dirs.push(d);
        }
        nodes[0].0.append_logs(vec![log("cart", 9, "before the tail", 1)]).await.unwrap();
        let dq = tempfile::tempdir().unwrap();
        let q = Storage::open(dq.path(), cfg(url, true)).unwrap();
        let q2 = q.clone();
        tokio::task::spawn_blocking(move || q2.poll_catalog()).await.unwrap().unwrap();
        let app = |bases: Vec<String>| {
            let fan = Fanout::new(IngestNodes::Static(bases), Duration::from_secs(2), None);
            crate::router(
                ApiState::new(Tenants::from_storage(q.clone()), Default::default(), QueryConfig::default())
                    .with_fanout(std::sync::Arc::new(fan)),
            )
        };
        let bases: Vec<String> = nodes.iter().map(|n| n.1.clone()).collect();
        let mut body =
            open(&app(bases.clone()), "/api/v1/tail/logs?limit=10&service=cart", None).await.into_body();
        let got = events(&mut body, 2).await;
        assert!(got[0].0 == "message" && got[0].1.contains("before the tail"), "{got:?}");
        assert_eq!(got[1].0, "ready", "{got:?}");
        assert!(got[1].1.contains("\"ingest_nodes\":2"), "{got:?}");
        nodes[0].0.append_logs(vec![log("cart", 9, "on n1", 2)]).await.unwrap();
        nodes[1].0.append_logs(vec![log("other", 9, "filtered out", 3)]).await.unwrap();
        nodes[1].0.append_logs(vec![log("cart", 9, "on n2", 4)]).await.unwrap();
        let mut got: Vec<String> = events(&mut body, 2).await.into_iter().map(|e| e.1).collect();
        got.sort();
        assert!(got[0].contains("on n1") && got[1].contains("on n2"), "{got:?}");
        // The client leaves: the relay closes the nodes' streams too.
        drop(body);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while nodes.iter().any(|n| n.2.tail_with_capacity(DEFAULT_TAIL_CAPACITY).wanted()) {
            assert!(std::time::Instant::now() < deadline, "an ingest node's tail is still followed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A node whose tail does not open: a warning event names it.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let mut body =
            open(&app(vec![bases[0].clone(), dead_url.clone()]), "/api/v1/tail/logs", None).await.into_body();
        let got = events(&mut body, 2).await;
        assert!(got[0].0 == "warning" && got[0].1.contains(&dead_url), "{got:?}");
        assert_eq!(got[1].0, "ready", "{got:?}");
    }

    /// Past `max_clients` streams a client gets 429; a closed stream frees
    /// its place. Bad filters are 400s as in search/logs.
    #[tokio::test]
    async fn test_tail_limits_clients_and_checks_parameters() {
        let (_d, s) = storage();
        let mut cfg = QueryConfig::default();
        cfg.tail.max_clients = 1;
        let app = app_with(&s, cfg);
        let first = open(&app, "/api/v1/tail/logs", None).await;
        assert_eq!(first.status(), StatusCode::OK);
        let second = open(&app, "/api/v1/tail/logs", None).await;
        assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(second.headers().contains_key("retry-after"));
        drop(first);
        assert_eq!(open(&app, "/api/v1/tail/logs", None).await.status(), StatusCode::OK);
        for bad in ["severity=LOUD", "limit=-1", "end=5", "trace_id=xyz", "q=%20"] {
            let r = open(&app, &format!("/api/v1/tail/logs?{bad}"), None).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn test_backfill_count_defaults_and_caps() {
        let p = |q: &str| Params::parse(Some(q));
        assert_eq!(backfill_count(&p(""), 100).unwrap(), 0);
        assert_eq!(backfill_count(&p("limit=0"), 100).unwrap(), 0);
        assert_eq!(backfill_count(&p("limit=7"), 100).unwrap(), 7);
        assert_eq!(backfill_count(&p("limit=700"), 100).unwrap(), 100);
        assert_eq!(backfill_count(&p("start=5"), 100).unwrap(), 100);
        assert!(TailConfig { max_clients: 0, ..Default::default() }
            .check()
            .unwrap_err()
            .contains("max_clients"));
    }
}
