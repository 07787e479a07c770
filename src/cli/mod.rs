//! The terminal clients: `skein trace`, `skein search`, `skein logs` and
//! `skein import` (issue 13 item 5). They talk to a running server over
//! its HTTP API (`docs/api.md`) or, for `import`, its OTLP/HTTP port, with
//! a blocking client: one request at a time needs no runtime. Formatting is
//! kept in pure functions so it is tested on fixed input.

pub(crate) mod import;
pub(crate) mod logs;
pub(crate) mod search;
pub(crate) mod trace;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;
use time::OffsetDateTime;

/// Options every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClientArgs {
    /// Base URL of Skein's HTTP API.
    #[arg(long, env = "SKEIN_URL", default_value = "http://127.0.0.1:16686")]
    pub(crate) url: String,
    /// A file holding the bearer token sent as `Authorization: Bearer`
    /// (trailing whitespace ignored); the environment variable
    /// `SKEIN_TOKEN` holds the token itself. A flag taking the token is
    /// left out on purpose: it would show in `ps`.
    #[arg(long, env = "SKEIN_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// The tenant, sent as `X-Scope-OrgID` (with multi-tenancy on).
    #[arg(long, env = "SKEIN_TENANT")]
    pub(crate) tenant: Option<String>,
    /// Print the API's JSON instead of the terminal rendering.
    #[arg(long)]
    pub(crate) json: bool,
    /// Give up on a request after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// A blocking client of one server, with the auth headers set.
#[derive(Debug)]
pub(crate) struct Api {
    http: Client,
    /// For streams (`skein logs --follow`): no overall timeout, only on
    /// connecting.
    stream_http: Client,
    base: String,
    token: Option<String>,
    tenant: Option<String>,
}

impl Api {
    /// Reads the token (file or `SKEIN_TOKEN`) and builds the client.
    pub(crate) fn new(args: &ClientArgs) -> Result<Api> {
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("SKEIN_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        let http = Client::builder().timeout(args.timeout).build().context("building the HTTP client")?;
        let stream_http = Client::builder()
            .timeout(None::<Duration>)
            .connect_timeout(args.timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            stream_http,
            base: args.url.trim_end_matches('/').to_string(),
            token,
            tenant: args.tenant.clone(),
        })
    }

    /// The base URL, for messages.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// A request to `url` (absolute) with the token and tenant headers.
    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        self.with_auth(self.http.request(method, url))
    }

    /// `GET {url}{path}?{query}` answered by a stream that is read as it
    /// comes (no overall timeout): the open response on 2xx, else the
    /// error as [`Api::get`] gives it.
    pub(crate) fn stream(&self, path: &str, query: &[(String, String)]) -> Result<Response> {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
        }
        let resp =
            self.with_auth(self.stream_http.get(&url)).send().map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().unwrap_or_default();
            return Err(StatusError { status: status.as_u16(), message: api_error(status, &body) }.into());
        }
        Ok(resp)
    }

    fn with_auth(&self, mut req: RequestBuilder) -> RequestBuilder {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(t) = &self.tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        req
    }

    /// `GET {url}{path}?{query}`: the JSON answer, or an error that says
    /// what went wrong (unreachable, or the API's own `{"error"}` message
    /// with the status).
    pub(crate) fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value> {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
        }
        let resp =
            self.request(reqwest::Method::GET, &url).send().map_err(|e| unreachable(&self.base, &e))?;
        json_or_error(resp)
    }
}

/// Ends a client command: an error is one line on stderr (with its
/// causes) and exit code 1, without the backtrace `anyhow` adds under
/// `RUST_BACKTRACE`, which is for bugs, not for a trace that does not exist.
pub(crate) fn finish(r: Result<()>) -> Result<()> {
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The message for a request that got no answer.
pub(crate) fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    if e.is_timeout() {
        anyhow!("no answer from {base} in time (--timeout): {e}")
    } else {
        anyhow!(
            "cannot reach Skein at {base}: {} (is `skein serve` running? set --url or SKEIN_URL)",
            root_cause(e)
        )
    }
}

/// The innermost cause of an error: reqwest's own message for a refused
/// connection is only "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The body as JSON on 2xx; otherwise an error carrying the status and the
/// API's `{"error": ...}` message (or the body's start when it is not JSON).
pub(crate) fn json_or_error(resp: Response) -> Result<Value> {
    let status = resp.status();
    let body = resp.text().context("reading the answer")?;
    if !status.is_success() {
        return Err(StatusError { status: status.as_u16(), message: api_error(status, &body) }.into());
    }
    serde_json::from_str(&body).with_context(|| format!("the answer is not JSON: {}", snippet(&body)))
}

