//! `skein search`: trace search, the API's parameters as flags, a table out.

use std::time::SystemTime;

use anyhow::Result;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use serde_json::Value;

use super::{fmt_duration, fmt_time, ns, time_param, Api, ClientArgs};

/// `skein search [FLAGS]`: each flag is the `GET /api/v1/search/traces`
/// parameter of the same name (docs/api.md).
#[derive(clap::Args, Debug)]
pub(crate) struct SearchArgs {
    /// A span of this service.
    #[arg(long)]
    pub(crate) service: Option<String>,
    /// A span of this name.
    #[arg(long)]
    pub(crate) operation: Option<String>,
    /// A span or resource attribute `key=value`; repeatable, all must hold.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub(crate) attrs: Vec<String>,
    /// Shortest span duration (`250ms`, `1.5s`).
    #[arg(long)]
    pub(crate) min_duration: Option<String>,
    /// Longest span duration.
    #[arg(long)]
    pub(crate) max_duration: Option<String>,
    /// `error` or `ok`.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// A TraceQL query instead of the span conditions.
    #[arg(long)]
    pub(crate) q: Option<String>,
    /// Range start: Unix nanoseconds, RFC 3339, or a duration ago (`1h`).
    #[arg(long)]
    pub(crate) start: Option<String>,
    /// Range end, as `--start`.
    #[arg(long)]
    pub(crate) end: Option<String>,
    /// At most this many traces (the server's default is 20, its cap 1000).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// `start` (newest first) or `duration` (longest first).
    #[arg(long)]
    pub(crate) sort: Option<String>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

impl SearchArgs {
    /// The query string pairs, in the API's names.
    pub(crate) fn params(&self, now: SystemTime) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                p.push((k.to_string(), v.clone()));
            }
        };
        put("service", &self.service);
        put("operation", &self.operation);
        put("min_duration", &self.min_duration);
        put("max_duration", &self.max_duration);
        put("status", &self.status);
        put("q", &self.q);
        put("start", &self.start.as_deref().map(|s| time_param(s, now)));
        put("end", &self.end.as_deref().map(|s| time_param(s, now)));
        put("limit", &self.limit.map(|l| l.to_string()));
        put("sort", &self.sort);
        p.extend(self.attrs.iter().map(|a| ("attr".to_string(), a.clone())));
        p
    }
}

/// Runs the search; an API error (a 400 naming the bad parameter) is the
/// command's error.
pub(crate) fn run(args: &SearchArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let v = api.get("/api/v1/search/traces", &args.params(SystemTime::now()))?;
    if args.client.json {
        return super::print_json(&v);
    }
    print!("{}", table(&v));
    Ok(())
}

/// The search answer (`{traces, limit, limit_capped, warnings?}`) as a
/// table (trace ID, start, root service, root name, duration, spans,
/// errors) and a line that counts them.
pub(crate) fn table(v: &Value) -> String {
    let empty = Vec::new();
    let traces = v["traces"].as_array().unwrap_or(&empty);
    let mut out = String::new();
    for w in v["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("")));
    }
    if traces.is_empty() {
        out.push_str("No traces found.\n");
        return out;
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(["trace ID", "start", "root service", "root name", "duration", "spans", "errors"]);
    for tr in traces {
        let root_service = tr["root_service"].as_str().filter(|s| !s.is_empty()).unwrap_or("(no root)");
        t.add_row([
            tr["trace_id"].as_str().unwrap_or("?").to_string(),
            fmt_time(ns(&tr["start_time_unix_nano"])),
            root_service.to_string(),
            tr["root_name"].as_str().unwrap_or("").to_string(),
            fmt_duration(tr["duration_ns"].as_u64().unwrap_or(0)),
            tr["span_count"].as_u64().unwrap_or(0).to_string(),
            tr["error_count"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    for i in 4..7 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    out.push_str(&t.to_string());
    out.push('\n');
    let capped = if v["limit_capped"].as_bool() == Some(true) { ", capped by the server" } else { "" };
    match v["limit"].as_u64() {
        Some(l) if traces.len() as u64 >= l => {
            out.push_str(&format!("{} traces (the limit{capped}; --limit for more)\n", traces.len()))
        }
        _ => out.push_str(&format!("{} traces\n", traces.len())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_map_to_api_parameters() {
        let args = SearchArgs {
            service: Some("cart".into()),
            operation: None,
            attrs: vec!["a=1".into(), "b=x y".into()],
            min_duration: Some("250ms".into()),
            max_duration: None,
            status: Some("error".into()),
            q: None,
            start: Some("10s".into()),
            end: None,
            limit: Some(5),
            sort: Some("duration".into()),
            client: super::super::tests::client(),
        };
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let params = args.params(now);
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            p,
            [
                ("service", "cart"),
                ("min_duration", "250ms"),
                ("status", "error"),
                ("start", "90000000000"),
                ("limit", "5"),
                ("sort", "duration"),
                ("attr", "a=1"),
                ("attr", "b=x y"),
            ]
        );
    }

    #[test]
    fn table_of_traces() {
        let v = json!({
            "traces": [
                {"trace_id": "0af7651916cd43dd8448eb211c80319c", "root_service": "frontend", "root_name": "GET /checkout",
                 "start_time_unix_nano": "1764507600000000000", "duration_ns": 250_000_000, "span_count": 12, "error_count": 1},
                {"trace_id": "00000000000000000000000000000abc", "root_service": "", "root_name": "",
                 "start_time_unix_nano": "1764507599500000000", "duration_ns": 1_500, "span_count": 1, "error_count": 0},
            ],
            "limit": 2, "limit_capped": false,
        });
        let want = "\
┌──────────────────────────────────┬──────────────────────────┬──────────────┬───────────────┬──────────┬───────┬────────┐
│ trace ID                         ┆ start                    ┆ root service ┆ root name     ┆ duration ┆ spans ┆ errors │
╞══════════════════════════════════╪══════════════════════════╪══════════════╪═══════════════╪══════════╪═══════╪════════╡
│ 0af7651916cd43dd8448eb211c80319c ┆ 2025-11-30T13:00:00.000Z ┆ frontend     ┆ GET /checkout ┆    250ms ┆    12 ┆      1 │
│ 00000000000000000000000000000abc ┆ 2025-11-30T12:59:59.500Z ┆ (no root)    ┆               ┆    1.5µs ┆     1 ┆      0 │
└──────────────────────────────────┴──────────────────────────┴──────────────┴───────────────┴──────────┴───────┴────────┘
2 traces (the limit; --limit for more)
";
        let got = table(&v);
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn no_traces_says_so() {
        assert_eq!(table(&json!({"traces": [], "limit": 20})), "No traces found.\n");
        let got = table(&json!({"traces": [], "warnings": ["segment 7 unreadable"]}));
        assert_eq!(got, "warning: segment 7 unreadable\nNo traces found.\n");
    }
}
