//! Running Skein: its `/metrics`, its log output, and the listen addresses
//! users type.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{client, Server};

/// Starts `skein serve` with `args` on a fresh data directory, stdout and
/// stderr piped (as under systemd, docker or a CI log); returns the child
/// and the `http` address of its ready line.
fn start(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String, String) {
    let mut cmd = Command::new(crate::support::skein_bin());
    cmd.arg("serve").arg("--data-dir").arg(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("NO_COLOR").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start skein");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("ready line");
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no http= in {line:?}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client().get(format!("http://{http}/readyz")).send().is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, http, line)
}

/// SIGTERM, wait, and return everything the child wrote to stderr.
fn stop(mut child: Child) -> Vec<u8> {
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let mut err = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    assert!(child.wait().unwrap().success());
    err
}

const LOOPBACK: [&str; 8] = [
    "--otlp-grpc-addr",
    "127.0.0.1:0",
    "--otlp-http-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--zipkin-addr",
    "127.0.0.1:0",
];

/// Issue 9 item 10: a scrape of a fresh server has the process metrics,
/// the build info, every labelled counter at zero, and after a few queries
/// a latency histogram per route template.
#[test]
fn test_metrics_scrape() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(d.path());
    let text = client().get(format!("http://{}/metrics", s.http)).send().unwrap().text().unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    // Counted in clock ticks (10 ms): a fresh, idle process may show 0.
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") > 3.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 600.0, "{started} vs {now}");
    assert_eq!(value(&format!("skein_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    for series in [
        r#"skein_refused_requests_total{signal="spans",protocol="grpc",reason="malformed"}"#,
        r#"skein_refused_requests_total{signal="logs",protocol="http",reason="overloaded"}"#,
        r#"skein_stored_records_total{signal="spans",protocol="grpc"}"#,
        r#"skein_stored_records_total{signal="logs",protocol="http"}"#,
        r#"skein_dropped_records_total{signal="logs",protocol="http",reason="invalid"}"#,
    ] {
        assert_eq!(value(series), 0.0, "{series}");
    }

    s.api("/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736");
    s.api("/api/v1/services");
    let text = client().get(format!("http://{}/metrics", s.http)).send().unwrap().text().unwrap();
    let count = |route: &str, status: u16| -> f64 {
        let series =
            format!("skein_http_request_duration_seconds_count{{method=\"GET\",route=\"{route}\",status=\"{status}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(count("/api/v1/traces/{trace_id}", 404), 1.0);
    assert_eq!(count("/api/v1/services", 200), 1.0);
    assert!(!text.contains("4bf92f35"), "a raw path became a label");
}

/// Issue 9 item 9: `--log-format json` writes one JSON object per line,
/// no escape bytes, with the request's route and (from its `traceparent`)
/// trace ID on the lines logged while serving it.
#[test]
fn test_json_logs() {
    let d = tempfile::tempdir().unwrap();
    let mut args = vec!["--log-format", "json"];
    args.extend(LOOPBACK);
    let (child, http, ready) = start(d.path(), &args, &[("SKEIN_LOG", "info,skein=debug")]);
    assert!(!ready.contains('\x1b'));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .get(format!("http://{http}/api/v1/services"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let err = stop(child);
    assert!(!err.contains(&0x1b), "escape bytes in JSON logs");
    let text = String::from_utf8(err).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "listening" && l["level"] == "INFO"), "{text}");
    let served = lines
        .iter()
        .find(|l| l["message"] == "request served" && l["span"]["route"] == "/api/v1/services")
        .unwrap_or_else(|| panic!("no request line in {text}"));
    assert_eq!(served["span"]["trace_id"], trace, "{served}");
    assert_eq!(served["status"], 200, "{served}");
}

/// Issue 9 item 9: text logs to a pipe carry no ANSI colours.
#[test]
fn test_text_logs_to_a_pipe_have_no_colours() {
    let d = tempfile::tempdir().unwrap();
    let (child, _, _) = start(d.path(), &LOOPBACK, &[("SKEIN_LOG", "info")]);
    let err = stop(child);
    let text = String::from_utf8_lossy(&err);
    assert!(text.contains("listening"), "{text}");
    assert!(!err.contains(&0x1b), "escape bytes in {text:?}");
}

/// Issue 9 item 12: a host name is resolved (`localhost` is 127.0.0.1,
/// like the default), and a refused form exits with a message that says
/// what to type.
#[test]
fn test_listen_addresses_as_typed() {
    let d = tempfile::tempdir().unwrap();
    let args = [
        "--otlp-grpc-addr",
        "localhost:0",
        "--otlp-http-addr",
        "localhost:0",
        "--http-addr",
        "localhost:0",
        "--zipkin-addr",
        "localhost:0",
    ];
    let (child, http, ready) = start(d.path(), &args, &[]);
    assert!(http.starts_with("127.0.0.1:"), "{ready}");
    stop(child);

    let out = Command::new(crate::support::skein_bin())
        .args(["serve", "--http-addr", "16686"])
        .arg("--data-dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no host") && err.contains(":16686"), "{err}");
}
