//! `skein trace`, `search`, `logs` and `import` run as subprocesses against a running server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::trace::v1::Status;
use prost::Message;
use serde_json::Value;

use crate::sdk::unix_ns;
use crate::support::{eventually, otlp, skein_bin, Server};

/// Runs `skein ARGS --url <server>` and returns its output.
fn skein(server: &Server, args: &[&str]) -> Output {
    let url = format!("http://{}", server.http);
    Command::new(skein_bin()).args(args).args(["--url", &url]).output().expect("run skein")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TRACE: [u8; 16] = [0x5c, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, 0x01];

fn send_trace(server: &Server, t0: u64) {
    let ms = 1_000_000;
    let root = otlp::span(TRACE, 1, None, "GET /checkout", t0, t0 + 200 * ms);
    let mut cart = otlp::span(TRACE, 2, Some(1), "cart.Get", t0 + 20 * ms, t0 + 80 * ms);
    cart.status = Some(Status { code: 2, message: "cart store down".into() });
    for (service, spans) in [("frontend", vec![root]), ("cart", vec![cart])] {
        let (s, _) =
            otlp::post(&server.otlp_http, "/v1/traces", otlp::traces(service, spans).encode_to_vec())
                .unwrap();
        assert_eq!(s, 200);
    }
    let mut failed = otlp::log(TRACE, 2, t0 + 30 * ms, "cart lookup failed");
    failed.severity_number = 17;
    failed.severity_text = "ERROR".into();
    let started = otlp::log(TRACE, 1, t0 + ms, "checkout started");
    let (s, _) =
        otlp::post(&server.otlp_http, "/v1/logs", otlp::logs("cart", vec![failed, started]).encode_to_vec())
            .unwrap();
    assert_eq!(s, 200);
}

fn send_log(server: &Server, body: &str) {
    let rec = otlp::log(TRACE, 1, unix_ns(SystemTime::now()), body);
    let (s, _) =
        otlp::post(&server.otlp_http, "/v1/logs", otlp::logs("tail", vec![rec]).encode_to_vec()).unwrap();
    assert_eq!(s, 200);
}

#[test]
fn trace_search_and_logs_print_what_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let t0 = unix_ns(SystemTime::now()) - 5_000_000_000;
    send_trace(&server, t0);
    let id = hex::encode(TRACE);

    // The waterfall: header, tree order, error, logs under their spans.
    let out = eventually(30, || {
        let o = skein(&server, &["trace", &id]);
        (o.status.success() && stdout(&o).contains("cart.Get")).then_some(o)
    });
    let text = stdout(&out);
    assert!(text.starts_with(&format!("Trace {id}\nRoot: frontend GET /checkout\n")), "{text}");
    assert!(text.contains("Duration: 200ms"), "{text}");
    assert!(text.contains("Spans: 2  Services: 2  Errors: 1  Logs: 2"), "{text}");
    let lines: Vec<&str> = text.lines().skip(5).collect();
    assert!(lines[0].starts_with("frontend GET /checkout"), "{text}");
    assert!(lines[1].contains("· ") && lines[1].contains("INFO  checkout started"), "{text}");
    assert!(
        lines[2].starts_with("  cart cart.Get") && lines[2].ends_with("ERROR: cart store down"),
        "{text}"
    );
    assert!(lines[3].contains("ERROR cart lookup failed"), "{text}");

    let out = skein(&server, &["trace", &id, "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spans"].as_array().unwrap().len(), 2);

    let out = skein(&server, &["trace", "abc123"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("trace abc123 not found"), "{}", stderr(&out));

    // Search: a table, JSON, and the API's 400 shown.
    let out = skein(&server, &["search", "--service", "cart", "--status", "error", "--start", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("no row for {id}: {text}"));
    for cell in ["frontend", "GET /checkout", "200ms", " 2 ", " 1 "] {
        assert!(row.contains(cell), "{cell:?} not in {row}");
    }
    assert!(text.ends_with("1 traces\n"), "{text}");
    let out = skein(&server, &["search", "--attr", "nope=1", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["traces"], serde_json::json!([]));
    let out = skein(&server, &["search", "--sort", "sideways"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("400 Bad Request") && stderr(&out).contains("sort"), "{}", stderr(&out));

    // Logs: a line per record, oldest first.
    let out = skein(&server, &["logs", "--trace-id", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" INFO  cart  checkout started  trace="), "{text}");
    assert!(lines[1].contains(" ERROR cart  cart lookup failed  trace="), "{text}");
    let out = skein(&server, &["logs", "-q", "lookup failed", "--severity", "ERROR", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["logs"].as_array().unwrap().len(), 1);

    // Nobody listening: a clear message, non-zero.
    let out = Command::new(skein_bin()).args(["search", "--url", "http://127.0.0.1:9"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach Skein at http://127.0.0.1:9"), "{}", stderr(&out));
}

#[test]
fn logs_follow_prints_new_records_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    send_log(&server, "tailmark zero");
    let mut child = Command::new(skein_bin())
        .args(["logs", "-q", "tailmark", "--follow", "--interval", "100ms", "--url"])
        .arg(format!("http://{}", server.http))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |body: &str, seen: &mut Vec<String>| {
        while !seen.iter().any(|l| l.contains(body)) {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no {body:?} in {seen:?}"));
            seen.push(line);
        }
    };
    wait_for("tailmark zero", &mut seen);
    send_log(&server, "tailmark one");
    wait_for("tailmark one", &mut seen);
    send_log(&server, "tailmark two");
    wait_for("tailmark two", &mut seen);
    child.kill().unwrap();
    child.wait().unwrap();
    for body in ["zero", "one", "two"] {
        assert_eq!(
            seen.iter()
                .filter(|l| l.ends_with(&format!(
                    "tailmark {body}  trace=5c110000000000000000000000004201 span=0000000000000001"
                )))
                .count(),
            1,
            "{seen:?}"
        );
    }
}

/// A small gen_workload.py directory (the generator beside the repository,
/// as CI has it, or `SKEIN_WORKLOAD_GEN`) plus one OTLP/JSON file.
fn workload(dir: &std::path::Path) {
    let gen = std::env::var_os("SKEIN_WORKLOAD_GEN").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/workload/gen_workload.py")
    });
    assert!(gen.exists(), "{} not found: set SKEIN_WORKLOAD_GEN", gen.display());
    let out = Command::new("python3")
        .arg(&gen)
        .args(["--seed", "7", "--traces", "20", "--no-zstd", "--out"])
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "gen_workload.py failed (it needs `pip install opentelemetry-proto protobuf`, as scripts/test.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = unix_ns(SystemTime::now());
    std::fs::write(
        dir.join("batch.json"),
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-import"}}}}]}},
            "scopeSpans":[{{"spans":[{{"traceId":"5c11000000000000000000000000beef","spanId":"0000000000000001",
            "name":"from json","kind":2,"startTimeUnixNano":"{t}","endTimeUnixNano":"{}"}}]}}]}}]}}"#,
            t + 1_000_000
        ),
    )
    .unwrap();
}