/// An error answer of the API: its status, and the message for the user
/// (see [`api_error`]).
#[derive(Debug)]
pub(crate) struct StatusError {
    pub(crate) status: u16,
    message: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StatusError {}

/// `"400 Bad Request: <message>"` from an error answer: the API's
/// `{"error"}`, or the `{"message"}` of an OTLP/JSON `google.rpc.Status`.
pub(crate) fn api_error(status: reqwest::StatusCode, body: &str) -> String {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").or_else(|| v.get("message")).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| snippet(body));
    let hint = match status.as_u16() {
        401 => " (give a token: --token-file or SKEIN_TOKEN; with multi-tenancy, --tenant)",
        403 => " (the token is bound to another tenant, or the tenant is not allowed)",
        _ => "",
    };
    format!("the server answered {status}: {msg}{hint}")
}

fn snippet(body: &str) -> String {
    let s: String = body.chars().take(200).collect();
    if s.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        s.trim().to_string()
    }
}

/// A `--start`/`--end` value for the API: a duration (`15m`, `2h`) means
/// that long before now, as Unix nanoseconds; anything else (Unix
/// nanoseconds, RFC 3339) goes to the server as given, which checks it.
pub(crate) fn time_param(v: &str, now: SystemTime) -> String {
    match humantime::parse_duration(v) {
        Ok(d) if v.chars().any(|c| c.is_ascii_alphabetic()) => {
            let t = now.checked_sub(d).unwrap_or(UNIX_EPOCH);
            t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().to_string()
        }
        _ => v.to_string(),
    }
}

/// Unix nanoseconds as a decimal string (the API's form) to a number; 0
/// when malformed, which renders as the epoch rather than failing a whole
/// listing.
pub(crate) fn ns(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-11-30T13:00:00.123Z`.
pub(crate) fn fmt_time(ns: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A duration in nanoseconds, short, as Jaeger's UI writes them: `850ns`,
/// `12µs`, `3.41ms`, `1.25s`, `2m3s`.
pub(crate) fn fmt_duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => trim(ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => trim(ns as f64 / 1e6, "ms"),
        1_000_000_000..60_000_000_000 => trim(ns as f64 / 1e9, "s"),
        _ => {
            let s = ns / 1_000_000_000;
            if s >= 3600 {
                format!("{}h{}m", s / 3600, s % 3600 / 60)
            } else {
                format!("{}m{}s", s / 60, s % 60)
            }
        }
    }
}

/// Three significant digits, trailing zeros dropped.
fn trim(v: f64, unit: &str) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{unit}")
}

/// A log body as one line: strings as they are, anything else as JSON;
/// newlines shown as `\n` so one record stays one line.
pub(crate) fn body_line(body: &Value) -> String {
    let s = match body {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    s.replace('\r', "\\r").replace('\n', "\\n")
}

/// A severity for display: the text the record carries, else the name of
/// its number's range (OTel logs data model, "Field: SeverityNumber").
pub(crate) fn severity(log: &Value) -> String {
    let text = log["severity_text"].as_str().unwrap_or("");
    if !text.is_empty() {
        return text.to_string();
    }
    match log["severity_number"].as_u64().unwrap_or(0) {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "-",
    }
    .to_string()
}

/// Prints `v` pretty on stdout.
pub(crate) fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Client options as given by no flag.
    pub(crate) fn client() -> ClientArgs {
        ClientArgs {
            url: "http://127.0.0.1:16686".into(),
            token_file: None,
            tenant: None,
            json: false,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(fmt_duration(850), "850ns");
        assert_eq!(fmt_duration(12_000), "12µs");
        assert_eq!(fmt_duration(3_410_000), "3.41ms");
        assert_eq!(fmt_duration(250_000_000), "250ms");
        assert_eq!(fmt_duration(1_250_000_000), "1.25s");
        assert_eq!(fmt_duration(123_000_000_000), "2m3s");
        assert_eq!(fmt_duration(7_380_000_000_000), "2h3m");
    }

    #[test]
    fn times_are_utc_with_millis() {
        assert_eq!(fmt_time(1_764_507_600_123_456_789), "2025-11-30T13:00:00.123Z");
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(time_param("15m", now), (9_100u64 * 1_000_000_000).to_string());
        assert_eq!(time_param("1764507600000000000", now), "1764507600000000000");
        assert_eq!(time_param("2026-11-30T13:00:00Z", now), "2026-11-30T13:00:00Z");
    }

    #[test]
    fn api_errors_carry_the_message() {
        let e = api_error(reqwest::StatusCode::BAD_REQUEST, r#"{"error":"unknown parameter \"x\""}"#);
        assert_eq!(e, "the server answered 400 Bad Request: unknown parameter \"x\"");
        let e = api_error(reqwest::StatusCode::UNAUTHORIZED, "");
        assert!(e.starts_with("the server answered 401 Unauthorized: (empty body) (give a token"), "{e}");
    }

    #[test]
    fn bodies_and_severities_fit_one_line() {
        assert_eq!(body_line(&json!("a\nb")), "a\\nb");
        assert_eq!(body_line(&json!({"k": 1})), r#"{"k":1}"#);
        assert_eq!(severity(&json!({"severity_text": "", "severity_number": 17})), "ERROR");
        assert_eq!(severity(&json!({"severity_text": "warning", "severity_number": 13})), "warning");
    }
}
