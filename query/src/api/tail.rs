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

use std::collections::{HashSet, VecDeque};
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

async fn tail_logs(State(st): State<ApiState>, Tenant(tenant): Tenant, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref());
    p.only(TAIL_LOGS_PARAMS)?;
    let mut filter = log_filter(&p, st.cfg.max_range)?;
    let cfg = &st.cfg.tail;
    let backfill = backfill_count(&p, cfg.max_backfill)?;
    let tail = st.tenants.tail_with_capacity(cfg.channel_capacity).clone();
    // Subscribed before the backfill is read, so nothing appended
    // meanwhile is missed; what both see is sent once (`seen`).
    let sub = tail.subscribe(tenant.clone(), cfg.max_clients).map_err(|e| {
        Error::TooBusy(format!("{e}; retry later, or raise query.tail.max_clients"))
    })?;
    let mut queue = VecDeque::new();
    let mut seen = HashSet::new();
    if backfill > 0 {
        let r = st.engine(&tenant).await?.search_logs(filter.clone(), backfill).await?;
        for l in r.logs.iter().rev() {
            seen.insert(fingerprint(l));
            queue.push_back(log_event(l));
        }
    }
    queue.push_back(Event::default().event("ready").data(json!({"backfilled": queue.len()}).to_string()));
    // `start` bounded the backfill; live records are new whatever their
    // timestamps say.
    filter.start_ns = None;
    filter.end_ns = None;
    let mut an = analyzer();
    let matches = Box::new(move |l: &LogRecord| filter.matches(l, &mut an));
    let follow = Follow { sub, matches, queue, seen, done: false };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let e = f.next().await?;
        Some((Ok::<_, Infallible>(e), f))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(cfg.keepalive));
    // Proxies such as nginx would otherwise buffer the stream.
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// One stream's state.
struct Follow {
    sub: TailSubscription,
    /// The request's filters, without its time bounds.
    matches: Box<dyn FnMut(&LogRecord) -> bool + Send>,
    /// Events ready to send.
    queue: VecDeque<Event>,
    /// Fingerprints of backfilled records not seen live yet: a record
    /// appended while the backfill was read comes both ways.
    seen: HashSet<u64>,
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
                    for l in &b.logs {
                        if !(self.matches)(l) {
                            continue;
                        }
                        if !self.seen.is_empty() && self.seen.remove(&fingerprint(l)) {
                            continue;
                        }
                        self.queue.push_back(log_event(l));
                    }
                }
                TailEvent::Lagged(n) => {
                    self.queue.push_back(Event::default().event("lagged").data(json!({"dropped": n}).to_string()))
                }
                TailEvent::Closed => {
                    self.done = true;
                    self.queue.push_back(
                        Event::default().event("closed").data(json!({"reason": "server stopping"}).to_string()),
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
