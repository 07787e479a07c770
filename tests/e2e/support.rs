//! Starting and stopping a real `skein serve` on ephemeral loopback ports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) data_dir: PathBuf,
    pub(crate) grpc: String,
    pub(crate) otlp_http: String,
    pub(crate) http: String,
    pub(crate) zipkin: String,
    env: Vec<(String, String)>,
}

/// The binary under test: `SKEIN_E2E_BIN` when set (a copy of a build
/// that a parallel build in the same target dir cannot replace mid-run),
/// else the one cargo built for this test.
pub(crate) fn skein_bin() -> PathBuf {
    std::env::var_os("SKEIN_E2E_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skein")), PathBuf::from)
}

fn spawn(data_dir: &Path, env: &[(String, String)]) -> (Child, [String; 4]) {
    let mut cmd = Command::new(skein_bin());
    cmd.args([
        "serve",
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--zipkin-addr",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .env("SKEIN_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start skein");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read ready line");
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    (child, [field("otlp_grpc"), field("otlp_http"), field("http"), field("zipkin")])
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub(crate) fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// Starts with extra environment (e.g. a config file via SKEIN_CONFIG).
    pub(crate) fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, [grpc, otlp_http, http, zipkin]) = spawn(data_dir, &env);
        let s = Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            grpc,
            otlp_http,
            http,
            zipkin,
            env,
        };
        s.wait_ready();
        s
    }

    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client().get(format!("http://{}/readyz", self.http)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn api(&self, path: &str) -> (u16, Value) {
        let r = client().get(format!("http://{}{}", self.http, path)).send().expect("GET");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// GET `path` of the HTTP API with `headers` (a token, a tenant): the
    /// status and the JSON body (`Null` if not JSON).
    pub(crate) fn api_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = client().get(format!("http://{}{}", self.http, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().expect("GET");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub(crate) fn get_json(&self, path: &str) -> Value {
        let (s, v) = self.api(path);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub(crate) fn flush(&self) -> Value {
        let r = client().post(format!("http://{}/api/v1/flush", self.http)).send().expect("flush");
        assert!(r.status().is_success());
        r.json().unwrap()
    }

    pub(crate) fn metric(&self, name: &str) -> f64 {
        let text = client().get(format!("http://{}/metrics", self.http)).send().unwrap().text().unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The server's resident memory now (`VmRSS` of `/proc/<pid>/status`),
    /// in bytes.
    pub(crate) fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// SIGTERM and wait: the process must exit 0.
    pub(crate) fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "skein exited with {st:?} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "skein did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to flush.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts again on the same data directory (new ports).
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none());
        let (child, [grpc, otlp_http, http, zipkin]) = spawn(&self.data_dir, &self.env);
        self.child = Some(child);
        self.grpc = grpc;
        self.otlp_http = otlp_http;
        self.http = http;
        self.zipkin = zipkin;
        self.wait_ready();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `VmRSS` of process `pid`, in bytes (0 once it is gone).
pub(crate) fn rss_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The named fields of `/proc/{pid}/status` (e.g. `RssAnon`), as
/// `"RssAnon: 1234 kB, RssFile: 56 kB"`.
pub(crate) fn proc_status(pid: i32, fields: &[&str]) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let pick = |f: &&str| status.lines().find(|l| l.strip_prefix(f).is_some_and(|r| r.starts_with(':')));
    fields
        .iter()
        .filter_map(pick)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Polls `f` until it returns `Some`, for at most `secs`.
pub(crate) fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {secs}s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `pairs` as a URL query string (`application/x-www-form-urlencoded`, as
/// the server's parameter parser reads it).
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub(crate) mod otlp {
    //! Hand-built OTLP requests, for tests that need exact control.
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub(crate) fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() })
    }

    pub(crate) fn span(
        trace: [u8; 16],
        id: u64,
        parent: Option<u64>,
        name: &str,
        start: u64,
        end: u64,
    ) -> Span {
        Span {
            trace_id: trace.to_vec(),
            span_id: id.to_be_bytes().to_vec(),
            parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    pub(crate) fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    pub(crate) fn log(trace: [u8; 16], span: u64, time: u64, body: &str) -> LogRecord {
        LogRecord {
            time_unix_nano: time,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(body.into())) }),
            trace_id: trace.to_vec(),
            span_id: span.to_be_bytes().to_vec(),
            ..Default::default()
        }
    }

    pub(crate) fn logs(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(service),
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    /// POSTs a protobuf message; returns the status and body.
    pub(crate) fn post(addr: &str, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let r = super::client()
            .post(format!("http://{addr}{path}"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()?;
        let s = r.status().as_u16();
        Ok((s, r.bytes()?.to_vec()))
    }
}

/// A gRPC codec that sends raw bytes, to put invalid messages on the wire
/// (and call methods that do not exist); answers decode as
/// `ExportTraceServiceResponse`.
#[derive(Default)]
pub(crate) struct RawCodec;
/// [`RawCodec`]'s encoder.
pub(crate) struct RawEnc;
/// [`RawCodec`]'s decoder.
pub(crate) struct RespDec;

impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RespDec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let b = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(b).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEnc;
    type Decoder = RespDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RespDec {
        RespDec
    }
}
