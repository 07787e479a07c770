//! `skein trace ID`: one trace as a waterfall, its logs under their spans.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde_json::Value;

use super::{body_line, fmt_duration, fmt_time, ns, severity, Api, ClientArgs, StatusError};

/// `skein trace ID`.
#[derive(clap::Args, Debug)]
pub(crate) struct TraceArgs {
    /// The trace ID: 1-32 hex digits.
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Width of the timeline bar, in columns.
    #[arg(long, default_value_t = 40)]
    pub(crate) bar_width: usize,
}

/// Fetches `GET /api/v1/traces/{id}` and prints it; a missing trace is an
/// error (exit code 1) naming the ID.
pub(crate) fn run(args: &TraceArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let id = args.id.trim();
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not a trace ID: give 1-32 hex digits");
    }
    let v = match api.get(&format!("/api/v1/traces/{id}"), &[]) {
        Ok(v) => v,
        Err(e) if e.downcast_ref::<StatusError>().is_some_and(|s| s.status == 404) => {
            bail!("trace {id} not found at {}", api.base())
        }
        Err(e) => return Err(e),
    };
    if args.client.json {
        return super::print_json(&v);
    }
    print!("{}", waterfall(&v, args.bar_width.clamp(10, 400)));
    Ok(())
}

/// One span of the answer, as the waterfall needs it.
struct Row<'a> {
    span: &'a Value,
    start: u64,
    end: u64,
    depth: usize,
}

/// The spans in tree order: each root (no parent, or a parent that is not
/// in the trace) by start time, then depth-first with children by start
/// time. A span reached twice (a cycle, or a repeated span ID) is shown
/// once.
fn tree_order(spans: &[Value]) -> Vec<Row<'_>> {
    let ids: HashSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s["parent_span_id"].as_str() {
            Some(p) if ids.contains(p) && s["span_id"].as_str() != Some(p) => {
                children.entry(p).or_default().push(i)
            }
            _ => roots.push(i),
        }
    }
    let key = |i: &usize| (ns(&spans[*i]["start_time_unix_nano"]), *i);
    roots.sort_by_key(key);
    for c in children.values_mut() {
        c.sort_by_key(key);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut seen_ids = HashSet::new();
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (i, 0)).collect();
    // Spans only reachable through a cycle have no root: the earliest
    // unseen one starts another top-level tree.
    loop {
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let s = &spans[i];
            let start = ns(&s["start_time_unix_nano"]);
            let end = ns(&s["end_time_unix_nano"]).max(start);
            out.push(Row { span: s, start, end, depth });
            if let Some(id) = s["span_id"].as_str() {
                if seen_ids.insert(id) {
                    if let Some(c) = children.get(id) {
                        stack.extend(c.iter().rev().map(|&c| (c, depth + 1)));
                    }
                }
            }
        }
        match (0..spans.len()).filter(|&i| !seen[i]).min_by_key(key) {
            Some(i) => stack.push((i, 0)),
            None => break,
        }
    }
    out
}

/// Longest label (indentation, service and name) before it is cut.
const MAX_LABEL: usize = 64;

