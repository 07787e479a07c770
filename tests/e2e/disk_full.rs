//! A full disk (issue 10, item 1): ingest is refused with a retryable code,
//! failed flushes leave no temporary files behind, ingest resumes by itself
//! once space returns, the WAL gives its space back after a flush, and
//! SIGTERM on a full disk exits 0 with every acknowledged record kept.
//!
//! The data directory is a size-limited tmpfs, which needs root (or
//! CAP_SYS_ADMIN); elsewhere the test prints why it is skipped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use prost::Message;

use crate::sdk::unix_ns;
use crate::support::{otlp, Server};

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u32) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem of `dir` up to the last byte with a file it returns.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = fs::File::create(&p).unwrap();
    let chunk = vec![0x5a; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    p
}

fn trace_of(i: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&0xd15c_u64.to_be_bytes());
    t[8..].copy_from_slice(&(i + 1).to_be_bytes());
    t
}

/// Sends trace `i` (two spans, then a log); 200 when both were accepted,
/// else the first other status (0 when the request failed).
fn send(addr: &str, i: u64, t0: u64) -> u16 {
    let tr = trace_of(i);
    // About 8 KiB a request, so a few of them fill the last free pages.
    let pad = "x".repeat(8 << 10);
    let mut root = otlp::span(tr, 1, None, "root", t0, t0 + 100);
    root.attributes.push(otlp::kv("pad", &pad));
    let spans = otlp::traces("svc", vec![root, otlp::span(tr, 2, Some(1), "child", t0 + 1, t0 + 50)]);
    let status = match otlp::post(addr, "/v1/traces", spans.encode_to_vec()) {
        Ok((s, _)) => s,
        Err(_) => 0,
    };
    if status != 200 {
        return status;
    }
    let logs = otlp::logs("svc", vec![otlp::log(tr, 2, t0 + 5, &format!("disk event {i}"))]);
    otlp::post(addr, "/v1/logs", logs.encode_to_vec()).map_or(0, |r| r.0)
}

fn tmp_dirs(data: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(data.join("segments")) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-"))
        .collect()
}

fn wal_bytes(data: &Path) -> u64 {
    fs::read_dir(data.join("wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn assert_all_there(server: &Server, acked: &[u64]) {
    for &i in acked {
        let v = server.get_json(&format!("/api/v1/traces/{}", hex::encode(trace_of(i))));
        assert_eq!(v["spans"].as_array().unwrap().len(), 2, "trace {i}");
        assert_eq!(v["logs"].as_array().unwrap().len(), 1, "trace {i}");
    }
}

#[test]
fn a_full_disk_refuses_retryably_cleans_up_and_recovers_by_itself() {
    let fs_ = match SmallFs::mount(48) {
        Ok(f) => f,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_refuses_retryably_cleans_up_and_recovers_by_itself: {why}");
            return;
        }
    };
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("skein.toml");
    fs::write(&cfg, "[head]\nidle_timeout = \"100ms\"\nmax_trace_age = \"1s\"\nflush_interval = \"100ms\"\n")
        .unwrap();
    let data = fs_.path().join("data");
    let mut server = Server::start_with(&data, &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let t0 = unix_ns(SystemTime::now());
    let mut acked: Vec<u64> = (0..20).filter(|&i| send(&server.otlp_http, i, t0) == 200).collect();
    assert_eq!(acked.len(), 20);

    // Full disk: requests are refused with a retryable status, never 500,
    // and failed flushes leave no temporary directories.
    let filler = fill(fs_.path());
    let mut next = 20;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    while refused < 5 {
        assert!(Instant::now() < deadline, "a full disk never refused a request");
        match send(&server.otlp_http, next, t0) {
            200 => acked.push(next),
            s => {
                assert!(matches!(s, 429 | 503), "a full disk answered {s}, not a retryable status");
                refused += 1;
            }
        }
        next += 1;
    }
    // Failed flushes do not pile up temporary directories (before, each
    // one left its own): at most the attempt running right now has one.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        let left = tmp_dirs(&data);
        assert!(left.len() <= 1, "failed flushes left {left:?}");
    }

    // Space returns: ingest resumes by itself, without a restart.
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = send(&server.otlp_http, next, t0);
        if s == 200 {
            acked.push(next);
            next += 1;
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not resume within 20 s of space returning (last {s})");
        next += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_all_there(&server, &acked);
    server.flush();
    let left = tmp_dirs(&data);
    assert!(left.is_empty(), "temporary directories left after a successful flush: {left:?}");

    // Once everything is in segments the WAL gives its space back, whatever
    // the size of its current file.
    // (A flush asks the WAL writer to roll; a later flush deletes the old
    // file, so poll rather than count flushes.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        server.flush();
        let after = wal_bytes(&data);
        if after < 16 << 10 {
            break;
        }
        assert!(Instant::now() < deadline, "WAL still {after} bytes 10 s after everything was flushed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM on a full disk exits 0 and keeps every acknowledged record.
    for i in next..next + 5 {
        assert_eq!(send(&server.otlp_http, i, t0), 200);
        acked.push(i);
    }
    let filler = fill(fs_.path());
    server.terminate();
    fs::remove_file(&filler).unwrap();
    server.restart();
    assert_all_there(&server, &acked);
}