#[test]
fn import_sends_a_workload_once_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let wl = tempfile::tempdir().unwrap();
    workload(wl.path());
    let otlp_url = format!("http://{}", server.otlp_http);
    let import = || skein(&server, &["import", wl.path().to_str().unwrap(), "--otlp-url", &otlp_url]);

    let out = import();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let files = std::fs::read_dir(wl.path()).unwrap().count();
    let pbs = std::fs::read_dir(wl.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".pb"))
        .count();
    let text = stdout(&out);
    assert!(text.starts_with(&format!("Imported {} files", pbs + 1)), "{text}");
    assert!(text.contains("Skipped 0 already imported"), "{text}");
    assert!(text.contains("2 not OTLP"), "summary.json and truth.jsonl: {text}");
    let state = std::fs::read_to_string(wl.path().join(".skein-import-state")).unwrap();
    assert_eq!(state.lines().count(), pbs + 1, "{state}");

    // Every trace of the truth file arrived whole, and the JSON file's span too.
    let truth = std::fs::read_to_string(wl.path().join("truth.jsonl")).unwrap();
    for line in truth.lines() {
        let t: Value = serde_json::from_str(line).unwrap();
        let v = server.get_json(&format!("/api/v1/traces/{}", t["trace_id"].as_str().unwrap()));
        assert_eq!(v["spans"].as_array().unwrap().len() as u64, t["span_count"].as_u64().unwrap());
        assert_eq!(v["logs"].as_array().unwrap().len() as u64, t["log_count"].as_u64().unwrap());
    }
    let v = server.get_json("/api/v1/traces/5c11000000000000000000000000beef");
    assert_eq!(v["spans"][0]["service_name"], "json-import");

    // A rerun sends nothing.
    let out = import();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("Imported 0 files"), "{text}");
    assert!(text.contains(&format!("Skipped {} already imported", pbs + 1)), "{text}");
    assert_eq!(std::fs::read_dir(wl.path()).unwrap().count(), files);
}

