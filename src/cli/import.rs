//! `skein import DIR`: backfill OTLP files through the OTLP/HTTP receiver,
//! resumable.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{api_error, unreachable, Api, ClientArgs};

/// The state file's name in DIR when `--state` is not given.
pub(crate) const STATE_FILE: &str = ".skein-import-state";

/// `skein import DIR`.
#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// The directory of OTLP files (searched recursively): `*.pb`
    /// (ExportTraceServiceRequest / ExportLogsServiceRequest) and `*.json`
    /// (OTLP/JSON), as gen_workload.py writes them.
    pub(crate) dir: PathBuf,
    /// Base URL of Skein's OTLP/HTTP receiver.
    #[arg(long, env = "SKEIN_OTLP_URL", default_value = "http://127.0.0.1:4318")]
    pub(crate) otlp_url: String,
    /// The file listing the files already sent, one path relative to DIR
    /// a line; a rerun skips them [default: DIR/.skein-import-state].
    #[arg(long)]
    pub(crate) state: Option<PathBuf>,
    /// Retries per file on a retryable answer (429, 502, 503, 504) or no
    /// answer, before the file counts as failed.
    #[arg(long, default_value_t = 10)]
    pub(crate) retries: u32,
    /// The longest wait between two tries, whatever `Retry-After` says.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) max_backoff: Duration,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// What a file holds, and so where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        }
    }
}

/// Tells traces from logs. The file name decides first: a name with
/// `log` in it is logs, one with `trace` or `span` traces (gen_workload.py
/// writes `traces-NNNNN.pb` and `logs-NNNNN.pb`; the OpenTelemetry
/// Collector's file exporter is usually configured per signal the same
/// way). Otherwise an OTLP/JSON file is known by its top-level key
/// (`resourceSpans` or `resourceLogs`); a protobuf file cannot be told by
/// content (both messages have the same field numbers), so it needs the
/// name. `None`: not an OTLP file to send (`summary.json`, `truth.jsonl`,
/// anything else), skipped.
pub(crate) fn classify(name: &str, content: Option<&[u8]>) -> Option<Signal> {
    let lower = name.to_ascii_lowercase();
    let json = lower.ends_with(".json");
    if !json && !lower.ends_with(".pb") {
        return None;
    }
    if lower.contains("log") {
        return Some(Signal::Logs);
    }
    if lower.contains("trace") || lower.contains("span") {
        return Some(Signal::Traces);
    }
    if !json {
        return None;
    }
    let v: Value = serde_json::from_slice(content?).ok()?;
    if v.get("resourceSpans").or_else(|| v.get("resource_spans")).is_some() {
        Some(Signal::Traces)
    } else if v.get("resourceLogs").or_else(|| v.get("resource_logs")).is_some() {
        Some(Signal::Logs)
    } else {
        None
    }
}

/// How long to wait before try `attempt` (1-based): the server's
/// `Retry-After` in seconds when it gave one, else 0.5 s doubling, at most
/// `max`.
pub(crate) fn backoff(retry_after: Option<&str>, attempt: u32, max: Duration) -> Duration {
    let d = match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs) => Duration::from_secs(secs),
        None => Duration::from_millis(500u64.saturating_mul(1 << attempt.min(16))),
    };
    d.min(max)
}

