//! `get_trace`'s answer: a trace read in bounded pages. The first page
//! carries the summary (counts, services, root, duration, the critical
//! path, error spans, the slowest spans); every page carries the next
//! slice of the spans, in tree order (each parent before its children,
//! siblings by start time), and of the logs, by time, so that the pages
//! together list every span and log record once (grafana/tempo#6767:
//! trace APIs an agent can read in bounded pieces).
//!
//! The position is an opaque cursor holding the offsets, the page sizes
//! and the counts the first page saw: a trace still receiving spans may
//! shift between pages, and the answer then says so.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use skein_storage::model::{kind, status, LogRecord, Span, SpanId};

use crate::api::native::json;
use crate::engine::critical_path::{critical_path, root_index, self_times};
use crate::engine::Trace;
use crate::error::{Error, Result};
use crate::McpConfig;

/// Where a page starts and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// Spans before this page, in tree order.
    pub(crate) span_offset: usize,
    /// Log records before this page, by time.
    pub(crate) log_offset: usize,
    /// Spans per page.
    pub(crate) span_size: usize,
    /// Log records per page.
    pub(crate) log_size: usize,
    /// Spans and log records the trace had when the first page was read
    /// (`None` before the first page).
    pub(crate) seen: Option<(usize, usize)>,
}

