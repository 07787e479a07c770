//! Live tail (issue 13 item 8): `GET /api/v1/tail/logs` read as a raw
//! HTTP stream while logs arrive over OTLP/HTTP: the backfill, then only
//! the matching new records, keep-alive comments, the client limit, and
//! the stream's end at shutdown.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use prost::Message as _;
use serde_json::Value;

use crate::support::otlp::{log, logs, post};
use crate::support::{query, Server};

const CONFIG: &str = r#"
[query.tail]
max_clients = 1
keepalive = "300ms"
"#;

/// One tail stream over plain HTTP/1.0 (no chunked framing, so the body is
/// the event stream itself).
struct Stream {
    lines: BufReader<TcpStream>,
    status: u16,
}

impl Stream {
    fn open(server: &Server, params: &str) -> Stream {
        let mut s = TcpStream::connect(&server.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        write!(
            s,
            "GET /api/v1/tail/logs?{params} HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            server.http
        )
        .unwrap();
        let mut lines = BufReader::new(s);
        let mut status_line = String::new();
        lines.read_line(&mut status_line).unwrap();
        let status = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut content_type = String::new();
        loop {
            let mut h = String::new();
            lines.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-type:") {
                content_type = v.trim().to_string();
            }
        }
        if status == 200 {
            assert_eq!(content_type, "text/event-stream");
        }
        Stream { lines, status }
    }

    /// The next event (name, data) or comment (`(":", text)`); `None` at
    /// the end of the stream.
    fn next(&mut self) -> Option<(String, String)> {
        let (mut name, mut data) = ("message".to_string(), String::new());
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).expect("an event before the read timeout") == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return Some((name, data));
                }
            } else if let Some(c) = line.strip_prefix(':') {
                return Some((":".into(), c.to_string()));
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().into();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Bodies of the log events up to event `until` (or the `until` log
    /// body), skipping comments; also whether a comment was seen.
    fn bodies_until(&mut self, until: &str) -> (Vec<String>, bool) {
        let (mut out, mut comment) = (Vec::new(), false);
        while let Some((name, data)) = self.next() {
            match name.as_str() {
                ":" => comment = true,
                "message" => {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    let body = v["body"].as_str().unwrap().to_string();
                    let done = body == until;
                    out.push(body);
                    if done {
                        return (out, comment);
                    }
                }
                other if other == until => return (out, comment),
                _ => {}
            }
        }
        panic!("the stream ended before {until:?}; got {out:?}");
    }
}

fn send(server: &Server, service: &str, bodies: &[&str]) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let records = bodies.iter().enumerate().map(|(i, b)| log([9; 16], 1, now + i as u64, b)).collect();
    let (status, _) = post(&server.otlp_http, "/v1/logs", logs(service, records).encode_to_vec()).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn tail_streams_only_matching_new_logs_and_ends_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let mut server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    send(&server, "checkout", &["payment declined before the stream", "payment accepted before"]);

    let params = query(&[("q", "declined"), ("service", "checkout"), ("limit", "10")]);
    let mut stream = Stream::open(&server, &params);
    assert_eq!(stream.status, 200);
    let (backfill, _) = stream.bodies_until("ready");
    assert_eq!(backfill, ["payment declined before the stream"]);

    // One client at a time here (query.tail.max_clients = 1).
    assert_eq!(Stream::open(&server, "").status, 429);

    send(&server, "checkout", &["payment declined card 4242", "payment accepted card 1111"]);
    send(&server, "web", &["declined on another service"]);
    send(&server, "checkout", &["declined sentinel"]);
    let (live, _) = stream.bodies_until("declined sentinel");
    assert_eq!(live, ["payment declined card 4242", "declined sentinel"]);
    // A quiet stream gets keep-alive comments (query.tail.keepalive = 300ms).
    loop {
        let (name, data) = stream.next().expect("a keep-alive comment");
        if name == ":" {
            break;
        }
        assert_ne!(name, "message", "no other record matches: {data}");
    }

    // SIGTERM: the stream says so and ends, and the server exits cleanly.
    server.terminate();
    let mut rest = Vec::new();
    while let Some((name, _)) = stream.next() {
        rest.push(name);
    }
    assert!(rest.contains(&"closed".to_string()), "{rest:?}");
}