/// The terminal rendering of a trace answer (`{trace_id, spans, logs,
/// warnings?}` of `GET /api/v1/traces/{id}`): a header, then one line per
/// span in tree order (indented by depth; service, name, duration, a bar
/// placed on the trace's time range, `ERROR` with the status message),
/// each followed by its logs (time, severity, body). Logs whose span is
/// not in the trace come last.
pub(crate) fn waterfall(v: &Value, bar_width: usize) -> String {
    let empty = Vec::new();
    let spans = v["spans"].as_array().unwrap_or(&empty);
    let logs = v["logs"].as_array().unwrap_or(&empty);
    let rows = tree_order(spans);
    let t0 = rows.iter().map(|r| r.start).min().unwrap_or(0);
    let t1 = rows.iter().map(|r| r.end).max().unwrap_or(t0);
    let range = t1 - t0;
    let is_error = |s: &Value| s["status"]["code"].as_str() == Some("ERROR");
    let services: HashSet<&str> = spans.iter().filter_map(|s| s["service_name"].as_str()).collect();
    let errors = spans.iter().filter(|s| is_error(s)).count();

    let mut out = String::new();
    let _ = writeln!(out, "Trace {}", v["trace_id"].as_str().unwrap_or("?"));
    let root = rows
        .iter()
        .find(|r| r.span["parent_span_id"].is_null())
        .map(|r| format!("{} {}", str_of(&r.span["service_name"]), str_of(&r.span["name"])))
        .unwrap_or_else(|| "(root span not received)".to_string());
    let _ = writeln!(out, "Root: {root}");
    if rows.is_empty() {
        let _ = writeln!(out, "Start: -  Duration: -");
    } else {
        let _ = writeln!(out, "Start: {}  Duration: {}", fmt_time(t0), fmt_duration(range));
    }
    let _ = writeln!(
        out,
        "Spans: {}  Services: {}  Errors: {}  Logs: {}",
        spans.len(),
        services.len(),
        errors,
        logs.len()
    );
    for w in v["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "warning: {}", w.as_str().unwrap_or(""));
    }
    out.push('\n');

    // Logs by span ID, in time order; the rest go at the end.
    let span_ids: HashSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut by_span: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut orphans = Vec::new();
    let mut sorted: Vec<&Value> = logs.iter().collect();
    sorted.sort_by_key(|l| ns(&l["time_unix_nano"]));
    for l in sorted {
        match l["span_id"].as_str() {
            Some(id) if span_ids.contains(id) => by_span.entry(id).or_default().push(l),
            _ => orphans.push(l),
        }
    }

    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let label = format!(
                "{}{} {}",
                "  ".repeat(r.depth),
                str_of(&r.span["service_name"]),
                str_of(&r.span["name"])
            );
            cut(&label, MAX_LABEL)
        })
        .collect();
    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut printed_logs = HashSet::new();
    for (r, label) in rows.iter().zip(&labels) {
        let bar = bar(r.start - t0, r.end - r.start, range, bar_width);
        let _ = write!(out, "{label:<width$}  {:>8}  |{bar}|", fmt_duration(r.end - r.start));
        if is_error(r.span) {
            let msg = r.span["status"]["message"].as_str().unwrap_or("");
            if msg.is_empty() {
                out.push_str(" ERROR");
            } else {
                let _ = write!(out, " ERROR: {}", body_line(&Value::String(msg.to_string())));
            }
        }
        out.push('\n');
        let id = r.span["span_id"].as_str().unwrap_or("");
        if printed_logs.insert(id) {
            for l in by_span.get(id).into_iter().flatten() {
                let _ = writeln!(out, "{}{}", "  ".repeat(r.depth + 1), log_line(l));
            }
        }
    }
    if !orphans.is_empty() {
        let _ = writeln!(out, "\nLogs without a span in this trace:");
        for l in orphans {
            let _ = writeln!(out, "  {}", log_line(l));
        }
    }
    out
}

/// `· 13:00:00.123 ERROR body` (time of day in UTC; the header has the date).
fn log_line(l: &Value) -> String {
    let t = fmt_time(ns(&l["time_unix_nano"]));
    format!("· {} {:<5} {}", &t[11..23], severity(l), body_line(&l["body"]))
}

