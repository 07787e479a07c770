//! Connection caps, header-read and idle timeouts, the HTTP/2 stream limit,
//! and a low open-file limit flooded with idle connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::support::{client, eventually, otlp};

/// A `skein serve` on ephemeral ports with a config file, started through
/// an optional wrapper command (`prlimit ...`).
pub(crate) struct Skein {
    child: Option<Child>,
    pub(crate) grpc: String,
    pub(crate) otlp_http: String,
    pub(crate) http: String,
    pub(crate) zipkin: String,
}

impl Skein {
    pub(crate) fn start(dir: &Path, config: &str, wrapper: &[&str], args: &[&str]) -> Skein {
        let cfg = dir.join("skein.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(crate::support::skein_bin());
                c
            }
            None => Command::new(crate::support::skein_bin()),
        };
        cmd.args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0", "--zipkin-addr", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(args)
            .env("SKEIN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start skein");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("ready line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        Skein {
            grpc: field("otlp_grpc"),
            otlp_http: field("otlp_http"),
            http: field("http"),
            zipkin: field("zipkin"),
            child: Some(child),
        }
    }

    /// Waits for `/readyz` through `c` at `base` (`http://...` or `https://...`).
    pub(crate) fn wait_ready(&self, c: &reqwest::blocking::Client, base: &str) {
        eventually(60, || c.get(format!("{base}/readyz")).send().ok().filter(|r| r.status().is_success()));
    }

    /// SIGTERM; the process must exit 0.
    pub(crate) fn terminate(&mut self) {
        let mut child = self.child.take().unwrap();
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let st = eventually(60, || child.try_wait().unwrap());
        assert!(st.success(), "skein exited with {st:?} on SIGTERM");
    }
}

impl Drop for Skein {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of one exact metric line (name with labels).
fn metric(http: &str, series: &str) -> f64 {
    let text = client().get(format!("http://{http}/metrics")).send().unwrap().text().unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

fn traces_body(trace: [u8; 16]) -> Vec<u8> {
    otlp::traces("limits", vec![otlp::span(trace, 1, None, "op", 1_000_000_000, 2_000_000_000)])
        .encode_to_vec()
}

/// Whether the server closed `s` within `secs` (reads return EOF or an
/// error); bytes the server sends meanwhile are read and dropped.
fn closed_within(s: &mut TcpStream, secs: u64, mut tick: impl FnMut(&mut TcpStream)) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        tick(s);
    }
    false
}

/// Past `max_connections` a listener stops accepting: the next client waits
/// (it is not refused) and is served once an idle connection closes, while
/// the other listeners and the flusher carry on.
#[test]
fn test_connection_cap_queues_new_clients_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Skein::start(dir.path(), "[server]\nmax_connections = 4\n", &[], &[]);
    s.wait_ready(&client(), &format!("http://{}", s.http));
    let idle: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(&s.otlp_http).unwrap()).collect();
    let open = "skein_server_connections{listener=\"otlp_http\"}";
    eventually(10, || (metric(&s.http, open) == 4.0).then_some(()));
    assert!(metric(&s.http, "skein_server_connection_limit_reached_total{listener=\"otlp_http\"}") >= 1.0);
    assert_eq!(metric(&s.http, "skein_server_max_connections{listener=\"otlp_http\"}"), 4.0);

    let addr = s.otlp_http.clone();
    let waiting = std::thread::spawn(move || otlp::post(&addr, "/v1/traces", traces_body([7; 16])));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "a client past the cap is held in the backlog, not served or refused");
    // The API listener has its own cap, and storage its own descriptors.
    let r = client().post(format!("http://{}/api/v1/flush", s.http)).send().unwrap();
    assert!(r.status().is_success(), "flush while the OTLP/HTTP port is full: {}", r.status());

    drop(idle);
    let (status, body) = waiting.join().unwrap().expect("served once the idle connections closed");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    eventually(10, || (metric(&s.http, open) <= 1.0).then_some(()));
}

/// A client that never finishes its headers, or sends nothing at all, is
/// disconnected after `read_header_timeout` on every listener kind (HTTP/1
/// and gRPC); QA found a silent one held until the longer `idle_timeout`.
#[test]
fn test_slow_and_silent_clients_are_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[server]\nread_header_timeout = \"1s\"\nidle_timeout = \"60s\"\n";
    let s = Skein::start(dir.path(), cfg, &[], &[]);
    s.wait_ready(&client(), &format!("http://{}", s.http));

    // Slowloris: a header line every 200 ms, never the blank line. Without
    // the timeout it would be held for as long as the client trickles.
    let mut slow = TcpStream::connect(&s.otlp_http).unwrap();
    slow.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n").unwrap();
    let cut = closed_within(&mut slow, 20, |s| {
        let _ = s.write_all(b"x-slow: 1\r\n");
    });
    assert!(cut, "a client trickling headers was not disconnected");
    let series = "skein_server_timeouts_total{listener=\"otlp_http\",timeout=\"read_header\"}";
    assert!(metric(&s.http, series) >= 1.0);

    for addr in [&s.grpc, &s.otlp_http] {
        let mut silent = TcpStream::connect(addr).unwrap();
        assert!(closed_within(&mut silent, 20, |_| {}), "a silent connection to {addr} was kept open");
    }
    let series = "skein_server_timeouts_total{listener=\"otlp_grpc\",timeout=\"read_header\"}";
    assert!(metric(&s.http, series) >= 1.0, "a silent connection counts as a header-read timeout");
    // A client that does send requests is unaffected.
    let (status, _) = otlp::post(&s.otlp_http, "/v1/traces", traces_body([8; 16])).unwrap();
    assert_eq!(status, 200);
}