/// A receiver that answers 503 with `Retry-After: 0` to the first POST and
/// 200 afterwards: the file is sent again and counted once.
#[test]
fn import_retries_a_busy_receiver() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut line, mut path) = (0usize, String::new(), String::new());
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if path.is_empty() {
                    path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            tx.send((path, body.len())).unwrap();
            let answer = if n == 0 {
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            conn.write_all(answer.as_bytes()).unwrap();
        }
    });
    let wl = tempfile::tempdir().unwrap();
    let body = otlp::traces("s", vec![otlp::span(TRACE, 9, None, "x", 1, 2)]).encode_to_vec();
    std::fs::write(wl.path().join("traces-0.pb"), &body).unwrap();
    let state = wl.path().join("elsewhere.state");
    let out = Command::new(skein_bin())
        .args(["import", wl.path().to_str().unwrap(), "--otlp-url", &format!("http://{addr}"), "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("Imported 1 files (1 traces, 0 logs"), "{}", stdout(&out));
    let got: Vec<(String, usize)> = rx.try_iter().collect();
    assert_eq!(got, [("/v1/traces".to_string(), body.len()), ("/v1/traces".to_string(), body.len())]);
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "traces-0.pb\n");
}

/// The token (file or `SKEIN_TOKEN`) and the tenant reach the server: with
/// them the tenant's trace is found, without them a 401 with a hint.
#[test]
fn token_and_tenant_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        "multitenancy_enabled = true\n[[auth.tokens]]\ntoken = \"q-secret\"\nscopes = [\"query\", \"ingest\"]\n",
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "q-secret\n").unwrap();
    let wl = tempfile::tempdir().unwrap();
    let body =
        otlp::traces("tenant-svc", vec![otlp::span(TRACE, 7, None, "t", 1_000, 2_000)]).encode_to_vec();
    std::fs::write(wl.path().join("traces-0.pb"), body).unwrap();
    let otlp_url = format!("http://{}", server.otlp_http);
    let wl_dir = wl.path().to_str().unwrap();
    let tf = token_file.to_str().unwrap();
    let out = skein(
        &server,
        &["import", wl_dir, "--otlp-url", &otlp_url, "--token-file", tf, "--tenant", "team-a"],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let id = hex::encode(TRACE);
    let out = skein(&server, &["trace", &id, "--token-file", tf, "--tenant", "team-a"]);
    assert!(stdout(&out).contains("tenant-svc t"), "{}{}", stdout(&out), stderr(&out));
    let url = format!("http://{}", server.http);
    let out = Command::new(skein_bin())
        .args(["trace", &id, "--url", &url, "--tenant", "team-b"])
        .env("SKEIN_TOKEN", "q-secret")
        .output()
        .unwrap();
    assert!(stderr(&out).contains(&format!("trace {id} not found")), "another tenant: {}", stderr(&out));
    let out = skein(&server, &["trace", &id, "--tenant", "team-a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("401 Unauthorized") && stderr(&out).contains("--token-file"),
        "{}",
        stderr(&out)
    );
}