/// The span's bar: blanks up to its start, `█` for its length (at least
/// one cell, so a short span stays visible), blanks after, on `width`
/// cells for the trace's `range`.
pub(crate) fn bar(offset: u64, len: u64, range: u64, width: usize) -> String {
    let scale =
        |x: u64| if range == 0 { 0 } else { (u128::from(x) * width as u128 / u128::from(range)) as usize };
    let from = scale(offset).min(width - 1);
    let to = scale(offset + len).clamp(from + 1, width);
    format!("{}{}{}", " ".repeat(from), "█".repeat(to - from), " ".repeat(width - to))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// `s` cut to `max` characters with an ellipsis.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(max - 1).collect();
        c.push('…');
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_764_507_600_000_000_000;

    fn span(
        id: &str,
        parent: Option<&str>,
        service: &str,
        name: &str,
        start_ms: u64,
        dur_ms: u64,
        err: &str,
    ) -> Value {
        let s = T0 + start_ms * 1_000_000;
        json!({
            "span_id": id, "parent_span_id": parent, "service_name": service, "name": name,
            "start_time_unix_nano": s.to_string(), "end_time_unix_nano": (s + dur_ms * 1_000_000).to_string(),
            "duration_ns": dur_ms * 1_000_000,
            "status": {"code": if err.is_empty() { "UNSET" } else { "ERROR" }, "message": err},
        })
    }

    fn log(span: Option<&str>, at_ms: u64, sev: &str, body: &str) -> Value {
        json!({"time_unix_nano": (T0 + at_ms * 1_000_000).to_string(), "severity_text": sev,
               "severity_number": 9, "body": body, "span_id": span})
    }

    #[test]
    fn waterfall_in_tree_order_with_logs_under_spans() {
        let v = json!({
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "spans": [
                span("c2", Some("a1"), "cart", "cart.Get", 60, 20, ""),
                span("d1", Some("b1"), "postgres", "query", 12, 30, "deadlock"),
                span("a1", None, "frontend", "GET /checkout", 0, 100, ""),
                span("b1", Some("a1"), "checkout", "PlaceOrder", 10, 40, ""),
            ],
            "logs": [
                log(Some("d1"), 40, "ERROR", "deadlock detected\nretrying"),
                log(Some("a1"), 1, "INFO", "request started"),
                log(Some("zz"), 5, "WARN", "from elsewhere"),
            ],
        });
        let got = waterfall(&v, 20);
        let want = "\
Trace 0af7651916cd43dd8448eb211c80319c
Root: frontend GET /checkout
Start: 2025-11-30T13:00:00.000Z  Duration: 100ms
Spans: 4  Services: 4  Errors: 1  Logs: 3

frontend GET /checkout     100ms  |████████████████████|
  · 13:00:00.001 INFO  request started
  checkout PlaceOrder       40ms  |  ████████          |
    postgres query          30ms  |  ██████            | ERROR: deadlock
      · 13:00:00.040 ERROR deadlock detected\\nretrying
  cart cart.Get             20ms  |            ████    |

Logs without a span in this trace:
  · 13:00:00.005 WARN  from elsewhere
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn missing_parents_and_cycles_still_show_every_span_once() {
        let v = json!({
            "trace_id": "01",
            "spans": [
                span("x", Some("y"), "s", "x", 5, 1, ""),
                span("y", Some("x"), "s", "y", 0, 1, ""),
                span("o", Some("gone"), "s", "orphan", 2, 1, ""),
            ],
            "logs": [],
            "warnings": ["trace cut at 3 spans"],
        });
        let got = waterfall(&v, 10);
        assert!(got.contains("Root: (root span not received)"), "{got}");
        assert!(got.contains("warning: trace cut at 3 spans"), "{got}");
        let lines: Vec<&str> = got.lines().skip(6).collect();
        assert_eq!(lines.len(), 3, "{got}");
        assert!(lines[0].starts_with("s orphan"), "{got}");
        assert!(lines[1].starts_with("s y"), "{got}");
        assert!(lines[2].starts_with("  s x"), "{got}");
    }

    #[test]
    fn bars_stay_in_bounds() {
        assert_eq!(bar(0, 0, 0, 4), "█   ");
        assert_eq!(bar(100, 0, 100, 4), "   █");
        assert_eq!(bar(0, 100, 100, 4), "████");
        assert_eq!(bar(50, 1, 100, 4), "  █ ");
    }

    #[test]
    fn empty_trace_renders_a_header() {
        let got = waterfall(&json!({"trace_id": "01", "spans": [], "logs": []}), 10);
        assert!(got.starts_with("Trace 01\nRoot: (root span not received)\nStart: -"), "{got}");
    }
}