/// HTTP/2 frame: 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block of literal fields without indexing (RFC 7541
/// §6.2.2), short names and values only.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in headers {
        b.push(0);
        b.push(k.len() as u8);
        b.extend_from_slice(k.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn read_frame(s: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).expect("frame header");
    let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
    let mut p = vec![0; len];
    s.read_exact(&mut p).expect("frame payload");
    (h[3], h[4], u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]), p)
}

/// A gRPC connection cannot have more than `max_concurrent_streams`
/// requests open: the server announces the limit, and a client that
/// ignores it gets the extra stream refused (REFUSED_STREAM, safe to retry)
/// while the others stay open.
#[test]
fn test_grpc_streams_per_connection_are_capped() {
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const REFUSED_STREAM: u32 = 0x7;

    let dir = tempfile::tempdir().unwrap();
    let s = Skein::start(dir.path(), "[server]\nmax_concurrent_streams = 2\n", &[], &[]);
    s.wait_ready(&client(), &format!("http://{}", s.http));

    let mut c = TcpStream::connect(&s.grpc).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    c.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    let announced = loop {
        let (kind, flags, _, p) = read_frame(&mut c);
        if kind == SETTINGS && flags & ACK == 0 {
            break p
                .chunks(6)
                .find(|s| u16::from_be_bytes([s[0], s[1]]) == MAX_CONCURRENT_STREAMS)
                .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
        }
    };
    assert_eq!(announced, Some(2));
    // The limit applies once the client has acknowledged it.
    c.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
    let block = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
        (":authority", "skein"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    // Three requests whose bodies never come: all would stay open.
    for id in [1, 3, 5] {
        c.write_all(&frame(HEADERS, END_HEADERS, id, &block)).unwrap();
    }
    loop {
        let (kind, _, stream, p) = read_frame(&mut c);
        if kind == RST_STREAM {
            assert_eq!(stream, 5, "only the stream past the limit is reset");
            assert_eq!(u32::from_be_bytes([p[0], p[1], p[2], p[3]]), REFUSED_STREAM);
            break;
        }
        assert_ne!(kind, 0x7, "GOAWAY instead of a refused stream");
    }
}

/// With 256 file descriptors and ~600 idle connections on the OTLP ports
/// (more than the process could hold), flushing, the API and, once the
/// flood ends, ingest keep working: each listener's cap leaves storage its
/// share of descriptors.
#[test]
fn test_low_open_file_limit_flooded_with_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Skein::start(dir.path(), "", &["prlimit", "--nofile=256:256", "--"], &[]);
    s.wait_ready(&client(), &format!("http://{}", s.http));
    let (status, _) = otlp::post(&s.otlp_http, "/v1/traces", traces_body([9; 16])).unwrap();
    assert_eq!(status, 200);
    // 256 / 2 / 4 listeners.
    assert_eq!(metric(&s.http, "skein_server_max_connections{listener=\"otlp_http\"}"), 32.0);

    let flood: Vec<TcpStream> = (0..300)
        .flat_map(|_| [TcpStream::connect(&s.grpc).unwrap(), TcpStream::connect(&s.otlp_http).unwrap()])
        .collect();
    eventually(10, || {
        (metric(&s.http, "skein_server_connections{listener=\"otlp_http\"}") == 32.0).then_some(())
    });

    let r = client().post(format!("http://{}/api/v1/flush", s.http)).send().unwrap();
    let st = r.status();
    assert!(st.is_success(), "flush under a connection flood: {st} {}", r.text().unwrap_or_default());
    let trace = hex::encode([9u8; 16]);
    let r = client().get(format!("http://{}/api/v1/traces/{trace}", s.http)).send().unwrap();
    assert_eq!(r.status(), 200, "the flushed trace reads back from its segment");

    drop(flood);
    let (status, _) = otlp::post(&s.otlp_http, "/v1/traces", traces_body([10; 16])).unwrap();
    assert_eq!(status, 200);
    s.terminate();
}

/// The soft open-file limit is raised to the hard one at start, and the
/// default cap follows it.
#[test]
fn test_soft_open_file_limit_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let s = Skein::start(dir.path(), "", &["prlimit", "--nofile=200:600", "--"], &[]);
    s.wait_ready(&client(), &format!("http://{}", s.http));
    assert_eq!(metric(&s.http, "process_max_fds"), 600.0);
    // 600 / 2 / 4 listeners.
    assert_eq!(metric(&s.http, "skein_server_max_connections{listener=\"http\"}"), 75.0);
}