impl Position {
    /// Page `page` (1-based) of `page_size` spans and log records (each
    /// capped by its limit; the default is the limit).
    pub(crate) fn page(page: Option<u64>, page_size: Option<u64>, cfg: &McpConfig) -> Result<Position> {
        let page = page.unwrap_or(1);
        if page == 0 {
            return Err(Error::bad("page counts from 1"));
        }
        let size = match page_size {
            Some(0) => return Err(Error::bad("page_size must be at least 1")),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let (span_size, log_size) = (size.min(cfg.max_spans_per_page), size.min(cfg.max_logs_per_page));
        let before = usize::try_from(page - 1).unwrap_or(usize::MAX);
        Ok(Position {
            span_offset: before.saturating_mul(span_size),
            log_offset: before.saturating_mul(log_size),
            span_size,
            log_size,
            seen: None,
        })
    }

    /// The cursor of this position: `v1.` and the numbers, dot-separated,
    /// in URL-safe base64 (opaque to clients, readable when debugging).
    pub(crate) fn cursor(&self) -> String {
        let (n, l) = self.seen.unwrap_or_default();
        let text = format!(
            "v1.{}.{}.{}.{}.{n}.{l}",
            self.span_offset, self.log_offset, self.span_size, self.log_size
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    /// The position a cursor names; page sizes above today's limits are
    /// capped to them.
    pub(crate) fn from_cursor(c: &str, cfg: &McpConfig) -> Result<Position> {
        let bad = || Error::bad(format!("cursor {c:?} is not one get_trace returned; omit it to start over"));
        let text = URL_SAFE_NO_PAD.decode(c.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(text).map_err(|_| bad())?;
        let mut parts = text.split('.');
        if parts.next() != Some("v1") {
            return Err(bad());
        }
        let nums: Vec<usize> =
            parts.map(str::parse).collect::<std::result::Result<_, _>>().map_err(|_| bad())?;
        let [span_offset, log_offset, span_size, log_size, n, l] = nums[..] else { return Err(bad()) };
        if span_size == 0 || log_size == 0 {
            return Err(bad());
        }
        Ok(Position {
            span_offset,
            log_offset,
            span_size: span_size.min(cfg.max_spans_per_page),
            log_size: log_size.min(cfg.max_logs_per_page),
            seen: Some((n, l)),
        })
    }
}

/// The spans' indexes in tree order with their depth: roots (no parent,
/// or a parent not in the trace) by start time, each followed by its
/// subtree, children by start time; spans on a parent cycle, which no
/// root reaches, last. Ties go to the lower span ID, so the order does
/// not depend on the order storage returned the spans in.
pub(crate) fn tree_order(spans: &[Span]) -> Vec<(usize, usize)> {
    let key = |i: &usize| (spans[*i].start_time_unix_nano, spans[*i].span_id, *i);
    let ids: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut kids = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| ids.get(&p)).filter(|&&p| p != i) {
            Some(&p) => kids[p].push(i),
            None => roots.push(i),
        }
    }
    roots.sort_by_key(key);
    for k in &mut kids {
        k.sort_by_key(key);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    let mut rest: Vec<usize> = (0..spans.len()).collect();
    rest.sort_by_key(key);
    let mut rest = rest.into_iter();
    loop {
        while let Some((i, d)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            out.push((i, d));
            stack.extend(kids[i].iter().rev().map(|&c| (c, d + 1)));
        }
        // A cycle's spans: walk from the earliest one not yet listed.
        match rest.find(|&i| !seen[i]) {
            Some(i) => stack.push((i, 0)),
            None => break,
        }
    }
    out
}

/// The time of `t` in ns after `start`, the trace's start.
fn offset(t: u64, start: u64) -> u64 {
    t.saturating_sub(start)
}

/// A span as a page lists it: what it is and where, no attributes
/// (`get_span_details` has them).
fn compact_span(s: &Span, depth: usize, start: u64) -> Value {
    let mut v = json!({
        "span_id": s.span_id.to_hex(),
        "parent_span_id": s.parent_span_id.map(|p| p.to_hex()),
        "depth": depth,
        "service": s.service_name(),
        "name": s.name,
        "kind": kind::name(s.kind),
        "start_offset_ns": offset(s.start_time_unix_nano, start),
        "duration_ns": s.duration_ns(),
        "status": status::name(s.status_code),
    });
    if !s.status_message.is_empty() {
        v["status_message"] = json!(s.status_message);
    }
    v
}

/// A log record as a page lists it (no resource: its service says it).
fn compact_log(l: &LogRecord) -> Value {
    let mut v = json!({
        "time_unix_nano": l.time_unix_nano.to_string(),
        "severity": l.severity_text,
        "service": l.service_name(),
        "span_id": l.span_id.map(|s| s.to_hex()),
        "body": json::attr_value(&l.body),
    });
    if !l.attributes.is_empty() {
        v["attributes"] = json::attributes(&l.attributes);
    }
    v
}

/// The first page's summary of `t` (spans in `order`), its lists capped
/// at `cfg.summary_spans`.
fn summary(t: &Trace, cfg: &McpConfig) -> Value {
    let n = cfg.summary_spans;
    let spans = &t.spans;
    let sum = crate::summarize(t.id, spans);
    let start = sum.start_time_unix_nano;
    let name = |i: usize| (spans[i].span_id.to_hex(), spans[i].service_name().to_string(), &spans[i].name);
    let root = root_index(spans).map(|i| {
        let (id, service, name) = name(i);
        json!({"span_id": id, "service": service, "name": name})
    });

    // The critical path; past `n` sections, the longest `n`, still in time
    // order, and how much time the others cover.
    let path = critical_path(spans);
    let mut keep: Vec<usize> = (0..path.len()).collect();
    keep.sort_by_key(|&i| (std::cmp::Reverse(path[i].duration_ns()), i));
    keep.truncate(n);
    keep.sort_unstable();
    let shown: u64 = keep.iter().map(|&i| path[i].duration_ns()).sum();
    let total: u64 = path.iter().map(|c| c.duration_ns()).sum();
    let sections: Vec<Value> = keep
        .iter()
        .map(|&i| {
            let c = path[i];
            let (id, service, name) = name(c.span);
            json!({
                "span_id": id, "service": service, "name": name,
                "start_offset_ns": offset(c.start_ns, start),
                "duration_ns": c.duration_ns(),
            })
        })
        .collect();

    // Error spans by start time, with their status message and events.
    let mut errors: Vec<usize> =
        (0..spans.len()).filter(|&i| spans[i].status_code == status::ERROR).collect();
    errors.sort_by_key(|&i| (spans[i].start_time_unix_nano, spans[i].span_id));
    let error_spans: Vec<Value> = errors
        .iter()
        .take(n)
        .map(|&i| {
            let s = &spans[i];
            let events: Vec<Value> = s
                .events
                .iter()
                .take(n)
                .map(|e| {
                    json!({
                        "name": e.name,
                        "offset_ns": offset(e.time_unix_nano, start),
                        "attributes": json::attributes(&e.attributes),
                    })
                })
                .collect();
            let (id, service, name) = name(i);
            json!({
                "span_id": id, "service": service, "name": name,
                "status_message": s.status_message,
                "events": events,
                "events_total": s.events.len(),
            })
        })
        .collect();

    // The slowest spans, with their self time (not in a child).
    let selfs = self_times(spans);
    let mut slow: Vec<usize> = (0..spans.len()).collect();
    slow.sort_by_key(|&i| (std::cmp::Reverse(spans[i].duration_ns()), spans[i].span_id));
    let slowest: Vec<Value> = slow
        .iter()
        .take(n)
        .map(|&i| {
            let (id, service, name) = name(i);
            json!({
                "span_id": id, "service": service, "name": name,
                "duration_ns": spans[i].duration_ns(),
                "self_time_ns": selfs[i],
            })
        })
        .collect();

    json!({
        "span_count": spans.len(),
        "log_count": t.logs.len(),
        "error_count": errors.len(),
        "start_time_unix_nano": start.to_string(),
        "duration_ns": sum.duration_ns,
        "root": root,
        "services": sum.services.iter()
            .map(|s| json!({"name": s.name, "span_count": s.span_count, "error_count": s.error_count}))
            .collect::<Vec<_>>(),
        "critical_path": sections,
        "critical_path_sections": path.len(),
        "critical_path_omitted_ns": total - shown,
        "error_spans": error_spans,
        "slowest_spans": slowest,
    })
}

/// The page of `t` at `pos`: the summary on the first page, the spans and
/// logs of this page, and `page.next_cursor` (`null` on the last page).
///
/// # Errors
/// 400 for a page past the last one.
pub(crate) fn page(t: &Trace, pos: Position, cfg: &McpConfig) -> Result<Value> {
    let (n, l) = (t.spans.len(), t.logs.len());
    if (pos.span_offset >= n && pos.span_offset > 0) && (pos.log_offset >= l && pos.log_offset > 0) {
        let pages = n.div_ceil(pos.span_size).max(l.div_ceil(pos.log_size)).max(1);
        return Err(Error::bad(format!(
            "the trace has {n} spans and {l} log records: {pages} pages of {} spans and {} logs; \
             this page is past the last",
            pos.span_size, pos.log_size
        )));
    }
    let start = t.spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    let order = tree_order(&t.spans);
    let spans: Vec<Value> = order
        .iter()
        .skip(pos.span_offset)
        .take(pos.span_size)
        .map(|&(i, d)| compact_span(&t.spans[i], d, start))
        .collect();
    let mut logs: Vec<&LogRecord> = t.logs.iter().collect();
    logs.sort_by_key(|r| (r.time_unix_nano, r.span_id, r.observed_time_unix_nano));
    let logs: Vec<Value> =
        logs.iter().skip(pos.log_offset).take(pos.log_size).map(|r| compact_log(r)).collect();

    let next_spans = pos.span_offset.saturating_add(pos.span_size);
    let next_logs = pos.log_offset.saturating_add(pos.log_size);
    let next = Position {
        span_offset: next_spans,
        log_offset: next_logs,
        seen: Some(pos.seen.unwrap_or((n, l))),
        ..pos
    };
    let more = next_spans < n || next_logs < l;
    let mut warnings = t.warnings.clone();
    if let Some((sn, sl)) = pos.seen {
        if (sn, sl) != (n, l) {
            warnings.push(format!(
                "the trace changed since its first page ({sn} → {n} spans, {sl} → {l} logs): pages may \
                 repeat or miss entries; read it again from page 1"
            ));
        }
    }
    let mut v = json!({
        "trace_id": t.id.to_hex(),
        "spans": spans,
        "logs": logs,
        "page": {
            "number": pos.span_offset / pos.span_size + 1,
            "span_offset": pos.span_offset,
            "spans_total": n,
            "log_offset": pos.log_offset,
            "logs_total": l,
            "page_size": {"spans": pos.span_size, "logs": pos.log_size},
            "next_cursor": more.then(|| next.cursor()),
        },
    });
    if pos.span_offset == 0 && pos.log_offset == 0 {
        v["summary"] = summary(t, cfg);
    }
    if !warnings.is_empty() {
        v["warnings"] = json!(warnings);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use skein_storage::model::TraceId;

    use super::*;
    use crate::engine::testutil::span;

    /// A log record of trace 7 at `t` (Unix ns).
    pub(crate) fn log(t: u64, span_id: Option<SpanId>, body: &str) -> LogRecord {
        use std::sync::Arc;

        use skein_storage::model::{AttrValue, Resource, Scope};
        LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: AttrValue::Str(body.into()),
            attributes: Vec::new(),
            trace_id: TraceId([7; 16]),
            span_id,
            flags: 0,
            event_name: String::new(),
            resource: Arc::new(Resource {
                service_name: "svc".into(),
                attributes: vec![("service.name".into(), AttrValue::Str("svc".into()))],
            }),
            scope: Arc::new(Scope::default()),
        }
    }

    /// A trace of `n` spans: a root and `n - 1` children in a few levels,
    /// with one log record per 3 spans.
    fn big_trace(n: usize) -> Trace {
        let mut spans = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = span(7, 0, None, "svc", &format!("op{i}"), 1_000 + i as u64, 10_000, i % 97 == 5);
            s.span_id = SpanId((i as u64 + 1).to_be_bytes());
            s.parent_span_id = (i > 0).then(|| SpanId(((i as u64 - 1) / 4 + 1).to_be_bytes()));
            spans.push(s);
        }
        // Storage order is not tree order.
        spans.reverse();
        let logs = (0..n / 3)
            .map(|i| log(5_000 + i as u64, Some(SpanId((i as u64 + 1).to_be_bytes())), "handled"))
            .collect();
        Trace::new(TraceId([7; 16]), spans, logs)
    }

    /// Reads every page through the cursors: each span and log record
    /// comes once, parents before children, and no page holds more than
    /// its limits.
    #[test]
    fn the_pages_list_every_span_and_log_once() {
        let cfg = McpConfig { max_spans_per_page: 64, max_logs_per_page: 10, ..Default::default() };
        let t = big_trace(1000);
        let mut pos = Position::page(None, None, &cfg).unwrap();
        let (mut spans, mut logs, mut pages) = (Vec::new(), Vec::new(), 0);
        loop {
            let v = page(&t, pos, &cfg).unwrap();
            pages += 1;
            assert_eq!(v["summary"].is_object(), pages == 1, "summary on the first page only");
            let s = v["spans"].as_array().unwrap();
            let l = v["logs"].as_array().unwrap();
            assert!(s.len() <= 64 && l.len() <= 10, "page {pages}: {} spans {} logs", s.len(), l.len());
            spans.extend(s.iter().map(|x| x["span_id"].as_str().unwrap().to_string()));
            logs.extend(l.iter().map(|x| x["time_unix_nano"].as_str().unwrap().to_string()));
            assert!(v.get("warnings").is_none(), "{v}");
            match v["page"]["next_cursor"].as_str() {
                Some(c) => pos = Position::from_cursor(c, &cfg).unwrap(),
                None => break,
            }
        }
        assert_eq!(pages, 1000usize.div_ceil(64).max(333usize.div_ceil(10)));
        assert_eq!(spans.len(), 1000);
        assert_eq!(spans.iter().collect::<HashSet<_>>().len(), 1000, "a span came twice");
        assert_eq!(logs.len(), 333);
        assert_eq!(logs.iter().collect::<HashSet<_>>().len(), 333, "a log came twice");
        // Tree order: every parent is listed before its children.
        let at: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        for s in &t.spans {
            if let Some(p) = s.parent_span_id {
                assert!(at[&*p.to_hex()] < at[&*s.span_id.to_hex()]);
            }
        }
        // Numbered pages give the same slices as the cursors.
        let p3 = page(&t, Position::page(Some(3), Some(64), &cfg).unwrap(), &cfg).unwrap();
        assert_eq!(p3["spans"][0]["span_id"], json!(spans[128]));
        assert_eq!(p3["page"]["number"], 3);
        // A page size above the limit is capped.
        let p = Position::page(Some(1), Some(10_000), &cfg).unwrap();
        assert_eq!((p.span_size, p.log_size), (64, 10));
    }

    #[test]
    fn the_first_page_summarizes_the_trace() {
        let cfg = McpConfig { summary_spans: 3, ..Default::default() };
        let t = big_trace(50);
        let v = page(&t, Position::page(None, None, &cfg).unwrap(), &cfg).unwrap();
        let s = &v["summary"];
        assert_eq!((s["span_count"].as_u64(), s["log_count"].as_u64()), (Some(50), Some(16)));
        assert_eq!(s["root"]["name"], "op0");
        assert_eq!(s["error_count"], 1, "{s}");
        assert_eq!(s["error_spans"][0]["name"], "op5");
        assert_eq!(s["slowest_spans"].as_array().map(Vec::len), Some(3));
        assert_eq!(s["slowest_spans"][0]["name"], "op0");
        assert!(s["critical_path"].as_array().unwrap().len() <= 3);
        let shown: u64 =
            s["critical_path"].as_array().unwrap().iter().map(|c| c["duration_ns"].as_u64().unwrap()).sum();
        // The path covers the root (op0, 10 µs), not the children past it.
        assert_eq!(shown + s["critical_path_omitted_ns"].as_u64().unwrap(), 10_000);
        assert_eq!(v["page"]["next_cursor"], Value::Null);
    }

    #[test]
    fn bad_positions_are_clear_errors() {
        let cfg = McpConfig::default();
        for c in
            ["", "nope", &URL_SAFE_NO_PAD.encode("v2.0.0.1.1.0.0"), &URL_SAFE_NO_PAD.encode("v1.0.0.0.1.0.0")]
        {
            let e = Position::from_cursor(c, &cfg).unwrap_err().to_string();
            assert!(e.contains("is not one get_trace returned"), "{c}: {e}");
        }
        assert!(Position::page(Some(0), None, &cfg).is_err());
        assert!(Position::page(None, Some(0), &cfg).is_err());
        let t = big_trace(10);
        let e = page(&t, Position::page(Some(9), None, &cfg).unwrap(), &cfg).unwrap_err().to_string();
        assert!(e.contains("past the last"), "{e}");
        // A trace that grew between pages says so.
        let mut pos = Position::page(Some(1), Some(5), &cfg).unwrap();
        pos.seen = Some((8, 3));
        pos.span_offset = 5;
        let v = page(&t, pos, &cfg).unwrap();
        assert!(v["warnings"][0].as_str().unwrap().contains("changed since its first page"), "{v}");
    }
}
