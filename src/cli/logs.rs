//! `skein logs`: log search, and `--follow` to tail new records.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{body_line, fmt_time, ns, severity, time_param, Api, ClientArgs, StatusError};

/// `skein logs [FLAGS]`: each flag is the `GET /api/v1/search/logs`
/// parameter of the same name (docs/api.md).
#[derive(clap::Args, Debug)]
pub(crate) struct LogsArgs {
    /// All these words, case-insensitive, in the body or attribute values.
    #[arg(short, long)]
    pub(crate) q: Option<String>,
    /// Records of this service.
    #[arg(long)]
    pub(crate) service: Option<String>,
    /// Minimum severity: `WARN`, `ERROR`, or 1-24.
    #[arg(long)]
    pub(crate) severity: Option<String>,
    /// Records of this trace.
    #[arg(long)]
    pub(crate) trace_id: Option<String>,
    /// Range start: Unix nanoseconds, RFC 3339, or a duration ago (`15m`).
    #[arg(long)]
    pub(crate) start: Option<String>,
    /// Range end, as `--start` (not with `--follow`).
    #[arg(long, conflicts_with = "follow")]
    pub(crate) end: Option<String>,
    /// At most this many records per request (the server's default is 100).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// Keep following newer records and print them as they come (the live
    /// tail; polling on a server without it), until interrupted (Ctrl-C).
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// With `--follow`: time between polls (a server without the live
    /// tail), and before following again after the server closed the stream.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

impl LogsArgs {
    /// The query string pairs; `start` overrides `--start` (the follow
    /// cursor).
    fn params(&self, start: Option<String>, now: SystemTime) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.push((k.to_string(), v));
            }
        };
        put("q", self.q.clone());
        put("service", self.service.clone());
        put("severity", self.severity.clone());
        put("trace_id", self.trace_id.clone());
        put("start", start.or_else(|| self.start.as_deref().map(|s| time_param(s, now))));
        put("end", self.end.as_deref().map(|s| time_param(s, now)));
        put("limit", self.limit.map(|l| l.to_string()));
        p
    }
}

/// Prints the matching records oldest first (the newest `--limit` of the
/// range, as `tail` shows the end of a file); with `--follow`, then
/// follows the live tail (`GET /api/v1/tail/logs`) from the newest time
/// seen, or polls the search on a server without it. `--json`: the API's
/// answer, or with `--follow` one record per line (NDJSON).
pub(crate) fn run(args: &LogsArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let v = api.get("/api/v1/search/logs", &args.params(None, SystemTime::now()))?;
    if args.client.json && !args.follow {
        return super::print_json(&v);
    }
    let mut cursor = Cursor::default();
    let new = cursor.advance(records(&v));
    if new.is_empty() && !args.follow {
        println!("No log records found.");
    }
    print(args, &new);
    warnings(&v);
    if !args.follow {
        return Ok(());
    }
    loop {
        match stream(&api, args, &mut cursor) {
            // The server stopped: follow it again once it is back.
            Ok(()) => std::thread::sleep(args.interval),
            Err(e) if e.downcast_ref::<StatusError>().is_some_and(|s| s.status == 404) => {
                return poll(&api, args, cursor)
            }
            Err(e) => return Err(e),
        }
    }
}

fn print(args: &LogsArgs, new: &[Value]) {
    for l in new {
        if args.client.json {
            println!("{l}");
        } else {
            println!("{}", line(l));
        }
    }
}

fn warnings(v: &Value) {
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or(""));
    }
}

/// Follows the live tail until the server ends the stream: first the
/// stored records from the cursor on (the cursor drops those already
/// printed), then each new one.
fn stream(api: &Api, args: &LogsArgs, cursor: &mut Cursor) -> Result<()> {
    let mut p = args.params(cursor.last.map(|t| t.to_string()), SystemTime::now());
    p.retain(|(k, _)| k != "limit");
    p.push(("limit".into(), args.limit.map_or(100, |l| l.max(1)).to_string()));
    let resp = api.stream("/api/v1/tail/logs", &p)?;
    let mut event = String::new();
    for l in BufReader::new(resp).lines() {
        let l = l.context("reading the live tail")?;
        if let Some(name) = l.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(data) = l.strip_prefix("data:") {
            match event.as_str() {
                "" => {
                    let rec: Value = serde_json::from_str(data.trim()).context("a tail event is not JSON")?;
                    print(args, &cursor.advance(vec![rec]));
                }
                "lagged" => {
                    eprintln!("warning: fell behind the server; records were dropped: {}", data.trim())
                }
                _ => {}
            }
        } else if l.is_empty() {
            event.clear();
        }
    }
    Ok(())
}