/// The files under `dir`, sorted, as (path relative to `dir`, path).
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading the directory {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                todo.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push((rel.to_string_lossy().into_owned(), p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What happened to one file.
enum Outcome {
    Sent,
    Failed(String),
}

/// Sends every OTLP file of DIR not listed in the state file, in name
/// order, one at a time, recording each one sent; prints a summary. Fails
/// (non-zero exit) when a file could not be sent after its retries, or the
/// receiver refused it (4xx other than 429): the rest are still tried,
/// and a rerun sends only what is missing.
pub(crate) fn run(args: &ImportArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let state_path = args.state.clone().unwrap_or_else(|| args.dir.join(STATE_FILE));
    let done: HashSet<String> = match std::fs::read_to_string(&state_path) {
        Ok(s) => s.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
        Err(e) => return Err(e).with_context(|| format!("reading the state file {}", state_path.display())),
    };
    let mut state = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&state_path)
        .with_context(|| format!("opening the state file {}", state_path.display()))?;
    let state_name = state_path.strip_prefix(&args.dir).ok().map(|p| p.to_string_lossy().into_owned());

    let files = walk(&args.dir)?;
    let (mut skipped_done, mut not_otlp) = (0usize, 0usize);
    let mut todo = Vec::new();
    for (rel, path) in files {
        if Some(&rel) == state_name.as_ref() {
            continue;
        }
        if done.contains(&rel) {
            skipped_done += 1;
            continue;
        }
        let lower = rel.to_ascii_lowercase();
        if !lower.ends_with(".pb") && !lower.ends_with(".json") {
            not_otlp += 1;
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        todo.push((rel, path, size));
    }

    let bar = ProgressBar::new(todo.iter().map(|t| t.2).sum());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}")
            .expect("a fixed template"),
    );
    let base = args.otlp_url.trim_end_matches('/');
    let started = Instant::now();
    let (mut sent, mut bytes, mut traces_files, mut logs_files) = (0usize, 0u64, 0usize, 0usize);
    let mut failed: Vec<(String, String)> = Vec::new();
    for (rel, path, size) in &todo {
        bar.set_message(rel.clone());
        let body = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                failed.push((rel.clone(), format!("reading it: {e}")));
                bar.inc(*size);
                continue;
            }
        };
        let Some(signal) = classify(rel, Some(&body)) else {
            not_otlp += 1;
            bar.inc(*size);
            continue;
        };
        let content_type = if rel.to_ascii_lowercase().ends_with(".json") {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        match send(&api, args, &format!("{base}{}", signal.path()), content_type, body, &bar) {
            Outcome::Sent => {
                writeln!(state, "{rel}").and_then(|()| state.flush()).context("writing the state file")?;
                sent += 1;
                bytes += size;
                match signal {
                    Signal::Traces => traces_files += 1,
                    Signal::Logs => logs_files += 1,
                }
            }
            Outcome::Failed(why) => {
                bar.println(format!("{rel}: {why}"));
                failed.push((rel.clone(), why));
            }
        }
        bar.inc(*size);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if args.client.json {
        super::print_json(&json!({
            "sent_files": sent, "traces_files": traces_files, "logs_files": logs_files, "bytes": bytes,
            "already_done": skipped_done, "not_otlp": not_otlp,
            "failed": failed.iter().map(|(f, why)| json!({"file": f, "error": why})).collect::<Vec<_>>(),
            "seconds": secs, "state_file": state_path,
        }))?;
    } else {
        println!(
            "Imported {sent} files ({traces_files} traces, {logs_files} logs; {}) in {secs:.1}s to {base}",
            indicatif::HumanBytes(bytes)
        );
        println!(
            "Skipped {skipped_done} already imported (state: {}), {not_otlp} not OTLP",
            state_path.display()
        );
        if !failed.is_empty() {
            println!("Failed {} files:", failed.len());
            for (f, why) in &failed {
                println!("  {f}: {why}");
            }
        }
    }
    if !failed.is_empty() {
        bail!("{} files were not imported; rerun to retry only those", failed.len());
    }
    Ok(())
}

/// POSTs one file, retrying retryable answers (429, 502-504: the receiver
/// is over its memory limit or replaying its WAL, as the OTLP/HTTP spec's
/// "Retryable Response Codes" list them) and connection errors.
fn send(
    api: &Api,
    args: &ImportArgs,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    bar: &ProgressBar,
) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = api
            .request(reqwest::Method::POST, url)
            .header("Content-Type", content_type)
            .body(body.clone())
            .send();
        let (why, retry_after) = match resp {
            Ok(r) if r.status().is_success() => return Outcome::Sent,
            Ok(r) => {
                let status = r.status();
                let retry_after =
                    r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                let protobuf = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("protobuf"));
                let body = r.bytes().unwrap_or_default();
                let msg = api_error(status, &error_text(&body, protobuf));
                if !matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    return Outcome::Failed(msg);
                }
                (msg, retry_after)
            }
            Err(e) => (unreachable(url, &e).to_string(), None),
        };
        if attempt > args.retries {
            return Outcome::Failed(format!("{why} (gave up after {attempt} tries)"));
        }
        let wait = backoff(retry_after.as_deref(), attempt, args.max_backoff);
        bar.set_message(format!("retrying in {wait:?}: {why}"));
        std::thread::sleep(wait);
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer to a
/// protobuf request (OTLP specification, "OTLP/HTTP Response", "Failures").
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The text of an error answer: the `google.rpc.Status` message of a
/// protobuf answer, else the body as text (JSON `{"error"}` or
/// `{"message"}` is read by [`api_error`]).
fn error_text(body: &[u8], protobuf: bool) -> String {
    if protobuf {
        if let Ok(s) = <RpcStatus as prost::Message>::decode(body) {
            return serde_json::json!({"error": s.message}).to_string();
        }
    }
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_then_json_keys_tell_the_signal() {
        assert_eq!(classify("traces-00001.pb", None), Some(Signal::Traces));
        assert_eq!(classify("sub/logs-00001.pb", None), Some(Signal::Logs));
        assert_eq!(classify("spans.json", None), Some(Signal::Traces));
        assert_eq!(classify("batch.json", Some(br#"{"resourceSpans": []}"#)), Some(Signal::Traces));
        assert_eq!(classify("batch.json", Some(br#"{"resourceLogs": []}"#)), Some(Signal::Logs));
        assert_eq!(classify("summary.json", Some(br#"{"traces": 5}"#)), None);
        assert_eq!(classify("batch.pb", Some(b"\x0a\x00")), None);
        assert_eq!(classify("truth.jsonl", None), None);
        assert_eq!(classify("not json.json", Some(b"{")), None);
    }

    #[test]
    fn protobuf_error_answers_are_read() {
        let body = prost::Message::encode_to_vec(&RpcStatus { code: 3, message: "malformed request".into() });
        assert_eq!(error_text(&body, true), r#"{"error":"malformed request"}"#);
        assert_eq!(error_text(br#"{"error":"x"}"#, false), r#"{"error":"x"}"#);
    }

    #[test]
    fn backoff_honours_retry_after_within_the_cap() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(Some("2"), 1, max), Duration::from_secs(2));
        assert_eq!(backoff(Some("3600"), 1, max), max);
        assert_eq!(backoff(None, 1, max), Duration::from_secs(1));
        assert_eq!(backoff(Some("Wed, 21 Oct 2015 07:28:00 GMT"), 2, max), Duration::from_secs(2));
        assert_eq!(backoff(None, 40, max), max);
    }

    #[test]
    fn walk_lists_files_recursively_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("b/traces-1.pb"), b"").unwrap();
        std::fs::write(d.path().join("a.json"), b"").unwrap();
        let got: Vec<String> = walk(d.path()).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(got, ["a.json", "b/traces-1.pb"]);
    }
}
