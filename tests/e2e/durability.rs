use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::Message;

use crate::sdk::unix_ns;
use crate::support::{otlp, Server};

/// A config that flushes often, so crashes land between WAL, head and
/// segments in every possible state.
fn eager_flush_config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("skein.toml");
    std::fs::write(
        &p,
        "[head]\nidle_timeout = \"150ms\"\nmax_trace_age = \"1s\"\nflush_interval = \"100ms\"\n[wal]\nmax_file_bytes = 65536\n",
    )
    .unwrap();
    p
}

fn trace_of(i: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&0x5ce1_u64.to_be_bytes());
    t[8..].copy_from_slice(&(i + 1).to_be_bytes());
    t
}

/// Sends trace `i`: three spans in one request, one log in another.
fn send(addr: &str, i: u64, t0: u64) -> bool {
    let tr = trace_of(i);
    let spans = otlp::traces(
        "svc",
        vec![
            otlp::span(tr, 1, None, "root", t0, t0 + 100),
            otlp::span(tr, 2, Some(1), "a", t0 + 1, t0 + 50),
            otlp::span(tr, 3, Some(1), "b", t0 + 2, t0 + 60),
        ],
    );
    match otlp::post(addr, "/v1/traces", spans.encode_to_vec()) {
        Ok((200, _)) => {}
        _ => return false,
    }
    let logs = otlp::logs("svc", vec![otlp::log(tr, 2, t0 + 5, &format!("event number {i}"))]);
    matches!(otlp::post(addr, "/v1/logs", logs.encode_to_vec()), Ok((200, _)))
}

fn assert_exactly_once(server: &Server, acked: &[u64]) {
    for &i in acked {
        let v = server.get_json(&format!("/api/v1/traces/{}", hex::encode(trace_of(i))));
        let spans = v["spans"].as_array().unwrap();
        let ids: HashSet<&str> = spans.iter().map(|s| s["span_id"].as_str().unwrap()).collect();
        assert_eq!(spans.len(), 3, "trace {i}: {} spans", spans.len());
        assert_eq!(ids.len(), 3, "trace {i}: duplicate spans");
        assert_eq!(v["logs"].as_array().unwrap().len(), 1, "trace {i}: logs");
    }
}

#[test]
fn sigterm_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let t0 = unix_ns(SystemTime::now());
    let acked: Vec<u64> = (0..20).filter(|&i| send(&server.otlp_http, i, t0)).collect();
    assert_eq!(acked.len(), 20);
    server.terminate();
    server.restart();
    assert_exactly_once(&server, &acked);
    // And again, now that everything is in segments.
    server.terminate();
    server.restart();
    assert_exactly_once(&server, &acked);
    assert_eq!(server.get_json("/api/v1/services")["services"][0]["span_count"], 60);
}

#[test]
fn sigkill_during_ingest_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = eager_flush_config(dir.path());
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let t0 = unix_ns(SystemTime::now());
    let mut all_acked = Vec::new();
    for round in 0..3u64 {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..4u64)
            .map(|w| {
                let (acked, stop, addr) = (acked.clone(), stop.clone(), server.otlp_http.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let mut i = round * 1_000_000 + w * 100_000;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if send(&addr, i, t0) {
                            acked.lock().unwrap().push(i);
                        } else {
                            break;
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // Kill once enough requests are acknowledged (a fixed sleep was
        // too short when the whole suite loads the machine).
        let until = Instant::now() + Duration::from_secs(15);
        while acked.lock().unwrap().len() <= 10 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300 * round));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.join().unwrap();
        }
        server.restart();
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() > 10, "round {round}: only {} requests acknowledged", acked.len());
        all_acked.extend(acked);
        assert_exactly_once(&server, &all_acked);
    }
    // The eager config flushed during the stream: replay had to skip what
    // segments already held.
    assert!(server.metric("skein_segments") >= 1.0);
    // Flushing the replayed head must not duplicate what segments hold.
    server.flush();
    assert_exactly_once(&server, &all_acked);
    server.terminate();
    server.restart();
    assert_exactly_once(&server, &all_acked);
}

/// A data directory holding a segment of an older on-disk format (format 3,
/// before issue 11) is refused at start: `skein serve` exits non-zero with a
/// message naming the segment, both formats and what to do, and leaves the
/// segment where it is.
#[test]
fn a_segment_of_an_older_format_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("segments").join("01OLDFORMAT");
    std::fs::create_dir_all(&seg).unwrap();
    std::fs::write(seg.join("meta.json"), r#"{"format": 3, "id": "01OLDFORMAT", "span_count": 1}"#).unwrap();
    let out = std::process::Command::new(crate::support::skein_bin())
        .args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--zipkin-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("reads only format {}", skein_storage::segment::FORMAT_VERSION);
    for part in ["segment 01OLDFORMAT", "on-disk format 3", &want, "move the data directory aside"] {
        assert!(err.contains(part), "no {part:?} in {err}");
    }
    assert!(seg.join("meta.json").exists(), "the segment stays in place");
}