/// `--follow` against a server without the live tail: polls the search
/// every `--interval` from the newest time seen.
fn poll(api: &Api, args: &LogsArgs, mut cursor: Cursor) -> Result<()> {
    let limit = args.limit.map_or(100, u64::from);
    loop {
        std::thread::sleep(args.interval);
        let start = cursor.last.map(|t| t.to_string());
        let v = api.get("/api/v1/search/logs", &args.params(start, SystemTime::now()))?;
        if records(&v).len() as u64 >= limit {
            eprintln!(
                "warning: a poll found as many records as --limit; older ones of that interval may be missing (raise --limit)"
            );
        }
        print(args, &cursor.advance(records(&v)));
        warnings(&v);
    }
}

fn records(v: &Value) -> Vec<Value> {
    v["logs"].as_array().cloned().unwrap_or_default()
}

/// Where a tail stands: the newest time printed, and the records printed
/// at that very time (the next poll starts there, inclusive, so a record
/// stored later with the same timestamp is not lost, and the ones already
/// shown are not shown again).
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    last: Option<u64>,
    at_last: HashSet<(String, String, String)>,
}

impl Cursor {
    /// The records of an answer not printed yet, oldest first; moves the
    /// cursor past them.
    pub(crate) fn advance(&mut self, mut logs: Vec<Value>) -> Vec<Value> {
        logs.sort_by_key(|l| ns(&l["time_unix_nano"]));
        let mut out = Vec::new();
        for l in logs {
            let t = ns(&l["time_unix_nano"]);
            if self.last.is_some_and(|last| t < last) {
                continue;
            }
            let key = (
                l["trace_id"].as_str().unwrap_or("").to_string(),
                l["span_id"].as_str().unwrap_or("").to_string(),
                l["body"].to_string(),
            );
            if self.last != Some(t) {
                self.last = Some(t);
                self.at_last.clear();
            }
            if self.at_last.insert(key) {
                out.push(l);
            }
        }
        out
    }
}

/// `2026-11-30T13:00:00.123Z ERROR checkout  body  trace=… span=…`.
pub(crate) fn line(l: &Value) -> String {
    let mut s = format!(
        "{} {:<5} {}  {}",
        fmt_time(ns(&l["time_unix_nano"])),
        severity(l),
        l["service_name"].as_str().unwrap_or("?"),
        body_line(&l["body"])
    );
    if let Some(t) = l["trace_id"].as_str() {
        s.push_str(&format!("  trace={t}"));
    }
    if let Some(sp) = l["span_id"].as_str() {
        s.push_str(&format!(" span={sp}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(t: u64, body: &str) -> Value {
        json!({"time_unix_nano": t.to_string(), "severity_text": "INFO", "severity_number": 9,
               "body": body, "service_name": "cart", "trace_id": null, "span_id": null})
    }

    fn bodies(v: &[Value]) -> Vec<&str> {
        v.iter().map(|l| l["body"].as_str().unwrap()).collect()
    }

    #[test]
    fn cursor_prints_each_record_once_oldest_first() {
        let mut c = Cursor::default();
        assert_eq!(bodies(&c.advance(vec![rec(20, "b"), rec(10, "a")])), ["a", "b"]);
        // The next poll starts at 20 inclusive: "b" again, plus one more at 20 and a newer one.
        assert_eq!(bodies(&c.advance(vec![rec(30, "d"), rec(20, "b"), rec(20, "c")])), ["c", "d"]);
        assert_eq!(bodies(&c.advance(vec![rec(30, "d")])), Vec::<&str>::new());
        // Something older than the cursor (stored late) is not shown out of order.
        assert_eq!(bodies(&c.advance(vec![rec(5, "late"), rec(31, "e")])), ["e"]);
    }

    #[test]
    fn a_line_per_record() {
        let l = json!({"time_unix_nano": "1764507600123000000", "severity_text": "", "severity_number": 17,
                       "body": "card declined", "service_name": "payment",
                       "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"});
        assert_eq!(
            line(&l),
            "2025-11-30T13:00:00.123Z ERROR payment  card declined  trace=0af7651916cd43dd8448eb211c80319c span=b7ad6b7169203331"
        );
        assert_eq!(line(&rec(0, "x")), "1970-01-01T00:00:00.000Z INFO  cart  x");
    }
}
